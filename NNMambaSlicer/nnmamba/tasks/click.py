"""Click-to-segment: the structure under a point, computed from the few windows around it.

Windows sit on the full sliding window's own lattice (half-patch steps), so a click runs the network on the
window that best centres the point, grows the set of windows only while the structure touches its border, and
keeps every window it computed: a later click nearby is answered from the cache without a network pass.

Everything between the network passes stays on the predictor's device: blending, argmax, the region growing (on a
CUDA GPU a flood fill by repeated dilation; elsewhere SimpleITK's) and the lookup onto the input grid, so only the
answer, a uint8 mask cropped to the structure, crosses to the host. The window cache (``cache_bytes`` of float16
probabilities) therefore lives in GPU memory on a GPU. Found structures are kept, and so are the
answers on the input grid: a later click inside a found structure costs a lookup, not a blend and a region growing
(measured with ``Testing/benchmarks/bench_click.py``).
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..inference import extract_tile, fit_patch, gaussian_importance, tile_starts
from .common import make_predictor, prepare_input

KEPT_BOXES = 8          # label maps of boxes of windows
KEPT_COMPONENTS = 32    # found structures (network grid, one bool per voxel)
KEPT_ANSWERS = 4        # answers on the input grid


@dataclass
class ClickResult:
    mask: np.ndarray            # (K, J, I) uint8, 1 inside the structure; a sub-box of the input grid (read-only)
    offset: tuple               # (i, j, k): input-grid index of mask[0, 0, 0]
    label: int                  # label value of the structure (0: background was clicked)
    name: str
    network_passes: int         # windows computed for this click (0 when all came from the cache)
    seconds: float
    notes: list = field(default_factory=list)


@dataclass(eq=False)
class _Component:
    """A connected structure found on the network grid."""

    mask: torch.Tensor          # bool, on the device the windows were computed on
    start: np.ndarray           # network-grid (k, j, i) of mask[0, 0, 0]
    label: int
    serial: int
    cut: bool = False           # reached beyond max_windows: cut at the border of the windows

    def holds(self, voxel):
        local = np.asarray(voxel) - self.start
        if np.any(local < 0) or np.any(local >= np.array(self.mask.shape)):
            return False
        return bool(self.mask[tuple(int(v) for v in local)])


class ClickSession:
    """One volume and one segmentation model, prepared once; answers clicks given in LPS millimetres."""

    def __init__(self, package, volume, device="auto", predictor=None, max_windows=27, cache_bytes=1.5e9,
                 notify=None):
        if package.task != "segmentation":
            raise ValueError(f"Model {package.id!r} is a {package.task} model; click-to-segment needs a "
                             "segmentation model.")
        if "nnunet_v2" in package.input:   # its grid is nnU-Net's (cropped, transposed) and its output logits
            raise ValueError(f"Model {package.id!r} was imported from nnU-Net v2; click-to-segment does not run "
                             "such models yet: segment the whole volume with it instead.")
        self.package = package
        self.volume = volume
        self.prepared = prepare_input(package, volume)
        self.predictor = predictor or make_predictor(package, device, notify=notify)
        image = self.prepared.network.array
        self.shape = image.shape[1:]
        self.patch = fit_patch(self.shape, package.input["patch_size"][::-1])
        self.num_outputs = package.network["out_channels"]
        self.starts = [tile_starts(s, p, 0.5) for s, p in zip(self.shape, self.patch)]
        self.weight = torch.from_numpy(gaussian_importance(self.patch))  # copied to the windows' device when used
        self.max_windows = max_windows
        window_bytes = 2 * self.num_outputs * int(np.prod(self.patch))  # float16 probabilities of one window
        self.cache_windows = max(int(cache_bytes // window_bytes), max_windows)
        self._label_dtype = torch.uint8 if self.num_outputs <= 256 else torch.int16
        # On the predictor's device: lattice index -> (float16 probabilities (C, *patch), argmax labels)
        self._windows = OrderedDict()
        self._boxes = OrderedDict()       # (lo, hi) -> (labels of that box of windows, its start)
        self._components = OrderedDict()  # serial -> _Component
        self._answers = OrderedDict()     # (positive serials, negative serials) -> (input-grid mask, offset)
        self._serials = itertools.count()
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
        structures = [c for c in (self._component(point, notes) for point in positive) if c is not None]
        label = structures[0].label if structures else 0
        if not structures:
            notes.append("The model sees background under the point; nothing was segmented there.")
            mask, offset = np.zeros((1, 1, 1), np.uint8), (0, 0, 0)
        else:
            removed = [c for c in (self._component(point, notes) for point in negative) if c is not None]
            mask, offset = self._answer(structures, removed)
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
        """The connected structure under ``point`` (a :class:`_Component`), or None where the model sees background.
        A point inside a structure found before gets that structure, without a blend or a region growing."""
        ijk = self.prepared.network.geometry.lps_to_index(point)
        voxel = np.clip(np.round(ijk[::-1]).astype(int), 0, np.array(self.shape) - 1)
        for component in reversed(self._components.values()):
            if component.holds(voxel):
                self._components.move_to_end(component.serial)
                if component.cut:
                    self._note_cut(notes)
                return component
        home = [_best_window(starts, p, v) for starts, p, v in zip(self.starts, self.patch, voxel)]
        lo, hi = list(home), list(home)
        while True:
            labels, box_start = self._box_labels(tuple(lo), tuple(hi))
            local = tuple(int(v) for v in voxel - box_start)
            label = int(labels[local])
            if label == 0:
                return None
            mask = _connected_region(labels, local)
            grown_lo, grown_hi = list(lo), list(hi)
            for axis in range(3):
                touches = mask.movedim(axis, 0)
                if lo[axis] > 0 and bool(touches[0].any()):
                    grown_lo[axis] -= 1
                if hi[axis] < len(self.starts[axis]) - 1 and bool(touches[-1].any()):
                    grown_hi[axis] += 1
            cut = np.prod(np.array(grown_hi) - grown_lo + 1) > self.max_windows
            if (grown_lo, grown_hi) == (lo, hi) or cut:
                if cut:
                    self._note_cut(notes)
                component = _Component(mask, box_start, label, next(self._serials), cut)
                self._components[component.serial] = component
                while len(self._components) > KEPT_COMPONENTS:
                    self._components.popitem(last=False)
                return component
            lo, hi = grown_lo, grown_hi

    def _note_cut(self, notes):
        note = (f"The structure under the point reaches beyond {self.max_windows} windows; the result is cut at "
                "their border. Segment the whole volume for this structure.")
        if note not in notes:
            notes.append(note)

    def _box_labels(self, lo, hi):
        """(labels, start) over the windows lo..hi (lattice indices, inclusive), computing missing windows: one
        window's own argmax, or the argmax of the Gaussian blend of several; on the windows' device."""
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
            labels = self._windows[indices[0]][1][tuple(slice(0, int(n)) for n in stop - start)]
        else:
            labels = self._blend(indices, start, stop)
        for index in indices:
            self._windows.move_to_end(index)
        self._boxes[key] = (labels, start)
        while len(self._boxes) > KEPT_BOXES:
            self._boxes.popitem(last=False)
        return self._boxes[key]

    def _blend(self, indices, start, stop):
        """Winning class per voxel of the Gaussian-weighted sum of the windows' float16 probabilities."""
        device = self._windows[indices[0]][0].device
        if self.weight.device != device:
            self.weight = self.weight.to(device)
        accumulated = torch.zeros((self.num_outputs, *(int(n) for n in stop - start)), dtype=torch.float32,
                                  device=device)
        for index in indices:
            corner = np.array([self.starts[axis][index[axis]] for axis in range(3)]) - start
            extent = np.minimum(self.patch, stop - start - corner)
            inside = tuple(slice(0, int(n)) for n in extent)
            target = (slice(None), *(slice(int(c), int(c + n)) for c, n in zip(corner, extent)))
            half = self._windows[index][0].to(device)[(slice(None), *inside)]
            # a product, then a sum (no fused multiply-add): the float32 sums of the numpy version, bit for bit
            accumulated[target].add_(half.to(torch.float32, copy=True).mul_(self.weight[inside]))
        return accumulated.max(0).indices.to(self._label_dtype)

    def _compute_windows(self, indices):
        if not indices:
            return
        image = self.prepared.network.array
        tiles = [extract_tile(image, [self.starts[axis][index[axis]] for axis in range(3)], self.patch)
                 for index in indices]
        run = getattr(self.predictor, "predict_tensor", self.predictor)
        probabilities = torch.as_tensor(run(np.stack(tiles)))  # on the predictor's device, and it stays there
        labels = probabilities.max(1).indices.to(self._label_dtype)
        halves = probabilities.to(torch.float16)  # kept for blending with neighbouring windows
        for index, half, label in zip(indices, halves, labels):
            self._windows[index] = (half, label)
        while len(self._windows) > self.cache_windows:
            self._windows.popitem(last=False)

    def _answer(self, structures, removed):
        """(mask, offset) on the input grid of the structures minus the removed ones, kept for the next click."""
        key = (frozenset(c.serial for c in structures), frozenset(c.serial for c in removed))
        if key in self._answers:
            self._answers.move_to_end(key)
            return self._answers[key]
        mask, start = _combine(structures, removed)
        answer = self._to_input_grid(mask, start)
        answer[0].flags.writeable = False  # the same array answers every click that finds these structures
        self._answers[key] = answer
        while len(self._answers) > KEPT_ANSWERS:
            self._answers.popitem(last=False)
        return answer

    def _to_input_grid(self, mask, start):
        """Nearest-neighbour lookup of a network-grid mask (bool tensor, origin ``start``, KJI) for the input voxels
        around it, cropped to the structure: (uint8 mask on the input grid, (i, j, k) offset).

        Reorientation permutes/flips axes and resampling scales each axis, so every input axis maps to one network
        axis: the lookup is one index vector per axis, never a coordinate per voxel, applied one axis at a time on
        the mask's device (the axis that shrinks most first) so that only the answer comes to the host.
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
            pick = np.rint(scale * index + bias).astype(np.int64) - start[array_axis]
            keep = (pick >= 0) & (pick < mask.shape[array_axis])
            picks.append(pick[keep])
            offset.append(int(index[keep][0]) if keep.any() else 0)
        order = [2 - axis_of[2], 2 - axis_of[1], 2 - axis_of[0]]  # network array axes for input K, J, I
        gathered = mask.permute(order)
        picks_kji = picks[::-1]
        for axis in sorted(range(3), key=lambda a: len(picks_kji[a]) / max(gathered.shape[a], 1)):
            gathered = gathered.index_select(axis, torch.from_numpy(picks_kji[axis]).to(mask.device))
        found = _bounding_box(gathered)
        if found is None:
            return np.zeros((1, 1, 1), np.uint8), tuple(offset)
        a, b = found
        cropped = gathered[a[0]:b[0], a[1]:b[1], a[2]:b[2]].to(torch.uint8).cpu().numpy()
        return np.ascontiguousarray(cropped), (offset[0] + int(a[2]), offset[1] + int(a[1]), offset[2] + int(a[0]))


def _best_window(starts, patch, voxel):
    """The lattice window that holds ``voxel`` closest to its centre."""
    holding = [n for n, s in enumerate(starts) if s <= voxel < s + patch] or [0]
    return min(holding, key=lambda n: abs(voxel - (starts[n] + (patch - 1) / 2)))


def _bounding_box(mask):
    """(first, stop) index arrays of the true voxels of a 3D bool tensor, or None; from the axis projections (two
    passes over the mask), far cheaper than listing every voxel."""
    kj = mask.any(dim=2)
    projections = (kj.any(dim=1), kj.any(dim=0), mask.any(dim=0).any(dim=0))
    first, stop = [], []
    for projection in projections:
        hit = torch.nonzero(projection).flatten().cpu().numpy()
        if not len(hit):
            return None
        first.append(hit[0])
        stop.append(hit[-1] + 1)
    return np.array(first), np.array(stop)


def _connected_region(labels, seed):
    """Face-connected voxels of the seed's label (bool tensor on the labels' device): :func:`flood_fill` on a CUDA
    GPU (no round trip to the host), SimpleITK's region growing elsewhere."""
    if labels.device.type == "cuda":
        return flood_fill(labels == labels[seed], seed)
    import SimpleITK as sitk

    array = labels.cpu().numpy()
    value = int(array[seed])
    image = sitk.GetImageFromArray(array)
    grown = sitk.ConnectedThreshold(image, seedList=[tuple(int(v) for v in seed[::-1])], lower=value, upper=value)
    return torch.from_numpy(sitk.GetArrayFromImage(grown).view(bool)).to(labels.device)


