"""Network grid and the way back, on oblique, strongly anisotropic (to 10:1), odd-sized grids: the physical box and
physical points are kept, phantom segmentations and blob centroids survive the round trip, the arrays agree with
SimpleITK's own resampling, and LFC's landmark convention is reproduced as specified."""

import itertools

import numpy as np
import pytest

from nnmamba.geometry import Geometry
from nnmamba.imaging import Volume, volume_from_array
from nnmamba.orientation import reorient
from nnmamba.resampling import lfc_index_to_lps, network_grid, resample_for_model

from geometry_cases import rotation

sitk = pytest.importorskip("SimpleITK")




# (geometry, size I J K, target spacing): 10:1 slices, mixed up/down-sampling, odd sizes, oblique directions.
CASES = {
    "thick-slices-10to1": (Geometry.create((-11.0, 4.0, 20.0), (0.5, 0.5, 5.0), rotation(0.2, -0.1, 0.4)),
                           (41, 39, 7), (0.8, 0.8, 0.8)),
    "thick-first-axis": (Geometry.create((3.0, -7.5, 0.0), (2.9, 0.7, 1.3), rotation(-0.5, 0.3, 2.0)),
                         (9, 33, 21), (0.9, 0.9, 0.9)),
    "downsample": (Geometry.create((0.0, 0.0, 0.0), (0.7, 0.8, 0.75), rotation(0.0, 0.7, 0.0) @ np.diag([1, -1, 1])),
                   (37, 35, 39), (1.1, 0.9, 1.3)),
}


def voxel_lps(geometry, size_ijk):
    k, j, i = np.meshgrid(*(np.arange(n) for n in size_ijk[::-1]), indexing="ij")
    return geometry.index_to_lps(np.stack([i, j, k], axis=-1))


def box_centre(geometry, size_ijk):
    return geometry.index_to_lps((np.asarray(size_ijk) - 1) / 2)


def sphere(geometry, size_ijk, centre, radius):
    return (np.linalg.norm(voxel_lps(geometry, size_ijk) - centre, axis=-1) <= radius).astype(np.uint8)


def dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def sitk_image(array, geometry):
    return geometry.apply_to_sitk(sitk.GetImageFromArray(array))


def resample_like_sitk(array, geometry, target_geometry, target_size_ijk, interpolator):
    reference = target_geometry.apply_to_sitk(sitk.Image([int(n) for n in target_size_ijk], sitk.sitkFloat32))
    image = sitk_image(array, geometry)
    resampled = sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, image.GetPixelID(), True)
    return sitk.GetArrayFromImage(resampled)


@pytest.mark.parametrize("case", CASES)
def test_physical_box_centre_and_spacing_are_kept(case):
    geometry, size, target = CASES[case]
    mapping = network_grid(geometry, size, {"mode": "spacing", "spacing": target})
    size, new_size = np.array(size), np.array(mapping.network_shape_ijk)
    assert np.array_equal(new_size, np.maximum(1, np.round(size * geometry.spacing / target)))
    for corner in itertools.product((0, 1), repeat=3):
        corner = np.array(corner)
        before = geometry.index_to_lps(corner * size - 0.5)
        after = mapping.network_index_to_lps(corner * new_size - 0.5)
        assert np.linalg.norm(after - before) < 1e-9  # box to box: corners coincide (well within half a voxel)
    assert np.allclose(box_centre(mapping.network_geometry, new_size), box_centre(geometry, size), atol=1e-9)
    assert np.allclose(mapping.network_geometry.direction, geometry.direction, atol=1e-12)
    assert np.all(np.abs(mapping.network_geometry.spacing - target) <= np.asarray(target) / (2 * new_size) + 1e-12)


@pytest.mark.parametrize("case", CASES)
def test_network_array_is_the_image_at_the_network_voxel_positions(case):
    """Agreement with SimpleITK resampling onto ``network_geometry`` shows every network voxel holds the image at
    its physical position: index -> LPS on the network grid is the same point as on the input grid."""
    geometry, size, target = CASES[case]
    rng = np.random.default_rng(3)
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(
        sitk.GetImageFromArray(rng.normal(size=size[::-1]).astype(np.float32)), 1.5))
    volume = volume_from_array(smooth, geometry)
    network, mapping = resample_for_model(volume, {"mode": "spacing", "spacing": target})
    assert network.shape_ijk == mapping.network_shape_ijk and network.geometry is mapping.network_geometry
    expected = resample_like_sitk(smooth, geometry, mapping.network_geometry, mapping.network_shape_ijk,
                                  sitk.sitkLinear)
    assert np.abs(network.array[0] - expected).max() < 1e-4 * np.abs(smooth).max()

    labels = (network.array[0] > 0).astype(np.uint8)
    back = mapping.labels_to_input(labels)
    expected = resample_like_sitk(labels, mapping.network_geometry, geometry, size, sitk.sitkNearestNeighbor)
    assert back.dtype == np.uint8 and back.shape == tuple(size[::-1])
    # Input voxel centres lying exactly half-way between two network voxels may round either way.
    position = mapping.network_geometry.lps_to_index(voxel_lps(geometry, size))
    tie = np.any(np.abs(position - np.floor(position) - 0.5) < 1e-6, axis=-1)
    assert np.array_equal(back[~tie], expected[~tie]) and np.mean(tie) < 0.5


