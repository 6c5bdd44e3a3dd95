"""The network grid and the way back: resampling to the model's spacing or shape, and results back to the input.

Both modes resize the image *box to box*: the new grid covers exactly the physical box of the input (outer voxel
faces coincide), with voxel centres at ``x_in = (x_net + 0.5) * n_in / n_net - 0.5`` along each index axis and the
direction unchanged. This is what nnU-Net (``skimage.transform.resize``) and LFC do, so the network sees what it was
trained on, and because the two grids share their axes every mapping is separable and exact: resampling is done
axis by axis in numpy, without building SimpleITK transforms.

- ``spacing`` (nnU-Net): n_net = round(n_in * spacing / target), linear interpolation, edge voxels repeated beyond
  the outer voxel centres, no smoothing (nnU-Net v1 uses cubic here; the model contract says linear).
- ``shape`` (LFC): resize to a fixed shape like ``skimage.transform.resize(order=1, preserve_range=True)``: a
  Gaussian anti-aliasing filter (sigma = (n_in / n_net - 1) / 2 voxels) on axes that shrink, mirror boundaries.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import numpy as np

from .geometry import Geometry
from .imaging import Volume

MODES = ("none", "spacing", "shape")
LANDMARK_AXIS_ORDERS = ("physical", "lfc")


# --------------------------------------------------------------------------------------- separable 1D operations


def _centres(n_in, n_out):
    """Continuous input indices of the output voxel centres along one axis (box-to-box)."""
    return (np.arange(n_out, dtype=float) + 0.5) * (n_in / n_out) - 0.5


def _fold(index, n, boundary):
    """Integer indices outside [0, n-1] brought back: repeated edge voxel, or mirrored about the outer centres
    (numpy "reflect" = scipy.ndimage "mirror", what skimage's default mode="reflect" becomes)."""
    if n == 1:
        return np.zeros_like(index)
    if boundary == "edge":
        return np.clip(index, 0, n - 1)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index > n - 1, period - index, index)


def _axis_plan(n_in, n_out, boundary):
    """(lower input index, upper input index, float32 weight of the upper) of each output voxel along one axis."""
    x = _centres(n_in, n_out)
    lower = np.floor(x)
    weight = (x - lower).astype(np.float32)
    lower = lower.astype(np.intp)
    return _fold(lower, n_in, boundary), _fold(lower + 1, n_in, boundary), weight


def _interpolate_along(array, axis, lower, upper, weight):
    shape = [1] * array.ndim
    shape[axis] = len(weight)
    if axis == array.ndim - 1:  # along the contiguous axis indexing gathers faster than np.take (same values)
        low_values, result = array[..., lower], array[..., upper]
    else:
        low_values, result = np.take(array, lower, axis=axis), np.take(array, upper, axis=axis)
    result -= low_values
    result *= weight.reshape(shape)
    result += low_values
    return result


def step_order(source_shape, target_shape):
    """The axes in the order their interpolation steps run: shrinking axes first (the least work)."""
    return sorted(range(3), key=lambda a: target_shape[a] / source_shape[a])


def _row_blocks(source_shape, target_shape, boundary, block_voxels=1 << 18):
    """The separable resize of a (K, J, I) array block by block of output rows (about ``block_voxels`` voxels
    each): yields (first, last, source rows needed, one interpolation per axis in the order to apply them, each
    (axis, lower, upper, weight) relative to those rows). Applied to the rows, they give exactly the values of
    resizing the whole array axis by axis (the same operations on the same numbers), with the temporaries of one
    block only, which stay in the CPU cache."""
    plans = [None if n_in == n_out else _axis_plan(n_in, n_out, boundary)
             for n_in, n_out in zip(source_shape, target_shape)]
    order = step_order(source_shape, target_shape)
    rows = max(1, block_voxels // max(1, target_shape[1] * target_shape[2]))
    for first in range(0, target_shape[0], rows):
        last = min(first + rows, target_shape[0])
        block_plans = dict(enumerate(plans))
        if plans[0] is None:
            needed = slice(first, last)
        else:  # the source rows this block interpolates from, and its plan relative to them
            lower, upper, weight = (part[first:last] for part in plans[0])
            start = int(min(lower.min(), upper.min()))
            needed = slice(start, int(max(lower.max(), upper.max())) + 1)
            block_plans[0] = (lower - start, upper - start, weight)
        yield first, last, needed, [(axis, *block_plans[axis]) for axis in order if block_plans[axis] is not None]


def _usable_cores(limit=8):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(limit, cores or 1))