def flood_fill(inside, seed, check_every=16):
    """The face-connected part of the bool tensor ``inside`` (3D) that holds ``seed``, as SimpleITK's
    ConnectedThreshold gives it, by repeated one-voxel dilation within ``inside``: every step runs on the tensor's
    device, and the host looks only every ``check_every`` steps whether the region still grows."""
    allowed = inside.to(torch.float32)[None, None]
    region = torch.zeros_like(allowed)
    region[(0, 0, *seed)] = allowed[(0, 0, *seed)]
    count = -1
    while True:
        for _ in range(check_every):
            grown = F.max_pool3d(region, (3, 1, 1), 1, (1, 0, 0))
            torch.maximum(grown, F.max_pool3d(region, (1, 3, 1), 1, (0, 1, 0)), out=grown)
            torch.maximum(grown, F.max_pool3d(region, (1, 1, 3), 1, (0, 0, 1)), out=grown)
            region = grown.mul_(allowed)
        now = int(torch.count_nonzero(region))
        if now == count:
            return region[0, 0] > 0
        count = now


def _combine(structures, removed):
    """(mask, network-grid start) of the OR of the positive components minus the negative ones, on their common
    box; a single structure is its own mask."""
    if len(structures) == 1 and not removed:
        return structures[0].mask, structures[0].start
    parts = structures + removed
    lo = np.min([c.start for c in parts], axis=0)
    hi = np.max([c.start + np.array(c.mask.shape) for c in parts], axis=0)
    device = structures[0].mask.device
    combined = torch.zeros(tuple(int(n) for n in hi - lo), dtype=torch.bool, device=device)
    for index, component in enumerate(parts):
        region = tuple(slice(int(a), int(a + n)) for a, n in zip(component.start - lo, component.mask.shape))
        mask = component.mask.to(device)
        if index < len(structures):
            combined[region] |= mask
        else:
            combined[region] &= ~mask
    return combined, lo
