"""Gaussian-weighted sliding-window inference that streams its result instead of holding it.

Tiles are visited slab by slab along one array axis (the one that keeps the open slab smallest). Once every tile
that overlaps a slab is done, the slab's blended probabilities are final and go to a *sink* (an argmax label map,
or a reduced-precision probability store), so only about one patch-thick slab of float32 accumulators is alive at a
time: a 512×512×300 CT with 16 classes needs ~1.3 GB instead of the 5 GB of a full probability map. The slab lives
on the predictor's device, so on a GPU the blending and the argmax stay there and only labels come back.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch

from .networks.segmentation import DIVISOR
from .progress import ProgressTracker

if TYPE_CHECKING:
    from .progress import CancelToken, Progress


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = 0.125, floor: float = 1e-3) -> np.ndarray:
    """Separable Gaussian (σ = patch·scale, peak 1) that favours tile centres, where the network sees most context;
    floored so that voxels near a tile's corner still count when only one tile covers them."""
    weight = np.ones((), dtype=np.float64)
    for size in patch_size:
        centre, sigma = (size - 1) / 2, max(size * sigma_scale, 1e-6)
        axis = np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)
        weight = np.multiply.outer(weight, axis)
    return np.maximum(weight / weight.max(), floor).astype(np.float32)


def tile_starts(size: int, patch: int, overlap: float) -> List[int]:
    """Evenly spaced starts from 0 to size - patch, as few as keep neighbours overlapping by ≥ ``overlap``."""
    if not 0 <= overlap < 1:
        raise ValueError(f"Overlap must be in [0, 1), got {overlap}.")
    if size <= patch:
        return [0]
    steps = math.ceil((size - patch) / (patch * (1 - overlap))) + 1
    return sorted({round(i * (size - patch) / (steps - 1)) for i in range(steps)})


def fit_patch(image_shape: Sequence[int], patch_size: Sequence[int], divisor: int = DIVISOR) -> Tuple[int, ...]:
    """The patch to use: the model's patch, shrunk along axes where the image is smaller (to the next multiple of
    ``divisor``, which the network needs), so a small image is not mostly padding."""
    return tuple(min(int(p), divisor * math.ceil(s / divisor)) for s, p in zip(image_shape, patch_size))


class Sink(Protocol):
    """Where the blended tiles go, slab by slab along the stream axis (MONAI's Merger has the same shape):
    ``start`` once, ``consume`` each finished slab of rows, ``result`` at the end."""

    def start(self, shape: Tuple[int, ...], num_outputs: int, stream_axis: int) -> None: ...

    def consume(self, rows: slice, accumulated: torch.Tensor, weights: torch.Tensor) -> None: ...

    def result(self) -> Any: ...


class ArgmaxSink:
    """Keeps only the winning class per voxel (uint8 up to 256 classes)."""

    def start(self, shape, num_outputs, stream_axis):
        dtype = np.uint8 if num_outputs <= 256 else np.uint16
        self.labels = np.zeros(shape, dtype=dtype)
        self._view = np.moveaxis(self.labels, stream_axis, 0)

    def consume(self, rows, accumulated, weights):
        # Every class of a voxel shares its weight sum, so the argmax needs no division. A few rows at a time
        # keeps the temporaries (values and int64 indices) small.
        for first in range(0, rows.stop - rows.start, 8):
            part = accumulated[:, first:first + 8].max(0).indices.to(torch.int32).cpu().numpy()
            self._view[rows.start + first:rows.start + first + len(part)] = part

    def result(self):
        return self.labels


class ProbabilitySink:
    """Keeps every channel, by default in float16 (half the memory; ample precision for probabilities and for
    resampling them back to the input grid)."""

    def __init__(self, dtype=np.float16):
        self.dtype = dtype

    def start(self, shape, num_outputs, stream_axis):
        self.probabilities = np.zeros((num_outputs, *shape), dtype=self.dtype)
        self._view = np.moveaxis(self.probabilities, 1 + stream_axis, 1)

    def consume(self, rows, accumulated, weights):
        for channel, values in enumerate(accumulated):  # one channel at a time: no full-slab temporary
            store = torch.from_numpy(self._view[channel, rows])
            if values.device.type == "cpu":  # divided, cast and stored in one pass on all cores, no temporary
                torch.div(values, weights, out=store)
            else:
                store.copy_((values / weights).to(store.dtype))

    def result(self):
        return self.probabilities


def choose_stream_axis(image_shape, patch):
    """The axis whose open slab (patch thick, full extent along the other two axes) is the smallest."""
    return int(np.argmin([p / s for s, p in zip(image_shape, patch)]))


