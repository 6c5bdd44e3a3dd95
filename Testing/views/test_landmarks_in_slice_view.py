"""Predicted fetal landmarks in a real Slicer slice view: the six points and three measurement lines of the demo
model on the demo fetal volume, a point dragged with the mouse through Slicer's markups widget, and the line and
the measurement table following it exactly (NNMambaLandmarksLib.LandmarkLinks, the code the module runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FETAL = ROOT / "Resources" / "SampleData" / "NNMambaDemoFetalBrain.nrrd"
LABELS = ["TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2"]


def position(points, index):
    ras = [0.0, 0.0, 0.0]
    points.GetNthControlPointPositionWorld(index, ras)
    return np.array(ras)


def drawn_near(views, xy, colour, radius=3, tolerance=8.0):
    """Whether the rendered view has ``colour`` (0..1 RGB) within ``radius`` pixels of view XY."""
    image = views.pixels()
    row = image.shape[0] - 1 - int(xy[1])
    window = image[row - radius:row + radius + 1, int(xy[0]) - radius:int(xy[0]) + radius + 1].reshape(-1, 3)
    return float(np.min(np.linalg.norm(window - 255 * np.asarray(colour), axis=1))) < tolerance


def table_length(table, name):
    for row in range(table.GetNumberOfRows()):
        if table.GetCellText(row, 0) == name:
            return table.GetTable().GetValue(row, 3).ToDouble()
    raise AssertionError(f"no {name} row")


def test_dragging_a_landmark_moves_its_line_and_its_measurement(views, backend, tmp_path):
    from NNMambaLandmarksLib import LandmarkLinks
    from NNMambaLandmarksLib.landmark_run import LandmarkRun

    volume = views.load_volume(FETAL)
    nodes = LandmarkRun(backend, volume, "demo-fetal-landmarks").wait(timeout=300)
    points = nodes.points
    assert [points.GetNthControlPointLabel(i) for i in range(6)] == LABELS
    assert set(nodes.lines) == {"TCD", "HDV", "ADV"}
    colour = points.GetDisplayNode().GetSelectedColor()
    for index in range(6):   # each landmark is drawn where it is, by Slicer's markups displayable manager
        xy = views.show_point(position(points, index))
        assert drawn_near(views, xy, colour), points.GetNthControlPointLabel(index)
    tcd1, tcd2 = position(points, 0), position(points, 1)   # the TCD line, in a plane that holds both its ends
    normal = np.cross(tcd2 - tcd1, position(points, 4) - tcd1)
    views.slice_node.SetSliceToRASByNTP(*(normal / np.linalg.norm(normal)), *(tcd2 - tcd1), *tcd1, 0)
    views.view.render()
    line_colour = nodes.lines["TCD"].GetDisplayNode().GetSelectedColor()
    assert drawn_near(views, views.xy_of((tcd1 + tcd2) / 2), line_colour, radius=2)
    views.save_png(tmp_path / "landmarks-tcd-plane.png")

    links = LandmarkLinks(points)
    links.attach()
    try:
        start = views.show_point(position(points, 0))           # the slice through TCD1
        end = (start[0] + 25, start[1] - 15)
        other = position(points, 1)
        views.save_png(tmp_path / "landmarks-before.png")
        views.drag(start, end)                                  # Slicer's markups widget moves the point
        moved = position(points, 0)
        np.testing.assert_allclose(moved, views.ras_of(end), atol=1e-3)
        expected = float(np.linalg.norm(moved - other))
        assert nodes.line_length("TCD") == pytest.approx(expected, abs=1e-6)
        assert table_length(nodes.table, "TCD") == pytest.approx(expected, abs=1e-6)
        line_start = [0.0, 0.0, 0.0]
        nodes.lines["TCD"].GetNthControlPointPositionWorld(0, line_start)
        np.testing.assert_allclose(line_start, moved, atol=1e-9)
        views.save_png(tmp_path / "landmarks-after.png")
    finally:
        links.detach()
