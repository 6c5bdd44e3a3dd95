"""The modules' Lib code where it really runs: in Slicer's own Python, which has only the packages Slicer bundles
until the user presses "Install dependencies" (no jsonschema, slicerio, safetensors, tqdm, fastapi, uvicorn,
pydantic, numba or torch).

A stand-in for that interpreter: a child Python whose importer refuses every top-level module that is neither in
the standard library nor in Slicer's bundled set (the union of Slicer 5.8's and 5.10's
SuperBuild/External_python-*.cmake requirement files, plus Slicer's own vtk/slicer/qt packages; slicer-core stands
in for Slicer's MRML here). What the hub shows on a fresh Slicer (model list, dependency hints, environment
report) and what a remote-only user needs after the client set (slicerio, jsonschema) is installed run in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnmamba.formats import write_segmentation
from nnmamba.geometry import Geometry

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# Top-level import names of what Slicer 5.8 and 5.10 bundle (SuperBuild/External_python-*.cmake: numpy, SimpleITK,
# requests-requirements, dicom-requirements, extension-manager(-ssl)-requirements, pythonqt-requirements, pip,
# setuptools, wheel) and Slicer's own Python packages.
SLICER_BUNDLED = {
    "numpy", "SimpleITK", "requests", "urllib3", "idna", "certifi", "charset_normalizer", "chardet", "pydicom",
    "six", "PIL", "retrying", "dicomweb_client", "packaging", "pyparsing", "pip", "setuptools", "pkg_resources",
    "_distutils_hack", "wheel", "git", "gitdb", "smmap", "github", "jwt", "nacl", "cffi", "_cffi_backend",
    "pycparser", "cryptography", "deprecated", "wrapt", "typing_extensions",
    "slicer", "vtk", "vtkmodules", "qt", "ctk", "slicer_core",
}
OURS = {"nnmamba", "NNMambaSlicerLib", "NNMambaSegmentationLib", "NNMambaLandmarksLib"}
# The client set (Resources/requirements-client.txt) and what those packages import.
CLIENT_SET = {"slicerio", "nrrd", "jsonschema", "jsonschema_specifications", "referencing", "rpds", "attrs", "attr"}
NOT_BUNDLED = ("jsonschema", "slicerio", "safetensors", "tqdm", "fastapi", "uvicorn", "pydantic", "numba", "torch")

GUARD = r'''
import importlib.abc, json, sys
allowed = set(json.loads(sys.argv[1]))
refused = []

class SlicerBundledOnly(importlib.abc.MetaPathFinder):
    """Only the standard library and the allowed top-level packages can be found, as in a fresh Slicer."""
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in allowed:
            return None
        refused.append(top)
        raise ModuleNotFoundError(f"No module named {top!r} (not bundled with Slicer)", name=top)

sys.meta_path.insert(0, SlicerBundledOnly())
sys.argv = sys.argv[1:]
'''


def run_in_fresh_slicer_python(scenario, allowed, *args):
    """Run ``scenario`` (code that prints one JSON line) in the stand-in; returns the parsed answer."""
    paths = [str(HERE), str(ROOT / "NNMambaSlicer"), str(ROOT / "NNMambaSegmentation"), str(ROOT / "NNMambaLandmarks")]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("NNMAMBA")}
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    done = subprocess.run([sys.executable, "-c", GUARD + scenario, json.dumps(sorted(allowed)), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=environment, cwd=str(HERE))
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


FRESH_HUB = r'''
import importlib, json, pkgutil
import NNMambaSlicerLib, NNMambaSegmentationLib, NNMambaLandmarksLib
imported = []
for package in (NNMambaSlicerLib, NNMambaSegmentationLib, NNMambaLandmarksLib):
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
        imported.append(f"{package.__name__}.{info.name}")

from NNMambaSlicerLib import install, models
from NNMambaSlicerLib.environment_report import environment_text

rows = models.list_models(sys.argv[1])
try:
    install.check_local_backend()
    refusal = None
except install.DependencyError as error:
    refusal = str(error)
print(json.dumps({
    "imported": imported,
    "rows": [[row.id, row.source, row.state, row.task] for row in rows],
    "presets": [name for name, _title, _task in models.presets()],
    "missing_local": install.missing_for_local_backend(),
    "missing_client": install.missing_requirements(install.load_requirements(install.CLIENT_REQUIREMENTS_FILE)),
    "refusal": refusal,
    "environment": environment_text(None),
    "refused": sorted(set(refused)),
}))
'''


def test_a_fresh_slicer_lists_the_bundled_models_and_says_what_to_install(tmp_path):
    answer = run_in_fresh_slicer_python(FRESH_HUB, SLICER_BUNDLED | OURS, tmp_path / "models")
    assert {"NNMambaSlicerLib.job_panel", "NNMambaSegmentationLib.click_tool",
            "NNMambaLandmarksLib.landmark_run"} <= set(answer["imported"])
    rows = {row[0]: row[1:] for row in answer["rows"]}
    for model in ("demo-abdomen-ct", "demo-fetal-landmarks", "demo-brain-atrophy"):
        assert rows[model][:2] == ["bundled", "installed"], rows[model]
    assert rows["demo-brain-atrophy"][2] == "classification"
    assert any(source == "catalog" for source, *_ in rows.values()) and answer["presets"]
    assert answer["missing_local"][0] == "torch (PyTorch extension)"
    assert {name.split(">")[0] for name in answer["missing_local"][1:]} == {
        "slicerio", "jsonschema", "safetensors", "tqdm", "fastapi", "uvicorn", "pydantic", "numba"}
    assert [name.split(">")[0] for name in answer["missing_client"]] == ["slicerio", "jsonschema"]
    assert answer["refusal"].startswith("The local NNMamba backend needs torch (PyTorch extension), slicerio")
    assert "Install dependencies" in answer["refusal"] and "remote server" in answer["refusal"]
    assert "torch" in answer["environment"]


REMOTE_RESULT = r'''
import json
from NNMambaSegmentationLib.segmentation_run import SegmentationRun
from NNMambaSegmentationLib.segments import find_segment, put_segmentation_file
from NNMambaSlicerLib.volumes import add_volume
from nnmamba.formats import read_segmentation
from nnmamba.geometry import Geometry
import numpy as np
import slicer
import types

scene = slicer.vtkMRMLScene()   # as the application sets it up (Testing/python/slicer_scene.py, without pytest)
application_logic = slicer.vtkMRMLApplicationLogic()
application_logic.SetMRMLScene(scene)
segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
segmentations.SetMRMLScene(scene)
slicer.mrmlScene = scene
slicer.modules = types.SimpleNamespace(segmentations=types.SimpleNamespace(logic=lambda: segmentations))
geometry = Geometry.create((1.0, 2.0, 3.0), (0.8, 0.9, 2.0))
volume = add_volume(scene, np.zeros((6, 7, 8), np.int16), geometry, "ct")
result = read_segmentation(sys.argv[1])
node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
report = put_segmentation_file(node, volume, result)
import slicer.util
liver = slicer.util.arrayFromSegmentBinaryLabelmap(node, find_segment(node, "liver"), volume)
print(json.dumps({"written": report.written, "liver_voxels": int(liver.sum()), "refused": sorted(set(refused))}))
'''


@pytest.mark.parametrize("installed", ["client set", "nothing"])
def test_a_remote_segmentation_result_reads_once_the_client_set_is_installed(installed, tmp_path):
    """Remote backend, nothing installed locally but the client set: the .seg.nrrd the server sends is read and
    put into segments in Slicer's process (without the client set that fails, saying what is missing)."""
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[2:4, 3:5, 1:6] = 1
    path = tmp_path / "result.seg.nrrd"
    write_segmentation(path, labels, Geometry.create((1.0, 2.0, 3.0), (0.8, 0.9, 2.0)),
                       [{"name": "liver", "value": 1, "color": [0.8, 0.4, 0.3], "terminology": None}])
    allowed = SLICER_BUNDLED | OURS | (CLIENT_SET if installed == "client set" else set())
    if installed == "nothing":
        with pytest.raises(AssertionError, match="slicerio"):
            run_in_fresh_slicer_python(REMOTE_RESULT, allowed, path)
        return
    answer = run_in_fresh_slicer_python(REMOTE_RESULT, allowed, path)
    assert answer["written"] == ["liver"] and answer["liver_voxels"] == int(labels.sum())
    assert not {"torch", "fastapi", "uvicorn", "safetensors", "numba"} & set(answer["refused"])


def test_the_stand_in_refuses_what_slicer_does_not_bundle():
    answer = run_in_fresh_slicer_python(r'''
import importlib, json
failed = []
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        failed.append(name)
print(json.dumps({"failed": failed}))
''', SLICER_BUNDLED | OURS, json.dumps(list(NOT_BUNDLED) + ["numpy", "SimpleITK"]))
    assert answer["failed"] == list(NOT_BUNDLED)
