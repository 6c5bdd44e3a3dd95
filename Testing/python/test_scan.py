"""The selective-scan back ends agree with the sequential reference, and the choice among them is explicit."""

import importlib.util
import itertools

import pytest
import torch

from nnmamba import ssm
from nnmamba.ssm import selective_scan_chunked, selective_scan_numba, selective_scan_reference

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")


def scan_inputs(batch, dim, length, n_state, dtype=torch.float32, delta_scale=None, seed=0):
    """Realistic magnitudes (cpu-scan.md §3); ``delta_scale`` pins Δ near one value instead."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=g, dtype=dtype)
    z = torch.randn(batch, dim, length, generator=g, dtype=dtype)
    B = torch.randn(batch, n_state, length, generator=g, dtype=dtype)
    C = torch.randn(batch, n_state, length, generator=g, dtype=dtype)
    A = -torch.exp(torch.log(torch.arange(1, n_state + 1, dtype=dtype)).repeat(dim, 1)
                   + 0.1 * torch.randn(dim, n_state, generator=g, dtype=dtype))
    D = torch.randn(dim, generator=g, dtype=dtype)
    if delta_scale is None:
        delta = 0.5 * torch.randn(batch, dim, length, generator=g, dtype=dtype)
        dt0 = torch.exp(torch.empty(dim, dtype=dtype).uniform_(-6.9, -2.3, generator=g))
        bias = dt0 + torch.log(-torch.expm1(-dt0))
        softplus = True
    else:  # Δ used as given (no softplus), spread ±20% around delta_scale
        delta = delta_scale * (1 + 0.2 * torch.rand(batch, dim, length, generator=g, dtype=dtype))
        bias, softplus = None, False
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias, delta_softplus=softplus)


def relative_error(y, ref):
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


SHAPES = [  # (batch, d, L, N): L = 1, L below/at/above/not a multiple of the chunk, batch > 1, d_state 8 and 16
    (1, 4, 1, 16), (1, 8, 31, 8), (2, 8, 32, 16), (1, 16, 33, 8), (3, 6, 100, 16), (2, 16, 257, 8),
    (1, 32, 1000, 16),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_d{}_L{}_N{}".format(*s))
@pytest.mark.parametrize("delta_scale", [None, 1e-4, 10.0], ids=["realistic", "delta1e-4", "delta10"])
def test_torch_scan_matches_reference_float32(shape, delta_scale):
    args = scan_inputs(*shape, delta_scale=delta_scale)
    ref = selective_scan_reference(**args)
    out = selective_scan_chunked(**args)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert relative_error(out, ref) <= 1e-5


@pytest.mark.parametrize("shape", SHAPES[1:5], ids=lambda s: "b{}_d{}_L{}_N{}".format(*s))
def test_torch_scan_matches_reference_float64(shape):
    args = scan_inputs(*shape, dtype=torch.float64)
    assert relative_error(selective_scan_chunked(**args), selective_scan_reference(**args)) <= 1e-12


def test_small_chunks_and_segments_exercise_the_carry():
    """Force many chunks and segments so that the cross-chunk and cross-segment carries do the work."""
    args = scan_inputs(2, 4, 301, 8, dtype=torch.float64)
    ref = selective_scan_reference(**args)
    for chunk, segment in itertools.product((1, 4, 7), (1, 64, 10**9)):
        out = selective_scan_chunked(**args, chunk=chunk, segment_elements=segment)
        assert relative_error(out, ref) <= 1e-12, (chunk, segment)


def test_without_optional_terms():
    args = scan_inputs(2, 8, 70, 16)
    args.update(D=None, z=None, delta_bias=None)
    assert relative_error(selective_scan_chunked(**args), selective_scan_reference(**args)) <= 1e-5


def test_torch_scan_gradients_match_reference():
    args = scan_inputs(2, 4, 45, 8, dtype=torch.float64)
    leaves = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    grads = []
    for fn in (selective_scan_reference, selective_scan_chunked):
        inputs = {k: (v.clone().requires_grad_(True) if k in leaves else v) for k, v in args.items()}
        out = fn(**inputs, **({"chunk": 8} if fn is selective_scan_chunked else {}))
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads.append([inputs[k].grad for k in leaves])
    for name, g_ref, g in zip(leaves, *grads):
        assert relative_error(g, g_ref) <= 1e-10, name


def test_half_precision_inputs_compute_in_float32():
    args = scan_inputs(1, 8, 64, 16)
    ref = selective_scan_reference(**args)
    half = {k: (v.to(torch.bfloat16) if torch.is_tensor(v) else v) for k, v in args.items()}
    out = selective_scan_chunked(**half)
    assert out.dtype == torch.bfloat16
    assert relative_error(out.float(), ref) < 0.05


@needs_numba
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_d{}_L{}_N{}".format(*s))
@pytest.mark.parametrize("delta_scale", [None, 1e-4, 10.0], ids=["realistic", "delta1e-4", "delta10"])
def test_numba_scan_matches_reference(shape, delta_scale):
    args = scan_inputs(*shape, delta_scale=delta_scale)
    assert relative_error(selective_scan_numba(**args), selective_scan_reference(**args)) <= 1e-5


@pytest.mark.parametrize("backend", ["numba", "torch", "reference"])
@pytest.mark.parametrize("reverse", [False, True])
def test_a_scan_added_to_an_output_equals_the_sum(backend, reverse):
    # the two directions of a CSS layer share one output: the second adds into the first (in the numba kernel
    # itself), and large z in the gate must not overflow the kernel's sigmoid
    if backend == "numba" and importlib.util.find_spec("numba") is None:
        pytest.skip("numba not installed")
    args = scan_inputs(2, 6, 300, 16)
    args["z"] = args["z"] * 40
    first = torch.randn(2, 6, 300)
    expected = first + ssm.selective_scan(**args, backend=backend, reverse=reverse)
    out = first.clone()
    returned = ssm.selective_scan(**args, backend=backend, reverse=reverse, add_to=out)
    assert returned is out and torch.isfinite(out).all()
    assert relative_error(out, expected) <= 1e-6
    reference = first + ssm.selective_scan(**args, backend="reference", reverse=reverse)
    assert relative_error(out, reference) <= 1e-5


def test_shape_errors_are_explained():
    args = scan_inputs(1, 4, 10, 8)
    args["B"] = args["B"][:, :, :5]
    with pytest.raises(ValueError, match=r"B must be \(batch, d_state, L\)"):
        ssm.selective_scan(**args)


# ----------------------------------------------------------------------------------------- back-end choice

def test_argument_overrides_and_is_reported():
    args = scan_inputs(1, 4, 10, 8)
    ssm.selective_scan(**args, backend="reference")
    assert ssm.last_scan_choice() == ssm.ScanChoice("reference", "requested explicitly")
    ssm.selective_scan(**args, backend="torch")
    assert ssm.last_scan_choice().backend == "torch"


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setenv(ssm.ENV_VAR, "reference")
    ssm.selective_scan(**scan_inputs(1, 4, 10, 8))
    assert ssm.last_scan_choice().backend == "reference"


def test_unknown_backend_names_the_choices(monkeypatch):
    monkeypatch.setenv(ssm.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match="environment variable NNMAMBA_SCAN_BACKEND.*auto, cuda, numba, torch"):
        ssm.selective_scan(**scan_inputs(1, 4, 10, 8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_backend_on_cpu_tensors_is_refused_with_reason():
    with pytest.raises(RuntimeError, match="'cuda' was requested but"):
        ssm.selective_scan(**scan_inputs(1, 4, 10, 8), backend="cuda")


def test_auto_choice_on_cpu():
    choice = ssm.choose_backend("cpu")
    expected = "numba" if importlib.util.find_spec("numba") else "torch"
    assert choice.backend == expected and choice.reason


def test_gradient_or_float64_never_goes_to_numba():
    assert ssm.choose_backend("cpu", needs_grad=True).backend == "torch"
    assert ssm.choose_backend("cpu", dtype=torch.float64).backend == "torch"
    args = scan_inputs(1, 4, 10, 8)
    args["u"].requires_grad_(True)
    ssm.selective_scan(**args).sum().backward()
    assert ssm.last_scan_choice().backend == "torch" and args["u"].grad is not None


@needs_numba
def test_numba_refuses_gradients_when_forced():
    with pytest.raises(RuntimeError, match="no gradient"):
        ssm.choose_backend("cpu", backend="numba", needs_grad=True)


@pytest.mark.parametrize("backend", ["reference", "torch", pytest.param("numba", marks=needs_numba)])
def test_reverse_scan_equals_flipped_scan(backend):
    args = scan_inputs(2, 8, 45, 16)
    flipped = {k: (v.flip(-1) if k in ("u", "delta", "B", "C", "z") else v) for k, v in args.items()}
    expected = selective_scan_reference(**flipped).flip(-1)
    assert relative_error(ssm.selective_scan(**args, backend=backend, reverse=True), expected) <= 1e-5


@pytest.mark.parametrize("n_chunks", [1, 2, 5, 8, 13])
def test_log_depth_chunk_carry_equals_the_recurrence(n_chunks):
    """The GPU's chunk carry (log-depth scan) against the CPU's (plain recurrence)."""
    from nnmamba.ssm import chunked

    g = torch.Generator().manual_seed(n_chunks)
    P = torch.rand(2, n_chunks, 3, 4, generator=g, dtype=torch.float64)
    E = torch.randn(2, n_chunks, 3, 4, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    expected = chunked._chunk_entries(P, E, h0, log_depth=False)
    assert torch.allclose(chunked._chunk_entries(P, E, h0, log_depth=True), expected, atol=1e-12)
