"""The ``nnmamba`` command, run as a user runs it (a child process), with meaningful exit codes."""

import json
import subprocess
import sys

import pytest
import torch

from nnmamba.networks import NNMambaSeg

from checkpoint_files import Payload


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nnmamba", *args], capture_output=True, text=True, timeout=300)


def test_info_reports_versions_device_and_backend():
    result = run_cli("info", "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["torch"] == torch.__version__ and report["device"] == "cpu"
    assert report["scan_backend"] in ("numba", "torch") and report["scan_backend_reason"]
    assert set(report) >= {"python", "mamba_ssm", "causal_conv1d", "cuda_available"}


def test_info_with_env_override():
    result = subprocess.run([sys.executable, "-m", "nnmamba", "info", "--json"], capture_output=True, text=True,
                            env={**__import__("os").environ, "NNMAMBA_SCAN_BACKEND": "reference"})
    assert json.loads(result.stdout)["scan_backend"] == "reference"


def test_check_runs_every_network():
    result = run_cli("check", "--size", "32", "--channels", "8", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("finite=True") == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_missing_gpu_is_a_clear_error():
    result = run_cli("info", "--device", "cuda")
    assert result.returncode == 4 and "sees no CUDA GPU" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("size,message", [("40", "nearest valid 32 or 48"), ("-16", "nearest valid 16")])
def test_bad_size_is_a_clear_error(size, message):
    result = run_cli("check", f"--size={size}")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_inspect_and_convert(tmp_path):
    net = NNMambaSeg(channels=16, number_classes=4)
    torch.save(net.state_dict(), tmp_path / "net.pth")
    result = run_cli("inspect", str(tmp_path / "net.pth"), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["variant"], info["num_classes"], info["channels"]) == ("miccss", 4, 16)
    result = run_cli("convert", str(tmp_path / "net.pth"), str(tmp_path / "net.safetensors"))
    assert result.returncode == 0 and (tmp_path / "net.safetensors").stat().st_size > 0


def test_missing_and_unsafe_files_exit_codes(tmp_path):
    result = run_cli("inspect", str(tmp_path / "nope.pth"))
    assert result.returncode == 2 and "not found" in result.stderr
    torch.save({"state_dict": NNMambaSeg(channels=16).state_dict(), "x": Payload()}, tmp_path / "evil.pth")
    result = run_cli("inspect", str(tmp_path / "evil.pth"))
    assert result.returncode == 3 and "--trust" in result.stderr


def test_retaining_freed_memory_takes_effect_on_glibc():
    import platform

    from nnmamba.runtime import retain_freed_memory

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is expected
