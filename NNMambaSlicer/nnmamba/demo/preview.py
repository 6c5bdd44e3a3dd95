"""PNG previews a person can look at without Slicer: axial, coronal and sagittal slices side by side, in the
radiological convention (patient's right on the image's left, anterior and superior up), with a label map blended
in its segment colours and landmarks marked (prediction: filled dot; truth: white cross)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

PANEL_HEIGHT = 256


def write_preview(path, volume, labels=None, colors: Optional[Dict[int, Sequence[float]]] = None,
                  points: Sequence[Tuple[Sequence[float], Sequence[float]]] = (), truths: Sequence = (),
                  window: Optional[Tuple[float, float]] = None):
    """``volume``: a one-channel :class:`nnmamba.imaging.Volume`; ``labels``: KJI on its grid with ``colors``
    {value: (r, g, b) in 0..1}; ``points``: [(LPS position, rgb)]; ``truths``: LPS positions. ``window``: the grey
    range (default: 1st-99th percentile)."""
    from ..imaging import Volume
    from ..orientation import reorient

    stack = volume.array[:1] if labels is None else np.concatenate([volume.array[:1], labels[None].astype(np.float32)])
    oriented, _ = reorient(Volume(stack, volume.geometry), "LPS")  # labels ride along as a second channel
    image, geometry = oriented.array[0], oriented.geometry
    label_map = oriented.array[1].astype(np.int64) if labels is not None else None
    low, high = window or tuple(np.percentile(image, [1, 99]))
    grey = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if label_map is not None:
        lut = np.zeros((int(label_map.max()) + 1, 3))
        for value, color in (colors or {}).items():
            if value < len(lut):
                lut[value] = color
        painted = (label_map > 0)[..., None]
        rgb = np.where(painted, 0.55 * rgb + 0.45 * lut[label_map], rgb)
    marks = [(np.asarray(geometry.lps_to_index(np.asarray(p, float)[None]))[0], c) for p, c in points]
    crosses = [np.asarray(geometry.lps_to_index(np.asarray(p, float)[None]))[0] for p in truths]
    centre = _focus(label_map, [m for m, _ in marks] + crosses, image.shape)
    panels = [_panel(rgb, geometry.spacing, axis, centre, marks, crosses) for axis in (0, 1, 2)]
    gap = np.zeros((PANEL_HEIGHT, 4, 3))
    canvas = np.concatenate(sum(([p, gap] for p in panels), [])[:-1], axis=1)
    _write_png(path, np.round(canvas * 255).astype(np.uint8))
    return path


def _focus(label_map, index_points, shape_kji):
    """The (I, J, K) index the slices go through: the landmarks' mean, else the labels' centroid, else the centre."""
    if index_points:
        return np.mean(index_points, axis=0)
    if label_map is not None and label_map.any():
        return np.argwhere(label_map > 0).mean(axis=0)[::-1]
    return (np.asarray(shape_kji[::-1]) - 1) / 2


def _panel(rgb, spacing, axis, centre_ijk, marks, crosses):
    """One slice through ``centre_ijk`` across numpy axis ``axis`` (0 = K: axial, 1 = J: coronal, 2 = I: sagittal),
    resampled to square pixels of PANEL_HEIGHT rows, with the marks projected on it."""
    position = int(np.clip(round(centre_ijk[2 - axis]), 0, rgb.shape[axis] - 1))
    plane = np.take(rgb, position, axis=axis)
    # rows, columns as (numpy axis, flip): axial J down / I right; coronal and sagittal S up (K flipped)
    rows, cols = {0: ((1, False), (2, False)), 1: ((0, True), (2, False)), 2: ((0, True), (1, False))}[axis]
    if rows[1]:
        plane = plane[::-1]
    row_mm = spacing[2 - rows[0]] * plane.shape[0]
    col_mm = spacing[2 - cols[0]] * plane.shape[1]
    width = max(1, int(round(PANEL_HEIGHT * col_mm / row_mm)))
    row_index = np.minimum((np.arange(PANEL_HEIGHT) + 0.5) * plane.shape[0] / PANEL_HEIGHT, plane.shape[0] - 1)
    col_index = np.minimum((np.arange(width) + 0.5) * plane.shape[1] / width, plane.shape[1] - 1)
    panel = plane[row_index.astype(int)][:, col_index.astype(int)].copy()

    def to_pixel(index_ijk):
        r = index_ijk[2 - rows[0]]
        r = plane.shape[0] - 1 - r if rows[1] else r
        return (r + 0.5) * PANEL_HEIGHT / plane.shape[0], (index_ijk[2 - cols[0]] + 0.5) * width / plane.shape[1]

    for index, color in marks:
        _disk(panel, to_pixel(index), 3.5, color)
    for index in crosses:
        _cross(panel, to_pixel(index), 5)
    return panel


def _disk(panel, centre, radius, color):
    rr, cc = np.ogrid[:panel.shape[0], :panel.shape[1]]
    panel[(rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius ** 2] = color


def _cross(panel, centre, half):
    r, c = int(round(centre[0])), int(round(centre[1]))
    panel[max(r - half, 0):r + half + 1, min(max(c, 0), panel.shape[1] - 1)] = 1.0
    panel[min(max(r, 0), panel.shape[0] - 1), max(c - half, 0):c + half + 1] = 1.0


def _write_png(path, rgb_uint8):
    import SimpleITK as sitk

    from ..formats.atomic import atomic_path

    with atomic_path(path) as temporary:
        sitk.WriteImage(sitk.GetImageFromArray(rgb_uint8, isVector=True), str(temporary))
