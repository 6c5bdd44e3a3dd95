"""What the three phantoms share: the result type, random poses, a voxel grid that knows where each voxel centre lies
in the anatomy's own frame, solid shapes painted into a tissue map, and the scanner's effects (blur, bias, noise).

Anatomy is defined in millimetres in an *object frame* whose axes are the subject's own L, P and S directions. A rigid
pose places that frame in scanner LPS space, and the grid's direction matrix holds the acquisition's orientation.
Shapes are sampled at voxel centres, so a point defined in the object frame maps exactly (``info["object_to_lps"]``)
to the LPS position where the structure lies in the image.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from nnmamba.geometry import Geometry


class Phantom(NamedTuple):
    """One synthetic case. ``image`` and ``labels`` are KJI arrays on ``geometry``; ``landmarks`` maps names to LPS
    millimetres; ``label`` is the class (0/1) of a classification case; ``info`` holds the drawn parameters (plain
    JSON types) for model cards and debugging."""

    image: np.ndarray
    geometry: Geometry
    labels: Optional[np.ndarray] = None
    landmarks: Optional[dict] = None
    label: Optional[int] = None
    info: Optional[dict] = None

    def image_sitk(self):
        """The image as a SimpleITK image with its geometry, e.g. to write a NRRD file."""
        import SimpleITK as sitk

        return self.geometry.apply_to_sitk(sitk.GetImageFromArray(self.image))

    def labels_sitk(self):
        """The label map as a SimpleITK image with the image's geometry."""
        import SimpleITK as sitk

        if self.labels is None:
            raise ValueError("This phantom has no label map to convert.")
        return self.geometry.apply_to_sitk(sitk.GetImageFromArray(self.labels))


# --- rotations ---------------------------------------------------------------------------------------------------


def rotation_about(axis, degrees: float) -> np.ndarray:
    """Rotation matrix by ``degrees`` about ``axis`` (right-handed)."""
    axis = np.asarray(axis, dtype=float)
    x, y, z = axis / np.linalg.norm(axis)
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    angle = math.radians(degrees)
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def rotation_to(direction) -> np.ndarray:
    """A rotation taking the z axis to ``direction``: the pose of a tube or cylinder running along it."""
    direction = np.asarray(direction, dtype=float)
    direction = direction / np.linalg.norm(direction)
    axis = np.cross([0.0, 0.0, 1.0], direction)
    if np.linalg.norm(axis) < 1e-9:
        return np.eye(3) if direction[2] > 0 else np.diag([1.0, -1.0, -1.0])
    return rotation_about(axis, math.degrees(math.acos(max(-1.0, min(1.0, direction[2])))))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation drawn uniformly over all orientations (normalised Gaussian quaternion)."""
    w, x, y, z = rng.normal(size=4)
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def random_tilt(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A rotation by at most ``max_degrees`` about a random axis: a subject not quite straight in the scanner."""
    return rotation_about(rng.normal(size=3), rng.uniform(-max_degrees, max_degrees))


def rotation_degrees(rotation) -> float:
    """Angle of a rotation matrix in degrees."""
    cosine = (np.trace(np.asarray(rotation, dtype=float)) - 1) / 2
    return math.degrees(math.acos(min(1.0, max(-1.0, cosine))))


def obliquity_degrees(direction) -> float:
    """How far an image's axes are from the scanner's: the smallest rotation taking the direction matrix to a signed
    axis permutation (0 for a plain axial, coronal or sagittal acquisition)."""
    direction = np.asarray(direction, dtype=float)
    best = 180.0
    for order in itertools.permutations(range(3)):
        for signs in itertools.product((-1.0, 1.0), repeat=3):
            permutation = np.zeros((3, 3))
            permutation[list(order), range(3)] = signs
            if np.linalg.det(permutation) * np.linalg.det(direction) > 0:
                best = min(best, rotation_degrees(permutation.T @ direction))
    return best


# --- shapes in the object frame -----------------------------------------------------------------------------------