def _for_each_block(work, blocks):
    """``work(block)`` for every block, on all usable cores: blocks write disjoint output rows, and numpy leaves
    the interpreter lock while it computes, so threads share the work; a worker's error is raised here."""
    blocks = list(blocks)
    threads = min(_usable_cores(), len(blocks))
    if threads <= 1:
        for block in blocks:
            work(block)
        return
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(work, blocks):
            pass


def _interpolate_block(values, steps):
    for axis, lower, upper, weight in steps:
        values = _interpolate_along(values, axis, lower, upper, weight)
    return values


def _gaussian_along(array, axis, sigma):
    """scipy.ndimage.gaussian_filter1d (truncate 4, mirror boundary), which skimage's anti-aliasing uses."""
    radius = int(4.0 * sigma + 0.5)
    if radius < 1:
        return array
    offsets = np.arange(-radius, radius + 1, dtype=float)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padding = [(0, 0)] * array.ndim
    padding[axis] = (radius, radius)
    padded = np.pad(array, padding, mode="reflect")
    n = array.shape[axis]
    result = np.zeros_like(array)
    for shift, weight in enumerate(kernel):
        window = [slice(None)] * array.ndim
        window[axis] = slice(shift, shift + n)
        result += np.float32(weight) * padded[tuple(window)]
    return result


def resize_linear(array_kji, shape_kji, boundary="edge", anti_alias=False):
    """Box-to-box trilinear resize of one 3D array to ``shape_kji`` (float32): axis by axis, shrinking axes first,
    block by block of output rows (:func:`_row_blocks`)."""
    array = np.asarray(array_kji, dtype=np.float32)
    shape_kji = tuple(int(n) for n in shape_kji)
    if anti_alias:
        for axis in range(3):
            factor = array.shape[axis] / shape_kji[axis]
            if factor > 1:
                array = _gaussian_along(array, axis, (factor - 1) / 2)
    result = np.empty(shape_kji, dtype=np.float32)

    def resize_rows(block):
        first, last, needed, steps = block
        result[first:last] = _interpolate_block(array[needed], steps)

    _for_each_block(resize_rows, _row_blocks(array.shape, shape_kji, boundary))
    return result


def resize_nearest(array_kji, shape_kji):
    """Box-to-box nearest-neighbour resize (labels): each output voxel takes the input voxel its centre lies in."""
    array = np.asarray(array_kji)
    picks = [np.clip(np.floor(_centres(n_in, n_out) + 0.5), 0, n_in - 1).astype(np.intp)
             for n_in, n_out in zip(array.shape, shape_kji)]
    return array[np.ix_(*picks)]


def same_box_geometry(geometry: Geometry, size_ijk, new_size_ijk) -> Geometry:
    """The grid of ``new_size_ijk`` voxels covering the same physical box with the same direction."""
    size = np.asarray(size_ijk, dtype=float)
    spacing = geometry.spacing * size / np.asarray(new_size_ijk, dtype=float)
    origin = geometry.origin + geometry.direction @ ((spacing - geometry.spacing) / 2)
    return Geometry.create(origin, spacing, geometry.direction)


# --------------------------------------------------------------------------------------------- landmark mapping


def lfc_index_to_lps(array_index_kji, original_geometry: Geometry, original_size_ijk,
                     network_shape_ijk=(128, 128, 128)):
    """LFC's decoding, reproduced on purpose (nnmamba-spec §7 points 4-5): ``p = origin + a * spacing / factor``.

    ``a`` is the heatmap argmax as *array* indices (axis 0, 1, 2 of the ``(K, J, I)`` network array), ``origin``
    and ``spacing`` are in (x, y, z) = (I, J, K) order, but LFC's ``factor`` had elements 0 and 2 swapped, so
    ``factor[d] = network_size / original_size`` along *array* axis d: ``(n_K/s_K, n_J/s_J, n_I/s_I)``. The
    direction matrix is ignored and there is no half-voxel offset. LFC trained its heatmaps in this frame (x on
    array axis 0), so its checkpoints must be decoded the same way; for any other model use the physical mapping.
    ``network_shape_ijk`` defaults to LFC's 128³; pass the model's shape otherwise.
    """
    index = np.asarray(array_index_kji, dtype=float)
    factor = (np.asarray(network_shape_ijk, dtype=float) / np.asarray(original_size_ijk, dtype=float))[::-1]
    return original_geometry.origin + index * original_geometry.spacing / factor


