"""Selective scan behind one function, with interchangeable back ends chosen automatically and always reported.

Back ends: ``cuda`` (mamba-ssm kernels; CUDA tensors only), ``numba`` (optional compiled CPU kernel),
``torch`` (pure PyTorch chunked scan; any device, differentiable) and ``reference`` (sequential loop, for tests).
Override with the ``backend`` argument or the ``NNMAMBA_SCAN_BACKEND`` environment variable.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch

from .chunked import selective_scan_chunked
from .common import needs_gradient, reversed_scan
from .cuda import cuda_scan_kernel, selective_scan_cuda
from .numba_kernel import numba_available, selective_scan_numba
from .reference import selective_scan_reference

BACKENDS = ("cuda", "numba", "torch", "reference")
ENV_VAR = "NNMAMBA_SCAN_BACKEND"

# Back ends without a native reverse scan; numba has one and is called directly.
_FORWARD_ONLY = {
    "cuda": selective_scan_cuda,
    "torch": selective_scan_chunked,
    "reference": selective_scan_reference,
}


class ScanChoice(NamedTuple):
    backend: str
    reason: str


_last_choice: Optional[ScanChoice] = None


def requested_backend(backend=None):
    """The back end asked for by argument, else by environment variable, else 'auto'."""
    name = (backend or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name != "auto" and name not in BACKENDS:
        source = "argument" if backend else f"environment variable {ENV_VAR}"
        raise ValueError(f"Unknown selective-scan back end {name!r} (from the {source}); "
                         f"choose one of: auto, {', '.join(BACKENDS)}.")
    return name


def choose_backend(device="cpu", backend=None, needs_grad=False, dtype=torch.float32):
    """Decide which back end runs for tensors on ``device``, and say why."""
    device = torch.device(device)
    name = requested_backend(backend)
    if name != "auto":
        problem = _unusable_reason(name, device, needs_grad, dtype)
        if problem:
            raise RuntimeError(f"Selective-scan back end {name!r} was requested but {problem}.")
        return ScanChoice(name, "requested explicitly")
    if device.type == "cuda":
        kernel, why = cuda_scan_kernel()
        if kernel is not None and dtype != torch.float64:
            return ScanChoice("cuda", f"CUDA tensors and {why}")
        return ScanChoice("torch", f"CUDA tensors but {why}; pure-PyTorch scan on the GPU")
    if device.type == "cpu" and not _unusable_reason("numba", device, needs_grad, dtype):
        return ScanChoice("numba", "CPU tensors and numba installed (compiled kernel)")
    if device.type == "cpu" and numba_available():
        return ScanChoice("torch", "numba kernel not usable here (gradient needed or float64); chunked PyTorch scan")
    return ScanChoice("torch", f"{device.type.upper()} tensors; chunked pure-PyTorch scan")


def _unusable_reason(name, device, needs_grad, dtype):
    if name == "cuda":
        kernel, why = cuda_scan_kernel()
        if kernel is None:
            return why
        if device.type != "cuda":
            return "the tensors are not on a CUDA device"
        if dtype == torch.float64:
            return "the mamba-ssm kernels have no float64 version"
    if name == "numba":
        if not numba_available():
            return "numba is not installed (pip install numba)"
        if device.type != "cpu":
            return "it runs on CPU tensors only"
        if needs_grad:
            return "it has no gradient (training uses 'torch')"
        if dtype == torch.float64:
            return "it computes in float32 only"
    return None


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, backend=None,
                   reverse=False, add_to=None):
    """Mamba's selective scan (mamba-ssm ``selective_scan_fn`` semantics) on the best available back end.

    ``reverse=True`` scans from the last token to the first: the same as flipping every input along L and
    flipping the output back, which is how back ends without a native reverse scan run it. ``add_to``: add the
    result to this tensor in place and return it (the numba kernel writes into it directly; no autograd).
    """
    global _last_choice
    choice = choose_backend(u.device, backend, needs_gradient(u, delta, A, B, C, D, z, delta_bias), u.dtype)
    _last_choice = choice
    if choice.backend == "numba":
        return selective_scan_numba(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse=reverse,
                                    add_to=add_to)
    y = reversed_scan(_FORWARD_ONLY[choice.backend], reverse, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return y if add_to is None else add_to.add_(y)


def last_scan_choice():
    """The back end the most recent :func:`selective_scan` call used, and why (None before the first call)."""
    return _last_choice


__all__ = ["BACKENDS", "ENV_VAR", "ScanChoice", "choose_backend", "last_scan_choice", "requested_backend",
           "selective_scan", "selective_scan_chunked", "selective_scan_numba", "selective_scan_reference"]
