"""A plain-text environment report that users paste into bug reports: what Slicer runs, and what the backend that
actually runs the models has (torch, CUDA, GPU and its memory, which selective-scan kernel is used).

The backend's facts come from the server's GET /environment when a backend is connected (a remote server's GPU is
what matters then), else from :func:`nnmamba.environment.environment_report` in this process when torch imports.
"""

from __future__ import annotations

import platform
import sys

_GIB = 2 ** 30


def slicer_info():
    """Slicer's version and revision when running inside the application, else {}."""
    try:
        import slicer

        app = slicer.app
        return {"slicer": app.applicationVersion, "slicer_revision": app.repositoryRevision}
    except (ImportError, AttributeError):
        return {}


def in_process_environment(device="auto"):
    """nnmamba's environment report for this process, or None (with the reason) when torch cannot be imported."""
    try:
        from nnmamba.environment import environment_report
    except Exception as error:   # torch missing or broken: the report must still be produced
        return None, f"{type(error).__name__}: {error}"
    try:
        report = environment_report(device)
    except Exception as error:
        return None, f"{type(error).__name__}: {error}"
    if report.get("cuda_available") and "gpu" not in report:
        import torch

        props = torch.cuda.get_device_properties(0)
        report["gpu"], report["gpu_memory_gb"] = props.name, round(props.total_memory / _GIB, 1)
    return report, None


def collect_report(backend=None, device="auto"):
    """Everything the report shows, as a dict: ``client`` (this Slicer), ``backend`` (kind, url), ``environment``
    (the server's answer or the in-process one), ``source`` and ``problem`` (why nothing is known)."""
    from nnmamba import __version__

    report = {"client": dict(slicer_info(), python=sys.version.split()[0], platform=platform.platform(),
                             nnmamba=__version__),
              "backend": None, "environment": None, "source": None, "problem": None}
    if backend is not None:
        report["backend"] = {"kind": backend.kind, "url": backend.url}
        try:
            report["environment"], report["source"] = backend.environment(), "server"
            return report
        except Exception as error:   # a dead server: say so and fall back to what this process knows
            report["problem"] = f"The backend at {backend.url} did not answer: {error}"
    environment, problem = in_process_environment(device)
    if environment is not None:
        report["environment"], report["source"] = environment, "this process (no backend connected)"
    else:
        report["problem"] = (report["problem"] + "; " if report["problem"] else "") + (
            f"torch cannot be imported here ({problem}). Press 'Install dependencies'.")
    return report


def _yes_no(value):
    return "unknown" if value is None else ("yes" if value else "no")


def _size(nbytes):
    return "-" if nbytes is None else f"{nbytes / _GIB:.2f} GB"


def format_report(report):
    """The report as aligned ``key: value`` lines, ready to copy."""
    client, env, backend = report["client"], report.get("environment") or {}, report.get("backend")
    rows = [("NNMamba environment report", None)]
    if client.get("slicer"):
        rows.append(("Slicer", f"{client['slicer']} (revision {client.get('slicer_revision') or '?'})"))
    rows += [("Slicer Python", client.get("python")), ("Platform", client.get("platform")),
             ("nnmamba (Slicer side)", client.get("nnmamba"))]
    if backend is not None:
        rows.append(("Backend", f"{backend['kind']} server at {backend['url']}"))
    else:
        rows.append(("Backend", "none connected"))
    if env:
        rows.append(("Facts from", report.get("source")))
        rows += [("nnmamba (backend)", env.get("nnmamba")), ("Backend Python", env.get("python")),
                 ("Backend platform", env.get("platform")),
                 ("torch", f"{env.get('torch')} (CUDA build {env.get('torch_cuda') or 'none'})"),
                 ("CUDA available", _yes_no(env.get("cuda_available"))), ("Device", env.get("device"))]
        if env.get("gpu"):
            rows.append(("GPU", f"{env['gpu']}, {env.get('gpu_memory_gb', '?')} GB"))
        rows += [("Selective scan", f"{env.get('scan_backend')} ({env.get('scan_backend_reason')})"),
                 ("mamba-ssm / causal-conv1d", f"{env.get('mamba_ssm') or 'not installed'} / "
                                               f"{env.get('causal_conv1d') or 'not installed'}"),
                 ("numba", env.get("numba") or "not installed"), ("CPU threads", env.get("cpu_threads"))]
        memory = env.get("memory") or {}
        if memory.get("process_rss_bytes") is not None:
            rows.append(("Backend memory", _size(memory["process_rss_bytes"])))
        jobs = env.get("jobs")
        if jobs:
            rows.append(("Jobs", f"{jobs.get('running', 0)} running, {jobs.get('queued', 0)} queued"))
    if report.get("problem"):
        rows.append(("Problem", report["problem"]))
    width = max(len(key) for key, value in rows if value is not None)
    lines = [key if value is None else f"{key + ':':<{width + 1}} {value}" for key, value in rows]
    return "\n".join(lines) + "\n"


def environment_text(backend=None, device="auto"):
    """:func:`format_report` of :func:`collect_report`: what the Environment section shows and copies."""
    return format_report(collect_report(backend, device))