# ------------------------------------------------------------------------------------------------ the mapping


class Resampling:
    """How the network grid relates to the input grid, and the ways back (labels, probabilities, points)."""

    def __init__(self, mode, input_geometry: Geometry, input_shape_ijk, network_geometry: Geometry,
                 network_shape_ijk, landmark_axis_order="physical"):
        self.mode = mode
        self.input_geometry = input_geometry
        self.input_shape_ijk = tuple(int(n) for n in input_shape_ijk)
        self.network_geometry = network_geometry
        self.network_shape_ijk = tuple(int(n) for n in network_shape_ijk)
        self.landmark_axis_order = landmark_axis_order

    def __repr__(self):
        return (f"Resampling(mode={self.mode!r}, input={self.input_shape_ijk}, network={self.network_shape_ijk}, "
                f"landmark_axis_order={self.landmark_axis_order!r})")

    @property
    def is_identity(self):
        """True when the network grid is the input grid itself."""
        return self.input_shape_ijk == self.network_shape_ijk and self.network_geometry is self.input_geometry

    @property
    def input_shape_kji(self):
        return self.input_shape_ijk[::-1]

    @property
    def network_shape_kji(self):
        return self.network_shape_ijk[::-1]

    def to_network(self, array_kji):
        """One input-grid channel on the network grid (float32), as the model was trained."""
        if self.is_identity:
            return np.asarray(array_kji, dtype=np.float32)
        if self.mode == "shape":
            return resize_linear(array_kji, self.network_shape_kji, boundary="mirror", anti_alias=True)
        return resize_linear(array_kji, self.network_shape_kji, boundary="edge")

    def labels_to_input(self, labels_kji):
        """A network-grid label map on the input grid (nearest neighbour, dtype kept)."""
        self._check_network_shape(labels_kji)
        if self.is_identity:
            return np.asarray(labels_kji)
        return resize_nearest(labels_kji, self.input_shape_kji)

    def values_to_input(self, values_kji):
        """A network-grid scalar map (probability, heatmap) on the input grid: linear, float32."""
        self._check_network_shape(values_kji)
        if self.is_identity:
            return np.asarray(values_kji, dtype=np.float32)
        return resize_linear(values_kji, self.input_shape_kji, boundary="edge")

    def probabilities_to_input(self, get_channel: Callable[[int], np.ndarray], num_channels: int,
                               block_voxels: int = 1 << 18):
        """Labels on the input grid from class probabilities on the network grid: each channel interpolated to the
        input grid exactly as :meth:`values_to_input` does, and the winner kept. Ties keep the lower label
        (background first). ``get_channel(c)`` is called once per channel and should be cheap (a view).

        With numba installed, float16 or float32 channels go through one compiled pass per input row on all cores
        (:mod:`nnmamba.map_back`). Otherwise the work goes block by block of input rows
        (about ``block_voxels`` voxels, every channel, then the next block; the blocks on all cores), so that the
        interpolated values, the running maximum and the labels stay in the CPU cache and no channel is ever held
        whole at input resolution. Both give the labels of interpolating whole channels, bit for bit; 16 channels
        of 341×341×225 onto 512×512×300 on 2 cores: 5.6 s in one thread, 3.0 s in blocks on both cores, 1.1 s
        compiled.
        """
        if num_channels < 1:
            raise ValueError("probabilities_to_input needs at least one channel")
        channels = [get_channel(c) for c in range(num_channels)]
        for values in channels:
            self._check_network_shape(values)
        target = self.input_shape_kji
        labels = np.zeros(target, dtype=np.uint8 if num_channels <= 256 else np.uint16)
        from .map_back import map_back_compiled

        if map_back_compiled(channels, labels, self.network_shape_kji):
            return labels

        def label_rows(block):
            first, last, needed, steps = block
            block_labels = labels[first:last]
            for channel, values in enumerate(channels):
                values = _interpolate_block(np.array(values[needed], dtype=np.float32), steps)
                if channel == 0:
                    best, scratch = values, np.empty(values.shape, dtype=labels.dtype)
                    continue
                better = values > best
                # labels += (channel - labels) * better, wrapping around in the label type: no branch per voxel
                # (a masked copy costs ~40x more where the winners are scattered)
                np.subtract(labels.dtype.type(channel), block_labels, out=scratch)
                np.multiply(scratch, better, out=scratch)
                np.add(block_labels, scratch, out=block_labels)
                np.maximum(best, values, out=best)

        _for_each_block(label_rows, _row_blocks(self.network_shape_kji, target, "edge", block_voxels))
        return labels

    def network_index_to_lps(self, ijk):
        """(..., 3) continuous (I, J, K) network-grid indices -> LPS mm, exactly through the network geometry."""
        return self.network_geometry.index_to_lps(ijk)

    def landmark_to_lps(self, array_index_kji):
        """(..., 3) heatmap peak positions as array indices (axis 0, 1, 2) -> LPS mm, in the model's convention."""
        index = np.asarray(array_index_kji, dtype=float)
        if self.landmark_axis_order == "lfc":
            return lfc_index_to_lps(index, self.input_geometry, self.input_shape_ijk, self.network_shape_ijk)
        return self.network_index_to_lps(index[..., ::-1])

    def _check_network_shape(self, array):
        if tuple(np.shape(array)) != self.network_shape_kji:
            raise ValueError(f"Expected an array on the network grid {self.network_shape_kji} (K, J, I), got "
                             f"{tuple(np.shape(array))}.")


