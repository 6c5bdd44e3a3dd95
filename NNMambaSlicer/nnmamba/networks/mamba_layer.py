"""The Mamba layers that nnMamba puts beside its convolutions (spec §2.1, §4).

Every variant flattens a (B, C, D, H, W) map to C-order raster tokens (B, L, C) with W fastest, so the
sequence is always spatial.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv1x1
from .mamba import Mamba

VARIANTS = ("miccss", "simple", "stem")


def to_tokens(x):
    """(B, C, D, H, W) → (B, L, C), token index d·H·W + h·W + w."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(tokens, like):
    """Inverse of :func:`to_tokens` for a map shaped like ``like``."""
    return tokens.transpose(1, 2).reshape(like.shape)


class MambaLayer(nn.Module):
    """1×1 conv + BN + ReLU, then Mamba over the voxel raster.

    ``miccss``: the README network's layer: the CSS average of four weight-tied passes (as is, channels
    reversed, tokens reversed, both), added back to its input and followed by a second 1×1 conv + BN + ReLU.
    ``stem``: the classifier's stem layer: the same structure with a single pass (d_state 8 there).
    ``simple``: the nnU-Net training network's layer: one pass, no residual, no second conv.
    ``batch_passes``: run the four CSS passes as one batch-4 call ("auto": on CUDA only, where it is faster;
    on CPU four batch-1 calls measured faster).
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
        tokens = to_tokens(act)
        if self.variant == "miccss":
            mixed = self.css(tokens)
        else:
            mixed = self.mamba(tokens)
        mixed = from_tokens(mixed, act)
        if self.variant == "simple":
            return mixed
        return self.relu2(self.norm2(self.nin2(mixed + act)))

    def css(self, tokens):
        """(P0 + P1 + P2 + P3) / 4 with P1 channel-reversed, P2 token-reversed, P3 both (official order)."""
        flips = ((), (2,), (1,), (1, 2))
        if self._batch_passes(tokens):
            batch = tokens.shape[0]
            views = torch.cat([tokens.flip(f) if f else tokens for f in flips], 0)
            out = self.mamba(views)
            parts = [out[i * batch:(i + 1) * batch] for i in range(4)]
        else:
            parts = [self.mamba(tokens.flip(f) if f else tokens) for f in flips]
        total = parts[0]
        for part, f in zip(parts[1:], flips[1:]):
            total = total + part.flip(f)
        return total / 4

    def _batch_passes(self, tokens):
        if self.batch_passes == "auto":
            return tokens.is_cuda
        return bool(self.batch_passes)


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
        return self.mamba(x.transpose(1, 2)).transpose(1, 2) + x
