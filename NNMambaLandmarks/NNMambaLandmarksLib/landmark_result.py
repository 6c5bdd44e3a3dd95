"""The server's landmark answer (JSON of ``GET /jobs/{id}/result?format=json``), checked once here so that the
node-building code can trust it: a bad answer must fail with a message, not leave half-built nodes in the scene.

Shape (nnmamba.server.results.landmark_result): ``points`` [{"label", "position" [x, y, z] LPS mm, "confidence"}],
``lines`` [{"name", "from", "to", "length"}]. Line lengths in the answer are ignored: the line nodes measure
themselves, and must keep doing so when the user moves a point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple


class LandmarkResultError(ValueError):
    """The landmark answer cannot be shown (missing, duplicate or unplaced landmarks, lines to unknown points)."""


@dataclass(frozen=True)
class Landmark:
    label: str
    position_lps: Tuple[float, float, float]
    confidence: Optional[float] = None

    @property
    def description(self):
        """What the point's description shows, e.g. "confidence 0.93" (empty when the model gave none)."""
        return "" if self.confidence is None else f"confidence {self.confidence:.2f}"


@dataclass(frozen=True)
class Measurement:
    name: str
    start: str   # landmark label
    end: str


@dataclass(frozen=True)
class LandmarkSet:
    landmarks: Tuple[Landmark, ...]
    measurements: Tuple[Measurement, ...]

    @property
    def labels(self):
        return [landmark.label for landmark in self.landmarks]


def parse_landmark_result(document):
    """A :class:`LandmarkSet` from the result JSON (a dict); :class:`LandmarkResultError` says what is wrong."""
    if isinstance(document, LandmarkSet):
        return document
    if not isinstance(document, dict) or not isinstance(document.get("points"), list) or not document["points"]:
        raise LandmarkResultError(
            "The landmark result has no 'points' list. Is the chosen model a landmark model? "
            "Pick a model whose task is 'landmarks' and run it again."
        )
    landmarks = tuple(_landmark(point, index) for index, point in enumerate(document["points"]))
    labels = [landmark.label for landmark in landmarks]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise LandmarkResultError(f"The landmark result names these landmarks more than once: {repeated}.")
    lines = document.get("lines") or []
    if not isinstance(lines, list):
        raise LandmarkResultError("The landmark result's 'lines' must be a list of {name, from, to}.")
    measurements = tuple(_measurement(line, index, labels) for index, line in enumerate(lines))
    names = [measurement.name for measurement in measurements]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LandmarkResultError(f"The landmark result names these lines more than once: {repeated}.")
    return LandmarkSet(landmarks, measurements)


def _landmark(point, index):
    if not isinstance(point, dict):
        raise LandmarkResultError(f"Landmark {index} of the result is not an object with 'label' and 'position'.")
    label = point.get("label")
    if not isinstance(label, str) or not label.strip():
        raise LandmarkResultError(f"Landmark {index} of the result has no label.")
    try:
        position = tuple(float(value) for value in point["position"])
    except (KeyError, TypeError, ValueError):
        position = ()
    if len(position) != 3 or not all(math.isfinite(value) for value in position):
        raise LandmarkResultError(
            f"Landmark {label!r} has no finite [x, y, z] position ({point.get('position')!r}); "
            "the prediction failed for it. Check the input volume and run the model again."
        )
    confidence = point.get("confidence")
    if confidence is not None:
        try:
            confidence = float(confidence)
        except (TypeError, ValueError):
            raise LandmarkResultError(f"Landmark {label!r} has a non-numeric confidence {confidence!r}.") from None
    return Landmark(label, position, confidence)


def _measurement(line, index, labels):
    if not isinstance(line, dict) or not isinstance(line.get("name"), str) or not line["name"].strip():
        raise LandmarkResultError(f"Line {index} of the landmark result has no name.")
    name = line["name"]
    for end in ("from", "to"):
        if line.get(end) not in labels:
            raise LandmarkResultError(
                f"Line {name!r} ends at landmark {line.get(end)!r} ('{end}'), which the result does not contain "
                f"(it has {labels}). The model package's 'lines' and 'landmarks' do not match; fix its model.json."
            )
    if line["from"] == line["to"]:
        raise LandmarkResultError(f"Line {name!r} starts and ends at the same landmark {line['from']!r}.")
    return Measurement(name, line["from"], line["to"])
