"""Full-volume segmentation: a label map on the input's exact grid, with the package's label metadata."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ..inference import ArgmaxSink, ProbabilitySink, fit_patch, sliding_window_predict
from .common import make_predictor, prepare_input

if TYPE_CHECKING:
    from ..imaging import Volume
    from ..modelpkg import ModelPackage
    from ..predictor import NetworkPredictor
    from ..progress import CancelToken, Progress


@dataclass
class SegmentationResult:
    labels: np.ndarray          # (K, J, I) on the input grid
    geometry: object            # the input's Geometry
    segments: list              # model.json outputs.labels
    regions: list               # model.json outputs.regions (overlapping unions of labels)
    seconds: dict = field(default_factory=dict)  # preprocess / network / sliding window overhead / map back
    notes: list = field(default_factory=list)


def segment_volume(package: ModelPackage, volume: Volume, device: str = "auto", overlap: Optional[float] = None,
                   mirroring: Optional[bool] = None, tile_batch: int = 1, progress: Optional[Progress] = None,
                   cancel: Optional[CancelToken] = None, predictor: Optional[NetworkPredictor] = None,
                   notify: Optional[Callable[[str], None]] = None, reuse_input: bool = False) -> SegmentationResult:
    """Segment ``volume`` with a segmentation ``package``; raises :class:`~nnmamba.progress.Cancelled` if
    ``cancel`` is set between tiles. ``reuse_input=True`` lets the preprocessing overwrite ``volume``'s voxels
    (for callers that do not need them afterwards, like the CLI)."""
    if package.task != "segmentation":
        raise ValueError(f"Model {package.id!r} is a {package.task} model, not a segmentation model.")
    notes = []

    def note(message):
        notes.append(message)
        if notify:
            notify(message)

    started = time.perf_counter()
    prepared = prepare_input(package, volume, reuse_input=reuse_input)
    prepared_at = time.perf_counter()
    predictor = predictor or make_predictor(package, device, mirroring, note)
    network_before = predictor.network_seconds
    sink = _sink(prepared, package)
    out = sliding_window_predict(prepared.network.array, predictor, package.input["patch_size"][::-1],
                                 package.network["out_channels"], overlap=package.inference["overlap"]
                                 if overlap is None else overlap, sink=sink, tile_batch=tile_batch,
                                 progress=progress, cancel=cancel,
                                 importance=getattr(prepared.resampling, "importance", None))
    windowed_at = time.perf_counter()
    if not isinstance(sink, ProbabilitySink):
        labels = out
    else:
        labels = prepared.resampling.probabilities_to_input(lambda c: out[c], len(out))
        del out
    labels = prepared.reorientation.undo_array(labels)
    finished = time.perf_counter()
    network = predictor.network_seconds - network_before
    seconds = {"preprocess": prepared_at - started, "network": network,
               "sliding_window_overhead": windowed_at - prepared_at - network, "map_back": finished - windowed_at,
               "total": finished - started}
    return SegmentationResult(np.ascontiguousarray(labels), volume.geometry, list(package.outputs["labels"]),
                              list(package.outputs.get("regions", [])), seconds, notes)


def _sink(prepared, package):
    """Without resampling the argmax is all we need. Otherwise the labels are mapped back to the input grid: streamed
    from the window's finished rows where the compiled kernel runs and that takes less memory, else from a store of
    float16 probabilities."""
    if prepared.resampling.is_identity:
        return ArgmaxSink()
    from ..map_back import StreamingMapBack, compiled_map_back_usable, streaming_saves_memory
    from ..resampling import Resampling

    shape = prepared.network.array.shape[1:]
    if isinstance(prepared.resampling, Resampling) and compiled_map_back_usable(package.network["out_channels"]) \
            and streaming_saves_memory(shape, fit_patch(shape, package.input["patch_size"][::-1])):
        return StreamingMapBack(prepared.resampling)
    return ProbabilitySink()

