"""The "Install from file" archive, installed the way Slicer's Extensions Manager installs it, and used from there.

For each operating system: build the archive, unpack it as qSlicerExtensionsManagerModel::installExtension and
extractExtensionArchive do (Slicer 5.8, Base/QTCore/qSlicerExtensionsManagerModel.cxx; the stand-in below mirrors
them), then, in a separate Python whose sys.path holds the installed qt-scripted-modules folder and none of this
checkout's folders, import the modules' Lib packages and nnmamba and find the sample data and the demo models in the
installed tree. A layout Slicer does not copy (a linux archive on macOS, the bug this guards against) fails here.
"""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Utilities"))

import build_extension_archive  # noqa: E402
from extension_layout import EXTENSION_NAME, MODULES, parse_s4ext  # noqa: E402

SLICER_VERSION = "5.8"
SLICER_REVISION = "33241"
OSES = ("linux", "win", "macosx")
LIB_PACKAGES = tuple(f"{module}Lib" for module in MODULES)


class ExtensionInstallError(RuntimeError):
    """What Slicer reports (and where it stops) when an archive cannot be installed."""


def _extract(archive, folder):
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, filter="data")
        else:  # Python < 3.12 without the security backport; the archive is our own
            tar.extractall(folder)


def install_like_slicer(archive, extensions_dir, slicer_os, slicer_revision=SLICER_REVISION,
                        slicer_version=SLICER_VERSION):
    """Install ``archive`` into ``extensions_dir`` as Slicer's Extensions Manager does; returns the extension's
    folder, ``<extensions_dir>/<name>``, whose lib/Slicer-X.Y/qt-scripted-modules Slicer adds to its module paths.

    installExtension(archiveFile): the extension is named after the first ``*.s4ext`` in the archive listing
    (QFileInfo::completeBaseName). extractExtensionArchive: extract into ``<extensions_dir>/<name>/``, take the top
    folder of the first extracted file, copy ``<top>`` (macOS: ``<top>/Slicer.app/Contents/Extensions-<slicer
    revision>/<name>``) to ``<extensions_dir>/<name>`` and remove ``<top>``. Then the description is read from
    ``<extensions_dir>/<name>/share/Slicer-X.Y/<name>.s4ext``.
    """
    with tarfile.open(archive, "r:*") as tar:
        names = tar.getnames()
    descriptions = [n for n in names if n.endswith(".s4ext")]
    if not descriptions:
        raise ExtensionInstallError(f"No extension description found in archive '{archive}'")
    name = PurePosixPath(descriptions[0]).name.rsplit(".", 1)[0]
    extensions_dir = Path(extensions_dir)
    destination = extensions_dir / name
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    _extract(archive, destination)
    top = names[0].split("/")[0]
    source = destination / top
    if slicer_os == "macosx":
        source = source / "Slicer.app" / "Contents" / f"Extensions-{slicer_revision}" / name
    if not source.is_dir():
        raise ExtensionInstallError(f"Failed to copy directory {source} into directory {destination}-XXXXXX")
    intermediate = extensions_dir / f"{name}-XXXXXX"
    shutil.copytree(source, intermediate)
    shutil.copytree(intermediate, destination, dirs_exist_ok=True)
    shutil.rmtree(intermediate)
    shutil.rmtree(destination / top)
    description = destination / "share" / f"Slicer-{slicer_version}" / f"{name}.s4ext"
    if not description.is_file():
        raise ExtensionInstallError(f"{description} is missing: Slicer installs the extension without its metadata")
    return destination


