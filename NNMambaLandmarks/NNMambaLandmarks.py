"""NNMamba Landmarks: find the six fetal-brain landmarks (TCD, HDV, ADV ends) with an nnMamba model, show them as
one labelled point list with three measurement lines that follow the points, and export them.

Thin Slicer classes only; the work is in NNMambaLandmarksLib (tested outside Slicer) and the backend in
NNMambaSlicerLib.backend. Heavy imports happen inside functions so that listing the module stays cheap.
"""

import os

import qt
import slicer
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
        self._binding = None       # ParameterBinding: the parameter node <-> the .ui
        self.panel = None       # JobPanel: Apply/Cancel and model lists (NNMambaSlicerLib)
        self._links = None      # LandmarkLinks of the shown point list
        self._timer = None

    def setup(self):
        from NNMambaSlicerLib.job_panel import JobPanel, attach_widgets
        from NNMambaSlicerLib.parameter_binding import ParameterBinding

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NNMambaLandmarks.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._binding = ParameterBinding(self.ui, self.updateGUIFromParameterNode)
        self.logic = NNMambaLandmarksLogic()
        self.panel = JobPanel()
        self._timer = attach_widgets(self.panel, self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel,
                                     lock=(self.ui.inputVolumeSelector, self.ui.modelComboBox,
                                           self.ui.refreshModelsButton), idle_text=_("Apply"),
                                     on_idle=self.updateGUIFromParameterNode)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.outputPointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputPointsChanged)
        self.ui.exportMarkupsButton.connect("clicked(bool)", self.onExportMarkups)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.initializeParameterNode()
        self._listModelsIfConnected()

    def cleanup(self):
        self.removeObservers()
        if self.panel is not None:
            self.panel.stop()
        if self._timer is not None:
            self._timer.stop()
        self._showPoints(None)

    def onReload(self):
        """Reload the Lib code too (the shared backend in NNMambaSlicerLib stays)."""
        import importlib

        for name in ("landmark_result", "landmark_nodes", "landmark_links", "landmark_export", "landmark_run"):
            importlib.reload(importlib.import_module(f"NNMambaLandmarksLib.{name}"))
        importlib.reload(importlib.import_module("NNMambaLandmarksLib"))
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self):
        self.initializeParameterNode()
        if self.ui.modelComboBox.count == 0:
            self._listModelsIfConnected()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.panel.stop()
        self._showPoints(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ---------------------------------------------------------------------------------------
    def initializeParameterNode(self):
        from NNMambaSlicerLib.volumes import first_scalar_volume

        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = first_scalar_volume(slicer.mrmlScene)

    def setParameterNode(self, inputParameterNode):
        self._parameterNode = inputParameterNode
        self._binding.set(inputParameterNode)
        if inputParameterNode is not None:
            self._showPoints(inputParameterNode.outputPoints)

    def updateGUIFromParameterNode(self):
        busy = self.panel is not None and self.panel.busy
        parameters = self._parameterNode
        if parameters and parameters.model:
            index = self.ui.modelComboBox.findData(parameters.model)
            if index >= 0 and index != self.ui.modelComboBox.currentIndex:
                self.ui.modelComboBox.currentIndex = index
        # Apply works before the model list is filled: it starts the backend, then lists the models.
        canApply = bool(parameters and parameters.inputVolume)
        self.ui.applyButton.enabled = busy or canApply
        self.ui.applyButton.toolTip = _("Stop the running job") if busy else _(
            "Find the landmarks in the background (starts the NNMamba backend if none runs)")
        hasPoints = bool(parameters and parameters.outputPoints)
        self.ui.exportMarkupsButton.enabled = hasPoints
        self.ui.exportCsvButton.enabled = hasPoints

    # -- models ----------------------------------------------------------------------------------------------
    def _listModelsIfConnected(self):
        from NNMambaSlicerLib.backend import shared_backend

        backend = shared_backend()
        if backend is None:
            self.ui.statusLabel.text = _("Press Refresh or Apply to start the NNMamba backend.")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to list the landmark models."), waitCursor=True):
            self._fillModels(self.logic.models(backend))

    def onRefreshModels(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to list the landmark models."), waitCursor=True):
            self.panel.start(lambda backend: (lambda: self.logic.models(backend)), self._fillModels)

    def _fillModels(self, models):
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
        if self.panel.busy:
            self.panel.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start landmark detection."), waitCursor=True):
            if not self._mayReplacePoints():
                return
            self.panel.start(self._prepareRun, self._showResult)

    def _mayReplacePoints(self):
        """A chosen point list that is not a landmark result (the user's own points, the click list) is replaced
        only after a yes."""
        from NNMambaLandmarksLib.landmark_nodes import replaces_other_points

        points = self._parameterNode.outputPoints if self._parameterNode else None
        count = replaces_other_points(points)
        return count == 0 or slicer.util.confirmYesNoDisplay(
            _("'{name}' holds {count} points that are not NNMamba landmarks. Replace them with the six landmarks? "
              "(Choose 'Create new point list' in Output to keep them.)").format(name=points.GetName(), count=count))

    def _prepareRun(self, backend):
        """GUI thread, once a backend is there: list the models if not done yet, then read the input."""
        if self.ui.modelComboBox.count == 0:
            self._fillModels(self.logic.models(backend))
        parameters = self._parameterNode or self.logic.getParameterNode()
        return self.logic.landmarkRun(parameters.inputVolume, parameters.model, parameters.outputPoints, backend)

    def _showResult(self, run):
        nodes = run.finish()
        (self._parameterNode or self.logic.getParameterNode()).outputPoints = nodes.points  # also when exited
        self._showPoints(nodes.points)
        self.ui.statusLabel.text = _("Found {count} landmarks.").format(count=nodes.points.GetNumberOfControlPoints())

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

    def landmarkRun(self, inputVolume, model, pointsNode=None, backend=None, **options):
        """A LandmarkRun: reads the input now; ``run_to_end`` (any thread) or ``wait`` does the network part,
        ``finish()`` makes the nodes."""
        from NNMambaLandmarksLib.landmark_run import LandmarkRun
        from NNMambaSlicerLib.backend import require_shared_backend

        return LandmarkRun(backend or require_shared_backend(), inputVolume, model, pointsNode, **options)

    def start(self, inputVolume, model, pointsNode=None, backend=None, **options):
        """Submit the job now and return the LandmarkRun to poll (``run.poll()``, then ``run.finish()``)."""
        run = self.landmarkRun(inputVolume, model, pointsNode, backend, **options)
        run.submit()
        return run

    def process(self, inputVolume, model, pointsNode=None, backend=None, timeout=600.0, **options):
        """Run and wait (the application keeps processing events); returns the LandmarkNodes."""
        run = self.start(inputVolume, model, pointsNode, backend, **options)
        return run.wait(timeout=timeout, process_events=slicer.app.processEvents)


class NNMambaLandmarksTest(ScriptedLoadableModuleTest):
    """The demo landmark model on the demo fetal volume through a private local backend (the user's shared backend
    is left alone); dependencies are installed in testing mode, else the test skips with one line."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_demo_fetal_landmarks()

    def test_demo_fetal_landmarks(self):
        import SampleData
        from NNMambaLandmarksLib import LandmarkLinks
        from NNMambaSlicerLib.self_test import private_backend

        import NNMambaSlicer

        NNMambaSlicer.registerSampleData()
        volume = SampleData.downloadSample("NNMambaDemoFetalBrain")
        self.assertIsNotNone(volume)
        with private_backend(self) as backend:
            self.delayDisplay("Running demo-fetal-landmarks on CPU")
            nodes = NNMambaLandmarksLogic().process(volume, "demo-fetal-landmarks", backend=backend)
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
