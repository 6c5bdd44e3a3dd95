"""``nnmamba predict TASK --input-dir DIR | --inputs LIST.csv --output-dir OUT``: the cohort options of the predict
commands and what they run. Exit status: the number of cases that failed (at most 125; 0 when every case is done; the
manifest says which and why), 2 for a usage error before any case ran (raised as ValueError, which the CLI prints as
one line), 130 on Ctrl-C (the manifest holds every case that finished)."""

from __future__ import annotations

import sys
from pathlib import Path

MAX_FAILED_STATUS = 125   # exit statuses above are the shell's (126-128) and signals' (128+N)


def add_cohort_options(parser):
    group = parser.add_argument_group("cohorts (instead of --input/--output: one result per case and a manifest, "
                                      "OUT/results.csv and .jsonl)")
    group.add_argument("--input-dir", type=Path, help="every image file and DICOM series folder in this folder")
    group.add_argument("--inputs", type=Path, metavar="LIST.csv",
                       help="a CSV list: columns case,image (or image_0,image_1,... for multi-channel models)")
    group.add_argument("--output-dir", type=Path, help="where the results and the manifest go")
    group.add_argument("--resume", action="store_true",
                       help="skip cases whose results exist and whose input is unchanged (same sha256)")
    group.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run on Ray: alone for a local Ray on this machine, or a cluster's address (auto, "
                            "ray://head:10001); needs pip install -e '.[ray]'")
    group.add_argument("--cpus-per-worker", type=int, help="Ray on CPUs: cores per worker (default: half the "
                                                           "cores of the cluster, at least 1)")


def is_cohort(args):
    return getattr(args, "input_dir", None) is not None or getattr(args, "inputs", None) is not None


def run_cohort_command(args, task, segmentation_format=".seg.nrrd"):
    """Run the cohort the options describe; returns the exit code."""
    from ..formats import SEGMENTATION_FORMATS
    from .cases import CaseListError, find_cases
    from .engines import run_local, run_ray
    from .runner import CaseRunner

    if args.output_dir is None:
        raise ValueError("a cohort needs --output-dir (the results and results.csv go there).")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise ValueError(f"--output-dir {args.output_dir} is a file, not a folder.")
    if segmentation_format not in SEGMENTATION_FORMATS:
        raise ValueError(f"--output-format {segmentation_format}: give one of {', '.join(SEGMENTATION_FORMATS)}.")
    try:
        cases = find_cases(args.input_dir, args.inputs)
    except CaseListError as error:
        raise ValueError(str(error)) from None
    options = {"overlap": getattr(args, "overlap", None), "mirroring": getattr(args, "mirroring", None) or None,
               "tile_batch": getattr(args, "tile_batch", 1) or 1, "refine": getattr(args, "refine", None),
               "segmentation_format": segmentation_format}
    if task != "segmentation":
        options = {"refine": options["refine"]} if task == "landmarks" else {}
    quiet = getattr(args, "quiet", False)
    try:
        if args.ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                raise ValueError("--ray needs Ray: pip install -e '.[ray]' (in this checkout).") from None
            summary = run_ray(args.model, task, cases, args.output_dir,
                              address=None if args.ray == "local" else args.ray, device=args.device,
                              cpus_per_worker=args.cpus_per_worker, resume=args.resume, quiet=quiet,
                              runner_options=options)
        else:
            runner = CaseRunner(args.model, task, device=args.device, **options)
            summary = run_local(runner, cases, args.output_dir, resume=args.resume, quiet=quiet)
    except KeyboardInterrupt:
        print(f"stopped; {args.output_dir / 'results.csv'} lists the cases that finished (--resume goes on).",
              file=sys.stderr)
        return 130
    cases_run = summary.done + summary.failed
    per_case = f", {summary.seconds / cases_run:.2f} s per case" if cases_run else ""
    skipped = f", {summary.skipped} skipped (done before)" if summary.skipped else ""
    print(f"{args.output_dir / 'results.csv'}: {summary.done} done, {summary.failed} failed{skipped} in "
          f"{summary.seconds:.1f} s{per_case}")
    for row in summary.rows:
        if row["status"] != "done":
            print(f"  {row['case']}: {row.get('error', 'failed')}", file=sys.stderr)
    return min(summary.failed, MAX_FAILED_STATUS)

