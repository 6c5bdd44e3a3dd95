"""Repository-level promises: code that runs inside Slicer stays Python 3.9 compatible."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_slicer_side_code_runs_on_python_3_9():
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    result = subprocess.run([vermin, "--target=3.9-", "--violations", "--no-tips", "--eval-annotations",
                             "--backport", "typing", str(ROOT / "NNMambaSlicer")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_heavy_import_when_the_cli_starts():
    """``nnmamba --help`` must not pay for torch: the Slicer modules import this package at start-up."""
    code = "import sys; from nnmamba import cli; cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
