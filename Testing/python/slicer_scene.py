"""A real Slicer MRML scene outside the Slicer application, from the slicer-core wheel (slicer-platform.md §8).

Our files are only useful if Slicer's own readers accept them, so tests load them with Slicer's C++ storage nodes
rather than with our readers. The module logics are attached as the application does it: that registers the
storage-node classes and segmentation converter rules. Tests that need it call :func:`new_scene`, which skips the test
when slicer-core is not installed (it has wheels for Python 3.10+ only).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import pytest


def require_slicer_core():
    """The ``slicer`` package from slicer-core, or skip. PyPI's unrelated ``slicer`` package does not count."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core (no MRML classes)")
    return slicer


@dataclass
class SlicerScene:
    slicer: types.ModuleType
    scene: object
    application_logic: object
    segmentations: object
    markups: object
    volumes: object
    tables: object

    def add_storage_node(self, class_name, path):
        """A storage node of ``class_name`` in this scene, pointing at ``path``."""
        storage = self.scene.AddNewNodeByClass(class_name)
        storage.SetFileName(str(path))
        return storage

    def close(self):
        """Remove all nodes. (Detaching the Segmentations logic from the scene only logs a harmless warning.)"""
        self.scene.Clear(1)


def new_scene():
    """A fresh scene with the Segmentations, Markups, Volumes and Tables logics attached. Also sets
    ``slicer.mrmlScene`` and a minimal ``slicer.modules`` so that ``slicer.util`` helpers find them."""
    slicer = require_slicer_core()
    scene = slicer.vtkMRMLScene()
    application_logic = slicer.vtkMRMLApplicationLogic()
    application_logic.SetMRMLScene(scene)
    logics = {}
    for name, class_name in (
        ("segmentations", "vtkSlicerSegmentationsModuleLogic"),
        ("markups", "vtkSlicerMarkupsLogic"),
        ("volumes", "vtkSlicerVolumesLogic"),
        ("tables", "vtkSlicerTablesLogic"),
    ):
        logic = getattr(slicer, class_name)()
        logic.SetMRMLScene(scene)
        logics[name] = logic
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(
        **{name: types.SimpleNamespace(logic=lambda logic=logic: logic) for name, logic in logics.items()}
    )
    return SlicerScene(slicer, scene, application_logic, **logics)
