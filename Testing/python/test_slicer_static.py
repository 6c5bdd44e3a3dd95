"""Static checks of the three Slicer module files (no Slicer application here): the four classes, the module
metadata, the widget life cycle, .ui names and parameter bindings, MRML scene connections, load-time imports,
Python 3.9 syntax. A missing module file fails. The checker itself is tested first, on a small module written
here, so that a passing run means "checked", not "the checker saw nothing"."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Utilities"))

import check_slicer_imports as imports  # noqa: E402
import check_slicer_modules as checks  # noqa: E402
from extension_layout import MODULES  # noqa: E402

# --- a small module for testing the checker ----------------------------------------------------------------------

GOOD_MODULE = '''
import qt
import slicer
from typing import Annotated
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


class Demo(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Demo"
        self.parent.categories = ["Segmentation"]
        self.parent.contributors = ["NNMamba team"]
        self.parent.helpText = "help"
        self.parent.acknowledgementText = "thanks"


@parameterNodeWrapper
class DemoParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    threshold: Annotated[float, WithinRange(0, 10)] = 1.0
    mode: Annotated[str, Choice(["fast", "exact"])] = "fast"
    smooth: bool = True


class DemoWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Demo.ui"))
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.extra = qt.QLabel()
        self.ui.extra.text = "made in code"

    def cleanup(self):
        self.removeObservers()

    def onApply(self):
        import torch  # only when used
        with slicer.util.tryWithErrorDisplay("Failed.", waitCursor=True):
            torch.zeros(1)


class DemoLogic(ScriptedLoadableModuleLogic):
    def getParameterNode(self):
        return DemoParameterNode(super().getParameterNode())


class DemoTest(ScriptedLoadableModuleTest):
    def runTest(self):
        self.test_demo()

    def test_demo(self):
        pass
'''

GOOD_UI = '''<?xml version="1.0" encoding="UTF-8"?>
<ui version="4.0">
 <class>Demo</class>
 <widget class="qMRMLWidget" name="Demo">
  <layout class="QVBoxLayout" name="mainLayout">
   <item><widget class="qMRMLNodeComboBox" name="inputSelector">
    <property name="SlicerParameterName" stdset="0"><string>inputVolume</string></property></widget></item>
   <item><widget class="ctkSliderWidget" name="thresholdSlider">
    <property name="SlicerParameterName" stdset="0"><string>threshold</string></property></widget></item>
   <item><widget class="QComboBox" name="modeComboBox">
    <property name="SlicerParameterName" stdset="0"><string>mode</string></property></widget></item>
   <item><widget class="QCheckBox" name="smoothCheckBox">
    <property name="SlicerParameterName" stdset="0"><string>smooth</string></property></widget></item>
   <item><widget class="QPushButton" name="applyButton"/></item>
  </layout>
 </widget>
 <connections>
  <connection><sender>Demo</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>
   <receiver>inputSelector</receiver><slot>setMRMLScene(vtkMRMLScene*)</slot></connection>
 </connections>
</ui>
'''


def _write_module(root, module_text=GOOD_MODULE, ui_text=GOOD_UI, lib_files=None):
    folder = root / "Demo"
    (folder / "Resources" / "UI").mkdir(parents=True, exist_ok=True)
    (folder / "Demo.py").write_text(textwrap.dedent(module_text), encoding="utf-8")
    (folder / "Resources" / "UI" / "Demo.ui").write_text(ui_text, encoding="utf-8")
    for name, text in (lib_files or {"__init__.py": ""}).items():
        path = folder / "DemoLib" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return checks.ModuleSource("Demo", root)


def _problems(source):
    return [p for check in checks.MODULE_CHECKS for p in check(source)]


def test_checker_finds_nothing_wrong_in_a_correct_module(tmp_path):
    source = _write_module(tmp_path)
    assert _problems(source) == []
    files = imports.slicer_side_files(tmp_path, ["Demo"])
    assert imports.check_python39_syntax(files, tmp_path) == []


@pytest.mark.parametrize("old, new, expected", [
    ("class DemoTest(ScriptedLoadableModuleTest)", "class DemoTests(ScriptedLoadableModuleTest)",
     "class DemoTest is missing"),
    ("class DemoWidget(ScriptedLoadableModuleWidget, VTKObservationMixin)",
     "class DemoWidget(ScriptedLoadableModuleWidget)", "must also derive from VTKObservationMixin"),
    ('        self.parent.helpText = "help"\n', "", "does not set self.parent.helpText"),
    ('self.parent.categories = ["Segmentation"]', 'self.parent.categories = ["Examples"]', "'Segmentation'"),
    ("        ScriptedLoadableModuleWidget.setup(self)\n", "", "must call ScriptedLoadableModuleWidget.setup"),
    ("        self.removeObservers()\n", "        pass\n", "cleanup() must call self.removeObservers()"),
    ("        VTKObservationMixin.__init__(self)\n", "", "VTKObservationMixin.__init__(self)"),
    ('self.ui.applyButton.connect', 'self.ui.applyButon.connect', "self.ui.applyButon is not a widget name"),
    ("with slicer.util.tryWithErrorDisplay(\"Failed.\", waitCursor=True):", "if True:", "tryWithErrorDisplay"),
    ("threshold: Annotated[float, WithinRange(0, 10)] = 1.0", "threshold: float = 1.0", "needs WithinRange"),
    ('mode: Annotated[str, Choice(["fast", "exact"])] = "fast"', 'mode: str = "fast"', "needs Annotated[str, Choice"),
    ("smooth: bool = True", "smooth: str = ''", "cannot be connected to 'smooth'"),
    ("smooth: bool = True", "", "SlicerParameterName 'smooth', which is not a field"),
    ("@parameterNodeWrapper\n", "", "expected one @parameterNodeWrapper class"),
    ("return DemoParameterNode(super().getParameterNode())", "return super().getParameterNode()",
     "getParameterNode() must return DemoParameterNode"),
    ('"UI/Demo.ui"', '"UI/Other.ui"', 'never calls slicer.util.loadUI(self.resourcePath("UI/Demo.ui"))'),
    ("import qt\n", "import qt\nimport SimpleITK\n", "imports SimpleITK when the file loads"),
    ("import qt\n", "import qt\nimport imp\n", "Python 3.12"),
    ("        import torch  # only when used\n", "        import torch  # only when used\n"
     "        from DemoLib.missing import helper\n", "imports DemoLib.missing, which does not exist"),
    ("        import torch  # only when used\n", "        import torch  # only when used\n"
     "        from DemoLib import helper\n", "DemoLib has no helper"),
])
def test_checker_reports_each_module_file_mistake(tmp_path, old, new, expected):
    assert old in GOOD_MODULE
    source = _write_module(tmp_path, GOOD_MODULE.replace(old, new))
    problems = _problems(source)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("Demo/") for p in problems), "each problem names its file"


@pytest.mark.parametrize("old, new, expected", [
    ('class="qMRMLWidget" name="Demo"', 'class="QWidget" name="Demo"', "must be a qMRMLWidget"),
    ("<receiver>inputSelector</receiver>", "<receiver>thresholdSlider</receiver>",
     "qMRMLNodeComboBox 'inputSelector' has no mrmlSceneChanged"),
    ("<string>threshold</string>", "<string>treshold</string>", "'treshold', which is not a field"),
    ('class="QCheckBox" name="smoothCheckBox"', 'class="QPushButton" name="smoothCheckBox"', "must be checkable"),
    ('class="QCheckBox" name="smoothCheckBox"', 'class="ctkCheckablePushButton" name="smoothCheckBox"',
     "added after Slicer 5.8"),
    ('class="QComboBox" name="modeComboBox"', 'class="QLineEdit" name="modeComboBox"', None),
    ('<property name="SlicerParameterName"', '<property name="ParameterName"', "no widget has a SlicerParameterName"),
    ('class="qMRMLNodeComboBox" name="inputSelector"', 'class="qMRMLSubjectHierarchyComboBox" name="inputSelector"',
     "cannot be connected to 'inputVolume'"),
])
def test_checker_reports_each_ui_mistake(tmp_path, old, new, expected):
    assert old in GOOD_UI
    problems = _problems(_write_module(tmp_path, ui_text=GOOD_UI.replace(old, new)))
    if expected is None:  # a line edit carries a str: a valid binding, no Choice needed
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems
        assert all(p.startswith("Demo/") for p in problems)


def test_checker_imports_lib_modules_for_real(tmp_path):
    lib = {"__init__.py": "",
           "light.py": "import json\nimport numpy\n\n\ndef use():\n    import torch\n    return torch\n",
           "weighty.py": "import nnmamba.imaging  # pulls SimpleITK in\n",
           "gui.py": "import qt\n",
           "broken.py": "from .light import missing_name\n"}
    _write_module(tmp_path, lib_files=lib)
    problems = imports.check_lib_import_weight(tmp_path, ["Demo"])
    text = "\n".join(problems)
    assert "Demo/DemoLib/weighty.py: importing DemoLib.weighty loads SimpleITK" in text
    assert "DemoLib/gui.py: importing DemoLib.gui outside the Slicer GUI fails" in text
    assert "DemoLib.broken" in text and "ImportError" in text
    assert not [p for p in problems if p.startswith(("Demo/DemoLib/light.py", "Demo/DemoLib/__init__.py"))]
    static = checks.check_load_time_imports(checks.ModuleSource("Demo", tmp_path))
    assert any("DemoLib/gui.py:1: a Lib module imports qt" in p for p in static), static


def test_checker_resolves_imports_of_our_own_code(tmp_path):
    lib = {"__init__.py": "from .tools import helper\n",
           "tools.py": "import os\n\n\ndef helper():\n    from .nested import deep\n    from . import absent\n"
                       "    from nnmamba.geometry import Geometry, NoSuchThing\n    return deep, absent\n",
           "nested/__init__.py": "deep = 1\n"}
    source = _write_module(tmp_path, lib_files=lib)
    problems = imports.check_internal_imports(source)
    assert problems == ["Demo/DemoLib/tools.py:6: DemoLib has no absent",
                        "Demo/DemoLib/tools.py:7: nnmamba.geometry has no NoSuchThing"]


def test_checker_finds_syntax_newer_than_python_3_9(tmp_path):
    source = _write_module(tmp_path, lib_files={"__init__.py": "",
                                                "new.py": "def f(x):\n    match x:\n        case 1:\n"
                                                          "            return 1\n",
                                                "hints.py": "def g(x: int | None) -> list[int]:\n    return []\n"})
    files = imports.slicer_side_files(tmp_path, ["Demo"])
    assert source.path in files and len(files) == 4
    syntax = imports.check_python39_syntax(files, tmp_path)
    assert len(syntax) == 1 and syntax[0].startswith("Demo/DemoLib/new.py:") and "Pattern matching" in syntax[0]
    if imports.vermin_executable() is None:
        pytest.skip("vermin is not installed")
    violations = "\n".join(imports.check_vermin([tmp_path / "Demo" / "DemoLib" / "hints.py"], tmp_path))
    assert "hints.py" in violations and "3.10" in violations


# --- the real modules ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("check", checks.MODULE_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("module", MODULES)
def test_module(module, check):
    source = checks.ModuleSource(module, ROOT)
    problems = checks.check_module_file_exists(source) or check(source)
    assert not problems, "\n" + "\n".join(problems)


def test_slicer_side_code_parses_as_python_3_9():
    missing = [m for m in MODULES if not (ROOT / m / f"{m}.py").is_file()]
    assert not missing, f"module files missing: {missing}"
    problems = imports.check_python39_syntax(imports.slicer_side_files(ROOT), ROOT)
    assert not problems, "\n" + "\n".join(problems)


def test_slicer_side_code_passes_vermin_for_python_3_9():
    if imports.vermin_executable() is None:
        pytest.skip("vermin is not installed")
    files = imports.slicer_side_files(ROOT)
    assert len(files) >= len(MODULES) * 2
    problems = imports.check_vermin(files, ROOT)
    assert not problems, "\n" + "\n".join(problems)


def test_lib_packages_import_without_the_gui_and_without_heavy_packages():
    missing = [m for m in MODULES if not (ROOT / m / f"{m}Lib" / "__init__.py").is_file()]
    assert not missing, f"Lib packages missing: {missing}"
    problems = imports.check_lib_import_weight(ROOT)
    assert not problems, "\n" + "\n".join(problems)


@pytest.mark.parametrize("module", ["NNMambaSlicer", "NNMambaSegmentation", "NNMambaLandmarks"])
def test_reload_reloads_every_lib_module_of_the_module(module):
    """Developer Reload must pick up edits of the module's Lib code (the hub keeps its backend module: it holds the
    shared server)."""
    import re

    source = (ROOT / module / f"{module}.py").read_text()
    assert "def onReload" in source, f"{module} does not reload its Lib code"
    body = source.split("def onReload")[1].split("\n    def ")[0]
    reloaded = set(re.findall(r'"(\w+)"', body))
    lib = {path.stem for path in (ROOT / module / f"{module}Lib").glob("*.py")} - {"__init__", "backend"}
    assert lib <= reloaded, f"not reloaded: {sorted(lib - reloaded)}"
