"""The Mamba layers that nnMamba puts beside its convolutions (spec §2.1, §4).

Every variant flattens a (B, C, D, H, W) map to C-order raster tokens with W fastest, so the sequence is
always spatial; the tokens stay channel-first (B, C, L), the layout the projections need, so nothing is
transposed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv1x1
from .mamba import Mamba, channels_first_matmul

VARIANTS = ("miccss", "simple", "stem")


class MambaLayer(nn.Module):
    """1×1 conv + BN + ReLU, then Mamba over the voxel raster.

    ``miccss``: the README network's layer: the CSS average of four weight-tied passes (as is, channels
    reversed, tokens reversed, both), added back to its input and followed by a second 1×1 conv + BN + ReLU.
    ``stem``: the classifier's stem layer: the same structure with a single pass (d_state 8 there).
    ``simple``: the nnU-Net training network's layer: one pass, no residual, no second conv.
    ``batch_passes``: run the token-reversed CSS passes in the same batch as the forward ones, by flipping
    ("auto": on CUDA, where one call measured 1.2-1.3x faster on an H200 at up to 4096 tokens and 0.9x at
    32768; on CPU the scan runs them backwards in place, 1.0-1.1x faster than batching).
    """

    def __init__(self, dim, variant="miccss", d_state=16, d_conv=4, expand=2, batch_passes="auto",
                 scan_backend=None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"MambaLayer variant must be one of {VARIANTS}, not {variant!r}")
        self.variant = variant
        self.batch_passes = batch_passes
        # Registration order matches the official state_dict: nin, nin2, norm2, norm, mamba.
        self.nin = conv1x1(dim, dim)
        if variant != "simple":
            self.nin2 = conv1x1(dim, dim)
            self.norm2 = nn.BatchNorm3d(dim)
            self.relu2 = nn.ReLU(inplace=True)
        self.norm = nn.BatchNorm3d(dim)
        self.relu = nn.ReLU(inplace=True)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend)

    def forward(self, x):
        act = self.relu(self.norm(self.nin(x)))
        tokens = act.flatten(2)                 # (B, C, L), token index d·H·W + h·W + w
        if self.variant == "miccss":
            weight, bias, y = self.css(tokens)
        else:
            mamba = self.mamba
            weight, bias, y = mamba.out_proj.weight, mamba.out_proj.bias, mamba.mix(mamba.project_in(tokens))
        if self.variant == "simple":
            return project_to_map(weight, bias, y, act)
        return self.relu2(self.norm2(self.nin2(project_to_map(weight, bias, y, act, add_like=True))))

    def css(self, tokens):
        """(P0 + P1 + P2 + P3) / 4: P1 channel-reversed, P2 token-reversed, P3 both, one shared Mamba M.

        Returns the output projection (weight, bias) and its input, so that the caller projects straight into
        the memory layout of the feature map. Computed without materialising any flipped input: reversing
        channels around M equals M with the columns of in_proj and the rows of out_proj reversed; reversing
        tokens commutes with both projections, so P2 and P3 are reverse-direction runs of the same projected
        sequences; and the four outputs share one out_proj by linearity:
        out = [W_out | flip(W_out)] / 4 · [y0 + y2 ; y1 + y3]. Equal to the official four separate passes up
        to float rounding (tested).
        """
        mamba = self.mamba
        batch, _, length = tokens.shape
        w_in, b_in, w_out, b_out = self._css_weights()
        xz = channels_first_matmul(w_in, tokens)          # (B, [x pass 0, x pass 1, z pass 0, z pass 1], L)
        if b_in is not None:
            xz = xz + b_in[:, None]
        # batch index = 2·b + pass; x and z each one contiguous block (for B = 1), so no copy before the conv
        x, z = (part.reshape(batch * 2, -1, length) for part in xz.chunk(2, dim=1))
        if self._batch_passes(tokens):
            y = mamba.mix_split(torch.cat([x, x.flip(-1)]), torch.cat([z, z.flip(-1)]))
            y = y[:batch * 2] + y[batch * 2:].flip(-1)
        else:
            y = mamba.mix_split(x, z)
            # without autograd the reverse run adds into y (the numba kernel writes there: no sum pass)
            y = y + mamba.mix_split(x, z, reverse=True) if torch.is_grad_enabled() else \
                mamba.mix_split(x, z, reverse=True, add_to=y)
        return w_out, b_out, y.reshape(batch, -1, length)

    def _css_weights(self):
        """The stacked projections of :meth:`css`; without autograd kept until a parameter changes."""
        mamba = self.mamba
        params = (mamba.in_proj.weight, mamba.in_proj.bias, mamba.out_proj.weight, mamba.out_proj.bias)
        if torch.is_grad_enabled():
            return _css_weights(*params)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params if p is not None)
        cached = self.__dict__.get("_css_cache")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_css_cache"] = (key, _css_weights(*params))
        return cached[1]

    def __getstate__(self):                   # deepcopy and pickle without the cache (it may hold inference tensors)
        state = self.__dict__.copy()
        state.pop("_css_cache", None)
        return state

    def _batch_passes(self, tokens):
        if self.batch_passes == "auto":
            return tokens.is_cuda
        return bool(self.batch_passes)


def _css_weights(w_in, b_in, w_out, b_out):
    """in_proj for the forward and channel-reversed passes, rows [x, x reversed, z, z reversed]; out_proj for
    [y0 + y2 ; y1 + y3] with the 1/4 of the average."""
    w_x, w_z = w_in.chunk(2)
    stacked_in = torch.cat([w_x, w_x.flip(1), w_z, w_z.flip(1)])
    bias_in = None if b_in is None else torch.cat([b.repeat(2) for b in b_in.chunk(2)])
    bias_out = None if b_out is None else (b_out + b_out.flip(0)) / 2
    return stacked_in, bias_in, torch.cat([w_out, w_out.flip(0)], 1) / 4, bias_out


def is_channels_last(x):
    return x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


def project_to_map(weight, bias, y, like, add_like=False):
    """weight (C, k) @ y (B, k, L) + bias [+ like], shaped as the feature map ``like`` and in its memory layout.

    For a channels-last map the product is computed token-major, so neither layout needs a copy; on the CPU
    without autograd it is written straight into the result and ``like`` is added by the same GEMM. With autograd
    the sums keep the order of the original network ((product + bias) + like), so training is bit for bit the same.
    """
    if is_channels_last(like):
        batch, channels, depth, height, width = like.shape
        needs_grad = torch.is_grad_enabled() and (weight.requires_grad or y.requires_grad or like.requires_grad)
        if needs_grad or like.device.type != "cpu" or weight.dtype != y.dtype:
            out = torch.stack([torch.mm(sample.t(), weight.t()) for sample in y])      # (B, L, C)
            out = out.reshape(batch, depth, height, width, channels).permute(0, 4, 1, 2, 3)
        else:
            out = torch.empty_like(like, dtype=y.dtype, memory_format=torch.channels_last_3d)
            tokens = out.permute(0, 2, 3, 4, 1).view(batch, -1, channels)               # (B, L, C) views
            summand = like.permute(0, 2, 3, 4, 1).reshape(batch, -1, channels) if add_like else None
            for i, sample in enumerate(y):
                if add_like:
                    torch.addmm(summand[i].to(y.dtype), sample.t(), weight.t(), out=tokens[i])
                else:
                    torch.mm(sample.t(), weight.t(), out=tokens[i])
            return out if bias is None else out + bias.view(1, -1, 1, 1, 1)
    else:
        out = channels_first_matmul(weight, y).reshape(like.shape)
    out = out if bias is None else out + bias.view(1, -1, 1, 1, 1)
    return out + like if add_like else out


class MambaSeq(nn.Module):
    """The 2024 classifier's channel-sequential head: ReLU, then Mamba over a short token sequence, plus input.

    The official ReLU is in place, so the residual it feeds sees the rectified input; this does the same.
    """

    def __init__(self, dim, d_state=8, d_conv=2, expand=2, scan_backend=None):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend)

    def forward(self, x):
        """(B, C, T) → (B, C, T)."""
        x = self.relu(x)
        return self.mamba.forward_channels_first(x) + x
