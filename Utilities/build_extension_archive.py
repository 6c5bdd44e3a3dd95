"""Build the archive that 3D Slicer's Extensions Manager installs with "Install from file...".

The layout is the one Slicer's extension packaging (CPack, CMake/SlicerExtensionCPack.cmake with the directories of
CMake/UseSlicer.cmake.in) produces for a scripted extension on each operating system:

    linux, win: <top>/lib/Slicer-X.Y/qt-scripted-modules/<Module>.py, <Module>Lib/, nnmamba/, Resources/...
                <top>/share/Slicer-X.Y/NNMamba.s4ext
    macosx:     <top>/Slicer.app/Contents/Extensions-<slicer revision>/NNMamba/lib/Slicer-X.Y/qt-scripted-modules/...
                <top>/Slicer.app/Contents/Extensions-<slicer revision>/NNMamba/share/Slicer-X.Y/NNMamba.s4ext

Slicer (qSlicerExtensionsManagerModel: installExtension, extractExtensionArchive) names the extension after the first
.s4ext in the archive, strips the top folder, on macOS copies only Slicer.app/Contents/Extensions-<its own revision>/
<name>, reads share/Slicer-X.Y/<name>.s4ext of what it copied and adds lib/Slicer-X.Y/qt-scripted-modules to its
module paths, with X.Y its own version: an archive works only in the Slicer release (on macOS: the build) it was made
for. The archive and its top folder are named as CPack names them,
<slicer revision>-<os>-amd64-NNMamba-git<commit>-<date of the commit>, with Slicer-X.Y in place of a revision not
given (linux and win do not need it). A .tar.gz on every OS: Slicer reads it on Windows too.
What goes in is what the modules' CMakeLists.txt list (the same files a Slicer build installs) plus the shared
root Resources/Models and Resources/SampleData; the .s4ext comes from the EXTENSION_* values of CMakeLists.txt.
The archive is deterministic: sorted entries, fixed times and owners.

    python Utilities/build_extension_archive.py --slicer-version 5.8 [--os linux|win] [--out dist/]
    python Utilities/build_extension_archive.py --slicer-version 5.8 --os macosx --slicer-revision 33241
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
# Slicer's operating system names (CMake/SlicerBlockOperatingSystemNames.cmake) and its architecture name for 64-bit
# builds (SlicerMacroGetOperatingSystemArchitectureBitness.cmake: amd64 on every 64-bit OS).
SLICER_OSES = ("linux", "macosx", "win")
SLICER_ARCHITECTURE = "amd64"
# macOS: Slicer_BUNDLE_LOCATION and Slicer_EXTENSIONS_DIRBASENAME, where the extensions manager copies from.
MAC_BUNDLE_LOCATION = "Slicer.app/Contents"
EXTENSIONS_DIRBASENAME = "Extensions"
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


def _git(root, *arguments):
    """Output of a git command in ``root``, or None outside a git checkout (or without git)."""
    try:
        result = subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, text=True, timeout=30,
                                check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def git_revision(root: Path = ROOT) -> str:
    """The commit the sources come from, or "NA" outside a git checkout."""
    return _git(root, "rev-parse", "HEAD") or "NA"


def git_commit_date(root: Path = ROOT) -> str:
    """``YYYY-MM-DD`` of the last commit (the date CPack puts in a package name), or "NA" outside a git checkout."""
    text = _git(root, "show", "-s", "--format=%ci", "HEAD") or ""
    match = re.match(r"\d{4}-\d{2}-\d{2}", text)
    return match.group(0) if match else "NA"


def host_os(platform: Optional[str] = None) -> str:
    """Slicer's name for the operating system this runs on (``sys.platform`` by default)."""
    platform = sys.platform if platform is None else platform
    if platform.startswith(("win", "cygwin", "msys")):
        return "win"
    return "macosx" if platform == "darwin" else "linux"


def parse_slicer_os(text: str) -> str:
    if text not in SLICER_OSES:
        raise ExtensionLayoutError(f"--os must be one of Slicer's operating system names {', '.join(SLICER_OSES)}; "
                                   f"got {text!r}")
    return text


