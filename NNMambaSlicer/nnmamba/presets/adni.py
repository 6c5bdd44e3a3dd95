"""ADNI Alzheimer's classifiers (spec section 8): one logit on a CAT12-preprocessed T1 MRI, no resampling."""

from __future__ import annotations

from .base import Preset

EXPECTED_INPUT = {
    "size": [113, 137, 113],
    "spacing": [1.5, 1.5, 1.5],
    "description": ("CAT12-preprocessed T1-weighted brain MRI in template space (113x137x113 voxels at 1.5 mm; "
                    "inferred from a '#cat12' comment of the training code). The model resamples and normalises "
                    "nothing: other images give meaningless probabilities."),
}


class AdniClassifier(Preset):
    task = "classification"
    network_class = "NNMambaEncoder"
    variants = ("current", "mamba_seq")
    in_channels = 1
    out_channels = 1
    classes = ()

    def input_fields(self, arch, plans, overrides, notes):
        return {
            "channels": [{"name": "T1w (CAT12)", "modality": "MR",
                          "description": "CAT12-preprocessed T1-weighted brain MRI"}],
            "orientation": "as-stored",
            # The training code read NIfTI files with nibabel, whose arrays are I-J-K ordered.
            "axis_order": "ijk",
            "resampling": {"mode": "none"},
            "normalization": {"scheme": "none"},
            "expected": dict(EXPECTED_INPUT),
        }

    def outputs(self, arch, plans, notes):
        return {"classes": list(self.classes), "decision": {"rule": "sigmoid-threshold", "threshold": 0.5}}

    def inference(self):
        return {"activation": "none"}


_CARD = ("Trained with the nnMamba classification/ code (spec section 8): nnMambaEncoder with one logit, "
         "BCE loss, ADNI-1 for training and ADNI-2 for testing (the model was selected on the test set, so reported "
         "scores are optimistic). Input: a CAT12-preprocessed T1 volume as read by nibabel, with no further "
         "normalisation. p({positive}) = sigmoid(logit); decision {positive} when p >= 0.5 (the paper picked its "
         "operating point by Youden's J). Research use only; not a diagnostic device.")


class AdniNcAd(AdniClassifier):
    name = "adni-nc-ad"
    title = "ADNI: normal control vs Alzheimer's disease"
    summary = "Brain T1 MRI (CAT12): normal cognition (NC) vs Alzheimer's disease (AD)."
    default_id = "adni-nc-ad-nnmamba"
    default_name = "nnMamba ADNI NC vs AD"
    classes = ("NC", "AD")
    card = _CARD.format(positive="AD")


class AdniSmciPmci(AdniClassifier):
    name = "adni-smci-pmci"
    title = "ADNI: stable vs progressive mild cognitive impairment"
    summary = "Brain T1 MRI (CAT12): stable MCI (sMCI) vs MCI progressing to AD (pMCI)."
    default_id = "adni-smci-pmci-nnmamba"
    default_name = "nnMamba ADNI sMCI vs pMCI"
    classes = ("sMCI", "pMCI")
    card = _CARD.format(positive="pMCI").replace("BCE loss,", "BCE loss, fine-tuned from the NC-vs-AD weights,")
