"""The extension as Slicer's build and Extensions Manager see it: CMake lists that match the files (both ways), the
top-level EXTENSION_* metadata, the ExtensionsIndex entry, the icons, and the "Install from file" archive unpacked
and checked (layout, .s4ext, every Python file compiles for 3.9, same files as the CMake lists)."""

from __future__ import annotations

import ast
import io
import json
import py_compile
import re
import shutil
import sys
import tarfile
from fnmatch import fnmatch
from pathlib import Path

import jsonschema
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Utilities"))

import build_extension_archive  # noqa: E402
import make_icons  # noqa: E402
import update_cmake_lists  # noqa: E402
from extension_layout import (  # noqa: E402
    EXTENSION_NAME,
    MODULES,
    SHARED_RESOURCE_DIRS,
    ExtensionLayoutError,
    cmake_calls,
    cmake_set_values,
    extension_metadata,
    module_cmake_lists,
    module_files_on_disk,
    parse_s4ext,
    shippable_files,
)

CATALOG_SCHEMA = ROOT / "Testing" / "data" / "slicer-formats" / "slicer-extension-catalog-entry-schema-v1.0.1.json"
SLICER_VERSION = "5.8"
QT_SCRIPTED = f"lib/Slicer-{SLICER_VERSION}/qt-scripted-modules"


def _differences(listed, on_disk):
    missing = sorted(set(listed) - set(on_disk))
    unlisted = sorted(set(on_disk) - set(listed))
    return ([f"listed but not on disk: {', '.join(missing)}"] if missing else []) + (
        [f"on disk but not listed: {', '.join(unlisted)}"] if unlisted else [])