@pytest.mark.parametrize("case", CASES)
def test_sphere_phantom_segmentation_round_trip(case):
    geometry, size, target = CASES[case]
    centre = box_centre(geometry, size) + [0.7, -0.4, 0.3]
    radius = 0.4 * min(np.asarray(size) * geometry.spacing)
    truth = sphere(geometry, size, centre, radius).astype(bool)
    mapping = network_grid(geometry, size, {"mode": "spacing", "spacing": target})

    # The input labels through the network grid and back.
    network, same = resample_for_model(volume_from_array(truth, geometry), {"mode": "spacing", "spacing": target})
    assert same.network_shape_ijk == mapping.network_shape_ijk
    assert dice(mapping.labels_to_input((network.array[0] >= 0.5).astype(np.uint8)).astype(bool), truth) > 0.95

    # A perfect network's answer on its own grid, mapped back as labels and as one-hot probabilities.
    answer = sphere(mapping.network_geometry, mapping.network_shape_ijk, centre, radius)
    assert dice(mapping.labels_to_input(answer).astype(bool), truth) > 0.95
    one_hot = [(answer == c).astype(np.float16) for c in range(2)]
    labels = mapping.probabilities_to_input(lambda c: one_hot[c], 2)
    assert labels.dtype == np.uint8 and dice(labels.astype(bool), truth) > 0.95


@pytest.mark.parametrize("case", CASES)
def test_blob_centroid_stays_in_place(case):
    geometry, size, target = CASES[case]
    centre = box_centre(geometry, size) + [1.3, -0.9, 0.6]
    sigma = 0.12 * min(np.asarray(size) * geometry.spacing)
    blob = np.exp(-np.sum((voxel_lps(geometry, size) - centre) ** 2, axis=-1) / (2 * sigma ** 2))
    network, mapping = resample_for_model(volume_from_array(blob, geometry), {"mode": "spacing", "spacing": target})

    def centroid(weights, geometry):
        positions = voxel_lps(geometry, weights.shape[::-1])
        return (positions * weights[..., None]).sum(axis=(0, 1, 2)) / weights.sum()

    before, after = centroid(blob, geometry), centroid(network.array[0].astype(float), mapping.network_geometry)
    assert np.linalg.norm(after - before) < 0.5 * min(mapping.network_geometry.spacing)
    # The peak, as a landmark would be decoded, lands within one network voxel of the blob centre.
    peak_kji = np.unravel_index(np.argmax(network.array[0]), network.array[0].shape)
    voxel_diagonal = np.linalg.norm(mapping.network_geometry.spacing)
    assert np.linalg.norm(mapping.landmark_to_lps(peak_kji) - centre) <= voxel_diagonal


def test_matching_spacing_and_mode_none_are_the_identity():
    geometry, size, _ = CASES["downsample"]
    volume = volume_from_array(np.random.default_rng(0).normal(size=size[::-1]), geometry)
    for resampling in ({"mode": "none"}, {"mode": "spacing", "spacing": (geometry.spacing * 1.0009).tolist()}):
        network, mapping = resample_for_model(volume, resampling)
        assert network is volume and mapping.is_identity
        labels = np.ones(size[::-1], np.uint8)
        assert mapping.labels_to_input(labels) is labels
    network, mapping = resample_for_model(volume, {"mode": "spacing", "spacing": (geometry.spacing * 1.1).tolist()})
    assert not mapping.is_identity and network.shape_ijk == (34, 32, 35)


def test_probabilities_to_input_one_channel_at_a_time_and_ties_keep_the_lower_label():
    geometry = Geometry.create((0, 0, 0), (1.0, 1.0, 1.0))
    mapping = network_grid(geometry, (9, 8, 7), {"mode": "shape", "shape": [4, 4, 4]})
    rng = np.random.default_rng(1)
    channels = [rng.random((4, 4, 4)).astype(np.float16) for _ in range(3)]
    channels[2] = channels[1].copy()  # 1 and 2 tie everywhere: 2 never wins
    calls = []

    def get_channel(c):
        calls.append(c)
        return channels[c]

    labels = mapping.probabilities_to_input(get_channel, 3)
    assert calls == [0, 1, 2]
    expected = np.argmax(np.stack([mapping.values_to_input(c) for c in channels]), axis=0)
    assert labels.shape == (7, 8, 9) and np.array_equal(labels, expected) and not np.any(labels == 2)
    with pytest.raises(ValueError, match="network grid"):
        mapping.labels_to_input(np.zeros((7, 8, 9), np.uint8))


