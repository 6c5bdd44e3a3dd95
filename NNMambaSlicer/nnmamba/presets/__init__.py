"""Import presets: the task metadata official nnMamba checkpoints do not carry (labels with Slicer terminology,
landmarks and lines, classes, input preparation). ``get_preset(name)`` returns one; ``PRESETS`` lists them."""

from __future__ import annotations

from .abdomen import AmosCT
from .adni import AdniNcAd, AdniSmciPmci
from .base import GenericSegmentation, ModelImportError, Preset, describe_architecture
from .brain_tumor import BraTS
from .fetal_landmarks import LfcLandmarks

PRESETS = {preset.name: preset for preset in (AmosCT(), BraTS(), LfcLandmarks(), AdniNcAd(), AdniSmciPmci(),
                                                GenericSegmentation())}

__all__ = ["PRESETS", "ModelImportError", "Preset", "check_fits", "get_preset", "presets_fitting"]


def get_preset(name):
    """The preset called ``name`` (an error lists the known ones)."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelImportError(f"Unknown preset {name!r}; known presets: {', '.join(PRESETS)}.") from None


def presets_fitting(architecture):
    """Names of the presets whose network expectations ``architecture`` meets."""
    return [name for name, preset in PRESETS.items() if not preset.mismatches(architecture)]


def check_fits(preset, architecture, source="checkpoint"):
    """Refuse weights of another network than the preset describes, naming the presets that would fit."""
    problems = preset.mismatches(architecture)
    if problems:
        fitting = [name for name in presets_fitting(architecture) if name != preset.name]
        hint = (f" Presets that fit it: {', '.join(fitting)}." if fitting
                else " No preset fits it; check that this is the checkpoint you meant.")
        raise ModelImportError(f"{source} holds {describe_architecture(architecture)}, but preset {preset.name!r} "
                               f"needs {preset.expectation()} ({'; '.join(problems)}).{hint}")
