"""nnU-Net v2's inference preprocessing and export, reproduced for imported v2 result folders (``model.json``
``input.nnunet_v2``), without nnU-Net or torch: a user runs an imported model with nnmamba alone.

The order is nnU-Net v2's (``DefaultPreprocessor.run_case_npy`` and ``export_prediction``), on the array as
SimpleITK gives it (C, K, J, I) with the spacing reversed (K, J, I), which is what nnU-Net's SimpleITKIO reads:

1. transpose the axes by the plans' ``transpose_forward``;
2. crop to the bounding box of the nonzero mask (any channel != 0, holes filled);
3. normalise each channel by its scheme (CT: clip to the foreground 0.5/99.5 percentiles, then dataset mean/std;
   z-score: per image, inside the nonzero mask when ``use_mask_for_norm``; none);
4. resample to the configuration's spacing: new shape ``round(spacing / target * shape)``, a spline of the plans'
   order (3 for images) through ``scipy.ndimage.zoom(grid_mode=True, mode='nearest')`` clipped to the input range,
   which is what ``skimage.transform.resize(mode='edge', anti_aliasing=False)`` computes; when the spacing (the
   input's, else the target's) is anisotropic (max/min > 3) the low-resolution axis goes separately: each slice in
   2D, then along that axis with ``order_z`` (0: nearest);
5. pad to at least the patch (zeros, centred) and blend the patch-sized tiles at nnU-Net's step positions with its
   Gaussian (sigma 1/8 of the patch, a filtered delta, float16, zeros replaced by the smallest weight). The network
   output is blended as logits (``inference.activation`` ``none``), as nnU-Net does, also over mirrorings and folds;

and back: the logits resampled to the cropped shape with the plans' probability resampling (order 1, separate z
with order 0), softmax + argmax (labels) or sigmoid > 0.5 per region written in ``regions_class_order``
(region-based training), put back into the full image (background outside the box), axes transposed back.
Segmentations are resampled by nnU-Net only in training (order 1 per label); inference never needs it.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from ..imaging import Volume

ANISOTROPY_THRESHOLD = 3.0

__all__ = ["NnunetV2Mapping", "compute_new_shape", "crop_to_nonzero", "gaussian_weights", "prepare_nnunet_v2",
           "resample", "resize_spline", "separate_axis", "tile_steps"]


def _ndimage():
    try:
        from scipy import ndimage
    except ImportError:
        raise RuntimeError("Models imported from nnU-Net v2 need scipy for nnU-Net's resampling: pip install "
                           "scipy (or pip install 'nnmamba[nnunet]').") from None
    return ndimage


# ------------------------------------------------------------------------------------------------- crop to nonzero


def nonzero_mask(data):
    """Voxels where any channel is nonzero, enclosed holes filled (scipy's default face connectivity)."""
    return _ndimage().binary_fill_holes(np.any(np.asarray(data) != 0, axis=0))


def bounding_box(mask):
    """Half-open ``[[start, stop], ...]`` of the mask's True voxels; the whole array when there are none."""
    box = []
    for axis in range(mask.ndim):
        present = np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis))
        where = np.flatnonzero(present)
        box.append([int(where[0]), int(where[-1]) + 1] if where.size else [0, mask.shape[axis]])
    return box


def crop_to_nonzero(data):
    """``(cropped data, cropped mask, box)``: the data inside the bounding box of its nonzero mask."""
    mask = nonzero_mask(data)
    box = bounding_box(mask)
    window = tuple(slice(a, b) for a, b in box)
    return data[(slice(None), *window)], mask[window], box


# -------------------------------------------------------------------------------------------------------- resampling


def compute_new_shape(shape, spacing, target):
    return [int(round(float(s) / float(t) * int(n))) for n, s, t in zip(shape, spacing, target)]


def _low_resolution_axes(spacing):
    spacing = np.asarray(spacing, dtype=float)
    return np.flatnonzero(max(spacing) / spacing == 1)


def _anisotropic(spacing, threshold):
    return (np.max(spacing) / np.min(spacing)) > threshold


