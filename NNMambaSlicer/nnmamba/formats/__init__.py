"""Result files that 3D Slicer opens natively: .seg.nrrd segmentations (or plain label maps by file ending),
.mrk.json landmarks and their CSV table, classification JSON/CSV. Every writer is all-or-nothing (see
:mod:`nnmamba.formats.atomic`). Only numpy is imported here; slicerio and SimpleITK are imported when a file is
written or read."""

from nnmamba.formats.atomic import atomic_path, atomic_write
from nnmamba.formats.classification_file import (
    read_classification_json,
    write_classification_csv,
    write_classification_json,
)
from nnmamba.formats.labelmap_file import (
    SEGMENTATION_FORMATS,
    segmentation_format,
    write_labelmap,
    write_segmentation_as,
)
from nnmamba.formats.landmark_table import points_with_confidence, write_landmark_csv
from nnmamba.formats.markups_file import Landmarks, read_landmarks, write_landmarks
from nnmamba.formats.segmentation_file import SegmentationFile, read_segmentation, write_segmentation

__all__ = [
    "SEGMENTATION_FORMATS",
    "Landmarks",
    "SegmentationFile",
    "points_with_confidence",
    "atomic_path",
    "atomic_write",
    "read_classification_json",
    "read_landmarks",
    "read_segmentation",
    "write_classification_csv",
    "write_classification_json",
    "write_labelmap",
    "write_landmark_csv",
    "write_landmarks",
    "write_segmentation",
    "write_segmentation_as",
    "segmentation_format",
]
