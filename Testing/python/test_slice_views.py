"""Runs Testing/views (Slicer's real slice views, headless, through trame-slicer) in their own environment,
.venv-views (`bash .ci/setup-views`), so that `python -m pytest` runs every test. On a machine without that
environment or without OpenGL the test skips with one line saying what to do; in CI (CI=true) it fails instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VIEWS_PYTHON = ROOT / ".venv-views" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def missing(reason):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the slice-view tests: .ci/run calls .ci/setup-views --gl)")
    pytest.skip(reason)


@pytest.mark.slow   # about a minute: a server start, one segmentation and one landmark job on the CPU
def test_click_to_segment_and_landmark_dragging_through_real_slice_views():
    if not VIEWS_PYTHON.is_file():
        missing("no .venv-views for the slice-view tests: run `bash .ci/setup-views` (add --gl as root for Mesa)")
    probe = subprocess.run([str(VIEWS_PYTHON), "-c", "from slice_views import SliceViews; SliceViews().close()"],
                           cwd=ROOT / "Testing" / "views", capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW="vtkEGLRenderWindow"))
    if probe.returncode != 0:
        missing("no OpenGL for offscreen rendering (install libegl1 libegl-mesa0 libgl1-mesa-dri, or run "
                f"`bash .ci/setup-views --gl`): {probe.stderr.strip().splitlines()[-1:]}")
    environment = dict(os.environ, NNMAMBA_BACKEND_PYTHON=sys.executable)
    done = subprocess.run([str(VIEWS_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "."],
                          cwd=ROOT / "Testing" / "views", capture_output=True, text=True, timeout=1200,
                          env=environment)
    summary = [line for line in done.stdout.splitlines() if " passed" in line or " failed" in line or "error" in line]
    assert done.returncode == 0, "\n".join(done.stdout.splitlines()[-60:])
    assert summary and " passed" in summary[-1] and "failed" not in summary[-1], summary
