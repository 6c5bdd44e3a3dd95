"""The Mamba block: mamba-ssm's parameter layout and initialisation, its math, and parity with mamba-ssm."""

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from nnmamba.networks import Mamba
from nnmamba.ssm import selective_scan_reference

# mamba_ssm.modules.mamba_simple.Mamba(d_model=64), d_state 16, d_conv 4, expand 2 (spec §5.1).
MAMBA_SIMPLE_64 = [
    ("A_log", (128, 16)), ("D", (128,)), ("in_proj.weight", (256, 64)), ("conv1d.weight", (128, 1, 4)),
    ("conv1d.bias", (128,)), ("x_proj.weight", (36, 128)), ("dt_proj.weight", (128, 4)), ("dt_proj.bias", (128,)),
    ("out_proj.weight", (64, 128)),
]


def test_parameter_names_shapes_and_order_match_mamba_simple():
    block = Mamba(64)
    assert [(k, tuple(v.shape)) for k, v in block.state_dict().items()] == MAMBA_SIMPLE_64


@pytest.mark.parametrize("d_model,expected", [(64, 32_640), (128, 116_480), (256, 437_760)])
def test_parameter_counts(d_model, expected):
    assert sum(p.numel() for p in Mamba(d_model).parameters()) == expected


def test_initialisation_follows_mamba_simple():
    block = Mamba(128)
    rank = block.dt_rank
    assert rank == 8
    assert torch.equal(block.A_log, torch.log(torch.arange(1, 17.0)).repeat(256, 1))
    assert torch.equal(block.D, torch.ones(256))
    assert block.dt_proj.weight.abs().max() <= rank ** -0.5
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    # log-uniform: the median of log Δ sits near the middle of [ln 1e-3, ln 1e-1]
    assert abs(torch.log(dt).median().item() - (math.log(1e-3) + math.log(1e-1)) / 2) < 0.5


def independent_forward(block, h):
    """mamba_simple's math written out step by step (spec §5.3), with the sequential reference scan."""
    d_inner, n_state, k = block.d_inner, block.d_state, block.d_conv
    xz = h @ block.in_proj.weight.t()                                   # (b, L, 2·d_inner)
    x, z = xz[..., :d_inner], xz[..., d_inner:]
    length = h.shape[1]
    padded = F.pad(x, (0, 0, k - 1, 0))                                 # zeros before t = 0
    w = block.conv1d.weight[:, 0]                                       # (d_inner, k)
    conv = sum(padded[:, j:j + length] * w[:, j] for j in range(k)) + block.conv1d.bias
    x = F.silu(conv)
    dbl = x @ block.x_proj.weight.t()
    dt, B, C = dbl.split([block.dt_rank, n_state, n_state], -1)
    dt = dt @ block.dt_proj.weight.t()
    y = selective_scan_reference(x.transpose(1, 2), dt.transpose(1, 2), -torch.exp(block.A_log),
                                 B.transpose(1, 2), C.transpose(1, 2), block.D, z.transpose(1, 2),
                                 delta_bias=block.dt_proj.bias, delta_softplus=True)
    return y.transpose(1, 2) @ block.out_proj.weight.t()


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_block_forward_matches_the_written_out_math(backend):
    block = Mamba(32, scan_backend=backend).double()
    h = torch.randn(2, 77, 32, dtype=torch.float64)
    with torch.no_grad():
        out = block(h)
        expected = independent_forward(block, h)
    assert out.shape == h.shape
    assert torch.allclose(out, expected, rtol=0, atol=1e-12 * expected.abs().max())


def test_block_backends_agree_in_float32():
    block = Mamba(64, d_state=8)
    h = torch.randn(1, 300, 64)
    with torch.no_grad():
        outs = {b: Mamba.forward(_with_backend(block, b), h) for b in ("reference", "torch")}
    err = (outs["torch"] - outs["reference"]).abs().max() / outs["reference"].abs().max()
    assert err <= 1e-5


def _with_backend(block, backend):
    block.scan_backend = backend
    return block


def test_block_is_causal():
    """A change at token t must not change outputs before t (the scan and the conv are causal)."""
    block = Mamba(16).eval()
    h = torch.randn(1, 40, 16)
    h2 = h.clone()
    h2[:, 25:] += 1.0
    with torch.no_grad():
        a, b = block(h), block(h2)
    assert torch.equal(a[:, :25], b[:, :25]) and not torch.allclose(a[:, 25:], b[:, 25:])


def test_block_trains():
    block = Mamba(16, scan_backend="torch")
    h = torch.randn(2, 50, 16)
    loss = block(h).square().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())
    assert block.A_log.grad.abs().sum() > 0


# ------------------------------------------------------------------------------- parity with mamba-ssm (GPU)

mamba_ssm_on_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and importlib.util.find_spec("mamba_ssm")),
    reason="needs a CUDA GPU with mamba-ssm installed")


@mamba_ssm_on_gpu
@pytest.mark.parametrize("d_model,d_state,length", [(64, 16, 4096), (32, 8, 1000), (256, 16, 512)])
def test_block_matches_mamba_ssm_on_the_same_weights(d_model, d_state, length):
    from mamba_ssm.modules.mamba_simple import Mamba as OfficialMamba

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    official = OfficialMamba(d_model=d_model, d_state=d_state).cuda().eval()
    h = torch.randn(2, length, d_model, device="cuda")
    with torch.no_grad():
        expected = official(h)
        for backend in ("cuda", "torch"):
            ours = Mamba(d_model, d_state=d_state, scan_backend=backend).cuda().eval()
            ours.load_state_dict(official.state_dict())
            out = ours(h)
            err = ((out - expected).abs().max() / expected.abs().max()).item()
            assert err <= 1e-4, (backend, err)
