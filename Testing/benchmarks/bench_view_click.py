"""Click-to-segment as a person feels it, in a real Slicer slice view (trame-slicer, headless): from the mouse click
injected into the view to the rendered overlay, first click (the server prepares the volume and runs the windows
around the point) and second click (its cache), beside a full segmentation of the same volume by the same model,
measured in the same run on the same local server. The demo CT and the demo model (CPU).

    .venv-views/bin/python Testing/benchmarks/bench_view_click.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "Testing" / "views")]

from slice_views import SliceViews, liver_centre  # noqa: E402

import conftest  # noqa: E402  (module folders on sys.path, EGL)

CT = ROOT / "Resources" / "SampleData" / "NNMambaDemoAbdomenCT.nrrd"
MODEL = "demo-abdomen-ct"


def one_round(backend, liver_ras):
    """(first click s, second click s, full segmentation s, [(slicer's click, answer and write, render) per click])
    on a fresh upload, so that the first click is a first."""
    from NNMambaSegmentationLib.click_tool import ClickTool
    from NNMambaSegmentationLib.clicks import ClickSession
    from NNMambaSegmentationLib.segmentation_run import SegmentationRun

    views = SliceViews()
    try:
        volume = views.load_volume(CT, window_level=(400, 40))
        started = time.perf_counter()
        SegmentationRun(backend, [volume], MODEL).wait(timeout=600, interval=0.02)
        full = time.perf_counter() - started
        backend._sessions.clear()   # forget the upload: the click session starts from nothing, as a first click does
        segmentation = views.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "clicks")
        session = ClickSession(backend, [volume], MODEL, segmentation)
        tool = ClickTool(lambda: session, lambda text: None, views.interaction, views.selection,
                         views.app.markups_logic)
        tool.start()
        times, phases = [], []
        for offset in (0.0, 4.0):
            xy = views.show_point((liver_ras[0] + offset, liver_ras[1], liver_ras[2]))
            started = time.perf_counter()
            views.click(xy)            # Slicer's interactor style and markups widget place the point (and render)
            placed = time.perf_counter()
            outcome = tool.wait()   # the server's answer written into the segment
            written = time.perf_counter()
            views.pixels()             # rendered with the overlay
            times.append(time.perf_counter() - started)
            phases.append((placed - started, written - placed, time.perf_counter() - written))
            assert outcome.structure == "liver", outcome
        tool.stop()
        return times[0], times[1], full, phases
    finally:
        views.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from NNMambaSlicerLib.backend import Backend

    backend = Backend.local(device="cpu", python=conftest.backend_python())
    try:
        liver = liver_centre(backend, CT, MODEL)
        rounds = [one_round(backend, liver) for _ in range(args.rounds)]
    finally:
        backend.stop()
    first, second, full = (statistics.median(values) for values in list(zip(*rounds))[:3])
    print(f"click -> rendered overlay in a Slicer slice view, demo CT, {MODEL}, CPU, median of {args.rounds} rounds")
    print(f"{'full segmentation (job)':28s} {full:8.3f} s   1.00x")
    print(f"{'first click':28s} {first:8.3f} s   {first / full:.2f}x of the full segmentation")
    print(f"{'second click (cache)':28s} {1000 * second:8.1f} ms  {second / full:.3f}x")
    for name, index in (("first", 0), ("second", 1)):
        placed, written, rendered = (statistics.median(r[3][index][phase] for r in rounds) for phase in range(3))
        print(f"  {name} click: Slicer places the point {1000 * placed:.0f} ms, answer + segment write "
              f"{1000 * written:.0f} ms, render {1000 * rendered:.0f} ms")
    print("rounds (first, second, full):", ", ".join(f"({r[0]:.3f}, {r[1]:.3f}, {r[2]:.3f})" for r in rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
