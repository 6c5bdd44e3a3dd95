"""Sliding window, streaming sinks, progress/cancel and the network predictor."""

import numpy as np
import pytest
import torch

from nnmamba.inference import (
    ArgmaxSink,
    ProbabilitySink,
    choose_stream_axis,
    fit_patch,
    gaussian_importance,
    sliding_window_predict,
    tile_starts,
)
from nnmamba.networks import NNMambaSeg
from nnmamba.predictor import NetworkPredictor
from nnmamba.progress import Cancelled, CancelToken

MIXING = np.array([[1.0, -2.0], [0.5, 1.5], [-1.0, 0.3]], dtype=np.float32)  # 2 input channels -> 3 classes


def voxelwise_softmax(batch):
    """A position-independent 'network': every tile agrees on every voxel, so blending must reproduce it."""
    logits = np.einsum("oc,bc...->bo...", MIXING, batch)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_gaussian_importance_peaks_in_the_centre_and_is_symmetric():
    w = gaussian_importance((16, 8, 5))
    assert w.shape == (16, 8, 5) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0) and w.min() >= 1e-3
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1])
    assert w[8, 4, 2] > w[5, 4, 2] > w[5, 3, 1]


@pytest.mark.parametrize("size,patch,overlap", [(100, 32, 0.5), (33, 32, 0.5), (32, 32, 0.5), (20, 32, 0.5),
                                                (300, 128, 0.25), (129, 16, 0.0)])
def test_tile_starts_cover_the_axis_with_the_requested_overlap(size, patch, overlap):
    starts = tile_starts(size, patch, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert starts[-1] == max(size - patch, 0)
    for a, b in zip(starts, starts[1:]):
        assert b - a <= patch * (1 - overlap) + 1e-9


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError, match="Overlap"):
        tile_starts(100, 32, 1.0)


def test_patch_shrinks_to_the_image_in_multiples_of_16():
    assert fit_patch((20, 200, 7), (64, 64, 64)) == (32, 64, 16)
    assert choose_stream_axis((300, 512, 400), (128, 128, 128)) == 1


@pytest.mark.parametrize("shape", [(37, 21, 50), (16, 16, 16), (9, 40, 23), (70, 12, 12)])
@pytest.mark.parametrize("tile_batch", [1, 3])
def test_blending_reproduces_a_voxelwise_prediction_exactly(shape, tile_batch):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    expected = voxelwise_softmax(image[None])[0]
    probabilities = sliding_window_predict(image, voxelwise_softmax, (16, 16, 32), 3, overlap=0.5,
                                           sink=ProbabilitySink(np.float32), tile_batch=tile_batch)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    labels = sliding_window_predict(image, voxelwise_softmax, (16, 16, 32), 3, overlap=0.5)
    np.testing.assert_array_equal(labels, expected.argmax(0))
    assert labels.dtype == np.uint8


def test_slabs_arrive_in_order_and_each_voxel_once():
    seen = []

    class RecordingSink(ArgmaxSink):
        def consume(self, rows, accumulated, weights):
            seen.append((rows.start, rows.stop, accumulated.shape))
            super().consume(rows, accumulated, weights)

    image = np.zeros((2, 30, 70, 20), dtype=np.float32)
    sliding_window_predict(image, voxelwise_softmax, (16, 16, 16), 3, overlap=0.5, sink=RecordingSink())
    # stream axis is the longest relative to the patch (J, 70 voxels); slabs tile 0..70 without gaps
    assert [s[0] for s in seen] == [0] + [s[1] for s in seen[:-1]] and seen[-1][1] == 70
    assert all(shape == (3, stop - start, 30, 20) for start, stop, shape in seen)
    assert max(stop - start for start, stop, _ in seen) <= 16


@pytest.mark.parametrize("shift", [1, 3, 5, 8, 9, 12])
def test_slab_slide_moves_rows_like_one_row_at_a_time(shift):
    import torch

    from nnmamba.inference import _slide

    accumulated, weights = torch.rand(3, 12, 5, 4), torch.rand(12, 5, 4)
    expected_a, expected_w = torch.zeros_like(accumulated), torch.zeros_like(weights)
    expected_a[:, :12 - shift], expected_w[:12 - shift] = accumulated[:, shift:], weights[shift:]
    _slide(accumulated, weights, shift)
    assert torch.equal(accumulated, expected_a) and torch.equal(weights, expected_w)


def test_progress_reaches_one_and_cancel_stops_between_tiles():
    image = np.zeros((2, 40, 40, 40), dtype=np.float32)
    reports = []
    sliding_window_predict(image, voxelwise_softmax, (16, 16, 16), 3, progress=lambda f, eta, m: reports.append(f))
    assert reports == sorted(reports) and reports[-1] == 1.0 and len(reports) == 4 ** 3
    token = CancelToken()
    calls = []

    def predict_then_cancel(batch):
        calls.append(1)
        token.cancel()
        return voxelwise_softmax(batch)

    with pytest.raises(Cancelled):
        sliding_window_predict(image, predict_then_cancel, (16, 16, 16), 3, cancel=token)
    assert len(calls) == 1


def small_network(**kwargs):
    torch.manual_seed(0)
    model = NNMambaSeg(in_ch=1, channels=4, number_classes=3, **kwargs).eval()
    for module in model.modules():  # non-trivial BN statistics, so that folding is really exercised
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


def test_predictor_matches_the_plain_network_and_mirroring_averages_flips():
    model = small_network()
    x = torch.randn(2, 1, 16, 32, 16)
    with torch.no_grad():
        plain = torch.softmax(model(x), 1).numpy()
        flipped = torch.softmax(model(torch.flip(x, (2, 4))), 1).flip((2, 4)).numpy()
    predictor = NetworkPredictor(model, device="cpu", activation="softmax")
    np.testing.assert_allclose(predictor(x.numpy()), plain, atol=1e-5)
    mirrored = NetworkPredictor(model, device="cpu", activation="softmax", mirroring=True)(x.numpy())
    assert np.abs(mirrored - plain).max() > 1e-4  # the flips really change the answer of a random network
    assert np.abs(mirrored - flipped).max() > 1e-4
    np.testing.assert_allclose(mirrored.sum(1), 1, atol=1e-5)


def test_nnunet_variant_predicts_one_full_resolution_map():
    predictor = NetworkPredictor(small_network(variant="nnunet"), device="cpu", activation="none")
    out = predictor(np.zeros((1, 1, 16, 16, 16), dtype=np.float32))
    assert out.shape == (1, 3, 16, 16, 16)


def test_sliding_window_with_a_real_network_on_an_odd_volume():
    predictor = NetworkPredictor(small_network(), device="cpu")
    image = np.random.default_rng(0).normal(size=(1, 23, 41, 18)).astype(np.float32)
    probabilities = sliding_window_predict(image, predictor, (32, 32, 32), 3, sink=ProbabilitySink())
    assert probabilities.shape == (3, 23, 41, 18) and probabilities.dtype == np.float16
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(0), 1, atol=2e-3)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation"):
        NetworkPredictor(small_network(), device="cpu", activation="tanh")
