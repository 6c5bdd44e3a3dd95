"""The numba kernel itself (imported only when the numba back end runs: importing numba takes ~0.5 s)."""

import llvmlite.ir
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from .numba_kernel import MAX_STATE

f32 = np.float32
CHANNELS_PER_JOB = 4      # independent recurrences interleaved per thread: hides the FMA latency


@intrinsic
def _bits_to_float32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(inline="always", fastmath=True, cache=True)
def exp_nonpositive(x):
    """exp(x) for x ≤ 0 in float32, inlinable so that LLVM vectorises the caller's loop."""
    x = max(x, f32(-87.0))                       # exp(-87) ≈ 1.6e-38: the smallest normal result
    k = np.floor(x * f32(1.4426950408889634) + f32(0.5))
    r = x - k * f32(0.693145751953125) - k * f32(1.428606765330187e-06)   # |r| ≤ ln2/2
    p = f32(1.0 / 5040)
    p = p * r + f32(1.0 / 720)
    p = p * r + f32(1.0 / 120)
    p = p * r + f32(1.0 / 24)
    p = p * r + f32(1.0 / 6)
    p = p * r + f32(0.5)
    p = p * r + f32(1.0)
    p = p * r + f32(1.0)
    return p * _bits_to_float32((np.int32(k) + np.int32(127)) << np.int32(23))


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def fused_scan(u, delta, A, B, C, D, gate, has_gate, reverse, out):
    """out[b, d, t] = (C_t·h_t + D_d u_t) · gate_t with h_t = exp(Δ_t A_d) h_{t-1} + Δ_t u_t B_t.

    Δ comes in final (bias and softplus applied) and the gate as silu(z): those need transcendental functions
    that vectorise better in PyTorch than as scalar calls here.
    """
    batch, dim, length = u.shape
    n_state = A.shape[1]
    G = CHANNELS_PER_JOB
    groups = (dim + G - 1) // G
    for job in numba.prange(batch * groups):
        b = job // groups
        d0 = (job % groups) * G
        width = min(G, dim - d0)
        h = np.zeros((G, MAX_STATE), dtype=np.float32)
        a = np.zeros((G, MAX_STATE), dtype=np.float32)
        for j in range(width):
            for n in range(n_state):
                a[j, n] = A[d0 + j, n]
        for step in range(length):
            t = length - 1 - step if reverse else step
            for j in range(width):
                d = d0 + j
                dt = delta[b, d, t]
                x = u[b, d, t]
                drive = dt * x
                acc = f32(0.0)
                for n in range(n_state):
                    h[j, n] = exp_nonpositive(dt * a[j, n]) * h[j, n] + drive * B[b, t, n]
                    acc += h[j, n] * C[b, t, n]
                y = acc + D[d] * x
                out[b, d, t] = y * gate[b, d, t] if has_gate else y
