"""A cohort of N generated CT phantoms with the demo CT model, three ways, measured in one run: a loop of single
`nnmamba predict segment` calls (each one starts Python, imports torch and loads the model), the local cohort
engine (model loaded once, next case read during the current one), and Ray on this machine (one worker with all
cores, so it is the engine's overhead that shows). Prints cases/min and the per-case time side by side.

    .venv/bin/python Testing/benchmarks/bench_cohort.py [--cases 8] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

MODEL = "demo-abdomen-ct"


def write_cases(folder, count):
    from nnmamba.demo.training_data import default_phantom

    make = default_phantom("segmentation")
    for seed in range(5000, 5000 + count):
        phantom = make(seed)
        image = sitk.GetImageFromArray(np.asarray(phantom.image, dtype=np.int16))
        phantom.geometry.apply_to_sitk(image)
        sitk.WriteImage(image, str(folder / f"case-{seed}.nrrd"))


def single_calls(folder, out):
    started = time.perf_counter()
    for image in sorted(folder.glob("*.nrrd")):
        subprocess.run([sys.executable, "-m", "nnmamba", "predict", "segment", "--model", MODEL, "--input",
                        str(image), "--output", str(out / (image.stem + ".seg.nrrd")), "--device", "cpu",
                        "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def local_engine(folder, out):
    from nnmamba.cohort import CaseRunner, find_cases, run_local

    started = time.perf_counter()
    summary = run_local(CaseRunner(MODEL, "segmentation", device="cpu"), find_cases(folder), out, quiet=True)
    assert summary.failed == 0
    return time.perf_counter() - started


def ray_engine(folder, out):
    import ray

    from nnmamba.cohort import find_cases, run_ray

    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _node_ip_address="127.0.0.1")
    try:
        started = time.perf_counter()
        summary = run_ray(MODEL, "segmentation", find_cases(folder), out, device="cpu", cpus_per_worker=cores,
                          quiet=True)
        assert summary.failed == 0
        return time.perf_counter() - started
    finally:
        ray.shutdown()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nnmamba-bench-cohort-") as scratch:
        folder = Path(scratch) / "cases"
        folder.mkdir()
        write_cases(folder, args.cases)
        runs = [("single calls (loop)", single_calls), ("local engine", local_engine)]
        if not args.no_ray:
            runs.append(("Ray, this machine", ray_engine))
        results = []
        for name, run in runs:
            out = Path(scratch) / name.split()[0]
            out.mkdir()
            results.append((name, run(folder, out)))
    baseline = results[0][1]
    print(f"{args.cases} CT phantoms, {MODEL}, CPU, {os.cpu_count()} cores")
    print(f"{'':22s} {'total s':>8s} {'s/case':>7s} {'cases/min':>10s} {'speed-up':>9s}")
    for name, seconds in results:
        print(f"{name:22s} {seconds:8.1f} {seconds / args.cases:7.2f} {60 * args.cases / seconds:10.1f} "
              f"{baseline / seconds:8.2f}x")
    if len(results) == 3:
        print(f"Ray overhead against the local engine: {results[2][1] / results[1][1]:.2f}x (goal <= 1.2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
