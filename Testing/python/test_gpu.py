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
