"""Optional compiled CPU selective scan (numba): one fused loop, the state kept in registers.

Used automatically on CPU when ``numba`` is importable and no gradient is needed; it installs as a wheel on
Linux, macOS and Windows, so nothing needs a compiler. Without numba the pure-PyTorch scan runs instead.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from .common import finish_output, prepare_inputs

_kernel = None


def numba_available():
    return importlib.util.find_spec("numba") is not None


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True):
    """Same contract as :func:`selective_scan_reference`; CPU tensors only, no autograd."""
    u_, delta_, A_, B_, C_ = prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    kernel = _compiled_kernel()
    dtype = u_.dtype
    y = torch.empty_like(u_)
    kernel(
        delta_.detach().contiguous().numpy(),
        (delta_ * u_).detach().contiguous().numpy(),
        A_.detach().contiguous().numpy(),
        B_.detach().transpose(1, 2).contiguous().numpy(),   # (b, L, n): one cache line per step
        C_.detach().transpose(1, 2).contiguous().numpy(),
        y.numpy(),
    )
    assert y.dtype == dtype
    return finish_output(y, u, u_, D, z)


def _compiled_kernel():
    global _kernel
    if _kernel is None:
        _kernel = _build_kernel()
    return _kernel


def _build_kernel():
    import numba

    @numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def scan(delta, drive, A, B, C, out):
        batch, dim, length = delta.shape
        n_state = A.shape[1]
        for job in numba.prange(batch * dim):
            b = job // dim
            d = job % dim
            h = np.zeros(n_state, dtype=delta.dtype)
            a_row = A[d]
            for t in range(length):
                dt = delta[b, d, t]
                x = drive[b, d, t]
                acc = 0.0
                for n in range(n_state):
                    h[n] = np.exp(dt * a_row[n]) * h[n] + x * B[b, t, n]
                    acc += h[n] * C[b, t, n]
                out[b, d, t] = acc

    return scan
