"""NNMamba Segmentation: segment a volume with an nnMamba model into named, coloured, terminology-coded segments,
and refine with clicks (a click adds the structure under it to its segment; Ctrl/Shift-click, Cmd/Shift-click
on macOS, removes it).

Thin Slicer classes only; the work is in NNMambaSegmentationLib (tested outside Slicer) and the backend in
NNMambaSlicerLib.backend. Heavy imports happen inside functions so that listing the module stays cheap.
"""

import time

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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

CLICK_POLL_MS = 30
MAX_CHANNELS = 4
MODEL_SETTING = "NNMamba/Segmentation/Model"       # the last model used on this machine


class NNMambaSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("NNMamba Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["NNMamba team"]
        self.parent.helpText = _(
            "Segments a volume with an nnMamba model: one named, coloured and terminology-coded segment per "
            "structure, on the input's grid. Apply runs in the background (progress, time left, Cancel). Re-running "
            "never replaces a segment you edited without asking. Click to segment: each click adds the structure "
            "under the point to its segment; Ctrl- or Shift-click (Cmd- or Shift-click on macOS) removes it; Undo "
            "restores the last click. The model runs in the NNMamba backend (see the NNMamba module)."
        )
        self.parent.acknowledgementText = _(
            "nnMamba by Haifan Gong et al. (lhaof/nnMamba). Built on the 3D Slicer scripted module template."
        )


@parameterNodeWrapper
class NNMambaSegmentationParameterNode:
    """inputVolume..inputVolume4: the model's input channels (as many as it has). outputSegmentation: where the
    segments go (None: a new one on Apply). model: the model id (the combo box is filled from the backend, so it is
    synced by hand). clickPoints: our point list for clicks."""

    inputVolume: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    inputVolume4: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    clickPoints: vtkMRMLMarkupsFiducialNode
    model: str = ""
    show3D: bool = False
    negativeClicks: bool = False


class NNMambaSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._binding = None       # ParameterBinding: the parameter node <-> the .ui
        self.panel = None           # JobPanel: Apply/Cancel and model lists (NNMambaSlicerLib)
        self.clickTool = None       # ClickTool (NNMambaSegmentationLib)
        self._modelInputs = {}      # model id -> input channel names
        self._clicks = None         # ClickSession and the key it was made for
        self._clicksKey = None
        self._timers = []

    def setup(self):
        from NNMambaSegmentationLib.click_tool import NEGATIVE_CLICK
        from NNMambaSlicerLib.job_panel import JobPanel, attach_widgets
        from NNMambaSlicerLib.parameter_binding import ParameterBinding

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NNMambaSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._binding = ParameterBinding(self.ui, self.updateGUIFromParameterNode)
        self.logic = NNMambaSegmentationLogic()
        self.panel = JobPanel()
        lock = (self.ui.inputVolumeSelector, self.ui.inputVolume2Selector, self.ui.inputVolume3Selector,
                self.ui.inputVolume4Selector, self.ui.modelComboBox, self.ui.refreshModelsButton,
                self.ui.outputSegmentationSelector)
        self._timers.append(attach_widgets(self.panel, self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel,
                                           self.ui.etaLabel, lock, _("Apply"), self.updateGUIFromParameterNode))
        self._clickTimer = qt.QTimer()
        self._clickTimer.setInterval(CLICK_POLL_MS)
        self._clickTimer.connect("timeout()", self.onClickPoll)
        self._timers.append(self._clickTimer)
        self.ui.clickHintLabel.text = _(
            "Turn on the click tool, then click a structure in any slice view: it is added to its segment. "
            "{negative} (or tick Negative) removes the structure under the point from its segment.").format(
            negative=NEGATIVE_CLICK)
        self._showChannels(["image"])

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.show3DCheckBox.connect("clicked(bool)", self.onShow3DClicked)
        self.ui.clickToolButton.connect("toggled(bool)", self.onClickToolToggled)
        self.ui.undoClickButton.connect("clicked(bool)", self.onUndoClick)
        self.initializeParameterNode()
        self._listModelsIfConnected()

    def cleanup(self):
        if self.clickTool is not None:
            self.clickTool.stop()
        if self.panel is not None:
            self.panel.stop()
        for timer in self._timers:
            timer.stop()
        self.removeObservers()

    def onReload(self):
        """Reload the Lib code too (the shared backend in NNMambaSlicerLib stays)."""
        import importlib

        for name in ("click_points", "labelmaps", "segments", "clicks", "click_tool", "segmentation_run"):
            importlib.reload(importlib.import_module(f"NNMambaSegmentationLib.{name}"))
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self):
        self.initializeParameterNode()
        if self.ui.modelComboBox.count == 0:
            self._listModelsIfConnected()

    def exit(self):
        self._stopClickTool()
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self._stopClickTool()
        self.panel.stop()
        self._forgetClicks()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ---------------------------------------------------------------------------------------
    def initializeParameterNode(self):
        from NNMambaSlicerLib.volumes import first_scalar_volume

        self.setParameterNode(self.logic.getParameterNode())
        parameters = self._parameterNode
        if not parameters.inputVolume:
            parameters.inputVolume = first_scalar_volume(slicer.mrmlScene)
        if not parameters.model:
            parameters.model = qt.QSettings().value(MODEL_SETTING, "") or ""

    def setParameterNode(self, inputParameterNode):
        self._parameterNode = inputParameterNode
        self._binding.set(inputParameterNode)

    def updateGUIFromParameterNode(self):
        parameters = self._parameterNode
        if parameters and parameters.model:
            index = self.ui.modelComboBox.findData(parameters.model)
            if index >= 0 and index != self.ui.modelComboBox.currentIndex:
                self.ui.modelComboBox.currentIndex = index
        busy = self.panel is not None and self.panel.busy
        # Apply works before the model list is filled: it starts the backend, then lists the models.
        ready = bool(parameters and self._inputs())
        self.ui.applyButton.enabled = busy or ready
        self.ui.applyButton.toolTip = _("Stop the running job") if busy else _(
            "Segment the input in the background (starts the NNMamba backend if none runs)")
        toolOn = self.clickTool is not None and self.clickTool.active
        self.ui.clickToolButton.enabled = toolOn or bool(ready and parameters.model)
        self.ui.undoClickButton.enabled = bool(self._clicks is not None and self._clicks.can_undo)

    def _inputs(self):
        """The selected input volumes, one per model channel, or [] while one is missing."""
        parameters = self._parameterNode
        if not parameters:
            return []
        count = len(self._modelInputs.get(parameters.model, ["image"]))
        nodes = [parameters.inputVolume, parameters.inputVolume2, parameters.inputVolume3,
                 parameters.inputVolume4][:count]
        return nodes if all(nodes) else []

    # -- models ----------------------------------------------------------------------------------------------
    def _listModelsIfConnected(self):
        from NNMambaSlicerLib.backend import shared_backend

        backend = shared_backend()
        if backend is None:
            self.ui.statusLabel.text = _("Press Refresh or Apply to start the NNMamba backend.")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to list the segmentation models."), waitCursor=True):
            self._fillModels(self.logic.models(backend))

    def onRefreshModels(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to list the segmentation models."), waitCursor=True):
            self.panel.start(lambda backend: (lambda: self.logic.models(backend)), self._fillModels)

    def _fillModels(self, models):
        self._modelInputs = {modelId: inputs for modelId, _label, inputs in models}
        wanted = self._parameterNode.model if self._parameterNode else ""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for modelId, label, _inputs in models:
            combo.addItem(label, modelId)
        combo.currentIndex = max(combo.findData(wanted), 0) if models else -1
        combo.blockSignals(wasBlocked)
        self.onModelChanged(combo.currentIndex)
        self.ui.statusLabel.text = "" if models else _("The backend has no segmentation model; add one in the "
                                                        "NNMamba module (Models).")

    def onModelChanged(self, index):
        modelId = self.ui.modelComboBox.itemData(index) if index >= 0 else None
        self._showChannels(self._modelInputs.get(modelId, ["image"]))
        if self._parameterNode:
            self._parameterNode.model = modelId or ""
            self.updateGUIFromParameterNode()

    def _showChannels(self, channelNames):
        """One input selector per model channel, labelled with the channel's name."""
        for number in range(1, MAX_CHANNELS + 1):
            suffix = "" if number == 1 else str(number)
            label = getattr(self.ui, f"inputVolume{suffix}Label")
            selector = getattr(self.ui, f"inputVolume{suffix}Selector")
            shown = number <= max(len(channelNames), 1)
            label.setVisible(shown)
            selector.setVisible(shown)
            if shown and len(channelNames) > 1:
                label.text = f"{channelNames[number - 1]}:"
            elif number == 1:
                label.text = _("Input volume:")

    # -- Apply / Cancel ----------------------------------------------------------------------------------------
    def onApplyButton(self):
        if self.panel.busy:
            self.panel.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self.panel.start(self._prepareRun, self._writeResult)

    def _prepareRun(self, backend):
        """GUI thread, once a backend is there: list the models if not done yet, then read the inputs."""
        if self.ui.modelComboBox.count == 0:
            self._fillModels(self.logic.models(backend))
        inputs = self._inputs()
        if not inputs:
            raise ValueError(_("Select an input volume for each of the model's channels."))
        qt.QSettings().setValue(MODEL_SETTING, self._parameterNode.model)
        return self.logic.segmentationRun(inputs, self._parameterNode.model, backend)

    def _writeResult(self, run):
        parameters = self._parameterNode or self.logic.getParameterNode()
        node = parameters.outputSegmentation
        overwrite = False
        edited = run.edited(node) if node is not None else []
        if edited:
            choice = self._askAboutEdits(edited)
            if choice is None:
                self.ui.statusLabel.text = _("Result discarded; your segments are unchanged.")
                return
            overwrite = choice == "overwrite"
        node, report = run.finish(node, overwrite_edited=overwrite, show_3d=parameters.show3D)
        parameters.outputSegmentation = node
        self._forgetClicks()   # the undo steps of earlier clicks no longer describe this segmentation
        self.ui.statusLabel.text = _("{count} segments written ({seconds:.0f} s).").format(
            count=len(report.written), seconds=time.monotonic() - run.started)
        if report.kept:
            self.ui.statusLabel.text += " " + _("Kept your edits of: {names}.").format(names=", ".join(report.kept))

    def _askAboutEdits(self, names):
        """'overwrite', 'keep' or None (cancel)."""
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setIcon(qt.QMessageBox.Question)
        box.setWindowTitle(_("Edited segments"))
        box.setText(_("You changed these segments since the model wrote them: {names}.").format(
            names=", ".join(names)))
        box.setInformativeText(_("Replace them with the new result, or keep your edits? The other segments are "
                                 "updated either way."))
        overwrite = box.addButton(_("Overwrite"), qt.QMessageBox.DestructiveRole)
        keep = box.addButton(_("Keep my edits"), qt.QMessageBox.AcceptRole)
        box.addButton(qt.QMessageBox.Cancel)
        box.setDefaultButton(keep)
        box.exec_()
        clicked = box.clickedButton()
        return "overwrite" if clicked == overwrite else "keep" if clicked == keep else None

    def onShow3DClicked(self, checked):
        node = self._parameterNode.outputSegmentation if self._parameterNode else None
        if node is None:
            return
        if checked:
            node.CreateClosedSurfaceRepresentation()
        else:
            node.RemoveClosedSurfaceRepresentation()

    # -- click to segment (the tool itself is NNMambaSegmentationLib.click_tool) ----------------------------------
    def _makeClickTool(self):
        from NNMambaSegmentationLib.click_tool import ClickTool, SliceView

        applicationLogic = slicer.app.applicationLogic()
        layoutManager = slicer.app.layoutManager()

        def views():
            if layoutManager is None:
                return []
            return [SliceView.of_qt_view(layoutManager.sliceWidget(name).sliceView())
                    for name in layoutManager.sliceViewNames()]

        tool = ClickTool(self._clickSession, self._showClickStatus, applicationLogic.GetInteractionNode(),
                         applicationLogic.GetSelectionNode(), slicer.modules.markups.logic(),
                         on_changed=self._onClickToolChanged, negative=lambda: self.ui.negativeClicksCheckBox.checked,
                         views=views)
        if layoutManager is not None:
            layoutManager.connect("layoutChanged(int)", tool.observe_views)   # new views after a layout change
        return tool

    def onClickToolToggled(self, on):
        if not on:
            self._stopClickTool()
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to start the click tool."), waitCursor=True):
                if self.clickTool is None:
                    self.clickTool = self._makeClickTool()
                self._parameterNode.clickPoints = self.clickTool.start(self._parameterNode.clickPoints)
        finally:
            self._onClickToolChanged()

    def _stopClickTool(self):
        if self.clickTool is not None:
            self.clickTool.stop()

    def _onClickToolChanged(self):
        if not hasattr(self, "ui"):
            return
        on = self.clickTool is not None and self.clickTool.active
        wasBlocked = self.ui.clickToolButton.blockSignals(True)
        self.ui.clickToolButton.checked = on
        self.ui.clickToolButton.blockSignals(wasBlocked)
        if self.clickTool is not None and self.clickTool.pending is not None:
            self._clickTimer.start()
        self.updateGUIFromParameterNode()

    def _showClickStatus(self, text):
        self.ui.clickStatusLabel.text = text
        if self.clickTool is not None and self.clickTool.pending is not None:
            self._clickTimer.start()

    def _clickSession(self):
        """The ClickSession for the current inputs, model and output (a new one, with fresh undo, when they
        change)."""
        from NNMambaSegmentationLib.segmentation_run import new_segmentation_node
        from NNMambaSlicerLib.backend import require_shared_backend

        parameters = self._parameterNode
        inputs = self._inputs()
        if not inputs or not parameters.model:
            raise ValueError(_("Select the input volume(s) and a model before clicking."))
        if parameters.outputSegmentation is None:
            parameters.outputSegmentation = new_segmentation_node(inputs[0])
        backend = require_shared_backend()
        key = (tuple(node.GetID() for node in inputs), parameters.model, parameters.outputSegmentation.GetID(),
               id(backend))
        if self._clicks is None or self._clicksKey != key:
            self._forgetClicks()
            self._clicks = self.logic.clickSession(inputs, parameters.model, parameters.outputSegmentation, backend)
            self._clicksKey = key
        return self._clicks

    def _forgetClicks(self):
        if self.clickTool is not None:
            self.clickTool.forget()
        self._clicks, self._clicksKey = None, None

    def onClickPoll(self):
        if self.clickTool is None or self.clickTool.pending is None:
            self._clickTimer.stop()
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("The click could not be answered."), waitCursor=False):
                self.clickTool.poll()
        except Exception:   # shown to the user already
            pass
        if self.clickTool.pending is None:
            self._clickTimer.stop()

    def onUndoClick(self):
        if self._clicks is None or self.clickTool is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to undo the click."), waitCursor=True):
            self.clickTool.undo(self._clicks)