class Solid(NamedTuple):
    """Superellipsoid sum(|local_a / radii_a| ** power_a) <= 1 in the shape's own axes (the columns of
    ``rotation``): power 2 is an ellipsoid, larger powers are boxier. A radius of ``math.inf`` leaves that axis
    unbounded (a cylinder or a slab)."""

    center: Sequence[float]
    radii: Sequence[float]
    rotation: Optional[np.ndarray] = None
    power: Sequence[float] = (2.0, 2.0, 2.0)

    def local(self, x, y, z):
        """The shape's own coordinates of object-frame points."""
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        if self.rotation is None:
            return dx, dy, dz
        r = self.rotation
        return (
            r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz,
        )

    def inside(self, x, y, z):
        total = 0.0
        for coordinate, radius, power in zip(self.local(x, y, z), self.radii, self.power):
            if math.isinf(radius):
                continue
            scaled = np.abs(coordinate) * (1.0 / radius)
            total = total + (scaled * scaled if power == 2 else scaled**power)
        return total <= 1.0

    def point(self, local) -> np.ndarray:
        """Object-frame position of a point given in the shape's own coordinates (e.g. an axis end)."""
        rotation = np.eye(3) if self.rotation is None else np.asarray(self.rotation)
        return np.asarray(self.center, dtype=float) + rotation @ np.asarray(local, dtype=float)

    def grown(self, margin: float) -> Solid:
        """The same shape with every radius larger by ``margin`` mm (a shell when the original is cut out)."""
        return self._replace(radii=tuple(r + margin for r in self.radii))

    def scaled(self, factors) -> Solid:
        return self._replace(radii=tuple(r * f for r, f in zip(self.radii, np.broadcast_to(factors, 3))))

    def bound(self):
        """(centre, radius) of a ball containing the shape, or None if it is unbounded."""
        radius = math.sqrt(sum(r * r for r in self.radii))
        return None if math.isinf(radius) else (np.asarray(self.center, dtype=float), radius)


class HalfSpace(NamedTuple):
    """Points on the side of the plane through ``point`` that ``normal`` points away from."""

    point: Sequence[float]
    normal: Sequence[float]

    def inside(self, x, y, z):
        n = self.normal
        return (x - self.point[0]) * n[0] + (y - self.point[1]) * n[1] + (z - self.point[2]) * n[2] <= 0

    def bound(self):
        return None


class Region(NamedTuple):
    """Any other shape: ``test(x, y, z) -> bool array``, inside a ball (centre, radius) or unbounded (None)."""

    test: Callable
    ball: Optional[tuple] = None

    def inside(self, x, y, z):
        return self.test(x, y, z)

    def bound(self):
        return self.ball


# --- the grid -----------------------------------------------------------------------------------------------------


def grid_size(size) -> np.ndarray:
    """A phantom's size checked: three whole numbers of voxels (I, J, K), each at least 8."""
    values = np.asarray(size).reshape(-1)
    if values.size != 3 or not np.all(values == np.round(values)) or values.min() < 8:
        raise ValueError(f"Phantom size must be three numbers of voxels (I, J, K), each >= 8; got {size}.")
    return values.astype(int)


