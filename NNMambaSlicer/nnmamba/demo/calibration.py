"""A classifier's probability that means what it says: Platt scaling fitted on the validation phantoms and folded
into the network's last layer (same architecture, same keys), and the figures that show it (the Brier score, a
reliability table: predicted probability against the share of cases that really are positive, per bin). For a
landmark model: the heatmap peak that counts as full confidence, and the anatomy's distances its decoding keeps."""

from __future__ import annotations

import numpy as np

from ..tasks.heatmap_peaks import SHAPE_CANDIDATES


def platt_scaling(logits, positive, ridge=1e-3, iterations=100):
    """``(a, b)`` minimising the log loss of ``sigmoid(a * logit + b)`` on ``positive``: Newton's method with the
    step halved until the loss goes down (from a = 1, b = 0 a full step can overshoot on large logits); the small
    ridge keeps it finite when the validation cases are perfectly separated."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(positive, dtype=np.float64)
    if not 0 < y.sum() < len(y):
        raise ValueError("Calibration needs validation cases of both classes.")
    features = np.stack([z, np.ones_like(z)], axis=1)

    def loss(params):
        s = features @ params
        return float(np.sum(np.logaddexp(0, s) - y * s) + 0.5 * ridge * params @ params)

    params = np.array([1.0, 0.0])
    for _ in range(iterations):
        p = 0.5 * (1 + np.tanh(0.5 * (features @ params)))     # sigmoid without overflow
        gradient = features.T @ (p - y) + ridge * params
        hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge * np.eye(2)
        step, current = np.linalg.solve(hessian, gradient), loss(params)
        while loss(params - step) > current and np.abs(step).max() > 1e-12:
            step = step / 2
        params = params - step
        if np.abs(step).max() < 1e-10:
            break
    return float(params[0]), float(params[1])


def fold_into_last_layer(model, scale, shift):
    """Make the network output ``scale * logit + shift``: the last Linear layer's weights and bias absorb it."""
    import torch

    last = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.mul_(scale).add_(shift)


def calibrate_classifier(package, model, phantoms) -> dict:
    """Fit Platt scaling to ``model``'s logits on the validation ``phantoms`` (through the user's inference path)
    and fold it into the model; returns what was done, for the model card."""
    from ..predictor import NetworkPredictor
    from ..tasks.classification import classify_volume
    from .training_data import phantom_volume

    predictor = NetworkPredictor(model, device="cpu", activation=package.inference["activation"], mirroring=False)
    logits = [classify_volume(package, phantom_volume(p), predictor=predictor).logits[0] for p in phantoms]
    scale, shift = platt_scaling(logits, [int(p.label) == 1 for p in phantoms])
    fold_into_last_layer(model, scale, shift)
    return {"method": "Platt scaling fitted on the validation phantoms, folded into the last Linear layer",
            "scale": scale, "shift": shift, "cases": len(phantoms),
            "card": f"Probability calibrated by Platt scaling on the {len(phantoms)} validation phantoms."}


def landmark_peak_scale(package, model, phantoms) -> dict:
    """The heatmap height that counts as full confidence: the median peak of the landmarks found on the validation
    ``phantoms``. A heatmap trained by weighted MSE peaks below its target's 1, so taking 1 as full confidence
    would call almost every point doubtful; against the median, a clear, typical peak scores 1."""
    from ..predictor import NetworkPredictor
    from ..tasks.landmarks import detect_landmarks
    from .training_data import phantom_volume

    predictor = NetworkPredictor(model, device="cpu", activation=package.inference["activation"], mirroring=False)
    peaks = [point["peak"] for p in phantoms
             for point in detect_landmarks(package, phantom_volume(p), predictor=predictor).points]
    scale = round(float(np.median(peaks)), 4)
    return {"method": "median heatmap peak of the landmarks found on the validation phantoms", "cases": len(phantoms),
            "peak_scale": scale,
            "card": f"Full confidence is a heatmap peak of {scale:g}, the median on the {len(phantoms)} validation "
                    "phantoms."}


MEDIAN_OF_CHI3 = 1.5382    # median length of a 3D standard normal vector: radial error median -> per-axis spread


def landmark_shape(package, model, training, validation) -> dict:
    """``decoding.shape`` for a landmark model: the mean, spread and correlation of every pair's distance over the
    ``training`` phantoms' landmarks (the anatomy the network learnt), and the network's per-axis error on the
    ``validation`` phantoms (their median radial error / MEDIAN_OF_CHI3), which widens each distance's spread."""
    import itertools

    from ..predictor import NetworkPredictor
    from ..tasks.landmarks import detect_landmarks
    from .training_data import phantom_volume

    names = [landmark["name"] for landmark in package.outputs["landmarks"]]
    points = np.array([[p.landmarks[name] for name in names] for p in training], dtype=float)
    ends = list(itertools.combinations(range(len(names)), 2))
    distances = np.stack([np.linalg.norm(points[:, a] - points[:, b], axis=1) for a, b in ends], axis=1)
    sd = np.maximum(distances.std(axis=0), 0.01)
    pairs = [{"from": names[a], "to": names[b], "mean_mm": round(float(mean), 3), "sd_mm": round(float(spread), 3)}
             for (a, b), mean, spread in zip(ends, distances.mean(axis=0), sd)]
    correlation = np.corrcoef(distances, rowvar=False) if len(training) > 2 else np.eye(len(ends))
    correlation = np.round(np.nan_to_num(correlation) + 0.0, 3).tolist()   # (+ 0.0: no -0.0 in the file)
    predictor = NetworkPredictor(model, device="cpu", activation=package.inference["activation"], mirroring=False)
    errors = [np.linalg.norm(np.subtract(point["position"], p.landmarks[point["label"]])) for p in validation
              for point in detect_landmarks(package, phantom_volume(p), predictor=predictor).points]
    noise = round(float(np.median(errors)) / MEDIAN_OF_CHI3, 3)
    return {"shape": {"pairs": pairs, "correlation": correlation, "localisation_sd_mm": noise},
            "method": "distances between the training phantoms' landmarks (mean, spread, correlation); localisation "
                      "spread from the validation phantoms' median radial error", "training_cases": len(training),
            "card": f"Each point is chosen among its heatmap's {SHAPE_CANDIDATES} best peaks so that the "
                    f"{len(pairs)} distances between the landmarks fit those of the {len(training)} training "
                    f"phantoms (spread widened by the network's {noise:g} mm error per axis on the validation "
                    "phantoms)."}


def brier_score(probabilities, positive) -> float:
    p, y = np.asarray(probabilities, dtype=float), np.asarray(positive, dtype=float)
    return float(np.mean((p - y) ** 2))


def reliability_table(probabilities, positive, bins=5) -> list:
    """Per probability bin: the cases, their mean predicted probability and the share that really is positive."""
    p, y = np.asarray(probabilities, dtype=float), np.asarray(positive, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    for n, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (p >= low) & ((p < high) if n < bins - 1 else (p <= high))
        if inside.any():
            table.append({"range": [round(float(low), 2), round(float(high), 2)], "cases": int(inside.sum()),
                          "mean_probability": round(float(p[inside].mean()), 3),
                          "observed": round(float(y[inside].mean()), 3)})
    return table