def separate_axis(current, target, force_separate_z=None, threshold=ANISOTROPY_THRESHOLD) -> Optional[int]:
    """The axis resampled on its own (separate z), or None: nnU-Net's rule. ``force_separate_z`` None decides by
    the anisotropy of the current spacing, else of the target spacing; two or three equally coarse axes mean none."""
    if force_separate_z is not None:
        axes = _low_resolution_axes(current) if force_separate_z else None
    elif _anisotropic(current, threshold):
        axes = _low_resolution_axes(current)
    elif _anisotropic(target, threshold):
        axes = _low_resolution_axes(target)
    else:
        axes = None
    if axes is None or len(axes) != 1:
        return None
    return int(axes[0])


def resize_spline(array, shape, order):
    """``skimage.transform.resize(array, shape, order, mode='edge', anti_aliasing=False)`` (clip on): a spline of
    ``order`` sampled at the box-to-box voxel centres, values clipped to the input's range."""
    array = np.asarray(array, dtype=np.float64)
    factors = [int(n) / m for n, m in zip(shape, array.shape)]
    out = _ndimage().zoom(array, factors, order=int(order), mode="nearest", grid_mode=True)
    if out.shape != tuple(int(n) for n in shape):
        raise AssertionError(f"zoom gave {out.shape}, expected {tuple(shape)}")
    if order > 0:
        np.clip(out, array.min(), array.max(), out=out)
    return out


def _along_axis(array, axis, size, order):
    """Resample one axis to ``size`` voxels (box to box, edge voxels repeated): order 0 takes the voxel
    ``scipy.ndimage.map_coordinates(order=0)`` rounds to, other orders a spline along that axis."""
    n = array.shape[axis]
    coordinates = (np.arange(size, dtype=float) + 0.5) * (n / size) - 0.5
    ndimage = _ndimage()
    if order == 0:
        picks = ndimage.map_coordinates(np.arange(n, dtype=float), coordinates[None], order=0, mode="nearest")
        return np.take(array, picks.astype(np.intp), axis=axis)
    factors = [1.0] * array.ndim
    factors[axis] = size / n
    return ndimage.zoom(array, factors, order=int(order), mode="nearest", grid_mode=True)


def resample(data, new_shape, current_spacing, target_spacing, order=3, order_z=0, force_separate_z=None,
             threshold=ANISOTROPY_THRESHOLD, dtype=None):
    """``(C, ...)`` data to ``new_shape`` as nnU-Net v2's ``resample_data_or_seg_to_shape`` does (images and
    probabilities; computed in float64, returned as ``dtype``, default the input's)."""
    data = np.asarray(data)
    dtype = data.dtype if dtype is None else dtype
    new_shape = [int(n) for n in new_shape]
    shape = list(data.shape[1:])
    if shape == new_shape:
        return data.astype(dtype, copy=False)
    axis = separate_axis(current_spacing, target_spacing, force_separate_z, threshold)
    result = np.empty((data.shape[0], *new_shape), dtype=dtype)
    for channel in range(data.shape[0]):
        values = data[channel].astype(np.float64)
        if axis is None:
            result[channel] = resize_spline(values, new_shape, order)
            continue
        in_plane = [n for a, n in enumerate(new_shape) if a != axis]
        slices = [resize_spline(np.take(values, i, axis=axis), in_plane, order) for i in range(shape[axis])]
        stacked = np.stack(slices, axis=axis)
        if shape[axis] != new_shape[axis]:
            stacked = _along_axis(stacked, axis, new_shape[axis], order_z)
        result[channel] = stacked
    return result


# ------------------------------------------------------------------------------------------------------ normalisation


def normalize_channel(image, scheme, mask):
    """One float32 channel, in place, by an ``input.nnunet_v2.normalization`` entry (nnU-Net v2's classes)."""
    name = scheme["scheme"]
    if name == "ct":
        low, high = scheme["clip"]
        np.clip(image, low, high, out=image)
        image -= scheme["mean"]
        image /= max(float(scheme["std"]), 1e-8)
    elif name == "zscore":
        if scheme.get("nonzero_mask"):
            values = image[mask]
            mean, std = values.mean(), values.std()
            image[mask] = (values - mean) / max(std, 1e-8)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, 1e-8)
    elif name != "none":
        raise ValueError(f"Unknown nnU-Net v2 normalisation {name!r} in model.json input.nnunet_v2.")
    return image


