"""Landmark results as one Slicer ``.mrk.json`` file (slicer-platform.md §4): a point list plus one line per
measurement (e.g. TCD = TCD1 to TCD2), so Slicer shows the points and measures the lengths itself.

One file holds all markups: Slicer's markups reader (``vtkSlicerMarkupsLogic::LoadMarkups``, used by "Add data")
creates one node per entry of ``markups``, named after each entry's ``name`` (checked with slicer-core in
test_formats.py). Positions are LPS millimetres, as Slicer writes them; Slicer converts to RAS on load.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from nnmamba.formats.atomic import read_json, write_json

SCHEMA_URL = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
# What Slicer's reader accepts as a markups file (vtkMRMLMarkupsJsonStorageNode).
SCHEMA_PATTERN = re.compile(r".*markups-schema-v1\.[0-9]+\.[0-9]+\.json#*$", re.IGNORECASE)
LPS_IDENTITY_ORIENTATION = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]  # identity in RAS, as stored in LPS
LENGTH_PRINT_FORMAT = "%-#4.4g%s"


@dataclass
class Landmarks:
    """What :func:`read_landmarks` returns. points: [{"label", "position" (LPS mm), "description"}];
    lines: [{"name", "from", "to", "endpoints" (2 LPS positions), "length" (mm), "description"}]."""

    points: list
    lines: list

    def position(self, label):
        for point in self.points:
            if point["label"] == label:
                return point["position"]
        raise KeyError(f"No landmark labelled {label!r}; labels: {[p['label'] for p in self.points]}")


def write_landmarks(path, points, lines=(), name="Landmarks"):
    """Write landmarks {"label", "position": [x, y, z] LPS mm, "description"} and lines {"name", "from", "to",
    "description"} between them as one .mrk.json: a Fiducial markup, then one Line markup per line."""
    points = [_checked_point(point, index) for index, point in enumerate(points)]
    _check_unique("landmark label", [point["label"] for point in points])
    by_label = {point["label"]: point for point in points}
    lines = [_checked_line(line, index, by_label) for index, line in enumerate(lines)]
    _check_unique("line name", [line["name"] for line in lines])
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"The point list needs a non-empty name, got {name!r}.")

    markups = [_markup("Fiducial", name, points, fixed=True)]
    for line in lines:
        ends = [by_label[line["from"]], by_label[line["to"]]]
        markup = _markup("Line", line["name"], ends, fixed=False)
        markup["measurements"] = [
            {
                "name": "length",
                "enabled": True,
                "value": _distance(ends[0]["position"], ends[1]["position"]),
                "units": "mm",
                "printFormat": LENGTH_PRINT_FORMAT,
            }
        ]
        if line["description"]:
            markup["description"] = line["description"]  # ours only: Slicer keeps no per-node description here
        markups.append(markup)

    document = {"@schema": SCHEMA_URL, "markups": markups}
    write_json(path, document)


def read_landmarks(path):
    """Read the points of all Fiducial markups and all Line markups of a .mrk.json (ours or Slicer's), in LPS."""
    document = read_json(path)
    if not isinstance(document, dict) or not SCHEMA_PATTERN.match(str(document.get("@schema", ""))):
        raise ValueError(f"{path} is not a Slicer markups file (no markups-schema-v1.x.y '@schema' entry).")
    points, lines = [], []
    for markup in document.get("markups", []):
        control_points = _read_control_points(markup, path)
        if markup.get("type") == "Fiducial":
            points += control_points
        elif markup.get("type") == "Line" and len(control_points) == 2:
            start, end = control_points
            lines.append(
                {
                    "name": markup.get("name", ""),
                    "from": start["label"],
                    "to": end["label"],
                    "endpoints": [start["position"], end["position"]],
                    "length": _distance(start["position"], end["position"]),
                    "description": markup.get("description", ""),
                }
            )
    return Landmarks(points, lines)


def _markup(markup_type, name, points, fixed):
    return {
        "type": markup_type,
        "name": name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": False,
        "fixedNumberOfControlPoints": fixed,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(points),
        "controlPoints": [
            {
                "id": str(number),
                "label": point["label"],
                "description": point["description"],
                "associatedNodeID": "",
                "position": point["position"],
                "orientation": LPS_IDENTITY_ORIENTATION,
                "selected": True,
                "locked": False,
                "visibility": True,
                "positionStatus": "defined",
            }
            for number, point in enumerate(points, start=1)
        ],
        "measurements": [],
    }


def _read_control_points(markup, path):
    flip = -1.0 if markup.get("coordinateSystem", "LPS") == "RAS" else 1.0
    control_points = []
    for point in markup.get("controlPoints", []):
        position = point.get("position")
        if point.get("positionStatus", "defined") != "defined" or not isinstance(position, list) or len(position) != 3:
            continue  # an unplaced point of a Slicer point list
        x, y, z = (float(v) for v in position)
        label, description = point.get("label", ""), point.get("description", "")
        control_points.append({"label": label, "position": [flip * x, flip * y, z], "description": description})
    return control_points


def _checked_point(point, index):
    if not isinstance(point, dict):
        raise ValueError(f"Landmark {index} must be a dict with 'label', 'position' and optional 'description'.")
    label = point.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"Landmark {index} needs a non-empty 'label' string, got {label!r}.")
    try:
        position = [float(v) for v in point.get("position")]
    except (TypeError, ValueError):
        position = []
    if len(position) != 3:
        raise ValueError(f"Landmark {label!r} needs 'position' = [x, y, z] in LPS millimetres.")
    if not all(math.isfinite(v) for v in position):
        raise ValueError(f"Landmark {label!r} has a NaN or infinite position {position}; the prediction failed.")
    return {"label": label, "position": position, "description": _checked_description(point, f"Landmark {label!r}")}


def _checked_line(line, index, by_label):
    if not isinstance(line, dict):
        raise ValueError(f"Line {index} must be a dict with 'name', 'from', 'to' and optional 'description'.")
    name = line.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"Line {index} needs a non-empty 'name' string, got {name!r}.")
    for end in ("from", "to"):
        if line.get(end) not in by_label:
            raise ValueError(
                f"Line {name!r}: '{end}' names landmark {line.get(end)!r}, which is not among the points "
                f"{sorted(by_label)}."
            )
    if line["from"] == line["to"]:
        raise ValueError(f"Line {name!r} starts and ends at the same landmark {line['from']!r}.")
    return {"name": name, "from": line["from"], "to": line["to"], "description": _checked_description(line, name)}


def _checked_description(entry, what):
    description = entry.get("description", "")
    if description is None:
        return ""
    if not isinstance(description, str):
        raise ValueError(f"{what}: 'description' must be a string, got {description!r}.")
    return description


def _check_unique(what, values):
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"Each {what} must be unique; repeated: {duplicates}.")


def _distance(a, b):
    return math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b)))