def parse_slicer_revision(text: Optional[str], slicer_os: str) -> Optional[str]:
    """The Slicer revision (a number such as 33241) as text; required for macosx, optional elsewhere."""
    if text is None or not str(text).strip():
        if slicer_os == "macosx":
            raise ExtensionLayoutError(
                "--os macosx needs --slicer-revision: on macOS the Extensions Manager installs only what lies in "
                "Slicer.app/Contents/Extensions-<revision>/NNMamba of the archive, with <revision> that of the "
                "Slicer that installs it. Find it in Slicer under Help > About (the number after 'r', e.g. r33241) "
                "or in its Python console: slicer.app.revision")
        return None
    text = str(text).strip()
    if not re.fullmatch(r"\d+", text):
        raise ExtensionLayoutError(f"--slicer-revision must be Slicer's revision number (slicer.app.revision, e.g. "
                                   f"33241); got {text!r}")
    return text


def extension_prefix(slicer_os: str = "linux", slicer_revision: Optional[str] = None) -> str:
    """Where, under the top folder, the extension's own tree (lib/, share/) lies for ``slicer_os``: nothing on linux
    and win, ``Slicer.app/Contents/Extensions-<revision>/NNMamba`` on macosx."""
    slicer_os = parse_slicer_os(slicer_os)
    revision = parse_slicer_revision(slicer_revision, slicer_os)
    if slicer_os != "macosx":
        return ""
    return f"{MAC_BUNDLE_LOCATION}/{EXTENSIONS_DIRBASENAME}-{revision}/{EXTENSION_NAME}"


def archive_name(slicer_version: str, slicer_os: str = "linux", slicer_revision: Optional[str] = None,
                 revision: str = "NA", date: str = "NA") -> str:
    """The top folder (and file stem) of the archive, as CPack names an extension package:
    ``<slicer revision>-<os>-amd64-NNMamba-git<commit>-<date>``, ``Slicer-X.Y`` in place of a missing revision."""
    major, minor = parse_slicer_version(slicer_version)
    slicer_os = parse_slicer_os(slicer_os)
    slicer_revision = parse_slicer_revision(slicer_revision, slicer_os)
    if not re.fullmatch(r"[A-Za-z0-9._]+", revision):
        raise ExtensionLayoutError(f"--revision must be a commit (letters, digits, '.', '_'); got {revision!r}")
    scm = "localNA" if revision == "NA" else "git" + (revision[:7] if re.fullmatch(r"[0-9a-f]{8,}", revision)
                                                      else revision)
    return "-".join((slicer_revision or f"Slicer-{major}.{minor}", slicer_os, SLICER_ARCHITECTURE, EXTENSION_NAME,
                     scm, date))


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
                  revision: Optional[str] = None, slicer_os: str = "linux",
                  slicer_revision: Optional[str] = None) -> Path:
    """Write the archive for one Slicer release and operating system into ``out_dir``; returns its path.
    ``slicer_revision`` is required for macosx (see :func:`extension_prefix`)."""
    major, minor = parse_slicer_version(slicer_version)
    prefix = extension_prefix(slicer_os, slicer_revision)
    revision = revision or git_revision(root)
    top = archive_name(slicer_version, slicer_os, slicer_revision, revision, git_commit_date(root))
    base = "/".join(part for part in (top, prefix) if part)
    slicer_dir = f"Slicer-{major}.{minor}"
    files: Dict[str, bytes] = {}
    for destination, source in archive_entries(root).items():
        files[f"{base}/lib/{slicer_dir}/qt-scripted-modules/{destination}"] = source.read_bytes()
    description = s4ext_text(extension_metadata(root), revision)
    files[f"{base}/share/{slicer_dir}/{EXTENSION_NAME}.s4ext"] = description.encode("utf-8")

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
    parser.add_argument("--os", dest="slicer_os", default=None, metavar="|".join(SLICER_OSES),
                        help=f"the operating system Slicer runs on, in Slicer's words (default: this one, "
                             f"{host_os()})")
    parser.add_argument("--slicer-revision", default=None,
                        help="Slicer's revision number (Help > About, or slicer.app.revision); required for macosx")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default: dist/)")
    parser.add_argument("--revision", default=None, help="revision written to the .s4ext (default: git HEAD)")
    args = parser.parse_args(argv)
    try:
        path = build_archive(args.slicer_version, Path(args.out), revision=args.revision,
                             slicer_os=args.slicer_os or host_os(), slicer_revision=args.slicer_revision)
    except ExtensionLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
