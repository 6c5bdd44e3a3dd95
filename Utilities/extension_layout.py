"""What the NNMamba extension is made of: its modules, the files each module ships, and the CMake values that
describe it. The CMake files stay the one source of truth (Slicer's build reads them); this module reads them back
so the list updater, the archive builder and the tests agree with the real build."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
EXTENSION_NAME = "NNMamba"
MODULES = ("NNMambaSlicer", "NNMambaSegmentation", "NNMambaLandmarks")
# Root Resources/ folders every module uses; installed next to the modules, at qt-scripted-modules/Resources/<name>.
SHARED_RESOURCE_DIRS = ("Models", "SampleData")
SCRIPTS_VARIABLE = "MODULE_PYTHON_SCRIPTS"
RESOURCES_VARIABLE = "MODULE_PYTHON_RESOURCES"

# Never shipped: caches, build metadata, the module's own CMake file, Slicer-side CTest folders, hidden files.
_SKIPPED_DIR_NAMES = {"__pycache__", ".pytest_cache", ".ruff_cache", "Testing"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


class ExtensionLayoutError(ValueError):
    """The extension's files or CMake lists are not in a state that can be packaged."""


def _is_skipped(relative: Path) -> bool:
    parts = relative.parts
    if any(p in _SKIPPED_DIR_NAMES or p.endswith(".egg-info") or p.startswith(".") for p in parts):
        return True
    return relative.name.endswith(_SKIPPED_SUFFIXES) or relative.as_posix() == "CMakeLists.txt"


def shippable_files(folder: Path) -> List[str]:
    """Every file under ``folder`` that belongs in the package, as sorted POSIX paths relative to it."""
    folder = Path(folder)
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.is_file() and not _is_skipped(relative):
            found.append(relative.as_posix())
    return sorted(found)


def module_files_on_disk(module: str, root: Path = ROOT) -> Tuple[List[str], List[str]]:
    """(scripts, resources) of one module folder: the ``.py`` files, module file first, then everything else."""
    files = shippable_files(Path(root) / module)
    main = module + ".py"
    scripts = [f for f in files if f.endswith(".py")]
    scripts = ([main] if main in scripts else []) + [f for f in scripts if f != main]
    resources = [f for f in files if not f.endswith(".py")]
    return scripts, resources


# --- CMake reading ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(#[^\n]*)|([^\s()"#]+)')


def _command_arguments(text: str, command: str, first_argument: Optional[str] = None) -> List[List[str]]:
    """The argument lists of every ``command(...)`` call in ``text`` (comments dropped, quotes removed); only the
    calls whose first argument is ``first_argument`` when given. Enough CMake for our own files (no nesting)."""
    calls = []
    for match in re.finditer(r"(?im)^[ \t]*" + re.escape(command) + r"[ \t]*\(", text):
        position, arguments = match.end(), []
        while True:
            token = _TOKEN.match(text, position)
            if token is None:
                closing = re.compile(r"\s*\)").match(text, position)
                if closing:
                    break
                skip = re.compile(r"\s+").match(text, position)
                if skip is None:
                    raise ExtensionLayoutError("cannot read CMake near: " + text[position:position + 60])
                position = skip.end()
                continue
            position = token.end()
            if token.group(2) is not None:
                continue
            value = token.group(1) if token.group(1) is not None else token.group(3)
            arguments.append(value.replace('\\"', '"') if token.group(1) is not None else value)
        if first_argument is None or (arguments and arguments[0] == first_argument):
            calls.append(arguments)
    return calls


def cmake_set_values(text: str, variable: str) -> Optional[List[str]]:
    """The values of the single ``set(<variable> ...)`` in ``text``; None when it is not set."""
    calls = _command_arguments(text, "set", variable)
    if not calls:
        return None
    if len(calls) > 1:
        raise ExtensionLayoutError(f"{variable} is set {len(calls)} times; set it once so the lists stay readable")
    return calls[0][1:]


def cmake_calls(text: str, command: str) -> List[List[str]]:
    """Argument lists of every ``command(...)`` call in ``text``."""
    return _command_arguments(text, command)


def module_cmake_lists(module: str, root: Path = ROOT) -> Tuple[List[str], List[str]]:
    """(SCRIPTS, RESOURCES) as written in ``<module>/CMakeLists.txt``."""
    path = Path(root) / module / "CMakeLists.txt"
    if not path.is_file():
        raise ExtensionLayoutError(f"{path} is missing: run Utilities/update_cmake_lists.py")
    text = path.read_text(encoding="utf-8")
    scripts = cmake_set_values(text, SCRIPTS_VARIABLE)
    resources = cmake_set_values(text, RESOURCES_VARIABLE)
    if scripts is None or resources is None:
        raise ExtensionLayoutError(f"{path} must set {SCRIPTS_VARIABLE} and {RESOURCES_VARIABLE}")
    return scripts, resources


EXTENSION_VARIABLES = ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS",
                       "STATUS", "TIER", "ENABLED", "LICENSE_FILE", "README_FILE")
REQUIRED_EXTENSION_VARIABLES = ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS",
                                "DEPENDS", "LICENSE_FILE", "README_FILE")


def extension_metadata(root: Path = ROOT) -> Dict[str, List[str]]:
    """The ``EXTENSION_*`` values of the top-level CMakeLists.txt, keyed without the prefix (each a CMake list)."""
    path = Path(root) / "CMakeLists.txt"
    if not path.is_file():
        raise ExtensionLayoutError(f"{path} is missing")
    text = path.read_text(encoding="utf-8")
    metadata = {}
    for key in EXTENSION_VARIABLES:
        values = cmake_set_values(text, "EXTENSION_" + key)
        if values is not None:
            metadata[key] = values
    missing = [k for k in REQUIRED_EXTENSION_VARIABLES if k not in metadata]
    if missing:
        raise ExtensionLayoutError(f"{path} does not set " + ", ".join("EXTENSION_" + k for k in missing))
    return metadata


def s4ext_text(metadata: Dict[str, List[str]], revision: str) -> str:
    """The extension description Slicer reads from ``share/Slicer-X.Y/<name>.s4ext`` (the keys of Slicer's
    ``extension_description.s4ext.in``), from the CMake values so that there is one source."""
    def joined(key, separator=" ", default=""):
        return separator.join(metadata.get(key, [])) or default

    depends = joined("DEPENDS")
    lines = [
        "# Generated by Utilities/build_extension_archive.py from CMakeLists.txt: edit that file, not this one.",
        "scm git",
        "scmurl " + joined("HOMEPAGE"),
        "scmrevision " + revision,
        "depends " + ("NA" if depends in ("", "NA") else depends),
        "build_subdirectory .",
        "homepage " + joined("HOMEPAGE"),
        "contributors " + joined("CONTRIBUTORS", ", "),
        "category " + joined("CATEGORY"),
        "iconurl " + joined("ICONURL"),
        "status " + joined("STATUS"),
        "tier " + joined("TIER", default="1"),
        "description " + joined("DESCRIPTION"),
        "screenshoturls " + joined("SCREENSHOTURLS"),
        "enabled " + joined("ENABLED", default="1"),
    ]
    return "\n".join(lines) + "\n"


def parse_s4ext(text: str) -> Dict[str, str]:
    """Key -> value of an ``.s4ext`` text (first token is the key, the rest of the line the value)."""
    entries = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.strip().partition(" ")
        entries[key] = value.strip()
    return entries
