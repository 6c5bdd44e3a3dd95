"""Result files that 3D Slicer opens natively: .seg.nrrd segmentations, .mrk.json landmarks, classification
JSON/CSV. Every writer is all-or-nothing (see :mod:`nnmamba.formats.atomic`). Only numpy is imported here; slicerio
is imported when a segmentation is written or read."""

from nnmamba.formats.atomic import atomic_path, atomic_write
from nnmamba.formats.classification_file import (
    read_classification_json,
    write_classification_csv,
    write_classification_json,
)
from nnmamba.formats.markups_file import Landmarks, read_landmarks, write_landmarks
from nnmamba.formats.segmentation_file import SegmentationFile, read_segmentation, write_segmentation

__all__ = [
    "Landmarks",
    "SegmentationFile",
    "atomic_path",
    "atomic_write",
    "read_classification_json",
    "read_landmarks",
    "read_segmentation",
    "write_classification_csv",
    "write_classification_json",
    "write_landmarks",
    "write_segmentation",
]