@pytest.mark.parametrize("network_size,block_voxels", [((13, 9, 7), 50), ((31, 40, 17), 1000), ((20, 9, 23), 1 << 18)])
def test_probabilities_to_input_block_by_block_is_whole_channel_interpolation(network_size, block_voxels):
    """Blocks of input rows (many small ones here, an axis left as it is in one case) give exactly the labels of
    interpolating each whole channel and taking the first maximum."""
    geometry = Geometry.create((3, -2, 7), (0.9, 1.3, 2.1), rotation(0.1, 0.2, -0.3))
    size = (20, 17, 23)  # upsampled, downsampled and kept axes across the cases
    target = np.asarray(size) * geometry.spacing / np.asarray(network_size)
    mapping = network_grid(geometry, size, {"mode": "spacing", "spacing": target.tolist()})
    assert mapping.network_shape_ijk == network_size
    rng = np.random.default_rng(7)
    channels = [rng.random(network_size[::-1]).astype(np.float16) for _ in range(5)]
    channels[3] = channels[1].copy()  # ties: the lower label wins
    channels[0][: network_size[2] // 2] += np.float16(0.8)  # background wins half the rows
    channels[4][-2:] = channels[2][-2:] + np.float16(0.001)  # wins narrowly near the end
    labels = mapping.probabilities_to_input(lambda c: channels[c], 5, block_voxels=block_voxels)
    expected = np.argmax(np.stack([mapping.values_to_input(c) for c in channels]), axis=0)
    assert labels.dtype == np.uint8 and np.array_equal(labels, expected)
    assert 0 < np.count_nonzero(labels == 0) < labels.size


def test_shape_mode_is_skimage_resize_order_1():
    ndimage = pytest.importorskip("scipy.ndimage")
    geometry, size, _ = CASES["thick-first-axis"]
    array = np.random.default_rng(2).normal(size=size[::-1]) * 100 + 50
    network, mapping = resample_for_model(volume_from_array(array, geometry), {"mode": "shape", "shape": [16, 16, 16]})
    # skimage.transform.resize(order=1, preserve_range=True): anti-aliasing Gaussian on shrinking axes, then a
    # box-to-box linear zoom, both with scipy's "mirror" boundary.
    factors = np.divide(array.shape, (16, 16, 16))
    smoothed = ndimage.gaussian_filter(array, np.maximum(0, (factors - 1) / 2), mode="mirror")
    expected = ndimage.zoom(smoothed, 1 / factors, order=1, mode="mirror", grid_mode=True)
    assert np.allclose(network.array[0], expected, atol=1e-3)
    assert mapping.network_shape_ijk == (16, 16, 16)
    for corner in itertools.product((0, 1), repeat=3):
        corner = np.array(corner)
        assert np.allclose(mapping.network_index_to_lps(corner * 16 - 0.5),
                           geometry.index_to_lps(corner * np.array(size) - 0.5), atol=1e-9)


def test_lfc_landmark_convention_hand_computed():
    geometry = Geometry.create((10.0, 20.0, 30.0), (0.5, 1.0, 2.0), rotation(0.3, 0.2, 0.1))  # direction ignored
    size = (64, 32, 16)
    # factor = 128 / (64, 32, 16) = (2, 4, 8), elements 0 and 2 swapped -> (8, 4, 2); p = origin + a * spacing / f.
    index = np.array([16, 64, 100])
    expected = np.array([10 + 16 * 0.5 / 8, 20 + 64 * 1.0 / 4, 30 + 100 * 2.0 / 2])
    assert np.allclose(lfc_index_to_lps(index, geometry, size, (128, 128, 128)), expected)
    assert np.allclose(lfc_index_to_lps(index, geometry, size), expected)  # LFC's 128³ by default
    # Another network shape scales each array axis by its own factor: (64/16, 64/32, 64/64) = (4, 2, 1).
    assert np.allclose(lfc_index_to_lps(index, geometry, size, (64, 64, 64)),
                       [10 + 16 * 0.5 / 4, 20 + 64 * 1.0 / 2, 30 + 100 * 2.0 / 1])
    mapping = network_grid(geometry, size, {"mode": "shape", "shape": [128, 128, 128], "landmark_axis_order": "lfc"})
    assert np.allclose(mapping.landmark_to_lps(index), expected)
    assert np.allclose(mapping.landmark_to_lps(np.stack([index, index])), [expected, expected])
    physical = network_grid(geometry, size, {"mode": "shape", "shape": [128, 128, 128],
                                             "landmark_axis_order": "physical"})
    assert np.linalg.norm(physical.landmark_to_lps(index) - expected) > 10  # a non-cubic volume: clearly different


def test_physical_landmarks_are_exact_through_the_direction_matrix():
    geometry, size, _ = CASES["thick-slices-10to1"]
    mapping = network_grid(geometry, size, {"mode": "shape", "shape": [32, 48, 16]})
    network_image = mapping.network_geometry.apply_to_sitk(sitk.Image(32, 48, 16, sitk.sitkUInt8))
    for peak_kji in ([0, 0, 0], [15, 47, 31], [3.25, 20.5, 7.75]):
        ijk = np.array(peak_kji[::-1], dtype=float)
        lps = mapping.landmark_to_lps(peak_kji)
        assert np.allclose(lps, network_image.TransformContinuousIndexToPhysicalPoint(ijk.tolist()), atol=1e-9)
        input_index = (ijk + 0.5) * np.array(size) / np.array([32, 48, 16]) - 0.5
        assert np.allclose(lps, geometry.index_to_lps(input_index), atol=1e-9)


@pytest.mark.parametrize("resampling, message", [
    ({"mode": "zoom"}, "Unknown resampling mode"),
    ({"mode": "spacing", "spacing": [1, 1]}, "three positive numbers"),
    ({"mode": "spacing", "spacing": [1, 0, 1]}, "three positive numbers"),
    ({"mode": "shape", "shape": [128, 127.5, 128]}, "three positive integers"),
    ({"mode": "shape", "shape": [8, 8, 8], "landmark_axis_order": "zyx"}, "landmark_axis_order"),
])
def test_bad_resampling_settings(resampling, message):
    with pytest.raises(ValueError, match=message):
        network_grid(Geometry.create(), (8, 8, 8), resampling)


# ----------------------------------------------- the whole geometric path, for every way of storing one object


def stored_as(array_kji, geometry, perm, signs):
    """The same voxels stored with index axis n = original axis perm[n], reversed where signs[n] < 0."""
    size = np.array(array_kji.shape[::-1])
    moved = np.transpose(array_kji, [2 - perm[2 - m] for m in range(3)])
    moved = np.flip(moved, [2 - n for n in range(3) if signs[n] < 0])
    corner = np.zeros(3)
    for n, old in enumerate(perm):
        corner[old] = size[old] - 1 if signs[n] < 0 else 0
    new_geometry = Geometry.create(geometry.index_to_lps(corner), geometry.spacing[list(perm)],
                                   geometry.direction[:, list(perm)] * np.array(signs))
    return np.ascontiguousarray(moved), new_geometry


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_phantom_stored_any_way_gives_the_same_segmentation_and_landmark(perm):
    geometry = Geometry.create((-9.0, 5.0, 2.0), (0.6, 0.9, 3.0), rotation(0.1, -0.15, 0.05))
    size = (23, 19, 9)
    centre = box_centre(geometry, size) + [1.0, -0.5, 2.0]
    image = sphere(geometry, size, centre, 4.5) * 100.0 + np.exp(
        -np.sum((voxel_lps(geometry, size) - centre) ** 2, axis=-1) / 8.0)
    settings = {"mode": "spacing", "spacing": [0.7, 0.7, 0.7]}

    def pipeline(array, geometry):
        """What a segmentation/landmark model does geometrically: LPS axes, network grid, a threshold 'network',
        the labels back on the stored grid, and the peak in LPS."""
        oriented, reorientation = reorient(Volume(array[np.newaxis].astype(np.float32), geometry), "LPS")
        network, mapping = resample_for_model(oriented, settings)
        labels = reorientation.undo_array(mapping.labels_to_input((network.array[0] > 50).astype(np.uint8)))
        peak = np.unravel_index(np.argmax(network.array[0]), network.array[0].shape)
        return network.array[0], labels, mapping.landmark_to_lps(peak)

    reference_network, reference_labels, reference_peak = pipeline(image, geometry)
    assert dice(reference_labels.astype(bool), sphere(geometry, size, centre, 4.5).astype(bool)) > 0.9
    assert np.linalg.norm(reference_peak - centre) < 0.7 * np.sqrt(3)
    for signs in itertools.product((1, -1), repeat=3):
        array, stored_geometry = stored_as(image, geometry, perm, signs)
        network, labels, peak = pipeline(array, stored_geometry)
        assert np.array_equal(network, reference_network)
        assert np.array_equal(labels, stored_as(reference_labels, geometry, perm, signs)[0])
        assert np.allclose(peak, reference_peak, atol=1e-9)
