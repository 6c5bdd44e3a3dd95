"""Held-out metrics of a model package on phantoms, measured through the same task functions a user calls, on each
phantom's own grid: Dice per organ, radial error per landmark, AUC of the class probability."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..predictor import NetworkPredictor
from ..tasks.classification import classify_volume
from ..tasks.landmarks import detect_landmarks
from ..tasks.segmentation import segment_volume
from .calibration import brier_score, reliability_table
from .training_data import phantom_volume

HEADLINE = {"segmentation": ("mean_dice", True), "landmarks": ("mean_radial_error_mm", False),
            "classification": ("auc", True)}  # the one number a training run selects on; higher is better?


def evaluate(package, phantoms: Sequence, predictor: Optional[NetworkPredictor] = None, device="cpu") -> dict:
    """Task metrics over ``phantoms`` (each with its truth); ``predictor`` defaults to the package's own weights."""
    if predictor is None:
        predictor = NetworkPredictor(package.build_model(), device=device,
                                     activation=package.inference["activation"], mirroring=False)
    task = package.task
    if task == "segmentation":
        return _segmentation_metrics(package, phantoms, predictor)
    if task == "landmarks":
        return _landmark_metrics(package, phantoms, predictor)
    return _classification_metrics(package, phantoms, predictor)


def _segmentation_metrics(package, phantoms, predictor):
    names = {label["value"]: label["name"] for label in package.outputs["labels"]}
    per_label = {name: [] for name in names.values()}
    distances = {name: [] for name in names.values()}
    for phantom in phantoms:
        labels = segment_volume(package, phantom_volume(phantom), predictor=predictor).labels
        spacing = phantom.geometry.spacing
        for value, name in names.items():
            score = dice(labels == value, phantom.labels == value)
            if score is not None:
                per_label[name].append(score)
            distance = hd95(labels == value, phantom.labels == value, spacing)
            if distance is not None:
                distances[name].append(distance)
    dice_by_label = {name: float(np.mean(scores)) for name, scores in per_label.items() if scores}
    hd95_by_label = {name: float(np.mean(values)) for name, values in distances.items() if values}
    values = list(dice_by_label.values())
    return {"cases": len(phantoms), "mean_dice": float(np.mean(values)) if values else 0.0,
            "min_dice": float(np.min(values)) if values else 0.0, "dice": dice_by_label,
            "mean_hd95_mm": float(np.mean(list(hd95_by_label.values()))) if hd95_by_label else None,
            "hd95_mm": hd95_by_label}


def _landmark_metrics(package, phantoms, predictor):
    errors = {landmark["name"]: [] for landmark in package.outputs["landmarks"]}
    line_errors = {line["name"]: [] for line in package.outputs.get("lines", [])}
    confident, confident_hits = 0, 0
    for phantom in phantoms:
        result = detect_landmarks(package, phantom_volume(phantom), predictor=predictor)
        truth = {name: np.asarray(position, dtype=float) for name, position in phantom.landmarks.items()}
        for point in result.points:
            error = float(np.linalg.norm(np.asarray(point["position"]) - truth[point["label"]]))
            errors[point["label"]].append(error)
            if point["confidence"] >= 0.5:
                confident, confident_hits = confident + 1, confident_hits + (error <= 3.0)
        for line in result.lines:
            true_length = float(np.linalg.norm(truth[line["from"]] - truth[line["to"]]))
            line_errors[line["name"]].append(abs(line["length"] - true_length))
    every = np.concatenate([np.asarray(e) for e in errors.values()])
    metrics = {"cases": len(phantoms), "mean_radial_error_mm": float(every.mean()),
               "max_error_mm": float(every.max()),
               "radial_error_mm": {name: float(np.mean(e)) for name, e in errors.items()},
               "p95_error_mm": {name: float(np.percentile(e, 95)) for name, e in errors.items()},
               "within_3mm": {name: float(np.mean(np.asarray(e) <= 3.0)) for name, e in errors.items()},
               "confident_points": confident,
               "confident_within_3mm": float(confident_hits / confident) if confident else None}
    if line_errors:
        metrics["line_length_error_mm"] = {name: float(np.mean(e)) for name, e in line_errors.items()}
        metrics["line_length_within_2mm"] = {name: float(np.mean(np.asarray(e) <= 2.0))
                                             for name, e in line_errors.items()}
    return metrics


def _classification_metrics(package, phantoms, predictor):
    probabilities, truth, decided = [], [], []
    for phantom in phantoms:
        result = classify_volume(package, phantom_volume(phantom), predictor=predictor)
        probabilities.append(result.probabilities)
        decided.append(package.outputs["classes"].index(result.decision))
        truth.append(int(phantom.label))
    probabilities, truth = np.asarray(probabilities, dtype=float), np.asarray(truth)
    classes = [c for c in range(probabilities.shape[1]) if 0 < np.sum(truth == c) < len(truth)]
    if not classes:
        raise ValueError("The AUC needs phantoms of at least two classes.")
    metrics = {"cases": len(phantoms), "auc": float(np.mean([auc(probabilities[:, c], truth == c) for c in classes])),
               "accuracy": float(np.mean(np.asarray(decided) == truth)),
               "cases_per_class": {name: int(np.sum(truth == c)) for c, name in enumerate(package.outputs["classes"])}}
    if probabilities.shape[1] == 2:  # how far the probability of the second class can be taken at its word
        metrics["brier"] = brier_score(probabilities[:, 1], truth == 1)
        metrics["reliability"] = reliability_table(probabilities[:, 1], truth == 1)
    severity = [(phantom.info or {}).get("severity") for phantom in phantoms]
    if None not in severity and probabilities.shape[1] == 2:
        # the class of an atrophy phantom only moves its severity, and the two classes' severities overlap: the
        # AUC of the true severity is the most any reader of these images can reach
        metrics["auc_ceiling"] = auc(severity, truth == 1)
    return metrics


def dice(predicted, reference) -> Optional[float]:
    """Dice of two masks; None when both are empty (nothing to score)."""
    total = int(predicted.sum()) + int(reference.sum())
    return 2.0 * int(np.logical_and(predicted, reference).sum()) / total if total else None


def auc(scores, positive) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counting one half."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        raise ValueError("The AUC needs at least one positive and one negative case.")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def hd95(predicted, reference, spacing) -> Optional[float]:
    """95th-percentile symmetric surface distance in mm (the larger of the two directed 95th percentiles, as
    MONAI and the Medical Segmentation Decathlon report it); None when either mask is empty."""
    if not predicted.any() or not reference.any():
        return None
    import SimpleITK as sitk

    directed = []
    for source, target in ((predicted, reference), (reference, predicted)):
        image = sitk.GetImageFromArray(target.astype(np.uint8))
        image.SetSpacing([float(s) for s in spacing])
        distance = sitk.GetArrayFromImage(sitk.Abs(sitk.SignedMaurerDistanceMap(
            image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)))
        directed.append(np.percentile(distance[_surface(source)], 95))
    return float(max(directed))


def _surface(mask):
    """Voxels of ``mask`` with a 6-neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner
