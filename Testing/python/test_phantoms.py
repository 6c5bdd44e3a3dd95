"""The demo phantoms: reproducible from the seed, anatomically plausible, and with ground truth that agrees with the
image through the geometry (labels, landmarks in LPS, the class of the classification phantom)."""

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk

from nnmamba.demo.phantoms import (
    BRAIN_LABELS,
    CLASS_NAMES,
    CT_LABELS,
    LANDMARK_NAMES,
    abdomen_ct,
    brain_atrophy,
    fetal_brain,
    obliquity_degrees,
)
from nnmamba.demo.phantoms_common import rotation_about
from nnmamba.geometry import Geometry

SMALL = {
    abdomen_ct: {"size": (48, 48, 32)},
    fetal_brain: {"size": (48, 48, 48)},
    brain_atrophy: {"size": (32, 32, 32)},
}
FETAL_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def fetal_cases():
    return [fetal_brain(seed) for seed in FETAL_SEEDS]


@pytest.fixture(scope="module")
def ct_cases():
    return [abdomen_ct(seed) for seed in (0, 1, 2)]


def _object_coordinates(phantom, mask):
    """Object-frame millimetres of the voxels in ``mask``."""
    kji = np.argwhere(mask)
    lps = phantom.geometry.index_to_lps(kji[:, ::-1])
    object_to_lps = np.array(phantom.info["object_to_lps"])
    return (lps - object_to_lps[:3, 3]) @ object_to_lps[:3, :3]


def _to_object(phantom, lps):
    object_to_lps = np.array(phantom.info["object_to_lps"])
    return (np.asarray(lps) - object_to_lps[:3, 3]) @ object_to_lps[:3, :3]


@pytest.mark.parametrize("generate", list(SMALL), ids=lambda f: f.__name__)
def test_same_seed_gives_the_same_phantom_and_other_seeds_differ(generate):
    first, again, other = (generate(seed, **SMALL[generate]) for seed in (7, 7, 8))
    assert first.image.dtype == np.float32 and first.labels.dtype == np.uint8
    assert first.image.shape == first.labels.shape == tuple(SMALL[generate]["size"][::-1])
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.labels, again.labels)
    for a, b in zip(first.geometry, again.geometry):
        np.testing.assert_array_equal(a, b)
    assert first.landmarks == again.landmarks and first.label == again.label
    assert json.dumps(first.info) == json.dumps(again.info)  # also proves the info is plain JSON
    assert first.image.shape != other.image.shape or not np.array_equal(first.image, other.image)
    assert not np.allclose(first.geometry.origin, other.geometry.origin)


def test_ct_has_every_organ_with_plausible_volume_and_hounsfield_units(ct_cases):
    plausible_ml = {
        "liver": (600, 2600),
        "spleen": (40, 450),
        "kidney_right": (50, 300),
        "kidney_left": (50, 300),
        "aorta": (20, 250),
        "vertebrae": (100, 700),
    }
    plausible_hu = {
        "liver": (60, 150),
        "spleen": (60, 160),
        "kidney_right": (110, 230),
        "kidney_left": (110, 230),
        "aorta": (80, 260),
        "vertebrae": (200, 700),
    }
    for phantom in ct_cases:
        voxel_ml = np.prod(phantom.geometry.spacing) / 1000
        volumes = {name: np.count_nonzero(phantom.labels == value) * voxel_ml for value, name in CT_LABELS.items()}
        assert volumes == pytest.approx(phantom.info["volumes_ml"])
        for name, (low, high) in plausible_ml.items():
            assert low < volumes[name] < high, (name, volumes[name])
            mean_hu = float(phantom.image[phantom.labels == [k for k, v in CT_LABELS.items() if v == name][0]].mean())
            assert plausible_hu[name][0] < mean_hu < plausible_hu[name][1], (name, mean_hu)
        assert volumes["liver"] > 3 * volumes["spleen"] and volumes["liver"] > 3 * volumes["kidney_left"]
        assert set(np.unique(phantom.labels)) == {0, *CT_LABELS}


