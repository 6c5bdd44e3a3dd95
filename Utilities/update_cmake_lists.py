"""Rewrite the SCRIPTS and RESOURCES lists of each module's CMakeLists.txt from the files on disk.

Slicer packages only the files a module's CMakeLists.txt names, and fails the build on a name that does not exist,
so the lists must follow the code. The lists stay explicit in the CMake files (no globbing at configure time);
this script only rewrites the lines between the ``# BEGIN GENERATED`` / ``# END GENERATED`` markers, and writes a
module's CMakeLists.txt from the template when it has none.

    python Utilities/update_cmake_lists.py           # rewrite
    python Utilities/update_cmake_lists.py --check   # exit 1 and name the modules whose lists are stale
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extension_layout import (  # noqa: E402
    MODULES,
    RESOURCES_VARIABLE,
    ROOT,
    SCRIPTS_VARIABLE,
    ExtensionLayoutError,
    module_files_on_disk,
)

BEGIN = "  # BEGIN GENERATED {variable}: Utilities/update_cmake_lists.py rewrites these lines"
END = "  # END GENERATED {variable}"

MODULE_TEMPLATE = """\
#-----------------------------------------------------------------------------
set(MODULE_NAME {module})

#-----------------------------------------------------------------------------
# Every file the module ships, listed explicitly: Slicer packages only what is named here. Keep the lists in step
# with the folder by running Utilities/update_cmake_lists.py (Testing/python/test_extension_package.py checks).
set({scripts_variable}
{scripts_block}
  )

set({resources_variable}
{resources_block}
  )

#-----------------------------------------------------------------------------
slicerMacroBuildScriptedModule(
  NAME ${{MODULE_NAME}}
  SCRIPTS ${{{scripts_variable}}}
  RESOURCES ${{{resources_variable}}}
  WITH_GENERIC_TESTS
  )
{extra}
#-----------------------------------------------------------------------------
if(BUILD_TESTING)
  # The module's self-test (class {module}Test), run by the extensions factory inside Slicer.
  slicer_add_python_unittest(SCRIPT ${{MODULE_NAME}}.py)
endif()
"""

# The hub owns the extension-wide data: the demo models and sample volumes in the repository's root Resources/.
# nnmamba.modelpkg looks for models at <folder of the nnmamba package>/../Resources/Models, i.e. in the shared
# qt-scripted-modules/Resources tree, where the hub's sample-data registration looks too.
HUB_EXTRA = """
#-----------------------------------------------------------------------------
# Shared data: the root Resources/Models (demo model packages) and Resources/SampleData (sample volumes) go to
# qt-scripted-modules/Resources/, beside every module's own resources, where nnmamba.modelpkg and the sample-data
# registration look for them. slicerMacroBuildScriptedModule copies RESOURCES relative to this folder only, so
# these folders are copied into the build tree and installed explicitly.
set(_nnmamba_shared_resources_dir "${CMAKE_CURRENT_SOURCE_DIR}/../Resources")
set(_nnmamba_shared_resources_build_dir "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/Resources")
foreach(_nnmamba_shared_dir IN ITEMS Models SampleData)
  add_custom_target(CopyNNMamba${_nnmamba_shared_dir} ALL
    COMMAND ${CMAKE_COMMAND} -E copy_directory
      "${_nnmamba_shared_resources_dir}/${_nnmamba_shared_dir}"
      "${_nnmamba_shared_resources_build_dir}/${_nnmamba_shared_dir}"
    COMMENT "Copying NNMamba shared resources: ${_nnmamba_shared_dir}"
    )
  install(DIRECTORY "${_nnmamba_shared_resources_dir}/${_nnmamba_shared_dir}"
    DESTINATION "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources"
    COMPONENT RuntimeLibraries
    PATTERN "__pycache__" EXCLUDE
    PATTERN ".*" EXCLUDE
    )
endforeach()
"""


def _block(variable, entries):
    lines = [BEGIN.format(variable=variable)] + ["  " + e for e in entries] + [END.format(variable=variable)]
    return "\n".join(lines)


def _check_names(module, entries):
    for entry in entries:
        if re.search(r'[\s;"()#$\\]', entry):
            raise ExtensionLayoutError(f"{module}/{entry}: rename it; CMake lists cannot hold spaces, ';', quotes, "
                                       "'#', '$', parentheses or backslashes without quoting rules we do not use")


def render_module_cmake(module, existing_text=None, root=ROOT):
    """The CMakeLists.txt text of ``module`` with lists matching the files on disk."""
    scripts, resources = module_files_on_disk(module, root)
    if module + ".py" not in scripts:
        raise ExtensionLayoutError(f"{module}/{module}.py does not exist yet: a scripted module needs its module file")
    _check_names(module, scripts + resources)
    blocks = {SCRIPTS_VARIABLE: _block(SCRIPTS_VARIABLE, scripts),
              RESOURCES_VARIABLE: _block(RESOURCES_VARIABLE, resources)}
    if existing_text is None:
        return MODULE_TEMPLATE.format(module=module, scripts_variable=SCRIPTS_VARIABLE,
                                      resources_variable=RESOURCES_VARIABLE, scripts_block=blocks[SCRIPTS_VARIABLE],
                                      resources_block=blocks[RESOURCES_VARIABLE],
                                      extra=HUB_EXTRA if module == MODULES[0] else "")
    text = existing_text
    for variable, block in blocks.items():
        begin, end = BEGIN.format(variable=variable), END.format(variable=variable)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        if len(pattern.findall(text)) != 1:
            raise ExtensionLayoutError(f"{module}/CMakeLists.txt needs exactly one '# BEGIN GENERATED {variable}' ... "
                                       f"'# END GENERATED {variable}' block; delete the file to have it written anew")
        text = pattern.sub(lambda _m, b=block: b, text)
    return text


def _write_atomically(path, text):
    handle, temporary = tempfile.mkstemp(dir=str(path.parent), prefix=".CMakeLists.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        _use_default_permissions(temporary)
        os.replace(temporary, str(path))
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def update(root=ROOT, check=False, modules=MODULES):
    """Rewrite (or with ``check`` only compare) each module's lists. Returns (modules whose file was stale,
    modules skipped because their module file does not exist yet)."""
    stale, missing = [], []
    for module in modules:
        if not (Path(root) / module / (module + ".py")).is_file():
            missing.append(module)
            continue
        path = Path(root) / module / "CMakeLists.txt"
        existing = path.read_text(encoding="utf-8") if path.is_file() else None
        wanted = render_module_cmake(module, existing, root)
        if wanted != existing:
            stale.append(module)
            if not check:
                _write_atomically(path, wanted)
    return stale, missing


def _use_default_permissions(path):
    """mkstemp makes 0600 files; give the result the permissions a plain new file gets (umask applied)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale lists (exit 1), write nothing")
    args = parser.parse_args(argv)
    try:
        stale, missing = update(check=args.check)
    except ExtensionLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for module in stale:
        print(f"{module}/CMakeLists.txt: " + ("lists differ from the files on disk" if args.check else "updated"))
    for module in missing:
        print(f"error: {module}/{module}.py does not exist: {module}/CMakeLists.txt left as it is", file=sys.stderr)
    if missing:
        return 2
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
