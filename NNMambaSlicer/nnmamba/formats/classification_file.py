"""Classification results: a JSON record with everything (model, input, rule) for provenance, and a CSV table, one
row per class, that Slicer loads as a Table node.

The CSV gets a ``<name>.schema.csv`` companion, Slicer's own way to type table columns: without it
``vtkMRMLTableStorageNode`` reads every column as text, and probabilities could not be sorted or plotted.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from nnmamba.formats.atomic import atomic_write, read_json, write_json

COLUMNS = (
    ("class", "string", "Class name"),
    ("probability", "double", "Predicted probability of the class"),
    ("decision", "int", "1 for the predicted class, 0 otherwise"),
)


def write_classification_json(path, result):
    """Write the result dict (at least "classes" and "probabilities"; every other key is kept) as JSON."""
    result = _checked_result(result)
    write_json(path, result, default=_plain)


def write_classification_csv(path, result, schema=True):
    """Write one row per class: class, probability, decision (1/0). With ``schema``, also ``<name>.schema.csv`` so
    Slicer reads probability as double and decision as int."""
    result = _checked_result(result)
    if schema:
        with atomic_write(schema_path(path), newline="") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
            writer.writerow(["columnName", "type", "description"])
            writer.writerows(COLUMNS)
    decision = result.get("decision")
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([name for name, _, _ in COLUMNS])
        for name, probability in zip(result["classes"], result["probabilities"]):
            writer.writerow([name, repr(float(probability)), 1 if name == decision else 0])


def read_classification_json(path):
    """Read and check a result written by :func:`write_classification_json`."""
    result = read_json(path)
    return _checked_result(result, source=f"{path}: ")


def schema_path(csv_path):
    """Where Slicer looks for a table's column types: ``x.csv`` -> ``x.schema.csv``."""
    csv_path = Path(csv_path)
    stem = csv_path.name[: -len(".csv")] if csv_path.name.lower().endswith(".csv") else csv_path.name
    return csv_path.with_name(f"{stem}.schema.csv")


def _checked_result(result, source=""):
    if not isinstance(result, dict):
        raise ValueError(f"{source}A classification result must be a dict, got {type(result).__name__}.")
    classes, probabilities = result.get("classes"), result.get("probabilities")
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise ValueError(f"{source}'classes' must be a non-empty list of class names, got {classes!r}.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"{source}Class names must be unique, got {list(classes)}.")
    try:
        values = [float(p) for p in probabilities]
    except (TypeError, ValueError):
        values = None
    if values is None or len(values) != len(classes):
        raise ValueError(
            f"{source}'probabilities' must hold one number per class ({len(classes)}), got {probabilities!r}."
        )
    if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in values):
        raise ValueError(f"{source}Probabilities must be finite and within 0..1, got {values}.")
    decision = result.get("decision")
    if decision is not None and decision not in classes:
        raise ValueError(f"{source}'decision' {decision!r} is not one of the classes {list(classes)}.")
    return {**result, "classes": list(classes), "probabilities": values}


def _plain(value):
    """numpy scalars and arrays -> plain Python numbers and lists for json."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