def test_ct_intensities_and_spacing_are_ct_like(ct_cases):
    for phantom in ct_cases:
        image = phantom.image
        assert -1024 <= image.min() and image.max() <= 3071
        assert np.array_equal(image, np.round(image))  # whole Hounsfield units, as stored by scanners
        corners = image[:, :3, :3]
        assert np.median(corners) < -950  # air around the body
        assert np.count_nonzero((image > -150) & (image < -50)) > 0.05 * image.size  # fat
        assert np.count_nonzero(image > 500) > 0  # cortical bone
        spacing = phantom.geometry.spacing
        assert spacing[0] == spacing[1] and spacing[2] > 1.1 * spacing[0]  # square pixels, thicker slices
        assert 0 < phantom.info["obliquity_deg"] < 15  # a modest tilt, not an oblique acquisition


def test_ct_anatomy_sits_where_it_was_defined(ct_cases):
    for phantom in ct_cases:
        centroid = {
            name: phantom.geometry.index_to_lps(np.argwhere(phantom.labels == value)[:, ::-1].mean(axis=0))
            for value, name in CT_LABELS.items()
        }
        # the patient's right is -x in LPS: liver and right kidney on the right, spleen and aorta to the left of them
        assert centroid["liver"][0] < centroid["spleen"][0]
        assert centroid["kidney_right"][0] < centroid["aorta"][0] < centroid["kidney_left"][0]
        for name in ("kidney_right", "kidney_left"):
            defined = np.array(phantom.info["object_to_lps"]) @ [*phantom.info["kidney_centres_mm"][name], 1]
            assert np.linalg.norm(centroid[name] - defined[:3]) < 12, name  # (the renal sinus is cut out)


def test_fetal_landmarks_are_the_cerebellar_extremes(fetal_cases):
    for phantom in fetal_cases:
        assert tuple(phantom.landmarks) == LANDMARK_NAMES
        points = {name: np.array(lps) for name, lps in phantom.landmarks.items()}
        tolerance = float(np.linalg.norm(phantom.geometry.spacing))  # one voxel diagonal
        cerebellum = np.isin(phantom.labels, (5, 8))
        vermis = phantom.labels == 8

        # in the object frame: TCD1/TCD2 bound the cerebellum from the right (-x) and the left (+x)
        x = _object_coordinates(phantom, cerebellum)[:, 0]
        assert _to_object(phantom, points["TCD1"])[0] == pytest.approx(x.min(), abs=tolerance)
        assert _to_object(phantom, points["TCD2"])[0] == pytest.approx(x.max(), abs=tolerance)
        # in LPS, with no object frame: each pair bounds its structure along the line through it
        lps = phantom.geometry.index_to_lps(np.argwhere(vermis)[:, ::-1])
        for first, second in (("HDV2", "HDV1"), ("ADV1", "ADV2")):
            axis = (points[second] - points[first]) / np.linalg.norm(points[second] - points[first])
            projection = lps @ axis
            assert points[first] @ axis == pytest.approx(projection.min(), abs=tolerance)
            assert points[second] @ axis == pytest.approx(projection.max(), abs=tolerance)

        upward = _to_object(phantom, points["HDV1"]) - _to_object(phantom, points["HDV2"])
        forward = _to_object(phantom, points["ADV1"]) - _to_object(phantom, points["ADV2"])
        assert upward[2] > 0 and forward[1] < 0  # HDV1 superior, ADV1 anterior (-y)
        tcd = np.linalg.norm(points["TCD2"] - points["TCD1"])
        assert 15 < tcd < 50
        assert tcd == pytest.approx(phantom.info["transverse_cerebellar_diameter_mm"])
        assert 0.3 * tcd < np.linalg.norm(points["HDV1"] - points["HDV2"]) < 0.8 * tcd
        assert 0.2 * tcd < np.linalg.norm(points["ADV1"] - points["ADV2"]) < tcd


def test_fetal_landmark_voxels_are_on_the_border_of_their_structure(fetal_cases):
    for phantom in fetal_cases:
        for name, lps in phantom.landmarks.items():
            i, j, k = np.rint(phantom.geometry.lps_to_index(lps)).astype(int)
            around = phantom.labels[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2]
            structure = (5, 8) if name.startswith("TCD") else (8,)
            assert np.isin(around, structure).any(), name
            assert not np.isin(around, structure).all(), name


