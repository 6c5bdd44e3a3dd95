"""Fast pure-PyTorch selective scan: a two-pass chunked scan over cache-sized segments.

Method (measured in ``cpu-scan.md`` §7): inside a chunk of T tokens the recurrence runs step by step, but each
step is one vectorised op over all chunks of a segment at once; chunks are joined by their total decay
exp(A·ΣΔ). Only exponents ≤ 0 are ever evaluated, so nothing can overflow, and the arithmetic inside a chunk is
exactly the sequential one. Segments of about 2**21 state elements keep the temporaries in cache.
"""

from __future__ import annotations

import torch

from .common import finish_output, prepare_inputs

CHUNK = 32
SEGMENT_ELEMENTS = 2**21          # CPU: about 8 MB of float32 per temporary, which stays in cache
GPU_SEGMENT_ELEMENTS = 2**26      # GPU: fewer, larger kernel launches


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                           chunk=CHUNK, segment_elements=None):
    """Same contract as :func:`selective_scan_reference`; differentiable when autograd needs it."""
    u_, delta_, A_, B_, C_ = prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u_.shape
    n_state = A_.shape[1]
    inplace = not (torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, delta_bias)))

    # Time-major, contiguous copies: a permuted view would give every big temporary a scattered layout.
    delta_t = delta_.permute(2, 0, 1).contiguous()            # (L, b, d)
    drive_t = (delta_ * u_).permute(2, 0, 1).contiguous()     # (L, b, d)
    B_t = B_.permute(2, 0, 1).contiguous()                    # (L, b, n)
    C_t = C_.permute(2, 0, 1).contiguous()                    # (L, b, n)

    if segment_elements is None:
        segment_elements = SEGMENT_ELEMENTS if u.device.type == "cpu" else GPU_SEGMENT_ELEMENTS
    per_token = max(1, batch * dim * n_state)
    segment = max(chunk, (segment_elements // per_token) // chunk * chunk)
    state = u_.new_zeros(batch, dim, n_state)
    pieces = []
    for start in range(0, length, segment):
        stop = min(start + segment, length)
        y_seg, state = _scan_segment(delta_t[start:stop], drive_t[start:stop], B_t[start:stop], C_t[start:stop],
                                     A_, state, chunk, inplace)
        pieces.append(y_seg)
    y_t = torch.cat(pieces, 0) if pieces else u_.new_zeros(0, batch, dim)
    return finish_output(y_t.permute(1, 2, 0), u, u_, D, z)


def _scan_segment(delta_t, drive_t, B_t, C_t, A, state_in, chunk, inplace):
    """Scan one segment (time-major inputs) from ``state_in``; return its outputs (S, b, d) and end state."""
    length = delta_t.shape[0]
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    # Padding with Δ = 0 gives decay 1 and drive 0: exact identity steps.
    delta_c = _to_chunks(delta_t, pad, n_chunks, chunk)      # (T, b, c, d)
    drive_c = _to_chunks(drive_t, pad, n_chunks, chunk)
    B_c = _to_chunks(B_t, pad, n_chunks, chunk)              # (T, b, c, n)
    C_c = _to_chunks(C_t, pad, n_chunks, chunk)

    decay = delta_c.unsqueeze(-1) * A                         # (T, b, c, d, n)
    decay = decay.exp_() if inplace else decay.exp()
    states = drive_c.unsqueeze(-1) * B_c.unsqueeze(-2)        # (T, b, c, d, n), becomes h_t below

    # Pass 1: where each chunk would end if it started from zero.
    ends = _last_state(decay, states, None, inplace)         # (b, c, d, n)
    # Join the chunks: entry state of chunk c+1 = total decay of chunk c · entry of c + its zero-start end.
    chunk_decay = torch.exp(delta_c.sum(0).unsqueeze(-1) * A)  # (b, c, d, n)
    entries = _all_states(chunk_decay.transpose(0, 1), ends.transpose(0, 1), state_in, inplace=False,
                          shift=True).transpose(0, 1)        # (b, c, d, n)
    # Pass 2: the true state at every position, then the read-out y_t = C_t · h_t.
    states = _all_states(decay, states, entries, inplace)
    y = torch.einsum("tbcdn,tbcn->tbcd", states, C_c)
    state_out = states[-1, :, -1]
    batch, dim = y.shape[1], y.shape[3]
    y = y.permute(2, 0, 1, 3).reshape(n_chunks * chunk, batch, dim)[:length]   # token = chunk·T + t
    return y, (state_out.clone() if inplace else state_out)


def _to_chunks(x, pad, n_chunks, chunk):
    """(S, b, k) time-major → (T, b, c, k) contiguous, zero-padded to a whole number of chunks."""
    if pad:
        x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])], 0)
    return x.reshape(n_chunks, chunk, *x.shape[1:]).permute(1, 2, 0, 3).contiguous()


def _last_state(decay, drive, state, inplace):
    """Final h of h_t = decay_t·h_{t-1} + drive_t along dim 0 (h_{-1} = ``state`` or 0)."""
    h = drive[0].clone() if state is None else torch.addcmul(drive[0], decay[0], state)
    for t in range(1, decay.shape[0]):
        h = torch.addcmul(drive[t], decay[t], h, out=h) if inplace else torch.addcmul(drive[t], decay[t], h)
    return h


def _all_states(decay, drive, state, inplace, shift=False):
    """Every h_t of h_t = decay_t·h_{t-1} + drive_t along dim 0, starting from ``state``.

    In place (into ``drive``) when no gradient is needed. With ``shift`` the result holds the state *before*
    each step instead (h_{-1}, h_0, ..., h_{T-2}), which is what chunk entries are.
    """
    steps = decay.shape[0]
    if inplace and not shift:
        drive[0].addcmul_(decay[0], state)
        for t in range(1, steps):
            drive[t].addcmul_(decay[t], drive[t - 1])
        return drive
    out = [state] if shift else []
    h = state
    for t in range(steps - 1 if shift else steps):
        h = torch.addcmul(drive[t], decay[t], h)
        out.append(h)
    return torch.stack(out, 0)