# --------------------------------------------------------------------------------------------------- sliding window


def tile_steps(size, patch, step=0.5):
    """nnU-Net's tile starts along one axis: as few as keep steps <= ``step`` of the patch, evenly spread."""
    if size <= patch:
        return [0]
    count = int(np.ceil((size - patch) / (patch * step))) + 1
    stride = (size - patch) / (count - 1)
    return [int(np.round(stride * i)) for i in range(count)]


def gaussian_weights(patch_size: Sequence[int], sigma_scale=1.0 / 8, scale=10.0):
    """nnU-Net v2's tile weights: a delta at ``patch // 2`` through a truncated Gaussian filter (sigma = patch /
    8), peak ``scale``, held in float16 with zeros replaced by the smallest weight; returned as float32."""
    weights = np.ones((), dtype=np.float64)
    for size in patch_size:
        sigma = size * sigma_scale
        radius = int(4.0 * sigma + 0.5)
        offsets = np.arange(size) - size // 2
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        axis = np.where(np.abs(offsets) <= radius, np.exp(-0.5 * (offsets / sigma) ** 2), 0.0) / kernel.sum()
        weights = np.multiply.outer(weights, axis)
    weights = (weights / (weights.max() / scale)).astype(np.float16)
    if np.any(weights == 0):
        weights[weights == 0] = weights[weights > 0].min()
    return weights.astype(np.float32)


