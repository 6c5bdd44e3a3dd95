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
* :class:`UpsampledConvHead` (opt-in): trilinear ×2 upsampling followed by a 3×3×3 convolution computed as one
  convolution on the coarse grid (polyphase form): the upsampled map is never built, and the 8 output phases are
  the output channels of one wide convolution (8·k instead of k channels). Exact in the interior; the one-voxel
  faces, where the convolution's zero padding meets the upsampling's edge clamping, are computed the direct way.
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

    def conv2d(self, x, weight):
        """A 3×3 padding-1 2-D convolution with this module's bias and ReLU (for :class:`UpsampledConvHead`'s faces)."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self._onednn(x, None):
            return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, [1, 1], [1, 1], [1, 1], 1,
                                                           "relu" if self.relu else "none", [], "")
        y = F.conv2d(x, weight.to(x.dtype), bias, padding=1)
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


# Trilinear ×2 upsampling (align_corners=False) then a 3-tap convolution, along one axis, as 3-tap convolutions
# on the coarse grid, one per output phase: COARSE_TAPS[phase][coarse offset δ + 1][fine tap a + 1]. Fine voxel
# 2i is 0.25·x[i-1] + 0.75·x[i], fine voxel 2i+1 is 0.75·x[i] + 0.25·x[i+1] (edge-clamped x).
COARSE_TAPS = ((
    (0.75, 0.25, 0.00),
    (0.25, 0.75, 0.75),
    (0.00, 0.00, 0.25),
), (
    (0.25, 0.00, 0.00),
    (0.75, 0.75, 0.25),
    (0.00, 0.25, 0.75),
))


class UpsampledConvHead(nn.Module):
    """conv(upsample×2(x)) [+ ReLU] for a 3×3×3, stride-1, padding-1 convolution, computed on the coarse grid.

    The eight phases (even/odd fine voxel along each axis) are one convolution with 8·k output channels over
    the edge-replicated coarse map, interleaved into the fine grid by one copy. That is exact wherever the
    convolution only sees upsampled voxels; on the outermost fine voxel of each face it would also see the
    replicated edge where the original sees zero padding, so those six faces are computed directly, each as
    one 2-D convolution. Measured with one CPU thread, 32 → 16 channels, 64³ → 128³ with the ReLU and the
    second convolution of the head: 11% faster than upsampling first; not used by default (see
    :func:`~nnmamba.networks.inference_prep.fuse_convolutions`).
    """

    def __init__(self, conv, relu=False):
        super().__init__()
        if tuple(conv.kernel_size) != (3, 3, 3) or tuple(conv.stride) != (1, 1, 1) or tuple(conv.padding) != (1, 1, 1) \
                or tuple(conv.dilation) != (1, 1, 1) or conv.groups != 1:
            raise TypeError("UpsampledConvHead needs a 3x3x3 convolution with stride 1, padding 1, no groups")
        self.direct = FusedConv3d(conv, relu=relu)       # for the faces
        weight = conv.weight.detach().double()
        taps = torch.tensor(COARSE_TAPS, dtype=torch.float64)           # (phase, δ, a)
        # (pd, ph, pw, out, in, δd, δh, δw): the output channel of the wide convolution is (pd, ph, pw, out).
        phases = torch.einsum("pxa,qyb,rzc,oiabc->pqroixyz", taps, taps, taps, weight)
        out_ch = weight.shape[0]
        wide = FusedConv3d(nn.Conv3d(weight.shape[1], 8 * out_ch, 3, padding=0, bias=conv.bias is not None), relu)
        wide.weight.data = phases.reshape(8 * out_ch, *weight.shape[1:]).to(conv.weight.dtype).contiguous()
        if conv.bias is not None:
            wide.bias.data = conv.bias.detach().repeat(8).clone()
        self.wide = wide
        self.out_channels = out_ch

    def forward(self, x):
        """(B, C, D, H, W) coarse map → (B, k, 2D, 2H, 2W), in the memory layout of ``x``."""
        batch, _, *coarse = x.shape
        k = self.out_channels
        phases = self.wide(F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate"))      # (B, 8k, D, H, W)
        out = torch.empty(batch, k, *(2 * s for s in coarse), dtype=phases.dtype, device=x.device,
                          memory_format=_layout(x))
        # out[b, o, 2i+p, 2j+q, 2l+r] = phases[b, (p, q, r, o), i, j, l]
        fine = out.view(batch, k, coarse[0], 2, coarse[1], 2, coarse[2], 2)
        fine.copy_(phases.view(batch, 2, 2, 2, k, *coarse).permute(0, 4, 5, 1, 6, 2, 7, 3))
        for dim in (2, 3, 4):
            for high in (False, True):
                out.select(dim, out.shape[dim] - 1 if high else 0).copy_(self._face(x, dim, high))
        return out

    def _face(self, x, dim, high):
        """The outermost fine plane across axis ``dim`` (low or high end), computed directly: a 2-D convolution
        over the two fine planes it sees (the third is zero padding), each the bilinear upsampling of a blend of
        the two outermost coarse planes."""
        size = x.shape[dim]
        edge = x.select(dim, size - 1 if high else 0)
        inner = x.select(dim, max(size - 2, 0) if high else min(1, size - 1))
        # Fine plane 0 is the coarse edge plane and fine plane 1 is 0.75·edge + 0.25·inner (mirrored at the high
        # end); the convolution sees them through its centre tap and its inward tap.
        blend = torch.lerp(edge, inner, 0.25)
        weight = self.direct.weight
        if high:
            planes, taps = (blend, edge), (weight.select(dim, 0), weight.select(dim, 1))
        else:
            planes, taps = (edge, blend), (weight.select(dim, 1), weight.select(dim, 2))
        fine = F.interpolate(torch.cat(planes, 1), scale_factor=2, mode="bilinear", align_corners=False)
        return self.direct.conv2d(fine, torch.cat(taps, 1))


class UpsamplingDoubleConv(nn.Module):
    """A :class:`~nnmamba.networks.blocks.DoubleConv` (BN folded) applied to ``upsample×2(x)``, given ``x``."""

    upsamples_input = True

    def __init__(self, double_conv):
        super().__init__()
        first, second = double_conv.conv[0], double_conv.conv[3]
        self.first = UpsampledConvHead(first, relu=True)
        self.second = FusedConv3d(second, relu=True)

    def forward(self, x):
        return self.second(self.first(x))


def _layout(x):
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format
