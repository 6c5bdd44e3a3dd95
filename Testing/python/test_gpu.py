"""The same networks and scans on a CUDA GPU give the CPU results (skipped without a GPU)."""

import pytest
import torch
from test_scan import relative_error, scan_inputs

from nnmamba import ssm
from nnmamba.networks import NNMambaSeg, prepare_for_inference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _exact_cuda_math():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.mark.parametrize("shape", [(1, 128, 4096, 16), (2, 64, 1000, 8), (4, 512, 512, 16)])
@pytest.mark.parametrize("reverse", [False, True])
def test_torch_scan_on_gpu_matches_cpu_reference(shape, reverse):
    args = scan_inputs(*shape)
    expected = ssm.selective_scan(**args, backend="reference", reverse=reverse)
    on_gpu = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in args.items()}
    out = ssm.selective_scan(**on_gpu, backend="torch", reverse=reverse)
    assert relative_error(out.cpu(), expected) <= 1e-5


def test_auto_backend_on_gpu_is_reported():
    choice = ssm.choose_backend("cuda")
    assert choice.backend in ("cuda", "torch") and "CUDA tensors" in choice.reason


@pytest.mark.parametrize("variant", ["miccss", "nnunet"])
def test_network_on_gpu_matches_cpu(variant):
    torch.manual_seed(0)
    net = NNMambaSeg(channels=16, number_classes=4, variant=variant).eval()
    net.do_ds = False
    x = torch.randn(2, 1, 32, 48, 32)
    with torch.no_grad():
        expected = net(x)
        for channels_last in (False, True):
            fast = prepare_for_inference(net, "cuda", channels_last=channels_last)
            xin = x.cuda().contiguous(memory_format=torch.channels_last_3d) if channels_last else x.cuda()
            got = fast(xin).cpu()
            assert relative_error(got, expected) <= 1e-4, channels_last


def test_segmentation_on_gpu_with_autocast_agrees_with_cpu(tmp_path):
    import numpy as np

    from nnmamba.geometry import Geometry
    from nnmamba.imaging import volume_from_array
    from nnmamba.tasks import segment_volume

    from model_packages import segmentation_package

    package = segmentation_package(tmp_path / "seg", classes=4, channels=8, patch=(64, 64, 64))
    image = np.random.default_rng(0).normal(size=(1, 50, 90, 70)).astype(np.float32)
    volume = volume_from_array(image, Geometry.create(spacing=(0.8, 0.8, 2.0)))
    on_cpu = segment_volume(package, volume, device="cpu").labels
    on_gpu = segment_volume(package, volume, device="cuda", tile_batch=4).labels  # float16 autocast
    assert len(np.unique(on_cpu)) > 1
    assert (on_cpu == on_gpu).mean() > 0.99


def test_out_of_memory_falls_back_to_smaller_batches_then_to_the_cpu():
    import numpy as np

    from nnmamba.predictor import NetworkPredictor

    torch.manual_seed(0)
    net = NNMambaSeg(channels=16, number_classes=3, variant="miccss").eval()
    tiles = np.random.default_rng(0).normal(size=(2, 1, 128, 128, 128)).astype(np.float32)
    expected = NetworkPredictor(net, device="cpu")(tiles)
    messages = []
    predictor = NetworkPredictor(net, device="cuda", notify=messages.append)
    torch.cuda.empty_cache()
    total = torch.cuda.mem_get_info()[1]
    torch.cuda.set_per_process_memory_fraction(48 * 2 ** 20 / total)  # ~48 MB: too little for one 128³ tile
    try:
        out = predictor(tiles)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert predictor.device.type == "cpu" and predictor.max_batch == 1
    assert "retrying with 1" in messages[0] and "continuing on the CPU" in messages[-1]
    np.testing.assert_allclose(out, expected, atol=1e-4)
