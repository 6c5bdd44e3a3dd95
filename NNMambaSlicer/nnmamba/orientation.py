"""Exact reorientation: permute and flip the array axes so they point closest to a canonical orientation.

Some networks were trained on arrays whose axes point (roughly) to fixed anatomical directions. Turning any scan into
that layout needs no interpolation: only an axis permutation and flips, which are undone exactly afterwards, so
results land on the original voxels bit for bit. The geometry is adjusted so every voxel keeps its physical place.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Tuple

import numpy as np

from .geometry import Geometry
from .imaging import Volume

# Target axis directions in LPS coordinates, as signs on the L, P, S unit vectors.
_TARGETS = {"LPS": np.array([1.0, 1.0, 1.0]), "RAS": np.array([-1.0, -1.0, 1.0])}
ORIENTATIONS = ("as-stored", "LPS", "RAS")


class Reorientation(NamedTuple):
    """New index axis n is old axis ``permutation[n]``, reversed when ``flips[n]`` (axes in I, J, K order)."""

    permutation: Tuple[int, int, int]
    flips: Tuple[bool, bool, bool]
    original_shape_ijk: Tuple[int, int, int]

    @property
    def is_identity(self):
        return self.permutation == (0, 1, 2) and not any(self.flips)

    def _numpy_axes(self, ndim):
        """numpy transpose order taking an original (…, K, J, I) array to the reoriented one."""
        lead = ndim - 3
        spatial = [lead + 2 - self.permutation[2 - m] for m in range(3)]
        return list(range(lead)) + spatial

    def _flipped_numpy_axes(self, ndim):
        lead = ndim - 3
        return tuple(lead + 2 - n for n in range(3) if self.flips[n])

    def apply_array(self, array):
        """Original-grid array (K, J, I) or (C, K, J, I) -> the reoriented grid (a contiguous copy)."""
        array = np.asarray(array)
        if self.is_identity:
            return array
        moved = np.transpose(array, self._numpy_axes(array.ndim))
        return np.ascontiguousarray(np.flip(moved, self._flipped_numpy_axes(array.ndim)))

    def undo_array(self, array):
        """Reoriented-grid array (K, J, I) or (C, K, J, I) -> the original grid, exactly (a contiguous copy)."""
        array = np.asarray(array)
        if self.is_identity:
            return array
        unflipped = np.flip(array, self._flipped_numpy_axes(array.ndim))
        return np.ascontiguousarray(np.transpose(unflipped, np.argsort(self._numpy_axes(array.ndim))))

    def map_index(self, ijk):
        """(..., 3) continuous (I, J, K) indices on the reoriented grid -> the same points' original indices."""
        ijk = np.asarray(ijk, dtype=float)
        original = np.empty_like(ijk)
        for n, old in enumerate(self.permutation):
            value = ijk[..., n]
            original[..., old] = (self.original_shape_ijk[old] - 1) - value if self.flips[n] else value
        return original

    def map_geometry(self, geometry: Geometry) -> Geometry:
        """The geometry of the reoriented grid: same physical voxels, permuted/flipped axes."""
        signs = np.where(self.flips, -1.0, 1.0)
        direction = geometry.direction[:, list(self.permutation)] * signs
        spacing = geometry.spacing[list(self.permutation)]
        return Geometry.create(geometry.index_to_lps(self.map_index(np.zeros(3))), spacing, direction)


def closest_axes(direction, orientation: str):
    """The permutation and flips making index axis n point closest to the orientation's n-th axis: the assignment
    of array axes to target axes with the largest total |cosine| (ties go to the first, identity-first, order)."""
    cosines = _TARGETS[orientation][:, np.newaxis] * np.asarray(direction, dtype=float)  # [target, array axis]
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(cosines[n, p[n]]) for n in range(3)))
    flips = tuple(bool(cosines[n, best[n]] < 0) for n in range(3))
    return tuple(int(p) for p in best), flips


def identity_reorientation(shape_ijk) -> Reorientation:
    return Reorientation((0, 1, 2), (False, False, False), tuple(int(n) for n in shape_ijk))


def reorient(volume: Volume, orientation: str) -> Tuple[Volume, Reorientation]:
    """``"as-stored"``: unchanged. ``"LPS"``/``"RAS"``: axes I, J, K permuted/flipped to point closest to
    +L, +P, +S (or +R, +A, +S). Returns the new volume and what undoes it."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"Unknown orientation {orientation!r}; expected one of {', '.join(ORIENTATIONS)}.")
    if orientation == "as-stored":
        return volume, identity_reorientation(volume.shape_ijk)
    permutation, flips = closest_axes(volume.geometry.direction, orientation)
    mapping = Reorientation(permutation, flips, volume.shape_ijk)
    if mapping.is_identity:
        return volume, mapping
    return Volume(mapping.apply_array(volume.array), mapping.map_geometry(volume.geometry)), mapping
