"""Static checks of the Slicer module files, for what Slicer only reports at run time, in the GUI, if at all.

No Slicer application runs here, so the module files (which import qt, ctk and the scripted-module base classes)
are read as source: the AST of ``<Name>.py`` and the XML of ``Resources/UI/<Name>.ui``. Each check returns a list
of problems, each naming the file (and line) and what is wrong, so a failing test reads like a review comment.
The Lib packages are also imported for real, under slicer-core, to see what they pull in at load time.

    python Utilities/check_slicer_modules.py      # print every problem; exit 1 if any
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_slicer_imports import (  # noqa: E402
    check_internal_imports,
    check_lib_import_weight,
    check_load_time_imports,
    check_python39_syntax,
    check_vermin,
    slicer_side_files,
    vermin_executable,
)
from extension_layout import MODULES, ROOT  # noqa: E402

BASE_CLASSES = {"": "ScriptedLoadableModule", "Widget": "ScriptedLoadableModuleWidget",
                "Logic": "ScriptedLoadableModuleLogic", "Test": "ScriptedLoadableModuleTest"}
PARENT_ATTRIBUTES = ("title", "categories", "contributors", "helpText", "acknowledgementText")

# Widget class -> value kinds its parameterNodeWrapper GUI connector accepts (guiConnectors.py; slicer-platform.md §1).
CONNECTORS = {
    "QCheckBox": {"bool"}, "ctkCheckBox": {"bool"}, "QPushButton": {"bool"}, "ctkCheckablePushButton": {"bool"},
    "QSlider": {"int"}, "QSpinBox": {"int"},
    "QDoubleSpinBox": {"float", "int"}, "ctkSliderWidget": {"float", "int"}, "qMRMLSliderWidget": {"float", "int"},
    "ctkDoubleSlider": {"float", "int"}, "ctkDoubleSpinBox": {"float", "int"}, "qMRMLSpinBox": {"float", "int"},
    "QComboBox": {"str", "int", "float", "bool", "enum"}, "ctkComboBox": {"str", "int", "float", "bool"},
    "QLineEdit": {"str"}, "QLabel": {"str"}, "QTextEdit": {"str"},
    "ctkRangeWidget": {"FloatRange"}, "ctkDoubleRangeSlider": {"FloatRange"}, "qMRMLRangeWidget": {"FloatRange"},
    "ctkPathLineEdit": {"Path"}, "ctkDirectoryButton": {"Path"},
    "qMRMLNodeComboBox": {"node"},
    "ctkColorPickerButton": {"QColor"},
}
# Connectors added to Slicer in 2025, after 5.8 (the oldest release we support): connectGui fails there.
CONNECTORS_AFTER_5_8 = {("ctkCheckablePushButton", "bool"): "Slicer PR #8646", ("ctkColorPickerButton", "QColor"):
                        "Slicer PR #8195"}
CONNECTORS_AFTER_5_8.update({(w, "int"): "Slicer PR #8646" for w in ("QDoubleSpinBox", "ctkSliderWidget",
                                                                      "qMRMLSliderWidget", "ctkDoubleSlider",
                                                                      "ctkDoubleSpinBox", "qMRMLSpinBox")})
NEEDS_BOUNDS = {"QSlider", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider"}
NEEDS_CHOICE = {"QComboBox", "ctkComboBox"}
PATH_TYPES = {"Path", "PurePath", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"}


class ModuleSource:
    """The files of one scripted module, parsed once."""

    def __init__(self, module: str, root: Path = ROOT):
        self.module = module
        self.root = Path(root)
        self.folder = self.root / module
        self.path = self.folder / f"{module}.py"
        self.ui_path = self.folder / "Resources" / "UI" / f"{module}.ui"
        self.lib_folder = self.folder / f"{module}Lib"
        self.text = self.path.read_text(encoding="utf-8") if self.path.is_file() else None
        self.tree = ast.parse(self.text, filename=str(self.path)) if self.text is not None else None
        self.ui = ElementTree.parse(str(self.ui_path)).getroot() if self.ui_path.is_file() else None

    def where(self, node=None, path=None) -> str:
        relative = Path(path or self.path).relative_to(self.root).as_posix()
        return f"{relative}:{node.lineno}" if node is not None and hasattr(node, "lineno") else relative

    def classes(self) -> Dict[str, ast.ClassDef]:
        return {n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)} if self.tree else {}

    def lib_files(self) -> List[Path]:
        if not self.lib_folder.is_dir():
            return []
        return sorted(p for p in self.lib_folder.rglob("*.py") if "__pycache__" not in p.parts)


# --- small AST helpers ----------------------------------------------------------------------------------------

def _name_of(node) -> str:
    """'a.b.c' for Name/Attribute chains, '' otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name_of(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _method(cls: ast.ClassDef, name: str) -> Optional[ast.FunctionDef]:
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return node
    return None


def _calls(node) -> List[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)]


