"""Image geometry, and the one conversion between Slicer's IJK→RAS matrix and ITK's LPS origin/spacing/direction.

Numpy only (SimpleITK is imported lazily), so that the Slicer-side code can use it too. Formula and its check
against Slicer's own reader: ``slicer-platform.md`` §2. Voxel arrays are KJI in both worlds (no transpose).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class Geometry(NamedTuple):
    """Where the voxels of a 3D image lie: LPS origin (mm), spacing (mm, in I J K order) and the 3x3
    direction matrix whose column j is the direction of index axis j, as in ITK."""

    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray

    @classmethod
    def create(cls, origin=(0.0, 0.0, 0.0), spacing=(1.0, 1.0, 1.0), direction=None):
        """Checked construction: finite values, positive spacing, an invertible direction matrix."""
        origin = np.asarray(origin, dtype=float).reshape(3)
        spacing = np.asarray(spacing, dtype=float).reshape(3)
        direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
        if not (np.all(np.isfinite(origin)) and np.all(np.isfinite(spacing)) and np.all(np.isfinite(direction))):
            raise ValueError("Image geometry has NaN or infinite values; the file's header is damaged.")
        if np.any(spacing <= 0):
            raise ValueError(f"Voxel spacing must be positive, got {spacing.tolist()} mm.")
        if abs(np.linalg.det(direction)) < 1e-6:
            raise ValueError(f"The direction matrix {direction.tolist()} is singular: the image axes are degenerate.")
        return cls(origin, spacing, direction)

    def ijk_to_lps(self):
        """4x4 matrix taking (i, j, k, 1) voxel indices to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def ijk_to_ras(self):
        """4x4 matrix taking voxel indices to RAS millimetres: Slicer's ``GetIJKToRASMatrix``."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.ijk_to_lps()

    @classmethod
    def from_ijk_to_ras(cls, matrix):
        """Inverse of :meth:`ijk_to_ras`: spacing = column norms, direction and origin flipped back to LPS."""
        matrix = np.asarray(matrix, dtype=float).reshape(4, 4)
        spacing = np.linalg.norm(matrix[:3, :3], axis=0)
        if np.any(spacing <= 0):
            raise ValueError("The IJK→RAS matrix has a zero column: an image axis of length 0.")
        return cls.create(LPS_TO_RAS @ matrix[:3, 3], spacing, LPS_TO_RAS @ matrix[:3, :3] @ np.diag(1 / spacing))

    def index_to_lps(self, ijk):
        """(..., 3) continuous voxel indices (I, J, K) → (..., 3) LPS millimetres."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction @ np.diag(self.spacing)).T + self.origin

    def lps_to_index(self, lps):
        """(..., 3) LPS millimetres → (..., 3) continuous voxel indices (I, J, K)."""
        lps = np.asarray(lps, dtype=float)
        return (lps - self.origin) @ np.linalg.inv(self.direction @ np.diag(self.spacing)).T

    @classmethod
    def from_sitk(cls, image):
        return cls.create(image.GetOrigin(), image.GetSpacing(), np.array(image.GetDirection()).reshape(3, 3))

    def apply_to_sitk(self, image):
        """Give a SimpleITK image this geometry (in place), e.g. a result computed on this image's voxels."""
        image.SetOrigin(tuple(self.origin.tolist()))
        image.SetSpacing(tuple(self.spacing.tolist()))
        image.SetDirection(tuple(self.direction.reshape(-1).tolist()))
        return image


def direction_problem(direction, tolerance=1e-3):
    """Why ``direction`` is not a rotation (possibly with a flip), or None: its columns must be unit vectors and
    mutually orthogonal within ``tolerance`` (ITK's own tolerance for image directions). A sheared or scaled matrix
    is valid as a matrix, but the voxel grid, resampling and results would then lie in the wrong place."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(matrix)):
        return "it has NaN or infinite entries"
    lengths = np.linalg.norm(matrix, axis=0)
    if np.any(np.abs(lengths - 1) > tolerance):
        return (f"its columns (the directions of the I, J and K axes) have lengths {np.round(lengths, 6).tolist()}, "
                "not 1")
    gram = matrix.T @ matrix
    off = np.abs(gram - np.diag(np.diag(gram))).max()
    if off > tolerance:
        angles = np.degrees(np.arccos(np.clip([gram[0, 1], gram[0, 2], gram[1, 2]], -1, 1)))
        return (f"its axes are not perpendicular (angles IJ, IK, JK {np.round(angles, 3).tolist()} degrees): the "
                "grid is sheared")
    return None


def lps_to_ras(points):
    """LPS ↔ RAS is its own inverse: x and y change sign."""
    return np.asarray(points, dtype=float) * np.array([-1.0, -1.0, 1.0])


ras_to_lps = lps_to_ras