# Runs in a fresh interpreter: only the installed folder may supply the extension's packages.
CHECK_INSTALLED = r'''
import hashlib, importlib, json, pkgutil, sys
from pathlib import Path

installed, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
ours = sys.argv[3].split(",")


def inside(path, folder):
    try:
        Path(path).resolve().relative_to(folder)
        return True
    except (ValueError, OSError):
        return False


def in_checkout(path):
    """In the repository, but not in a virtual environment that lies inside it (.venv: the installed packages)."""
    return inside(path, repo) and not inside(path, Path(sys.prefix).resolve())


def supplies_ours(entry):
    return any((Path(entry) / package / "__init__.py").is_file() for package in ours)


# The editable install of nnmamba adds the checkout's NNMambaSlicer folder through a .pth file; Slicer has no such
# entry, so drop it (and the current folder) before putting the installed folder first, as Slicer's module paths do.
dropped = [p for p in sys.path if p in ("", ".") or in_checkout(p) or supplies_ours(p)]
sys.path[:] = [p for p in sys.path if p not in dropped]
sys.path.insert(0, str(installed))

report = {"dropped": dropped, "sys_path_in_repo": [p for p in sys.path if in_checkout(p)], "modules": {},
          "import_errors": {}}
for package in ours:
    module = importlib.import_module(package)
    report["modules"][package] = module.__file__
    if package.endswith("Lib"):
        for info in pkgutil.walk_packages(module.__path__, package + "."):
            try:
                report["modules"][info.name] = importlib.import_module(info.name).__file__
            except ImportError as error:
                report["import_errors"][info.name] = repr(error)

from NNMambaSlicerLib import sample_data
from nnmamba import modelpkg

report["modules"]["nnmamba.modelpkg"] = modelpkg.__file__
folder = sample_data.sample_data_dir()
report["sample_data_dir"] = str(folder)
report["sample_sources"] = sample_data.sample_data_sources()
checksums = json.loads((folder / sample_data.CHECKSUMS_FILE).read_text(encoding="utf-8"))
report["sample_checksums_ok"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
                                 for name, digest in checksums.items()}
report["models_dir"] = str(modelpkg.bundled_models_dir())
report["catalog"] = [entry["id"] for entry in modelpkg.load_catalog()]
problems = []
packages = modelpkg.find_packages(modelpkg.bundled_models_dir(), problems=problems)
report["package_problems"] = [f"{path}: {message}" for path, message in problems]
report["packages"] = {}
for package in packages:
    opened = modelpkg.ModelPackage.open(package.root, verify=True)   # checks model.json and the weights' SHA-256
    report["packages"][opened.id] = str(opened.root)
report["leaked"] = sorted(name for name, module in list(sys.modules.items())
                          if getattr(module, "__file__", None) and in_checkout(module.__file__))
print("REPORT " + json.dumps(report))
'''


