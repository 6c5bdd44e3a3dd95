"""The selective scan as a plain sequential recurrence: slow, obviously right, the yardstick for the fast ones."""

from __future__ import annotations

import torch

from .common import finish_output, prepare_inputs


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True):
    """Run h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t, y_t = C_t·h_t + D u_t one step at a time.

    Shapes follow mamba-ssm's ``selective_scan_fn``: u, delta, z (batch, d, L); A (d, n); B, C (batch, n, L);
    D, delta_bias (d,). Computes in float32 (float64 stays float64) and returns the dtype of ``u``.
    """
    u_, delta_, A_, B_, C_ = prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u_.shape
    decay = torch.exp(torch.einsum("bdl,dn->bdln", delta_, A_))
    drive = torch.einsum("bdl,bnl->bdln", delta_ * u_, B_)
    state = u_.new_zeros(batch, dim, A_.shape[1])
    outputs = []
    for t in range(length):
        state = decay[:, :, t] * state + drive[:, :, t]
        outputs.append(torch.einsum("bdn,bn->bd", state, C_[:, :, t]))
    y = torch.stack(outputs, dim=2) if outputs else u_.new_zeros(batch, dim, 0)
    return finish_output(y, u, u_, D, z)
