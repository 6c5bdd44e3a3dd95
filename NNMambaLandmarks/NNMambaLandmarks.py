"""NNMamba Landmarks: find the six fetal-brain landmarks (TCD, HDV, ADV ends) with an nnMamba model, show them as
one labelled point list with three measurement lines that follow the points, and export them.

Thin Slicer classes only; the work is in NNMambaLandmarksLib (tested outside Slicer) and the backend in
NNMambaSlicerLib.backend. Heavy imports happen inside functions so that listing the module stays cheap.
"""

import os

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
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
EXPORT_FOLDER_SETTING = "NNMamba/Landmarks/ExportFolder"


class NNMambaLandmarks(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("NNMamba Landmarks")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Markups"]
        self.parent.contributors = ["NNMamba team"]
        self.parent.helpText = _(
            "Finds the six cerebellar landmarks of fetal brain MRI (TCD, HDV and ADV end points) with an nnMamba "
            "model, as one labelled point list plus three measurement lines. Drag a point and its line and length "
            "update. Export to .mrk.json or CSV. The model runs in the NNMamba backend (see the NNMamba module)."
        )
        self.parent.acknowledgementText = _(
            "nnMamba by Haifan Gong et al. (lhaof/nnMamba); landmark task after LFC (lhaof/LFC). "
            "Built on the 3D Slicer scripted module template."
        )


@parameterNodeWrapper
class NNMambaLandmarksParameterNode:
    """inputVolume: the volume to search. outputPoints: the point list of the last run (a re-run updates it and its
    lines). model: the landmark model id (the combo box is filled from the backend, so it is synced by hand)."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputPoints: vtkMRMLMarkupsFiducialNode
    model: str = ""


class NNMambaLandmarksWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None        # LandmarkRun being polled
        self._backend = None    # BackendRequest: reaching the shared backend (setup)
        self._links = None      # LandmarkLinks of the shown point list
        self._timer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NNMambaLandmarks.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = NNMambaLandmarksLogic()
        from NNMambaSlicerLib.settings import BackendRequest

        self._backend = BackendRequest()
        self.ui.progressBar.hide()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.outputPointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputPointsChanged)
        self.ui.exportMarkupsButton.connect("clicked(bool)", self.onExportMarkups)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self):
        self.removeObservers()
        self._stopWork(keepStarting=False)
        self._showPoints(None)

    def enter(self):
        self.initializeParameterNode()
        if self.ui.modelComboBox.count == 0:
            self.refreshModels()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self._stopWork()
        self._showPoints(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ---------------------------------------------------------------------------------------
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()
            self._showPoints(self._parameterNode.outputPoints)

    def updateGUIFromParameterNode(self, caller=None, event=None):
        busy = self._run is not None or self._backend.starting
        parameters = self._parameterNode
        if parameters and parameters.model:
            index = self.ui.modelComboBox.findData(parameters.model)
            if index >= 0 and index != self.ui.modelComboBox.currentIndex:
                self.ui.modelComboBox.currentIndex = index
        canApply = bool(parameters and parameters.inputVolume and (parameters.model or self.ui.modelComboBox.count))
        self.ui.applyButton.enabled = busy or canApply
        self.ui.applyButton.text = _("Cancel") if busy else _("Apply")
        self.ui.applyButton.toolTip = _("Stop the running job") if busy else _("Find the landmarks in the background")
        hasPoints = bool(parameters and parameters.outputPoints)
        self.ui.exportMarkupsButton.enabled = hasPoints
        self.ui.exportCsvButton.enabled = hasPoints

    # -- models ----------------------------------------------------------------------------------------------
    def onRefreshModels(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to list the landmark models."), waitCursor=True):
            self._withBackend(self.refreshModels)

    def refreshModels(self):
        """Fill the model combo box from the running backend (does nothing while none runs)."""
        from NNMambaSlicerLib.backend import shared_backend

        backend = shared_backend()
        if backend is None:
            self.ui.statusLabel.text = _("Press Refresh or Apply to start the NNMamba backend.")
            return
        models = self.logic.models(backend)
        wanted = self._parameterNode.model if self._parameterNode else ""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for modelId, label in models:
            combo.addItem(label, modelId)
        combo.currentIndex = max(combo.findData(wanted), 0) if models else -1
        combo.blockSignals(wasBlocked)
        self.onModelChanged(combo.currentIndex)
        self.ui.statusLabel.text = "" if models else _("The backend has no landmark model; add one in the NNMamba "
                                                        "module (Models).")

    def onModelChanged(self, index):
        if self._parameterNode:
            modelId = self.ui.modelComboBox.itemData(index) if index >= 0 else None
            self._parameterNode.model = modelId or ""

    # -- running -----------------------------------------------------------------------------------------------
    def onApplyButton(self):
        if self._run is not None or self._backend.starting:
            self.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start landmark detection."), waitCursor=True):
            self._withBackend(self._startRun)

    def _withBackend(self, then):
        """Call ``then`` now if a backend is there (or the NNMamba module's settings name a remote one), else once
        the local one has started in the background."""
        if not self._backend.call(then) and self._backend.starting:
            self.ui.statusLabel.text = _("Starting the local NNMamba backend...")
            self._setBusy(True)

    def _startRun(self):
        if self.ui.modelComboBox.count == 0:
            self.refreshModels()
        parameters = self._parameterNode or self.logic.getParameterNode()
        self._run = self.logic.start(parameters.inputVolume, parameters.model, parameters.outputPoints)
        self.ui.statusLabel.text = _("Submitted.")
        self._setBusy(True)

    def cancel(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to cancel."), waitCursor=True):
            if self._run is not None:
                self._run.cancel()
                self.ui.statusLabel.text = _("Cancelling...")
                self.ui.applyButton.enabled = False
            elif self._backend.starting:
                self._backend.drop_follow_up()  # let the server finish starting, but run nothing
                self.ui.statusLabel.text = _("Cancelled; the backend keeps starting in the background.")

    def onPoll(self):
        with slicer.util.tryWithErrorDisplay(_("Landmark detection failed."), waitCursor=False):
            try:
                if self._backend.starting:
                    self._pollStarter()
                elif self._run is not None:
                    self._pollRun()
            except Exception:
                self._stopWork()
                raise
        if self._run is None and not self._backend.starting:
            self._setBusy(False)

    def _pollStarter(self):
        if not self._backend.finished():  # raises what stopped the start
            return
        then = self._backend.take_follow_up()
        self.refreshModels()
        if then is not None and then != self.refreshModels:  # the models were just listed
            then()

    def _pollRun(self):
        from NNMambaLandmarksLib.landmark_run import describe_status

        status = self._run.poll()
        self.ui.progressBar.value = int(round(100 * status.progress))
        self.ui.statusLabel.text = describe_status(status)
        if not status.done:
            return
        run, self._run = self._run, None
        if status.state == "cancelled":
            self.ui.statusLabel.text = _("Cancelled.")
            return
        nodes = run.finish()
        (self._parameterNode or self.logic.getParameterNode()).outputPoints = nodes.points  # also when exited
        self._showPoints(nodes.points)
        self.ui.statusLabel.text = _("Found {count} landmarks.").format(count=nodes.points.GetNumberOfControlPoints())

    def _setBusy(self, busy):
        self.ui.progressBar.setVisible(busy)
        if busy:
            self.ui.progressBar.value = 0
            self._timer.start()
        else:
            self._timer.stop()
        self.ui.inputVolumeSelector.enabled = not busy
        self.ui.modelComboBox.enabled = not busy
        self.ui.refreshModelsButton.enabled = not busy
        self.updateGUIFromParameterNode()

    def _stopWork(self, keepStarting=True):
        """Cancel the running job (scene close, module cleanup). A backend that is starting keeps starting (and
        becomes the shared one) unless the module goes away, so no server is left without an owner."""
        run, self._run = self._run, None
        if self._backend is not None:
            self._backend.drop_follow_up()
        if self._backend is None or not self._backend.starting or not keepStarting:
            if self._backend is not None:
                self._backend.forget()
            if self._timer is not None:
                self._timer.stop()
        if run is not None:
            try:
                run.cancel()
            except Exception as error:  # the server may already be gone: nothing left to stop
                import logging

                logging.warning(f"NNMambaLandmarks: could not cancel job {run.job.id}: {error}")

    # -- output ------------------------------------------------------------------------------------------------
    def onOutputPointsChanged(self, node):
        self._showPoints(node)

    def _showPoints(self, pointsNode):
        """Link the lines to ``pointsNode`` (drags update them) and show its measurement table."""
        from NNMambaLandmarksLib import LandmarkLinks, find_landmark_nodes

        if self._links is not None and self._links.points_node is pointsNode:
            return
        if self._links is not None:
            self._links.detach()
            self._links = None
        nodes = find_landmark_nodes(pointsNode)
        if nodes is not None and nodes.lines:
            self._links = LandmarkLinks(pointsNode)
            self._links.attach()
        if hasattr(self, "ui"):
            self.ui.measurementTableView.setMRMLTableNode(nodes.table if nodes is not None else None)

    def onExportMarkups(self):
        from NNMambaLandmarksLib import export_markups_json

        self._export(".mrk.json", _("Markups files (*.mrk.json)"), export_markups_json)

    def onExportCsv(self):
        from NNMambaLandmarksLib import export_csv

        self._export(".csv", _("CSV files (*.csv)"), export_csv)

    def _export(self, suffix, fileFilter, write):
        points = self._parameterNode.outputPoints if self._parameterNode else None
        if points is None:
            return
        settings = qt.QSettings()
        folder = settings.value(EXPORT_FOLDER_SETTING, "") or qt.QDir.homePath()
        proposed = os.path.join(folder, points.GetName().replace(os.sep, "_") + suffix)
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export landmarks"), proposed, fileFilter)
        if not path:
            return
        if not path.lower().endswith(suffix):
            path += suffix
        with slicer.util.tryWithErrorDisplay(_("Failed to export the landmarks."), waitCursor=True):
            write(points, path)
            settings.setValue(EXPORT_FOLDER_SETTING, os.path.dirname(path))
            slicer.util.showStatusMessage(_("Saved {path}").format(path=path), 3000)


class NNMambaLandmarksLogic(ScriptedLoadableModuleLogic):
    """Landmark detection without the GUI: ``start`` for polling, ``process`` to wait for the nodes."""

    def getParameterNode(self):
        return NNMambaLandmarksParameterNode(super().getParameterNode())

    def models(self, backend=None):
        """[(model id, label)] of the backend's landmark models."""
        from NNMambaLandmarksLib.landmark_run import landmark_models
        from NNMambaSlicerLib.backend import require_shared_backend

        return landmark_models(backend or require_shared_backend())

    def start(self, inputVolume, model, pointsNode=None, backend=None, **options):
        """Submit the job now and return a LandmarkRun to poll (``run.poll()``, then ``run.finish()``)."""
        from NNMambaLandmarksLib.landmark_run import LandmarkRun
        from NNMambaSlicerLib.backend import require_shared_backend

        return LandmarkRun(backend or require_shared_backend(), inputVolume, model, pointsNode, **options)

    def process(self, inputVolume, model, pointsNode=None, backend=None, timeout=600.0, **options):
        """Run and wait (the application keeps processing events); returns the LandmarkNodes."""
        run = self.start(inputVolume, model, pointsNode, backend, **options)
        return run.wait(timeout=timeout, process_events=slicer.app.processEvents)


class NNMambaLandmarksTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_demo_fetal_landmarks()

    def test_demo_fetal_landmarks(self):
        import SampleData
        from NNMambaLandmarksLib import LandmarkLinks
        from NNMambaSlicerLib.backend import Backend, shared_backend

        import NNMambaSlicer

        NNMambaSlicer.registerSampleData()
        volume = SampleData.downloadSample("NNMambaDemoFetalBrain")
        self.assertIsNotNone(volume)
        backend = shared_backend()
        ownBackend = backend is None
        if ownBackend:
            backend = Backend.local(device="cpu")
        try:
            self.delayDisplay("Running demo-fetal-landmarks on CPU")
            nodes = NNMambaLandmarksLogic().process(volume, "demo-fetal-landmarks", backend=backend, device="cpu")
        finally:
            if ownBackend:
                backend.stop()
        points = nodes.points
        labels = [points.GetNthControlPointLabel(i) for i in range(points.GetNumberOfControlPoints())]
        self.assertEqual(labels, ["TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2"])
        tcd = nodes.line_length("TCD")
        self.assertTrue(10.0 < tcd < 30.0, f"TCD is {tcd:.1f} mm")

        links = LandmarkLinks(points)
        links.attach()
        try:
            position = [0.0, 0.0, 0.0]
            points.GetNthControlPointPosition(0, position)
            points.SetNthControlPointPosition(0, position[0], position[1], position[2] + 5.0)  # TCD1 5 mm up
            self.assertNotAlmostEqual(nodes.line_length("TCD"), tcd, places=3)
        finally:
            links.detach()
        self.delayDisplay("Test passed")
