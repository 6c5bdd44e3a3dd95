"""Click-to-segment against a straightforward reference: numpy blending of the windows, scipy's labelling and a
per-voxel physical lookup onto the input grid must give the very mask the session gives (which blends, grows and
gathers with torch on the predictor's device, and keeps what it found)."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnmamba.geometry import Geometry
from nnmamba.imaging import volume_from_array
from nnmamba.inference import gaussian_importance
from nnmamba.tasks import ClickSession
from nnmamba.tasks.click import _best_window, flood_fill

from geometry_cases import rotation
from model_packages import segmentation_package

FACES = ndimage.generate_binary_structure(3, 1)


class TiledPredictor:
    """A stand-in network whose answer depends on where a voxel lies in its tile (as a real network's does near
    the tile border), so that blending several windows changes the labels; counts its passes."""

    def __init__(self):
        self.passes, self.network_seconds = 0, 0.0

    def __call__(self, batch):
        batch = np.asarray(batch, np.float32)
        self.passes += len(batch)
        x = batch[:, 0]
        position = sum(np.cos(np.linspace(0, np.pi, n)).reshape([-1 if a == axis else 1 for a in range(3)])
                       for axis, n in enumerate(x.shape[1:]))
        logits = np.stack([np.zeros_like(x), 4 * (x - 1.5) + 0.8 * position, 20 * (x - 3.5)], 1)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)


def phantom(lps):
    """A rod along x (value 2, longer than two windows), a sphere (2) and a small dense sphere (5)."""
    value = np.zeros(lps.shape[:-1])
    value[np.linalg.norm(lps - np.array((-10, 20, 50)), axis=-1) <= 6] = 2
    value[np.linalg.norm(lps - np.array((12, 8, 45)), axis=-1) <= 4] = 5
    value[(np.abs(lps[..., 1] - 35) <= 4) & (np.abs(lps[..., 2] - 55) <= 4)] = 2
    return value


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    package = segmentation_package(tmp_path_factory.mktemp("click-ref") / "pkg", spacing=(1.3, 1.1, 1.7),
                                   orientation="LPS", normalization={"scheme": "none"}, model_id="click-ref")
    # stored flipped along I and J (reoriented to LPS for the network), oblique, resampled to the model spacing
    direction = rotation(0.0, 0.0, 0.15) @ np.diag([-1.0, -1.0, 1.0])
    geometry = Geometry.create((30.0, 50.0, 30.0), (0.9, 1.0, 1.2), direction)
    size = (90, 60, 40)
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    image = phantom(geometry.index_to_lps(np.stack([i, j, k], -1))).astype(np.float32)
    return package, volume_from_array(image, geometry)


def reference_component(session, point):
    """(mask, start) on the network grid by the same growth rule, in plain numpy and scipy."""
    image = session.prepared.network.array
    predictor = session.predictor
    weight = gaussian_importance(session.patch)
    voxel = np.clip(np.round(session.prepared.network.geometry.lps_to_index(point)[::-1]).astype(int), 0,
                    np.array(session.shape) - 1)
    lo = hi = [_best_window(s, p, v) for s, p, v in zip(session.starts, session.patch, voxel)]
    while True:
        start = np.array([session.starts[a][lo[a]] for a in range(3)])
        stop = np.array([min(session.starts[a][hi[a]] + session.patch[a], session.shape[a]) for a in range(3)])
        windows = [(a, b, c) for a in range(lo[0], hi[0] + 1) for b in range(lo[1], hi[1] + 1)
                   for c in range(lo[2], hi[2] + 1)]
        outputs = []
        for index in windows:
            corner = [session.starts[a][index[a]] for a in range(3)]
            tile = np.zeros((1, *session.patch), np.float32)
            data = image[(slice(None), *(slice(c, c + p) for c, p in zip(corner, session.patch)))]
            tile[(slice(None), *(slice(0, n) for n in data.shape[1:]))] = data
            outputs.append((np.array(corner) - start, predictor(tile[None])[0]))
        if len(windows) == 1:
            labels = np.argmax(outputs[0][1], 0)[tuple(slice(0, n) for n in stop - start)]
        else:
            total = np.zeros((outputs[0][1].shape[0], *(stop - start)), np.float32)
            for corner, probabilities in outputs:
                extent = np.minimum(session.patch, stop - start - corner)
                inside = tuple(slice(0, n) for n in extent)
                target = (slice(None), *(slice(c, c + n) for c, n in zip(corner, extent)))
                total[target] += probabilities.astype(np.float16)[(slice(None), *inside)] * weight[inside]
            labels = np.argmax(total, 0)
        local = tuple(voxel - start)
        if labels[local] == 0:
            return None, start
        regions, _ = ndimage.label(labels == labels[local], FACES)
        mask = regions == regions[local]
        grown_lo, grown_hi = list(lo), list(hi)
        for axis in range(3):
            if np.take(mask, 0, axis).any() and lo[axis] > 0:
                grown_lo[axis] -= 1
            if np.take(mask, -1, axis).any() and hi[axis] < len(session.starts[axis]) - 1:
                grown_hi[axis] += 1
        if (grown_lo, grown_hi) == (list(lo), list(hi)):
            return mask, start
        lo, hi = grown_lo, grown_hi


def on_input_grid(session, mask, start):
    """Every input voxel looks up the network voxel its centre lies in (its physical position, rounded)."""
    volume = session.volume
    k, j, i = np.meshgrid(*(np.arange(n) for n in volume.array.shape[1:]), indexing="ij")
    lps = volume.geometry.index_to_lps(np.stack([i, j, k], -1).astype(float))
    kji = np.rint(session.prepared.network.geometry.lps_to_index(lps)[..., ::-1]).astype(int) - start
    inside = np.all((kji >= 0) & (kji < mask.shape), axis=-1)
    full = np.zeros(volume.array.shape[1:], bool)
    full[inside] = mask[tuple(kji[inside].T)]
    return full


def placed(result, shape):
    full = np.zeros(shape, bool)
    i, j, k = result.offset
    full[k:k + result.mask.shape[0], j:j + result.mask.shape[1], i:i + result.mask.shape[2]] = result.mask
    return full


@pytest.mark.parametrize("point", [(-10, 20, 50), (0, 35, 55), (12, 8, 45)])
def test_a_first_click_is_the_reference_answer(case, point):
    package, volume = case
    session = ClickSession(package, volume, predictor=TiledPredictor())
    result = session.segment_at([point])
    mask, start = reference_component(session, point)
    expected = on_input_grid(session, mask, start)
    assert expected.sum() > 50
    np.testing.assert_array_equal(placed(result, expected.shape), expected)
    if point == (0, 35, 55):
        assert result.network_passes > 1  # the rod: several windows, blended


def test_several_points_and_a_negative_one_follow_the_reference(case):
    package, volume = case
    session = ClickSession(package, volume, predictor=TiledPredictor())
    sphere, rod, small = (-10, 20, 50), (0, 35, 55), (12, 8, 45)
    result = session.segment_at([sphere, small], negative=[rod])
    shape = volume.array.shape[1:]
    expected = on_input_grid(session, *reference_component(session, sphere))
    expected |= on_input_grid(session, *reference_component(session, small))
    np.testing.assert_array_equal(placed(result, shape), expected)


def test_a_later_click_in_a_found_structure_reuses_it(case):
    package, volume = case
    session = ClickSession(package, volume, predictor=TiledPredictor())
    first = session.segment_at([(0, 35, 55)])
    elsewhere = (-25, 35, 55)  # the same rod, in another window
    later = session.segment_at([elsewhere])
    assert later.network_passes == 0 and later.mask is first.mask and later.offset == first.offset
    assert session.segment_at([(0, 35, 55)], negative=[elsewhere]).mask.sum() == 0  # the rod minus itself
    with pytest.raises(ValueError):
        first.mask[0, 0, 0] = 1  # shared by every click that finds the rod: read-only


@pytest.mark.parametrize("seed", range(4))
def test_flood_fill_is_simpleitk_region_growing(seed):
    rng = np.random.default_rng(seed)
    labels = ndimage.median_filter(rng.integers(0, 3, (23, 31, 19)), 3).astype(np.uint8)
    point = tuple(int(v) for v in rng.integers(0, labels.shape))
    value = int(labels[point])
    expected = sitk.GetArrayFromImage(sitk.ConnectedThreshold(sitk.GetImageFromArray(labels),
                                                              seedList=[point[::-1]], lower=value, upper=value))
    import torch

    found = flood_fill(torch.from_numpy(labels == value), point, check_every=3)
    np.testing.assert_array_equal(found.numpy(), expected.astype(bool))


def test_the_gpu_region_growing_gives_the_same_click(case, monkeypatch):
    """On a GPU the region grows by :func:`flood_fill` on the device; here it runs on the CPU tensors instead."""
    import nnmamba.tasks.click as click

    package, volume = case
    expected = ClickSession(package, volume, predictor=TiledPredictor()).segment_at([(0, 35, 55)])
    monkeypatch.setattr(click, "_connected_region", lambda labels, seed: flood_fill(labels == labels[seed], seed))
    result = ClickSession(package, volume, predictor=TiledPredictor()).segment_at([(0, 35, 55)])
    assert result.offset == expected.offset
    np.testing.assert_array_equal(result.mask, expected.mask)
