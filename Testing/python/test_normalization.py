"""Intensity normalisation against hand-computed numbers, one scheme at a time."""

import numpy as np
import pytest

from nnmamba.imaging import ImageError
from nnmamba.normalization import nonzero_mask, normalize


def test_ct_clips_then_standardises():
    array = np.array([-2000, -1000, 0, 50, 100, 150, 400, 500], np.float32).reshape(1, 2, 2, 2)
    result = normalize(array, {"scheme": "ct", "clip": [-1000, 400], "mean": 50, "std": 100})
    assert result.dtype == np.float32
    assert np.allclose(result.ravel(), [-10.5, -10.5, -0.5, 0, 0.5, 1, 3.5, 3.5])


def test_zscore_whole_image():
    array = np.array([1, 2, 3, 4], np.float32).reshape(1, 1, 2, 2)
    result = normalize(array, {"scheme": "zscore", "nonzero_mask": False})
    assert np.allclose(result.ravel(), (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25), atol=1e-6)


def brain_phantom():
    """Two channels on 5x5x5: a 3x3x3 'brain' (its centre voxel 0 in both channels: a hole nnU-Net fills) and a
    corner voxel nonzero only in channel 1 (the mask is the union over channels)."""
    array = np.zeros((2, 5, 5, 5), np.float32)
    block = np.zeros((5, 5, 5), bool)
    block[1:4, 1:4, 1:4] = True
    values = np.where(np.arange(27).reshape(3, 3, 3) % 2 == 0, 1.0, 3.0)
    array[0, 1:4, 1:4, 1:4] = values
    array[1, 1:4, 1:4, 1:4] = 1.0
    array[:, 2, 2, 2] = 0.0  # the hole
    array[1, 0, 0, 0] = 5.0  # only channel 1
    return array, block


def test_zscore_with_nonzero_mask_like_nnunet_v1():
    array, block = brain_phantom()
    expected_mask = block.copy()
    expected_mask[0, 0, 0] = True
    assert np.array_equal(nonzero_mask(array), expected_mask)

    result = normalize(array, {"scheme": "zscore", "nonzero_mask": True})
    # Channel 0 inside the mask (28 voxels): the block alternates 1, 3 (14 ones, 13 threes), its centre (a 3) is the
    # hole, now 0; plus the corner (0).
    values0 = np.array([1.0] * 14 + [3.0] * 12 + [0.0, 0.0])
    mean0, std0 = values0.mean(), values0.std()
    assert np.isclose(result[0, 1, 1, 1], (1 - mean0) / (std0 + 1e-8), atol=1e-5)
    assert np.isclose(result[0, 1, 1, 2], (3 - mean0) / (std0 + 1e-8), atol=1e-5)
    assert np.isclose(result[0, 2, 2, 2], (0 - mean0) / (std0 + 1e-8), atol=1e-5)  # the filled hole is inside
    assert np.isclose(result[0, 0, 0, 0], (0 - mean0) / (std0 + 1e-8), atol=1e-5)  # so is the other channel's voxel
    assert np.all(result[:, ~expected_mask] == 0)  # outside the mask: 0
    values1 = np.array([1.0] * 26 + [0.0, 5.0])
    mean1, std1 = values1.mean(), values1.std()
    assert np.isclose(result[1, 0, 0, 0], (5 - mean1) / (std1 + 1e-8), atol=1e-5)
    assert np.isclose(result[1, 3, 3, 3], (1 - mean1) / (std1 + 1e-8), atol=1e-5)


def test_window_like_lfc():
    array = np.array([2, 4, 4, 4, 5, 5, 7, 9, 0, -3], np.float32).reshape(1, 1, 2, 5)
    # Over voxels > 0: mean 5, std 2. Window mean ± 2 std = [1, 9] onto [0, 255].
    result = normalize(array, {"scheme": "window", "sigmas": 2.0, "range": [0.0, 255.0]})
    assert np.allclose(result.ravel(), [31.875, 95.625, 95.625, 95.625, 127.5, 127.5, 191.25, 255, 0, 0])
    # Window [3, 7] onto [-1, 1].
    result = normalize(array, {"scheme": "window", "sigmas": 1.0, "range": [-1.0, 1.0]})
    assert np.allclose(result.ravel(), [-1, -0.5, -0.5, -0.5, 0, 0, 1, 1, -1, -1])


def test_none_is_a_float32_copy():
    array = np.arange(8, dtype=np.int16).reshape(1, 2, 2, 2)
    result = normalize(array, {"scheme": "none"})
    assert result.dtype == np.float32 and np.array_equal(result, array)


@pytest.mark.parametrize("scheme", [
    {"scheme": "ct", "clip": [-1000, 400], "mean": 0, "std": 1},
    {"scheme": "zscore", "nonzero_mask": True},
    {"scheme": "window", "sigmas": 2.0, "range": [0, 255]},
])
def test_constant_channel_is_refused(scheme):
    array = np.stack([np.arange(8, dtype=np.float32).reshape(2, 2, 2), np.full((2, 2, 2), 7, np.float32)])
    with pytest.raises(ImageError, match="Channel 1 is constant"):
        normalize(array, scheme)


def test_degenerate_statistics_are_refused():
    no_positive = np.array([0, -1, -2, -3], np.float32).reshape(1, 1, 2, 2)
    with pytest.raises(ImageError, match="no voxel above 0"):
        normalize(no_positive, {"scheme": "window"})
    flat_brain = np.zeros((1, 4, 4, 4), np.float32)
    flat_brain[0, 1:3, 1:3, 1:3] = 3.0
    with pytest.raises(ImageError, match="constant.*inside its nonzero mask"):
        normalize(flat_brain, {"scheme": "zscore", "nonzero_mask": True})


def test_bad_settings_are_value_errors():
    array = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    with pytest.raises(ValueError, match="Unknown normalisation scheme"):
        normalize(array, {"scheme": "minmax"})
    with pytest.raises(ValueError, match="low < high"):
        normalize(array, {"scheme": "ct", "clip": [400, -1000], "mean": 0, "std": 1})
    with pytest.raises(ValueError, match="C, K, J, I"):
        normalize(array[0], {"scheme": "none"})
