"""The four tasks end to end on real packages: geometry properties, click-to-segment, landmarks, classification.

Two kinds of predictors: the package's real (random-weight) network, and position-independent "networks"
(thresholds, identity heatmaps) whose right answer is known, to check what the tasks do with a prediction.
"""

import itertools

import numpy as np
import pytest

from nnmamba.geometry import Geometry
from nnmamba.imaging import volume_from_array
from nnmamba.progress import Cancelled, CancelToken
from nnmamba.tasks import ClickSession, classify_volume, detect_landmarks, segment_volume
from nnmamba.tasks.classification import decide

from geometry_cases import rotation
from model_packages import classification_package, landmark_package, segmentation_package

SIGNED_PERMUTATIONS = [(p, s) for p in itertools.permutations(range(3))
                       for s in itertools.product((1, -1), repeat=3)]




BASE = Geometry.create((-20.0, 13.0, 40.0), (0.9, 1.4, 3.1), rotation(0.05, -0.08, 0.1))
BASE_SIZE = (21, 18, 11)  # I, J, K: odd, and anisotropic spacing


def regrid(array_kji, geometry, size_ijk, permutation, signs):
    """The same voxels stored with permuted/flipped axes: new axis j is old axis permutation[j] (reversed when
    signs[j] < 0). Every voxel keeps its physical position."""
    ijk = np.transpose(array_kji, (2, 1, 0))
    ijk = np.transpose(ijk, permutation)
    ijk = np.flip(ijk, [j for j in range(3) if signs[j] < 0]) if min(signs) < 0 else ijk
    first = np.array([0 if signs[j] > 0 else size_ijk[permutation[j]] - 1 for j in range(3)])
    start = np.empty(3)
    start[list(permutation)] = first
    columns = geometry.direction[:, list(permutation)] * np.array(signs)
    new = Geometry.create(geometry.index_to_lps(start), geometry.spacing[list(permutation)], columns)
    return np.ascontiguousarray(np.transpose(ijk, (2, 1, 0))), new


