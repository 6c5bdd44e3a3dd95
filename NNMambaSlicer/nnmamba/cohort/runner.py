"""One case of a cohort, from its input files to the result files a single ``nnmamba predict`` writes for it
(the same writers, so the same bytes) and the numbers people analyse afterwards. The model is loaded once per
runner: the local engine keeps one, each Ray actor keeps its own."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np

from .cases import input_hash

TASKS = ("segmentation", "landmarks", "classification")


class CaseRunner:
    """``CaseRunner(model, task, device=..., **options)``; :meth:`process` never raises for a bad case: its row says
    ``failed`` with the reason. ``options``: overlap, mirroring, tile_batch (segmentation), refine (landmarks),
    segmentation_format (".seg.nrrd", ".nii.gz", ...) and csv (landmark/classification tables next to the results)."""

    def __init__(self, model, task, device="auto", overlap=None, mirroring=None, tile_batch=1, refine=None,
                 segmentation_format=".seg.nrrd", csv=True):
        from ..modelpkg import resolve_model
        from ..tasks.common import make_predictor

        self.package = resolve_model(str(model))
        if self.package.task != task:
            raise ValueError(f"Model {self.package.id!r} is a {self.package.task} model, not a {task} model.")
        self.task = task
        self.options = {"overlap": overlap, "mirroring": mirroring, "tile_batch": tile_batch, "refine": refine}
        self.segmentation_format = segmentation_format
        self.csv = csv
        self.predictor = make_predictor(self.package, device, mirroring)
        self.device = str(self.predictor.device)

    # -- the steps (the local engine reads the next case while this one runs) ------------------------------------
    def read(self, case):
        from ..imaging import read_channels, read_image

        paths = list(case.inputs)
        return read_image(paths[0]) if len(paths) == 1 else read_channels(paths)

    def process(self, case, out_dir, volume=None, digest=None):
        """The manifest row of ``case`` (``volume``: already read by a prefetch, or an exception it raised)."""
        started = time.perf_counter()
        row = {"case": case.id, "device": self.device, "inputs": ";".join(str(p) for p in case.inputs)}
        try:
            if isinstance(volume, BaseException):
                raise volume
            row["input_hash"] = digest or input_hash(case)
            volume = self.read(case) if volume is None else volume
            outputs, measurements = getattr(self, f"_{self.task}")(case, volume, Path(out_dir))
            row.update(measurements, status="done", outputs=";".join(outputs))
        except KeyboardInterrupt:
            raise
        except Exception as error:   # one bad case never stops the others: its row says why
            row.update(status="failed", error=_one_line(error))
        row["seconds"] = round(time.perf_counter() - started, 3)
        return row

    # -- tasks --------------------------------------------------------------------------------------------------------
    def _segmentation(self, case, volume, out_dir):
        from ..formats import write_segmentation_as
        from ..tasks import segment_volume

        options = self.options
        result = segment_volume(self.package, volume, device=self.predictor.device, overlap=options["overlap"],
                                reuse_input=True, mirroring=options["mirroring"], tile_batch=options["tile_batch"],
                                predictor=self.predictor)
        name = case.id + self.segmentation_format
        write_segmentation_as(out_dir / name, result.labels, result.geometry, result.segments, result.regions)
        counts = np.bincount(np.asarray(result.labels).reshape(-1),
                             minlength=max((s["value"] for s in result.segments), default=0) + 1)
        voxel_ml = float(np.prod(result.geometry.spacing)) / 1000.0
        return [name], {f"volume_ml:{s['name']}": round(float(counts[s["value"]]) * voxel_ml, 4)
                        for s in result.segments}

    def _landmarks(self, case, volume, out_dir):
        from ..formats import points_with_confidence, write_landmark_csv, write_landmarks
        from ..tasks import detect_landmarks

        result = detect_landmarks(self.package, volume, device=self.predictor.device, refine=self.options["refine"],
                                  predictor=self.predictor)
        names = [case.id + ".mrk.json"]
        write_landmarks(out_dir / names[0], points_with_confidence(result.points), result.lines)
        if self.csv:
            names.append(case.id + ".csv")
            write_landmark_csv(out_dir / names[1], result.points, result.lines)
        confidence = {p["label"]: p.get("confidence") for p in result.points}
        measurements = {f"confidence:{label}": value for label, value in confidence.items()}
        for line in result.lines:
            measurements[f"{line['name']}_mm"] = round(float(line["length"]), 3)
            ends = [confidence.get(line.get("from")), confidence.get(line.get("to"))]
            measurements[f"{line['name']}_confidence"] = None if None in ends else round(min(ends), 4)
        return names, measurements

    def _classification(self, case, volume, out_dir):
        from ..formats import write_classification_csv, write_classification_json
        from ..tasks import classify_volume

        result = classify_volume(self.package, volume, device=self.predictor.device, predictor=self.predictor)
        document = result.as_dict(self.package, case.inputs[0])
        names = [case.id + ".json"]
        write_classification_json(out_dir / names[0], document)
        if self.csv:
            names.append(case.id + ".csv")
            write_classification_csv(out_dir / names[1], document)
        measurements = {f"p:{name}": round(float(p), 6) for name, p in zip(document["classes"],
                                                                           document["probabilities"])}
        measurements["decision"] = document["decision"]
        return names, measurements


def _one_line(error):
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    if isinstance(error, (ValueError, OSError)) or type(error).__module__.startswith("nnmamba"):
        return message
    where = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    place = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
    return f"{type(error).__name__}: {message}{place}"