class ObjectGrid:
    """A voxel grid posed relative to the anatomy. ``anatomy_rotation``/``anatomy_origin`` place the object frame in
    LPS; ``residual_rotation`` is how the anatomy appears turned in the voxel array (the direction matrix is their
    product); ``center`` is the object-frame point at the centre of the grid."""

    def __init__(self, size, spacing, anatomy_rotation, anatomy_origin, residual_rotation, center=(0.0, 0.0, 0.0)):
        self.size = tuple(grid_size(size).tolist())
        spacing = np.asarray(spacing, dtype=float)
        self.anatomy_rotation = np.asarray(anatomy_rotation, dtype=float)
        self.anatomy_origin = np.asarray(anatomy_origin, dtype=float)
        direction = self.anatomy_rotation @ np.asarray(residual_rotation, dtype=float)
        centre_lps = self.to_lps(center)
        origin = centre_lps - direction @ (spacing * (np.array(self.size) - 1) / 2)
        self.geometry = Geometry.create(origin, spacing, direction)
        self.shape = self.size[::-1]
        # object coordinates of voxel (i, j, k): matrix @ (i, j, k) + offset
        self._matrix = self.anatomy_rotation.T @ direction @ np.diag(spacing)
        self._offset = self.anatomy_rotation.T @ (origin - self.anatomy_origin)

    def object_to_lps(self) -> np.ndarray:
        """4x4 matrix taking object-frame millimetres to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.anatomy_rotation
        matrix[:3, 3] = self.anatomy_origin
        return matrix

    def to_lps(self, points) -> np.ndarray:
        return np.asarray(points, dtype=float) @ self.anatomy_rotation.T + self.anatomy_origin

    def _box(self, ball):
        """KJI slices of the voxels within a ball given in the object frame, as (start, stop) pairs."""
        centre, radius = ball
        index = np.linalg.solve(self._matrix, np.asarray(centre, dtype=float) - self._offset)
        half = radius / self.geometry.spacing + 1
        low = np.maximum(np.floor(index - half), 0).astype(int)
        high = np.minimum(np.ceil(index + half) + 1, self.size).astype(int)
        return [(int(a), int(b)) for a, b in zip(low[::-1], high[::-1])]

    def coordinates(self, box):
        """Object-frame x, y, z (float32 KJI arrays) of the voxel centres in ``box``."""
        k, j, i = (np.arange(a, b, dtype=np.float32) for a, b in box)
        k, j, i = k[:, None, None], j[None, :, None], i[None, None, :]
        m = self._matrix.astype(np.float32)
        return tuple(m[row, 0] * i + m[row, 1] * j + m[row, 2] * k + np.float32(self._offset[row]) for row in range(3))

    def paint(self, tissues: np.ndarray, tissue: int, include, exclude=(), within=()) -> None:
        """Set ``tissues`` to ``tissue`` where a voxel centre is in any of ``include``, in all of ``within`` and in
        none of ``exclude``."""
        include = [include] if hasattr(include, "inside") else list(include)
        box = [(0, n) for n in self.shape]
        balls = [shape.bound() for shape in include]
        if all(ball is not None for ball in balls):
            boxes = [self._box(ball) for ball in balls]
            box = [(min(b[a][0] for b in boxes), max(b[a][1] for b in boxes)) for a in range(3)]
        for shape in within:
            if shape.bound() is not None:
                inner = self._box(shape.bound())
                box = [(max(a[0], b[0]), min(a[1], b[1])) for a, b in zip(box, inner)]
        if any(stop <= start for start, stop in box):
            return
        x, y, z = self.coordinates(box)
        mask = include[0].inside(x, y, z)
        for shape in include[1:]:
            mask = mask | shape.inside(x, y, z)
        for shape in within:
            mask = mask & shape.inside(x, y, z)
        for shape in exclude:
            mask = mask & ~shape.inside(x, y, z)
        tissues[tuple(slice(a, b) for a, b in box)][np.broadcast_to(mask, x.shape)] = tissue


# --- scanner effects ----------------------------------------------------------------------------------------------


def gaussian_blur(volume: np.ndarray, sigma_voxels) -> np.ndarray:
    """Separable Gaussian blur of a KJI volume, sigma given per I, J, K axis in voxels, edges extended: the scanner's
    point-spread function, which also gives structures their partial-volume borders."""
    out = np.asarray(volume, dtype=np.float32)
    for axis, sigma in zip((2, 1, 0), sigma_voxels):
        if sigma < 0.05:
            continue
        radius = max(1, int(math.ceil(3 * sigma)))
        weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        weights = (weights / weights.sum()).astype(np.float32)
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        length = out.shape[axis]
        result = np.zeros_like(out)
        for shift, weight in enumerate(weights):
            result += weight * np.take(padded, range(shift, shift + length), axis=axis)
        out = result
    return out


def bias_field(rng: np.random.Generator, shape, strength: float) -> np.ndarray:
    """Smooth multiplicative inhomogeneity (an MRI coil's): exp of a random quadratic over the grid, so that the
    intensity changes by roughly ``strength`` (relative) across the field of view."""
    k, j, i = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    k, j, i = k[:, None, None], j[None, :, None], i[None, None, :]
    terms = (i, j, k, i * i - 0.33, j * j - 0.33, k * k - 0.33, i * j, i * k, j * k)
    coefficients = rng.normal(0.0, strength, len(terms)) * np.array([1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    log_field = sum(np.float32(c) * t for c, t in zip(coefficients, terms))
    return np.exp(np.broadcast_to(log_field, tuple(shape))).astype(np.float32)


def rician_noise(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude MRI noise: |signal + complex Gaussian|, which is Rician and positive in the background."""
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def correlated_noise(rng: np.random.Generator, shape, sigma: float, correlation_voxels: float = 0.7) -> np.ndarray:
    """Gaussian noise with the fine grain of reconstructed CT: white noise blurred, then scaled back to ``sigma``."""
    noise = gaussian_blur(rng.normal(0.0, 1.0, shape).astype(np.float32), [correlation_voxels] * 3)
    return noise * np.float32(sigma / max(float(noise.std()), 1e-6))


def plain(value):
    """``value`` with numpy arrays and scalars turned into lists and floats, so that ``info`` is JSON-ready."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def synthesize_mr(rng, grid, steps, tissues, tissue_ids, bias_range, scale_range, noise_range):
    """Paint the tissue ``steps`` on ``grid`` and turn them into an MR-like image: one drawn signal per tissue
    (``tissues``: name -> (mean, spread, label)), partial-volume blur, a smooth bias field, a scanner scale and
    Rician noise. Returns (image float32, labels uint8, the drawn parameters for the phantom's info)."""
    painted = np.zeros(grid.shape, dtype=np.uint8)
    for name, include, exclude, within in steps:
        grid.paint(painted, tissue_ids[name], include, exclude, within)
    signal = {name: mean + spread * np.clip(rng.standard_normal(), -2, 2)
              for name, (mean, spread, _) in tissues.items()}
    lookup = np.array([signal[name] for name in tissues], dtype=np.float32)
    image = gaussian_blur(lookup[painted], (0.5, 0.5, 0.5))
    bias_strength, scale, noise = rng.uniform(*bias_range), rng.uniform(*scale_range), rng.uniform(*noise_range)
    image = image * bias_field(rng, image.shape, bias_strength) * np.float32(scale)
    image = rician_noise(rng, image, noise * scale).astype(np.float32)
    labels = np.array([label for _, _, label in tissues.values()], dtype=np.uint8)[painted]
    return image, labels, {"signal": signal, "bias_strength": bias_strength, "noise_relative": noise}
