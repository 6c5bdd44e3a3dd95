"""nnMambaEncoder: the classifier, in its current form and the 2024 form with ``mamba_seq`` (spec §3.3, §3.4)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import DoubleConv, make_res_layer
from .mamba_layer import MambaLayer, MambaSeq

CLS_VARIANTS = ("current", "mamba_seq")


class NNMambaEncoder(nn.Module):
    """Strided CNN encoder with one Mamba layer at the stem, pooled multi-scale features and an MLP head.

    ``variant="mamba_seq"`` is the 2024 version: the pooled features of the three stages are regrouped into
    7 tokens of width 2C and mixed by a small Mamba before the MLP. Any spatial size works (only pooling).
    """

    def __init__(self, in_ch=1, channels=32, blocks=3, number_classes=1, variant="current", scan_backend=None):
        super().__init__()
        if variant not in CLS_VARIANTS:
            raise ValueError(f"variant must be one of {CLS_VARIANTS}, not {variant!r}")
        self.variant = variant
        self.in_channels = in_ch
        self.channels = channels
        self.num_classes = number_classes
        c = channels
        self.in_conv = DoubleConv(in_ch, c, stride=2)
        self.mamba_layer_stem = MambaLayer(c, "stem", d_state=8, scan_backend=scan_backend)
        self.layer1 = make_res_layer(c, 2 * c, blocks, 2)
        self.layer2 = make_res_layer(2 * c, 4 * c, blocks, 2)
        self.layer3 = make_res_layer(4 * c, 8 * c, blocks, 2)
        self.pooling = nn.AdaptiveAvgPool3d((1, 1, 1))
        if variant == "mamba_seq":
            self.mamba_seq = MambaSeq(2 * c, d_state=8, d_conv=2, scan_backend=scan_backend)
        self.mlp = nn.Sequential(nn.Linear(14 * c, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, number_classes))

    def forward(self, x):
        c1 = self.in_conv(x)
        c1 = self.mamba_layer_stem(c1) + c1
        c2 = self.layer1(c1)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        pooled = [self.pooling(f).flatten(1) for f in (c2, c3, c4)]
        if self.variant == "mamba_seq":
            batch, width = pooled[0].shape
            # Channel 2c+j of stage 3 and 4c+j of stage 4 become element [c, j]: 1 + 2 + 4 = 7 tokens.
            grouped = torch.cat([p.reshape(batch, width, -1) for p in pooled], 2)
            features = self.mamba_seq(grouped).reshape(batch, -1)
        else:
            features = torch.cat(pooled, 1)
        return self.mlp(features)