class NNMambaSegmentationLogic(ScriptedLoadableModuleLogic):
    """Segmentation without the GUI: ``start`` for polling, ``process`` to wait for the segments, ``clickSession``
    for click-to-segment."""

    def getParameterNode(self):
        return NNMambaSegmentationParameterNode(super().getParameterNode())

    def models(self, backend=None):
        """[(model id, label, input channel names)] of the backend's segmentation models."""
        from NNMambaSegmentationLib.segmentation_run import segmentation_models
        from NNMambaSlicerLib.backend import require_shared_backend

        return segmentation_models(backend or require_shared_backend())

    def segmentationRun(self, inputVolumes, model, backend=None, **options):
        """A SegmentationRun: reads the inputs now; ``run_to_end`` (any thread) or ``wait`` does the network part,
        ``finish(node)`` writes the segments."""
        from NNMambaSegmentationLib.segmentation_run import SegmentationRun
        from NNMambaSlicerLib.backend import require_shared_backend

        return SegmentationRun(backend or require_shared_backend(), inputVolumes, model, **options)

    def start(self, inputVolumes, model, backend=None, **options):
        """Submit the job now and return the SegmentationRun to poll (``run.poll()``, then ``run.finish(node)``)."""
        run = self.segmentationRun(inputVolumes, model, backend, **options)
        run.submit()
        return run

    def process(self, inputVolumes, model, segmentationNode=None, backend=None, overwriteEdited=False,
                show3D=False, timeout=600.0, **options):
        """Run and wait (the application keeps processing events); returns (segmentation node, WriteReport)."""
        run = self.start(inputVolumes, model, backend, **options)
        run.wait(timeout=timeout, process_events=slicer.app.processEvents)
        return run.finish(segmentationNode, overwrite_edited=overwriteEdited, show_3d=show3D)

    def clickSession(self, inputVolumes, model, segmentationNode, backend=None):
        """A ClickSession: ``click(rasPoint, positive=True)``, ``undo()``."""
        from NNMambaSegmentationLib.clicks import ClickSession
        from NNMambaSlicerLib.backend import require_shared_backend

        return ClickSession(backend or require_shared_backend(), inputVolumes, model, segmentationNode)


