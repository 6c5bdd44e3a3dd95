"""Landmarks: heatmap peaks → physical LPS positions, a confidence per landmark, and the measurement lines."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..inference import ProbabilitySink, sliding_window_predict
from .common import make_predictor, prepare_input
from .heatmap_peaks import SHAPE_CANDIDATES, Peak, distinct_peaks, onto_bisecting_plane, shape_constrained_peaks

if TYPE_CHECKING:
    from ..imaging import Volume
    from ..modelpkg import ModelPackage
    from ..predictor import NetworkPredictor
    from ..progress import CancelToken, Progress


@dataclass
class LandmarkResult:
    points: list      # {"label", "position" [x, y, z] LPS mm, "confidence" 0..1, "peak", "description"}
    lines: list       # {"name", "from", "to", "length" mm, "description"}
    seconds: float
    notes: list = field(default_factory=list)

    def position(self, label):
        return next(np.asarray(p["position"]) for p in self.points if p["label"] == label)


def detect_landmarks(package: ModelPackage, volume: Volume, device: str = "auto", refine: Optional[str] = None,
                     progress: Optional[Progress] = None, cancel: Optional[CancelToken] = None,
                     predictor: Optional[NetworkPredictor] = None) -> LandmarkResult:
    """Run a landmark ``package`` on ``volume``. ``refine`` overrides the package's decoding ("none" | "quadratic").

    Decoding ``argmax`` takes each channel's maximum, with its height as the confidence; ``distinct-peaks`` gives
    each landmark its own peak and scales the confidence by how clearly that peak wins (:mod:`.heatmap_peaks`),
    choosing among each heatmap's best peaks by the anatomy's distances when the decoding has a ``shape``. A
    ``midline`` puts the landmarks of a midline structure on the plane that bisects a sided pair."""
    if package.task != "landmarks":
        raise ValueError(f"Model {package.id!r} is a {package.task} model, not a landmark model.")
    started = time.perf_counter()
    outputs = package.outputs
    decoding = outputs.get("decoding", {})
    refine = refine or decoding.get("refine", "none")
    if refine not in ("none", "quadratic"):
        raise ValueError(f"Unknown landmark refinement {refine!r}; use 'none' or 'quadratic'.")
    prepared = prepare_input(package, volume)
    resampling = package.input.get("resampling", {"mode": "none"})
    shape = prepared.network.array.shape[1:]
    # A fixed-shape model sees the whole resized volume at once; otherwise tile with the package's patch.
    patch = shape if resampling["mode"] == "shape" else package.input["patch_size"][::-1]
    predictor = predictor or make_predictor(package, device)
    heatmaps = sliding_window_predict(prepared.network.array, predictor, patch, package.network["out_channels"],
                                      overlap=package.inference["overlap"], sink=ProbabilitySink(np.float32),
                                      progress=progress, cancel=cancel)
    scale = float(decoding.get("peak_scale", 255.0))
    separation = float(decoding.get("separation_voxels", 3.0))
    channel = {landmark["name"]: n for n, landmark in enumerate(outputs["landmarks"])}
    if decoding.get("method", "argmax") == "distinct-peaks" and "shape" in decoding:
        peaks = _shape_constrained(heatmaps, channel, decoding["shape"], separation,
                                   prepared.resampling.landmark_to_lps)
    elif decoding.get("method", "argmax") == "distinct-peaks":
        peaks = distinct_peaks(heatmaps, separation)
    else:   # each channel's own maximum, confidence its height (LFC's decoding)
        peaks = [Peak(np.unravel_index(int(np.argmax(h)), h.shape), 0.0, 1.0) for h in heatmaps]
    positions = []
    for heatmap, peak in zip(heatmaps, peaks):
        kji = np.array(peak.index, dtype=float)
        if refine == "quadratic":
            kji += _parabola_offsets(heatmap, tuple(peak.index))
        positions.append(prepared.resampling.landmark_to_lps(kji))  # LFC's axis convention or the physical one
    midline = decoding.get("midline")
    if midline:
        positions = onto_bisecting_plane(positions, [channel[name] for name in midline["across"]],
                                         [channel[name] for name in midline["on"]])
    points = []
    for heatmap, landmark, peak, position in zip(heatmaps, outputs["landmarks"], peaks, positions):
        value = float(heatmap[tuple(peak.index)])
        points.append({"label": landmark["name"], "position": [float(v) for v in position],
                       "confidence": float(np.clip(value / scale, 0.0, 1.0)) * peak.dominance, "peak": value,
                       "description": landmark.get("description", "")})
    result = LandmarkResult(points, [], 0.0)
    for line in outputs.get("lines", []):
        length = float(np.linalg.norm(result.position(line["from"]) - result.position(line["to"])))
        result.lines.append({"name": line["name"], "from": line["from"], "to": line["to"], "length": length,
                             "description": line.get("description", "")})
    result.seconds = time.perf_counter() - started
    return result


def _shape_constrained(heatmaps, channel, shape, separation, to_mm):
    """``decoding.shape`` (landmark names, mapped to channels by ``channel``; the anatomy's spreads and
    correlations, and the network's per-axis error at both ends of each distance) to
    :func:`.heatmap_peaks.shape_constrained_peaks`."""
    pairs = [(channel[pair["from"]], channel[pair["to"]]) for pair in shape["pairs"]]
    sd = np.array([pair["sd_mm"] for pair in shape["pairs"]], dtype=float)
    correlation = np.asarray(shape.get("correlation", np.eye(len(sd))), dtype=float)
    noise = float(shape.get("localisation_sd_mm", 0.0))
    covariance = correlation * np.outer(sd, sd) + np.eye(len(sd)) * 2.0 * noise ** 2
    return shape_constrained_peaks(heatmaps, to_mm, pairs, [pair["mean_mm"] for pair in shape["pairs"]],
                                   np.linalg.pinv(covariance), separation,
                                   int(shape.get("candidates", SHAPE_CANDIDATES)))


def _parabola_offsets(heatmap, peak):
    """Sub-voxel peak per axis from a parabola through the peak and its two neighbours (0 at the border)."""
    offsets = np.zeros(3)
    for axis in range(3):
        if 0 < peak[axis] < heatmap.shape[axis] - 1:
            before, after = list(peak), list(peak)
            before[axis] -= 1
            after[axis] += 1
            a, b, c = float(heatmap[tuple(before)]), float(heatmap[peak]), float(heatmap[tuple(after)])
            curvature = a - 2 * b + c
            if curvature < 0:
                offsets[axis] = np.clip(0.5 * (a - c) / curvature, -0.5, 0.5)
    return offsets
