"""Convolutional building blocks of the nnMamba networks, named as in the official state_dicts (spec §2)."""

from __future__ import annotations

import torch.nn as nn


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class DoubleConv(nn.Module):
    """(Conv3d with bias → BN → ReLU) twice; the first conv may stride."""

    def __init__(self, in_channels, out_channels, stride=1, kernel_size=3):
        super().__init__()
        pad = kernel_size // 2
        self.conv = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=pad, bias=True),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, kernel_size, stride=1, padding=pad, bias=True),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.conv(x)


class BasicBlock(nn.Module):
    """Residual block; an optional Mamba layer runs on the block input in parallel with the convolutions.

    y = ReLU(BN2(conv2(ReLU(BN1(conv1(x))))) + mamba_layer(x) + shortcut(x)), as in the official code.
    """

    def __init__(self, inplanes, planes, stride=1, downsample=None, mamba_layer=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.mamba_layer = mamba_layer
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.mamba_layer is not None:
            out = out + self.mamba_layer(x)
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


def make_res_layer(inplanes, planes, blocks, stride, mamba_layer=None):
    """A strided block with a 1×1 shortcut, then ``blocks - 1`` blocks that all share one Mamba layer object."""
    downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm3d(planes))
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes, mamba_layer=mamba_layer) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ChannelAttention(nn.Module):
    """Squeeze-excitation gate on a pooled feature vector (official name ``Attentionlayer``, r = 16).

    The hidden width is dim // r as in the official code, but at least 1 so that narrow demo networks
    (C < 16) still have a gate that depends on its input.
    """

    def __init__(self, dim, r=16):
        super().__init__()
        hidden = max(1, dim // r)
        self.layer1 = nn.Linear(dim, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.layer2 = nn.Linear(hidden, dim)
        self.sigmoid = nn.Sigmoid()

    def forward(self, pooled):
        """(B, dim) → (B, dim, 1, 1, 1) gate in (0, 1)."""
        gate = self.sigmoid(self.layer2(self.relu(self.layer1(pooled))))
        return gate.view(*gate.shape, 1, 1, 1)
