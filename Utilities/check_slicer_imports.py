"""Import-time and Python-version checks of the Slicer-side code (module files and their Lib packages).

Slicer imports every module file at start-up, before the user has agreed to install anything, in Python 3.9
(Slicer 5.0-5.8) or 3.12 (5.10+). So a module file must import nothing heavy or not shipped with Slicer at load
time, the Lib packages must also import without the GUI (they are tested under slicer-core), and the syntax must
be 3.9's. The Lib modules are imported for real, in a fresh interpreter, to see what they pull in.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extension_layout import MODULES, ROOT  # noqa: E402

# Packages a module file must not import while Slicer loads it: not shipped with Slicer (they arrive later, with
# the user's consent), or slow to import (torch, SimpleITK). Import them inside the functions that need them.
NOT_AT_LOAD_TIME = ("torch", "SimpleITK", "safetensors", "slicerio", "jsonschema", "tqdm", "fastapi", "uvicorn",
                    "pydantic", "starlette", "numba", "scipy", "nrrd", "mamba_ssm", "causal_conv1d", "httpx")
# GUI bindings that exist only in the Slicer application: Lib packages run outside it (tests, server side).
GUI_ONLY = ("qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "SampleData")
# Standard-library modules Python 3.12 (Slicer 5.10+) no longer has.
REMOVED_IN_PYTHON_312 = ("distutils", "imp", "asynchat", "asyncore", "smtpd")


def _load_time_nodes(tree):
    """Statements that run when the file is imported: everything but function bodies and `if TYPE_CHECKING:`."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        yield node
        pending.extend(ast.iter_child_nodes(node))


def load_time_imports(tree) -> List[Tuple[str, ast.AST]]:
    """(module name, node) of every import executed at import time."""
    found = []
    for node in _load_time_nodes(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node))
            found.extend((f"{node.module}.{alias.name}", node) for alias in node.names)
    return found


def _matches(name: str, prefixes: Sequence[str]) -> Optional[str]:
    for prefix in prefixes:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


def slicer_side_files(root: Path = ROOT, modules=MODULES) -> List[Path]:
    """The module files and every .py of their Lib packages (the nnmamba package has its own checks)."""
    from check_slicer_modules import ModuleSource

    files = []
    for module in modules:
        source = ModuleSource(module, root)
        if source.path.is_file():
            files.append(source.path)
        files.extend(source.lib_files())
    return files


def check_load_time_imports(source) -> List[str]:
    """The module file and its Lib package import nothing heavy or not-yet-installed while Slicer loads them, and the
    Lib packages nothing from the GUI (they run outside the application)."""
    problems = []
    files = ([source.path] if source.path.is_file() else []) + source.lib_files()
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        in_lib = path != source.path
        for name, node in load_time_imports(tree):
            heavy = _matches(name, NOT_AT_LOAD_TIME)
            if heavy:
                problems.append(f"{source.where(node, path)}: imports {heavy} when the file loads; import it inside "
                                "the function that needs it (Slicer loads every module at start-up, before the "
                                "dependencies are installed)")
            removed = _matches(name, REMOVED_IN_PYTHON_312)
            if removed:
                problems.append(f"{source.where(node, path)}: imports {removed}, which Python 3.12 (Slicer 5.10+) "
                                "no longer has")
            gui = _matches(name, GUI_ONLY) if in_lib else None
            if gui:
                problems.append(f"{source.where(node, path)}: a Lib module imports {gui} at load time; Lib code "
                                "must import without the Slicer GUI (it is tested with slicer-core)")
    return sorted(set(problems))


_IMPORT_PROBE = r"""
import importlib, json, sys
watched = tuple(json.loads(sys.argv[1]))
names = json.loads(sys.argv[2])
sys.path[:0] = json.loads(sys.argv[3])
try:
    import numpy, slicer, vtk  # what Slicer has loaded anyway
except Exception:
    pass
report = {}
for name in names:
    before = {w for w in watched if w in sys.modules}
    try:
        importlib.import_module(name)
        error = None
    except BaseException as exc:
        error = type(exc).__name__ + ": " + str(exc)
    after = {w for w in watched if w in sys.modules}
    report[name] = {"error": error, "loaded": sorted(after - before), "unknown": sorted(before)}
print(json.dumps(report))
"""


