"""The four things a user asks of a model: segment a volume, segment what is under a click, find landmarks,
classify. Each takes a model package and an input :class:`~nnmamba.imaging.Volume` and returns results on the
input's exact grid or in physical LPS millimetres."""

from .classification import ClassificationResult, classify_volume
from .click import ClickResult, ClickSession
from .landmarks import LandmarkResult, detect_landmarks
from .segmentation import SegmentationResult, segment_volume

__all__ = ["ClassificationResult", "ClickResult", "ClickSession", "LandmarkResult", "SegmentationResult",
           "classify_volume", "detect_landmarks", "segment_volume"]
