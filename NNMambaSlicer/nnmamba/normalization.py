"""Intensity normalisation exactly as each model family was trained (``model.json`` ``input.normalization``).

The network only ever saw intensities after this step, so each scheme follows its training code:
- ``ct`` (nnU-Net v1 CT): clip to the dataset's foreground percentiles, then subtract its mean and divide by its std.
- ``zscore`` (nnU-Net v1 MRI): per image. With ``nonzero_mask`` the statistics come from the brain/body mask (the
  union over channels of voxels != 0, holes filled, as nnU-Net's crop step builds it) and voxels outside it become
  0; otherwise from the whole image. Divides by std + 1e-8 like nnU-Net.
- ``window`` (LFC): mean and std over voxels > 0, clip to mean ± k·std, map that window linearly onto ``range``.
- ``none``: intensities as stored.
"""

from __future__ import annotations

import numpy as np

from .imaging import ImageError

SCHEMES = ("ct", "zscore", "window", "none")


def nonzero_mask(array_ckji):
    """nnU-Net v1's ``create_nonzero_mask``: any channel != 0, with enclosed holes filled (face connectivity)."""
    import SimpleITK as sitk

    mask = np.any(np.asarray(array_ckji) != 0, axis=0)
    filled = sitk.BinaryFillhole(sitk.GetImageFromArray(mask.astype(np.uint8)), False, 1)
    return sitk.GetArrayFromImage(filled).astype(bool)


def _ct(values, scheme, out):
    low, high = (float(v) for v in scheme["clip"])
    std = float(scheme["std"])
    if not high > low or not std > 0:
        raise ValueError(f"model.json ct normalisation needs clip [low, high] with low < high and std > 0, got "
                         f"clip {scheme['clip']} and std {scheme['std']}.")
    np.clip(values, np.float32(low), np.float32(high), out=out)  # in place: no volume-sized temporaries
    out -= np.float32(scheme["mean"])
    out /= np.float32(std)


def _zscore(values, mask, channel, out):
    selected = values if mask is None else values[mask]
    if selected.size == 0:
        raise ImageError(f"Channel {channel} has no nonzero voxels to normalise over: the image is blank.")
    mean = selected.mean(dtype=np.float64)
    std = selected.std(dtype=np.float64)
    if std == 0:
        raise ImageError(f"Channel {channel} is constant ({mean:g}) " + ("inside its nonzero mask" if mask is not None
                         else "") + ": there is nothing to segment.")
    np.subtract(values, np.float32(mean), out=out)
    out /= np.float32(std + 1e-8)
    if mask is not None:
        out[~mask] = 0


def _window(values, scheme, channel, out):
    sigmas = float(scheme.get("sigmas", 2.0))
    target_low, target_high = (float(v) for v in scheme.get("range", (0.0, 255.0)))
    positive = values[values > 0]
    if positive.size == 0:
        raise ImageError(f"Channel {channel} has no voxel above 0, so the intensity window (computed over voxels "
                         f"> 0) is undefined. Check that the right image was chosen.")
    mean = positive.mean(dtype=np.float64)
    std = positive.std(dtype=np.float64)
    if std == 0:
        raise ImageError(f"Channel {channel}: every voxel above 0 equals {mean:g}; the intensity window is empty.")
    low = mean - sigmas * std
    width = 2 * sigmas * std
    scale = (target_high - target_low) / width
    np.clip(values, np.float32(low), np.float32(low + width), out=out)
    out -= np.float32(low)
    out *= np.float32(scale)
    out += np.float32(target_low)


def normalize(array_ckji, scheme: dict, out=None):
    """A float32 ``(C, K, J, I)`` array normalised per channel by the scheme: a new one, or ``out`` (which may be
    the input itself, to save a volume-sized copy). Degenerate input (a constant channel) raises
    :class:`ImageError`; an unknown scheme raises ValueError."""
    array = np.asarray(array_ckji, dtype=np.float32)
    if array.ndim != 4:
        raise ValueError(f"normalize expects (C, K, J, I), got shape {array.shape}")
    name = scheme.get("scheme")
    if name not in SCHEMES:
        raise ValueError(f"Unknown normalisation scheme {name!r}; expected one of {', '.join(SCHEMES)}.")
    if name == "none":
        return array.copy() if out is None else np.copyto(out, array) or out
    mask = nonzero_mask(array) if name == "zscore" and scheme.get("nonzero_mask", False) else None
    result = np.empty(array.shape, dtype=np.float32) if out is None else out
    for channel, values in enumerate(array):
        if values.min() == values.max():
            raise ImageError(f"Channel {channel} is constant ({float(values.flat[0]):g}): there is nothing for the "
                             f"model to see. Choose an image that holds data.")
        if name == "ct":
            _ct(values, scheme, result[channel])
        elif name == "zscore":
            _zscore(values, mask, channel, result[channel])
        else:
            _window(values, scheme, channel, result[channel])
    return result
