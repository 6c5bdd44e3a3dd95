"""Selective-scan back ends against the per-step reference loop (B=1, N=16), measured in the same run.

Goal (issue: backend core): at d_inner 128, L 32768 the ``torch`` scan ≥ 15x and the optional ``numba``
kernel ≥ 30x faster than ``reference``. Also times the four CSS passes of one MambaLayer batched into one
call against four calls, which decides ``batch_passes="auto"``.

    .venv/bin/python Testing/benchmarks/bench_scan.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import best_time, print_table  # noqa: E402

from nnmamba import ssm  # noqa: E402
from nnmamba.networks import MambaLayer  # noqa: E402
from nnmamba.runtime import retain_freed_memory  # noqa: E402


def scan_inputs(dim, length, n_state=16, device="cpu"):
    g = torch.Generator().manual_seed(0)
    u, z = torch.randn(2, 1, dim, length, generator=g)
    B, C = torch.randn(2, 1, n_state, length, generator=g)
    delta = 0.5 * torch.randn(1, dim, length, generator=g)
    dt0 = torch.exp(torch.empty(dim).uniform_(-6.9, -2.3, generator=g))
    args = dict(u=u, delta=delta, A=-torch.arange(1, n_state + 1.0).repeat(dim, 1), B=B, C=C, D=torch.ones(dim),
                z=z, delta_bias=dt0 + torch.log(-torch.expm1(-dt0)), delta_softplus=True)
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in args.items()}


def bench_backends(device, quick):
    backends = [b for b in ("torch", "numba", "cuda") if _usable(b, device)]
    lengths = (512, 4096) if quick else (512, 4096, 32768)
    rows = []
    for dim in (128, 256, 512):
        for length in lengths:
            args = scan_inputs(dim, length, device=device)
            with torch.inference_mode():
                ref = ssm.selective_scan_reference(**args)
                t_ref = best_time(lambda a=args: ssm.selective_scan_reference(**a), repeats=2, budget_s=5)
                row = [dim, length, f"{t_ref * 1e3:.1f}"]
                for backend in backends:
                    out = ssm.selective_scan(**args, backend=backend)
                    err = float((out - ref).abs().max() / ref.abs().max())
                    t = best_time(lambda b=backend, a=args: ssm.selective_scan(**a, backend=b), repeats=7, budget_s=5)
                    row += [f"{t * 1e3:.1f}", f"{t_ref / t:.1f}x", f"{err:.1e}"]
            rows.append(row)
            print(f"  d_inner {dim} L {length} done", file=sys.stderr)
    header = ["d_inner", "L", "reference ms"]
    for backend in backends:
        header += [f"{backend} ms", f"{backend} speed-up", f"{backend} rel.err"]
    print(f"\nSelective scan on {device} (B=1, N=16, float32; best of several runs)")
    print_table(header, rows)
    return backends, rows


def bench_css_batching(device):
    print(f"\nOne MICCSS MambaLayer (4 CSS passes) on {device}: token-reversed passes run backwards in place "
          "vs flipped and batched with the forward ones")
    rows = []
    for dim, side in ((64, 32), (128, 16), (256, 8)):
        layer = MambaLayer(dim).to(device).eval()
        x = torch.randn(1, dim, side, side, side, device=device)
        times = {}
        with torch.inference_mode():
            for batched in (False, True):
                layer.batch_passes = batched
                times[batched] = best_time(lambda m=layer, v=x: m(v), repeats=5, budget_s=10)
        rows.append([dim, side ** 3, f"{times[False] * 1e3:.1f}", f"{times[True] * 1e3:.1f}",
                     f"{times[False] / times[True]:.2f}x"])
    print_table(["d_model", "L", "in place ms", "batched ms", "batched speed-up"], rows)


def _usable(backend, device):
    try:
        ssm.choose_backend(device, backend=backend)
        return True
    except RuntimeError:
        return False


def main():
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip L = 32768")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    backends, rows = bench_backends(args.device, args.quick)
    bench_css_batching(args.device)
    goal = [r for r in rows if r[0] == 128 and r[1] == 32768]
    if goal:
        print("\nGoal at d_inner 128, L 32768: torch >= 15x, numba >= 30x over reference")
        for i, backend in enumerate(backends):
            print(f"  {backend}: {goal[0][4 + 3 * i]}")


if __name__ == "__main__":
    main()
