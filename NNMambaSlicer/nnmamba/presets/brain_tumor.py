"""BraTS glioma: 4 MRI inputs, the BraTS 2023 labels and the overlapping evaluation regions WT, TC and ET."""

from __future__ import annotations

from .base import DICOM_MASTER, SegmentationPreset, rgb, terminology_entry

ALTERED_STRUCTURE = ("SCT", "49755003", "Morphologically Altered Structure")
ENHANCING_COLOR = rgb(240, 200, 40)   # Neoplasm has no recommended colour in the lists

BRATS_LABELS = (
    {"value": 1, "name": "necrotic/non-enhancing tumor core", "color": rgb(216, 191, 216),
     "terminology": terminology_entry(ALTERED_STRUCTURE, ("SCT", "6574001", "Necrosis"))},
    {"value": 2, "name": "peritumoral edema", "color": rgb(140, 224, 228),
     "terminology": terminology_entry(ALTERED_STRUCTURE, ("SCT", "79654002", "Edema"))},
    {"value": 3, "name": "enhancing tumor", "color": ENHANCING_COLOR,
     "terminology": terminology_entry(ALTERED_STRUCTURE, ("SCT", "108369006", "Neoplasm"), context=DICOM_MASTER)},
)

BRATS_REGIONS = (
    {"name": "whole tumor", "labels": [1, 2, 3], "color": rgb(90, 180, 100),
     "description": "WT: all tumour labels including edema"},
    {"name": "tumor core", "labels": [1, 3], "color": rgb(220, 90, 70),
     "description": "TC: necrotic/non-enhancing core and enhancing tumour"},
    {"name": "enhancing tumor region", "labels": [3], "color": ENHANCING_COLOR,
     "description": "ET: enhancing tumour"},
)


class BraTS(SegmentationPreset):
    name = "brats"
    title = "BraTS glioma (4 MRI sequences)"
    summary = ("Brain tumour (glioma) on multi-parametric MRI: necrotic/non-enhancing core, edema and enhancing "
               "tumour, with the BraTS regions whole tumour, tumour core and enhancing tumour.")
    network_class = "NNMambaSeg"
    variants = ("nnunet", "miccss")
    in_channels = 4
    out_channels = 4
    default_id = "brats-glioma-nnmamba"
    default_name = "nnMamba BraTS glioma"
    # Channel order as nnU-Net v1's BraTS tasks from the Medical Segmentation Decathlon; the plans' modalities
    # replace these names whenever they are available.
    default_channels = (("FLAIR", "MR"), ("T1", "MR"), ("T1ce", "MR"), ("T2", "MR"))
    default_spacing = (1.0, 1.0, 1.0)       # BraTS images are co-registered at 1 mm isotropic
    default_patch = (128, 128, 128)          # nnU-Net v1 3d_fullres for BraTS (spec section 10)
    default_normalization = {"scheme": "zscore", "nonzero_mask": True}
    labels = BRATS_LABELS
    regions = BRATS_REGIONS
    card = ("Trained with nnU-Net v1 on BraTS 2023 (spec sections 9-10). Inputs: skull-stripped, co-registered "
            "FLAIR, T1, T1 contrast-enhanced and T2 (order from the plans when the import had them). Each image is "
            "z-scored inside the brain (nonzero) mask. Labels follow BraTS 2023 (1 necrotic/non-enhancing core, "
            "2 edema, 3 enhancing); a model trained on nnU-Net's Task082 conversion (1 edema, 2 necrotic) needs "
            "labels 1 and 2 swapped in model.json. Research use only.")
