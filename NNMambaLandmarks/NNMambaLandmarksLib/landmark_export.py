"""Export the landmarks as the user left them (after any drags): one ``.mrk.json`` holding the point list and the
lines (Slicer's "Add data" loads all of them), and a CSV for spreadsheets. Both written all-or-nothing.

Files are LPS like every file Slicer writes; positions are taken in the nodes' own frame (no parent transform),
as Slicer's markups storage does.
"""

from __future__ import annotations

from .landmark_nodes import CONFIDENCE_ATTRIBUTE, find_landmark_nodes


class LandmarkExportError(ValueError):
    """Nothing to export, or the nodes are not a landmark result."""


def landmark_points(nodes):
    """[{"label", "position" (LPS mm), "description", "confidence" (the model's, or None)}] of the point list, in
    order."""
    from nnmamba.geometry import ras_to_lps

    nodes = _checked(nodes)
    points = []
    for index in range(nodes.points.GetNumberOfControlPoints()):
        position = [0.0, 0.0, 0.0]
        nodes.points.GetNthControlPointPosition(index, position)
        label = nodes.points.GetNthControlPointLabel(index)
        confidence = nodes.points.GetAttribute(CONFIDENCE_ATTRIBUTE + label)
        points.append({"label": label, "position": [float(v) for v in ras_to_lps(position)],
                       "description": nodes.points.GetNthControlPointDescription(index),
                       "confidence": float(confidence) if confidence else None})
    return points


def landmark_lines(nodes):
    """[{"name", "from", "to", "length" (mm)}] of the measurement lines, in order."""
    nodes = _checked(nodes)
    return [{"name": name, "from": nodes.line_ends(name)[0], "to": nodes.line_ends(name)[1],
             "length": nodes.line_length(name)} for name in nodes.lines]


def export_markups_json(nodes, path):
    """Write the point list and its lines to one ``.mrk.json`` (Slicer markups schema v1.0.3)."""
    from nnmamba.formats import write_landmarks

    nodes = _checked(nodes)
    lines = [{"name": line["name"], "from": line["from"], "to": line["to"]} for line in landmark_lines(nodes)]
    write_landmarks(path, landmark_points(nodes), lines, name=nodes.points.GetName() or "Landmarks")
    return path


def export_csv(nodes, path):
    """One row per point (LPS position, the model's confidence) and one per line (current length, its ends): the
    same table as ``nnmamba predict landmarks --csv`` (nnmamba.formats.write_landmark_csv)."""
    from nnmamba.formats import write_landmark_csv

    nodes = _checked(nodes)
    write_landmark_csv(path, landmark_points(nodes), landmark_lines(nodes))
    return path


def _checked(nodes):
    """Accept LandmarkNodes or a points node made by update_landmark_nodes."""
    if nodes is not None and not hasattr(nodes, "lines"):
        nodes = find_landmark_nodes(nodes)
    if nodes is None or nodes.points is None or nodes.points.GetNumberOfControlPoints() == 0:
        raise LandmarkExportError("There are no landmarks to export: run a landmark model first.")
    return nodes
