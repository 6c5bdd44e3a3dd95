"""Classification: class probabilities and the decision, by the rule written in the model package."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from .common import make_predictor, network_input, prepare_input

if TYPE_CHECKING:
    from ..imaging import Volume
    from ..modelpkg import ModelPackage
    from ..predictor import NetworkPredictor


@dataclass
class ClassificationResult:
    classes: list
    probabilities: list
    decision: str
    rule: dict
    logits: list
    seconds: float

    def as_dict(self, package=None, source=None):
        result = {"classes": self.classes, "probabilities": self.probabilities, "decision": self.decision,
                  "rule": self.rule, "logits": self.logits}
        if package is not None:
            result["model"] = {"id": package.id, "version": package.version}
        if source is not None:
            result["input"] = str(source)
        return result


def classify_volume(package: ModelPackage, volume: Volume, device: str = "auto",
                    predictor: Optional[NetworkPredictor] = None) -> ClassificationResult:
    if package.task != "classification":
        raise ValueError(f"Model {package.id!r} is a {package.task} model, not a classification model.")
    started = time.perf_counter()
    prepared = prepare_input(package, volume)
    predictor = predictor or make_predictor(package, device, mirroring=False)
    logits = np.asarray(predictor(network_input(package, prepared)[None]), dtype=np.float64).reshape(-1)
    classes = list(package.outputs["classes"])
    rule = dict(package.outputs["decision"])
    probabilities, decision = decide(logits, classes, rule)
    return ClassificationResult(classes, probabilities, decision, rule, logits.tolist(),
                                time.perf_counter() - started)


def decide(logits, classes, rule):
    """Probabilities per class and the decided class name."""
    if rule["rule"] == "sigmoid-threshold":
        positive = float(1 / (1 + np.exp(-logits[0])))
        probabilities = [1 - positive, positive]
        return probabilities, classes[1] if positive >= rule.get("threshold", 0.5) else classes[0]
    if rule["rule"] == "argmax":
        e = np.exp(logits - logits.max())
        probabilities = (e / e.sum()).tolist()
        return probabilities, classes[int(np.argmax(probabilities))]
    raise ValueError(f"Unknown decision rule {rule['rule']!r}; use 'sigmoid-threshold' or 'argmax'.")
