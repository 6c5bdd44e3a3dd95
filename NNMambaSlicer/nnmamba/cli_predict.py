"""``nnmamba predict {segment,click,landmarks,classify}``: file in, Slicer-native file out.

One path for every task: the output paths are checked first (folder writable, file ending known), then a backend
(:class:`LocalBackend` here, or :class:`RemoteBackend` on an ``nnmamba serve`` with ``--server``) reads the input and
returns the task's result in one shape, and one writer per task writes it. Outputs are written only when the work
is complete (and atomically), so an error or a Ctrl-C never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional


def register_predict(sub, device_option):
    predict = sub.add_parser("predict", help="run a model on an image file and write Slicer-native results")
    tasks = predict.add_subparsers(title="tasks")

    def task_parser(name, help_text, handler, output_help, cohort=True):
        parser = tasks.add_parser(name, help=help_text)
        parser.add_argument("--model", required=True, help="model package folder/zip, or an installed model id")
        parser.add_argument("--input", required=not cohort, nargs="+", type=Path,
                            help="image file (NIfTI, NRRD, MHA) or DICOM series folder; one per input channel")
        parser.add_argument("--output", required=not cohort, type=Path, help=output_help)
        if cohort:
            from .cohort.command import add_cohort_options

            add_cohort_options(parser)
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        device_option(parser)
        parser.add_argument("--server", metavar="URL", help="run on an nnmamba server (`nnmamba serve`) instead of "
                            "here; --model is then the id of a model installed on the server")
        parser.add_argument("--token", help="the server's token (default: --token-file, $NNMAMBA_SERVER_TOKEN, "
                            "else ~/.nnmamba/server-token)")
        parser.add_argument("--token-file", type=Path, help="a file holding the server's token")
        parser.set_defaults(handler=handler)
        return parser

    segment = task_parser("segment", "label every voxel", cmd_segment, "the file to write: .seg.nrrd (Slicer "
                          "segmentation), or a label map .nii.gz, .nii, .nrrd, .mha")
    segment.add_argument("--overlap", type=float, help="sliding-window overlap in [0, 1) (model default: 0.5)")
    segment.add_argument("--mirroring", action="store_true", help="mirroring test-time augmentation (8x slower)")
    segment.add_argument("--tile-batch", type=int, default=1, help="tiles per network pass")
    segment.add_argument("--output-format", default=".seg.nrrd", help="cohorts: the file ending of each case's "
                         "result (.seg.nrrd, or a label map .nii.gz, .nii, .nrrd, .mha)")

    click = task_parser("click", "segment the structure under points", cmd_click, "the file to write: .seg.nrrd, or "
                        "a label map .nii.gz, .nii, .nrrd, .mha", cohort=False)
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


_COMMAND = {"segmentation": "segment", "landmarks": "landmarks", "classification": "classify"}


# ---------------------------------------------------------------------------------------- one result per task
@dataclass
class Segmentation:
    """A label map (KJI) with its segments; a click's mask is a crop placed at ``offset`` (IJK)."""

    labels: object
    geometry: object
    segments: list
    regions: list
    seconds: float
    notes: List[str] = field(default_factory=list)
    offset: tuple = (0, 0, 0)
    reference_shape: Optional[tuple] = None
    network_passes: Optional[int] = None


@dataclass
class LandmarkSet:
    points: list          # {"label", "position" (LPS mm), "confidence" (0..1)}
    lines: list           # {"name", "from", "to", "length" (mm)}
    seconds: float
    notes: List[str] = field(default_factory=list)


@dataclass
class Classification:
    document: dict        # classes, probabilities, decision, rule, logits, model, input
    seconds: float


# ------------------------------------------------------------------------------------------------ the backends
class LocalBackend:
    """Runs the model in this process."""

    where = ""

    def __init__(self, args, task):
        from .modelpkg import resolve_model

        self.args = args
        self.package = resolve_model(str(args.model))
        self.model = self.package.meta
        _check_task(self.package.id, self.package.task, task)
        self.volume = _read_input(args.input)

    def close(self):
        pass

    def segment(self, progress):
        from .tasks import segment_volume

        args = self.args
        result = segment_volume(self.package, self.volume, device=args.device, overlap=args.overlap,
                                reuse_input=True, mirroring=args.mirroring or None, tile_batch=args.tile_batch,
                                progress=progress, notify=_notify)   # notes are printed as they come
        return Segmentation(result.labels, result.geometry, result.segments, result.regions,
                            result.seconds["total"])

    def click(self, positive, negative, coordinates, progress):
        import numpy as np

        from .geometry import ras_to_lps
        from .tasks import ClickSession

        convert = ras_to_lps if coordinates == "RAS" else np.asarray
        session = ClickSession(self.package, self.volume, device=self.args.device, notify=_notify)
        result = session.segment_at(convert(positive), convert(negative) if negative else ())
        return _click_segmentation(self.model, self.volume, result.label, result.mask, result.offset,
                                   result.seconds, result.notes, result.network_passes)

    def landmarks(self, progress):
        from .tasks import detect_landmarks

        result = detect_landmarks(self.package, self.volume, device=self.args.device, refine=self.args.refine,
                                  progress=progress)
        return LandmarkSet(result.points, result.lines, result.seconds, result.notes)

    def classify(self, progress):
        from .tasks import classify_volume

        result = classify_volume(self.package, self.volume, device=self.args.device)
        return Classification(result.as_dict(self.package, self.args.input[0]), result.seconds)


