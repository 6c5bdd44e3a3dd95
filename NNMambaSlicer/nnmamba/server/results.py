"""A finished job's answer: the Slicer-native file (bytes, written by nnmamba.formats) and its JSON form."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..formats import write_classification_json, write_landmarks, write_segmentation

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr")
_DEFAULT_NAMES = {"segmentation": "segmentation", "landmarks": "landmarks", "classification": "classification"}


@dataclass
class JobResult:
    data: bytes          # the file
    filename: str
    media_type: str
    document: dict       # GET /jobs/{id}/result?format=json


def result_name(session_name, task):
    """A safe file stem from the session's name (an uploaded file's name loses its image suffix)."""
    name = session_name or ""
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._")[:80]
    return name or _DEFAULT_NAMES[task]


def _written(filename, write, folder=None):
    """The bytes of the file ``write(path)`` makes, written in a temporary folder (inside ``folder``: the server's
    own temporary folder, swept at start-up if a crash left it behind)."""
    with tempfile.TemporaryDirectory(prefix="nnmamba-result-", dir=folder) as folder:
        path = Path(folder) / filename
        write(path)
        return path.read_bytes()


def segmentation_result(result, stem, folder=None):
    filename = f"{stem}.seg.nrrd"
    data = _written(filename, lambda path: write_segmentation(path, result.labels, result.geometry, result.segments,
                                                              result.regions), folder)
    document = {"segments": result.segments, "regions": result.regions, "labels_shape": list(result.labels.shape),
                "seconds": result.seconds, "notes": result.notes}
    return JobResult(data, filename, "application/octet-stream", document)


def landmark_result(result, stem, folder=None):
    filename = f"{stem}.mrk.json"
    points = [{"label": p["label"], "position": p["position"], "description": f"confidence {p['confidence']:.2f}"}
              for p in result.points]
    data = _written(filename, lambda path: write_landmarks(path, points, result.lines), folder)
    document = {"points": result.points, "lines": result.lines, "seconds": result.seconds, "notes": result.notes}
    return JobResult(data, filename, "application/json", document)


def classification_result(result, package, stem, folder=None):
    filename = f"{stem}.json"
    document = result.as_dict(package)
    data = _written(filename, lambda path: write_classification_json(path, document), folder)
    return JobResult(data, filename, "application/json", dict(document, seconds=result.seconds))
