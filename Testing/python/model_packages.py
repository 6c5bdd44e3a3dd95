"""Real model packages with random (seeded) weights for tests and benchmarks: the pipeline's behaviour and
speed do not depend on what the network has learned."""

from __future__ import annotations

import torch

from nnmamba.modelpkg import write_package

TISSUE = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^85756007^Tissue~SCT^85756007^Tissue"
          "~^^~Anatomic codes - DICOM master list~^^~^^")
LANDMARKS = ("TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2")


def _network(network_class, in_channels, out_channels, channels, variant):
    from nnmamba.checkpoints import Architecture

    torch.manual_seed(0)
    model = Architecture(network_class, variant, in_channels, out_channels, channels).build().eval()
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)):
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 1.5)
        if network_class == "NNMambaSeg":  # a lively head: untrained, it would put one class almost everywhere
            model.conv8.conv[3].weight.mul_(10)
            model.conv8.conv[4].bias.fill_(2.0)
    return model


def _meta(model_id, task, network_class, variant, in_channels, out_channels, channels, input_spec, outputs):
    return {
        "format_version": 1, "id": model_id, "name": f"Random {task} test model", "version": "0.0.1", "task": task,
        "network": {"class": network_class, "variant": variant, "in_channels": in_channels,
                    "out_channels": out_channels, "channels": channels},
        "input": dict({"channels": [{"name": f"image {c}", "modality": "MR"} for c in range(in_channels)],
                       "orientation": "as-stored"}, **input_spec),
        "outputs": outputs,
        "provenance": {"source": "random weights (tests)", "license": "Apache-2.0"},
    }


def segmentation_package(folder, classes=3, channels=4, in_channels=1, patch=(32, 32, 32), spacing=None,
                         orientation="as-stored", normalization=None, model_id="test-seg"):
    resampling = {"mode": "spacing", "spacing": list(spacing)} if spacing else {"mode": "none"}
    labels = [{"value": v, "name": f"structure {v}", "color": [v / classes, 0.5, 1 - v / classes],
               "terminology": TISSUE} for v in range(1, classes)]
    meta = _meta(model_id, "segmentation", "NNMambaSeg", "nnunet", in_channels, classes, channels,
                 {"orientation": orientation, "resampling": resampling,
                  "normalization": normalization or {"scheme": "zscore", "nonzero_mask": False},
                  "patch_size": list(patch)},
                 {"labels": labels})
    return write_package(folder, meta, _network("NNMambaSeg", in_channels, classes, channels, "nnunet"))


def landmark_package(folder, channels=4, shape=(32, 32, 32), axis_order="physical", in_channels=1,
                     normalization=None, model_id="test-landmarks"):
    meta = _meta(model_id, "landmarks", "NNMambaSeg", "miccss", in_channels, 6, channels,
                 {"resampling": {"mode": "shape", "shape": list(shape), "landmark_axis_order": axis_order},
                  "normalization": normalization or {"scheme": "window", "sigmas": 2.0, "range": [0.0, 255.0]},
                  "patch_size": list(shape)},
                 {"landmarks": [{"name": n} for n in LANDMARKS],
                  "lines": [{"name": n, "from": f"{n}1", "to": f"{n}2"} for n in ("TCD", "HDV", "ADV")]})
    return write_package(folder, meta, _network("NNMambaSeg", in_channels, 6, channels, "miccss"))


def classification_package(folder, channels=4, axis_order="kji", model_id="test-cls"):
    meta = _meta(model_id, "classification", "NNMambaEncoder", "current", 1, 1, channels,
                 {"resampling": {"mode": "none"}, "normalization": {"scheme": "zscore", "nonzero_mask": True},
                  "axis_order": axis_order},
                 {"classes": ["NC", "AD"], "decision": {"rule": "sigmoid-threshold", "threshold": 0.5}})
    return write_package(folder, meta, _network("NNMambaEncoder", 1, 1, channels, "current"))
