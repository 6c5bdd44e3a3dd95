"""Mamba v1 block with mamba-ssm's parameter names and shapes, so official checkpoints load unchanged.

The selective scan is pluggable (:mod:`nnmamba.ssm`): mamba-ssm's CUDA kernels where present, a compiled
numba kernel or a fast pure-PyTorch scan everywhere else. Internally the block works channel-first
(batch, channels, L), the layout of a flattened 3D feature map, so nnMamba's layers need no transposes.
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
        """(batch, L, d_model) → (batch, L, d_model), as mamba-ssm's block."""
        return self.forward_channels_first(hidden_states.transpose(1, 2)).transpose(1, 2)

    def forward_channels_first(self, x):
        """(batch, d_model, L) → (batch, d_model, L): the layout of a flattened feature map, no transposes."""
        return self.project_out(self.mix(self.project_in(x)))

    def project_in(self, x):
        """(b, d_model, L) → xz (b, 2·d_inner, L)."""
        return _linear_channels_first(self.in_proj.weight, self.in_proj.bias, x)

    def project_out(self, y):
        """(b, d_inner, L) → (b, d_model, L)."""
        return _linear_channels_first(self.out_proj.weight, self.out_proj.bias, y)

    def mix(self, xz, reverse=False):
        """Everything between the two projections: causal conv + SiLU, x/dt projections, the selective scan
        gated by silu(z). (b, 2·d_inner, L) → (b, d_inner, L). ``reverse`` runs it from the last token to the
        first, the same as flipping xz along L before and the result after.
        """
        x, z = xz.chunk(2, dim=1)
        return self.mix_split(x, z, reverse)

    def mix_split(self, x, z, reverse=False, add_to=None):
        """:meth:`mix` with the two halves of xz given apart, (b, d_inner, L) each; ``add_to``: see
        :func:`~nnmamba.ssm.selective_scan` (inference only)."""
        x = self._causal_conv(x, reverse)
        x_dbl = channels_first_matmul(self.x_proj.weight, x)          # (b, R + 2N, L)
        dt_rank, n = self.dt_rank, self.d_state
        dt = channels_first_matmul(self.dt_proj.weight, x_dbl[:, :dt_rank])   # (b, d_inner, L); bias: in the scan
        B, C = x_dbl[:, dt_rank:dt_rank + n], x_dbl[:, dt_rank + n:]
        return selective_scan(x, dt, self._state_matrix(), B, C, _at_least_fp32(self.D), z=z,
                              delta_bias=_at_least_fp32(self.dt_proj.bias), delta_softplus=True,
                              backend=self.scan_backend, reverse=reverse, add_to=add_to)

    def _state_matrix(self):
        """A = -exp(A_log); kept between calls made without autograd (one op fewer per pass)."""
        if torch.is_grad_enabled():
            return -torch.exp(_at_least_fp32(self.A_log))
        key = (self.A_log.data_ptr(), self.A_log._version, self.A_log.dtype, self.A_log.device)
        cached = self.__dict__.get("_A_cache")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_A_cache"] = (key, -torch.exp(_at_least_fp32(self.A_log)))
        return cached[1]

    def __getstate__(self):                   # deepcopy and pickle without the cache (it may be an inference tensor)
        state = self.__dict__.copy()
        state.pop("_A_cache", None)
        return state

    def _causal_conv(self, x, reverse=False):
        """Depthwise causal conv over L, then SiLU (causal-conv1d kernel on CUDA when installed).

        Reversed, it looks ahead instead: the kernel flipped, the output taken from the other end.
        """
        k = self.d_conv
        if x.is_cuda and requested_backend(self.scan_backend) in ("auto", "cuda"):
            kernel, _ = cuda_conv_kernel()
            if kernel is not None:
                run = lambda v: kernel(v.contiguous(), self.conv1d.weight.squeeze(1), self.conv1d.bias,  # noqa: E731
                                       activation="silu")
                return run(x.flip(-1)).flip(-1) if reverse else run(x)
        weight = self.conv1d.weight.flip(-1) if reverse else self.conv1d.weight
        if torch.is_grad_enabled():
            # Zero-pad on the side the conv must not see past (the original computation: training stays bit for
            # bit what it was).
            padded = F.pad(x, (0, k - 1) if reverse else (k - 1, 0))
            return F.silu(F.conv1d(padded, weight, self.conv1d.bias, groups=self.d_inner))
        # The conv zero-pads both ends; the L outputs that see no token past (or, reversed, before) their own
        # are kept, and SiLU writes them contiguous: one pass fewer than padding a copy of x first.
        full = F.conv1d(x, weight, self.conv1d.bias, padding=k - 1, groups=self.d_inner)     # (b, d, L + k - 1)
        return F.silu(full[..., k - 1:] if reverse else full[..., :x.shape[-1]])


def channels_first_matmul(weight, x):
    """weight (m, k) @ x (b, k, L) → (b, m, L). On CPU without autograd one batched GEMM with the weight
    broadcast by a zero stride: PyTorch's broadcast matmul would first copy x into a transposed layout, and one
    GEMM per sample is one more parallel region per sample (each costs a scheduling delay on a busy machine)."""
    needs_grad = torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)
    if x.dim() == 2 or x.device.type != "cpu" or needs_grad or weight.dtype != x.dtype:
        return torch.matmul(weight, x)
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x)


def _linear_channels_first(weight, bias, x):
    out = channels_first_matmul(weight, x)
    return out if bias is None else out + bias.to(out.dtype)[:, None]


def _at_least_fp32(tensor):
    """The scan's own parameters stay in float32 under half precision (as in mamba-ssm), float64 stays."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()