def sample(function, geometry, size_ijk):
    """Evaluate ``function(lps (..., 3))`` at the voxel centres of a grid: a phantom defined in physical space."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in size_ijk[::-1]), indexing="ij")
    return function(geometry.index_to_lps(np.stack([i, j, k], -1))).astype(np.float32)


class VoxelwisePredictor:
    """A position-independent stand-in for a network: ``function(batch)`` per voxel, counting its passes."""

    def __init__(self, function):
        self.function, self.passes, self.network_seconds = function, 0, 0.0

    def __call__(self, batch):
        self.passes += len(batch)
        return self.function(np.asarray(batch, np.float32))


def threshold_classes(batch):
    """Class 1 where the image is > 1.5, class 2 where > 4, else background; as soft probabilities."""
    x = batch[:, 0]
    logits = np.stack([np.zeros_like(x), 4 * (x - 1.5), 20 * (x - 3.5)], 1)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    return {
        "lps": segmentation_package(root / "lps", spacing=(1.7, 1.7, 2.3), orientation="LPS", model_id="lps"),
        "stored": segmentation_package(root / "stored", spacing=(1.7, 1.7, 2.3), model_id="stored"),
        "native": segmentation_package(root / "native", normalization={"scheme": "none"}, model_id="native"),
        "landmarks": landmark_package(root / "lm", in_channels=6, normalization={"scheme": "none"}),
        "classifier": classification_package(root / "cls"),
    }


@pytest.fixture(scope="module")
def base_image():
    return np.random.default_rng(3).normal(size=BASE_SIZE[::-1]).astype(np.float32)


@pytest.fixture(scope="module")
def base_labels(packages, base_image):
    labels = segment_volume(packages["lps"], volume_from_array(base_image, BASE), device="cpu").labels
    assert len(np.unique(labels)) == 3  # a non-trivial answer, so that the properties below mean something
    return labels


@pytest.mark.parametrize("permutation,signs", SIGNED_PERMUTATIONS)
def test_same_object_on_a_permuted_flipped_grid_gives_the_same_physical_segmentation(
        packages, base_image, base_labels, permutation, signs):
    """A model that reorients to LPS sees the same array however the volume was stored, with a real network."""
    image, geometry = regrid(base_image, BASE, BASE_SIZE, permutation, signs)
    result = segment_volume(packages["lps"], volume_from_array(image, geometry), device="cpu")
    expected, _ = regrid(base_labels, BASE, BASE_SIZE, permutation, signs)
    np.testing.assert_allclose(result.geometry.ijk_to_lps(), geometry.ijk_to_lps())
    np.testing.assert_array_equal(result.labels, expected)


@pytest.mark.parametrize("permutation,signs", SIGNED_PERMUTATIONS[::7])
def test_object_moved_in_physical_space_keeps_its_segmentation(packages, base_image, permutation, signs):
    """As stored (like nnU-Net), a rigid move of the volume in space (rotation, flip) moves the labels with it."""
    volume = volume_from_array(base_image, BASE)
    moved_direction = np.eye(3)[:, list(permutation)] * np.array(signs) @ rotation(0.3, 0.2, -0.4)
    moved = Geometry.create(moved_direction @ BASE.origin + 5.0, BASE.spacing, moved_direction @ BASE.direction)
    before = segment_volume(packages["stored"], volume, device="cpu")
    after = segment_volume(packages["stored"], volume_from_array(base_image, moved), device="cpu")
    np.testing.assert_array_equal(after.labels, before.labels)
    np.testing.assert_allclose(after.geometry.ijk_to_lps(), moved.ijk_to_lps())


def two_spheres_and_a_rod(lps):
    """Physical phantom: spheres A (value 2) and B (value 2) apart, a sphere C (value 5), and a long rod (2)."""
    def ball(centre, radius):
        return np.linalg.norm(lps - np.array(centre), axis=-1) <= radius
    value = np.zeros(lps.shape[:-1])
    value[ball((-10, 20, 50), 5)] = 2
    value[ball((8, 22, 52), 4)] = 2
    value[ball((0, 5, 45), 4)] = 5
    rod = (np.abs(lps[..., 1] - 40) <= 3) & (np.abs(lps[..., 2] - 55) <= 3)
    value[rod] = 2
    return value


@pytest.fixture(scope="module")
def click_volume():
    geometry = Geometry.create((-40.0, -5.0, 30.0), (1.0, 1.0, 1.0), rotation(0.0, 0.0, 0.15))
    size = (80, 60, 40)
    return volume_from_array(sample(two_spheres_and_a_rod, geometry, size), geometry)


def test_click_returns_only_the_connected_structure_under_the_point(packages, click_volume):
    session = ClickSession(packages["native"], click_volume, predictor=VoxelwisePredictor(threshold_classes))
    result = session.segment_at([(-10, 20, 50)])
    assert result.label == 1 and result.name == "structure 1" and result.network_passes == 1
    full = np.zeros(click_volume.array.shape[1:], np.uint8)
    i, j, k = result.offset
    full[k:k + result.mask.shape[0], j:j + result.mask.shape[1], i:i + result.mask.shape[2]] = result.mask
    truth = sample(lambda p: np.linalg.norm(p - np.array((-10, 20, 50)), axis=-1) <= 5,
                   click_volume.geometry, click_volume.shape_ijk)
    np.testing.assert_array_equal(full, truth)  # sphere A exactly; sphere B (same label, apart) not included

    again = session.segment_at([(-9, 21, 50)])  # a second click nearby: answered from the cache
    assert again.network_passes == 0
    np.testing.assert_array_equal(again.mask, result.mask)


def test_click_grows_windows_while_the_structure_touches_their_border(packages, click_volume):
    session = ClickSession(packages["native"], click_volume, predictor=VoxelwisePredictor(threshold_classes))
    result = session.segment_at([(0, 40, 55)])  # on the rod, which crosses the whole volume along x
    assert result.network_passes > 1
    assert result.mask.shape[2] >= 75  # the rod's full length in i, not one window's 32 voxels


def test_negative_points_remove_structures_and_background_finds_nothing(packages, click_volume):
    session = ClickSession(packages["native"], click_volume, predictor=VoxelwisePredictor(threshold_classes))
    both = session.segment_at([(-10, 20, 50), (8, 22, 52)])
    one = session.segment_at([(-10, 20, 50), (8, 22, 52)], negative=[(8, 22, 52)])
    assert both.mask.sum() > one.mask.sum() > 0
    assert session.segment_at([(-10, 20, 50)], negative=[(-10, 20, 50)]).mask.sum() == 0
    other = session.segment_at([(0, 5, 45)])
    assert other.label == 2
    nothing = session.segment_at([(-30, 0, 35)])
    assert nothing.label == 0 and nothing.mask.sum() == 0 and "background" in nothing.notes[0]


@pytest.mark.parametrize("point", [(500, 0, 40), (0, 0, -100), (np.nan, 0, 40)])
def test_click_outside_the_volume_is_a_clear_error(packages, click_volume, point):
    session = ClickSession(packages["native"], click_volume, predictor=VoxelwisePredictor(threshold_classes))
    with pytest.raises(ValueError, match="outside the volume|NaN"):
        session.segment_at([point])


def test_click_with_the_real_network_reuses_its_window(packages, click_volume):
    session = ClickSession(packages["stored"], click_volume, device="cpu")
    first = session.segment_at([(-10, 20, 50)])
    second = session.segment_at([(-9, 20, 50)])
    assert first.network_passes >= 1 and second.network_passes == 0


LANDMARK_LPS = np.array([(-28.7, 21.5, 58.0), (-12.7, 22.5, 57.0), (-20.7, 15.5, 65.0), (-19.7, 16.5, 50.0),
                         (-24.7, 25.5, 55.0), (-16.7, 14.5, 60.0)])  # around the centre of the volume below


def landmark_image(lps):
    """Six channels, each a Gaussian blob (σ 3 mm) around one landmark."""
    return np.stack([np.exp(-np.sum((lps - p) ** 2, -1) / 18.0) for p in LANDMARK_LPS])


def heatmaps_are_the_input(batch):
    return np.asarray(batch, np.float32) * 255.0


@pytest.mark.parametrize("permutation,signs", SIGNED_PERMUTATIONS[::5])
def test_landmarks_follow_the_physical_object_within_a_voxel(packages, permutation, signs):
    base = Geometry.create((-30.0, -5.0, 25.0), (0.7, 1.2, 2.0), rotation(0.2, -0.1, 0.3))
    size = (61, 47, 27)
    _, geometry = regrid(np.zeros(size[::-1]), base, size, permutation, signs)
    volume = volume_from_array(np.stack([sample(lambda p, c=c: landmark_image(p)[c], geometry, geometry_size(
        size, permutation)) for c in range(6)]), geometry)
    predictor = VoxelwisePredictor(heatmaps_are_the_input)
    result = detect_landmarks(packages["landmarks"], volume, predictor=predictor)
    found = np.array([p["position"] for p in result.points])
    network_voxel = np.linalg.norm(np.array(size) * base.spacing / 32)  # diagonal of one 32³ network voxel
    assert np.linalg.norm(found - LANDMARK_LPS, axis=1).max() < network_voxel
    refined = detect_landmarks(packages["landmarks"], volume, predictor=predictor, refine="quadratic")
    refined_error = np.linalg.norm(np.array([p["position"] for p in refined.points]) - LANDMARK_LPS, axis=1)
    assert refined_error.max() < 0.5 * network_voxel
    tcd = next(line for line in refined.lines if line["name"] == "TCD")
    assert tcd["length"] == pytest.approx(np.linalg.norm(LANDMARK_LPS[0] - LANDMARK_LPS[1]), abs=network_voxel)
    assert all(0 < p["confidence"] <= 1 for p in result.points)


def geometry_size(size, permutation):
    return tuple(size[p] for p in permutation)


def test_real_landmark_network_gives_six_points_and_three_lines(tmp_path):
    package = landmark_package(tmp_path / "lm", axis_order="lfc")
    image = np.random.default_rng(0).random((1, 20, 30, 25)).astype(np.float32)
    result = detect_landmarks(package, volume_from_array(image, BASE), device="cpu")
    assert [p["label"] for p in result.points] == ["TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2"]
    assert [line["name"] for line in result.lines] == ["TCD", "HDV", "ADV"]
    assert all(np.all(np.isfinite(p["position"])) for p in result.points)


def test_classification_probabilities_and_decision(packages):
    image = np.random.default_rng(0).random((1, 24, 28, 20)).astype(np.float32)
    result = classify_volume(packages["classifier"], volume_from_array(image, BASE), device="cpu")
    assert result.classes == ["NC", "AD"] and sum(result.probabilities) == pytest.approx(1.0)
    assert result.decision == ("AD" if result.probabilities[1] >= 0.5 else "NC")


def test_a_classifier_trained_on_nibabel_arrays_sees_ijk_order(tmp_path):
    package = classification_package(tmp_path / "adni-like", axis_order="ijk")
    seen = []
    predictor = VoxelwisePredictor(lambda batch: seen.append(batch.shape) or np.zeros((len(batch), 1)))
    image = np.random.default_rng(0).random((1, 24, 28, 20)).astype(np.float32)  # C, K, J, I
    classify_volume(package, volume_from_array(image, BASE), predictor=predictor)
    assert seen == [(1, 1, 20, 28, 24)]


def test_decision_rules():
    assert decide(np.array([0.0]), ["NC", "AD"], {"rule": "sigmoid-threshold", "threshold": 0.5})[1] == "AD"
    probabilities, decision = decide(np.array([-1.0]), ["NC", "AD"], {"rule": "sigmoid-threshold", "threshold": 0.2})
    assert probabilities[1] == pytest.approx(1 / (1 + np.e)) and decision == "AD"
    probabilities, decision = decide(np.array([0.1, 2.0, -1.0]), ["a", "b", "c"], {"rule": "argmax"})
    assert decision == "b" and sum(probabilities) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rule"):
        decide(np.array([0.0]), ["a", "b"], {"rule": "vote"})


def test_a_model_of_another_task_is_refused(packages, click_volume):
    with pytest.raises(ValueError, match="not a segmentation model"):
        segment_volume(packages["classifier"], click_volume)
    with pytest.raises(ValueError, match="not a landmark model"):
        detect_landmarks(packages["native"], click_volume)


def test_cancel_stops_segmentation(packages, click_volume):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        segment_volume(packages["native"], click_volume, device="cpu", cancel=token)


def test_preprocessing_overwrites_the_input_only_when_allowed(tmp_path):
    from nnmamba.tasks.common import prepare_input

    package = segmentation_package(tmp_path / "zscore")  # no resampling: the network grid is the input grid
    image = np.random.default_rng(0).normal(5, 2, size=(1, 16, 20, 18)).astype(np.float32)
    volume = volume_from_array(image.copy(), BASE)
    kept = prepare_input(package, volume)
    np.testing.assert_array_equal(volume.array, image)
    reused = prepare_input(package, volume, reuse_input=True)
    assert np.shares_memory(reused.network.array, volume.array)
    np.testing.assert_allclose(reused.network.array, kept.network.array)
    assert abs(float(volume.array.mean())) < 1e-4  # z-scored in place
