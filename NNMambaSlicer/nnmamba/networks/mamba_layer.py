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
        mixed = project_to_map(weight, bias, y, act)
        if self.variant == "simple":
            return mixed
        return self.relu2(self.norm2(self.nin2(mixed + act)))

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
        w_in = mamba.in_proj.weight
        xz = channels_first_matmul(torch.cat([w_in, w_in.flip(1)]), tokens)   # (B, 2 passes · 2·d_inner, L)
        if mamba.in_proj.bias is not None:
            xz = xz + mamba.in_proj.bias.repeat(2)[:, None]
        xz = xz.reshape(batch * 2, -1, length)                                # batch index = 2·b + pass
        if self._batch_passes(tokens):
            y = mamba.mix(torch.cat([xz, xz.flip(-1)]))
            y = y[:batch * 2] + y[batch * 2:].flip(-1)
        else:
            y = mamba.mix(xz) + mamba.mix(xz, reverse=True)
        w_out, b_out = mamba.out_proj.weight, mamba.out_proj.bias
        bias = None if b_out is None else (b_out + b_out.flip(0)) / 2
        return torch.cat([w_out, w_out.flip(0)], 1) / 4, bias, y.reshape(batch, -1, length)

    def _batch_passes(self, tokens):
        if self.batch_passes == "auto":
            return tokens.is_cuda
        return bool(self.batch_passes)


def is_channels_last(x):
    return x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


def project_to_map(weight, bias, y, like):
    """weight (C, k) @ y (B, k, L) + bias, shaped as the feature map ``like`` and in its memory layout.

    For a channels-last map the product is computed token-major, so neither layout needs a copy.
    """
    if is_channels_last(like):
        batch, channels, depth, height, width = like.shape
        out = torch.stack([torch.mm(sample.t(), weight.t()) for sample in y])      # (B, L, C)
        out = out.reshape(batch, depth, height, width, channels).permute(0, 4, 1, 2, 3)
    else:
        out = channels_first_matmul(weight, y).reshape(like.shape)
    return out if bias is None else out + bias.view(1, -1, 1, 1, 1)


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