def pad_to_patch(data, patch_size):
    """Zero-pad ``(C, ...)`` to at least the patch, centred (the odd voxel after); returns the crop back."""
    before = [max(0, p - n) // 2 for n, p in zip(data.shape[1:], patch_size)]
    after = [max(0, p - n) - b for n, p, b in zip(data.shape[1:], patch_size, before)]
    if not any(before) and not any(after):
        return data, None
    padded = np.pad(data, [(0, 0)] + list(zip(before, after)), mode="constant")
    return padded, tuple(slice(b, b + n) for b, n in zip(before, data.shape[1:]))


# ------------------------------------------------------------------------------------------------------------ mapping


def _softmax(logits):
    shifted = logits - logits.max(axis=0, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=0, keepdims=True)
    return shifted


class NnunetV2Mapping:
    """From the input grid to nnU-Net's network grid (transposed, cropped, resampled, padded) and back. Stands in
    for :class:`nnmamba.resampling.Resampling` in ``tasks.segment_volume``: ``probabilities_to_input`` takes the
    blended *logits* and gives the label map on the input grid; ``importance`` is nnU-Net's tile weighting."""

    is_identity = False

    def __init__(self, spec, shape_kji, spacing_kji, box, cropped_shape, network_shape, padding):
        self.spec = spec
        self.input_shape_kji = tuple(int(n) for n in shape_kji)
        self.transpose_forward = [int(a) for a in spec["transpose_forward"]]
        self.transpose_backward = [int(a) for a in spec["transpose_backward"]]
        self.spacing = [float(spacing_kji[a]) for a in self.transpose_forward]   # the input's, transposed
        self.target = [float(s) for s in spec["spacing"]]
        self.box = box
        self.cropped_shape = list(cropped_shape)
        self.network_shape = list(network_shape)   # after resampling, before padding
        self.padding = padding
        self.importance = gaussian_weights(spec["patch_size"])

    def __repr__(self):
        return (f"NnunetV2Mapping(input={self.input_shape_kji}, transpose={self.transpose_forward}, box={self.box}, "
                f"network={self.network_shape})")

    def logits_on_input_crop(self, get_channel: Callable[[int], np.ndarray], num_channels: int):
        """The blended logits without the padding, resampled back to the cropped box (float32)."""
        window = self.padding or (Ellipsis,)
        logits = np.stack([np.asarray(get_channel(c))[window] for c in range(num_channels)]).astype(np.float32)
        kwargs = self.spec["resampling_probabilities"]
        return resample(logits, self.cropped_shape, self.target, self.spacing, order=kwargs["order"],
                        order_z=kwargs["order_z"], force_separate_z=kwargs.get("force_separate_z"),
                        threshold=self.spec.get("anisotropy_threshold", ANISOTROPY_THRESHOLD), dtype=np.float32)

    def _uncrop(self, values, fill, dtype):
        full = np.full((*values.shape[:-3], *self._transposed_shape()), fill, dtype=dtype)
        full[(Ellipsis, *(slice(a, b) for a, b in self.box))] = values
        return full

    def _transposed_shape(self):
        return [self.input_shape_kji[a] for a in self.transpose_forward]

    def probabilities_to_input(self, get_channel: Callable[[int], np.ndarray], num_channels: int):
        """The label map on the input grid (K, J, I) from the blended logits: argmax, or for region-based training
        sigmoid > 0.5 (logit > 0) per region written in ``regions_class_order``."""
        logits = self.logits_on_input_crop(get_channel, num_channels)
        regions = self.spec.get("regions")
        if regions:
            labels = np.zeros(logits.shape[1:], dtype=np.uint16 if max(regions["class_order"]) > 255 else np.uint8)
            for channel, value in enumerate(regions["class_order"]):
                labels[logits[channel] > 0] = value
        else:
            labels = np.argmax(logits, axis=0).astype(np.uint8 if num_channels <= 256 else np.uint16)
        labels = self._uncrop(labels, 0, labels.dtype)
        return np.ascontiguousarray(labels.transpose(self.transpose_backward))

    def probabilities(self, get_channel: Callable[[int], np.ndarray], num_channels: int):
        """(C, K, J, I) float32 probabilities on the input grid, as nnUNetPredictor returns them: softmax (1 for
        background outside the crop box) or per-region sigmoid (0 outside)."""
        logits = self.logits_on_input_crop(get_channel, num_channels)
        if self.spec.get("regions"):
            probabilities = 1.0 / (1.0 + np.exp(-logits))
            full = self._uncrop(probabilities, 0.0, np.float32)
        else:
            probabilities = _softmax(logits)
            full = self._uncrop(probabilities, 0.0, np.float32)
            outside = np.ones(full.shape[1:], dtype=bool)
            outside[tuple(slice(a, b) for a, b in self.box)] = False
            full[0][outside] = 1.0
        return np.ascontiguousarray(full.transpose([0] + [a + 1 for a in self.transpose_backward]))


def prepare_nnunet_v2(spec, volume: Volume):
    """The network input (C, *padded network shape) for ``volume`` and the :class:`NnunetV2Mapping` back. The
    returned Volume keeps the input's geometry: a transposed, cropped grid is described by the mapping, not by it."""
    data = np.array(volume.array, dtype=np.float32)                  # a copy: the caller's voxels stay
    spacing_kji = [float(s) for s in volume.geometry.spacing][::-1]
    transpose = [int(a) for a in spec["transpose_forward"]]
    data = data.transpose([0] + [a + 1 for a in transpose])
    spacing = [spacing_kji[a] for a in transpose]
    data, mask, box = crop_to_nonzero(data)
    data = np.ascontiguousarray(data)
    cropped_shape = data.shape[1:]
    target = [float(s) for s in spec["spacing"]]
    new_shape = compute_new_shape(cropped_shape, spacing, target)
    schemes = spec["normalization"]
    if len(schemes) != data.shape[0]:
        raise ValueError(f"model.json input.nnunet_v2.normalization lists {len(schemes)} channel(s), the image has "
                         f"{data.shape[0]}.")
    for channel, scheme in enumerate(schemes):
        normalize_channel(data[channel], scheme, mask)
    kwargs = spec["resampling_data"]
    data = resample(data, new_shape, spacing, target, order=kwargs["order"], order_z=kwargs["order_z"],
                    force_separate_z=kwargs.get("force_separate_z"),
                    threshold=spec.get("anisotropy_threshold", ANISOTROPY_THRESHOLD), dtype=np.float32)
    padded, padding = pad_to_patch(data, spec["patch_size"])
    mapping = NnunetV2Mapping(spec, volume.array.shape[1:], spacing_kji, box, cropped_shape, new_shape, padding)
    return Volume(np.ascontiguousarray(padded), volume.geometry), mapping
