"""Training samples from seeded phantoms, prepared exactly as inference prepares an image (``prepare_input`` of the
package being trained), so that the network learns on the grid, orientation and intensities it will later see.

Targets live on the network grid: label maps are reoriented like the image and resized by nearest neighbour;
landmarks go through the network geometry (``lps_to_index``, the "physical" axis order) and become Gaussian
heatmaps only when a patch is cut, so that large grids with many landmarks cost no memory up front.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..imaging import volume_from_array
from ..resampling import resize_nearest
from ..tasks.common import network_input, prepare_input
from .phantoms import abdomen_ct, brain_atrophy, fetal_brain


class TrainingDataError(ValueError):
    """Training data that cannot be built as asked; the message says what to change."""


def default_phantom(task: str, size=None) -> Callable:
    """``seed -> Phantom`` for a task: abdomen CT organs, fetal cerebellar landmarks, or brain atrophy (class
    ``seed % 2``, so that any two consecutive seeds give both classes and the validation AUC is defined)."""
    size_kw = {} if size is None else {"size": tuple(size)}
    if task == "segmentation":
        return lambda seed: abdomen_ct(seed, **size_kw)
    if task == "landmarks":
        return lambda seed: fetal_brain(seed, **size_kw)
    if task == "classification":
        return lambda seed: brain_atrophy(seed, atrophy=seed % 2, **size_kw)
    raise TrainingDataError(f"Unknown task {task!r}; expected segmentation, landmarks or classification.")


def phantom_volume(phantom):
    """The phantom's (or dataset case's) image as the Volume the task functions take: (K, J, I) is one channel,
    (C, K, J, I) several."""
    image = phantom.image if phantom.image.ndim == 4 else phantom.image[None]
    return volume_from_array(image, phantom.geometry)


@dataclass(frozen=True)
class Augmentation:
    """Random changes applied to each training sample.

    ``flip_axes``: network-grid axes (0=I, 1=J, 2=K) each flipped with probability 1/2. A flip is a mirror image,
    so sided structures change sides: ``mirror_pairs`` names the label or landmark pairs to swap (e.g.
    ``[("TCD1", "TCD2")]``) when an odd number of axes was flipped. Without pairs, flips are refused for landmark
    models (whose left/right points would be taught backwards). ``intensity_scale``/``intensity_shift``: the
    sample is multiplied by 1 ± scale and shifted by ± shift times its standard deviation.
    ``foreground_fraction``: share of segmentation/landmark patches centred on a structure rather than anywhere.
    """

    flip_axes: Tuple[int, ...] = ()
    mirror_pairs: Tuple[Tuple[str, str], ...] = ()
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    foreground_fraction: float = 0.5


class Case(NamedTuple):
    image: np.ndarray              # (C, spatial...) exactly what the network sees at inference
    labels: Optional[np.ndarray]   # segmentation: (K, J, I) uint8 on the network grid
    points: Optional[np.ndarray]   # landmarks: (L, 3) continuous (I, J, K) network-grid indices
    label: Optional[int]           # classification: the class index
    foreground: Optional[np.ndarray]  # flat indices of labelled voxels (patch centres)


def prepare_case(package, phantom) -> Case:
    """One phantom on the network grid with its target, through the package's own preprocessing."""
    prepared = prepare_input(package, phantom_volume(phantom))
    task = package.task
    if task == "segmentation":
        if phantom.labels is None:
            raise TrainingDataError("A segmentation model needs phantoms with a label map.")
        labels = prepared.reorientation.apply_array(phantom.labels)
        if not prepared.resampling.is_identity:
            labels = resize_nearest(labels, prepared.resampling.network_shape_kji)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        if int(labels.max()) >= package.network["out_channels"]:
            raise TrainingDataError(f"Phantom label {int(labels.max())} is not below network.out_channels "
                                    f"({package.network['out_channels']}).")
        return Case(prepared.network.array, labels, None, None, np.flatnonzero(labels))
    if task == "landmarks":
        order = package.input.get("resampling", {}).get("landmark_axis_order", "physical")
        if order != "physical":
            raise TrainingDataError(f"Training supports landmark_axis_order 'physical' only, not {order!r}: new "
                                    "models should decode through the network geometry.")
        names = [landmark["name"] for landmark in package.outputs["landmarks"]]
        missing = [name for name in names if name not in (phantom.landmarks or {})]
        if missing:
            raise TrainingDataError(f"The phantoms have no landmark(s) {', '.join(missing)}; model.json lists "
                                    f"{', '.join(names)}.")
        lps = np.array([phantom.landmarks[name] for name in names], dtype=float)
        points = prepared.network.geometry.lps_to_index(lps)
        return Case(prepared.network.array, None, np.asarray(points, dtype=float), None, None)
    if phantom.label is None:
        raise TrainingDataError("A classification model needs phantoms with a class label.")
    return Case(np.ascontiguousarray(network_input(package, prepared)), None, None, int(phantom.label), None)