def run_installed_check(qt_scripted, cwd):
    """Run CHECK_INSTALLED in a fresh interpreter (no PYTHONPATH, cwd outside the checkout); returns its report."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-c", CHECK_INSTALLED, str(qt_scripted), str(ROOT),
                             ",".join(LIB_PACKAGES + ("nnmamba",))],
                            cwd=str(cwd), env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


def _inside(path, folder):
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("installed")
    assert not _inside(folder, ROOT), "the check must run outside the checkout"
    return folder


@pytest.fixture(scope="module")
def archives(workspace):
    """OS -> the archive built for it (macosx for Slicer revision SLICER_REVISION)."""
    return {slicer_os: build_extension_archive.build_archive(SLICER_VERSION, workspace / "dist", revision="0123abc",
                                                             slicer_os=slicer_os, slicer_revision=SLICER_REVISION)
            for slicer_os in OSES}


@pytest.fixture(scope="module", params=OSES)
def installed(request, workspace, archives):
    """(os, archive, extension folder, qt-scripted-modules folder) of the archive for one OS, installed."""
    slicer_os = request.param
    archive = archives[slicer_os]
    extension = install_like_slicer(archive, workspace / slicer_os / "extensions", slicer_os)
    return slicer_os, archive, extension, extension / "lib" / f"Slicer-{SLICER_VERSION}" / "qt-scripted-modules"


def test_slicer_installs_the_archive_with_its_description_and_modules(installed):
    slicer_os, archive, extension, qt_scripted = installed
    assert extension.name == EXTENSION_NAME
    assert f"-{slicer_os}-" in archive.name
    assert sorted(p.name for p in extension.iterdir()) == ["lib", "share"], "nothing else is left behind"
    description = parse_s4ext((extension / "share" / f"Slicer-{SLICER_VERSION}" / f"{EXTENSION_NAME}.s4ext")
                              .read_text(encoding="utf-8"))
    assert description["scmrevision"] == "0123abc" and description["category"] == "Segmentation"
    for module in MODULES:
        for relative in (f"{module}.py", f"{module}Lib/__init__.py", f"Resources/UI/{module}.ui",
                         f"Resources/Icons/{module}.png"):
            assert (qt_scripted / relative).is_file(), f"{relative} is not installed"


def test_the_top_level_module_files_compile_from_the_installed_tree(installed, tmp_path):
    *_, qt_scripted = installed
    for module in MODULES:   # they import qt and slicer, which only Slicer has: compile, do not import
        py_compile.compile(str(qt_scripted / f"{module}.py"), cfile=str(tmp_path / f"{module}.pyc"), doraise=True)


def test_the_installed_packages_import_and_find_their_data_in_the_installed_tree(installed, workspace):
    slicer_os, _, extension, qt_scripted = installed
    report = run_installed_check(qt_scripted, workspace)
    assert not report["sys_path_in_repo"], "the checkout's folders must not be on sys.path"
    assert not report["leaked"], f"modules imported from the checkout instead of the installed tree: {report['leaked']}"
    assert not report["import_errors"], (
        "Lib modules must import outside Slicer (qt, ctk and slicer imported inside functions, and every module they "
        f"import installed): {report['import_errors']}")
    modules = report["modules"]
    assert set(LIB_PACKAGES + ("nnmamba", "nnmamba.modelpkg")) <= set(modules)
    assert "NNMambaSegmentationLib.segmentation_run" in modules and "NNMambaLandmarksLib.landmark_run" in modules
    outside = {name: path for name, path in modules.items() if not _inside(path, qt_scripted)}
    assert not outside, f"imported from outside the installed tree: {outside}"

    resources = qt_scripted / "Resources"
    assert Path(report["sample_data_dir"]) == (resources / "SampleData").resolve()
    sources = report["sample_sources"]
    assert len(sources) == 3 and {s["category"] for s in sources} == {"NNMamba"}
    for source in sources:
        assert source["uris"].startswith("file://") and source["checksums"].startswith("SHA256:")
        assert _inside(source["uris"][len("file://"):], resources / "SampleData")
    assert report["sample_checksums_ok"] and all(report["sample_checksums_ok"].values())

    assert Path(report["models_dir"]) == (resources / "Models").resolve()
    assert report["catalog"], "the catalog is installed and valid"
    assert not report["package_problems"]
    demos = sorted(p.name for p in (resources / "Models").iterdir() if (p / "model.json").is_file())
    assert len(demos) == 3 and sorted(Path(p).name for p in report["packages"].values()) == demos
    assert all(_inside(p, resources / "Models") for p in report["packages"].values())


def test_a_linux_archive_does_not_install_on_macos(archives, workspace):
    """The bug this file guards against: Slicer on macOS copies only Slicer.app/Contents/Extensions-<rev>/<name>."""
    with pytest.raises(ExtensionInstallError, match="Failed to copy"):
        install_like_slicer(archives["linux"], workspace / "mismatch", "macosx")
    with pytest.raises(ExtensionInstallError, match="Failed to copy"):   # built for another Slicer build
        install_like_slicer(archives["macosx"], workspace / "mismatch", "macosx", slicer_revision="1")


def test_the_install_stand_in_reads_the_description_where_slicer_does(archives, workspace):
    with pytest.raises(ExtensionInstallError, match="share/Slicer-5.9"):
        install_like_slicer(archives["linux"], workspace / "other-version", "linux", slicer_version="5.9")
