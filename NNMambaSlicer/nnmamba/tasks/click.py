"""Click-to-segment: the structure under a point, computed from the few windows around it.

Windows sit on the full sliding window's own lattice (half-patch steps), so a click runs the network on the
window that best centres the point, grows the set of windows only while the structure touches its border, and
keeps every window it computed: a later click nearby is answered from the cache without a network pass.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..inference import extract_tile, fit_patch, gaussian_importance, tile_starts
from .common import make_predictor, prepare_input


@dataclass
class ClickResult:
    mask: np.ndarray            # (K, J, I) uint8, 1 inside the structure; a sub-box of the input grid
    offset: tuple               # (i, j, k): input-grid index of mask[0, 0, 0]
    label: int                  # label value of the structure (0: background was clicked)
    name: str
    network_passes: int         # windows computed for this click (0 when all came from the cache)
    seconds: float
    notes: list = field(default_factory=list)


class ClickSession:
    """One volume and one segmentation model, prepared once; answers clicks given in LPS millimetres."""

    def __init__(self, package, volume, device="auto", predictor=None, max_windows=27, cache_bytes=1.5e9,
                 notify=None):
        if package.task != "segmentation":
            raise ValueError(f"Model {package.id!r} is a {package.task} model; click-to-segment needs a "
                             "segmentation model.")
        self.package = package
        self.volume = volume
        self.prepared = prepare_input(package, volume)
        self.predictor = predictor or make_predictor(package, device, notify=notify)
        image = self.prepared.network.array
        self.shape = image.shape[1:]
        self.patch = fit_patch(self.shape, package.input["patch_size"][::-1])
        self.num_outputs = package.network["out_channels"]
        self.starts = [tile_starts(s, p, 0.5) for s, p in zip(self.shape, self.patch)]
        self.weight = gaussian_importance(self.patch)
        self.max_windows = max_windows
        window_bytes = 2 * self.num_outputs * int(np.prod(self.patch))  # float16 probabilities of one window
        self.cache_windows = max(int(cache_bytes // window_bytes), max_windows)
        self._windows = OrderedDict()   # lattice index -> (float16 probabilities (C, *patch), uint8 argmax)
        self._boxes = OrderedDict()     # (lo, hi) -> (labels of that box of windows, start, found components)
        self._names = {int(label["value"]): label["name"] for label in package.outputs["labels"]}

    def segment_at(self, positive, negative=()):
        """The union of the structures under the ``positive`` LPS points, minus those under ``negative`` ones."""
        started = time.perf_counter()
        passes_before = self.predictor.passes
        positive = self._check_points(positive, "positive")
        negative = self._check_points(negative, "negative") if len(negative) else []
        if not positive:
            raise ValueError("Click-to-segment needs at least one positive point.")
        notes = []
        found = [self._component(point, notes) for point in positive]
        structures = [c for c in found if c[2] != 0]
        label = structures[0][2] if structures else 0
        if not structures:
            notes.append("The model sees background under the point; nothing was segmented there.")
            mask, offset = np.zeros((1, 1, 1), np.uint8), (0, 0, 0)
        else:
            removed = [c for c in (self._component(point, notes) for point in negative) if c[2] != 0]
            mask, start = _combine(structures, removed)
            mask, offset = self._to_input_grid(mask, start)
        return ClickResult(mask, offset, int(label), self._names.get(int(label), "background"),
                           self.predictor.passes - passes_before, time.perf_counter() - started, notes)

    def _check_points(self, points, kind):
        points = np.asarray(points, dtype=float).reshape(-1, 3)
        if not np.all(np.isfinite(points)):
            raise ValueError(f"A {kind} point has a NaN or infinite coordinate: {points.tolist()}.")
        index = self.volume.geometry.lps_to_index(points)
        size = np.array(self.volume.array.shape[:0:-1])  # (I, J, K)
        outside = np.any((index < -0.5) | (index > size - 0.5), axis=1)
        if outside.any():
            p = points[outside][0]
            raise ValueError(f"The {kind} point ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm (LPS) lies outside the "
                             f"volume (voxel index {np.round(index[outside][0], 1).tolist()}, size {size.tolist()}). "
                             "Click inside the image.")
        return list(points)

    def _component(self, point, notes):
        """(mask, network-grid start (k, j, i), label) of the connected structure under ``point``."""
        ijk = self.prepared.network.geometry.lps_to_index(point)
        voxel = np.clip(np.round(ijk[::-1]).astype(int), 0, np.array(self.shape) - 1)
        home = [_best_window(starts, p, v) for starts, p, v in zip(self.starts, self.patch, voxel)]
        lo, hi = list(home), list(home)
        while True:
            labels, box_start, components = self._box_labels(tuple(lo), tuple(hi))
            local = tuple(voxel - box_start)
            label = int(labels[local])
            if label == 0:
                return None, box_start, 0
            known = next((c for c in components if c[0][local]), None)
            if known is not None:
                return known
            mask = _connected_region(labels, local)
            grown_lo, grown_hi = list(lo), list(hi)
            for axis in range(3):
                touches = np.moveaxis(mask, axis, 0)
                if touches[0].any() and lo[axis] > 0:
                    grown_lo[axis] -= 1
                if touches[-1].any() and hi[axis] < len(self.starts[axis]) - 1:
                    grown_hi[axis] += 1
            if (grown_lo, grown_hi) == (lo, hi):
                components.append((mask, box_start, label))
                return mask, box_start, label
            if np.prod(np.array(grown_hi) - grown_lo + 1) > self.max_windows:
                notes.append(f"The structure under the point reaches beyond {self.max_windows} windows; the result "
                             "is cut at their border. Segment the whole volume for this structure.")
                components.append((mask, box_start, label))
                return mask, box_start, label
            lo, hi = grown_lo, grown_hi

    def _box_labels(self, lo, hi):
        """Labels over the windows lo..hi (lattice indices, inclusive), computing missing windows: one window's
        own argmax, or the Gaussian blend of several."""
        key = (lo, hi)
        if key in self._boxes:
            self._boxes.move_to_end(key)
            return self._boxes[key]
        indices = [(a, b, c) for a in range(lo[0], hi[0] + 1) for b in range(lo[1], hi[1] + 1)
                   for c in range(lo[2], hi[2] + 1)]
        self._compute_windows([index for index in indices if index not in self._windows])
        start = np.array([self.starts[axis][lo[axis]] for axis in range(3)])
        stop = np.array([min(self.starts[axis][hi[axis]] + self.patch[axis], self.shape[axis]) for axis in range(3)])
        if len(indices) == 1:
            labels = self._windows[indices[0]][1][tuple(slice(0, n) for n in stop - start)]
        else:
            accumulated = np.zeros((self.num_outputs, *(stop - start)), dtype=np.float32)
            for index in indices:
                corner = np.array([self.starts[axis][index[axis]] for axis in range(3)]) - start
                extent = np.minimum(self.patch, stop - start - corner)
                inside = tuple(slice(0, n) for n in extent)
                target = (slice(None), *(slice(c, c + n) for c, n in zip(corner, extent)))
                accumulated[target] += self._windows[index][0][(slice(None), *inside)] * self.weight[inside]
            labels = _argmax_channels(accumulated)
        for index in indices:
            self._windows.move_to_end(index)
        self._boxes[key] = (labels, start, [])
        while len(self._boxes) > 8:
            self._boxes.popitem(last=False)
        return self._boxes[key]

    def _compute_windows(self, indices):
        import torch

        if not indices:
            return
        image = self.prepared.network.array
        tiles = [extract_tile(image, [self.starts[axis][index[axis]] for axis in range(3)], self.patch)
                 for index in indices]
        run = getattr(self.predictor, "predict_tensor", self.predictor)
        probabilities = torch.as_tensor(run(np.stack(tiles)))  # on the predictor's device
        labels = probabilities.max(1).indices.to(torch.uint8 if self.num_outputs <= 256 else torch.int16).cpu().numpy()
        halves = probabilities.to(torch.float16).cpu().numpy()  # kept for blending with neighbouring windows
        for index, half, label in zip(indices, halves, labels):
            self._windows[index] = (half, label)
        while len(self._windows) > self.cache_windows:
            self._windows.popitem(last=False)

    def _to_input_grid(self, mask, start):
        """Nearest-neighbour lookup of a network-grid mask (origin ``start``, KJI) for the input voxels around it,
        cropped to the structure: (mask on the input grid, (i, j, k) offset).

        Reorientation permutes/flips axes and resampling scales each axis, so every input axis maps to one network
        axis: the lookup is one index vector per axis, never a coordinate per voxel.
        """
        box = _bounding_box(mask)
        if box is None:
            return np.zeros((1, 1, 1), np.uint8), (0, 0, 0)
        network, source = self.prepared.network.geometry, self.volume.geometry
        to_network = np.linalg.inv(network.direction @ np.diag(network.spacing)) @ source.direction @ np.diag(
            source.spacing)  # input (i, j, k) -> network (i, j, k), plus shift
        shift = network.lps_to_index(source.origin)
        axis_of = np.argmax(np.abs(to_network), axis=0)  # network axis fed by each input axis
        if sorted(axis_of) != [0, 1, 2] or np.abs(to_network).sum() - np.abs(to_network).max(0).sum() > 1e-6:
            raise ValueError("Internal error: the network grid is not an axis-aligned rescaling of the input grid.")
        lo, hi = box[0] + start, box[1] - 1 + start  # network KJI, inclusive
        picks, offset = [], []
        for axis in range(3):  # input I, J, K
            array_axis = 2 - axis_of[axis]  # the network array axis it maps to
            scale, bias = to_network[axis_of[axis], axis], shift[axis_of[axis]]
            ends = sorted(((lo[array_axis] - 0.5 - bias) / scale, (hi[array_axis] + 0.5 - bias) / scale))
            size = self.volume.array.shape[3 - axis]
            index = np.arange(max(int(np.floor(ends[0])), 0), min(int(np.ceil(ends[1])), size - 1) + 1)
            pick = np.rint(scale * index + bias).astype(int) - start[array_axis]
            keep = (pick >= 0) & (pick < mask.shape[array_axis])
            picks.append(pick[keep])
            offset.append(int(index[keep][0]) if keep.any() else 0)
        order = [2 - axis_of[2], 2 - axis_of[1], 2 - axis_of[0]]  # network array axes for input K, J, I
        gathered = mask.transpose(order)[np.ix_(picks[2], picks[1], picks[0])].astype(np.uint8)
        found = _bounding_box(gathered)
        if found is None:
            return np.zeros((1, 1, 1), np.uint8), tuple(offset)
        a, b = found
        cropped = gathered[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
        return np.ascontiguousarray(cropped), (offset[0] + int(a[2]), offset[1] + int(a[1]), offset[2] + int(a[0]))


def _best_window(starts, patch, voxel):
    """The lattice window that holds ``voxel`` closest to its centre."""
    holding = [n for n, s in enumerate(starts) if s <= voxel < s + patch] or [0]
    return min(holding, key=lambda n: abs(voxel - (starts[n] + (patch - 1) / 2)))


def _bounding_box(mask):
    """(first, stop) index arrays of the nonzero voxels of a 3D mask, or None; from the three axis projections,
    far cheaper than listing every voxel."""
    first, stop = [], []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if not len(hit):
            return None
        first.append(hit[0])
        stop.append(hit[-1] + 1)
    return np.array(first), np.array(stop)


def _argmax_channels(probabilities):
    """Winning channel per voxel as uint8/uint16, via torch (threaded, and without numpy's axis-0 copy)."""
    import torch

    dtype = np.uint8 if len(probabilities) <= 256 else np.uint16
    return torch.from_numpy(np.ascontiguousarray(probabilities)).max(0).indices.numpy().astype(dtype)


def _connected_region(labels, seed):
    """Face-connected voxels of the seed's label (SimpleITK region growing)."""
    import SimpleITK as sitk

    value = int(labels[seed])
    image = sitk.GetImageFromArray(labels)
    grown = sitk.ConnectedThreshold(image, seedList=[tuple(int(v) for v in seed[::-1])], lower=value, upper=value)
    return sitk.GetArrayViewFromImage(grown).astype(bool)


def _combine(structures, removed):
    """OR of the positive components minus the negative ones, on their common network-grid box."""
    parts = structures + removed
    lo = np.min([start for _, start, _ in parts], axis=0)
    hi = np.max([start + np.array(mask.shape) for mask, start, _ in parts], axis=0)
    combined = np.zeros(hi - lo, dtype=bool)
    for index, (mask, start, _) in enumerate(parts):
        region = tuple(slice(a, a + n) for a, n in zip(start - lo, mask.shape))
        if index < len(structures):
            combined[region] |= mask
        else:
            combined[region] &= ~mask
    return combined, lo
