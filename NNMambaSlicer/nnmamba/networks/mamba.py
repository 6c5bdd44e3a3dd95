"""Mamba v1 block with mamba-ssm's parameter names and shapes, so official checkpoints load unchanged.

The selective scan is pluggable (:mod:`nnmamba.ssm`): mamba-ssm's CUDA kernels where present, a fast
pure-PyTorch scan everywhere else.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ssm import requested_backend, selective_scan
from ..ssm.cuda import cuda_conv_kernel


class Mamba(nn.Module):
    """Selective state-space block: in_proj → causal depthwise conv + SiLU → x_proj/dt_proj → scan → out_proj."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1,
                 dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False,
                 scan_backend=None):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_backend = scan_backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        # S4D-real initialisation: A = -(1, 2, ..., N) for every channel, stored as its log.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self._init_dt(dt_min, dt_max, dt_init, dt_scale, dt_init_floor)

    @torch.no_grad()
    def _init_dt(self, dt_min, dt_max, dt_init, dt_scale, dt_init_floor):
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', not {dt_init!r}")
        # Δ starts log-uniform in [dt_min, dt_max]; the bias is its softplus inverse.
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

    def forward(self, hidden_states):
        """(batch, L, d_model) → (batch, L, d_model)."""
        batch, length, _ = hidden_states.shape
        xz = torch.matmul(self.in_proj.weight, hidden_states.transpose(1, 2))   # (b, 2·d_inner, L)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(xz.dtype)[:, None]
        x, z = xz.chunk(2, dim=1)
        x = self._causal_conv(x, length)
        x_dbl = F.linear(x.transpose(1, 2).reshape(batch * length, self.d_inner), self.x_proj.weight)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.t()).reshape(self.d_inner, batch, length).transpose(0, 1)
        B = B.reshape(batch, length, self.d_state).transpose(1, 2).contiguous()
        C = C.reshape(batch, length, self.d_state).transpose(1, 2).contiguous()
        y = selective_scan(x, dt, -torch.exp(_at_least_fp32(self.A_log)), B, C, _at_least_fp32(self.D), z=z,
                           delta_bias=_at_least_fp32(self.dt_proj.bias), delta_softplus=True,
                           backend=self.scan_backend)
        return F.linear(y.transpose(1, 2), self.out_proj.weight, self.out_proj.bias)

    def _causal_conv(self, x, length):
        """Depthwise causal conv over L, then SiLU (causal-conv1d kernel on CUDA when installed)."""
        if x.is_cuda and requested_backend(self.scan_backend) in ("auto", "cuda"):
            kernel, _ = cuda_conv_kernel()
            if kernel is not None:
                return kernel(x.contiguous(), self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        return F.silu(self.conv1d(x)[..., :length])


def _at_least_fp32(tensor):
    """The scan's own parameters stay in float32 under half precision (as in mamba-ssm), float64 stays."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()
