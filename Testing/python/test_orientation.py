"""Exact reorientation: the same physical object stored with any of the 48 axis orders/flips (on an oblique grid)
reaches the network as the identical array, and everything maps back exactly."""

import itertools

import numpy as np
import pytest

from nnmamba.geometry import Geometry
from nnmamba.imaging import Volume
from nnmamba.orientation import reorient

from geometry_cases import rotation

SIGNED_PERMUTATIONS = [(perm, signs) for perm in itertools.permutations(range(3))
                       for signs in itertools.product((1, -1), repeat=3)]

# The object: a grid of 5 x 6 x 7 voxels, anisotropic, slightly oblique (closest to L, P, S).
BASE = Geometry.create((-20.0, 14.5, 3.0), (0.6, 1.1, 6.0), rotation(0.12, -0.08, 0.15))
BASE_SIZE = np.array([5, 6, 7])  # I, J, K


def voxel_positions(geometry, size_ijk):
    """LPS position of every voxel centre, as a (K, J, I, 3) array."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in size_ijk[::-1]), indexing="ij")
    return geometry.index_to_lps(np.stack([i, j, k], axis=-1))


def sample_object(geometry, size_ijk):
    """The object's value at each voxel: a code of the BASE voxel found at that physical place (exact integers)."""
    index = np.rint(BASE.lps_to_index(voxel_positions(geometry, size_ijk))).astype(int)
    assert np.all(index >= 0) and np.all(index < BASE_SIZE), "the grids must cover the same voxels"
    return (index[..., 0] + 10 * index[..., 1] + 100 * index[..., 2]).astype(np.float32)


def stored_as(perm, signs):
    """The same voxels stored with axis n = BASE axis perm[n], reversed where signs[n] < 0."""
    size = BASE_SIZE[list(perm)]
    direction = BASE.direction[:, list(perm)] * np.array(signs)
    corner = np.zeros(3)
    for n, old in enumerate(perm):
        corner[old] = BASE_SIZE[old] - 1 if signs[n] < 0 else 0
    geometry = Geometry.create(BASE.index_to_lps(corner), BASE.spacing[list(perm)], direction)
    return Volume(sample_object(geometry, size)[np.newaxis], geometry), size


EXPECTED = sample_object(BASE, BASE_SIZE)


@pytest.mark.parametrize("perm, signs", SIGNED_PERMUTATIONS)
def test_every_axis_order_reaches_the_network_identically(perm, signs):
    volume, size = stored_as(perm, signs)
    assert volume.shape_ijk == tuple(size)
    network, mapping = reorient(volume, "LPS")
    assert np.array_equal(network.array[0], EXPECTED)
    for mine, expected in zip(network.geometry, BASE):
        assert np.allclose(mine, expected, atol=1e-9)
    assert mapping.is_identity == (perm == (0, 1, 2) and signs == (1, 1, 1))
    # Back to the stored grid exactly, for channel stacks and for single label maps.
    assert np.array_equal(mapping.undo_array(network.array), volume.array)
    assert np.array_equal(mapping.undo_array(network.array[0].astype(np.uint8)), volume.array[0].astype(np.uint8))
    assert np.array_equal(mapping.apply_array(volume.array), network.array)
    # A point keeps its physical place through map_index.
    points = np.random.default_rng(len(perm) + sum(signs)).uniform(-0.5, 4.5, size=(10, 3))
    assert np.allclose(network.geometry.index_to_lps(points),
                       volume.geometry.index_to_lps(mapping.map_index(points)), atol=1e-9)


@pytest.mark.parametrize("perm, signs", SIGNED_PERMUTATIONS[::5])
def test_ras_is_lps_with_the_first_two_axes_reversed(perm, signs):
    volume, _ = stored_as(perm, signs)
    network, mapping = reorient(volume, "RAS")
    assert np.array_equal(network.array[0], EXPECTED[:, ::-1, ::-1])
    assert np.allclose(network.geometry.direction, BASE.direction * [-1, -1, 1], atol=1e-12)
    assert np.array_equal(mapping.undo_array(network.array), volume.array)


def test_as_stored_is_the_identity():
    volume, _ = stored_as((2, 0, 1), (-1, 1, -1))
    network, mapping = reorient(volume, "as-stored")
    assert network is volume and mapping.is_identity
    assert np.array_equal(mapping.map_index([[1.5, 2, 3]]), [[1.5, 2, 3]])


def test_resulting_arrays_are_contiguous_for_torch():
    volume, _ = stored_as((1, 2, 0), (-1, -1, 1))
    network, mapping = reorient(volume, "LPS")
    assert network.array.flags["C_CONTIGUOUS"]
    assert mapping.undo_array(network.array[0]).flags["C_CONTIGUOUS"]


def test_unknown_orientation():
    volume, _ = stored_as((0, 1, 2), (1, 1, 1))
    with pytest.raises(ValueError, match="as-stored, LPS, RAS"):
        reorient(volume, "RAI")
