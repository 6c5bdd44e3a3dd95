import sys
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[1] / "data"
ROOT = Path(__file__).resolve().parents[2]

# The Slicer modules' folders, as Slicer's module paths put them on sys.path: their Lib packages import as in Slicer
for _module_folder in ("NNMambaSlicer", "NNMambaSegmentation", "NNMambaLandmarks"):
    if str(ROOT / _module_folder) not in sys.path:
        sys.path.insert(0, str(ROOT / _module_folder))


@pytest.fixture(autouse=True)
def _seed_and_clean_env(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.delenv("NNMAMBA_SCAN_BACKEND", raising=False)


@pytest.fixture
def scene():
    """A fresh slicer-core MRML scene with the module logics attached (Testing/python/slicer_scene.py)."""
    from slicer_scene import new_scene

    slicer_scene = new_scene()
    yield slicer_scene
    slicer_scene.close()


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    """A models folder with a small segmentation and a small classification package (random weights)."""
    from model_packages import classification_package, segmentation_package

    root = tmp_path_factory.mktemp("hub-models")
    segmentation_package(root / "test-seg")
    classification_package(root / "test-cls")
    return root


@pytest.fixture(scope="module")
def local_backend(models_root):
    """A real private server started the way the Slicer modules start it (child interpreter, random token)."""
    from NNMambaSlicerLib.backend import Backend

    backend = Backend.local(device="cpu", models_dir=models_root, python=sys.executable)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One small package of each task (random weights), and their folder as "root"."""
    from model_packages import classification_package, landmark_package, segmentation_package

    root = tmp_path_factory.mktemp("models")
    return {"seg": segmentation_package(root / "seg"), "lm": landmark_package(root / "lm"),
            "cls": classification_package(root / "cls"), "root": root}