def sliding_window_predict(image: np.ndarray, predict: Callable[[np.ndarray], Any], patch_size: Sequence[int],
                           num_outputs: int, overlap: float = 0.5, sink: Optional[Sink] = None, tile_batch: int = 1,
                           progress: Optional[Progress] = None, cancel: Optional[CancelToken] = None,
                           sigma_scale: float = 0.125, importance: Optional[np.ndarray] = None) -> Any:
    """Blend ``predict`` over overlapping tiles of ``image`` (C, K, J, I) and return ``sink.result()``.

    ``predict(batch)`` maps a float32 (B, C, *patch) array to (B, num_outputs, *patch) probabilities, as a numpy
    array or a torch tensor; a predictor with a ``device`` and a ``predict_tensor`` method (``NetworkPredictor``)
    keeps the blending on its device. Tiles beyond the image (only where the image is smaller than the patch) are
    zero-padded. ``importance``: tile weights of the patch's shape instead of :func:`gaussian_importance` (an
    imported nnU-Net v2 model blends with nnU-Net's own). ``progress`` is called as
    ``progress(fraction, eta_seconds, message)``; ``cancel`` (a :class:`~nnmamba.progress.CancelToken`) is
    checked after every batch of tiles.
    """
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"Expected an image of shape (channels, K, J, I), got shape {image.shape}.")
    shape = image.shape[1:]
    patch = fit_patch(shape, patch_size)
    sink = sink if sink is not None else ArgmaxSink()
    axis = getattr(sink, "stream_axis", None)   # a sink may need one axis (StreamingMapBack: K)
    axis = choose_stream_axis(shape, patch) if axis is None else axis
    sink.start(shape, num_outputs, axis)

    # Work in "stream-first" views: axis 0 of every spatial array is the streamed axis.
    stream_image = np.moveaxis(image, 1 + axis, 1)
    stream_patch = (patch[axis], *(p for i, p in enumerate(patch) if i != axis))
    stream_shape = stream_image.shape[1:]
    run = getattr(predict, "predict_tensor", predict)
    device = torch.device(getattr(predict, "device", "cpu"))
    if importance is None:
        importance = gaussian_importance(patch, sigma_scale)
    elif tuple(importance.shape) != tuple(patch):
        raise ValueError(f"importance has shape {importance.shape}, the tiles {tuple(patch)}.")
    weight = torch.from_numpy(np.ascontiguousarray(np.moveaxis(importance, axis, 0), dtype=np.float32))
    weight = weight.to(device)
    starts = [tile_starts(s, p, overlap) for s, p in zip(stream_shape, stream_patch)]

    tracker = ProgressTracker(math.prod(len(s) for s in starts), progress, cancel, "sliding window")
    tracker.check_cancelled()
    depth = stream_patch[0]
    accumulated = torch.zeros((num_outputs, depth, *stream_shape[1:]), dtype=torch.float32, device=device)
    weights = torch.zeros((depth, *stream_shape[1:]), dtype=torch.float32, device=device)
    origin = 0  # global stream index of the accumulators' row 0

    def finalize(stop):
        rows = stop - origin
        if rows > 0:
            sink.consume(slice(origin, stop), accumulated[:, :rows], weights[:rows])

    for s0 in starts[0]:
        if s0 > origin:  # rows before s0 are complete: hand them over, then slide the slab forward
            finalize(s0)
            _slide(accumulated, weights, s0 - origin)
            origin = s0
        corners = [(s0, a0, b0) for a0 in starts[1] for b0 in starts[2]]
        for first in range(0, len(corners), tile_batch):
            batch_corners = corners[first:first + tile_batch]
            tiles = np.stack([extract_tile(stream_image, corner, stream_patch) for corner in batch_corners])
            outputs = run(np.moveaxis(tiles, 2, 2 + axis))
            outputs = torch.as_tensor(outputs).to(device=accumulated.device, dtype=torch.float32)
            outputs = outputs.movedim(2 + axis, 2)
            for corner, output in zip(batch_corners, outputs):
                _add_tile(accumulated, weights, output, weight, corner, origin, stream_shape)
            tracker.advance(len(batch_corners))
    finalize(stream_shape[0])
    return sink.result()


def _slide(accumulated, weights, shift):
    """Move rows shift.. to the front and clear the rest, ``shift`` rows at a time (source and target never
    overlap): 2.5-4x faster than row by row for a 16-class slab of a CT (1.2 s -> 0.35 s per slide)."""
    depth = weights.shape[0]
    for row in range(0, depth - shift, shift):
        rows = min(shift, depth - shift - row)
        accumulated[:, row:row + rows].copy_(accumulated[:, row + shift:row + shift + rows])
        weights[row:row + rows].copy_(weights[row + shift:row + shift + rows])
    accumulated[:, max(depth - shift, 0):] = 0
    weights[max(depth - shift, 0):] = 0


def extract_tile(image: np.ndarray, corner: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """The (C, *patch) float32 tile of ``image`` (C, ...) at ``corner``, zero-padded beyond the image."""
    region = tuple(slice(c, c + p) for c, p in zip(corner, patch))
    data = image[(slice(None), *region)]
    if data.shape[1:] == tuple(patch):
        return np.ascontiguousarray(data, dtype=np.float32)
    tile = np.zeros((image.shape[0], *patch), dtype=np.float32)
    tile[(slice(None), *(slice(0, n) for n in data.shape[1:]))] = data
    return tile


def _add_tile(accumulated, weights, output, weight, corner, origin, stream_shape):
    extent = [min(p, size - c) for p, size, c in zip(weight.shape, stream_shape, corner)]
    inside = tuple(slice(0, n) for n in extent)
    target = (slice(corner[0] - origin, corner[0] - origin + extent[0]),
              slice(corner[1], corner[1] + extent[1]), slice(corner[2], corner[2] + extent[2]))
    w = weight[inside]
    accumulated[(slice(None), *target)].addcmul_(output[(slice(None), *inside)], w)  # in place, no temporary
    weights[target] += w
