"""What this machine offers nnmamba: versions, the device, and which selective-scan back end will run."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

import torch

from . import __version__
from .ssm import choose_backend, requested_backend


def resolve_device(device="auto"):
    """'auto' → cuda, then mps, then cpu; otherwise the named device, checked to exist."""
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(name)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"Device {device!r} was requested but PyTorch sees no CUDA GPU "
                           f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}). Use --device cpu.")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"Device {device!r} was requested but Apple MPS is not available. Use --device cpu.")
    return resolved


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_report(device="auto"):
    """A plain dict (JSON-ready) describing the runtime; used by ``nnmamba info`` and the Slicer hub."""
    resolved = resolve_device(device)
    choice = choose_backend(resolved)
    report = {
        "nnmamba": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "mamba_ssm": package_version("mamba-ssm"),
        "causal_conv1d": package_version("causal-conv1d"),
        "numba": package_version("numba"),
        "device": str(resolved),
        "scan_backend_requested": requested_backend(),
        "scan_backend": choice.backend,
        "scan_backend_reason": choice.reason,
    }
    if resolved.type == "cuda":
        props = torch.cuda.get_device_properties(resolved)
        report["gpu"] = props.name
        report["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
    return report
