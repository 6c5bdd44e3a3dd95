"""The mamba-ssm / causal-conv1d CUDA kernels, when they are installed (``pip install -e ".[cuda]"``)."""

from __future__ import annotations

import functools


@functools.cache
def cuda_scan_kernel():
    """mamba-ssm's ``selective_scan_fn``, or None with the reason it could not be imported."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as error:  # ImportError, or mamba-ssm's own failure without its compiled kernels
        return None, f"mamba-ssm kernels not importable ({type(error).__name__}: {error})"
    return selective_scan_fn, "mamba-ssm kernels importable"


@functools.cache
def cuda_conv_kernel():
    """causal-conv1d's ``causal_conv1d_fn``, or None with the reason."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception as error:
        return None, f"causal-conv1d not importable ({type(error).__name__}: {error})"
    return causal_conv1d_fn, "causal-conv1d importable"


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True):
    kernel, reason = cuda_scan_kernel()
    if kernel is None:
        raise RuntimeError(f"The 'cuda' scan back end was requested but {reason}. Install the extra: pip install -e "
                           "'.[cuda]' in the nnmamba checkout on a machine with CUDA, or choose 'torch'.")
    if not u.is_cuda:
        raise RuntimeError("The 'cuda' scan back end needs CUDA tensors; move the model to a GPU or choose 'torch'.")
    return kernel(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
                  D, None if z is None else z.contiguous(), delta_bias, delta_softplus)
