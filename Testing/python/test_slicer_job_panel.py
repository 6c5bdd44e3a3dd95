"""The one Apply/Cancel flow of the three modules (NNMambaSlicerLib.job_panel.JobPanel) and the shared backend's
start, with real MRML from slicer-core and real local nnmamba servers: what the GUI thread does (read the scene,
write the result) and what runs in workers (start, upload, poll, download) are checked by the thread they ran on,
and the timer is the test's own loop of ``tick()`` calls, as the widget's QTimer calls it."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
from NNMambaSlicerLib import backend as backend_module
from NNMambaSlicerLib.background import BackgroundCall
from NNMambaSlicerLib.classification_nodes import ClassificationRun, read_decision
from NNMambaSlicerLib.job_panel import JobPanel
from NNMambaSlicerLib.volumes import add_volume, first_scalar_volume

from nnmamba.geometry import Geometry


@pytest.fixture
def shared(local_backend):
    """The module backend made the shared one for one test, then unshared without stopping it."""
    backend_module._shared = local_backend
    yield local_backend
    backend_module._shared = None


class Recorder:
    """What the widget would show."""

    def __init__(self):
        self.statuses, self.busy, self.errors = [], [], []

    def panel(self, **options):
        return JobPanel(on_status=lambda text, fraction, eta: self.statuses.append((text, fraction, eta)),
                        on_busy=self.busy.append, on_error=self.errors.append, poll_interval=0.02, **options)


def tick_until_idle(panel, timeout=60.0):
    deadline = time.monotonic() + timeout
    while panel.busy:
        assert time.monotonic() < deadline, "the panel is still busy"
        panel.tick()
        time.sleep(0.01)


def volume(scene, shape=(16, 16, 16), name="patient"):
    array = np.random.default_rng(0).normal(100, 20, size=shape).astype(np.int16)
    return add_volume(scene.scene, array, Geometry.create(), name)


def test_classification_runs_off_the_gui_thread_and_writes_the_scene_on_it(scene, shared):
    node = volume(scene)
    gui = threading.get_ident()
    threads = {}
    recorder = Recorder()
    panel = recorder.panel()

    def prepare(backend):
        threads["prepare"] = threading.get_ident()
        run = ClassificationRun(backend, node, "test-cls")
        fetch = run.fetch

        def fetch_and_note():
            threads["fetch"] = threading.get_ident()
            fetch()

        run.fetch = fetch_and_note
        return run

    def finish(run):
        threads["finish"] = threading.get_ident()
        threads["table"] = run.finish()

    panel.start(prepare, finish)
    assert panel.busy and recorder.busy == [True]
    tick_until_idle(panel)
    assert recorder.errors == [] and recorder.busy == [True, False]
    assert threads["prepare"] == threads["finish"] == gui and threads["fetch"] != gui
    assert threads["table"].GetNumberOfRows() == 2 and read_decision(node)[0] in ("NC", "AD")
    assert any(fraction is not None for _text, fraction, _eta in recorder.statuses)


def test_cancel_stops_the_job_on_the_server_and_changes_nothing(scene, shared):
    node = volume(scene, shape=(64, 64, 64), name="large")
    recorder = Recorder()
    panel = recorder.panel()
    finished = []
    panel.start(lambda backend: backend_module_segmentation_run(backend, node), finished.append)
    deadline = time.monotonic() + 30
    while panel.run is None or panel.run.status is None or panel.run.status.state != "running":
        assert time.monotonic() < deadline, "the job did not start"
        panel.tick()
        time.sleep(0.01)
    run = panel.run
    panel.cancel()
    tick_until_idle(panel)
    assert finished == [] and recorder.errors == [] and run.status.state == "cancelled"
    assert recorder.statuses[-1][0] == "Cancelled; nothing was changed."


def backend_module_segmentation_run(backend, node):
    """A plain segmentation JobRun (the hub Lib cannot import the Segmentation module's Lib)."""

    class Run(backend_module.JobRun):
        task = "segmentation"

        def fetch(self):
            self.result = self.job.result_json()

    return Run(backend, [node], "test-seg", overlap=0.9)


def test_a_failed_job_and_a_failing_prepare_are_errors_and_the_panel_is_free_again(scene, shared):
    recorder = Recorder()
    panel = recorder.panel()
    node = volume(scene)
    panel.start(lambda backend: ClassificationRun(backend, node, "test-seg"), pytest.fail)   # not a classifier
    tick_until_idle(panel)
    assert len(recorder.errors) == 1 and "is a segmentation model" in recorder.errors[0] and not panel.busy

    def refuse(backend):
        raise ValueError("Select an input volume for each of the model's channels.")

    with pytest.raises(ValueError, match="Select an input volume"):   # with a backend, prepare runs at once
        panel.start(refuse, pytest.fail)
    assert not panel.busy and recorder.busy == [True, False, True, False]


def test_a_plain_call_runs_in_a_worker_and_its_value_comes_back(shared):
    recorder = Recorder()
    panel = recorder.panel()
    got = []
    panel.start(lambda backend: (lambda: (threading.get_ident(), backend.models("classification"))), got.append)
    tick_until_idle(panel)
    (worker, models), = got
    assert worker != threading.get_ident() and "test-cls" in [m["id"] for m in models]


def test_without_a_backend_the_panel_starts_one_in_the_background_and_two_panels_share_it(models_root):
    """Two modules pressing Apply before any backend runs: one local server starts (not two), both go on with it,
    and it is the shared backend afterwards."""
    calls = []

    def connect():
        calls.append(1)
        return backend_module.start_local_backend(device="cpu", models_dir=models_root, python=sys.executable)

    first, second = Recorder(), Recorder()
    panel_a = first.panel(connect=connect)
    panel_b = second.panel(connect=lambda: backend_module.starting_backend() or connect())
    got = []
    try:
        panel_a.start(lambda backend: (lambda: backend), got.append)
        panel_b.start(lambda backend: (lambda: backend), got.append)
        assert calls == [1] and first.statuses[0][0].startswith("Starting the local NNMamba backend")
        tick_until_idle(panel_a, timeout=120)
        tick_until_idle(panel_b, timeout=120)
        assert first.errors == second.errors == []
        assert len(got) == 2 and got[0] is got[1] is backend_module.shared_backend() and got[0].is_alive()
    finally:
        backend_module.set_shared_backend(None)
    assert not got[0].is_alive()


def test_cancel_while_the_backend_starts_runs_nothing_but_the_server_is_still_shared(models_root):
    recorder = Recorder()
    panel = recorder.panel(connect=lambda: backend_module.start_local_backend(
        device="cpu", models_dir=models_root, python=sys.executable))
    try:
        panel.start(lambda backend: pytest.fail("nothing may run after Cancel"), pytest.fail)
        panel.cancel()
        tick_until_idle(panel, timeout=120)
        assert recorder.statuses[-1][0] == "Cancelled; the backend is ready." and recorder.errors == []
        assert backend_module.shared_backend() is not None and backend_module.shared_backend().is_alive()
    finally:
        backend_module.set_shared_backend(None)


def test_a_start_whose_module_went_away_still_shares_its_server(models_root):
    """Module cleanup (or Reload) while the local server starts: the server still gets an owner (the shared
    backend), so it is stopped with the application instead of being orphaned."""
    recorder = Recorder()
    panel = recorder.panel(connect=lambda: backend_module.start_local_backend(
        device="cpu", models_dir=models_root, python=sys.executable))
    try:
        panel.start(lambda backend: pytest.fail("nothing may run after stop"), pytest.fail)
        starter = backend_module.starting_backend()
        panel.stop()
        assert not panel.busy and starter is not None
        backend = starter.result(timeout=120)
        assert backend_module.shared_backend() is backend and backend.is_alive()
    finally:
        backend_module.set_shared_backend(None)


def test_a_failed_start_is_one_error_with_the_reason():
    recorder = Recorder()
    panel = recorder.panel(connect=lambda: backend_module.start_local_backend(python="/nonexistent/PythonSlicer"))
    panel.start(lambda backend: pytest.fail("no backend"), pytest.fail)
    tick_until_idle(panel, timeout=30)
    assert len(recorder.errors) == 1 and "/nonexistent/PythonSlicer" in recorder.errors[0]
    assert backend_module.shared_backend() is None


def test_background_call_hands_back_value_and_error():
    call = BackgroundCall(lambda x: x * 2, 21)
    assert call.result(timeout=5) == 42 and call.finished
    failing = BackgroundCall(int, "not a number")
    with pytest.raises(ValueError):
        failing.result(timeout=5)


def test_the_default_input_is_never_a_labelmap(scene):
    label = add_volume(scene.scene, np.zeros((4, 4, 4), np.uint8), Geometry.create(), "labels",
                       class_name="vtkMRMLLabelMapVolumeNode")
    assert first_scalar_volume(scene.scene) is None and label is not None
    image = volume(scene, shape=(4, 4, 4), name="image")
    assert first_scalar_volume(scene.scene) is image


class WrapperStandIn:
    """What the parameter binding uses of Slicer's parameterNodeWrapper (Slicer@5.8 and 5.10
    Base/Python/slicer/parameterNodeWrapper/wrapper.py): ``parameterNode``, ``connectGui`` (returns a tag from 5.10
    on, None before), ``disconnectGui(tag)``, and Add/RemoveObserver forwarded to the MRML node."""

    def __init__(self, mrml_node, returns_tag):
        self.parameterNode = mrml_node
        self.returns_tag = returns_tag
        self.connected = []

    def connectGui(self, gui):
        self.connected.append(gui)
        return len(self.connected) if self.returns_tag else None

    def disconnectGui(self, tag):
        if tag is not None:
            self.connected.pop()

    def AddObserver(self, event, callback, priority=0.0):
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag):
        self.parameterNode.RemoveObserver(tag)


