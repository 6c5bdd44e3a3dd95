"""NNMamba hub module: environment and dependencies, the backend (local or remote nnmamba server), the model
manager, and volume classification. The work is done in NNMambaSlicerLib (GUI-free, tested outside Slicer); the
classes here only connect it to the GUI and the scene."""

import logging
import os

import qt
import slicer
import vtk
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

POLL_INTERVAL_MS = 250
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
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobVolume = None
        self._starter = None
        self._classifyWhenStarted = False
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._onPollJob)
        self._startTimer = qt.QTimer()
        self._startTimer.setInterval(POLL_INTERVAL_MS)
        self._startTimer.connect("timeout()", self._onPollStart)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NNMambaSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = NNMambaSlicerLogic()

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

        self.ui.progressBar.hide()
        self.ui.modelsTableWidget.setColumnCount(len(MODEL_COLUMNS))
        self.ui.modelsTableWidget.setHorizontalHeaderLabels(list(MODEL_COLUMNS))
        self.ui.modelsTableWidget.horizontalHeader().setStretchLastSection(True)
        self.ui.presetComboBox.addItem(_("(model package: no preset needed)"), "")
        for name, title, _task in self.logic.presets():
            self.ui.presetComboBox.addItem(f"{name}: {title}", name)

        self._loadBackendSettings()
        self.initializeParameterNode()
        self._updateBackendStatus()
        try:
            self.refreshModels()
        except Exception:   # shown already; the rest of the module stays usable
            logging.exception("NNMamba: listing the models failed")

    def cleanup(self) -> None:
        """Stop polling and cancel a running job; the backend itself is shared and stops with the application."""
        self._startTimer.stop()
        self._stopJob(cancel=True)
        self.removeObservers()

    def onReload(self) -> None:
        """Reload the Lib submodules too, except the backend: it holds the shared connection and server."""
        import importlib

        for name in ("volumes", "install", "environment_report", "models", "classification_nodes", "sample_data",
                     "settings"):
            importlib.reload(importlib.import_module(f"NNMambaSlicerLib.{name}"))
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()
        self._updateBackendStatus()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._stopJob(cancel=True)
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
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
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
        running = self._job is not None or self._starter is not None
        node = self._parameterNode
        ready = bool(node and node.inputVolume and node.classificationModel)
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.enabled = running or ready
        self.ui.applyButton.toolTip = _("Stop the running job.") if running else (
            _("Classify the volume.") if ready else _("Select an input volume and a classification model."))

    # -- environment -------------------------------------------------------------------------------------------
    def onEnvironmentCollapsed(self, collapsed) -> None:
        if not collapsed and not self.ui.environmentTextEdit.plainText:
            self.onRefreshEnvironment()

    def onRefreshEnvironment(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to collect the environment report."), waitCursor=True):
            self.ui.environmentTextEdit.setPlainText(self.logic.environmentText(self._device()))

    def onCopyEnvironment(self) -> None:
        if not self.ui.environmentTextEdit.plainText:
            self.onRefreshEnvironment()
        qt.QApplication.clipboard().setText(self.ui.environmentTextEdit.plainText)
        slicer.util.showStatusMessage(_("Environment report copied to the clipboard."), 3000)

    def onInstallDependencies(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to install the dependencies."), waitCursor=True):
            installed = self.logic.installDependencies(ask=True)
            message = (_("Installed: {packages}.").format(packages=", ".join(installed)) if installed
                       else _("All NNMamba dependencies are installed."))
            slicer.util.infoDisplay(message)
            self.onRefreshEnvironment()

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
        remote = self.ui.remoteRadioButton.checked
        for widget in (self.ui.serverUrlLineEdit, self.ui.tokenLineEdit, self.ui.rememberTokenCheckBox,
                       self.ui.connectBackendButton):
            widget.enabled = remote
        self.ui.startBackendButton.enabled = not remote and self._starter is None

    def _updateBackendStatus(self, text=None) -> None:
        self.ui.backendStatusLabel.text = text or self.logic.backendStatusText()
        self.ui.stopBackendButton.enabled = self.logic.backend() is not None
        self.onBackendModeChanged()

    def onStartBackend(self) -> None:
        if self._starter is not None:
            return
        self._saveBackendSettings()
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to start the local backend."), waitCursor=True):
                self._starter = self.logic.startLocalBackendAsync(self._device())
        finally:
            if self._starter is None:
                self._classifyWhenStarted = False
            else:
                self._startTimer.start()
                self._updateBackendStatus(_("Starting the local backend on {device}... (the first start can take "
                                            "a minute; Slicer stays usable)").format(device=self._device()))
            self._updateApplyButton()

    def _onPollStart(self) -> None:
        if self._starter is None or not self._starter.finished:
            return
        self._startTimer.stop()
        starter, self._starter = self._starter, None
        classify, self._classifyWhenStarted = self._classifyWhenStarted, False
        try:
            with slicer.util.tryWithErrorDisplay(_("The local backend did not start."), waitCursor=False):
                self.logic.setBackend(starter.result())
        finally:
            self._updateBackendStatus()
            self._updateApplyButton()
        self.refreshModels()
        if classify:
            self._submitClassification()

    def onConnectBackend(self) -> None:
        self._saveBackendSettings()
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not connect to the remote backend."), waitCursor=True):
                self.logic.connectRemoteBackend(self.ui.serverUrlLineEdit.text.strip(),
                                                self.ui.tokenLineEdit.text.strip(), self._device())
        finally:
            self._updateBackendStatus()
        self.refreshModels()

    def onStopBackend(self) -> None:
        self._stopJob(cancel=True)
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to stop the backend."), waitCursor=True):
                self.logic.stopBackend()
        finally:
            self._updateBackendStatus()
        self.refreshModels()

    # -- models ------------------------------------------------------------------------------------------------
    def refreshModels(self) -> None:
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
        with slicer.util.tryWithErrorDisplay(_("The model did not pass the check."), waitCursor=True):
            model_id, where, state = self._selectedModelPath()
            if state == "not installed":
                raise ValueError(_("{model} is not installed. Get it here, then import it: {where}").format(
                    model=model_id, where=where))
            self.logic.verifyModel(where)
            slicer.util.infoDisplay(_("{model}: model.json is valid and the weights match their SHA-256.").format(
                model=model_id))
        self.refreshModels()

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

    def _importModel(self, path) -> None:
        from NNMambaSlicerLib.models import ModelAlreadyInstalled

        from nnmamba.checkpoints import UnsafeCheckpointError

        preset = self.ui.presetComboBox.itemData(self.ui.presetComboBox.currentIndex) or None
        options = {}
        with slicer.util.tryWithErrorDisplay(_("Import failed."), waitCursor=True):
            while True:
                try:
                    package, notes = self.logic.importModel(path, preset, **options)
                    break
                except UnsafeCheckpointError as error:
                    question = _("{error}\n\nOnly continue if you trust where this file comes from. Import it "
                                 "anyway?").format(error=error)
                    if options.get("trust") or not slicer.util.confirmYesNoDisplay(question):
                        return
                    options["trust"] = True
                except ModelAlreadyInstalled as error:
                    if options.get("overwrite") or not slicer.util.confirmYesNoDisplay(
                            _("{error}\n\nReplace it?").format(error=error)):
                        return
                    options["overwrite"] = True
            details = "\n".join(notes) if notes else None
            slicer.util.infoDisplay(_("Imported {model} ({task}) to {where}.").format(
                model=package.id, task=package.task, where=package.root), detailedText=details)
        self.refreshModels()

    def onOpenModelsFolder(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot open the models folder."), waitCursor=False):
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.logic.modelsFolder())))

    # -- classification ----------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        """Apply, or Cancel while a job runs (or while the backend it waits for starts)."""
        if self._job is not None or self._starter is not None:
            self._stopJob(cancel=True)
            return
        if self.logic.backend() is not None:
            self._submitClassification()
        elif self.ui.remoteRadioButton.checked:
            slicer.util.errorDisplay(_("Connect to the remote backend first (Backend section)."))
        else:   # start the local backend; the job is submitted when it runs
            self._classifyWhenStarted = True
            self.onStartBackend()

    def _submitClassification(self) -> None:
        node = self._parameterNode
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to start the classification."), waitCursor=True):
                self.ui.classificationStatusLabel.text = _("Uploading {volume}...").format(
                    volume=node.inputVolume.GetName() if node.inputVolume else "")
                self._job = self.logic.startClassification(node.inputVolume, node.classificationModel)
                self._jobVolume = node.inputVolume
                self.ui.progressBar.value = 0
                self.ui.progressBar.format = _("queued")
                self.ui.progressBar.show()
                self.ui.classificationStatusLabel.text = _("Classifying {volume}...").format(
                    volume=node.inputVolume.GetName())
                self._pollTimer.start()
        finally:
            if self._job is None:
                self.ui.classificationStatusLabel.text = ""
            self._updateApplyButton()

    def _onPollJob(self) -> None:
        if self._job is None:
            self._pollTimer.stop()
            return
        try:
            status = self._job.poll()
        except Exception as error:
            self._stopJob(cancel=False)
            slicer.util.errorDisplay(_("Lost the classification job: {error}").format(error=error))
            return
        self.ui.progressBar.value = int(round(status.progress * 1000))
        eta = f", {status.eta_seconds:.0f} s left" if status.eta_seconds else ""
        self.ui.progressBar.format = f"%p% ({status.message}{eta})"
        if not status.done:
            return
        job, volume = self._job, self._jobVolume
        self._stopJob(cancel=False)
        if status.succeeded:
            with slicer.util.tryWithErrorDisplay(_("Failed to read the classification result."), waitCursor=True):
                table = self.logic.applyClassificationResult(volume, job)
                self._parameterNode.classificationTable = table
                if self._parameterNode.showTableInLayout:
                    self.logic.showTableInLayout(table)
                self.ui.classificationStatusLabel.text = _("Done.")
                self._onParameterNodeModified()
        elif status.state == "cancelled":
            self.ui.classificationStatusLabel.text = _("Cancelled; nothing was changed.")
        else:
            self.ui.classificationStatusLabel.text = _("Failed: {reason}").format(reason=status.message)
            slicer.util.errorDisplay(_("The classification failed: {reason}").format(reason=status.message))

    def _stopJob(self, cancel) -> None:
        """Stop polling; with ``cancel`` also ask the server to stop the job (and forget a pending start)."""
        self._pollTimer.stop()
        self._classifyWhenStarted = False
        job, self._job, self._jobVolume = self._job, None, None
        if cancel and job is not None:
            try:
                job.cancel()
                self.ui.classificationStatusLabel.text = _("Cancelled; nothing was changed.")
            except Exception as error:   # the server may be gone: nothing left to cancel
                self.ui.classificationStatusLabel.text = _("Could not cancel: {error}").format(error=error)
        self.ui.progressBar.hide()
        self._updateApplyButton()


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

    def _checkDependencies(self):
        from NNMambaSlicerLib.install import DependencyError, load_requirements, missing_requirements, torch_installed

        missing = missing_requirements(load_requirements())
        if not torch_installed():
            missing.insert(0, "torch (PyTorch extension)")
        if missing:
            raise DependencyError(_("NNMamba needs {packages}. Press 'Install dependencies' in the Environment "
                                    "section first.").format(packages=", ".join(missing)))

    def startLocalBackend(self, device="auto"):
        """Start the local server and wait for it (scripts, tests); it becomes the shared backend."""
        from NNMambaSlicerLib.backend import Backend

        self._checkDependencies()
        return self.setBackend(Backend.local(device=device, models_dir=self.modelsDir()))

    def startLocalBackendAsync(self, device="auto"):
        """Start the local server in the background; poll the returned BackendStarter (GUI)."""
        from NNMambaSlicerLib.backend import BackendStarter

        self._checkDependencies()
        return BackendStarter(device=device, models_dir=self.modelsDir())

    def connectRemoteBackend(self, url, token, device="auto"):
        from NNMambaSlicerLib.backend import Backend

        if not url:
            raise ValueError(_("Enter the server URL, e.g. http://127.0.0.1:8765 (an SSH tunnel to the server)."))
        return self.setBackend(Backend.remote(url, token, device=device))

    def stopBackend(self):
        self.setBackend(None)

    def backendStatusText(self):
        backend = self.backend()
        if backend is None:
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
        from NNMambaSlicerLib.install import ensure_dependencies

        return ensure_dependencies(ask=ask)

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
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if not node.IsA("vtkMRMLLabelMapVolumeNode"):
                return node
        return None

    def startClassification(self, volumeNode, modelId, backend=None):
        """Upload (once) and queue the classification; returns the Job to poll."""
        from NNMambaSlicerLib.backend import require_shared_backend

        if volumeNode is None or not modelId:
            raise ValueError(_("Select an input volume and a classification model."))
        backend = backend or require_shared_backend()
        return backend.start_job([volumeNode], CLASSIFICATION, modelId)

    @staticmethod
    def applyClassificationResult(volumeNode, job):
        """The table (filled, under the volume) and the volume's decision attributes from a finished job."""
        from NNMambaSlicerLib.classification_nodes import update_classification_nodes

        return update_classification_nodes(slicer.mrmlScene, volumeNode, job.result_json(), model_id=job.model)

    def classify(self, volumeNode, modelId, backend=None, timeout=600):
        """Classify and wait (scripts, tests): returns the probability table."""
        job = self.startClassification(volumeNode, modelId, backend)
        job.wait(timeout=timeout)
        return self.applyClassificationResult(volumeNode, job)

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
    """Classify the demo brain volume with the demo model on the CPU, through a real local backend."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ClassifyDemoVolume()

    def test_ClassifyDemoVolume(self):
        import SampleData

        self.delayDisplay("Loading the demo volume")
        registerSampleData()
        volume = SampleData.downloadSample("NNMambaDemoBrainAtrophy")
        self.assertIsNotNone(volume)

        self.delayDisplay("Starting a local backend on the CPU")
        logic = NNMambaSlicerLogic()
        logic.startLocalBackend(device="cpu")
        try:
            self.assertIn("demo-brain-atrophy", [model_id for model_id, _label in logic.classificationModels()])
            table = logic.classify(volume, "demo-brain-atrophy", timeout=300)
        finally:
            logic.stopBackend()

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
