"""Heatmap decoding with distinct peaks: each landmark its own peak, and a confidence that drops when a channel's
heatmap has a rival blob (the failure the demo landmark model had: every channel lit on every cerebellar point)."""

import numpy as np
import pytest

from nnmamba.tasks.heatmap_peaks import distinct_peaks, local_maxima

SHAPE = (24, 24, 24)


def blob(centre, height=1.0, sigma=1.5):
    grid = np.indices(SHAPE, dtype=np.float32)
    squared = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return (height * np.exp(-0.5 * squared / sigma ** 2)).astype(np.float32)


def test_local_maxima_are_the_blob_centres_highest_first():
    heatmap = blob((5, 6, 7), 0.6) + blob((15, 16, 17), 0.9) + blob((5, 18, 5), 0.3)
    maxima = local_maxima(heatmap, radius=2)
    assert [index for _, index in maxima] == [(15, 16, 17), (5, 6, 7), (5, 18, 5)]
    assert [round(value, 2) for value, _ in maxima] == [0.9, 0.6, 0.3]


def test_a_flat_top_counts_once():
    heatmap = np.zeros(SHAPE, np.float32)
    heatmap[10, 10, 10:12] = 1.0
    assert len([m for m in local_maxima(heatmap, radius=2) if m[0] > 0]) == 1


def test_a_clear_heatmap_gives_its_peak_with_full_dominance():
    peaks = distinct_peaks(np.stack([blob((4, 4, 4)), blob((18, 18, 18), 0.8)]), separation=3)
    assert [p.index for p in peaks] == [(4, 4, 4), (18, 18, 18)]
    assert [p.dominance for p in peaks] == pytest.approx([1.0, 1.0], abs=1e-3)


def test_two_landmarks_never_share_a_peak_and_the_doubt_shows():
    # channel 0 is sure of A; channel 1 likes A a little more than its own B
    a, b = (6, 6, 6), (6, 6, 16)
    heatmaps = np.stack([blob(a, 0.95), blob(a, 0.8) + blob(b, 0.7)])
    first, second = distinct_peaks(heatmaps, separation=3)
    assert first.index == a and second.index == b
    assert first.dominance == pytest.approx(1.0, abs=1e-3)
    assert second.dominance == 0.0      # its own channel is higher elsewhere: no confidence
    independent = [np.unravel_index(int(np.argmax(h)), SHAPE) for h in heatmaps]
    assert independent[0] == independent[1] == a   # what per-channel argmax would have answered


def test_a_rival_blob_lowers_the_dominance_in_proportion():
    (peak,) = distinct_peaks(blob((5, 5, 5), 1.0)[None] + blob((18, 18, 18), 0.25)[None], separation=3)
    assert peak.index == (5, 5, 5) and peak.dominance == pytest.approx(0.75, abs=1e-3)
