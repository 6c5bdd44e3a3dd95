"""Seeded synthetic phantoms for the demo models: an abdomen-like CT with organ labels, a fetal brain MRI with the
six cerebellar landmarks of the LFC task, and a brain MRI with or without atrophy for classification.

Each function returns the same :class:`Phantom` for the same seed (``numpy.random.default_rng``), with an exact
geometry: structures are defined in millimetres in the anatomy's own frame and sampled through a random pose and
spacing, so that the ground truth (labels, landmarks) agrees with the image to the voxel.
"""

from .phantoms_brain import BRAIN_LABELS, CLASS_NAMES, brain_atrophy
from .phantoms_common import Phantom, obliquity_degrees
from .phantoms_ct import CT_LABELS, abdomen_ct
from .phantoms_fetal import FETAL_LABELS, LANDMARK_NAMES, fetal_brain

__all__ = [
    "BRAIN_LABELS",
    "CLASS_NAMES",
    "CT_LABELS",
    "FETAL_LABELS",
    "LANDMARK_NAMES",
    "Phantom",
    "abdomen_ct",
    "brain_atrophy",
    "fetal_brain",
    "obliquity_degrees",
]