class RemoteBackend:
    """Runs the model on an ``nnmamba serve``: the input is read and checked here, uploaded once as raw voxels and
    geometry (a session, deleted by :meth:`close`, also on errors and Ctrl-C), and the answer comes back in the
    same shapes as :class:`LocalBackend`'s. Ctrl-C while a job runs cancels it on the server."""

    def __init__(self, args, task):
        from .client import Client

        self.args = args
        self.client = Client(args.server, token=args.token, token_file=args.token_file)
        self.where = f" on {self.client.url}"
        self.model = self.client.model(str(args.model))
        _check_task(self.model["id"], self.model["task"], task)
        self.volume = _read_input(args.input)
        self.session = None
        self.session = self.client.upload_volume(self.volume.array, self.volume.geometry, name=args.input[0].name)

    def close(self):
        from .client import BackendError

        if self.session is not None:
            with contextlib.suppress(BackendError):
                self.client.delete_session(self.session)

    def _job(self, task, progress, **options):
        from .client import Job

        job = Job(self.client, self.client.submit(self.session, task, self.model["id"], device=self.args.device,
                                                  **options), task, self.model["id"], self.session)
        job.wait(progress=progress)
        return job, job.result_json()

    def segment(self, progress):
        if self.args.tile_batch != 1:
            _notify("--tile-batch is chosen by the server; ignored with --server.")
        job, summary = self._job("segmentation", progress, overlap=self.args.overlap,
                                 mirroring=self.args.mirroring or None)
        labels = _labels_of_seg_nrrd(job.result_bytes())
        return Segmentation(labels, self.volume.geometry, summary.get("segments", []), summary.get("regions", []),
                            job.seconds, summary.get("notes", []))

    def click(self, positive, negative, coordinates, progress):
        answer = self.client.click(self.session, self.model["id"], positive, negative, coordinates)
        return _click_segmentation(self.model, self.volume, answer["label"], answer["mask"], answer["offset"],
                                   answer["seconds"], answer.get("notes", []), answer["network_passes"])

    def landmarks(self, progress):
        job, summary = self._job("landmarks", progress, refine=self.args.refine)
        return LandmarkSet(summary["points"], summary["lines"], job.seconds, summary.get("notes", []))

    def classify(self, progress):
        job, document = self._job("classification", progress)
        document = {key: value for key, value in document.items() if key != "seconds"}
        return Classification(dict(document, input=str(self.args.input[0])), job.seconds)


@contextlib.contextmanager
def _backend(args, task):
    backend = (RemoteBackend if args.server else LocalBackend)(args, task)
    try:
        yield backend
    finally:
        backend.close()


def _read_input(paths):
    from .imaging import read_channels, read_image

    return read_image(paths[0]) if len(paths) == 1 else read_channels(paths)


def _check_task(model_id, model_task, task):
    if model_task != task:
        raise ValueError(f"Model {model_id!r} is a {model_task} model; 'predict {_COMMAND[task]}' needs a "
                         f"{task} model.")


def _click_segmentation(model, volume, label, mask, offset, seconds, notes, passes):
    if label == 0:
        raise ValueError("No structure under the point(s): the model sees background there. Click on the "
                         "structure, or use 'predict segment'.")
    structure = next(s for s in model["outputs"]["labels"] if s["value"] == label)
    return Segmentation(mask, volume.geometry, [dict(structure, value=1)], [], seconds, list(notes),
                        offset=tuple(offset), reference_shape=volume.array.shape[1:], network_passes=passes)


def _labels_of_seg_nrrd(data):
    """The label layer of a .seg.nrrd the server sent (read through a temporary file: slicerio reads paths)."""
    import tempfile

    from .formats import read_segmentation

    with tempfile.TemporaryDirectory(prefix="nnmamba-") as folder:
        path = Path(folder) / "result.seg.nrrd"
        path.write_bytes(data)
        return read_segmentation(path).labels


# ------------------------------------------------------------------------------------- checks, progress, notes
def _check_outputs(args, endings, what):
    """Before any work: the output (and --csv) can be written and have an ending this command writes."""
    from .formats.atomic import check_writable

    check_writable(args.output, "--output")
    if not str(args.output).lower().endswith(endings):
        raise ValueError(f"--output {args.output}: {what} is written as {' or '.join(endings)}; give a file name "
                         "with that ending.")
    csv = getattr(args, "csv", None)
    if csv is not None:
        check_writable(csv, "--csv")
        if not str(csv).lower().endswith(".csv"):
            raise ValueError(f"--csv {csv}: the table is written as CSV; give a file name ending with .csv.")