class NNMambaSegmentationTest(ScriptedLoadableModuleTest):
    """The demo CT model on the demo volume, then one click, through a private local backend (the user's shared
    backend is left alone); dependencies are installed in testing mode, else the test skips with one line."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_demo_abdomen_and_click()

    def test_demo_abdomen_and_click(self):
        import numpy as np
        import SampleData
        from NNMambaSegmentationLib.segments import find_segment
        from NNMambaSlicerLib.self_test import private_backend

        import NNMambaSlicer

        NNMambaSlicer.registerSampleData()
        volume = SampleData.downloadSample("NNMambaDemoAbdomenCT")
        self.assertIsNotNone(volume)
        with private_backend(self) as backend:
            self.delayDisplay("Running demo-abdomen-ct on CPU")
            logic = NNMambaSegmentationLogic()
            node, report = logic.process([volume], "demo-abdomen-ct", backend=backend)
            for name in ("liver", "spleen"):
                segmentId = find_segment(node, name)
                self.assertIsNotNone(segmentId, f"no {name} segment")
                self.assertGreater(slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentId, volume).sum(), 0)

            self.delayDisplay("One click inside the liver")
            liverId = find_segment(node, "liver")
            liver = np.argwhere(slicer.util.arrayFromSegmentBinaryLabelmap(node, liverId, volume))
            k, j, i = liver[np.argmin(np.abs(liver - liver.mean(axis=0)).sum(axis=1))]   # well inside the liver
            ijkToRas = vtk.vtkMatrix4x4()
            volume.GetIJKToRASMatrix(ijkToRas)
            ras = ijkToRas.MultiplyPoint([float(i), float(j), float(k), 1.0])[:3]
            node.GetSegmentation().ClearSegment(liverId)
            outcome = logic.clickSession([volume], "demo-abdomen-ct", node, backend).click(ras)
            self.assertEqual(outcome.structure, "liver")
            self.assertGreater(outcome.changed, 0)
            self.assertGreater(slicer.util.arrayFromSegmentBinaryLabelmap(node, liverId, volume).sum(), 0)
        self.delayDisplay("Test passed")
