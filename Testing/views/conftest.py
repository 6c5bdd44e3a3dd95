"""Slicer's real slice views, headless: trame-slicer's SlicerApp renders Slicer's slice logic, displayable managers
and markups widgets offscreen (EGL or OSMesa), and mouse events injected into a view's interactor go through
Slicer's own interactor style and markups widget, as a person's clicks do.

These tests run in their own environment (.venv-views, made by .ci/setup-env): trame-slicer's `standalone` extra
pins slicer-core 5.11 while the main tests use 5.13. The backend they talk to is a real local nnmamba server run by
the main environment's Python (torch lives there), on the bundled demo models.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for folder in ("NNMambaSlicer", "NNMambaSegmentation", "NNMambaLandmarks"):
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")   # no X display: EGL, quietly


def backend_python():
    """The interpreter that runs the nnmamba server (it needs torch): $NNMAMBA_BACKEND_PYTHON, else .venv's."""
    chosen = os.environ.get("NNMAMBA_BACKEND_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
    if not Path(chosen).is_file():
        pytest.skip(f"no backend interpreter at {chosen}: run `bash .ci/setup-env` first")
    return chosen


@pytest.fixture(scope="session")
def backend():
    from NNMambaSlicerLib.backend import Backend

    started = Backend.local(device="cpu", python=backend_python())
    yield started
    started.stop()


@pytest.fixture
def views():
    """A SlicerApp with one offscreen axial slice view (Red), as slicer.mrmlScene for our Lib code."""
    from slice_views import SliceViews

    created = SliceViews()
    yield created
    created.close()
