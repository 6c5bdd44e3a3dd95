"""Training data as a folder, so that ``nnmamba train`` works on a user's own labelled images as it does on the
phantoms. ``nnmamba train phantoms`` writes phantoms in this format, which doubles as its example::

    my-dataset/dataset.json
    {"task": "segmentation" | "landmarks" | "classification",
     "cases": [{"id": "case000", "split": "train" | "validation",
                "image": "images/case000.nrrd",            any format nnmamba reads; a list for several channels
                "labels": "labels/case000.nrrd",           segmentation: a label map on the image's grid
                "landmarks": "landmarks/case000.mrk.json", landmarks: a Slicer markups file with labelled points
                "class": "atrophy"}]}                      classification: a class name of the model

Paths are relative to the folder. Every case is checked when the dataset is opened, and all problems are reported
at once, so a long training run never stops on case 371.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple

import numpy as np

from .phantoms import Phantom
from .training_data import TrainingDataError, default_phantom

DATASET_FILE = "dataset.json"
TASKS = ("segmentation", "landmarks", "classification")


class Dataset(NamedTuple):
    task: str
    cases: List[Phantom]           # the truth rides in the Phantom fields (labels / landmarks / label)
    ids: List[str]
    train: List[int]               # indices into cases
    validation: List[int]


def read_dataset(folder, classes=None) -> Dataset:
    """Open and check a dataset folder. ``classes``: the model's class names (classification)."""
    from ..formats.atomic import read_json

    folder = Path(folder)
    if not (folder / DATASET_FILE).is_file():
        raise TrainingDataError(f"{folder} has no {DATASET_FILE}; see `nnmamba train phantoms` for the format.")
    document = read_json(folder / DATASET_FILE)
    task = document.get("task") if isinstance(document, dict) else None
    if task not in TASKS:
        raise TrainingDataError(f"{folder / DATASET_FILE}: 'task' must be one of {', '.join(TASKS)}, got {task!r}.")
    entries = document.get("cases")
    if not isinstance(entries, list) or not entries:
        raise TrainingDataError(f"{folder / DATASET_FILE}: 'cases' must be a non-empty list.")
    cases, ids, problems = [], [], []
    for number, entry in enumerate(entries):
        case_id = str(entry.get("id", f"#{number}")) if isinstance(entry, dict) else f"#{number}"
        try:
            cases.append(_read_case(folder, task, entry, classes))
            ids.append(case_id)
        except (TrainingDataError, ValueError, OSError, KeyError, TypeError) as error:
            problems.append(f"case {case_id}: {error}")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise TrainingDataError(f"{folder / DATASET_FILE}: {len(problems)} case(s) cannot be used:\n  {shown}")
    splits = [entry.get("split", "train") for entry in entries]
    unknown = sorted(set(splits) - {"train", "validation"})
    if unknown:
        raise TrainingDataError(f"{folder / DATASET_FILE}: 'split' must be 'train' or 'validation', got {unknown}.")
    train = [n for n, split in enumerate(splits) if split == "train"]
    validation = [n for n, split in enumerate(splits) if split == "validation"]
    if not train or not validation:
        raise TrainingDataError(f"{folder / DATASET_FILE}: give at least one 'train' and one 'validation' case "
                                f"(found {len(train)} and {len(validation)}).")
    return Dataset(task, cases, ids, train, validation)


def _read_case(folder, task, entry, classes):
    from ..imaging import _grid_difference, read_channels, read_image

    if not isinstance(entry, dict) or "image" not in entry:
        raise TrainingDataError("each case needs an 'image'.")
    images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    volume = read_image(folder / images[0]) if len(images) == 1 else read_channels([folder / p for p in images])
    image = volume.array[0] if volume.array.shape[0] == 1 else volume.array
    if task == "segmentation":
        labels = read_image(folder / _required(entry, "labels"), name="label map")
        difference = _grid_difference(labels.geometry, labels.array.shape[1:][::-1], volume.geometry,
                                      volume.array.shape[1:][::-1])
        if difference:
            raise TrainingDataError(f"the label map is not on the image's grid ({difference}).")
        values = labels.array[0]
        if np.any(values != np.round(values)) or values.min() < 0:
            raise TrainingDataError("the label map must hold non-negative whole numbers.")
        return Phantom(image, volume.geometry, labels=values.astype(np.uint8))
    if task == "landmarks":
        from ..formats import read_landmarks

        points = read_landmarks(folder / _required(entry, "landmarks")).points
        return Phantom(image, volume.geometry, landmarks={p["label"]: list(p["position"]) for p in points})
    name = _required(entry, "class")
    if classes is not None and name not in classes:
        raise TrainingDataError(f"class {name!r} is not one of the model's classes {list(classes)}.")
    return Phantom(image, volume.geometry, label=list(classes).index(name) if classes is not None else int(name))


def _required(entry, key):
    if key not in entry:
        raise TrainingDataError(f"'{key}' is missing.")
    return entry[key]


def write_phantom_dataset(folder, task, train_seeds, validation_seeds, class_names=("normal", "atrophy")) -> Path:
    """Write seeded phantoms as a dataset folder (the format above): an example, and a check that training from
    files works like training from memory."""
    from ..formats import write_landmarks
    from ..formats.atomic import write_json
    from ..imaging import write_image

    folder = Path(folder)
    make = default_phantom(task)
    cases = []
    for split, seeds in (("train", train_seeds), ("validation", validation_seeds)):
        for seed in seeds:
            phantom, case_id = make(int(seed)), f"phantom{int(seed):05d}"
            entry = {"id": case_id, "split": split, "image": f"images/{case_id}.nrrd"}
            write_image(folder / entry["image"], phantom.image, phantom.geometry)
            if task == "segmentation":
                entry["labels"] = f"labels/{case_id}.nrrd"
                write_image(folder / entry["labels"], phantom.labels, phantom.geometry)
            elif task == "landmarks":
                entry["landmarks"] = f"landmarks/{case_id}.mrk.json"
                write_landmarks(folder / entry["landmarks"],
                                [{"label": k, "position": v} for k, v in phantom.landmarks.items()])
            else:
                entry["class"] = class_names[int(phantom.label)]
            cases.append(entry)
    write_json(folder / DATASET_FILE, {"task": task, "cases": cases})
    return folder
