"""NNMamba hub module: environment and dependencies, the backend (local or remote nnmamba server), the model
manager, and volume classification. The work is done in NNMambaSlicerLib (GUI-free, tested outside Slicer); the
classes here only connect it to the GUI and the scene."""

import logging
import os

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

POLL_INTERVAL_MS = 200
CLASSIFICATION = "classification"
MODEL_COLUMNS = ("Model", "ID", "Task", "Version", "Status", "Source")


#
# NNMambaSlicer
#


class NNMambaSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("NNMamba")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["NNMamba team"]
        self.parent.helpText = _(
            "nnMamba models (3D CNN + Mamba state-space layers) in Slicer. This module sets up the Python packages, "
            "starts or connects the backend that runs the models, manages the models, and classifies volumes. "
            "Segmentation and landmark detection are in the NNMamba Segmentation and NNMamba Landmarks modules."
        )
        self.parent.acknowledgementText = _(
            "nnMamba: Gong H, Kang L, Wang Y, Wang Y, Wan X, Wu X, Li H. nnMamba: 3D Biomedical Image Segmentation, "
            "Classification and Landmark Detection with State Space Model. ISBI 2025. The demo models and sample "
            "volumes are synthetic."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The demo volumes (category NNMamba in the Sample Data module), from the extension's own Resources."""
    from NNMambaSlicerLib.sample_data import register_sample_data

    icon = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "NNMambaSlicer.png")
    register_sample_data(icon if os.path.isfile(icon) else None)


#
# NNMambaSlicerParameterNode
#


