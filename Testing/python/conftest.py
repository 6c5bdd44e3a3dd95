from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(autouse=True)
def _seed_and_clean_env(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.delenv("NNMAMBA_SCAN_BACKEND", raising=False)
