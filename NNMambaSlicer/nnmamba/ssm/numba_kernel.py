"""Optional compiled CPU selective scan (numba): the whole scan fused into one loop per group of channels.

Used automatically on CPU when ``numba`` is importable and no gradient is needed; numba installs as a wheel
on Linux, macOS and Windows, so nothing needs a compiler. One pass does the recurrence, the read-out, the D
skip and the silu(z) gate for a group of channels, the state in registers; softplus(Δ + bias) runs in PyTorch
first. LLVM vectorises the loop over the state dimension with ``exp2_nonpositive``, a 2**x it can inline
(degree-5 polynomial exact at 0, 2**k from the exponent bits; within 2e-7 relative).
``reverse`` scans from the last token to the first, which the token-flipped CSS passes need, without flipping
any tensor.

Compiled kernels are cached (``cache=True``) in a per-user cache folder (``~/.cache/nnmamba/numba`` or the
platform's equivalent, or ``$NUMBA_CACHE_DIR`` when set), never next to the installed package: that may be
read-only, shared by several users, or part of a signed application bundle.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import torch

from .common import check_shapes, prepare_delta, reversed_scan

MAX_STATE = 64   # d_state up to this runs in the kernel (Mamba uses 8 or 16)


@functools.cache
def numba_available():
    return importlib.util.find_spec("numba") is not None


def user_cache_dir():
    """``nnmamba/numba`` in the user's cache folder (XDG on Linux, ~/Library/Caches, %LOCALAPPDATA%)."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nnmamba" / "numba"


def _writable_folder(folder):
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


@functools.cache
def use_user_cache_dir():
    """Point numba's kernel cache at :func:`user_cache_dir` (or a private temporary folder when that cannot be
    written) unless $NUMBA_CACHE_DIR chose one; must run before the kernel module is imported. Returns the folder."""
    import numba

    if numba.config.CACHE_DIR:
        return Path(numba.config.CACHE_DIR)
    folder = user_cache_dir()
    if not _writable_folder(folder):
        tag = os.getuid() if hasattr(os, "getuid") else "user"
        folder = Path(tempfile.gettempdir()) / f"nnmamba-numba-{tag}"
        if not _writable_folder(folder):
            return None
    numba.config.CACHE_DIR = str(folder)
    return folder


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, reverse=False,
                         add_to=None):
    """Same contract as :func:`selective_scan_reference`, plus ``reverse`` and ``add_to`` (a float32 (b, d, L)
    contiguous tensor the result is added to, in place, and returned); CPU, no autograd, float32 inside.

    The kernel's exp assumes Δ·A ≤ 0 (always true for Mamba: Δ = softplus(·) ≥ 0, A = -exp(A_log) < 0);
    inputs that break this, or d_state > MAX_STATE, are handed to the chunked PyTorch scan.
    """
    check_shapes(u, delta, A, B, C)
    batch, dim, length = u.shape
    f32 = torch.float32
    A_ = A.detach().to(f32).contiguous()
    accumulate = add_to is not None and add_to.dtype == f32 and add_to.is_contiguous() \
        and tuple(add_to.shape) == (batch, dim, length) and u.dtype == f32
    if A_.numel() and (A_.max() > 0 or A_.shape[1] > MAX_STATE
                       or (not delta_softplus and delta.numel() and delta.min() < 0)):
        from .chunked import selective_scan_chunked

        y = reversed_scan(selective_scan_chunked, reverse, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return y if add_to is None else add_to.add_(y)
    delta = prepare_delta(delta.detach(), None if delta_bias is None else delta_bias.detach(), delta_softplus, f32)
    y = add_to if accumulate else torch.empty(batch, dim, length, dtype=f32)
    if y.numel():
        use_user_cache_dir()
        from ._numba_scan import fused_scan

        fused_scan(_as_array(u), _as_array(delta), A_.numpy(),
                   B.detach().to(f32).transpose(1, 2).contiguous().numpy(),   # (b, L, n): one cache line per step
                   C.detach().to(f32).transpose(1, 2).contiguous().numpy(),
                   _as_array(torch.zeros(dim) if D is None else D), _as_array(u if z is None else z),
                   z is not None, bool(reverse), accumulate, y.numpy())
    if accumulate:
        return y
    return y.to(u.dtype) if add_to is None else add_to.add_(y.to(add_to.dtype))


def _as_array(tensor):
    """A float32 numpy view (no copy when already float32 with unit stride along L)."""
    tensor = tensor.detach()
    if tensor.dtype != torch.float32:
        tensor = tensor.float()
    if tensor.stride(-1) != 1:
        tensor = tensor.contiguous()
    return tensor.numpy()
