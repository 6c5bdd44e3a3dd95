"""``nnmamba predict {segment,click,landmarks,classify}``: file in, Slicer-native file out.

Outputs are written only when the work is complete (and atomically), so an error, a Ctrl-C or a cancelled
job never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from .progress import CancelToken


def register_predict(sub, device_option):
    predict = sub.add_parser("predict", help="run a model on an image file and write Slicer-native results")
    tasks = predict.add_subparsers(title="tasks")

    def task_parser(name, help_text, handler, output_help):
        parser = tasks.add_parser(name, help=help_text)
        parser.add_argument("--model", required=True, help="model package folder/zip, or an installed model id")
        parser.add_argument("--input", required=True, nargs="+", type=Path,
                            help="image file (NIfTI, NRRD, MHA) or DICOM series folder; one per input channel")
        parser.add_argument("--output", required=True, type=Path, help=output_help)
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        device_option(parser)
        parser.add_argument("--server", metavar="URL", help="run on an nnmamba server (`nnmamba serve`) instead of "
                            "here; --model is then the id of a model installed on the server")
        parser.add_argument("--token", help="the server's token (default: --token-file, $NNMAMBA_SERVER_TOKEN, "
                            "else ~/.nnmamba/server-token)")
        parser.add_argument("--token-file", type=Path, help="a file holding the server's token")
        parser.set_defaults(handler=handler)
        return parser

    segment = task_parser("segment", "label every voxel", cmd_segment, "the .seg.nrrd to write")
    segment.add_argument("--overlap", type=float, help="sliding-window overlap in [0, 1) (model default: 0.5)")
    segment.add_argument("--mirroring", action="store_true", help="mirroring test-time augmentation (8x slower)")
    segment.add_argument("--tile-batch", type=int, default=1, help="tiles per network pass")

    click = task_parser("click", "segment the structure under points", cmd_click, "the .seg.nrrd to write")
    click.add_argument("--point", required=True, action="append", nargs=3, type=float, metavar=("X", "Y", "Z"),
                       help="a point on the structure, in mm (LPS unless --ras); repeat for more")
    click.add_argument("--negative", action="append", nargs=3, type=float, default=[], metavar=("X", "Y", "Z"),
                       help="a point on a structure to leave out; repeat for more")
    click.add_argument("--ras", action="store_true", help="points are RAS (Slicer's display coordinates)")

    landmarks = task_parser("landmarks", "find landmarks and measure the lines between them", cmd_landmarks,
                            "the .mrk.json to write")
    landmarks.add_argument("--refine", choices=("none", "quadratic"), help="sub-voxel peak refinement")
    landmarks.add_argument("--csv", type=Path, help="also write the points and line lengths as CSV")

    classify = task_parser("classify", "class probabilities and the decision", cmd_classify, "the .json to write")
    classify.add_argument("--csv", type=Path, help="also write a CSV table (one row per class)")
    return predict


def _load(args, task):
    from .imaging import read_channels, read_image
    from .modelpkg import resolve_model

    package = resolve_model(str(args.model))
    _check_task(package.id, package.task, task)
    paths = args.input
    volume = read_image(paths[0]) if len(paths) == 1 else read_channels(paths)
    return package, volume


def _check_task(model_id, model_task, task):
    if model_task != task:
        raise ValueError(f"Model {model_id!r} is a {model_task} model; 'predict {_COMMAND[task]}' needs a "
                         f"{task} model.")


_COMMAND = {"segmentation": "segment", "landmarks": "landmarks", "classification": "classify"}


class _ProgressBar:
    """A tqdm bar driven by the tasks' (fraction, eta, message) callback."""

    def __init__(self, quiet, description):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, disable=quiet, desc=description, unit="‰", file=sys.stderr,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def __call__(self, fraction, eta, message):
        self.bar.update(round(fraction * 1000) - self.bar.n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def _notify(message):
    print(f"nnmamba: {message}", file=sys.stderr)


@contextlib.contextmanager
def _ctrl_c_cancels():
    """A cancel token that the first Ctrl-C sets (the run stops cleanly at the next tile, nothing written); a
    second Ctrl-C interrupts at once."""
    token = CancelToken()
    if threading.current_thread() is not threading.main_thread():
        yield token
        return

    def on_interrupt(signum, frame):
        if token.cancelled:
            raise KeyboardInterrupt
        token.cancel()
        _notify("cancelling at the next tile (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield token
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_segment(args):
    if args.server:
        return _remote_segment(args)
    from .formats import write_segmentation
    from .tasks import segment_volume

    package, volume = _load(args, "segmentation")
    with _ProgressBar(args.quiet, f"segment with {package.id}") as bar, _ctrl_c_cancels() as cancel:
        result = segment_volume(package, volume, device=args.device, overlap=args.overlap, reuse_input=True,
                                mirroring=args.mirroring or None, tile_batch=args.tile_batch, progress=bar,
                                cancel=cancel, notify=_notify)
    write_segmentation(args.output, result.labels, result.geometry, result.segments, result.regions)
    counts = np.bincount(result.labels.reshape(-1), minlength=package.network["out_channels"])
    found = [f"{s['name']} ({counts[s['value']]} voxels)" for s in result.segments if counts[s["value"]]]
    print(f"{args.output}: {len(found)} of {len(result.segments)} structures found in "
          f"{result.seconds['total']:.1f} s" + (": " + ", ".join(found) if found else ""))


def cmd_click(args):
    if args.server:
        return _remote_click(args)
    from .formats import write_segmentation
    from .geometry import ras_to_lps
    from .tasks import ClickSession

    package, volume = _load(args, "segmentation")
    convert = ras_to_lps if args.ras else np.asarray
    session = ClickSession(package, volume, device=args.device, notify=_notify)
    result = session.segment_at(convert(args.point), convert(args.negative) if args.negative else ())
    for note in result.notes:
        _notify(note)
    if result.label == 0:
        raise ValueError("No structure under the point(s): the model sees background there. Click on the "
                         "structure, or use 'predict segment'.")
    label = next(s for s in package.outputs["labels"] if s["value"] == result.label)
    segment = dict(label, value=1)
    write_segmentation(args.output, result.mask, volume.geometry, [segment], offset=result.offset,
                       reference_shape=volume.array.shape[1:])
    print(f"{args.output}: {label['name']}, {int(result.mask.sum())} voxels, {result.network_passes} network "
          f"pass(es), {result.seconds:.2f} s")


def cmd_landmarks(args):
    if args.server:
        return _remote_landmarks(args)
    from .formats import write_landmarks
    from .tasks import detect_landmarks

    package, volume = _load(args, "landmarks")
    with _ProgressBar(args.quiet, f"landmarks with {package.id}") as bar, _ctrl_c_cancels() as cancel:
        result = detect_landmarks(package, volume, device=args.device, refine=args.refine, progress=bar,
                                  cancel=cancel)
    points = [{"label": p["label"], "position": p["position"], "description": f"confidence {p['confidence']:.2f}"}
              for p in result.points]
    write_landmarks(args.output, points, result.lines)
    if args.csv:
        _write_landmark_csv(args.csv, result)
    for line in result.lines:
        print(f"{line['name']}: {line['length']:.1f} mm")
    print(f"{args.output}: {len(result.points)} landmarks in {result.seconds:.1f} s")


def _write_landmark_csv(path, result):
    import csv

    from .formats import atomic_write

    with atomic_write(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "kind", "x_lps", "y_lps", "z_lps", "confidence", "length_mm"])
        for p in result.points:
            writer.writerow([p["label"], "point", *(f"{v:.3f}" for v in p["position"]), f"{p['confidence']:.3f}", ""])
        for line in result.lines:
            writer.writerow([line["name"], "line", "", "", "", "", f"{line['length']:.3f}"])


def cmd_classify(args):
    if args.server:
        return _remote_classify(args)
    from .formats import write_classification_csv, write_classification_json
    from .tasks import classify_volume

    package, volume = _load(args, "classification")
    result = classify_volume(package, volume, device=args.device)
    document = result.as_dict(package, args.input[0])
    write_classification_json(args.output, document)
    if args.csv:
        write_classification_csv(args.csv, document)
    table = ", ".join(f"{c} {p:.3f}" for c, p in zip(result.classes, result.probabilities))
    print(f"{args.output}: {result.decision} ({table})")


# ------------------------------------------------------------------------------------------ --server: over HTTP
# The input is read and checked here, uploaded once as raw voxels + geometry (a session), and the server's result
# file is written as it came, atomically. The session is deleted at the end, also on errors and Ctrl-C.


@contextlib.contextmanager
def _remote_session(args, task):
    """(client, model.json of the server's model, the local volume, session id)."""
    from .client import BackendError, Client
    from .imaging import read_channels, read_image

    client = Client(args.server, token=args.token, token_file=args.token_file)
    meta = client.model(str(args.model))
    _check_task(meta["id"], meta["task"], task)
    paths = args.input
    volume = read_image(paths[0]) if len(paths) == 1 else read_channels(paths)
    session = client.upload_volume(volume.array, volume.geometry, name=paths[0].name)
    try:
        yield client, meta, volume, session
    finally:
        with contextlib.suppress(BackendError):
            client.delete_session(session)


def _remote_job(args, client, session, task, model_id, **options):
    """Submit, follow with the progress bar (Ctrl-C cancels the job on the server); the finished job dict."""
    with _ProgressBar(args.quiet, f"{_COMMAND[task]} with {model_id} on {client.url}") as bar:
        job_id = client.submit(session, task, model_id, device=args.device, **options)
        return client.wait(job_id, progress=bar)


def _save(path, data):
    from .formats import atomic_write

    with atomic_write(path, "wb") as handle:
        handle.write(data)


def _job_seconds(job):
    started, finished = job.get("started"), job.get("finished")
    return finished - started if started is not None and finished is not None else float("nan")


def _remote_segment(args):
    if args.tile_batch != 1:
        _notify("--tile-batch is chosen by the server; ignored with --server.")
    with _remote_session(args, "segmentation") as (client, meta, _, session):
        job = _remote_job(args, client, session, "segmentation", meta["id"], overlap=args.overlap,
                          mirroring=args.mirroring or None)
        summary = client.result_json(job["id"])
        _save(args.output, client.result_bytes(job["id"]))
    for note in summary.get("notes", []):
        _notify(note)
    segments = summary.get("segments", [])
    print(f"{args.output}: {len(segments)} structures written in {_job_seconds(job):.1f} s on {client.url}")


def _remote_click(args):
    from .formats import write_segmentation

    with _remote_session(args, "segmentation") as (client, meta, volume, session):
        result = client.click(session, meta["id"], args.point, args.negative, "RAS" if args.ras else "LPS")
    for note in result.get("notes", []):
        _notify(note)
    if result["label"] == 0:
        raise ValueError("No structure under the point(s): the model sees background there. Click on the "
                         "structure, or use 'predict segment'.")
    label = next(s for s in meta["outputs"]["labels"] if s["value"] == result["label"])
    write_segmentation(args.output, result["mask"], volume.geometry, [dict(label, value=1)], offset=result["offset"],
                       reference_shape=volume.array.shape[1:])
    print(f"{args.output}: {label['name']}, {int(result['mask'].sum())} voxels, {result['network_passes']} network "
          f"pass(es), {result['seconds']:.2f} s on {client.url}")


def _remote_landmarks(args):
    from types import SimpleNamespace

    with _remote_session(args, "landmarks") as (client, meta, _, session):
        job = _remote_job(args, client, session, "landmarks", meta["id"], refine=args.refine)
        result = client.result_json(job["id"])
        _save(args.output, client.result_bytes(job["id"]))
    for note in result.get("notes", []):
        _notify(note)
    if args.csv:
        _write_landmark_csv(args.csv, SimpleNamespace(points=result["points"], lines=result["lines"]))
    for line in result["lines"]:
        print(f"{line['name']}: {line['length']:.1f} mm")
    print(f"{args.output}: {len(result['points'])} landmarks in {_job_seconds(job):.1f} s on {client.url}")


def _remote_classify(args):
    import json

    from .formats import write_classification_csv

    with _remote_session(args, "classification") as (client, meta, _, session):
        job = _remote_job(args, client, session, "classification", meta["id"])
        data = client.result_bytes(job["id"])
    document = json.loads(data)
    _save(args.output, data)
    if args.csv:
        write_classification_csv(args.csv, document)
    table = ", ".join(f"{c} {p:.3f}" for c, p in zip(document["classes"], document["probabilities"]))
    print(f"{args.output}: {document['decision']} ({table})")