def _calls_named(node, *names) -> bool:
    return any(_name_of(c.func) in names for c in _calls(node))


def _calls_base(node, qualified: str) -> bool:
    """``node`` calls ``Base.method(self...)`` (given as qualified) or ``super().method(...)``."""
    method = qualified.split(".")[-1]
    for call in _calls(node):
        if _name_of(call.func) == qualified:
            return True
        if (isinstance(call.func, ast.Attribute) and call.func.attr == method and isinstance(call.func.value, ast.Call)
                and _name_of(call.func.value.func) == "super"):
            return True
    return False


# --- module file checks ---------------------------------------------------------------------------------------

def check_module_file_exists(source: ModuleSource) -> List[str]:
    problems = []
    if source.tree is None:
        problems.append(f"{source.where()}: the module file is missing")
    if source.ui is None:
        problems.append(f"{source.where(path=source.ui_path)}: the module's .ui file is missing")
    return problems


def check_classes(source: ModuleSource) -> List[str]:
    """The four convention-bound classes exist, with the scripted-module base classes."""
    if source.tree is None:
        return [f"{source.where()}: the module file is missing"]
    problems, classes = [], source.classes()
    for suffix, base in BASE_CLASSES.items():
        name = source.module + suffix
        cls = classes.get(name)
        if cls is None:
            problems.append(f"{source.where()}: class {name} is missing (Slicer looks it up by this name)")
        elif base not in {_name_of(b).split(".")[-1] for b in cls.bases}:
            problems.append(f"{source.where(cls)}: class {name} must derive from {base}")
    widget = classes.get(source.module + "Widget")
    if widget is not None and "VTKObservationMixin" not in {_name_of(b).split(".")[-1] for b in widget.bases}:
        problems.append(f"{source.where(widget)}: {widget.name} must also derive from VTKObservationMixin")
    test = classes.get(source.module + "Test")
    if test is not None:
        if _method(test, "runTest") is None:
            problems.append(f"{source.where(test)}: {test.name} needs runTest() (Slicer --testing calls it)")
        if not any(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in test.body):
            problems.append(f"{source.where(test)}: {test.name} has no test_* method")
    return problems