@pytest.mark.parametrize("returns_tag", [False, True], ids=["slicer-5.8", "slicer-5.10"])
def test_entering_a_module_again_does_not_add_connections(scene, returns_tag):
    from NNMambaSlicerLib.parameter_binding import ParameterBinding

    node = scene.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "NNMambaSegmentation")
    calls = []
    binding = ParameterBinding("ui", lambda: calls.append(1))
    for _enter_exit in range(5):
        wrapper = WrapperStandIn(node, returns_tag)   # getParameterNode() makes a new wrapper each time
        binding.set(wrapper)
        binding.set(None)
    wrapper = WrapperStandIn(node, returns_tag)
    binding.set(wrapper)
    calls.clear()
    node.Modified()
    assert calls == [1]   # one observer, not six
    connections = 1 if returns_tag else 0   # 5.8: connected once for good, at the first enter
    assert len(wrapper.connected) == connections


def test_self_tests_use_a_private_backend_and_leave_the_users_alone(shared):
    import unittest

    from NNMambaSlicerLib.self_test import private_backend

    case = unittest.TestCase()
    with pytest.raises(RuntimeError, match="the test failed"):
        with private_backend(case) as backend:
            assert backend is not shared and backend.kind == "local" and backend.is_alive()
            assert "demo-brain-atrophy" in [m["id"] for m in backend.models("classification")]
            raise RuntimeError("the test failed")
    assert not backend.is_alive()   # stopped although the test failed
    assert backend_module.shared_backend() is shared and shared.is_alive()


@pytest.mark.parametrize("testing_mode", [False, True], ids=["interactive", "testing mode, install fails"])
def test_self_tests_skip_with_one_line_when_the_dependencies_are_missing(monkeypatch, testing_mode):
    import unittest

    from NNMambaSlicerLib import install
    from NNMambaSlicerLib.self_test import private_backend

    def fail_install(ask=True):
        assert ask is False   # never a dialog in a test
        raise install.DependencyError("PyTorch is not installed and the PyTorch extension is missing.")

    monkeypatch.setattr(install, "missing_for_local_backend", lambda: ["torch (PyTorch extension)", "fastapi>=0.110"])
    monkeypatch.setattr(install, "testing", lambda: testing_mode)
    monkeypatch.setattr(install, "ensure_dependencies", fail_install)
    with pytest.raises(unittest.SkipTest) as skipped:
        with private_backend(unittest.TestCase()):
            pytest.fail("no backend without its dependencies")
    message = str(skipped.value)
    assert message.startswith("NNMamba self-test skipped: ") and "\n" not in message
    assert ("PyTorch extension is missing" in message) if testing_mode else ("needs torch" in message)
