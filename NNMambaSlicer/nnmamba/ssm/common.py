"""Input preparation and output gating shared by the selective-scan back ends."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def needs_gradient(*tensors):
    """Whether autograd will need to differentiate through an op on these (optional) tensors."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def compute_dtype(tensor):
    """float64 stays float64; everything else is computed in float32, as mamba-ssm does."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def prepare_delta(delta, delta_bias, delta_softplus, dtype):
    """Δ in the compute dtype, with its bias added and softplus applied (threshold 20, as mamba-ssm)."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    return F.softplus(delta) if delta_softplus else delta


def prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus):
    """Everything cast to the compute dtype, Δ prepared."""
    check_shapes(u, delta, A, B, C)
    dtype = compute_dtype(u)
    return u.to(dtype), prepare_delta(delta, delta_bias, delta_softplus, dtype), A.to(dtype), B.to(dtype), C.to(dtype)


def gate_output(y, u, D, z):
    """y + D·u, gated by silu(z), in y's dtype."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def finish_output(y, u_original, u, D, z):
    return gate_output(y, u, D, z).to(u_original.dtype)


def check_shapes(u, delta, A, B, C):
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (batch, d, L); got {tuple(u.shape)} and {tuple(delta.shape)}")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (d={dim}, d_state); got {tuple(A.shape)}")
    expected = (batch, A.shape[1], length)
    for name, tensor in (("B", B), ("C", C)):
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{name} must be (batch, d_state, L) = {expected}; got {tuple(tensor.shape)}")


def reversed_scan(scan, reverse, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Run ``scan`` from the last token to the first (flip in, flip out) when ``reverse``; else as is."""
    if not reverse:
        return scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    flip = (lambda t: None if t is None else t.flip(-1))  # noqa: E731
    y = scan(flip(u), flip(delta), A, flip(B), flip(C), D=D, z=flip(z), delta_bias=delta_bias,
             delta_softplus=delta_softplus)
    return y.flip(-1)
