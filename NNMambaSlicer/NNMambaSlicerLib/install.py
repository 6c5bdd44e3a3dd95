"""Python dependencies of NNMamba inside Slicer, installed only when the user agrees (or, in testing mode, without
asking, as Slicer's own extension tests do).

Two sets, because a fresh Slicer has neither: the *client* set (``Resources/requirements-client.txt``: what Slicer's
own process needs to read results and list models; installed on Connect and Start, never torch) and the *local
backend* set (``Resources/requirements.txt``: the client set plus the server and numba; installed only when a local
backend starts). torch comes only from the PyTorch extension (it picks the CUDA build that fits the NVIDIA driver);
the other packages go through ``slicer.packaging.pip_ensure`` (Slicer 5.12+) or ``slicer.util.pip_install`` after
our own confirmation. Slicer's numpy, SimpleITK and requests are pinned to their
installed versions while pip runs, so an install can fail but never replaces them (the top complaint about AI
extensions: an install that breaks Slicer's own modules).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import tempfile
from pathlib import Path

REQUESTER = "NNMamba"
RESOURCES = Path(__file__).resolve().parent.parent / "Resources"
REQUIREMENTS_FILE = RESOURCES / "requirements.txt"                # the local backend set
CLIENT_REQUIREMENTS_FILE = RESOURCES / "requirements-client.txt"  # what Slicer's process itself needs
PROTECTED = ("numpy", "SimpleITK", "requests", "torch", "torchvision", "pydicom", "vtk")   # never ours to install
IMPORT_NAMES = {"pyyaml": "yaml", "pillow": "PIL", "scikit-image": "skimage", "scikit-learn": "sklearn"}
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class DependencyError(RuntimeError):
    """A dependency is missing and could not (or may not) be installed; the message says what to do."""


def requirement_name(requirement):
    """The distribution name of a requirement line (``fastapi[all]>=0.110; python_version>'3.8'`` -> fastapi)."""
    found = _NAME.match(str(requirement))
    if not found:
        raise ValueError(f"{requirement!r} is not a requirement (expected e.g. 'safetensors>=0.4').")
    return found.group(1)


def canonical_name(name):
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def import_name(requirement):
    """The module a requirement provides (the distribution name with '-' -> '_', or a known exception)."""
    name = canonical_name(requirement_name(requirement))
    return IMPORT_NAMES.get(name, name.replace("-", "_"))


def load_requirements(path=REQUIREMENTS_FILE):
    """The requirement lines of a requirements file (comments and blank lines dropped, ``-r other.txt`` followed).
    A protected package in the file is an error: NNMamba must never install Slicer's own packages."""
    path = Path(path)
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            lines += [item for item in load_requirements(path.parent / line[3:].strip()) if item not in lines]
        elif line:
            lines.append(line)
    protected = {canonical_name(p) for p in PROTECTED}
    clashes = [line for line in lines if canonical_name(requirement_name(line)) in protected]
    if clashes:
        raise ValueError(f"{path} lists {', '.join(clashes)}, which Slicer (or the PyTorch extension) provides; "
                         "remove them from the file.")
    return lines


def _applies(requirement):
    """False for a requirement whose environment marker excludes this Python; True when it cannot be told."""
    if ";" not in requirement:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:
        return True
    return Marker(requirement.split(";", 1)[1].strip()).evaluate()


def missing_requirements(requirements, find_spec=importlib.util.find_spec):
    """The requirements whose module cannot be imported here (versions are left to pip), in the given order."""
    missing = []
    for requirement in requirements:
        if not _applies(requirement):
            continue
        try:
            found = find_spec(import_name(requirement)) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(requirement)
    return missing


def protected_constraints(version_of=None):
    """pip constraint lines pinning the installed protected packages to their current versions."""
    if version_of is None:
        import importlib.metadata

        def version_of(name):
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return None

    lines = []
    for name in PROTECTED:
        version = version_of(name)
        if version:
            lines.append(f"{name}=={version}")
    return lines


def _constraints_file():
    handle = tempfile.NamedTemporaryFile("w", prefix="nnmamba-constraints-", suffix=".txt", delete=False,
                                         encoding="utf-8")
    with handle:
        handle.write("\n".join(protected_constraints()) + "\n")
    return Path(handle.name)


# ------------------------------------------------------------------------------------------------------ torch

def _pytorch_utils_logic():
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()


def torch_installed():
    """True when torch can be imported. Only looked up, not imported: importing torch into Slicer's process takes
    seconds on the GUI thread (PyTorchUtilsLogic.torchInstalled() imports it) and the local backend runs it anyway."""
    return _findable("torch")