def check_module_metadata(source: ModuleSource) -> List[str]:
    """The module class sets parent.title/categories/contributors/helpText/acknowledgementText."""
    cls = source.classes().get(source.module)
    if cls is None:
        return [f"{source.where()}: class {source.module} is missing"]
    init = _method(cls, "__init__")
    if init is None:
        return [f"{source.where(cls)}: {source.module}.__init__ is missing: it must set the module's metadata"]
    assigned = {}
    for node in ast.walk(init):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if _name_of(target).startswith("self.parent."):
                    assigned[_name_of(target).split(".")[-1]] = node.value
    problems = [f"{source.where(init)}: {source.module}.__init__ does not set self.parent.{a}"
                for a in PARENT_ATTRIBUTES if a not in assigned]
    categories = assigned.get("categories")
    if categories is not None:
        strings = [n.value for n in ast.walk(categories) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        if not isinstance(categories, ast.List) or "Segmentation" not in strings:
            problems.append(f"{source.where(categories)}: self.parent.categories must be a list holding "
                            "'Segmentation' (the extension's category)")
    if not _calls_base(init, "ScriptedLoadableModule.__init__"):
        problems.append(f"{source.where(init)}: {source.module}.__init__ must call ScriptedLoadableModule.__init__")
    return problems


def check_widget_lifecycle(source: ModuleSource) -> List[str]:
    """setup() calls the base setup, cleanup() removes the observers, __init__ initialises the observation mixin."""
    widget = source.classes().get(source.module + "Widget")
    if widget is None:
        return [f"{source.where()}: class {source.module}Widget is missing"]
    problems = []
    setup = _method(widget, "setup")
    if setup is None:
        problems.append(f"{source.where(widget)}: {widget.name}.setup() is missing")
    elif not _calls_base(setup, "ScriptedLoadableModuleWidget.setup"):
        problems.append(f"{source.where(setup)}: {widget.name}.setup() must call ScriptedLoadableModuleWidget.setup"
                        "(self) (it builds the Reload/Test developer section)")
    cleanup = _method(widget, "cleanup")
    if cleanup is None:
        problems.append(f"{source.where(widget)}: {widget.name}.cleanup() is missing: it must call "
                        "self.removeObservers() and stop running jobs")
    elif not any(isinstance(c.func, ast.Attribute) and c.func.attr == "removeObservers" for c in _calls(cleanup)):
        problems.append(f"{source.where(cleanup)}: {widget.name}.cleanup() must call self.removeObservers()")
    init = _method(widget, "__init__")
    if init is not None and not _calls_base(init, "VTKObservationMixin.__init__"):
        problems.append(f"{source.where(init)}: {widget.name}.__init__ must call VTKObservationMixin.__init__(self)")
    return problems


def check_error_display(source: ModuleSource) -> List[str]:
    """User actions run inside slicer.util.tryWithErrorDisplay, so that failures reach the user as a message."""
    widget = source.classes().get(source.module + "Widget")
    if widget is None:
        return [f"{source.where()}: class {source.module}Widget is missing"]
    if not any(_name_of(c.func).endswith("tryWithErrorDisplay") for c in _calls(widget)):
        return [f"{source.where(widget)}: {widget.name} never uses slicer.util.tryWithErrorDisplay around actions"]
    return []


# --- .ui checks -----------------------------------------------------------------------------------------------

def ui_names(ui) -> Dict[str, str]:
    """name -> class of every named widget, layout and action (what slicer.util.childWidgetVariables exposes)."""
    names = {}
    for element in ui.iter():
        if element.tag in ("widget", "layout", "action") and element.get("name"):
            names[element.get("name")] = element.get("class", element.tag)
    return names


def _ui_root(ui):
    return ui.find("widget")


def check_ui_structure(source: ModuleSource) -> List[str]:
    """.ui root is a qMRMLWidget and every qMRML* widget receives the scene through mrmlSceneChanged."""
    if source.ui is None:
        return [f"{source.where(path=source.ui_path)}: the module's .ui file is missing"]
    where = source.where(path=source.ui_path)
    root = _ui_root(source.ui)
    if root is None:
        return [f"{where}: no top-level <widget>"]
    problems = []
    if root.get("class") != "qMRMLWidget":
        problems.append(f"{where}: the top widget is a {root.get('class')}; it must be a qMRMLWidget so that "
                        "setMRMLScene reaches the MRML widgets")
    connected = set()
    for connection in source.ui.iter("connection"):
        sender, signal = connection.findtext("sender"), (connection.findtext("signal") or "").replace(" ", "")
        receiver, slot = connection.findtext("receiver"), (connection.findtext("slot") or "").replace(" ", "")
        if (sender == root.get("name") and signal == "mrmlSceneChanged(vtkMRMLScene*)"
                and slot == "setMRMLScene(vtkMRMLScene*)"):
            connected.add(receiver)
    for name, cls in sorted(ui_names(source.ui).items()):
        if cls.startswith("qMRML") and name != root.get("name") and name not in connected:
            problems.append(f"{where}: {cls} '{name}' has no mrmlSceneChanged(vtkMRMLScene*) -> "
                            "setMRMLScene(vtkMRMLScene*) connection from the top widget; it will show no nodes")
    return problems


def check_ui_references(source: ModuleSource) -> List[str]:
    """Every self.ui.<name> the module file reads exists in its .ui (or is assigned in code)."""
    if source.tree is None or source.ui is None:
        return check_module_file_exists(source)
    available = set(ui_names(source.ui))
    assigned = set()
    used = []
    for node in ast.walk(source.tree):
        if isinstance(node, ast.Attribute) and _name_of(node.value) == "self.ui":
            if isinstance(node.ctx, ast.Store):
                assigned.add(node.attr)
            else:
                used.append(node)
    problems = []
    wanted = f"UI/{source.module}.ui"
    loaded = [c for c in _calls(source.tree) if _name_of(c.func).endswith("loadUI")
              and any(isinstance(n, ast.Constant) and n.value == wanted for n in ast.walk(c))]
    if not loaded:
        problems.append(f"{source.where()}: never calls slicer.util.loadUI(self.resourcePath(\"{wanted}\"))")
    for node in used:
        if node.attr not in available and node.attr not in assigned:
            problems.append(f"{source.where(node)}: self.ui.{node.attr} is not a widget name in "
                            f"{source.where(path=source.ui_path)}")
    return sorted(set(problems))


# --- parameter node ↔ .ui -------------------------------------------------------------------------------------

def _decorated_with(cls: ast.ClassDef, name: str) -> bool:
    for decorator in cls.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if _name_of(target).split(".")[-1] == name:
            return True
    return False


def _field_types(cls: ast.ClassDef) -> Dict[str, ast.AST]:
    return {n.target.id: n.annotation for n in cls.body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def describe_annotation(annotation, enums=(), packs=()) -> Tuple[str, List[str]]:
    """(kind, [annotation names]) of a parameter field: kind is bool/int/float/str/enum/Path/node/FloatRange/
    QColor/pack:<name> or 'other:<text>'; the names are the Annotated[...] extras (WithinRange, Choice, ...)."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    if isinstance(annotation, ast.Subscript):
        outer = _name_of(annotation.value).split(".")[-1]
        inner = annotation.slice
        items = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
        if outer == "Annotated":
            kind, extras = describe_annotation(items[0], enums, packs)
            names = [_name_of(i.func if isinstance(i, ast.Call) else i).split(".")[-1] for i in items[1:]]
            return kind, extras + names
        if outer in ("Optional", "Union"):
            kinds = {describe_annotation(i, enums, packs)[0] for i in items
                     if not (isinstance(i, ast.Constant) and i.value is None) and _name_of(i) != "None"}
            if len(kinds) == 1:
                return kinds.pop(), []
        return f"other:{ast.unparse(annotation)}", []
    name = _name_of(annotation).split(".")[-1]
    if name in ("bool", "int", "float", "str", "FloatRange", "QColor"):
        return name, []
    if name in PATH_TYPES:
        return "Path", []
    if name.startswith("vtkMRML"):
        return "node", []
    if name in enums:
        return "enum", []
    if name in packs:
        return f"pack:{name}", []
    return f"other:{name}", []


def check_parameter_bindings(source: ModuleSource) -> List[str]:
    """Every SlicerParameterName in the .ui names a field of the @parameterNodeWrapper class, bound to a widget whose
    GUI connector can carry the field's type (on every Slicer release we support)."""
    if source.tree is None or source.ui is None:
        return check_module_file_exists(source)
    classes = source.classes()
    wrappers = [c for c in classes.values() if _decorated_with(c, "parameterNodeWrapper")]
    packs = {c.name: c for c in classes.values() if _decorated_with(c, "parameterPack")}
    enums = {c.name for c in classes.values() if any(_name_of(b).split(".")[-1] in ("Enum", "IntEnum", "StrEnum")
                                                     for b in c.bases)}
    ui_where = source.where(path=source.ui_path)
    if len(wrappers) != 1:
        return [f"{source.where()}: expected one @parameterNodeWrapper class, found {len(wrappers)}"]
    wrapper = wrappers[0]
    problems = []
    bound = []
    for element in source.ui.iter("widget"):
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound.append((element, (prop.findtext("string") or "").strip()))
    if not bound:
        problems.append(f"{ui_where}: no widget has a SlicerParameterName: bind the inputs to {wrapper.name} so "
                        "that they are saved with the scene")
    logic = classes.get(source.module + "Logic")
    getter = _method(logic, "getParameterNode") if logic is not None else None
    if getter is None or not _calls_named(getter, wrapper.name):
        problems.append(f"{source.where(logic)}: {source.module}Logic.getParameterNode() must return "
                        f"{wrapper.name}(super().getParameterNode())")
    for element, parameter in bound:
        widget_class, widget_name = element.get("class"), element.get("name")
        fields, owner = _field_types(wrapper), wrapper.name
        parts = parameter.split(".")
        annotation = None
        for index, part in enumerate(parts):
            annotation = fields.get(part)
            if annotation is None:
                break
            kind = describe_annotation(annotation, enums, packs)[0]
            if index < len(parts) - 1:
                if not kind.startswith("pack:"):
                    annotation = None
                    break
                owner = kind.split(":", 1)[1]
                fields = _field_types(packs[owner])
        if annotation is None:
            problems.append(f"{ui_where}: {widget_class} '{widget_name}' has SlicerParameterName '{parameter}', "
                            f"which is not a field of {wrapper.name} in {source.where()}")
            continue
        kind, extras = describe_annotation(annotation, enums, packs)
        accepted = CONNECTORS.get(widget_class)
        if accepted is None or kind not in accepted:
            problems.append(f"{ui_where}: {widget_class} '{widget_name}' cannot be connected to '{parameter}' "
                            f"({kind}); the parameterNodeWrapper has no connector for that pair")
            continue
        if (widget_class, kind) in CONNECTORS_AFTER_5_8:
            problems.append(f"{ui_where}: {widget_class} '{widget_name}' <-> {kind} '{parameter}' needs a connector "
                            f"added after Slicer 5.8 ({CONNECTORS_AFTER_5_8[(widget_class, kind)]}); use another "
                            "widget so that the module works in 5.8")
        if widget_class in NEEDS_CHOICE and kind in ("str", "int", "float", "bool") and "Choice" not in extras:
            problems.append(f"{ui_where}: {widget_class} '{widget_name}' bound to '{parameter}' needs "
                            f"Annotated[{kind}, Choice([...])] in {wrapper.name} (connectGui raises without it); "
                            "for a list filled at run time drop SlicerParameterName and sync the combo box by hand")
        if widget_class in NEEDS_BOUNDS and not ("WithinRange" in extras or {"Minimum", "Maximum"} <= set(extras)):
            problems.append(f"{ui_where}: {widget_class} '{widget_name}' bound to '{parameter}' needs WithinRange "
                            f"(or Minimum and Maximum) in {wrapper.name}: connectGui refuses an unbounded slider")
        if kind == "FloatRange" and "RangeBounds" not in extras:
            problems.append(f"{ui_where}: {widget_class} '{widget_name}' bound to '{parameter}' needs RangeBounds")
        if widget_class == "QPushButton":
            checkable = [p for p in element.findall("property") if p.get("name") == "checkable"]
            if not checkable or (checkable[0].findtext("bool") or "").strip() != "true":
                problems.append(f"{ui_where}: QPushButton '{widget_name}' bound to bool '{parameter}' must be "
                                "checkable")
    return problems


MODULE_CHECKS = (check_classes, check_module_metadata, check_widget_lifecycle, check_error_display,
                 check_ui_structure, check_ui_references, check_parameter_bindings, check_load_time_imports,
                 check_internal_imports)


def all_problems(root: Path = ROOT, modules=MODULES) -> List[str]:
    problems = []
    for module in modules:
        source = ModuleSource(module, root)
        missing = check_module_file_exists(source)
        if missing:
            problems.extend(missing)
            continue
        for check in MODULE_CHECKS:
            problems.extend(check(source))
    files = slicer_side_files(root, modules)
    problems.extend(check_python39_syntax(files, root))
    problems.extend(check_lib_import_weight(root, modules))
    if vermin_executable():
        problems.extend(check_vermin(files, root))
    return problems


def main():
    problems = all_problems()
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)" if problems else "no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
