"""Landmarks as a CSV table for spreadsheets: one row per point (LPS position, the model's confidence) and one
per line (length, its two ends). The columns are those of the Landmarks module's *Export CSV*, so a table from the
command line and one from Slicer read the same."""

from __future__ import annotations

import csv

from nnmamba.formats.atomic import atomic_write

CSV_COLUMNS = ("name", "kind", "x_lps", "y_lps", "z_lps", "confidence", "length_mm", "from", "to")


def write_landmark_csv(path, points, lines=()):
    """``points``: [{"label", "position" (LPS mm), "confidence" (float or None)}]; ``lines``: [{"name", "length"
    (mm), "from", "to"}]. Written all-or-nothing."""
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for point in points:
            confidence = point.get("confidence")
            writer.writerow([point["label"], "point", *(f"{float(v):.3f}" for v in point["position"]),
                             "" if confidence is None else f"{float(confidence):.3f}", "", "", ""])
        for line in lines:
            writer.writerow([line["name"], "line", "", "", "", "", f"{float(line['length']):.3f}",
                             line.get("from", ""), line.get("to", "")])


def points_with_confidence(points):
    """The points as :func:`nnmamba.formats.write_landmarks` takes them, each point's confidence in its
    description (what Slicer shows next to the point; the table above keeps it as a number)."""
    return [{"label": p["label"], "position": p["position"],
             "description": "" if p.get("confidence") is None else f"confidence {float(p['confidence']):.2f}"}
            for p in points]
