"""Inference-only modules that :func:`nnmamba.networks.prepare_for_inference` puts in place of the trained ones.

Each computes the function of the modules it replaces (BatchNorm already folded) up to float rounding, in fewer
passes over memory on the CPU:

* :class:`FusedConv3d`: a convolution with the ReLU and/or the residual sum after it done by oneDNN in the same
  pass (``torch.ops.mkldnn._convolution_pointwise``, the kernel ``torch.compile`` uses for the same pattern). It
  also sends the small convolutions that PyTorch would give to its slower non-oneDNN kernel (the 8³ stage with 256
  channels, the 1-channel stem) to oneDNN. Elsewhere (GPU, gradients, half precision, a PyTorch without oneDNN)
  it is a plain ``F.conv3d`` followed by the same operations.
* :class:`FusedBasicBlock`: the residual block with ReLU(conv1) fused and ReLU(conv2 + mamba + shortcut) as one
  convolution with a fused sum.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F


@functools.cache
def onednn_fusion_available():
    """True when this PyTorch has oneDNN's fused convolution and it gives F.conv3d's result (checked once)."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        if not torch.backends.mkldnn.is_available():
            return False
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, 4, 5, 6, generator=generator).contiguous(memory_format=torch.channels_last_3d)
        w = torch.randn(2, 3, 3, 3, 3, generator=generator)
        b = torch.randn(2, generator=generator)
        r = torch.randn(1, 2, 4, 5, 6, generator=generator)
        with torch.no_grad():
            conv = F.conv3d(x, w, b, padding=1)
            summed = op.binary(x, r, w, b, [1, 1, 1], [1, 1, 1], [1, 1, 1], 1, "add", None, "relu", [], "")
            plain = op(x, w, b, [1, 1, 1], [1, 1, 1], [1, 1, 1], 1, "relu", [], "")
        return bool(torch.allclose(summed, F.relu(conv + r), rtol=1e-5, atol=1e-5)
                    and torch.allclose(plain, F.relu(conv), rtol=1e-5, atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


class FusedConv3d(nn.Module):
    """Conv3d (BN folded into it) → [+ residual] → [ReLU], in one oneDNN pass on the CPU."""

    def __init__(self, conv, relu=False):
        super().__init__()
        if not isinstance(conv, nn.Conv3d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise TypeError("FusedConv3d takes an nn.Conv3d with numeric zero padding")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu = relu
        self._packed = {}

    def forward(self, x, residual=None, padding=None):
        padding = self.padding if padding is None else padding
        if self._onednn(x, residual):
            attr = "relu" if self.relu else None
            op = torch.ops.mkldnn._convolution_pointwise
            weight = self._packed_weight(x, padding)
            if residual is None:
                return op(x, weight, self.bias, padding, self.stride, self.dilation, self.groups, attr or "none", [],
                          "")
            return op.binary(x, residual, weight, self.bias, padding, self.stride, self.dilation, self.groups, "add",
                             None, attr, [], "")
        y = F.conv3d(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype), self.stride,
                     padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        return F.relu(y, inplace=True) if self.relu else y

    def _packed_weight(self, x, padding):
        """The weight in oneDNN's blocked layout for this input shape, made once per shape: reordering it on
        every call costs as much as the convolution itself at the small stages (measured 1.7-3.5x slower at
        64-256 channels)."""
        key = (tuple(x.shape), tuple(padding), self.weight.data_ptr(), self.weight._version)
        packed = self._packed.get(key)
        if packed is None:
            if len(self._packed) >= 8:
                self._packed.clear()
            try:
                packed = torch._C._nn.mkldnn_reorder_conv3d_weight(
                    self.weight.detach().to_mkldnn(), padding, self.stride, self.dilation, self.groups, list(x.shape))
            except (AttributeError, RuntimeError):
                packed = self.weight
            self._packed[key] = packed
        return packed

    def __getstate__(self):                   # for deepcopy and pickling: oneDNN tensors are neither
        state = self.__dict__.copy()
        state["_packed"] = {}
        return state

    def _onednn(self, x, residual):
        return (x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and (residual is None or residual.dtype == torch.float32)
                and not (torch.is_grad_enabled() and x.requires_grad) and onednn_fusion_available())

    def extra_repr(self):
        out_ch, in_ch, *kernel = self.weight.shape
        return f"{in_ch}, {out_ch}, kernel_size={tuple(kernel)}, stride={tuple(self.stride)}, relu={self.relu}"


class FusedBasicBlock(nn.Module):
    """:class:`~nnmamba.networks.blocks.BasicBlock` with BN folded: ReLU(conv2(ReLU(conv1 x)) + mamba(x) + shortcut(x)).

    The shortcut convolution adds the Mamba output in its pass and conv2 adds the residual and applies the ReLU
    in its pass; the Mamba layer object stays shared with the other blocks of the stage, as in the original.
    """

    def __init__(self, block):
        super().__init__()
        self.conv1 = FusedConv3d(block.conv1, relu=True)
        self.conv2 = FusedConv3d(block.conv2, relu=True)
        self.mamba_layer = block.mamba_layer
        self.downsample = None if block.downsample is None else FusedConv3d(block.downsample[0])

    def forward(self, x):
        mixed = None if self.mamba_layer is None else self.mamba_layer(x)
        if self.downsample is not None:
            residual = self.downsample(x, mixed)
        else:
            residual = x if mixed is None else mixed + x
        return self.conv2(self.conv1(x), residual)

