"""Held-out metrics of a model package on phantoms, measured through the same task functions a user calls, on each
phantom's own grid: Dice per organ, radial error per landmark, AUC of the class probability."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..predictor import NetworkPredictor
from ..tasks.classification import classify_volume
from ..tasks.landmarks import detect_landmarks
from ..tasks.segmentation import segment_volume
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
    for phantom in phantoms:
        labels = segment_volume(package, phantom_volume(phantom), predictor=predictor).labels
        for value, name in names.items():
            score = dice(labels == value, phantom.labels == value)
            if score is not None:
                per_label[name].append(score)
    dice_by_label = {name: float(np.mean(scores)) for name, scores in per_label.items() if scores}
    values = list(dice_by_label.values())
    return {"cases": len(phantoms), "mean_dice": float(np.mean(values)) if values else 0.0,
            "min_dice": float(np.min(values)) if values else 0.0, "dice": dice_by_label}


def _landmark_metrics(package, phantoms, predictor):
    errors = {landmark["name"]: [] for landmark in package.outputs["landmarks"]}
    for phantom in phantoms:
        result = detect_landmarks(package, phantom_volume(phantom), predictor=predictor)
        for point in result.points:
            truth = np.asarray(phantom.landmarks[point["label"]], dtype=float)
            errors[point["label"]].append(float(np.linalg.norm(np.asarray(point["position"]) - truth)))
    every = np.concatenate([np.asarray(e) for e in errors.values()])
    return {"cases": len(phantoms), "mean_radial_error_mm": float(every.mean()),
            "radial_error_mm": {name: float(np.mean(e)) for name, e in errors.items()},
            "p95_error_mm": {name: float(np.percentile(e, 95)) for name, e in errors.items()},
            "within_3mm": {name: float(np.mean(np.asarray(e) <= 3.0)) for name, e in errors.items()}}


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
    return {"cases": len(phantoms), "auc": float(np.mean([auc(probabilities[:, c], truth == c) for c in classes])),
            "accuracy": float(np.mean(np.asarray(decided) == truth)),
            "cases_per_class": {name: int(np.sum(truth == c)) for c, name in enumerate(package.outputs["classes"])}}


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