def gaussian_heatmaps(points_ijk, origin_kji, shape_kji, sigma) -> np.ndarray:
    """(L, K, J, I) unit-peak Gaussians centred on continuous (I, J, K) ``points_ijk``, for the box starting at
    ``origin_kji`` of the network grid (separable, so cheap for any patch)."""
    out = np.empty((len(points_ijk),) + tuple(shape_kji), dtype=np.float32)
    for n, point in enumerate(np.asarray(points_ijk, dtype=float)):
        factors = []
        for axis in range(3):  # numpy axis 0, 1, 2 = K, J, I
            coordinate = np.arange(shape_kji[axis]) + origin_kji[axis] - point[2 - axis]
            factors.append(np.exp(-0.5 * (coordinate / sigma) ** 2).astype(np.float32))
        out[n] = factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
    return out


def _crop(array, start, size, lead):
    """``array[..., start:start+size]`` on the last three axes, zero-padded where it runs past the end (inference
    pads with zeros too)."""
    box = tuple(slice(s, s + n) for s, n in zip(start, size))
    part = array[(slice(None),) * lead + box]
    if part.shape[lead:] == tuple(size):
        return np.array(part)
    padding = [(0, 0)] * lead + [(0, n - m) for n, m in zip(size, part.shape[lead:])]
    return np.pad(part, padding)


def _patch_start(rng, shape, patch, centre):
    if centre is None:
        return [int(rng.integers(0, max(0, n - p) + 1)) for n, p in zip(shape, patch)]
    return [int(np.clip(int(round(c)) - p // 2, 0, max(0, n - p))) for c, n, p in zip(centre, shape, patch)]


class Sampler:
    """Draws augmented training batches from prepared cases with one ``numpy.random.Generator``: the same
    generator state gives the same batches, bit for bit."""

    def __init__(self, package, cases: Sequence[Case], augmentation: Augmentation, sigma: float = 2.0):
        self.package, self.cases, self.augmentation, self.sigma = package, list(cases), augmentation, float(sigma)
        self.task = package.task
        if not self.cases:
            raise TrainingDataError("No training cases: give at least one training seed.")
        if any(axis not in (0, 1, 2) for axis in augmentation.flip_axes):
            raise TrainingDataError(f"flip_axes must be network axes 0 (I), 1 (J) or 2 (K), got "
                                    f"{augmentation.flip_axes}.")
        self.swap = self._mirror_permutation()
        if self.task == "classification":
            shapes = {case.image.shape for case in self.cases}
            if len(shapes) > 1:
                raise TrainingDataError(f"Classification cases reach the network in different shapes {sorted(shapes)};"
                                        " use input.resampling mode 'shape' so that they can share a batch.")
            self.patch = None
        else:
            self.patch = tuple(int(n) for n in package.input["patch_size"][::-1])

    def _mirror_permutation(self):
        """Channel (landmark) or label-value permutation that a mirror image applies; None if nothing is sided."""
        aug = self.augmentation
        if self.task == "landmarks":
            names = [landmark["name"] for landmark in self.package.outputs["landmarks"]]
        elif self.task == "segmentation":
            names = {label["name"]: label["value"] for label in self.package.outputs["labels"]}
        else:
            return None
        if aug.flip_axes and not aug.mirror_pairs and self.task == "landmarks":
            raise TrainingDataError("Flipping landmark samples needs mirror_pairs (e.g. [('TCD1', 'TCD2')]): a mirror"
                                    " image swaps left and right, so the sided landmarks must swap too.")
        if not aug.mirror_pairs:
            return None
        size = len(names) if self.task == "landmarks" else self.package.network["out_channels"]
        permutation = np.arange(size)
        for pair in aug.mirror_pairs:
            unknown = [name for name in pair if name not in names]
            if unknown or len(pair) != 2:
                raise TrainingDataError(f"mirror_pairs entry {pair!r}: give two names from {list(names)}.")
            a, b = ((names.index(n) if self.task == "landmarks" else names[n]) for n in pair)
            permutation[a], permutation[b] = b, a
        return permutation

    def batch(self, rng: np.random.Generator, batch_size: int):
        """(images float32 (B, C, ...), targets) as numpy arrays; targets are labels (B, K, J, I) int64, heatmaps
        (B, L, K, J, I) float32 or classes (B,) int64."""
        images, targets = [], []
        for _ in range(batch_size):
            case = self.cases[int(rng.integers(len(self.cases)))]
            image, target = self._sample(rng, case)
            image, target = self._flip(rng, image, target)
            images.append(self._jitter(rng, image))
            targets.append(target)
        dtype = np.float32 if self.task == "landmarks" else np.int64
        return np.stack(images).astype(np.float32), np.stack(targets).astype(dtype)

    def _sample(self, rng, case):
        if self.task == "classification":
            return case.image, np.int64(case.label)
        shape = case.image.shape[1:]
        centre = None
        if rng.random() < self.augmentation.foreground_fraction:
            if self.task == "segmentation" and len(case.foreground):
                centre = np.unravel_index(int(case.foreground[rng.integers(len(case.foreground))]), shape)
            elif self.task == "landmarks":
                centre = case.points[int(rng.integers(len(case.points)))][::-1]
        start = _patch_start(rng, shape, self.patch, centre)
        image = _crop(case.image, start, self.patch, 1)
        if self.task == "segmentation":
            return image, _crop(case.labels, start, self.patch, 0)
        return image, gaussian_heatmaps(case.points, start, self.patch, self.sigma)

    def _flip(self, rng, image, target):
        flipped = [axis for axis in self.augmentation.flip_axes if rng.random() < 0.5]
        if not flipped:
            return image, target
        ijk_order = self.task == "classification" and self.package.input.get("axis_order", "kji") == "ijk"
        spatial = [axis if ijk_order else 2 - axis for axis in flipped]  # axis among the three spatial ones
        image = np.ascontiguousarray(np.flip(image, [1 + a for a in spatial]))
        if self.task == "classification":
            return image, target  # a class is the same in a mirror image
        if self.task == "segmentation":
            target = np.flip(target, spatial)
        elif self.task == "landmarks":
            target = np.flip(target, [1 + a for a in spatial])
        if len(flipped) % 2 and self.swap is not None:
            target = self.swap[target] if self.task == "segmentation" else target[self.swap]
        return image, np.ascontiguousarray(target)

    def _jitter(self, rng, image):
        aug = self.augmentation
        scale = 1.0 + rng.uniform(-aug.intensity_scale, aug.intensity_scale)
        shift = rng.uniform(-aug.intensity_shift, aug.intensity_shift) * float(image.std())
        return (image * np.float32(scale) + np.float32(shift)).astype(np.float32)
