"""The single LPS (ITK) ↔ RAS (Slicer) geometry conversion, checked against SimpleITK on oblique, flipped and
anisotropic images."""

import itertools

import numpy as np
import pytest

from nnmamba.geometry import Geometry, lps_to_ras, ras_to_lps

from geometry_cases import rotation

sitk = pytest.importorskip("SimpleITK")




def all_axis_orders():
    """The 48 signed permutation matrices: every axis order and flip."""
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((-1, 1), repeat=3):
            matrix = np.zeros((3, 3))
            matrix[list(perm), range(3)] = signs
            yield matrix


GEOMETRIES = [
    Geometry.create((-120.5, 33.0, 7.25), (0.7, 0.7, 7.0), rotation(0.3, -0.2, 0.9) @ axes)
    for axes in all_axis_orders()
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_ras_matrix_round_trip(geometry):
    back = Geometry.from_ijk_to_ras(geometry.ijk_to_ras())
    for a, b in zip(back, geometry):
        assert np.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES[::7])
def test_index_to_physical_matches_simpleitk(geometry):
    image = geometry.apply_to_sitk(sitk.Image(5, 6, 7, sitk.sitkFloat32))
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 7, size=(20, 3))
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in points])
    assert np.allclose(geometry.index_to_lps(points), expected, atol=1e-9)
    assert np.allclose(geometry.lps_to_index(expected), points, atol=1e-9)
    # Slicer's IJK→RAS matrix sends an index where RAS = LPS with x and y negated.
    homogeneous = np.c_[points, np.ones(len(points))]
    assert np.allclose((homogeneous @ geometry.ijk_to_ras().T)[:, :3], lps_to_ras(expected), atol=1e-9)
    assert np.allclose(ras_to_lps(lps_to_ras(expected)), expected)


def test_geometry_survives_a_nrrd_file(tmp_path):
    geometry = GEOMETRIES[11]
    image = geometry.apply_to_sitk(sitk.Image(4, 5, 6, sitk.sitkInt16))
    sitk.WriteImage(image, str(tmp_path / "volume.nrrd"))
    read = Geometry.from_sitk(sitk.ReadImage(str(tmp_path / "volume.nrrd")))
    for a, b in zip(read, geometry):
        assert np.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(spacing=(1, 0, 1)), "spacing must be positive"),
    (dict(origin=(0, float("nan"), 0)), "NaN or infinite"),
    (dict(direction=[[1, 0, 0], [1, 0, 0], [0, 0, 1]]), "singular"),
])
def test_damaged_geometry_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Geometry.create(**kwargs)
