"""``nnmamba demo``: the three bundled demo models on the three sample volumes, with every result written as the
file Slicer opens (.seg.nrrd, .mrk.json, classification .json), a PNG preview of each, and a summary scored
against the phantoms' ground truth."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..imaging import read_image, write_image
from .evaluation import dice
from .samples import SAMPLES, sample_file, sample_phantom

LANDMARK_COLORS = [(1.0, 0.2, 0.2), (1.0, 0.6, 0.1), (0.2, 0.8, 0.2), (0.1, 0.8, 0.8), (0.3, 0.4, 1.0),
                   (0.9, 0.3, 0.9)]


def demo_package(model_id):
    """A bundled demo model (never a user-installed package of the same id: the demo shows what was shipped)."""
    from ..modelpkg import ModelPackage, bundled_models_dir

    folder = bundled_models_dir()
    if folder is None or not (folder / model_id / "model.json").is_file():
        raise FileNotFoundError(f"The bundled demo model {model_id!r} is missing (looked in {folder}). Reinstall "
                                f"nnmamba, or rebuild it with `nnmamba train demo` into Resources/Models/{model_id}.")
    return ModelPackage.open(folder / model_id)


def run_demo(out_folder, device="auto", log=print, step=None) -> list:
    """Run the demo into ``out_folder``; returns one summary row per task (also printed through ``log``).

    ``step(message)`` reports each step as it starts and ends (default: stderr). All or nothing: the files are
    written into a hidden staging folder inside ``out_folder`` and moved into place at the end, so an error or a
    Ctrl-C at any moment leaves ``out_folder`` as it was (and removes it if the demo made it)."""
    from ..formats.atomic import check_writable

    step = step or _stderr
    out = Path(out_folder)
    check_writable(out / SAMPLES[0].filename, "demo output")
    step(f"nnmamba demo: the {len(SAMPLES)} demo models on the sample volumes, into {out}/ (about 10 s on two CPU "
         "cores, plus a few seconds to load torch)")
    made = _missing_folders(out)
    staging, moved = None, []
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".nnmamba-demo-partial-", dir=out))
        rows, wall = _run_all(staging, device, step)
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
            moved.append(out / path.name)
        staging.rmdir()
    except BaseException:
        with _ctrl_c_ignored():       # the clean-up must finish, whatever the user presses
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            for path in moved:
                with contextlib.suppress(OSError):
                    path.unlink()
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    log(format_summary(rows, wall, out))
    return rows


def _run_all(staging, device, step):
    started = time.perf_counter()
    rows = []
    for number, sample in enumerate(SAMPLES, 1):
        tic = time.perf_counter()
        step(f"[{number}/{len(SAMPLES)}] {sample.task}: {sample.model_id} on {sample.filename} ...")
        truth = sample_phantom(sample)
        source = sample_file(sample)
        image_path = staging / sample.filename
        if source is None:
            write_image(image_path, truth.image, truth.geometry)
        else:
            shutil.copyfile(source, image_path)
        volume = read_image(image_path)
        package = demo_package(sample.model_id)
        row = RUNNERS[sample.task](package, volume, truth, staging / sample.name, device)
        row.update(task=sample.task, model=package.id, input=image_path.name, seconds=time.perf_counter() - tic)
        rows.append(row)
        step(f"[{number}/{len(SAMPLES)}] {sample.task}: {row['result']} ({row['seconds']:.1f} s)")
    return rows, time.perf_counter() - started


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


def _missing_folders(out):
    """The folders of ``out`` (itself included) that do not exist yet, outermost first."""
    missing = []
    folder = out
    while not folder.exists() and folder != folder.parent:
        missing.insert(0, folder)
        folder = folder.parent
    return missing


@contextlib.contextmanager
def _ctrl_c_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _segmentation(package, volume, truth, stem, device):
    from ..formats import write_segmentation
    from ..tasks import segment_volume
    from .preview import write_preview

    result = segment_volume(package, volume, device=device)
    output = stem.with_suffix(".seg.nrrd")
    write_segmentation(output, result.labels, result.geometry, result.segments, result.regions)
    scores = {s["name"]: dice(result.labels == s["value"], truth.labels == s["value"]) for s in result.segments}
    scores = {name: value for name, value in scores.items() if value is not None}
    colors = {s["value"]: s["color"] for s in result.segments}
    names = {s["value"]: s["name"] for s in result.segments}
    score = (f"Dice mean {np.mean(list(scores.values())):.3f}, lowest {min(scores.values()):.3f} "
             f"({min(scores, key=scores.get)})")
    preview = write_preview(stem.with_suffix(".png"), volume, result.labels, colors, window=(-160, 240), names=names,
                            title=f"{package.id} on {stem.name}: segmentation ({score} against the phantom)")
    found = sum(bool((result.labels == s["value"]).any()) for s in result.segments)
    return {"outputs": [output.name, Path(preview).name],
            "result": f"{found} of {len(result.segments)} structures",
            "score": score,
            "metrics": {"dice": scores}}


def _landmarks(package, volume, truth, stem, device):
    from ..formats import points_with_confidence, write_landmarks
    from ..tasks import detect_landmarks
    from .preview import Line, write_preview

    result = detect_landmarks(package, volume, device=device)
    output = stem.with_suffix(".mrk.json")
    write_landmarks(output, points_with_confidence(result.points), result.lines)
    errors = {p["label"]: float(np.linalg.norm(np.subtract(p["position"], truth.landmarks[p["label"]])))
              for p in result.points}
    marks = [(p["position"], LANDMARK_COLORS[n % len(LANDMARK_COLORS)]) for n, p in enumerate(result.points)]
    lines = [Line(line["name"], result.position(line["from"]), result.position(line["to"]), line["length"])
             for line in result.lines]
    score = (f"radial error mean {np.mean(list(errors.values())):.2f} mm, largest "
             f"{max(errors.values()):.2f} mm ({max(errors, key=errors.get)})")
    preview = write_preview(stem.with_suffix(".png"), volume, points=marks, truths=list(truth.landmarks.values()),
                            point_names=[f"{p['label']} ({p['confidence']:.2f})" for p in result.points],
                            lines=lines, title=f"{package.id} on {stem.name}: landmarks (dots; white crosses: "
                            "the phantom's truth)", caption=[f"Against the phantom: {score}."])
    return {"outputs": [output.name, Path(preview).name],
            "result": ", ".join(f"{line['name']} {line['length']:.1f} mm" for line in result.lines),
            "score": score,
            "metrics": {"radial_error_mm": errors}}


def _classification(package, volume, truth, stem, device):
    from ..formats import write_classification_json
    from ..tasks import classify_volume
    from .preview import write_preview

    result = classify_volume(package, volume, device=device)
    output = stem.with_suffix(".classification.json")
    write_classification_json(output, result.as_dict(package, stem.with_suffix(".nrrd").name))
    expected = package.outputs["classes"][int(truth.label)]
    probabilities = dict(zip(result.classes, result.probabilities))
    probability = probabilities[result.decision]
    rule = result.rule
    threshold = f" (threshold {rule['threshold']:g})" if "threshold" in rule else ""
    preview = write_preview(stem.with_suffix(".png"), volume, title=f"{package.id} on {stem.name}: classification",
                            caption=[f"Decision: {result.decision}, p = {probability:.3f}{threshold}",
                                     "Probabilities: " + ", ".join(f"{c} {p:.3f}" for c, p in probabilities.items()),
                                     f"The phantom's truth: {expected}."])
    return {"outputs": [output.name, Path(preview).name],
            "result": f"{result.decision} (p = {probability:.3f})",
            "score": f"truth: {expected}, {'right' if result.decision == expected else 'WRONG'}",
            "metrics": {"probabilities": probabilities, "truth": expected}}


RUNNERS = {"segmentation": _segmentation, "landmarks": _landmarks, "classification": _classification}


def format_summary(rows, wall_seconds, out) -> str:
    header = ("task", "model", "result", "against the phantom's truth", "time")
    table = [header] + [(r["task"], r["model"], r["result"], r["score"], f"{r['seconds']:.1f} s") for r in rows]
    widths = [max(len(line[n]) for line in table) for n in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    files = ", ".join(name for r in rows for name in [r["input"], *r["outputs"]])
    lines += ["", f"Wall time {wall_seconds:.1f} s. Files in {out}: {files}",
              "Open them in 3D Slicer (drag and drop), or look at the PNG previews."]
    return "\n".join(lines)
