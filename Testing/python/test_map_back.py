"""Labels on the input grid by the compiled kernel: from whole channels and streamed from the sliding window, against
the numpy blocks of Resampling.probabilities_to_input (the kernel turned off), bit for bit."""

import numpy as np
import pytest
import torch

import nnmamba.map_back as map_back
from nnmamba.geometry import Geometry
from nnmamba.inference import ProbabilitySink, sliding_window_predict
from nnmamba.map_back import StreamingMapBack, map_back_compiled, streaming_saves_memory
from nnmamba.resampling import network_grid

from geometry_cases import rotation

# network sizes (I, J, K) against the input (20, 17, 23): every order of the three interpolation steps
STEP_ORDERS = {"K, J, I": (10, 15, 30), "K, I, J": (18, 8, 30), "J, K, I": (9, 25, 20), "I, J, K": (30, 12, 10),
               "J, I, K": (14, 30, 8), "I, K, J": (25, 7, 20)}
INPUT_SIZE = (20, 17, 23)
needs_numba = pytest.mark.skipif(not map_back.numba_available(), reason="the compiled kernel needs numba")


def mapping_for(network_size):
    geometry = Geometry.create((3, -2, 7), (0.9, 1.3, 2.1), rotation(0.1, 0.2, -0.3))
    target = np.asarray(INPUT_SIZE) * geometry.spacing / np.asarray(network_size)
    mapping = network_grid(geometry, INPUT_SIZE, {"mode": "spacing", "spacing": target.tolist()})
    assert mapping.network_shape_ijk == network_size
    return mapping


def numpy_blocks(mapping, channels, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(map_back, "numba_available", lambda: False)
        return mapping.probabilities_to_input(lambda c: channels[c], len(channels))


@needs_numba
@pytest.mark.parametrize("order", list(STEP_ORDERS))
def test_whole_channels_compiled_are_the_numpy_blocks(order, monkeypatch):
    """float16 (the probability store's) and float32 channels, a tie everywhere (the lower label wins) and a
    subnormal float16, in every order of the axis steps."""
    mapping = mapping_for(STEP_ORDERS[order])
    store = np.random.default_rng(11).random((6, *mapping.network_shape_kji)).astype(np.float16)
    store[4] = store[2]
    store[0, 0, 0, 0] = np.float16(6e-8)
    channels = list(store)
    expected = numpy_blocks(mapping, channels, monkeypatch)
    assert np.array_equal(expected, np.argmax(np.stack([mapping.values_to_input(c) for c in channels]), axis=0))
    assert not np.any(expected == 4) and len(np.unique(expected)) == 5
    for values in (channels, list(store.astype(np.float32))):
        labels = np.zeros_like(expected)
        assert map_back_compiled(values, labels, mapping.network_shape_kji)
        assert np.array_equal(labels, expected)
        assert np.array_equal(mapping.probabilities_to_input(values.__getitem__, 6), expected)
    # channels that cannot be one array (one of them in Fortran order) go through the numpy blocks
    apart = [np.asfortranarray(values) if c == 3 else values for c, values in enumerate(channels)]
    assert not map_back_compiled(apart, np.zeros_like(expected), mapping.network_shape_kji)
    assert np.array_equal(mapping.probabilities_to_input(apart.__getitem__, 6), expected)


@needs_numba
def test_float16_decoding_is_exact():
    from nnmamba._numba_map_back import _decode

    every_half = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    decoded = np.empty(every_half.shape, dtype=np.float32)
    _decode(every_half, decoded)
    expected = every_half.view(np.float16).astype(np.float32)
    numbers = ~np.isnan(expected)
    assert np.array_equal(decoded.view(np.uint32)[numbers], expected.view(np.uint32)[numbers])  # signed zeros too
    assert np.isnan(decoded[~numbers]).all()


def varied_predictor(classes=5):
    """Each class most probable around an intensity of its own: every class wins somewhere, near-ties between."""
    centres = torch.linspace(-1.5, 1.5, classes).view(1, classes, 1, 1, 1)
    return lambda batch: torch.softmax(-4 * (torch.from_numpy(batch) - centres) ** 2, dim=1)


@needs_numba
@pytest.mark.parametrize("order", ["K, J, I", "J, K, I", "I, J, K", "same grid"])
@pytest.mark.parametrize("patch", [(8, 8, 8), (16, 8, 8)])
def test_streamed_from_the_window_is_the_whole_store_mapped_back(order, patch, monkeypatch):
    """The sink maps back each run of finished network rows as the window moves along K (runs of 1 to 8 rows,
    network rows shared between runs), and ends with the labels of mapping back the window's float32
    probabilities whole."""
    network_size = INPUT_SIZE if order == "same grid" else STEP_ORDERS[order]
    mapping = mapping_for(network_size)
    image = np.random.default_rng(5).normal(size=(1, *mapping.network_shape_kji)).astype(np.float32)
    predict = varied_predictor()
    labels = sliding_window_predict(image, predict, patch, 5, sink=StreamingMapBack(mapping))
    store = sliding_window_predict(image, predict, patch, 5, sink=ProbabilitySink(np.float32))
    expected = numpy_blocks(mapping, list(store), monkeypatch)
    assert labels.dtype == np.uint8 and labels.shape == mapping.input_shape_kji
    assert np.array_equal(labels, expected) and len(np.unique(expected)) == 5


def test_streaming_is_chosen_only_where_it_takes_less_memory():
    # a CT on a 225x341x341 network grid with 128-cubed patches: K slab 0.95 GB vs 0.63 GB + a 0.84 GB store
    assert streaming_saves_memory((225, 341, 341), (128, 128, 128))
    # a thin stack of slices: the K slab is the whole volume in float32, the thinnest slab plus the store less
    assert not streaming_saves_memory((128, 400, 400), (128, 64, 64))


def test_the_sink_refuses_another_axis_or_grid_and_an_unfinished_window():
    mapping = mapping_for(STEP_ORDERS["K, J, I"])
    sink = StreamingMapBack(mapping)
    with pytest.raises(ValueError, match="along K"):
        sink.start(mapping.network_shape_kji, 5, 1)
    with pytest.raises(ValueError, match="network grid"):
        sink.start((1, 2, 3), 5, 0)
    sink.start(mapping.network_shape_kji, 5, 0)
    with pytest.raises(RuntimeError, match="network rows for 0 of 23 input rows"):
        sink.result()
