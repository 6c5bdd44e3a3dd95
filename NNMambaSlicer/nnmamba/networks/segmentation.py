"""nnMambaSeg: the segmentation / landmark network in both published variants (spec §3.1, §3.2)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import ChannelAttention, DoubleConv, make_res_layer
from .mamba_layer import MambaLayer

SEG_VARIANTS = ("miccss", "nnunet")
DIVISOR = 16


class NNMambaSeg(nn.Module):
    """U-shaped 3D CNN with Mamba layers in its three encoder stages.

    ``variant="miccss"``: ``nnMamba.py`` of the official README and lhaof/LFC (CSS four-pass Mamba layers,
    one output). ``variant="nnunet"``: the network the nnU-Net trainers build (single-pass Mamba layers and
    deep-supervision heads ``ds1..ds3_cls_conv``, returned while ``do_ds`` is true).
    Like the official code, the head is a DoubleConv, so every output passes BN and ReLU (≥ 0).
    """

    def __init__(self, in_ch=1, channels=32, blocks=3, number_classes=6, variant="miccss", batch_passes="auto",
                 scan_backend=None):
        super().__init__()
        if variant not in SEG_VARIANTS:
            raise ValueError(f"variant must be one of {SEG_VARIANTS}, not {variant!r}")
        self.variant = variant
        self.in_channels = in_ch
        self.channels = channels
        self.num_classes = number_classes
        c = channels
        layer_kind = "miccss" if variant == "miccss" else "simple"

        def mamba_layer(dim):
            return MambaLayer(dim, layer_kind, batch_passes=batch_passes, scan_backend=scan_backend)

        self.in_conv = DoubleConv(in_ch, c, stride=2)
        self.att1 = ChannelAttention(c)
        self.layer1 = make_res_layer(c, 2 * c, blocks, 2, mamba_layer(2 * c))
        self.att2 = ChannelAttention(2 * c)
        self.layer2 = make_res_layer(2 * c, 4 * c, blocks, 2, mamba_layer(4 * c))
        self.att3 = ChannelAttention(4 * c)
        self.layer3 = make_res_layer(4 * c, 8 * c, blocks, 2, mamba_layer(8 * c))
        self.pooling = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.upsample = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.conv5 = DoubleConv(12 * c, 4 * c)
        self.conv6 = DoubleConv(6 * c, 2 * c)
        self.conv7 = DoubleConv(3 * c, c)
        self.conv8 = DoubleConv(c, number_classes)
        if variant == "nnunet":
            self.do_ds = True
            self.ds1_cls_conv = nn.Conv3d(c, number_classes, kernel_size=1)
            self.ds2_cls_conv = nn.Conv3d(2 * c, number_classes, kernel_size=1)
            self.ds3_cls_conv = nn.Conv3d(4 * c, number_classes, kernel_size=1)

    def forward(self, x):
        check_spatial_size(x.shape[2:])
        c1 = self.in_conv(x)
        s1 = self._gate(self.att1, c1)
        c2 = self.layer1(c1)
        s2 = self._gate(self.att2, c2)
        c3 = self.layer2(c2)
        s3 = self._gate(self.att3, c3)
        c4 = self.layer3(c3)
        c5 = self.conv5(torch.cat([self.upsample(c4), c3 * s3], 1))
        c6 = self.conv6(torch.cat([self.upsample(c5), c2 * s2], 1))
        c7 = self.conv7(torch.cat([self.upsample(c6), c1 * s1], 1))
        c8 = self.conv8(self.upsample(c7))
        if self.variant == "nnunet" and self.do_ds:
            return [c8, self.ds1_cls_conv(c7), self.ds2_cls_conv(c6), self.ds3_cls_conv(c5)]
        return c8

    def _gate(self, attention, features):
        return attention(self.pooling(features).flatten(1))


def nearest_valid_sizes(size, divisor=DIVISOR):
    """The multiples of ``divisor`` just below and above ``size`` (below omitted when it would be 0)."""
    lower = max(0, size) // divisor * divisor
    upper = lower + divisor
    return [s for s in (lower, upper) if s > 0]


def check_spatial_size(spatial_shape, divisor=DIVISOR):
    """Raise a ValueError naming the nearest valid sizes if any axis is not a multiple of ``divisor``."""
    bad = [(axis, size) for axis, size in enumerate(spatial_shape) if size % divisor or size <= 0]
    if not bad:
        return
    details = "; ".join(
        f"axis {axis} is {size}, nearest valid {' or '.join(map(str, nearest_valid_sizes(size, divisor)))}"
        for axis, size in bad)
    raise ValueError(f"nnMambaSeg needs every spatial size divisible by {divisor} (input {tuple(spatial_shape)}): "
                     f"{details}. Pad or crop the volume, or use the sliding-window predictor, which pads.")
