"""Build the archive that 3D Slicer's Extensions Manager installs with "Install from file...".

The layout is the one Slicer's extension packaging (CPack) produces for a scripted extension:

    <top folder>/lib/Slicer-X.Y/qt-scripted-modules/<Module>.py, <Module>Lib/, nnmamba/, Resources/...
    <top folder>/share/Slicer-X.Y/NNMamba.s4ext

Slicer strips the top folder, takes the extension name from the .s4ext and adds lib/Slicer-X.Y/qt-scripted-modules
to its module paths, with X.Y its own version: an archive only works in the Slicer release it was built for.
What goes in is what the modules' CMakeLists.txt list (the same files a Slicer build installs) plus the shared
root Resources/Models and Resources/SampleData; the .s4ext comes from the EXTENSION_* values of CMakeLists.txt.
The archive is deterministic: sorted entries, fixed times and owners.

    python Utilities/build_extension_archive.py --slicer-version 5.8 [--out dist/]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extension_layout import (  # noqa: E402
    EXTENSION_NAME,
    MODULES,
    ROOT,
    SHARED_RESOURCE_DIRS,
    ExtensionLayoutError,
    extension_metadata,
    module_cmake_lists,
    module_files_on_disk,
    s4ext_text,
    shippable_files,
)

# The oldest Slicer the modules run in: @parameterNodeWrapper and slicer.i18n arrived in 5.4.
OLDEST_SLICER = (5, 4)
# 1980-01-01: a fixed time for every entry (zip-safe, and SOURCE_DATE_EPOCH overrides it for reproducible builds).
DEFAULT_MTIME = 315532800


def parse_slicer_version(text: str) -> Tuple[int, int]:
    """(major, minor) of a Slicer release given as ``X.Y``; a clear error for anything else."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text))
    if match is None:
        raise ExtensionLayoutError(f"--slicer-version must be a Slicer release as MAJOR.MINOR, for example 5.8; got "
                                   f"{text!r} (Slicer reads modules from lib/Slicer-MAJOR.MINOR, so patch numbers "
                                   "do not belong here)")
    version = (int(match.group(1)), int(match.group(2)))
    if version < OLDEST_SLICER:
        raise ExtensionLayoutError(f"Slicer {version[0]}.{version[1]} is too old for NNMamba: its modules need "
                                   f"Slicer {OLDEST_SLICER[0]}.{OLDEST_SLICER[1]} or newer")
    return version


def archive_entries(root: Path = ROOT) -> Dict[str, Path]:
    """Destination under qt-scripted-modules/ -> source file, for every file the extension installs. Fails when a
    module's CMake lists are stale or two files would land on the same destination (a shared Resources/ tree)."""
    root = Path(root)
    entries: Dict[str, Path] = {}

    def add(destination, source):
        if destination in entries:
            raise ExtensionLayoutError(f"two files would be installed as qt-scripted-modules/{destination}: "
                                       f"{entries[destination]} and {source}; all modules share one Resources/ "
                                       "tree, so name resource files after their module")
        entries[destination] = source

    for module in MODULES:
        scripts, resources = module_cmake_lists(module, root)
        if (sorted(scripts), sorted(resources)) != tuple(sorted(x) for x in module_files_on_disk(module, root)):
            raise ExtensionLayoutError(f"{module}/CMakeLists.txt does not list the files on disk; run "
                                       "Utilities/update_cmake_lists.py first")
        for relative in scripts + resources:
            source = root / module / relative
            if not source.is_file():
                raise ExtensionLayoutError(f"{module}/CMakeLists.txt lists {relative}, which does not exist")
            add(relative, source)
    for folder in SHARED_RESOURCE_DIRS:
        shared = root / "Resources" / folder
        if not shared.is_dir():
            raise ExtensionLayoutError(f"{shared} is missing: the demo models and sample data ship with the extension")
        for relative in shippable_files(shared):
            add(f"Resources/{folder}/{relative}", shared / relative)
    return entries


def git_revision(root: Path = ROOT) -> str:
    """The commit the sources come from, or "NA" outside a git checkout."""
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return "NA"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "NA"


def archive_name(slicer_version: str) -> str:
    """The top folder (and file stem) of the archive for one Slicer release."""
    major, minor = parse_slicer_version(slicer_version)
    return f"{EXTENSION_NAME}-Slicer-{major}.{minor}"


def _tar_info(name, mtime, size=None):
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if size is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info


def build_archive(slicer_version: str, out_dir: Path = ROOT / "dist", root: Path = ROOT,
                  revision: Optional[str] = None) -> Path:
    """Write ``<out_dir>/NNMamba-Slicer-X.Y.tar.gz``; returns its path."""
    major, minor = parse_slicer_version(slicer_version)
    top = archive_name(slicer_version)
    slicer_dir = f"Slicer-{major}.{minor}"
    files: Dict[str, bytes] = {}
    for destination, source in archive_entries(root).items():
        files[f"{top}/lib/{slicer_dir}/qt-scripted-modules/{destination}"] = source.read_bytes()
    description = s4ext_text(extension_metadata(root), revision or git_revision(root))
    files[f"{top}/share/{slicer_dir}/{EXTENSION_NAME}.s4ext"] = description.encode("utf-8")

    folders = {top}
    for name in files:
        parts = name.split("/")
        folders.update("/".join(parts[:n]) for n in range(1, len(parts)))
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_MTIME))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{top}.tar.gz"
    handle, temporary = tempfile.mkstemp(dir=str(out_dir), prefix=f".{top}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as compressed, \
                tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name in sorted(folders | set(files), key=lambda n: n.split("/")):
                if name in files:
                    archive.addfile(_tar_info(name, mtime, len(files[name])), io.BytesIO(files[name]))
                else:
                    archive.addfile(_tar_info(name, mtime))
        _use_default_permissions(temporary)
        os.replace(temporary, str(target))
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return target


def _use_default_permissions(path):
    """mkstemp makes 0600 files; give the result the permissions a plain new file gets (umask applied)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the NNMamba archive for Slicer's 'Install from file...'.")
    parser.add_argument("--slicer-version", required=True, help="the Slicer release, MAJOR.MINOR (e.g. 5.8)")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default: dist/)")
    parser.add_argument("--revision", default=None, help="revision written to the .s4ext (default: git HEAD)")
    args = parser.parse_args(argv)
    try:
        path = build_archive(args.slicer_version, Path(args.out), revision=args.revision)
    except ExtensionLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
