"""Fetal cerebellum landmarks (lhaof/LFC, spec section 7): six heatmaps on a 128^3 resized MRI, three lines."""

from __future__ import annotations

from .base import Preset

LINES = (
    ("TCD", "transverse cerebellar diameter"),
    ("HDV", "height of the vermis"),
    ("ADV", "antero-posterior diameter of the vermis"),
)


class LfcLandmarks(Preset):
    name = "lfc-landmarks"
    title = "Fetal cerebellum landmarks (LFC: TCD, HDV, ADV)"
    task = "landmarks"
    summary = ("Fetal brain 3D MRI: the end points of the transverse cerebellar diameter (TCD), the height of the "
               "vermis (HDV) and the antero-posterior diameter of the vermis (ADV), and these three lengths in mm.")
    network_class = "NNMambaSeg"
    variants = ("miccss",)
    in_channels = 1
    out_channels = 6
    default_id = "lfc-fetal-landmarks-nnmamba"
    default_name = "nnMamba fetal cerebellum landmarks (LFC)"
    card = ("Trained with lhaof/LFC (train_3d.py) on fetal brain MRI (spec section 7). Preprocessing as LFC: resize "
            "the whole volume to 128x128x128 (aspect ratio not kept), then window over voxels > 0 to "
            "mean +/- 2 sd mapped to 0..255. Output: one ReLU heatmap per landmark, decoded by argmax without "
            "sub-voxel refinement. landmark_axis_order 'lfc' reproduces LFC's axis-order quirk (its ground truth "
            "swapped the first and third resize factors), which the official weights learned; direction cosines are "
            "ignored, as in LFC. Research use only.")

    def input_fields(self, arch, plans, overrides, notes):
        return {
            "channels": [{"name": "MRI", "modality": "MR", "description": "fetal brain 3D MRI volume"}],
            "orientation": "as-stored",
            "resampling": {"mode": "shape", "shape": [128, 128, 128], "landmark_axis_order": "lfc"},
            "normalization": {"scheme": "window", "sigmas": 2.0, "range": [0.0, 255.0]},
            "patch_size": [128, 128, 128],
        }

    def inference(self):
        return {"overlap": 0.5, "mirroring": False, "activation": "relu"}

    def outputs(self, arch, plans, notes):
        landmarks = []
        for code, meaning in LINES:
            landmarks.append({"name": f"{code}1", "description": f"{meaning} ({code}), first end point"})
            landmarks.append({"name": f"{code}2", "description": f"{meaning} ({code}), second end point"})
        lines = [{"name": code, "from": f"{code}1", "to": f"{code}2", "description": meaning}
                 for code, meaning in LINES]
        return {"landmarks": landmarks, "lines": lines, "decoding": {"method": "argmax", "refine": "none",
                                                                      "peak_scale": 255.0}}
