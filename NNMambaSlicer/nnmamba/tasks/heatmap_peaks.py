"""Heatmaps to landmark voxels: every channel's peaks, one distinct peak per landmark, and how clearly it wins.

A landmark heatmap can hold more than one blob (a network unsure which of two look-alike points is which). Taking
each channel's maximum on its own then lets two landmarks land on the same point, and the peak height alone says
nothing about the doubt. ``distinct_peaks`` gives each landmark its own peak (the strongest claims first) and a
``dominance``: 1 when the chosen peak is the only one, 0 when another place in the same channel is as high.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

CANDIDATES = 4            # peaks kept per channel: the winner and the places it competes with


@dataclass
class Peak:
    index: tuple            # (k, j, i) voxel of the network grid
    value: float            # heatmap value there
    dominance: float        # 1 - (highest other peak of the channel, farther than the separation) / value


def local_maxima(heatmap, radius: int = 2, limit: int = CANDIDATES):
    """``[(value, (k, j, i))]`` of the ``limit`` highest voxels that are the maximum of their (2 radius + 1)^3
    neighbourhood, highest first (a flat top counts once: the first voxel in C order)."""
    import torch
    import torch.nn.functional as F

    volume = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
    pooled = F.max_pool3d(volume, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy()
    values = np.asarray(heatmap, dtype=np.float32)
    flat = np.flatnonzero(values == pooled)
    if len(flat) > 4 * limit:
        flat = flat[np.argpartition(-values.ravel()[flat], 4 * limit)[:4 * limit]]
    order = flat[np.lexsort((flat, -values.ravel()[flat]))]
    maxima, kept = [], []
    for position in order:
        index = np.unravel_index(int(position), values.shape)
        if any(max(abs(a - b) for a, b in zip(index, other)) <= radius for other in kept):
            continue   # the same plateau
        kept.append(index)
        maxima.append((float(values[index]), tuple(int(v) for v in index)))
        if len(maxima) == limit:
            break
    return maxima


def _apart(a, b, separation):
    return float(np.linalg.norm(np.subtract(a, b))) > separation


def distinct_peaks(heatmaps, separation: float) -> List[Peak]:
    """One peak per channel, no two closer than ``separation`` voxels: the highest (value, channel, candidate)
    claims first, so a channel whose best place is taken by a stronger claim gets its next peak. A channel left
    without a free candidate keeps its own maximum."""
    candidates = [local_maxima(heatmap, radius=max(1, int(separation // 2))) for heatmap in heatmaps]
    claims = sorted(((value, channel, index) for channel, found in enumerate(candidates) for value, index in found),
                    key=lambda claim: (-claim[0], claim[1]))
    chosen = {}
    for value, channel, index in claims:
        if channel in chosen or not all(_apart(index, other[1], separation) for other in chosen.values()):
            continue
        chosen[channel] = (value, index)
    peaks = []
    for channel, heatmap in enumerate(heatmaps):
        if channel not in chosen:
            index = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
            chosen[channel] = (float(heatmap[index]), tuple(int(v) for v in index))
        value, index = chosen[channel]
        rivals = [v for v, other in candidates[channel] if _apart(other, index, separation)]
        runner_up = max(rivals, default=0.0)
        dominance = float(np.clip(1.0 - runner_up / value, 0.0, 1.0)) if value > 0 else 0.0
        peaks.append(Peak(index, value, dominance))
    return peaks
