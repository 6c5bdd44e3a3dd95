"""``nnmamba demo``: the three bundled demo models on the three sample volumes, with every result written as the
file Slicer opens (.seg.nrrd, .mrk.json, classification .json), a PNG preview of each, and a summary scored
against the phantoms' ground truth."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

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


def run_demo(out_folder, device="auto", log=print) -> list:
    """Run the demo into ``out_folder``; returns one summary row per task (also printed through ``log``)."""
    from ..imaging import read_image, write_image

    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for sample in SAMPLES:
        truth = sample_phantom(sample)
        source = sample_file(sample)
        image_path = out / sample.filename
        if source is None:
            write_image(image_path, truth.image, truth.geometry)
        elif source.resolve() != image_path.resolve():
            shutil.copyfile(source, image_path)
        volume = read_image(image_path)
        package = demo_package(sample.model_id)
        tic = time.perf_counter()
        row = RUNNERS[sample.task](package, volume, truth, out / sample.name, device)
        row.update(task=sample.task, model=package.id, input=image_path.name, seconds=time.perf_counter() - tic)
        rows.append(row)
    wall = time.perf_counter() - started
    log(format_summary(rows, wall, out))
    return rows


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
    preview = write_preview(stem.with_suffix(".png"), volume, result.labels, colors, window=(-160, 240))
    found = sum(bool((result.labels == s["value"]).any()) for s in result.segments)
    return {"outputs": [output.name, Path(preview).name],
            "result": f"{found} of {len(result.segments)} structures",
            "score": f"Dice mean {np.mean(list(scores.values())):.3f}, lowest {min(scores.values()):.3f} "
                     f"({min(scores, key=scores.get)})",
            "metrics": {"dice": scores}}


def _landmarks(package, volume, truth, stem, device):
    from ..formats import write_landmarks
    from ..tasks import detect_landmarks
    from .preview import write_preview

    result = detect_landmarks(package, volume, device=device)
    points = [{"label": p["label"], "position": p["position"], "description": f"confidence {p['confidence']:.2f}"}
              for p in result.points]
    output = stem.with_suffix(".mrk.json")
    write_landmarks(output, points, result.lines)
    errors = {p["label"]: float(np.linalg.norm(np.subtract(p["position"], truth.landmarks[p["label"]])))
              for p in result.points}
    marks = [(p["position"], LANDMARK_COLORS[n % len(LANDMARK_COLORS)]) for n, p in enumerate(result.points)]
    preview = write_preview(stem.with_suffix(".png"), volume, points=marks, truths=list(truth.landmarks.values()))
    return {"outputs": [output.name, Path(preview).name],
            "result": ", ".join(f"{line['name']} {line['length']:.1f} mm" for line in result.lines),
            "score": f"radial error mean {np.mean(list(errors.values())):.2f} mm, largest "
                     f"{max(errors.values()):.2f} mm ({max(errors, key=errors.get)})",
            "metrics": {"radial_error_mm": errors}}


def _classification(package, volume, truth, stem, device):
    from ..formats import write_classification_json
    from ..tasks import classify_volume
    from .preview import write_preview

    result = classify_volume(package, volume, device=device)
    output = stem.with_suffix(".classification.json")
    write_classification_json(output, result.as_dict(package, stem.with_suffix(".nrrd")))
    preview = write_preview(stem.with_suffix(".png"), volume)
    expected = package.outputs["classes"][int(truth.label)]
    probability = dict(zip(result.classes, result.probabilities))[result.decision]
    return {"outputs": [output.name, Path(preview).name],
            "result": f"{result.decision} (p = {probability:.3f})",
            "score": f"truth: {expected}, {'right' if result.decision == expected else 'WRONG'}",
            "metrics": {"probabilities": dict(zip(result.classes, result.probabilities)), "truth": expected}}


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