@parameterNodeWrapper
class NNMambaSlicerParameterNode:
    """
    inputVolume - the volume to classify.
    classificationModel - id of the classification model (kept in sync with the model combo box by hand: its
        items come from the backend, so it cannot be a fixed Choice).
    showTableInLayout - also show the probability table in the view layout after a run.
    classificationTable - the table of the last run.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    classificationModel: str = ""
    showTableInLayout: bool = False
    classificationTable: vtkMRMLTableNode


#
# NNMambaSlicerWidget
#


class NNMambaSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._binding = None       # ParameterBinding: the parameter node <-> the .ui
        self.panel = None          # JobPanel: classification
        self._panelTimer = None
        self._calls = []           # [(BackgroundCall, onDone, errorTitle)]: connect, start, import, verify
        self._callTimer = qt.QTimer()
        self._callTimer.setInterval(POLL_INTERVAL_MS)
        self._callTimer.connect("timeout()", self._onPollCalls)

    def setup(self) -> None:
        from NNMambaSlicerLib.job_panel import JobPanel, attach_widgets
        from NNMambaSlicerLib.parameter_binding import ParameterBinding

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NNMambaSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = NNMambaSlicerLogic()
        self._binding = ParameterBinding(self.ui, self._onParameterNodeModified)
        self.panel = JobPanel()
        self._panelTimer = attach_widgets(self.panel, self.ui.applyButton, self.ui.progressBar,
                                          self.ui.classificationStatusLabel, lock=(self.ui.inputVolumeSelector,),
                                          idle_text=_("Apply"), on_idle=self._updateApplyButton)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.refreshEnvironmentButton.connect("clicked(bool)", self.onRefreshEnvironment)
        self.ui.copyEnvironmentButton.connect("clicked(bool)", self.onCopyEnvironment)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.environmentCollapsibleButton.connect("contentsCollapsed(bool)", self.onEnvironmentCollapsed)
        self.ui.localRadioButton.connect("toggled(bool)", self.onBackendModeChanged)
        self.ui.startBackendButton.connect("clicked(bool)", self.onStartBackend)
        self.ui.connectBackendButton.connect("clicked(bool)", self.onConnectBackend)
        self.ui.stopBackendButton.connect("clicked(bool)", self.onStopBackend)
        self.ui.importFolderButton.connect("clicked(bool)", self.onImportFolder)
        self.ui.importFileButton.connect("clicked(bool)", self.onImportFile)
        self.ui.verifyModelButton.connect("clicked(bool)", self.onVerifyModel)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        self.ui.classificationModelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.ui.modelsTableWidget.setColumnCount(len(MODEL_COLUMNS))
        self.ui.modelsTableWidget.setHorizontalHeaderLabels(list(MODEL_COLUMNS))
        self.ui.modelsTableWidget.horizontalHeader().setStretchLastSection(True)
        self.ui.presetComboBox.addItem(_("(model package: no preset needed)"), "")
        for name, title, _task in self.logic.presets():
            self.ui.presetComboBox.addItem(f"{name}: {title}", name)

        self._loadBackendSettings()
        self.initializeParameterNode()
        self._updateBackendStatus()
        self.refreshModels()

    def cleanup(self) -> None:
        """Stop polling and cancel a running job; the backend itself is shared and stops with the application (a
        start under way still shares its server when it is up, so it has an owner)."""
        self._callTimer.stop()
        self._calls = []
        if self.panel is not None:
            self.panel.stop()
        if self._panelTimer is not None:
            self._panelTimer.stop()
        self.removeObservers()

    def onReload(self) -> None:
        """Reload the Lib submodules too, except the backend: it holds the shared connection and server."""
        import importlib

        for name in ("volumes", "install", "environment_report", "models", "classification_nodes", "sample_data",
                     "settings", "background", "job_panel", "self_test", "parameter_binding"):
            importlib.reload(importlib.import_module(f"NNMambaSlicerLib.{name}"))
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()
        self._updateBackendStatus()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.panel.stop()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volume = self.logic.firstScalarVolume()
            if volume:
                self._parameterNode.inputVolume = volume

    def setParameterNode(self, inputParameterNode) -> None:
        self._parameterNode = inputParameterNode
        self._binding.set(inputParameterNode)

    def _onParameterNodeModified(self) -> None:
        node = self._parameterNode
        if node is None:
            return
        index = self.ui.classificationModelComboBox.findData(node.classificationModel)
        if index >= 0 and index != self.ui.classificationModelComboBox.currentIndex:
            self.ui.classificationModelComboBox.setCurrentIndex(index)
        self.ui.classificationTableView.setMRMLTableNode(self.logic.tableOf(node.inputVolume))
        self.ui.decisionLabel.text = self.logic.decisionText(node.inputVolume)
        self._updateApplyButton()

    def _updateApplyButton(self) -> None:
        busy = self.panel is not None and self.panel.busy
        node = self._parameterNode
        ready = bool(node and node.inputVolume and node.classificationModel)
        self.ui.applyButton.enabled = busy or ready
        self.ui.applyButton.toolTip = _("Stop the running job.") if busy else (
            _("Classify the volume (starts the backend if none runs).") if ready
            else _("Select an input volume and a classification model."))

    # -- background calls (connect, start, import, verify) ---------------------------------------------------------
    def _inBackground(self, call, onDone, errorTitle) -> None:
        """Poll ``call`` (a BackgroundCall or BackendStarter) from the timer; ``onDone(value)`` when it is done."""
        self._calls.append((call, onDone, errorTitle))
        self._callTimer.start()

    def _onPollCalls(self) -> None:
        calls, self._calls = self._calls, []
        for call, onDone, errorTitle in calls:
            if not call.finished:
                self._calls.append((call, onDone, errorTitle))
                continue
            try:
                with slicer.util.tryWithErrorDisplay(errorTitle, waitCursor=False):
                    onDone(call.result())
            except Exception:   # shown to the user already
                logging.debug("NNMamba: background call failed", exc_info=True)
        if not self._calls:
            self._callTimer.stop()
        self._updateBackendStatus()

    # -- environment -------------------------------------------------------------------------------------------
    def onEnvironmentCollapsed(self, collapsed) -> None:
        if not collapsed and not self.ui.environmentTextEdit.plainText:
            self.onRefreshEnvironment()

    def onRefreshEnvironment(self) -> None:
        """Collected in the background: it asks the backend, which may be slow to answer."""
        from NNMambaSlicerLib.background import BackgroundCall

        self.ui.environmentTextEdit.setPlainText(_("Collecting..."))
        self._inBackground(BackgroundCall(self.logic.environmentText, self._device()),
                           self.ui.environmentTextEdit.setPlainText, _("Failed to collect the environment report."))

    def onCopyEnvironment(self) -> None:
        qt.QApplication.clipboard().setText(self.ui.environmentTextEdit.plainText)
        slicer.util.showStatusMessage(_("Environment report copied to the clipboard."), 3000)

    def onInstallDependencies(self) -> None:
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to install the dependencies."), waitCursor=True):
                installed = self.logic.installDependencies(ask=True)
                message = (_("Installed: {packages}.").format(packages=", ".join(installed)) if installed
                           else _("All NNMamba dependencies are installed."))
                slicer.util.infoDisplay(message)
        finally:
            self.onRefreshEnvironment()
            self.refreshModels()

    # -- backend -----------------------------------------------------------------------------------------------
    def _device(self) -> str:
        return self.ui.deviceComboBox.currentText or "auto"

    def _loadBackendSettings(self) -> None:
        chosen = self.logic.backendSettings()
        self.ui.remoteRadioButton.checked = chosen["mode"] == "remote"
        self.ui.localRadioButton.checked = chosen["mode"] != "remote"
        self.ui.serverUrlLineEdit.text = chosen["url"]
        self.ui.tokenLineEdit.text = chosen["token"]
        self.ui.rememberTokenCheckBox.checked = chosen["remember_token"]
        self.ui.deviceComboBox.setCurrentIndex(max(self.ui.deviceComboBox.findText(chosen["device"]), 0))
        self.onBackendModeChanged()

    def _saveBackendSettings(self) -> None:
        self.logic.saveBackendSettings("remote" if self.ui.remoteRadioButton.checked else "local",
                                       self.ui.serverUrlLineEdit.text.strip(), self.ui.tokenLineEdit.text.strip(),
                                       self.ui.rememberTokenCheckBox.checked, self._device())

    def onBackendModeChanged(self, checked=None) -> None:
        from NNMambaSlicerLib.backend import starting_backend

        remote = self.ui.remoteRadioButton.checked
        starting = starting_backend() is not None
        for widget in (self.ui.serverUrlLineEdit, self.ui.tokenLineEdit, self.ui.rememberTokenCheckBox):
            widget.enabled = remote
        self.ui.connectBackendButton.enabled = remote and not starting
        self.ui.startBackendButton.enabled = not remote and not starting

    def _updateBackendStatus(self, text=None) -> None:
        self.ui.backendStatusLabel.text = text or self.logic.backendStatusText()
        self.ui.stopBackendButton.enabled = self.logic.backend() is not None
        self.onBackendModeChanged()

    def onStartBackend(self) -> None:
        self._saveBackendSettings()
        with slicer.util.tryWithErrorDisplay(_("Failed to start the local backend."), waitCursor=True):
            starter = self.logic.startLocalBackendAsync(self._device())
            self._inBackground(starter, self._onBackendReady, _("The local backend did not start."))
            self._updateBackendStatus(_("Starting the local backend on {device}... (the first start can take "
                                        "a minute; Slicer stays usable)").format(device=self._device()))

    def onConnectBackend(self) -> None:
        self._saveBackendSettings()
        with slicer.util.tryWithErrorDisplay(_("Could not connect to the remote backend."), waitCursor=True):
            url = self.ui.serverUrlLineEdit.text.strip()
            starter = self.logic.connectRemoteBackendAsync(url, self.ui.tokenLineEdit.text.strip(), self._device())
            self._inBackground(starter, self._onBackendReady, _("Could not connect to the remote backend."))
            self._updateBackendStatus(_("Connecting to {url}...").format(url=url))

    def _onBackendReady(self, backend) -> None:
        self._updateBackendStatus()
        self.refreshModels()

    def onStopBackend(self) -> None:
        self.panel.stop()
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to stop the backend."), waitCursor=True):
                self.logic.stopBackend()
        finally:
            self._updateBackendStatus()
        self.refreshModels()

    # -- models ------------------------------------------------------------------------------------------------
    def refreshModels(self) -> None:
        """The installed, bundled and catalog models; on a fresh Slicer (no jsonschema, no torch) too, with a line
        saying what to install for a local backend."""
        with slicer.util.tryWithErrorDisplay(_("Failed to list the models."), waitCursor=True):
            rows = self.logic.listModels()
            table = self.ui.modelsTableWidget
            table.setRowCount(len(rows))
            for index, row in enumerate(rows):
                values = (row.name, row.id, row.task or "-", row.version or "-", row.state, row.source)
                for column, value in enumerate(values):
                    item = qt.QTableWidgetItem(str(value))
                    item.setToolTip(row.problem or row.where)
                    item.setData(qt.Qt.UserRole, row.where)
                    table.setItem(index, column, item)
            table.resizeColumnsToContents()
            self.ui.modelsStatusLabel.text = self.logic.dependencyHint()
            self._fillClassificationModels()

    def _fillClassificationModels(self) -> None:
        combo = self.ui.classificationModelComboBox
        wanted = self._parameterNode.classificationModel if self._parameterNode else ""
        combo.blockSignals(True)
        combo.clear()
        for model_id, label in self.logic.classificationModels():
            combo.addItem(label, model_id)
        combo.setCurrentIndex(max(combo.findData(wanted), 0) if combo.count else -1)
        combo.blockSignals(False)
        self.onModelSelected()

    def onModelSelected(self, index=None) -> None:
        if self._parameterNode is None:
            return
        combo = self.ui.classificationModelComboBox
        model_id = combo.itemData(combo.currentIndex) if combo.currentIndex >= 0 else ""
        if (model_id or "") != self._parameterNode.classificationModel:
            self._parameterNode.classificationModel = model_id or ""
        self._updateApplyButton()

    def _selectedModelPath(self):
        table = self.ui.modelsTableWidget
        row = table.currentRow()
        if row < 0:
            raise ValueError(_("Select a model in the table first."))
        return table.item(row, 1).text(), table.item(row, 0).data(qt.Qt.UserRole), table.item(row, 4).text()

    def onVerifyModel(self) -> None:
        """Hash the weights in the background (a large model takes seconds)."""
        from NNMambaSlicerLib.background import BackgroundCall

        with slicer.util.tryWithErrorDisplay(_("The model did not pass the check."), waitCursor=False):
            model_id, where, state = self._selectedModelPath()
            if state == "not installed":
                raise ValueError(_("{model} is not installed. Get it here, then import it: {where}").format(
                    model=model_id, where=where))

            def verified(row):
                slicer.util.infoDisplay(_("{model}: model.json is valid and the weights match their SHA-256.").format(
                    model=model_id))
                self.refreshModels()

            self.ui.modelsStatusLabel.text = _("Checking {model}...").format(model=model_id)
            self._inBackground(BackgroundCall(self.logic.verifyModel, where), verified,
                               _("The model did not pass the check."))

    def onImportFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Model package folder or nnU-Net v1 result folder"))
        if folder:
            self._importModel(folder)

    def onImportFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Model package .zip or checkpoint"), "",
            _("Models (*.zip *.model *.pth *.pt *.safetensors *.ckpt);;All files (*)"))
        if path:
            self._importModel(path)

    def _importModel(self, path, options=None) -> None:
        """Import in the background (reading, converting and hashing a checkpoint takes a while); questions about
        trust or replacing come back here and import again with the answer."""
        from NNMambaSlicerLib.background import BackgroundCall

        options = dict(options or {})
        preset = self.ui.presetComboBox.itemData(self.ui.presetComboBox.currentIndex) or None

        def attempt():
            try:
                return self.logic.importModel(path, preset, **options), None
            except Exception as error:   # the questions are asked on the GUI thread
                return None, error

        def done(outcome):
            imported, error = outcome
            if error is not None:
                self._askAndImportAgain(path, options, error)
                return
            package, notes = imported
            slicer.util.infoDisplay(_("Imported {model} ({task}) to {where}.").format(
                model=package.id, task=package.task, where=package.root),
                detailedText="\n".join(notes) if notes else None)
            self.refreshModels()

        self.ui.modelsStatusLabel.text = _("Importing {path}...").format(path=os.path.basename(path))
        self._inBackground(BackgroundCall(attempt), done, _("Import failed."))

    def _askAndImportAgain(self, path, options, error) -> None:
        kind = self.logic.importQuestion(error)
        if kind == "trust" and not options.get("trust") and slicer.util.confirmYesNoDisplay(
                _("{error}\n\nOnly continue if you trust where this file comes from. Import it anyway?").format(
                    error=error)):
            self._importModel(path, dict(options, trust=True))
        elif kind == "overwrite" and not options.get("overwrite") and slicer.util.confirmYesNoDisplay(
                _("{error}\n\nReplace it?").format(error=error)):
            self._importModel(path, dict(options, overwrite=True))
        elif kind is None:
            self.ui.modelsStatusLabel.text = ""
            slicer.util.errorDisplay(_("Import failed: {error}").format(error=error))
        else:
            self.ui.modelsStatusLabel.text = _("Import cancelled.")

    def onOpenModelsFolder(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot open the models folder."), waitCursor=False):
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.logic.modelsFolder())))

    # -- classification ----------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        """Apply (starting or connecting the backend first if none runs), or Cancel while busy."""
        if self.panel.busy:
            self.panel.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the classification."), waitCursor=True):
            self._saveBackendSettings()
            node = self._parameterNode
            volume, model = node.inputVolume, node.classificationModel
            self.panel.start(lambda backend: self.logic.classificationRun(volume, model, backend),
                             self._showClassification)

    def _showClassification(self, run) -> None:
        table = run.finish()
        self._parameterNode.classificationTable = table
        if self._parameterNode.showTableInLayout:
            self.logic.showTableInLayout(table)
        self.ui.classificationStatusLabel.text = _("Done.")
        self._updateBackendStatus()
        self._onParameterNodeModified()


#
# NNMambaSlicerLogic
#


class NNMambaSlicerLogic(ScriptedLoadableModuleLogic):
    """Everything the hub does, usable from scripts and tests. The backend is the one shared by all NNMamba
    modules (NNMambaSlicerLib.backend.shared_backend)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return NNMambaSlicerParameterNode(super().getParameterNode())

    # -- backend -----------------------------------------------------------------------------------------------
    @staticmethod
    def backend():
        from NNMambaSlicerLib.backend import shared_backend

        return shared_backend()

    @staticmethod
    def setBackend(backend):
        from NNMambaSlicerLib.backend import set_shared_backend

        return set_shared_backend(backend)

    @staticmethod
    def backendSettings():
        from NNMambaSlicerLib.settings import read_backend_settings

        return read_backend_settings()

    @staticmethod
    def saveBackendSettings(mode, url, token, rememberToken, device):
        from NNMambaSlicerLib.settings import write_backend_settings

        write_backend_settings(mode, url, token, rememberToken, device)

    def modelsDir(self):
        return self.backendSettings()["models_dir"]

    def startLocalBackendAsync(self, device="auto", ask=True):
        """Start the shared local server in the background (one start at a time); returns the BackendStarter to
        poll. Missing packages are named at once (looked up, not imported); the client set is installed."""
        from NNMambaSlicerLib.settings import start_shared_backend_from_settings

        settings = dict(self.backendSettings(), mode="local", device=device)
        return start_shared_backend_from_settings(settings, ask=ask)

    def startLocalBackend(self, device="auto", timeout=300):
        """Start the shared local server and wait for it (scripts)."""
        return self.startLocalBackendAsync(device).result(timeout)

    def connectRemoteBackendAsync(self, url, token, device="auto", ask=True):
        """Connect to a remote server in the background (the client set is installed first); returns the
        BackendStarter to poll."""
        from NNMambaSlicerLib.settings import start_shared_backend_from_settings

        if not url:
            raise ValueError(_("Enter the server URL, e.g. http://127.0.0.1:8765 (an SSH tunnel to the server)."))
        return start_shared_backend_from_settings({"mode": "remote", "url": url, "token": token, "device": device},
                                                  ask=ask)

    def stopBackend(self):
        self.setBackend(None)

    def backendStatusText(self):
        from NNMambaSlicerLib.backend import starting_backend

        backend = self.backend()
        if backend is None:
            starting = starting_backend()
            if starting is not None:
                return _("Starting {what}...").format(what=starting.description)
            return _("No backend running. Press Start (or Apply, which starts it).")
        if not backend.is_alive():
            return _("The {kind} backend at {url} does not answer. Stop it and start or connect again.").format(
                kind=backend.kind, url=backend.url)
        return _("{kind} backend running at {url}.").format(kind=backend.kind.capitalize(), url=backend.url)

    # -- environment and dependencies ----------------------------------------------------------------------------
    def environmentText(self, device="auto"):
        from NNMambaSlicerLib.environment_report import environment_text

        return environment_text(self.backend(), device)

    @staticmethod
    def installDependencies(ask=True):
        """Everything a local backend needs (torch through the PyTorch extension, then requirements.txt)."""
        from NNMambaSlicerLib.install import ensure_dependencies

        return ensure_dependencies(ask=ask)

    @staticmethod
    def dependencyHint():
        """One line under the model table: what to install for a local backend, or "" when nothing is missing."""
        from NNMambaSlicerLib.install import missing_for_local_backend

        missing = missing_for_local_backend()
        if not missing:
            return ""
        return _("For a local backend, install: {packages} (Environment > Install dependencies). A remote backend "
                 "needs none of them.").format(packages=", ".join(missing))

    # -- models --------------------------------------------------------------------------------------------------
    @staticmethod
    def presets():
        from NNMambaSlicerLib.models import presets

        return presets()

    def modelsFolder(self):
        from NNMambaSlicerLib.models import models_folder

        return models_folder(self.modelsDir())

    def listModels(self, task=None):
        from NNMambaSlicerLib.models import list_models

        return list_models(self.modelsDir(), task=task)

    def verifyModel(self, path):
        from NNMambaSlicerLib.models import verify_model

        return verify_model(path)

    def importModel(self, path, preset=None, overwrite=False, trust=False):
        from NNMambaSlicerLib.models import import_model

        return import_model(path, preset=preset, models_dir=self.modelsDir(), overwrite=overwrite, trust=trust)

    @staticmethod
    def importQuestion(error):
        """'trust' or 'overwrite' when importing again with the user's yes would go on; None for a plain error."""
        from NNMambaSlicerLib.models import import_question

        return import_question(error)

    def classificationModels(self, backend=None):
        """``[(id, label)]``: the backend's classification models, or the installed ones while none runs."""
        from nnmamba.client import BackendError

        backend = backend or self.backend()
        if backend is not None:
            try:
                models = backend.models(CLASSIFICATION)
                return [(m["id"], f"{m['name']} ({m['id']})") for m in models]
            except BackendError:   # the status label says the backend is gone; list what is installed here
                pass
        rows = self.listModels(CLASSIFICATION)
        return [(row.id, f"{row.name} ({row.id})") for row in rows if row.installed and not row.problem]

    # -- classification ------------------------------------------------------------------------------------------
    @staticmethod
    def firstScalarVolume():
        from NNMambaSlicerLib.volumes import first_scalar_volume

        return first_scalar_volume(slicer.mrmlScene)

    @staticmethod
    def classificationRun(volumeNode, modelId, backend=None):
        """A ClassificationRun (reads the volume now; ``run_to_end`` or ``wait`` does the network part)."""
        from NNMambaSlicerLib.backend import require_shared_backend
        from NNMambaSlicerLib.classification_nodes import ClassificationRun

        if volumeNode is None or not modelId:
            raise ValueError(_("Select an input volume and a classification model."))
        return ClassificationRun(backend or require_shared_backend(), volumeNode, modelId)

    def classify(self, volumeNode, modelId, backend=None, timeout=600):
        """Classify and wait (scripts, tests): returns the probability table."""
        run = self.classificationRun(volumeNode, modelId, backend)
        run.wait(timeout=timeout, process_events=slicer.app.processEvents)
        return run.finish()

    @staticmethod
    def tableOf(volumeNode):
        from NNMambaSlicerLib.classification_nodes import find_classification_table

        return find_classification_table(volumeNode)

    @staticmethod
    def decisionText(volumeNode):
        from NNMambaSlicerLib.classification_nodes import read_decision

        decision = read_decision(volumeNode)
        if decision is None:
            return ""
        name, _model, probability = decision
        return name if probability is None else f"{name} ({probability:.1%})"

    @staticmethod
    def showTableInLayout(table):
        """Switch to a layout with a table view and show the table there (as Segment Statistics does)."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        layout = slicer.modules.tables.logic().GetLayoutWithTable(layoutManager.layout)
        layoutManager.setLayout(layout)
        applicationLogic = slicer.app.applicationLogic()
        applicationLogic.GetSelectionNode().SetActiveTableID(table.GetID())
        applicationLogic.PropagateTableSelection()


#
# NNMambaSlicerTest
#


class NNMambaSlicerTest(ScriptedLoadableModuleTest):
    """Classify the demo brain volume with the demo model on the CPU, through a private local backend (the user's
    shared backend, if any, is left alone). In testing mode the dependencies are installed without asking; where
    that is impossible the test says so in one line and skips."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ClassifyDemoVolume()

    def test_ClassifyDemoVolume(self):
        import SampleData
        from NNMambaSlicerLib.self_test import private_backend

        self.delayDisplay("Loading the demo volume")
        registerSampleData()
        volume = SampleData.downloadSample("NNMambaDemoBrainAtrophy")
        self.assertIsNotNone(volume)

        self.delayDisplay("Starting a private local backend on the CPU")
        logic = NNMambaSlicerLogic()
        with private_backend(self) as backend:
            self.assertIn("demo-brain-atrophy", [model_id for model_id, _label in logic.classificationModels(backend)])
            table = logic.classify(volume, "demo-brain-atrophy", backend=backend, timeout=300)

        self.assertEqual(table.GetNumberOfRows(), 2)
        probabilities = [float(table.GetCellText(row, 1)) for row in range(table.GetNumberOfRows())]
        self.assertAlmostEqual(sum(probabilities), 1.0, places=4)
        decision = volume.GetAttribute("NNMamba.Classification")
        self.assertIn(decision, [table.GetCellText(row, 0) for row in range(2)])
        self.assertEqual(volume.GetAttribute("NNMamba.ClassificationModel").split()[0], "demo-brain-atrophy")
        hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
        self.assertEqual(hierarchy.GetItemParent(hierarchy.GetItemByDataNode(table)),
                         hierarchy.GetItemByDataNode(volume))
        self.delayDisplay("Test passed")