def probe_imports(names: Sequence[str], root: Path = ROOT, modules=MODULES,
                  python: str = sys.executable) -> Dict[str, dict]:
    """Import each module in a fresh interpreter (with slicer-core's ``slicer`` when installed) and report what it
    pulled in from NOT_AT_LOAD_TIME, or the error it raised. Once a module has loaded a watched package, the modules
    after it are probed again in a new interpreter, so that each report is the module's own."""
    search_path = [str(Path(root) / m) for m in modules]

    def run(batch):
        result = subprocess.run([python, "-c", _IMPORT_PROBE, json.dumps(NOT_AT_LOAD_TIME), json.dumps(list(batch)),
                                 json.dumps(search_path)], capture_output=True, text=True, timeout=300,
                                cwd=str(root))
        if result.returncode != 0:
            raise RuntimeError(f"import probe failed: {result.stderr[-2000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    report, pending = {}, list(names)
    while pending:
        batch = run(pending)
        unknown = [n for n in pending if batch[n]["unknown"]]
        cut = pending.index(unknown[0]) if unknown else len(pending)
        report.update({n: batch[n] for n in pending[:cut]})
        if cut == 0:  # already loaded before anything of ours: nothing to attribute
            report[pending[0]] = dict(batch[pending[0]], loaded=[])
            cut = 1
        pending = pending[cut:]
    return report


def _module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = list(relative.parts[1:])  # drop the module folder (on sys.path in Slicer)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_lib_import_weight(root: Path = ROOT, modules=MODULES) -> List[str]:
    """Really import every Lib module (and each nnmamba module a module file imports at load time) and report the
    ones that fail outside the GUI or pull in a package from NOT_AT_LOAD_TIME."""
    root = Path(root)
    from check_slicer_modules import ModuleSource

    names, origin = [], {}
    for module in modules:
        source = ModuleSource(module, root)
        for path in source.lib_files():
            name = _module_name(path, root)
            names.append(name)
            origin[name] = path.relative_to(root).as_posix()
        if source.tree is not None:
            for name, node in load_time_imports(source.tree):
                if _matches(name, ("nnmamba",)) and name not in origin:
                    if _is_module(name):
                        names.append(name)
                        origin[name] = f"{source.where(node)} (imports {name})"
    if not names:
        return []
    problems = []
    for name, result in probe_imports(names, root, modules).items():
        if result["error"]:
            problems.append(f"{origin[name]}: importing {name} outside the Slicer GUI fails: {result['error']}")
        if result["loaded"]:
            problems.append(f"{origin[name]}: importing {name} loads {', '.join(result['loaded'])}; move those "
                            "imports into the functions that use them")
    return problems


def check_python39_syntax(paths: Sequence[Path], root: Path = ROOT) -> List[str]:
    """Each file compiles, and parses with the Python 3.9 grammar (Slicer 5.0-5.8)."""
    problems = []
    for path in paths:
        relative = Path(path).relative_to(root).as_posix()
        text = Path(path).read_text(encoding="utf-8")
        try:
            compile(text, str(path), "exec", dont_inherit=True)
            ast.parse(text, filename=str(path), feature_version=(3, 9))
        except SyntaxError as error:
            problems.append(f"{relative}:{error.lineno}: not valid Python 3.9: {error.msg}")
    return problems


def vermin_executable() -> Optional[str]:
    candidate = Path(sys.executable).with_name("vermin")
    return str(candidate) if candidate.is_file() else shutil.which("vermin")


def check_vermin(paths: Sequence[Path], root: Path = ROOT, vermin: Optional[str] = None) -> List[str]:
    """vermin finds no construct newer than Python 3.9, annotations and ``X | Y`` unions included (the
    parameterNodeWrapper evaluates annotations at run time)."""
    vermin = vermin or vermin_executable()
    if vermin is None:
        raise FileNotFoundError("vermin is not installed")
    command = [vermin, "-t=3.9-", "--no-tips", "--violations", "--eval-annotations", "--feature", "union-types"]
    command += [str(p) for p in paths]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=str(root))
    if result.returncode == 0:
        return []
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return [line.replace(str(root) + "/", "") for line in lines] or [f"vermin exited with {result.returncode}"]


# --- our own imports resolve ---------------------------------------------------------------------------------

def _top_level_names(path: Path) -> Optional[set]:
    """Names a module defines at import time; None when it cannot be known (``import *``, ``__getattr__``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue  # their bodies define nothing at module level
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return None if "__getattr__" in names else names


def _own_packages(root: Path, modules) -> Dict[str, Path]:
    """Top-level importable names of the extension -> their folder or file."""
    nnmamba = Path(root) / "NNMambaSlicer" / "nnmamba"
    packages = {"nnmamba": nnmamba if nnmamba.is_dir() else ROOT / "NNMambaSlicer" / "nnmamba"}
    for module in modules:
        packages[f"{module}Lib"] = Path(root) / module / f"{module}Lib"
        packages[module] = Path(root) / module / f"{module}.py"
    return packages


def _resolve(dotted: str, packages: Dict[str, Path]) -> Optional[Path]:
    """The file of an extension module given by its dotted name, or None."""
    head, *rest = dotted.split(".")
    base = packages.get(head)
    if base is None:
        return None
    if base.suffix == ".py":
        return base if not rest else None
    candidate = base.joinpath(*rest)
    if (candidate / "__init__.py").is_file():
        return candidate / "__init__.py"
    return candidate.with_suffix(".py") if candidate.with_suffix(".py").is_file() else None


def _package_of(path: Path, packages: Dict[str, Path]) -> Optional[str]:
    """Dotted name of the package holding ``path`` (for relative imports)."""
    for name, base in packages.items():
        if base.suffix != ".py" and base in path.parents:
            return ".".join([name, *path.parent.relative_to(base).parts])
    return None


def check_internal_imports(source) -> List[str]:
    """Every import of the extension's own code (Lib packages, nnmamba, another module file), at load time or inside
    a function, names a module that exists and names it defines: a wrong name there only fails inside Slicer, when
    the user presses the button."""
    packages = _own_packages(source.root, MODULES + tuple(m for m in [source.module] if m not in MODULES))
    problems = []
    files = ([source.path] if source.path.is_file() else []) + source.lib_files()
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    package = _package_of(path, packages)
                    if package is None:
                        continue
                    parts = package.split(".")
                    if node.level > len(parts):
                        problems.append(f"{source.where(node, path)}: relative import goes above the package")
                        continue
                    module = ".".join(parts[:len(parts) - node.level + 1] + ([module] if module else []))
                targets = [(module, [alias.name for alias in node.names])]
            else:
                continue
            for module, names in targets:
                if module.split(".")[0] not in packages:
                    continue
                target = _resolve(module, packages)
                if target is None:
                    problems.append(f"{source.where(node, path)}: imports {module}, which does not exist")
                    continue
                defined = _top_level_names(target)
                for name in names:
                    if name == "*" or _resolve(f"{module}.{name}", packages) is not None:
                        continue
                    if defined is not None and name not in defined:
                        problems.append(f"{source.where(node, path)}: {module} has no {name}")
    return sorted(set(problems))