def _three_positive(values, what, integer=False) -> Optional[np.ndarray]:
    array = np.asarray(values, dtype=float).reshape(-1)
    if array.size != 3 or not np.all(np.isfinite(array)) or np.any(array <= 0) or (
            integer and np.any(array != np.round(array))):
        kind = "positive integers" if integer else "positive numbers"
        raise ValueError(f"model.json input.resampling.{what} must be three {kind} (I, J, K), got {values!r}.")
    return array


def network_grid(volume_geometry: Geometry, shape_ijk: Sequence[int], resampling: dict) -> Resampling:
    """The mapping for ``model.json`` ``input.resampling`` on an image of ``shape_ijk`` voxels."""
    mode = resampling.get("mode", "none")
    order = resampling.get("landmark_axis_order", "physical")
    if mode not in MODES:
        raise ValueError(f"Unknown resampling mode {mode!r}; expected one of {', '.join(MODES)}.")
    if order not in LANDMARK_AXIS_ORDERS:
        raise ValueError(f"Unknown landmark_axis_order {order!r}; expected one of {', '.join(LANDMARK_AXIS_ORDERS)}.")
    size = np.asarray(shape_ijk, dtype=float)
    new_size = size
    if mode == "spacing":
        target = _three_positive(resampling.get("spacing"), "spacing")
        if not np.allclose(volume_geometry.spacing, target, rtol=1e-3, atol=0):
            new_size = np.maximum(1, np.round(size * volume_geometry.spacing / target))
    elif mode == "shape":
        new_size = _three_positive(resampling.get("shape"), "shape", integer=True)
    if np.array_equal(new_size, size):
        return Resampling(mode, volume_geometry, shape_ijk, volume_geometry, shape_ijk, order)
    return Resampling(mode, volume_geometry, shape_ijk, same_box_geometry(volume_geometry, size, new_size),
                      new_size.astype(int), order)


def resample_for_model(volume: Volume, resampling: dict):
    """The volume on the network grid (each channel resampled) and the :class:`Resampling` that maps back."""
    mapping = network_grid(volume.geometry, volume.shape_ijk, resampling)
    if mapping.is_identity:
        return volume, mapping
    array = np.empty((volume.num_channels,) + mapping.network_shape_kji, dtype=np.float32)
    for channel in range(volume.num_channels):
        array[channel] = mapping.to_network(volume.array[channel])
    return Volume(array, mapping.network_geometry), mapping
