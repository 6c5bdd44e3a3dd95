"""What the HTTP server adds: click-to-segment through ``nnmamba serve`` against the same click in-process, and the
upload speed of a large volume over loopback. Baselines are measured in the same run.

Click (goal: server ≤ 1.1x in-process + 20 ms), on the same volume, package and device:
- second click: a point near an earlier one, answered from the click cache on both sides;
- first click: a fresh session's first click, which on both sides prepares the volume for the model (normalisation)
  and runs the network on the window around the point; the network itself is warm on both sides.
The network has random weights, so the structure it finds is arbitrary (both sides find the same one) and often
fills the volume; the default volume fits one window (size ≤ patch), so that a first click is one network pass on
every run. A larger --size costs one more pass per window the structure reaches, on both sides alike.

Upload: a CT-like int16 volume (default 512x512x300, 157 MB) as raw voxels: seconds and MB/s.

    .venv/bin/python Testing/benchmarks/bench_server.py [--size 128 128 96] [--patch 128] [--upload-size 512 512 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import click_inputs, write_synthetic_ct  # noqa: E402
from timing import print_table  # noqa: E402

from nnmamba.runtime import retain_freed_memory  # noqa: E402

GOAL_RATIO, GOAL_EXTRA_S = 1.1, 0.020


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[128, 128, 96], help="click volume, I J K")
    parser.add_argument("--upload-size", type=int, nargs=3, default=[512, 512, 300], help="upload volume, I J K")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds, interleaved")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    retain_freed_memory()

    from nnmamba.client_local import LocalServer
    from nnmamba.tasks import ClickSession

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        package, volume = click_inputs(tmp, args.size, args.classes, args.channels, args.patch)
        raw = volume.array[0].astype(np.int16)   # what Slicer would send: the stored voxel type

        with LocalServer(device=args.device, models_dir=tmp / "models") as server:
            client = server.client(timeout=600)
            warm = ClickSession(package, volume, device=args.device)
            point = volume.geometry.index_to_lps(np.array(args.size) / 2)
            nearby = point + np.array([2.0, -1.5, 1.0])
            warm.segment_at([point])                                                    # warms the network here
            client.click(client.upload_volume(raw, volume.geometry), package.id, [point])   # warms the server

            times = {key: float("inf") for key in ("local first", "remote first", "local second", "remote second",
                                                   "compute first", "compute second")}

            def keep(key, seconds):
                times[key] = min(times[key], seconds)

            for _ in range(args.rounds):
                t0 = time.perf_counter()
                local = ClickSession(package, volume, predictor=warm.predictor)
                local_first = local.segment_at([point])
                keep("local first", time.perf_counter() - t0)

                session = client.upload_volume(raw, volume.geometry)
                t0 = time.perf_counter()
                remote_first = client.click(session, package.id, [point])
                keep("remote first", time.perf_counter() - t0)
                keep("compute first", remote_first["seconds"])
                if not np.array_equal(remote_first["mask"], local_first.mask):
                    raise SystemExit("The server's click answer differs from the in-process one.")

                t0 = time.perf_counter()
                local_second = local.segment_at([nearby])
                keep("local second", time.perf_counter() - t0)
                t0 = time.perf_counter()
                remote_second = client.click(session, package.id, [nearby])
                keep("remote second", time.perf_counter() - t0)
                keep("compute second", remote_second["seconds"])
                client.delete_session(session)

            upload = upload_speed(client, args.upload_size, tmp)
    print(f"click volume {args.size}, patch {args.patch}³, width {args.channels}, {args.classes} classes, device "
          f"{args.device}; best of {args.rounds}. First click: {local_first.network_passes} network pass(es), "
          f"{int(local_first.mask.sum())} voxels (mask {'x'.join(map(str, local_first.mask.shape))}); second click: "
          f"{local_second.network_passes} pass(es), {int(local_second.mask.sum())} voxels")
    rows = []
    for name in ("first", "second"):
        local_s, remote_s, compute_s = times[f"local {name}"], times[f"remote {name}"], times[f"compute {name}"]
        goal = GOAL_RATIO * local_s + GOAL_EXTRA_S
        rows.append([f"{name} click", f"{local_s:.3f}", f"{remote_s:.3f}", f"{compute_s:.3f}",
                     f"{remote_s / local_s:.2f}", f"{(remote_s - local_s) * 1000:.1f}",
                     f"{(remote_s - compute_s) * 1000:.1f}", f"<= {goal:.3f} s",
                     "ok" if remote_s <= goal else "MISSED"])
    print_table(["", "in-process s", "server s", "server compute s", "ratio", "added ms", "transport ms",
                 "goal (1.1x + 20 ms)", ""], rows)
    print("(server compute: the ClickSession time the server reports; transport: the rest of the round trip)")
    print()
    seconds, megabytes, shape = upload
    print_table(["upload", "shape (K, J, I)", "MB", "seconds", "MB/s"],
                [["int16 over loopback", "x".join(map(str, shape)), f"{megabytes:.0f}", f"{seconds:.2f}",
                  f"{megabytes / seconds:.0f}"]])


def upload_speed(client, size_ijk, tmp):
    """Best of two uploads of a CT-like int16 volume: (seconds, MB, KJI shape)."""
    from nnmamba.imaging import read_image

    write_synthetic_ct(tmp / "upload.nrrd", size_ijk)
    volume = read_image(tmp / "upload.nrrd")
    raw, geometry = volume.array[0].astype(np.int16), volume.geometry
    del volume
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        session = client.upload_volume(raw, geometry)
        best = min(best, time.perf_counter() - t0)
        client.delete_session(session)
    return best, raw.nbytes / 1e6, raw.shape


if __name__ == "__main__":
    main()
