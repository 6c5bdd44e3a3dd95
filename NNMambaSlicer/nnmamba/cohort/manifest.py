"""``results.csv`` and ``results.jsonl``: one row per case, rewritten atomically each time a case finishes, so a
stopped run (Ctrl-C, a crash, a killed job) leaves a manifest that is complete for every finished case and that a
``--resume`` run continues from."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..formats.atomic import atomic_write

LEADING = ("case", "status", "seconds", "device", "outputs", "error", "input_hash")


class Manifest:
    """Rows by case id, in the order cases were listed. ``record(row)`` adds or replaces a row and writes both
    files."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / "results.csv"
        self.jsonl_path = self.out_dir / "results.jsonl"
        self.rows = {}

    @classmethod
    def load(cls, out_dir):
        """The manifest a previous run left (empty when there is none)."""
        manifest = cls(out_dir)
        if manifest.jsonl_path.is_file():
            for line in manifest.jsonl_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    manifest.rows[row["case"]] = row
        return manifest

    def is_done(self, case, digest):
        """True when ``case`` finished before with the same input and its outputs are all still there."""
        row = self.rows.get(case.id)
        return bool(row and row.get("status") == "done" and row.get("input_hash") == digest and row.get("outputs")
                    and all((self.out_dir / name).is_file() for name in row["outputs"].split(";")))

    def record(self, row):
        self.rows[row["case"]] = row
        self.write()

    def write(self):
        rows = list(self.rows.values())
        columns = list(LEADING) + sorted({key for row in rows for key in row} - set(LEADING))
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row.get(key)) for key in columns})
        with atomic_write(self.csv_path, newline="") as stream:
            stream.write(table.getvalue())
        with atomic_write(self.jsonl_path) as stream:
            stream.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
