"""The cases of a cohort: every image file and DICOM series folder directly in a folder, or the rows of a CSV list
(``case,image`` or ``case,image_0,image_1,...`` for multi-channel models; paths relative to the list)."""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class CaseListError(ValueError):
    """A folder or case list that cannot be read as cases; the message says what to fix."""


@dataclass(frozen=True)
class Case:
    """One case: its id (used for the output file names) and its input paths (one per channel)."""

    id: str
    inputs: Tuple[Path, ...]


def case_id(path):
    """A file name without its image ending, made safe for output file names."""
    name = Path(path).name
    for ending in IMAGE_ENDINGS:
        if name.lower().endswith(ending):
            name = name[: -len(ending)]
            break
    return _UNSAFE.sub("_", name).strip("._") or "case"


def _is_dicom_folder(folder):
    return any(entry.suffix.lower() == ".dcm" or entry.name.upper().startswith("IM") for entry in folder.iterdir()
               if entry.is_file())


def find_cases(input_dir=None, inputs_csv=None):
    """The cases, sorted by id; ids are unique (a clash is an error naming both inputs)."""
    if (input_dir is None) == (inputs_csv is None):
        raise CaseListError("Give either --input-dir (a folder of images) or --inputs (a CSV list of cases).")
    cases = _from_folder(Path(input_dir)) if input_dir is not None else _from_csv(Path(inputs_csv))
    seen = {}
    for case in cases:
        if case.id in seen:
            raise CaseListError(f"Two inputs give the case id {case.id!r}: {seen[case.id]} and {case.inputs[0]}. "
                                "Rename one, or list the cases in a CSV with their own ids.")
        seen[case.id] = case.inputs[0]
    if not cases:
        where = input_dir if input_dir is not None else inputs_csv
        raise CaseListError(f"No cases in {where}: expected image files ({', '.join(IMAGE_ENDINGS)}) or DICOM series "
                            "folders.")
    return sorted(cases, key=lambda case: case.id)


def _from_folder(folder):
    if not folder.is_dir():
        raise CaseListError(f"{folder} is not a folder.")
    cases = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.name.lower().endswith(IMAGE_ENDINGS):
            if entry.name.lower().endswith(".seg.nrrd"):
                continue   # a result next to its image is not a case
            cases.append(Case(case_id(entry), (entry,)))
        elif entry.is_dir() and _is_dicom_folder(entry):
            cases.append(Case(case_id(entry), (entry,)))
    return cases


def _from_csv(path):
    if not path.is_file():
        raise CaseListError(f"{path} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        raise CaseListError(f"{path} lists no cases: expected a header 'case,image' (or image_0, image_1, ...) and "
                            "one row per case.")
    columns = [name for name in rows[0] if name and (name == "image" or re.fullmatch(r"image_\d+", name))]
    if "case" not in rows[0] or not columns:
        raise CaseListError(f"{path} needs the columns 'case' and 'image' (or image_0, image_1, ...); it has "
                            f"{', '.join(name for name in rows[0] if name)}.")
    columns.sort(key=lambda name: -1 if name == "image" else int(name.split("_")[1]))
    cases = []
    for number, row in enumerate(rows, start=2):
        inputs = tuple((path.parent / row[name].strip()) for name in columns if (row.get(name) or "").strip())
        if not (row.get("case") or "").strip() or not inputs:
            raise CaseListError(f"{path}, line {number}: a case needs its id and at least one image.")
        cases.append(Case(_UNSAFE.sub("_", row["case"].strip()), inputs))
    return cases


def input_hash(case):
    """sha256 over the case's input files (a DICOM folder: its files in name order), to tell a changed input."""
    digest = hashlib.sha256()
    for path in case.inputs:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode())
            with open(file, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()
