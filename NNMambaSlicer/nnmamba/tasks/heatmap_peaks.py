"""Heatmaps to landmark voxels: every channel's peaks, one distinct peak per landmark, and how clearly it wins.

A landmark heatmap can hold more than one blob (a network unsure which of two look-alike points is which). Taking
each channel's maximum on its own then lets two landmarks land on the same point, and the peak height alone says
nothing about the doubt. ``distinct_peaks`` gives each landmark its own peak (the strongest claims first) and a
``dominance``: 1 when the chosen peak is the only one, 0 when another place in the same channel is as high.

A network can also light a look-alike place far from the structure as brightly as the right one. The landmarks of
one anatomy keep their distances to each other, so ``shape_constrained_peaks`` picks, among every channel's few
best peaks, the combination that is both bright and shaped like the training anatomy (the distances between the
landmarks scored against their mean and covariance in mm): a pictorial-structures choice over a few candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Sequence

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


SHAPE_CANDIDATES = 8          # peaks per landmark among which the shape chooses
SCORED_DISTANCES = 8_000_000  # combinations x pairs scored at once (64 MB); many landmarks get fewer candidates


def shape_constrained_peaks(heatmaps, to_mm: Callable, pairs: Sequence[tuple], mean_mm, precision,
                            separation: float, candidates: int = SHAPE_CANDIDATES) -> List[Peak]:
    """One peak per channel from each channel's ``candidates`` best local maxima (fewer when so many landmarks make
    too many combinations to score), the combination maximising the log-likelihood

        sum over landmarks of log(peak value) - 1/2 (d - mean_mm)^T precision (d - mean_mm),

    where ``d`` are the distances in mm of the channel ``pairs`` (i, j) and ``precision`` the inverse of their
    covariance (a full one: a larger anatomy makes every distance larger together); ``to_mm`` maps a (k, j, i)
    index to a position in mm. ``dominance`` compares the chosen peak with the best other candidate of its channel
    (farther than ``separation`` voxels), the others held where they were chosen: 1 - exp(that score - the choice's)."""
    limit = max(1, min(int(candidates), int((SCORED_DISTANCES / max(len(pairs), 1)) ** (1 / len(heatmaps)))))
    found = [local_maxima(heatmap, radius=max(1, int(separation // 2)), limit=limit) for heatmap in heatmaps]
    log_values = [np.log(np.maximum([value for value, _ in peaks], 1e-6)) for peaks in found]
    places = [np.array([to_mm(np.asarray(index, dtype=float)) for _, index in peaks]) for peaks in found]
    mean_mm, precision = np.asarray(mean_mm, dtype=float), np.asarray(precision, dtype=float)

    def score(choice):
        """Score of the combinations ``choice`` (one broadcastable candidate-index array per channel)."""
        total = sum(values[index] for values, index in zip(log_values, choice))
        deviation = np.stack([np.linalg.norm(places[a][choice[a]] - places[b][choice[b]], axis=-1)
                              for a, b in pairs], axis=-1) - mean_mm
        return total - 0.5 * np.einsum("...i,ij,...j->...", deviation, precision, deviation)

    def score_of(channel, choice):
        """Score of every candidate of ``channel`` with the other channels at ``choice``."""
        size = len(found[channel])
        return score([np.arange(size) if c == channel else np.full(size, choice[c]) for c in range(len(found))])

    sizes = [len(peaks) for peaks in found]
    choice = [int(c) for c in np.unravel_index(int(np.argmax(score(np.indices(sizes)))), sizes)]
    result = []
    for channel, peaks in enumerate(found):
        scores = score_of(channel, choice)
        chosen = choice[channel]
        rivals = [scores[k] for k, (_, index) in enumerate(peaks) if _apart(index, peaks[chosen][1], separation)]
        dominance = float(np.clip(1.0 - np.exp(max(rivals) - scores[chosen]), 0.0, 1.0)) if rivals else 1.0
        value, index = peaks[chosen]
        result.append(Peak(tuple(index), value, dominance))
    return result


def onto_bisecting_plane(points, across, on):
    """``points`` (L, 3) with the points ``on`` moved onto the plane that bisects ``across`` (i, j) at right angles:
    a midline structure's landmarks, put exactly on the midline the two sided ones define."""
    points = np.array(points, dtype=float)
    a, b = across
    normal = points[b] - points[a]
    length = np.linalg.norm(normal)
    if length == 0:
        return points
    normal /= length
    middle = (points[a] + points[b]) / 2
    for k in on:
        points[k] -= np.dot(points[k] - middle, normal) * normal
    return points