def _findable(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_torch(ask=True):
    """Install torch through the PyTorch extension, which asks the user first; returns the torch module."""
    logic = _pytorch_utils_logic()
    if logic is None and torch_installed():
        import torch

        return torch
    if logic is None:
        raise DependencyError("PyTorch is not installed and the PyTorch extension is missing. Install the 'PyTorch' "
                              "extension from the Extensions Manager (it installs the torch build that fits your "
                              "GPU), restart Slicer, then press 'Install dependencies' again.")
    if logic.torchInstalled():
        import torch

        return torch
    torch = logic.installTorch(askConfirmation=ask)
    if torch is None:
        raise DependencyError("PyTorch was not installed (declined). NNMamba cannot run models without it.")
    return torch


# ------------------------------------------------------------------------------------------------- the others

def install_requirements(requirements=None, ask=True):
    """Install the missing requirements with the user's consent; returns what was missing (empty: nothing to do).
    Raises DependencyError when the user declines."""
    requirements = load_requirements() if requirements is None else list(requirements)
    missing = missing_requirements(requirements)
    if not missing:
        return []
    constraints = _constraints_file()
    try:
        slicer_packaging = _slicer_packaging()
        if slicer_packaging is not None and hasattr(slicer_packaging, "pip_ensure"):
            _pip_ensure(slicer_packaging, missing, constraints, ask)
        else:
            _pip_install_after_asking(missing, constraints, ask)
    finally:
        constraints.unlink(missing_ok=True)
    importlib.invalidate_caches()
    still = missing_requirements(missing)
    if still:
        raise DependencyError(f"These packages are still missing after the install: {', '.join(still)}. The "
                              "Python console shows pip's messages; restart Slicer and try again.")
    return missing


def _slicer_packaging():
    """``slicer.packaging`` (Slicer 5.12+), or None. It must be imported: ``import slicer`` does not load it."""
    try:
        return importlib.import_module("slicer.packaging")
    except ImportError:
        return None


def testing():
    """True while Slicer runs its tests (``--testing``): installs then go ahead without asking."""
    try:
        import slicer
    except ImportError:
        return False
    app = getattr(slicer, "app", None)
    return bool(app is not None and hasattr(app, "testingEnabled") and app.testingEnabled())


def _pip_ensure(slicer_packaging, missing, constraints, ask):
    if hasattr(slicer_packaging, "load_requirements"):
        with tempfile.TemporaryDirectory(prefix="nnmamba-requirements-") as folder:
            listing = Path(folder) / "requirements.txt"
            listing.write_text("\n".join(missing) + "\n", encoding="utf-8")
            requirements = slicer_packaging.load_requirements(str(listing))
    else:
        from packaging.requirements import Requirement

        requirements = [Requirement(line) for line in missing]
    wanted = {"constraints": str(constraints), "prompt_install": ask, "requester": REQUESTER}
    try:   # the keyword set changed while pip_ensure was new: pass only what this Slicer's version accepts
        accepted = inspect.signature(slicer_packaging.pip_ensure).parameters
        options = {key: value for key, value in wanted.items() if key in accepted}
    except (TypeError, ValueError):
        options = {"requester": REQUESTER}
    try:
        slicer_packaging.pip_ensure(requirements, **options)
    except RuntimeError as error:
        if "declined" in str(error).lower():
            raise DependencyError(f"Installation declined; NNMamba needs {', '.join(missing)}.") from None
        raise


def _pip_install_after_asking(missing, constraints, ask):
    import slicer.util

    if ask:
        message = (f"NNMamba needs {len(missing)} Python package(s) that are not installed yet. Install them into "
                   "Slicer's Python now? (Slicer's numpy, SimpleITK and requests are kept as they are.)")
        if not slicer.util.confirmOkCancelDisplay(message, "NNMamba - Install Python packages",
                                                  detailedText="\n".join(missing)):
            raise DependencyError(f"Installation declined; NNMamba needs {', '.join(missing)}.")
    slicer.util.pip_install(["-c", str(constraints)] + list(missing))


def dependency_status(requirements=None):
    """``{requirement: installed?}`` plus torch, for the environment report (lookups only, nothing imported)."""
    requirements = load_requirements() if requirements is None else list(requirements)
    missing = set(missing_requirements(requirements))
    status = {"torch": torch_installed()}
    status.update({requirement: requirement not in missing for requirement in requirements})
    return status


def missing_for_local_backend():
    """What a local backend still lacks: torch first, then the packages of requirements.txt (lookups only)."""
    missing = [] if torch_installed() else ["torch (PyTorch extension)"]
    return missing + missing_requirements(load_requirements())


def check_local_backend():
    """Raise DependencyError, saying what to press, when a local backend cannot start here."""
    missing = missing_for_local_backend()
    if missing:
        raise DependencyError(f"The local NNMamba backend needs {', '.join(missing)}. Press 'Install dependencies' "
                              "in the NNMamba module (Environment section), or connect to a remote server.")


def ensure_client(ask=True):
    """The client set (slicerio, jsonschema): what Slicer's process needs with any backend. Never torch."""
    return install_requirements(load_requirements(CLIENT_REQUIREMENTS_FILE), ask=ask and not testing())


def ensure_dependencies(ask=True):
    """Everything a local backend needs: torch (PyTorch extension), then the packages of requirements.txt."""
    ask = ask and not testing()
    if not torch_installed():
        install_torch(ask=ask)
    return install_requirements(ask=ask)
