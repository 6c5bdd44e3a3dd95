"""Compiled map back of class probabilities (numba; imported only when used, importing numba takes ~0.5 s).

One pass per input row: every channel (float32, or float16 bits decoded exactly) interpolated axis by axis in the
order and with the very float32 operations of :func:`nnmamba.resampling._interpolate_along` ((upper - lower) *
weight + lower, no fused multiply-add), and the winner kept, on all cores. The labels are those of the numpy path,
bit for bit.
"""

import llvmlite.ir
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

f32 = np.float32


@intrinsic
def _bits_as_float32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.FloatType())

    return types.float32(types.uint32), codegen


@numba.njit(inline="always", cache=True)
def _half_to_float(bits):
    """float16 bits (uint16) -> float32, exactly (normal, subnormal, zero, inf and nan)."""
    h = np.uint32(bits)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    exponent = (h >> np.uint32(10)) & np.uint32(0x1F)
    mantissa = h & np.uint32(0x3FF)
    if exponent == 0:
        value = f32(mantissa) * f32(5.960464477539063e-08)          # mantissa * 2**-24: exact
        return -value if sign else value
    if exponent == 31:
        out = sign | np.uint32(0x7F800000) | (mantissa << np.uint32(13))
    else:
        out = sign | ((exponent + np.uint32(112)) << np.uint32(23)) | (mantissa << np.uint32(13))
    return _bits_as_float32(out)


@numba.njit(cache=True)
def _decode(plane, out):
    rows, cols = plane.shape
    for j in range(rows):
        for i in range(cols):
            out[j, i] = _half_to_float(plane[j, i])


def _as_float32(plane, buffer):
    """A float32 source plane: ``plane`` itself, or float16 bits decoded into ``buffer`` (compiled: the overload)."""
    raise NotImplementedError("compiled code only")


@overload(_as_float32)
def _as_float32_compiled(plane, buffer):
    if plane.dtype == types.uint16:
        def decoded(plane, buffer):
            _decode(plane, buffer)
            return buffer
        return decoded
    return lambda plane, buffer: plane


@numba.njit(cache=True)
def _along_rows(src, lower, upper, weight, out):
    """Interpolate along axis 0 of a plane (the J axis of a K row)."""
    for j in range(out.shape[0]):
        lo, hi, w = lower[j], upper[j], weight[j]
        for i in range(out.shape[1]):
            low = src[lo, i]
            out[j, i] = (src[hi, i] - low) * w + low


@numba.njit(cache=True)
def _along_columns(src, lower, upper, weight, out):
    """Interpolate along axis 1 of a plane (the I axis)."""
    for j in range(out.shape[0]):
        for i in range(out.shape[1]):
            low = src[j, lower[i]]
            out[j, i] = (src[j, upper[i]] - low) * weight[i] + low


@numba.njit(cache=True)
def _in_plane_step(plane, axis, j_plan, i_plan):
    """One in-plane interpolation of a plane: along J (``axis`` 1) or along I (2)."""
    if axis == 1:
        lower, upper, weight = j_plan
        out = np.empty((len(weight), plane.shape[1]), dtype=f32)
        _along_rows(plane, lower, upper, weight, out)
    else:
        lower, upper, weight = i_plan
        out = np.empty((plane.shape[0], len(weight)), dtype=f32)
        _along_columns(plane, lower, upper, weight, out)
    return out


@numba.njit(cache=True)
def _lerp_planes(low, high, weight):
    out = np.empty_like(low)
    for j in range(low.shape[0]):
        for i in range(low.shape[1]):
            out[j, i] = (high[j, i] - low[j, i]) * weight + low[j, i]
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def map_back_labels(channels, k_position, first_in_plane, k_plan, j_plan, i_plan, labels):
    """labels (K, J, I) uint8 <- the winning channel of the interpolated ``channels`` ((C, Kn, Jn, In) float32, or
    a uint16 view of float16). ``k_position``: where the K step comes in the order (0, 1 or 2); ``first_in_plane``:
    1 (J) or 2 (I), the in-plane step that comes first. Ties keep the lower channel."""
    k_lower, k_upper, k_weight = k_plan
    for k in numba.prange(labels.shape[0]):
        best = np.empty((labels.shape[1], labels.shape[2]), dtype=f32)
        low_buffer = np.empty(channels.shape[2:], dtype=f32)
        high_buffer = np.empty(channels.shape[2:], dtype=f32)
        for channel in range(channels.shape[0]):
            low_plane = _as_float32(channels[channel, k_lower[k]], low_buffer)
            high_plane = _as_float32(channels[channel, k_upper[k]], high_buffer)
            a, b = first_in_plane, 3 - first_in_plane        # the in-plane steps in their order
            if k_position == 0:
                values = _in_plane_step(_in_plane_step(_lerp_planes(low_plane, high_plane, k_weight[k]),
                                                       a, j_plan, i_plan), b, j_plan, i_plan)
            elif k_position == 1:
                values = _in_plane_step(_lerp_planes(_in_plane_step(low_plane, a, j_plan, i_plan),
                                                     _in_plane_step(high_plane, a, j_plan, i_plan), k_weight[k]),
                                        b, j_plan, i_plan)
            else:
                values = _lerp_planes(
                    _in_plane_step(_in_plane_step(low_plane, a, j_plan, i_plan), b, j_plan, i_plan),
                    _in_plane_step(_in_plane_step(high_plane, a, j_plan, i_plan), b, j_plan, i_plan), k_weight[k])
            row = labels[k]
            if channel == 0:
                best[:] = values
                row[:] = 0
                continue
            for j in range(values.shape[0]):
                for i in range(values.shape[1]):
                    if values[j, i] > best[j, i]:
                        best[j, i] = values[j, i]
                        row[j, i] = channel
