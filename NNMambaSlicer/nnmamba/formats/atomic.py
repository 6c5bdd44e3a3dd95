"""All-or-nothing file writes: a result file is either complete or absent, never half written.

A crash, a full disk or a bad value found midway must not leave a truncated .seg.nrrd that Slicer would load as a
damaged segmentation, nor clobber the previous good result. So writers fill a temp file in the target's own folder
(same file system, so the rename is atomic) and ``os.replace`` it over the target only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def _double_suffix(name):
    """'.seg.nrrd' for 'case.seg.nrrd': readers such as pynrrd or Slicer decide the format from the full suffix."""
    suffixes = Path(name.lstrip(".")).suffixes
    return "".join(suffixes[-2:])


def _create_temp_file(folder, suffix):
    """A new empty file with a random name. Unlike tempfile.mkstemp (owner-only 0600), it gets the permissions
    any new file gets under the user's umask, which the final result keeps after the rename."""
    for _ in range(100):
        temp = folder / f"{TEMP_PREFIX}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return temp
    raise FileExistsError(f"Could not create a temporary file in {folder}.")


def _fsync(path):
    with open(path, "r+b") as handle:  # writable: Windows refuses fsync on read-only handles
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path (same folder, same suffix) for writers that need a filename; rename it to ``path`` on
    success, delete it on error. The parent folder is created if missing."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _create_temp_file(target.parent, _double_suffix(target.name))
    try:
        yield temp
        _fsync(temp)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8", newline=None):
    """``open(path, mode)`` that only replaces ``path`` if the ``with`` body finishes without an exception."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports mode 'w' or 'wb', not {mode!r}.")
    text_options = {"encoding": encoding, "newline": newline} if mode == "w" else {}
    with atomic_path(path) as temp:
        with open(temp, mode, **text_options) as handle:
            yield handle


def write_json(path, document, **dump_options):
    """Write ``document`` as indented JSON (no NaN: Slicer's readers refuse it), atomically."""
    with atomic_write(path) as handle:
        json.dump(document, handle, indent=2, allow_nan=False, **dump_options)
        handle.write("\n")


def read_json(path):
    """The JSON document in ``path``; a ValueError that names the file when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def check_writable(path, what="output"):
    """Before any work: ValueError (one line) when ``path`` cannot be written: it is a folder, its folder is a
    file, or the folder (or the nearest one that exists, for folders still to be made) refuses a new file."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{what} {target} is a folder; give a file name in it (e.g. {target / 'result'}...).")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {what} {target}: {folder} is a file, not a folder.")
    try:
        os.remove(_create_temp_file(folder, ".probe"))
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"cannot write {what} {target}: the folder {folder} refuses new files ({reason}); choose "
                         "another folder.") from None