def _check_segmentation_output(args):
    from .formats import segmentation_format
    from .formats.atomic import check_writable

    check_writable(args.output, "--output")
    segmentation_format(args.output)


class _ProgressBar:
    """A tqdm bar driven by the tasks' (fraction, eta, message) callback; cleared when the work is interrupted."""

    def __init__(self, quiet, description):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, disable=quiet, desc=description, unit="‰", file=sys.stderr,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def __call__(self, fraction, eta, message):
        self.bar.update(round(fraction * 1000) - self.bar.n)

    def __enter__(self):
        return self

    def __exit__(self, error_type, *exc):
        if error_type is not None:
            self.bar.leave = False       # an error or Ctrl-C: the one line that follows says what happened
        self.bar.close()


def _notify(message):
    print(f"nnmamba: {message}", file=sys.stderr)


def _run(args, task, method, *arguments, progress=True):
    """Open the backend, run its ``method`` (with a progress bar for the long tasks), close; (the task's result,
    where it ran). The notes that were not printed as they came are printed here."""
    with _backend(args, task) as backend:
        quiet = args.quiet or not progress
        with _ProgressBar(quiet, f"{_COMMAND[task]} with {backend.model['id']}{backend.where}") as bar:
            result = getattr(backend, method)(*arguments, bar)
        for note in getattr(result, "notes", []):
            _notify(note)
        return result, backend.where


# -------------------------------------------------------------------------------------------------- commands
def _cohort_or_single(args, task):
    """A cohort's exit code when the cohort options are given, else None (after checking --input/--output)."""
    from .cohort.command import is_cohort, run_cohort_command

    if is_cohort(args):
        if args.input or args.output:
            raise ValueError("give either --input/--output (one case) or --input-dir/--inputs with --output-dir "
                             "(a cohort), not both.")
        return run_cohort_command(args, task, getattr(args, "output_format", ".seg.nrrd"))
    if not args.input or args.output is None:
        raise ValueError("give --input and --output (one case), or --input-dir/--inputs and --output-dir (a "
                         "cohort).")
    return None


def cmd_segment(args):
    code = _cohort_or_single(args, "segmentation")
    if code is not None:
        return code
    _check_segmentation_output(args)
    result, where = _run(args, "segmentation", "segment")
    _write_segmentation(args.output, result)
    import numpy as np

    counts = np.bincount(np.asarray(result.labels).reshape(-1), minlength=max(
        [s["value"] for s in result.segments], default=0) + 1)
    found = [f"{s['name']} ({counts[s['value']]} voxels)" for s in result.segments if counts[s["value"]]]
    print(f"{args.output}: {len(found)} of {len(result.segments)} structures found in {result.seconds:.1f} s{where}"
          + (": " + ", ".join(found) if found else ""))
    _print_label_values(args.output, result.segments)


def cmd_click(args):
    _check_segmentation_output(args)
    coordinates = "RAS" if args.ras else "LPS"
    result, where = _run(args, "segmentation", "click", args.point, args.negative, coordinates, progress=False)
    _write_segmentation(args.output, result)
    structure = result.segments[0]
    print(f"{args.output}: {structure['name']}, {int(result.labels.sum())} voxels, {result.network_passes} network "
          f"pass(es), {result.seconds:.2f} s{where}")
    _print_label_values(args.output, result.segments)


def _write_segmentation(path, result):
    from .formats import write_segmentation_as

    write_segmentation_as(path, result.labels, result.geometry, result.segments, result.regions,
                          offset=result.offset, reference_shape=result.reference_shape)


def _print_label_values(path, segments):
    from .formats import segmentation_format

    if segmentation_format(path) != ".seg.nrrd":
        print("label values: " + ", ".join(f"{s['value']} {s['name']}" for s in segments))


def cmd_landmarks(args):
    code = _cohort_or_single(args, "landmarks")
    if code is not None:
        return code
    _check_outputs(args, (".mrk.json",), "a landmark set (Slicer markups)")
    from .formats import points_with_confidence, write_landmark_csv, write_landmarks

    result, where = _run(args, "landmarks", "landmarks")
    write_landmarks(args.output, points_with_confidence(result.points), result.lines)
    if args.csv:
        write_landmark_csv(args.csv, result.points, result.lines)
    for line in result.lines:
        print(f"{line['name']}: {line['length']:.1f} mm")
    print(f"{args.output}: {len(result.points)} landmarks in {result.seconds:.1f} s{where}")


def cmd_classify(args):
    code = _cohort_or_single(args, "classification")
    if code is not None:
        return code
    _check_outputs(args, (".json",), "a classification")
    from .formats import write_classification_csv, write_classification_json

    result, where = _run(args, "classification", "classify", progress=False)
    document = result.document
    write_classification_json(args.output, document)
    if args.csv:
        write_classification_csv(args.csv, document)
    table = ", ".join(f"{c} {p:.3f}" for c, p in zip(document["classes"], document["probabilities"]))
    print(f"{args.output}: {document['decision']} ({table}){where}")
