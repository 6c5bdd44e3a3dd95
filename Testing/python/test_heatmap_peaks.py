"""Heatmap decoding with distinct peaks: each landmark its own peak, and a confidence that drops when a channel's
heatmap has a rival blob (the failure the demo landmark model had: every channel lit on every cerebellar point);
with a shape, the peaks that fit the anatomy's distances win over a brighter look-alike far away (the failure of
the retrained model: a blob elsewhere in the brain as bright as the right one)."""

import numpy as np
import pytest

from nnmamba.tasks.heatmap_peaks import distinct_peaks, local_maxima, onto_bisecting_plane, shape_constrained_peaks

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


def _mm(index):
    return np.asarray(index, dtype=float) * 2.0     # 2 mm voxels


def test_the_shape_picks_the_peak_at_the_anatomy_s_distance_over_a_brighter_look_alike():
    # landmark 1 truly lies 10 voxels (20 mm) from landmark 0; a brighter look-alike lies 41.6 mm away
    truth, look_alike = (6, 6, 16), (18, 18, 18)
    heatmaps = np.stack([blob((6, 6, 6), 0.9), blob(truth, 0.6) + blob(look_alike, 0.8)])
    pairs, mean, precision = [(0, 1)], [20.0], [[1.0 / 1.5 ** 2]]
    first, second = shape_constrained_peaks(heatmaps, _mm, pairs, mean, precision, separation=3)
    assert first.index == (6, 6, 6) and second.index == truth
    assert distinct_peaks(heatmaps, separation=3)[1].index == look_alike     # what brightness alone picks
    assert second.dominance > 0.9       # the look-alike is far less likely once the distance counts
    # a shape that expects the long distance takes the look-alike instead
    assert shape_constrained_peaks(heatmaps, _mm, pairs, [41.6], precision, 3)[1].index == look_alike


def test_a_correlated_shape_accepts_an_anatomy_larger_in_every_distance():
    # three landmarks on a line, 5 and 10 mm apart on average; this anatomy is 20 % larger (6 and 12 mm). Landmark 2
    # has its true peak at 14 mm and a slightly brighter one at 12, which fits the average distances better.
    centre = (12, 12)
    heatmaps = np.stack([blob(centre + (2,), 0.9, 0.8), blob(centre + (8,), 0.9, 0.8),
                         blob(centre + (14,), 0.7, 0.8) + blob(centre + (12,), 0.75, 0.8)])
    pairs, mean, sd = [(0, 1), (0, 2), (1, 2)], [5.0, 10.0, 5.0], np.array([0.5, 1.0, 0.5])
    independent = np.diag(1.0 / (sd ** 2 + 0.25))
    correlation = np.array([[1.0, 0.95, 0.9], [0.95, 1.0, 0.95], [0.9, 0.95, 1.0]])   # sizes vary together
    correlated = np.linalg.inv(correlation * np.outer(sd, sd) + 0.25 * np.eye(3))
    to_mm = lambda index: np.asarray(index, dtype=float)    # noqa: E731  (1 mm voxels)
    assert shape_constrained_peaks(heatmaps, to_mm, pairs, mean, independent, 3)[2].index == centre + (12,)
    assert shape_constrained_peaks(heatmaps, to_mm, pairs, mean, correlated, 3)[2].index == centre + (14,)


def test_many_landmarks_get_fewer_candidates_and_still_a_shape_choice(monkeypatch):
    truth, look_alike = (6, 6, 16), (18, 18, 18)
    heatmaps = np.stack([blob((6, 6, 6), 0.9), blob(truth, 0.6) + blob(look_alike, 0.8)])
    monkeypatch.setattr("nnmamba.tasks.heatmap_peaks.SCORED_DISTANCES", 4)     # room for 2 x 2 combinations
    _, second = shape_constrained_peaks(heatmaps, _mm, [(0, 1)], [20.0], [[1.0 / 1.5 ** 2]], separation=3)
    assert second.index == truth


def test_midline_points_move_onto_the_plane_that_bisects_the_sided_pair():
    points = np.array([[-10.0, 0, 0], [10.0, 2, 0], [1.5, 5, 3], [-0.5, -4, 1]])
    moved = onto_bisecting_plane(points, (0, 1), [2, 3])
    normal = (points[1] - points[0]) / np.linalg.norm(points[1] - points[0])
    middle = (points[0] + points[1]) / 2
    assert np.allclose((moved[2:] - middle) @ normal, 0)
    assert np.allclose(moved[:2], points[:2])                                   # the sided pair stays
    assert np.allclose(np.cross(moved[2:] - points[2:], normal), 0)             # moved along the normal only
