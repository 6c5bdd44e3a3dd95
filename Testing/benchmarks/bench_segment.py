"""End-to-end segmentation of a CT-sized volume on the CPU, the way `nnmamba predict segment` runs it.

Reads a 512×512×300 int16 NRRD (written first by a child process, so this process's memory holds only what the
pipeline needs), preprocesses, runs the sliding window (16 classes, 128³ patches, overlap 0.5), maps back and
writes the .seg.nrrd. Prints where the time goes (read, checks, reorientation, resampling, normalisation, network,
tiles, Gaussian stitching, argmax / probability store, resampling back, write; each step timed where the pipeline
calls it), the share of the time outside the network passes (goal ≤ 20%) and the peak RSS (goal ≤ 4 GB). The
network has random weights: its speed, not its answer, is measured. ``--channels`` sets its width (official 32; a
narrower network makes the pipeline's share look larger, so the default 8 is the harder test for the 20% goal).
``--spacing-mm`` gives the model a spacing of its own, so the volume is resampled to it and the probabilities back.

    .venv/bin/python Testing/benchmarks/bench_segment.py [--size 512 512 300] [--channels 8] [--spacing-mm 1.2 1.2 2]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import write_random_segmentation_package, write_synthetic_ct  # noqa: E402

from nnmamba.runtime import retain_freed_memory  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300], help="I J K")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--spacing-mm", type=float, nargs=3, default=None,
                        help="model spacing; default: the volume's own (no resampling)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        write_synthetic_ct(args.child[0], args.size)
        return
    retain_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = tmp / "ct.nrrd"
        subprocess.run([sys.executable, __file__, "--size", *map(str, args.size), "--child", str(image), "-"],
                       check=True)
        package = write_random_segmentation_package(tmp / "model", args.classes, args.channels,
                                                    spacing=args.spacing_mm)
        run(args, image, package, tmp / "ct.seg.nrrd")


class Stages:
    """Seconds per pipeline step, by wrapping the functions the pipeline calls (outermost call only, so that a
    step inside another is not counted twice)."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self._depth = 0

    def wrap(self, owner, name, stage):
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - started
                self._depth -= 1

        setattr(owner, name, timed)

    @contextlib.contextmanager
    def stage(self, name):
        started = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - started


def instrument(stages):
    import nnmamba.inference as inference
    import nnmamba.map_back as map_back
    import nnmamba.orientation as orientation
    import nnmamba.resampling as resampling
    import nnmamba.tasks.common as common

    stages.wrap(common, "check_volume", "checks")
    stages.wrap(common, "reorient", "reorient")
    stages.wrap(common, "resample_for_model", "resample to the network grid")
    stages.wrap(common, "normalize", "normalise")
    stages.wrap(inference, "extract_tile", "tiles")
    stages.wrap(inference, "_add_tile", "Gaussian stitching")
    stages.wrap(inference, "_slide", "Gaussian stitching: slab moves")
    stages.wrap(inference.ArgmaxSink, "consume", "argmax / probability store")
    stages.wrap(inference.ProbabilitySink, "consume", "argmax / probability store")
    stages.wrap(resampling.Resampling, "probabilities_to_input", "resample back (probabilities -> labels)")
    stages.wrap(map_back.StreamingMapBack, "consume", "resample back (streamed from the window)")
    stages.wrap(orientation.Reorientation, "undo_array", "undo reorientation")


def run(args, image_path, package, output):
    from nnmamba.formats import write_segmentation
    from nnmamba.imaging import read_image
    from nnmamba.tasks import segment_volume

    stages = Stages()
    instrument(stages)
    started = time.perf_counter()
    with stages.stage("read"):
        volume = read_image(image_path)
    result = segment_volume(package, volume, device=args.device, overlap=args.overlap, reuse_input=True)
    del volume
    with stages.stage("write .seg.nrrd"):
        write_segmentation(output, result.labels, result.geometry, result.segments)
    total = time.perf_counter() - started
    network = result.seconds["network"]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"volume {args.size[0]}x{args.size[1]}x{args.size[2]}, {args.classes} classes, width {args.channels}, "
          f"overlap {args.overlap}, model spacing {args.spacing_mm or 'the volume own'}, device {args.device}")
    rows = [("read", stages.seconds.pop("read"))]
    rows += [(name, stages.seconds.pop(name)) for name in list(stages.seconds) if name != "write .seg.nrrd"]
    rows += [("network passes", network), ("write .seg.nrrd", stages.seconds.pop("write .seg.nrrd"))]
    rows.append(("other (unaccounted)", total - sum(seconds for _, seconds in rows)))
    for name, seconds in rows:
        print(f"  {name:42s} {seconds:8.2f} s  {seconds / total:6.1%}")
    print(f"total {total:.1f} s; outside the network passes {total - network:.1f} s = "
          f"{(total - network) / total:.1%} of the total (goal <= 20%)")
    print(f"peak RSS {peak_gb:.2f} GB (goal <= 4 GB); output {output.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
