"""Class probabilities on the network grid to labels on the input grid, by the compiled kernel
(:mod:`nnmamba._numba_map_back`): from a whole probability store, or streamed from the sliding window's finished rows
so that no store is kept at all.

Both give exactly the labels of :meth:`nnmamba.resampling.Resampling.probabilities_to_input`'s numpy blocks for the
same probabilities.
"""

from __future__ import annotations

import numpy as np
import torch

from .resampling import Resampling, _axis_plan, step_order
from .ssm.numba_kernel import numba_available, use_user_cache_dir

SOURCE_ROWS_PER_STEP = 8   # network-grid rows divided and mapped back at a time (16 classes of 341²: 60 MB)


class _Plan:
    """The kernel's arguments for a network shape and an input shape: the order of the axis steps (the numpy
    path's) and each axis' (lower, upper, weight)."""

    def __init__(self, source_shape, target_shape):
        order = step_order(source_shape, target_shape)
        self.k_position = order.index(0)
        self.first_in_plane = next(axis for axis in order if axis != 0)
        self.k_plan, self.j_plan, self.i_plan = (_axis_plan(n_in, n_out, "edge")
                                                 for n_in, n_out in zip(source_shape, target_shape))

    def run(self, channels, labels, rows=slice(None), first_source_row=0):
        """labels (the output rows ``rows``) from ``channels`` (C, n, J, I) float32 or float16, C-contiguous
        planes, whose row 0 is network row ``first_source_row``."""
        use_user_cache_dir()
        from ._numba_map_back import map_back_labels

        lower, upper, weight = (part[rows] for part in self.k_plan)
        k_plan = (lower - first_source_row, upper - first_source_row, weight)
        map_back_labels(channels.view(np.uint16) if channels.dtype == np.float16 else channels,
                        self.k_position, self.first_in_plane, k_plan, self.j_plan, self.i_plan, labels[rows])


def compiled_map_back_usable(num_channels) -> bool:
    return numba_available() and 1 <= num_channels <= 256


def map_back_compiled(channels, labels, source_shape) -> bool:
    """``labels`` (uint8) from whole channels (3D float16 or float32, C-contiguous, equally spaced in memory, as the
    channels of one array are); False where the kernel does not apply (then nothing is written)."""
    stacked = _as_one_array(channels) if labels.dtype == np.uint8 and compiled_map_back_usable(len(channels)) \
        else None
    if stacked is not None:
        _Plan(source_shape, labels.shape).run(stacked, labels)
    return stacked is not None


def _as_one_array(channels):
    """The (C, K, J, I) array whose channels ``channels`` are, as a view (no copy), or None."""
    first = channels[0]
    if first.dtype not in (np.float16, np.float32) or first.ndim != 3 or not first.flags.c_contiguous:
        return None
    starts = [values.__array_interface__["data"][0] for values in channels]
    step = starts[1] - starts[0] if len(channels) > 1 else first.nbytes
    same_layout = all(values.dtype == first.dtype and values.shape == first.shape and values.strides == first.strides
                      for values in channels)
    if not same_layout or step <= 0 or any(start != starts[0] + c * step for c, start in enumerate(starts)):
        return None
    if step % first.itemsize or step < first.nbytes:   # channels overlapping in memory cannot be one array
        return None
    return np.lib.stride_tricks.as_strided(first, (len(channels), *first.shape), (step, *first.strides),
                                           writeable=False)


def streaming_saves_memory(shape, patch) -> bool:
    """Whether a slab patch-thick along K (what streaming needs) is smaller than the thinnest slab plus a float16
    store of every probability (what mapping back a whole store needs)."""
    plane = [shape[1] * shape[2], shape[0] * shape[2], shape[0] * shape[1]]
    thinnest = min(p * area for p, area in zip(patch, plane))
    return 4 * patch[0] * plane[0] <= 4 * thinnest + 2 * int(np.prod(shape))


class StreamingMapBack:
    """A sliding-window sink that streams along K and maps every finished run of network rows straight to the input
    rows they complete: no probability store (16 classes of a 512×512×300 CT: 0.84 GB less to fill and read back;
    about 1 s and 0.35 GB less at the peak on 2 cores). The probabilities are the window's own float32 ones (a
    store keeps float16)."""

    stream_axis = 0

    def __init__(self, resampling: Resampling):
        self.resampling = resampling

    def start(self, shape, num_outputs, stream_axis):
        if stream_axis != 0 or tuple(shape) != tuple(self.resampling.network_shape_kji):
            raise ValueError(f"StreamingMapBack streams the network grid {self.resampling.network_shape_kji} along "
                             f"K, not {tuple(shape)} along axis {stream_axis}.")
        target = self.resampling.input_shape_kji
        self.labels = np.zeros(target, dtype=np.uint8)
        self.plan = _Plan(tuple(shape), target)
        self.done = 0                    # input rows written
        self.window = None               # float32 probabilities of network rows window_start.. still needed
        self.window_start = 0

    def consume(self, rows, accumulated, weights):
        for first in range(rows.start, rows.stop, SOURCE_ROWS_PER_STEP):
            last = min(first + SOURCE_ROWS_PER_STEP, rows.stop)
            part = slice(first - rows.start, last - rows.start)
            probabilities = torch.div(accumulated[:, part], weights[part]).cpu().numpy()
            self._map_rows(first, np.ascontiguousarray(probabilities))

    def _map_rows(self, first, probabilities):
        if self.window is None:
            self.window, self.window_start = probabilities, first
        else:
            self.window = np.concatenate([self.window, probabilities], axis=1)
        window_end = self.window_start + self.window.shape[1]
        lower, upper, _ = self.plan.k_plan
        ready = int(np.searchsorted(np.maximum(lower, upper), window_end, side="left"))  # rows whose sources are in
        if ready > self.done:
            self.plan.run(self.window, self.labels, slice(self.done, ready), self.window_start)
            self.done = ready
        if self.done < len(lower):   # keep the network rows that the next input rows still need
            keep_from = int(min(lower[self.done], upper[self.done]))
            self.window = self.window[:, keep_from - self.window_start:].copy()
            self.window_start = keep_from
        else:
            self.window = None

    def result(self):
        if self.done != self.labels.shape[0]:
            raise RuntimeError(f"StreamingMapBack got network rows for {self.done} of {self.labels.shape[0]} input "
                               "rows")
        return self.labels
