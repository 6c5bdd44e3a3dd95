"""AMOS 2022 CT: 15 abdominal organs in AMOS label order, named and coloured as Slicer's terminology lists do."""

from __future__ import annotations

from .base import DICOM_MASTER, SegmentationPreset, rgb, terminology_entry

ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
RIGHT = ("SCT", "24028007", "Right")
LEFT = ("SCT", "7771000", "Left")


def _organ(value, name, type_code, color, modifier=None, context=None):
    label = {"value": value, "name": name, "color": rgb(*color)}
    if type_code is not None:
        kwargs = {"context": context} if context else {}
        label["terminology"] = terminology_entry(ANATOMICAL_STRUCTURE, type_code, modifier, **kwargs)
    return label


KIDNEY = ("SCT", "64033007", "Kidney")
ADRENAL = ("SCT", "23451007", "Adrenal gland")

# Colours: the list's recommendedDisplayRGBValue. The inferior vena cava is only in the DICOM master list, which
# gives it no colour: it takes the General Anatomy colour of "Vein". Label 15 is "prostate or uterus" in AMOS: no
# single code covers both, so it has no terminology (Slicer then shows its name) and the prostate colour.
AMOS_LABELS = (
    _organ(1, "spleen", ("SCT", "78961009", "Spleen"), (157, 108, 162)),
    _organ(2, "right kidney", KIDNEY, (185, 102, 83), RIGHT),
    _organ(3, "left kidney", KIDNEY, (185, 102, 83), LEFT),
    _organ(4, "gallbladder", ("SCT", "28231008", "Gallbladder"), (139, 150, 98)),
    _organ(5, "esophagus", ("SCT", "32849002", "Esophagus"), (211, 171, 143)),
    _organ(6, "liver", ("SCT", "10200004", "Liver"), (221, 130, 101)),
    _organ(7, "stomach", ("SCT", "69695003", "Stomach"), (216, 132, 105)),
    _organ(8, "aorta", ("SCT", "15825003", "Aorta"), (224, 97, 76)),
    _organ(9, "inferior vena cava", ("SCT", "64131007", "Inferior vena cava"), (0, 151, 206),
           context=DICOM_MASTER),
    _organ(10, "pancreas", ("SCT", "15776009", "Pancreas"), (249, 180, 111)),
    _organ(11, "right adrenal gland", ADRENAL, (249, 186, 150), RIGHT),
    _organ(12, "left adrenal gland", ADRENAL, (249, 186, 150), LEFT),
    _organ(13, "duodenum", ("SCT", "38848004", "Duodenum"), (255, 253, 229)),
    _organ(14, "urinary bladder", ("SCT", "89837001", "Bladder"), (222, 154, 132)),
    _organ(15, "prostate/uterus", None, (230, 158, 140)),
)


class AmosCT(SegmentationPreset):
    name = "amos-ct"
    title = "AMOS 2022 abdominal CT, 15 organs"
    summary = ("Abdominal CT: 15 organs of the AMOS 2022 challenge (spleen, kidneys, gallbladder, esophagus, liver, "
               "stomach, aorta, inferior vena cava, pancreas, adrenal glands, duodenum, bladder, prostate/uterus).")
    network_class = "NNMambaSeg"
    variants = ("nnunet", "miccss")
    in_channels = 1
    out_channels = 16
    default_id = "amos-ct-nnmamba"
    default_name = "nnMamba AMOS abdominal CT organs"
    default_channels = (("CT", "CT"),)
    # No defaults for spacing, patch size or CT constants: they are dataset statistics only the plans know.
    labels = AMOS_LABELS
    card = ("Trained with nnU-Net v1 (plans nnUNetPlansv2.1, 3d_fullres) on AMOS 2022 CT (spec sections 9-10). "
            "Input: one abdominal CT in Hounsfield units. Preprocessing as nnU-Net: resample to the plans' target "
            "spacing, clip to the training set's 0.5/99.5 foreground percentiles, z-score with its foreground mean "
            "and sd. One fold is used (no 5-fold ensemble). Research use only.")
