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
