"""Inference-only rewrites of a trained network: BatchNorm folded into the convolution before it, the
convolutions fused with the ReLU and residual sums after them (:mod:`nnmamba.networks.fused`), and the
channels-last memory layout, under which oneDNN's convolutions and the trilinear upsampling run faster on CPU.

The result computes the same function up to float rounding. Its state_dict no longer has the official keys,
so the rewrite works on a copy and checkpoints are always loaded into the original layout first.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .blocks import BasicBlock, DoubleConv
from .fused import FusedBasicBlock, FusedConv3d
from .mamba_layer import MambaLayer

CONV_NORM_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("nin", "norm"), ("nin2", "norm2"))


def prepare_for_inference(model, device="cpu", channels_last=True, fold_batch_norm=True, fuse=True):
    """An eval-mode copy of ``model`` on ``device`` with BN folded, the convolutions fused with what follows
    them (needs ``fold_batch_norm``) and (for 5-D maps) the channels-last layout."""
    model = copy.deepcopy(model).eval()
    if fold_batch_norm:
        fold_batch_norms(model)
        if fuse:
            fuse_convolutions(model)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    return model.to(device=device, memory_format=layout)


def fold_batch_norms(model):
    """Replace every (Conv3d → BatchNorm3d) pair by one Conv3d with folded weights, in place (eval mode only)."""
    if model.training:
        raise ValueError("BatchNorm can only be folded in eval mode; call model.eval() first")
    for module in model.modules():
        for conv_name, norm_name in CONV_NORM_PAIRS:
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            if isinstance(conv, nn.Conv3d) and isinstance(norm, nn.BatchNorm3d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv3d) and isinstance(module[i + 1], nn.BatchNorm3d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
    return model


def fuse_convolutions(model):
    """Put the modules of :mod:`nnmamba.networks.fused` in place, in a model whose BatchNorms are folded.

    (Running nnMambaSeg's full-resolution head on the coarse grid, as one polyphase convolution, was tried: ~11%
    faster for the head alone on one thread, 0-15% slower in whole-network runs on 2 threads; not kept.)
    """
    if any(isinstance(m, nn.BatchNorm3d) for m in model.modules()):
        raise ValueError("fold the BatchNorms first (fold_batch_norms)")
    for module in list(model.modules()):
        if isinstance(module, DoubleConv):
            module.conv = nn.Sequential(FusedConv3d(module.conv[0], relu=True), FusedConv3d(module.conv[3], relu=True))
        elif isinstance(module, MambaLayer):
            module.nin, module.norm, module.relu = FusedConv3d(module.nin, relu=True), nn.Identity(), nn.Identity()
            if module.variant != "simple":
                module.nin2 = FusedConv3d(module.nin2, relu=True)
                module.norm2, module.relu2 = nn.Identity(), nn.Identity()
        elif isinstance(module, nn.Sequential):
            for i, child in enumerate(module):
                if isinstance(child, BasicBlock):
                    module[i] = FusedBasicBlock(child)
    return model