def test_fetal_pose_is_oblique_and_spacing_sub_millimetre(fetal_cases):
    for phantom in fetal_cases:
        assert obliquity_degrees(phantom.geometry.direction) > 10
        assert np.allclose(phantom.geometry.direction.T @ phantom.geometry.direction, np.eye(3))
        assert np.all((0.5 <= phantom.geometry.spacing) & (phantom.geometry.spacing <= 0.9))
        assert 18 <= phantom.info["gestational_weeks"] <= 22
        # T2-like: fluid brighter than the (unmyelinated) white matter, which is brighter than the cortex
        csf, white, gray = (phantom.image[phantom.labels == value].mean() for value in (1, 3, 2))
        assert csf > 1.2 * white and white > 1.2 * gray


def test_obliquity_measures_the_angle_to_the_nearest_scanner_axes():
    assert obliquity_degrees(np.eye(3)) == pytest.approx(0, abs=1e-6)
    assert obliquity_degrees([[0, 0, 1], [1, 0, 0], [0, 1, 0]]) == pytest.approx(0, abs=1e-6)  # sagittal
    assert obliquity_degrees(rotation_about((0, 0, 1), 30)) == pytest.approx(30)
    assert obliquity_degrees(rotation_about((0, 0, 1), 80)) == pytest.approx(10)


def test_atrophy_class_has_larger_ventricles_on_average_but_the_classes_overlap():
    ventricles = {False: [], True: []}
    for atrophy in (False, True):
        for seed in range(20):
            phantom = brain_atrophy(seed, atrophy=atrophy, size=(32, 32, 32))
            assert phantom.label == int(atrophy) and phantom.info["class_name"] == CLASS_NAMES[int(atrophy)]
            ventricles[atrophy].append(phantom.info["volumes_ml"]["ventricles"])
    normal, atrophic = np.array(ventricles[False]), np.array(ventricles[True])
    assert atrophic.mean() > 1.4 * normal.mean()
    assert normal.max() > atrophic.min()  # not separable by ventricle size alone


def test_brain_phantom_has_its_tissues_and_draws_both_classes():
    labels = {brain_atrophy(seed, size=(32, 32, 32)).label for seed in range(8)}
    assert labels == {0, 1}
    phantom = brain_atrophy(3)
    assert set(np.unique(phantom.labels)) == {0, *BRAIN_LABELS}
    wm, gm, csf = (phantom.image[phantom.labels == value].mean() for value in (3, 2, 1))
    assert wm > gm > csf  # T1-like contrast


def test_phantoms_are_quick_to_generate():
    for generate in (abdomen_ct, fetal_brain, brain_atrophy):
        start = time.perf_counter()
        generate(11)
        assert time.perf_counter() - start < 1.5, generate.__name__


def test_phantom_writes_to_nrrd_with_its_geometry(tmp_path):
    phantom = fetal_brain(4, size=(40, 40, 40))
    image_path, labels_path = tmp_path / "fetal.nrrd", tmp_path / "fetal-labels.nrrd"
    sitk.WriteImage(phantom.image_sitk(), str(image_path))
    sitk.WriteImage(phantom.labels_sitk(), str(labels_path))
    image, labels = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(labels_path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), phantom.image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), phantom.labels)
    read = Geometry.from_sitk(image)
    for a, b in zip(read, phantom.geometry):
        np.testing.assert_allclose(a, b, atol=1e-9)
    # a landmark read back through the file's geometry still lands on the cerebellum
    i, j, k = np.rint(read.lps_to_index(phantom.landmarks["TCD1"])).astype(int)
    assert np.isin(sitk.GetArrayFromImage(labels)[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2], (5, 8)).any()


def test_bad_arguments_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="size"):
        abdomen_ct(0, size=(64, 64))
    with pytest.raises(ValueError, match="gestational_weeks"):
        fetal_brain(0, gestational_weeks=50)
    with pytest.raises(ValueError, match="positive"):
        brain_atrophy(0, size=(32, 32, 32), spacing=(1, 0, 1))