# --- module CMake lists -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_match_the_files_both_ways(module):
    assert (ROOT / module / f"{module}.py").is_file(), f"{module}/{module}.py is missing"
    scripts, resources = module_cmake_lists(module)
    disk_scripts, disk_resources = module_files_on_disk(module)
    problems = [f"SCRIPTS {d}" for d in _differences(scripts, disk_scripts)]
    problems += [f"RESOURCES {d}" for d in _differences(resources, disk_resources)]
    assert not problems, f"{module}/CMakeLists.txt: " + "; ".join(problems) + (
        " (run Utilities/update_cmake_lists.py)")
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources)), "duplicate entries"
    assert all(s.endswith(".py") for s in scripts) and not any(r.endswith(".py") for r in resources)


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_builds_the_scripted_module_with_its_icon_and_ui(module):
    text = (ROOT / module / "CMakeLists.txt").read_text(encoding="utf-8")
    assert cmake_set_values(text, "MODULE_NAME") == [module]
    calls = cmake_calls(text, "slicerMacroBuildScriptedModule")
    assert len(calls) == 1, f"{module}/CMakeLists.txt: one slicerMacroBuildScriptedModule call expected"
    arguments = calls[0]
    keywords = {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"}
    assert arguments[arguments.index("NAME") + 1] == "${MODULE_NAME}"
    assert arguments[arguments.index("SCRIPTS") + 1] == "${MODULE_PYTHON_SCRIPTS}"
    assert arguments[arguments.index("RESOURCES") + 1] == "${MODULE_PYTHON_RESOURCES}"
    unknown = [a for a in arguments if re.fullmatch(r"[A-Z_]+", a) and a not in keywords]
    assert not unknown, f"unknown keywords (fatal in Slicer's macro): {unknown}"
    scripts, resources = module_cmake_lists(module)
    assert scripts[0] == f"{module}.py"
    assert f"{module}Lib/__init__.py" in scripts
    assert f"Resources/Icons/{module}.png" in resources
    assert f"Resources/UI/{module}.ui" in resources


def test_hub_lists_the_nnmamba_package_with_its_package_data():
    tomllib = pytest.importorskip("tomllib")
    scripts, resources = module_cmake_lists("NNMambaSlicer")
    package_py = [f"nnmamba/{f}" for f in shippable_files(ROOT / "NNMambaSlicer" / "nnmamba") if f.endswith(".py")]
    assert package_py and set(package_py) <= set(scripts)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["nnmamba"]
    data = [r for r in resources if r.startswith("nnmamba/")]
    assert "nnmamba/schemas/model.schema.json" in data
    stray = [r for r in data if not any(fnmatch(r[len("nnmamba/"):], p) for p in patterns)]
    assert not stray, f"nnmamba files pip would not install (add them to package-data in pyproject.toml): {stray}"


def test_hub_installs_the_shared_models_and_sample_data():
    text = (ROOT / "NNMambaSlicer" / "CMakeLists.txt").read_text(encoding="utf-8")
    loops = [c for c in cmake_calls(text, "foreach") if c[1:3] == ["IN", "ITEMS"]]
    assert any(tuple(c[3:]) == SHARED_RESOURCE_DIRS for c in loops)
    installs = [c for c in cmake_calls(text, "install") if c[0] == "DIRECTORY"]
    assert installs and installs[0][installs[0].index("DESTINATION") + 1] == (
        "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources")
    assert any("copy_directory" in c for c in cmake_calls(text, "add_custom_target")), "no build-tree copy"
    for folder in SHARED_RESOURCE_DIRS:
        assert shippable_files(ROOT / "Resources" / folder), f"Resources/{folder} is empty"


# --- top-level CMake and the index entry -------------------------------------------------------------------------

def test_top_level_cmake_declares_the_extension():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert cmake_calls(text, "cmake_minimum_required")
    assert cmake_calls(text, "project") == [[EXTENSION_NAME]]
    metadata = extension_metadata()
    assert all(metadata[k] and all(v.strip() for v in metadata[k]) for k in metadata)
    assert metadata["CATEGORY"] == ["Segmentation"]
    assert metadata["DEPENDS"] == ["PyTorch"]
    assert metadata["CONTRIBUTORS"] == ["NNMamba team"]
    assert metadata["HOMEPAGE"] == ["https://github.com/nnmamba/SlicerNNMamba"]
    for key in ("LICENSE_FILE", "README_FILE"):
        relative = metadata[key][0].replace("${CMAKE_CURRENT_SOURCE_DIR}/", "")
        assert (ROOT / relative).is_file(), f"EXTENSION_{key} points to a missing file"
    subdirectories = [c[0] for c in cmake_calls(text, "add_subdirectory")]
    assert sorted(subdirectories) == sorted(MODULES), "one add_subdirectory per module, no more"
    includes = [c[0] for c in cmake_calls(text, "include")]
    assert includes == ["${Slicer_USE_FILE}", "${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"]
    assert ["Slicer", "REQUIRED"] in cmake_calls(text, "find_package")
    order = [text.index(s) for s in ("find_package(Slicer", "include(${Slicer_USE_FILE})", "add_subdirectory(",
                                     "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                                     "include(${Slicer_EXTENSION_CPACK})")]
    assert order == sorted(order), "find_package, USE_FILE, modules, then the two extension includes"


def test_icon_and_screenshot_urls_point_into_the_repository():
    metadata = extension_metadata()
    raw = metadata["HOMEPAGE"][0].replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    icon = metadata["ICONURL"][0]
    assert icon.startswith(raw) and icon.endswith(".png")
    assert (ROOT / icon[len(raw):]).is_file(), f"the icon URL names {icon[len(raw):]}, which is not in the repository"
    screenshots = " ".join(metadata["SCREENSHOTURLS"]).split()
    assert screenshots and all(u.startswith(raw) and u.endswith(".png") for u in screenshots)
    missing = [u[len(raw):] for u in screenshots if not (ROOT / u[len(raw):]).is_file()]
    assert not missing, f"screenshot URLs name files that are not in the repository: {missing}"


def test_index_entry_is_valid_and_agrees_with_cmake():
    entry = json.loads((ROOT / f"{EXTENSION_NAME}.json").read_text(encoding="utf-8"))
    schema = json.loads(CATALOG_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(entry)
    assert entry["$schema"].endswith(CATALOG_SCHEMA.name + "#")
    metadata = extension_metadata()
    assert entry["category"] == metadata["CATEGORY"][0]
    assert entry["build_dependencies"] == [d for d in metadata["DEPENDS"] if d != "NA"]
    assert entry["scm_url"] == metadata["HOMEPAGE"][0]
    assert entry["tier"] == int(metadata["TIER"][0])
    repository = entry["scm_url"].rstrip("/").split("/")[-1]
    assert repository.startswith("Slicer") and not EXTENSION_NAME.startswith("Slicer"), (
        "the index wants SlicerX repositories holding extensions not named Slicer*")


def test_index_schema_rejects_what_the_index_would_reject():
    schema = json.loads(CATALOG_SCHEMA.read_text(encoding="utf-8"))
    entry = json.loads((ROOT / f"{EXTENSION_NAME}.json").read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(dict(entry, homepage=entry["scm_url"]))


# --- icons ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("relative", sorted(make_icons.ICONS))
def test_icons_are_128_pixel_rgba_pngs_drawn_by_the_script(relative):
    path = ROOT / relative
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (128, 128)
    assert image.GetNumberOfComponentsPerPixel() == 4
    pixels = sitk.GetArrayFromImage(image)
    assert pixels[..., 3].max() == 255 and pixels[0, 0, 3] == 0, "opaque drawing on a transparent corner"
    assert len({tuple(p) for p in pixels.reshape(-1, 4)[::37]}) > 8, "more than a flat fill"
    assert path.read_bytes() == make_icons.png_bytes(make_icons.render(make_icons.ICONS[relative])), (
        f"{relative} differs from what Utilities/make_icons.py draws: run it")


def test_icons_differ_from_each_other():
    images = [sitk.GetArrayFromImage(sitk.ReadImage(str(ROOT / r))) for r in sorted(make_icons.ICONS)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert (images[i] != images[j]).mean() > 0.2


def test_png_writer_refuses_non_rgba():
    import numpy as np

    with pytest.raises(ValueError, match="RGBA"):
        make_icons.png_bytes(np.zeros((4, 4, 3), np.uint8))


# --- the list updater on a small extension tree ------------------------------------------------------------------

def _write(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def small_extension(tmp_path):
    """A minimal tree with the real top-level CMakeLists.txt and three tiny modules."""
    shutil.copy(ROOT / "CMakeLists.txt", tmp_path / "CMakeLists.txt")
    _write(tmp_path / "LICENSE.txt", "license")
    _write(tmp_path / "README.md", "readme")
    for module in MODULES:
        _write(tmp_path / module / f"{module}.py", "x = 1\n")
        _write(tmp_path / module / f"{module}Lib" / "__init__.py")
        _write(tmp_path / module / "Resources" / "UI" / f"{module}.ui", "<ui/>")
        _write(tmp_path / module / "Resources" / "Icons" / f"{module}.png", "png")
        _write(tmp_path / module / f"{module}Lib" / "__pycache__" / "x.cpython-311.pyc", "cache")
    _write(tmp_path / "NNMambaSlicer" / "nnmamba" / "__init__.py")
    _write(tmp_path / "NNMambaSlicer" / "nnmamba.egg-info" / "PKG-INFO")
    _write(tmp_path / "Resources" / "Models" / "demo" / "model.json", "{}")
    _write(tmp_path / "Resources" / "SampleData" / "sample.nrrd", "nrrd")
    stale, missing = update_cmake_lists.update(root=tmp_path)
    assert stale == list(MODULES) and not missing
    return tmp_path


def test_updater_writes_lists_without_caches_and_keeps_the_rest_of_the_file(small_extension):
    scripts, resources = module_cmake_lists("NNMambaSlicer", small_extension)
    assert scripts == ["NNMambaSlicer.py", "NNMambaSlicerLib/__init__.py", "nnmamba/__init__.py"]
    assert resources == ["Resources/Icons/NNMambaSlicer.png", "Resources/UI/NNMambaSlicer.ui"]
    path = small_extension / "NNMambaLandmarks" / "CMakeLists.txt"
    path.write_text(path.read_text() + "# a hand-written line\n")
    _write(small_extension / "NNMambaLandmarks" / "NNMambaLandmarksLib" / "lines.py")
    assert update_cmake_lists.update(root=small_extension, check=True) == (["NNMambaLandmarks"], [])
    assert update_cmake_lists.update(root=small_extension) == (["NNMambaLandmarks"], [])
    assert "NNMambaLandmarksLib/lines.py" in module_cmake_lists("NNMambaLandmarks", small_extension)[0]
    assert path.read_text().endswith("# a hand-written line\n")
    assert update_cmake_lists.update(root=small_extension, check=True) == ([], [])


def test_updater_refuses_names_cmake_cannot_hold_and_reports_a_missing_module_file(small_extension):
    _write(small_extension / "NNMambaLandmarks" / "Resources" / "a file.txt")
    with pytest.raises(ExtensionLayoutError, match="a file.txt"):
        update_cmake_lists.update(root=small_extension)
    (small_extension / "NNMambaLandmarks" / "Resources" / "a file.txt").unlink()
    (small_extension / "NNMambaSegmentation" / "NNMambaSegmentation.py").unlink()
    assert update_cmake_lists.update(root=small_extension, check=True) == ([], ["NNMambaSegmentation"])


def test_archive_refuses_stale_lists_and_clashing_resources(small_extension, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    assert build_extension_archive.build_archive("5.8", out, root=small_extension, revision="r1").is_file()
    _write(small_extension / "NNMambaSegmentation" / "Resources" / "requirements.txt")
    with pytest.raises(ExtensionLayoutError, match="update_cmake_lists"):
        build_extension_archive.build_archive("5.8", out, root=small_extension)
    _write(small_extension / "NNMambaSlicer" / "Resources" / "requirements.txt")
    update_cmake_lists.update(root=small_extension)
    with pytest.raises(ExtensionLayoutError, match="Resources/requirements.txt"):
        build_extension_archive.build_archive("5.8", out, root=small_extension)
    assert sorted(p.name for p in out.iterdir()) == ["Slicer-5.8-linux-amd64-NNMamba-gitr1-NA.tar.gz"], (
        "no partial archive left")


@pytest.mark.parametrize("version", ["5", "5.8.1", "v5.8", "five", "", "4.11", "5.2"])
def test_archive_refuses_a_version_that_is_not_a_supported_major_minor(version, tmp_path, capsys):
    with pytest.raises(ExtensionLayoutError):
        build_extension_archive.parse_slicer_version(version)
    assert build_extension_archive.main(["--slicer-version", version, "--out", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- the real archive ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    path = build_extension_archive.build_archive(SLICER_VERSION, out, revision="0123abc")
    with tarfile.open(path, "r:gz") as tar:
        members = tar.getmembers()
        contents = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    return path, members, contents


def _top(path):
    return path.name[:-len(".tar.gz")]


def test_archive_is_named_as_cpack_names_an_extension_package(archive):
    path, _, _ = archive
    date = build_extension_archive.git_commit_date()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}|NA", date)
    assert path.name == f"Slicer-{SLICER_VERSION}-linux-amd64-{EXTENSION_NAME}-git0123abc-{date}.tar.gz"
    name = build_extension_archive.archive_name("5.8", "macosx", "33241", "0123abcdef" * 4, "2025-01-31")
    assert name == f"33241-macosx-amd64-{EXTENSION_NAME}-git0123abc-2025-01-31"


def test_archive_has_one_top_folder_with_the_slicer_layout(archive):
    path, members, contents = archive
    top = {m.name.split("/")[0] for m in members}
    assert top == {_top(path)}
    top = top.pop()
    relative = {name[len(top) + 1:] for name in contents}
    share = [r for r in relative if r.startswith("share/")]
    assert share == [f"share/Slicer-{SLICER_VERSION}/{EXTENSION_NAME}.s4ext"]
    assert all(r.startswith(QT_SCRIPTED + "/") for r in relative - set(share))
    for module in MODULES:
        for expected in (f"{module}.py", f"{module}Lib/__init__.py", f"Resources/Icons/{module}.png",
                         f"Resources/UI/{module}.ui"):
            assert f"{QT_SCRIPTED}/{expected}" in relative
    for expected in ("nnmamba/__init__.py", "nnmamba/schemas/model.schema.json", "Resources/SampleData/checksums.json",
                     "Resources/Models/catalog.json", "Resources/Models/demo-abdomen-ct/model.json"):
        assert f"{QT_SCRIPTED}/{expected}" in relative
    junk = [r for r in relative if "__pycache__" in r or r.endswith(".pyc") or ".egg-info" in r
            or "/Testing/" in r or Path(r).name.startswith("test_")]
    assert not junk


def test_archive_holds_exactly_the_cmake_listed_files_and_the_shared_data(archive):
    path, _, contents = archive
    prefix = f"{_top(path)}/{QT_SCRIPTED}/"
    packaged = {name[len(prefix):]: data for name, data in contents.items() if name.startswith(prefix)}
    expected = {}
    for module in MODULES:
        scripts, resources = module_cmake_lists(module)
        expected.update({r: ROOT / module / r for r in scripts + resources})
    for folder in SHARED_RESOURCE_DIRS:
        expected.update({f"Resources/{folder}/{r}": ROOT / "Resources" / folder / r
                         for r in shippable_files(ROOT / "Resources" / folder)})
    assert sorted(packaged) == sorted(expected)
    changed = [r for r, source in expected.items() if packaged[r] != source.read_bytes()]
    assert not changed


def test_archive_description_comes_from_cmake(archive):
    path, _, contents = archive
    text = contents[f"{_top(path)}/share/Slicer-{SLICER_VERSION}/{EXTENSION_NAME}.s4ext"]
    entries = parse_s4ext(text.decode("utf-8"))
    metadata = extension_metadata()
    assert {"scm", "scmurl", "scmrevision", "depends", "homepage", "contributors", "category", "iconurl", "status",
            "description", "screenshoturls", "enabled"} <= set(entries)
    assert entries["category"] == "Segmentation" and entries["depends"] == "PyTorch"
    assert entries["homepage"] == entries["scmurl"] == metadata["HOMEPAGE"][0]
    assert entries["iconurl"] == metadata["ICONURL"][0]
    assert entries["description"] == metadata["DESCRIPTION"][0]
    assert entries["contributors"] == "NNMamba team" and entries["scmrevision"] == "0123abc"
    assert entries["enabled"] == "1"


def test_every_packaged_python_file_compiles_for_python_3_9(archive, tmp_path):
    _, _, contents = archive
    python_files = {name: data for name, data in contents.items() if name.endswith(".py")}
    module_files = [n for n in python_files if n.count("/") == 4]
    assert sorted(Path(n).name for n in module_files) == sorted(f"{m}.py" for m in MODULES)
    failures = []
    for index, (name, data) in enumerate(sorted(python_files.items())):
        try:
            ast.parse(data, filename=name, feature_version=(3, 9))
            target = tmp_path / f"{index}.py"
            target.write_bytes(data)
            py_compile.compile(str(target), cfile=str(tmp_path / f"{index}.pyc"), doraise=True)
        except (SyntaxError, py_compile.PyCompileError) as error:
            failures.append(f"{name}: {error}")
    assert not failures


def test_archive_is_reproducible_and_sorted(archive, tmp_path):
    path, members, _ = archive
    again = build_extension_archive.build_archive(SLICER_VERSION, tmp_path, revision="0123abc")
    assert again.read_bytes() == path.read_bytes()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert {m.mtime for m in members} == {build_extension_archive.DEFAULT_MTIME}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert {m.mode for m in members if m.isfile()} == {0o644}


def test_archive_opens_as_plain_gzip_tar_without_absolute_or_parent_paths(archive):
    path, members, _ = archive
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes()), mode="r:gz") as tar:
        assert len(tar.getnames()) == len(members)
    assert not [m.name for m in members if m.name.startswith("/") or ".." in m.name.split("/")]


# --- one archive per operating system ------------------------------------------------------------------------------

# Where Slicer's extensions manager takes the extension from (qSlicerExtensionsManagerModel::extractExtensionArchive):
# the top folder on linux and win, <top>/Slicer.app/Contents/Extensions-<its revision>/<name> on macOS.
def _extension_base(top, slicer_os, slicer_revision):
    if slicer_os != "macosx":
        return top
    return f"{top}/Slicer.app/Contents/Extensions-{slicer_revision}/{EXTENSION_NAME}"


@pytest.mark.parametrize("slicer_os, slicer_revision", [("linux", None), ("win", "33241"), ("macosx", "33241")])
def test_each_os_gets_the_layout_slicer_copies_from(slicer_os, slicer_revision, archive, tmp_path):
    path = build_extension_archive.build_archive(SLICER_VERSION, tmp_path, revision="0123abc", slicer_os=slicer_os,
                                                 slicer_revision=slicer_revision)
    assert f"-{slicer_os}-amd64-{EXTENSION_NAME}-" in path.name
    assert path.name.startswith(f"{slicer_revision}-" if slicer_revision else f"Slicer-{SLICER_VERSION}-")
    with tarfile.open(path, "r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    base = _extension_base(_top(path), slicer_os, slicer_revision)
    assert all(name.startswith(base + "/") for name in files)
    s4ext = [name for name in files if name.endswith(".s4ext")]
    assert s4ext == [f"{base}/share/Slicer-{SLICER_VERSION}/{EXTENSION_NAME}.s4ext"], "Slicer reads it there"
    _, _, linux_files = archive
    linux_base = _top(archive[0])
    assert {n[len(base):]: d for n, d in files.items()} == {n[len(linux_base):]: d for n, d in linux_files.items()}


def test_macosx_needs_the_slicer_revision_and_the_os_must_be_slicers_name(tmp_path, capsys):
    with pytest.raises(ExtensionLayoutError, match="slicer.app.revision"):
        build_extension_archive.build_archive(SLICER_VERSION, tmp_path, slicer_os="macosx")
    assert build_extension_archive.main(["--slicer-version", "5.8", "--os", "macosx", "--out", str(tmp_path)]) == 2
    assert "--slicer-revision" in capsys.readouterr().err
    for arguments in (["--os", "darwin"], ["--os", "macosx", "--slicer-revision", "r33241"],
                      ["--os", "linux", "--revision", "a b"]):
        assert build_extension_archive.main(["--slicer-version", "5.8", "--out", str(tmp_path), *arguments]) == 2
        assert "error:" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_default_os_is_the_hosts():
    assert [build_extension_archive.host_os(p) for p in ("linux", "darwin", "win32", "cygwin")] == [
        "linux", "macosx", "win", "win"]
    assert build_extension_archive.host_os() in build_extension_archive.SLICER_OSES


# --- CMake itself, against a stand-in for Slicer's build macros ---------------------------------------------------

# What the real Slicer macros enforce and do for a pure-Python extension, reduced to that: unknown keywords and
# missing files are fatal, every listed file is installed under qt-scripted-modules/ at its relative path, the
# extension's README/LICENSE must exist. Our CMake files then configure, build and install for real.
SLICER_STAND_IN = {
    "SlicerConfig.cmake": """
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/GenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/ExtensionCPack.cmake")
""",
    "UseSlicer.cmake": """
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.8/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.8/qt-scripted-modules")
foreach(var HOMEPAGE CATEGORY CONTRIBUTORS DESCRIPTION ICONURL SCREENSHOTURLS DEPENDS)
  if("${EXTENSION_${var}}" STREQUAL "")
    message(FATAL_ERROR "EXTENSION_${var} is not set before include(Slicer_USE_FILE)")
  endif()
endforeach()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords: ${MY_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  foreach(file IN LISTS MY_SLICER_SCRIPTS MY_SLICER_RESOURCES)
    if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${file}")
      message(FATAL_ERROR "slicerMacroBuildScriptedModule given nonexistent file '${file}'")
    endif()
    get_filename_component(dir "${file}" DIRECTORY)
    install(FILES "${CMAKE_CURRENT_SOURCE_DIR}/${file}"
            DESTINATION "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${dir}" COMPONENT RuntimeLibraries)
  endforeach()
endmacro()
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
    message(FATAL_ERROR "slicer_add_python_unittest: no ${MY_SCRIPT}")
  endif()
endfunction()
""",
    "GenerateConfig.cmake": "",
    "ExtensionCPack.cmake": """
foreach(var README_FILE LICENSE_FILE)
  if(NOT EXISTS "${EXTENSION_${var}}")
    message(FATAL_ERROR "EXTENSION_${var} does not exist: ${EXTENSION_${var}}")
  endif()
endforeach()
""",
}


@pytest.mark.slow
def test_cmake_configures_builds_and_installs_what_the_archive_holds(tmp_path):
    import subprocess

    # the test extra installs cmake into the environment (its bin folder need not be on PATH)
    cmake = shutil.which("cmake", path=str(Path(sys.executable).parent)) or shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    stand_in = tmp_path / "slicer"
    stand_in.mkdir()
    for name, text in SLICER_STAND_IN.items():
        (stand_in / name).write_text(text)
    build, prefix = tmp_path / "build", tmp_path / "install"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    for command in ([cmake, "-S", str(ROOT), "-B", str(build), *generator, f"-DSlicer_DIR={stand_in}",
                     f"-DCMAKE_INSTALL_PREFIX={prefix}", "-DBUILD_TESTING=ON"],
                    [cmake, "--build", str(build)],
                    [cmake, "--install", str(build)]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    installed_root = prefix / "lib" / "Slicer-5.8" / "qt-scripted-modules"
    installed = sorted(p.relative_to(installed_root).as_posix() for p in installed_root.rglob("*") if p.is_file())
    assert installed == sorted(build_extension_archive.archive_entries())
    built = build / "lib" / "Slicer-5.8" / "qt-scripted-modules" / "Resources"
    assert (built / "Models" / "catalog.json").is_file() and (built / "SampleData" / "checksums.json").is_file()
