"""Render the result screenshots of the README and the Extensions Index with Slicer's own slice views (trame-slicer,
headless): the demo CT segmented by the demo model, and the demo fetal volume with its six landmarks and three
measurement lines. Slicer's displayable managers draw them, not our code.

    bash .ci/setup-env && bash .ci/setup-views
    .venv-views/bin/python Utilities/render_screenshots.py [--out Resources/Screenshots]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "Testing" / "views")]

from slice_views import SliceViews  # noqa: E402

import conftest  # noqa: E402  (puts the module folders on sys.path, selects EGL)

SAMPLES = ROOT / "Resources" / "SampleData"
SIZE = (640, 640)


def segmentation_screenshot(backend, out):
    """The demo CT, axial through the liver's middle, with every segment of demo-abdomen-ct."""
    from NNMambaSegmentationLib.segmentation_run import SegmentationRun
    from NNMambaSegmentationLib.segments import find_segment

    views = SliceViews(size=SIZE)
    try:
        volume = views.load_volume(SAMPLES / "NNMambaDemoAbdomenCT.nrrd", window_level=(400, 40))
        run = SegmentationRun(backend, [volume], "demo-abdomen-ct")
        run.wait(timeout=600)
        node, _report = run.finish()
        liver = find_segment(node, "liver")
        bounds = [0.0] * 6
        node.GetSegmentation().GetSegment(liver).GetBounds(bounds)
        center = [(bounds[2 * axis] + bounds[2 * axis + 1]) / 2 for axis in range(3)]
        views.show_point(center)
        return views.save_png(out / "NNMambaSegmentation-SliceView.png")
    finally:
        views.close()


def landmarks_screenshot(backend, out):
    """The demo fetal volume in the plane of the TCD line and the landmarks' centre, with all points and lines."""
    from NNMambaLandmarksLib.landmark_run import LandmarkRun

    views = SliceViews(size=SIZE)
    try:
        volume = views.load_volume(SAMPLES / "NNMambaDemoFetalBrain.nrrd")
        nodes = LandmarkRun(backend, volume, "demo-fetal-landmarks").wait(timeout=600)
        points = np.array([world_position(nodes.points, index) for index in range(6)])
        tcd, centre = points[1] - points[0], points.mean(0)
        normal = np.cross(tcd, centre - points[0])
        normal /= np.linalg.norm(normal)
        views.slice_node.SetSliceToRASByNTP(*normal, *(tcd / np.linalg.norm(tcd)), *centre, 0)
        views.slice_node.SetFieldOfView(45.0, 45.0, views.slice_node.GetFieldOfView()[2])
        for line in nodes.lines.values():
            line.GetDisplayNode().SetSliceProjection(True)   # lines out of the plane show as projections
        nodes.points.GetDisplayNode().SetSliceProjection(True)
        views.view.render()
        return views.save_png(out / "NNMambaLandmarks-SliceView.png")
    finally:
        views.close()


def world_position(points, index):
    position = [0.0, 0.0, 0.0]
    points.GetNthControlPointPositionWorld(index, position)
    return position


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "Screenshots")
    args = parser.parse_args(argv)
    from NNMambaSlicerLib.backend import Backend

    args.out.mkdir(parents=True, exist_ok=True)
    backend = Backend.local(device="cpu", python=conftest.backend_python())
    try:
        for render in (segmentation_screenshot, landmarks_screenshot):
            print("wrote", render(backend, args.out))
    finally:
        backend.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
