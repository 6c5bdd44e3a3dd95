"""NNMamba Segmentation: segment a volume with an nnMamba model into named, coloured, terminology-coded segments,
and refine with clicks (a click adds the structure under it to its segment; Ctrl/Shift-click removes it).

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

JOB_POLL_MS = 250
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
            "under the point to its segment; Ctrl- or Shift-click removes it; Undo restores the last click. The "
            "model runs in the NNMamba backend (see the NNMamba module)."
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
        self._parameterNodeGuiTag = None
        self._run = None            # SegmentationRun being polled
        self._backend = None        # BackendRequest: reaching the shared backend (setup)
        self._modelInputs = {}      # model id -> input channel names
        self._clicks = None         # ClickSession and the key it was made for
        self._clicksKey = None
        self._pendingClick = None   # (PendingClick, point ID)
        self._clickPointIds = []    # points of the clicks that can be undone, oldest first
        self._sliceViews = {}       # interactor -> slice view, observed for Ctrl/Shift clicks
        self._modifierPress = None  # (interactor, position) of a Ctrl/Shift left-button press
        self._nextPointNegative = False
        self._jobTimer = None
        self._clickTimer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NNMambaSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = NNMambaSegmentationLogic()
        from NNMambaSlicerLib.settings import BackendRequest

        self._backend = BackendRequest()
        self.ui.progressBar.hide()
        self._showChannels(["image"])
        self._jobTimer = self._timer(JOB_POLL_MS, self.onJobPoll)
        self._clickTimer = self._timer(CLICK_POLL_MS, self.onClickPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.show3DCheckBox.connect("clicked(bool)", self.onShow3DClicked)
        self.ui.clickToolButton.connect("toggled(bool)", self.onClickToolToggled)
        self.ui.undoClickButton.connect("clicked(bool)", self.onUndoClick)
        self.initializeParameterNode()
        self.refreshModels()

    @staticmethod
    def _timer(interval, slot):
        timer = qt.QTimer()
        timer.setInterval(interval)
        timer.connect("timeout()", slot)
        return timer

    def cleanup(self):
        self._stopClickTool()
        self._stopJob()
        for timer in (self._jobTimer, self._clickTimer):
            if timer is not None:
                timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        if self.ui.modelComboBox.count == 0:
            self.refreshModels()

    def exit(self):
        self._stopClickTool()
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self._stopClickTool()
        self._stopJob()
        self._forgetClicks()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ---------------------------------------------------------------------------------------
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        parameters = self._parameterNode
        if not parameters.inputVolume:
            parameters.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not parameters.model:
            parameters.model = qt.QSettings().value(MODEL_SETTING, "") or ""

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        parameters = self._parameterNode
        if parameters and parameters.model:
            index = self.ui.modelComboBox.findData(parameters.model)
            if index >= 0 and index != self.ui.modelComboBox.currentIndex:
                self.ui.modelComboBox.currentIndex = index
        busy = self._run is not None or self._backend.starting
        ready = bool(parameters and self._inputs() and parameters.model)
        self.ui.applyButton.enabled = busy or ready
        self.ui.applyButton.text = _("Cancel") if busy else _("Apply")
        self.ui.applyButton.toolTip = _("Stop the running job") if busy else _("Segment the input in the background")
        self.ui.clickToolButton.enabled = ready or self.ui.clickToolButton.checked
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
    def onRefreshModels(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to list the segmentation models."), waitCursor=True):
            self._withBackend(self.refreshModels)

    def refreshModels(self):
        """Fill the model combo box from the running backend (does nothing while none runs)."""
        from NNMambaSlicerLib.backend import shared_backend

        backend = shared_backend()
        if backend is None:
            self.ui.statusLabel.text = _("Press Refresh or Apply to start the NNMamba backend.")
            return
        models = self.logic.models(backend)
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

    # -- backend ---------------------------------------------------------------------------------------------
    def _withBackend(self, then):
        """Call ``then`` now if a backend is there (or the NNMamba module's settings name a remote one), else once
        the local one has started in the background."""
        if not self._backend.call(then) and self._backend.starting:
            self.ui.statusLabel.text = _("Starting the local NNMamba backend...")
            self._setBusy(True)

    def _pollStarter(self):
        if not self._backend.finished():   # raises what stopped the start
            return
        then = self._backend.take_follow_up()
        self.refreshModels()
        if then is not None and then != self.refreshModels:
            then()

    # -- Apply / Cancel ----------------------------------------------------------------------------------------
    def onApplyButton(self):
        if self._run is not None or self._backend.starting:
            self._cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self._withBackend(self._startRun)

    def _startRun(self):
        if self.ui.modelComboBox.count == 0:
            self.refreshModels()
        inputs = self._inputs()
        if not inputs:
            raise ValueError(_("Select an input volume for each of the model's channels."))
        self._run = self.logic.start(inputs, self._parameterNode.model)
        qt.QSettings().setValue(MODEL_SETTING, self._parameterNode.model)
        self.ui.statusLabel.text = _("Submitted.")
        self._setBusy(True)

    def _cancel(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to cancel."), waitCursor=True):
            if self._run is not None:
                self._run.cancel()
                self.ui.statusLabel.text = _("Cancelling...")
                self.ui.applyButton.enabled = False
            elif self._backend.starting:
                self._backend.drop_follow_up()   # let the server finish starting, but run nothing
                self.ui.statusLabel.text = _("Cancelled; the backend keeps starting in the background.")

    def onJobPoll(self):
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=False):
            try:
                if self._backend.starting:
                    self._pollStarter()
                elif self._run is not None:
                    self._pollRun()
            except Exception:
                self._stopJob()
                raise
            finally:
                if self._run is None and not self._backend.starting:
                    self._setBusy(False)

    def _pollRun(self):
        from NNMambaSegmentationLib.segmentation_run import describe_status
        from NNMambaSlicerLib.backend import describe_eta

        status = self._run.poll()
        self.ui.progressBar.value = int(round(100 * status.progress))
        self.ui.statusLabel.text = describe_status(status)
        self.ui.etaLabel.text = describe_eta(status)
        if not status.done:
            return
        run, self._run = self._run, None
        if status.state == "cancelled":
            self.ui.statusLabel.text = _("Cancelled.")
            return
        self._writeResult(run)

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

    def _setBusy(self, busy):
        self.ui.progressBar.setVisible(busy)
        if busy:
            self.ui.progressBar.value = 0
            self._jobTimer.start()
        else:
            self._jobTimer.stop()
            self.ui.etaLabel.text = ""
        for widget in (self.ui.inputVolumeSelector, self.ui.inputVolume2Selector, self.ui.inputVolume3Selector,
                       self.ui.inputVolume4Selector, self.ui.modelComboBox, self.ui.refreshModelsButton,
                       self.ui.outputSegmentationSelector):
            widget.enabled = not busy
        self.updateGUIFromParameterNode()

    def _stopJob(self):
        """Cancel the running job (scene close, module cleanup); a starting backend keeps starting."""
        run, self._run = self._run, None
        if self._backend is not None:
            self._backend.drop_follow_up()
        if run is not None:
            try:
                run.cancel()
            except Exception as error:   # the server may already be gone: nothing left to stop
                import logging

                logging.warning(f"NNMambaSegmentation: could not cancel job {run.job.id}: {error}")

    # -- click to segment --------------------------------------------------------------------------------------
    def onClickToolToggled(self, on):
        if not on:
            self._stopClickTool()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the click tool."), waitCursor=True):
            try:
                self._withBackend(self._startClickTool)
            except Exception:
                self._setClickButton(False)
                raise

    def _startClickTool(self):
        try:
            self._clickSession()   # checks the inputs now
        except Exception:
            self._setClickButton(False)
            raise
        self._enterPlaceMode()

    def _enterPlaceMode(self):
        from NNMambaSegmentationLib.click_points import is_click_points, new_click_points

        parameters = self._parameterNode
        points = parameters.clickPoints
        if not is_click_points(points) or points.GetScene() is None:
            points = new_click_points(slicer.mrmlScene)
            parameters.clickPoints = points
        self.addObserver(points, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onClickPlaced)
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        self.addObserver(interaction, interaction.InteractionModeChangedEvent, self.onInteractionModeChanged)
        self._observeSliceViews(True)
        markups = slicer.modules.markups.logic()
        markups.SetActiveList(points)
        markups.StartPlaceMode(True)
        self._setClickButton(True)
        self.ui.clickStatusLabel.text = _("Click a structure in a slice view (Ctrl/Shift-click: remove).")

    def _stopClickTool(self):
        self._observeSliceViews(False)
        points = self._parameterNode.clickPoints if self._parameterNode else None
        if points is not None:
            self.removeObserver(points, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onClickPlaced)
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        if interaction is not None:
            self.removeObserver(interaction, interaction.InteractionModeChangedEvent, self.onInteractionModeChanged)
            selection = slicer.app.applicationLogic().GetSelectionNode()
            ours = points is not None and selection.GetActivePlaceNodeID() == points.GetID()
            if ours and interaction.GetCurrentInteractionMode() == interaction.Place:
                interaction.SwitchToViewTransformMode()
        if hasattr(self, "ui"):
            self._setClickButton(False)

    def _observeSliceViews(self, on):
        """Markups place mode ignores Ctrl/Shift clicks (Shift-drag pans), so the slice views' interactors are
        watched for them: a Ctrl/Shift click without a drag adds a negative point."""
        for interactor in list(self._sliceViews):
            for event in (vtk.vtkCommand.LeftButtonPressEvent, vtk.vtkCommand.LeftButtonReleaseEvent):
                self.removeObserver(interactor, event, self.onSliceViewButton)
        self._sliceViews = {}
        layoutManager = slicer.app.layoutManager()
        if not on or layoutManager is None:
            return
        for name in layoutManager.sliceViewNames():
            view = layoutManager.sliceWidget(name).sliceView()
            interactor = view.interactorStyle().GetInteractor()
            self._sliceViews[interactor] = view
            for event in (vtk.vtkCommand.LeftButtonPressEvent, vtk.vtkCommand.LeftButtonReleaseEvent):
                self.addObserver(interactor, event, self.onSliceViewButton, priority=10.0)

    def onSliceViewButton(self, interactor, event):
        if not (interactor.GetControlKey() or interactor.GetShiftKey()):
            return
        position = interactor.GetEventPosition()
        if event == "LeftButtonPressEvent":
            self._modifierPress = (interactor, position)
            return
        press, self._modifierPress = self._modifierPress, None
        points = self._parameterNode.clickPoints if self._parameterNode else None
        if press is None or press[0] is not interactor or points is None:
            return
        if max(abs(a - b) for a, b in zip(press[1], position)) > 3:
            return   # a drag (Shift-drag pans the view), not a click
        view = self._sliceViews[interactor]
        xyz = view.convertDeviceToXYZ(position)
        ras = view.mrmlSliceNode().GetXYToRAS().MultiplyPoint([xyz[0], xyz[1], xyz[2], 1.0])[:3]
        self._nextPointNegative = True
        try:
            points.AddControlPointWorld(vtk.vtkVector3d(*ras))   # -> onClickPlaced
        finally:
            self._nextPointNegative = False

    def onInteractionModeChanged(self, caller, event):
        if caller.GetCurrentInteractionMode() != caller.Place:
            self._stopClickTool()   # the user left place mode (Esc, toolbar)

    def _setClickButton(self, on):
        wasBlocked = self.ui.clickToolButton.blockSignals(True)
        self.ui.clickToolButton.checked = on
        self.ui.clickToolButton.blockSignals(wasBlocked)

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
        points = self._parameterNode.clickPoints if self._parameterNode else None
        if points is not None:
            points.RemoveAllControlPoints()
        self._clicks, self._clicksKey, self._pendingClick, self._clickPointIds = None, None, None, []

    @vtk.calldata_type(vtk.VTK_INT)
    def onClickPlaced(self, caller, event, callData=None):
        from NNMambaSegmentationLib.click_points import mark_point, point_world, remove_point
        from NNMambaSegmentationLib.clicks import ClickError

        index = caller.GetNumberOfControlPoints() - 1 if callData is None else int(callData)
        if index < 0 or caller.GetNthControlPointPositionStatus(index) != caller.PositionDefined:
            return   # not a placed point (e.g. the place-mode preview)
        negative = self._nextPointNegative or self.ui.negativeClicksCheckBox.checked
        mark_point(caller, index, not negative)
        pointId = caller.GetNthControlPointID(index)
        if self._pendingClick is not None:
            remove_point(caller, pointId)
            self.ui.clickStatusLabel.text = _("Still answering the previous click; that point was ignored.")
            return
        with slicer.util.tryWithErrorDisplay(_("The click could not be answered."), waitCursor=False):
            try:
                pending = self._clickSession().start_click(point_world(caller, index), positive=not negative)
            except ClickError as error:   # e.g. outside the volume: say it in the status line, no pop-up
                remove_point(caller, pointId)
                self.ui.clickStatusLabel.text = str(error)
                return
            except Exception:
                remove_point(caller, pointId)
                raise
            self._pendingClick = (pending, pointId)
            self.ui.clickStatusLabel.text = _("Asking the model...")
            self._clickTimer.start()

    def onClickPoll(self):
        from NNMambaSegmentationLib.click_points import remove_point
        from NNMambaSegmentationLib.clicks import describe_click

        if self._pendingClick is None:
            self._clickTimer.stop()
            return
        pending, pointId = self._pendingClick
        if not pending.done:
            return
        self._pendingClick = None
        self._clickTimer.stop()
        points = self._parameterNode.clickPoints if self._parameterNode else None
        with slicer.util.tryWithErrorDisplay(_("The click could not be answered."), waitCursor=False):
            try:
                outcome = pending.finish()
            except ValueError as error:   # refused as given (a point the server cannot use): status line only
                remove_point(points, pointId)
                self.ui.clickStatusLabel.text = str(error)
                return
            except Exception:
                remove_point(points, pointId)
                raise
            if outcome.changed:
                self._clickPointIds.append(pointId)
            else:
                remove_point(points, pointId)
            self.ui.clickStatusLabel.text = _("Last click: {what}").format(what=describe_click(outcome))
        self.updateGUIFromParameterNode()

    def onUndoClick(self):
        from NNMambaSegmentationLib.click_points import remove_point

        if self._clicks is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to undo the click."), waitCursor=True):
            try:
                structure = self._clicks.undo()
            finally:
                if self._clickPointIds:
                    remove_point(self._parameterNode.clickPoints, self._clickPointIds.pop())
                self.updateGUIFromParameterNode()
            self.ui.clickStatusLabel.text = _("Undid the last click on {name}.").format(name=structure)


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

    def start(self, inputVolumes, model, backend=None, **options):
        """Submit the job now and return a SegmentationRun to poll (``run.poll()``, then ``run.finish(node)``)."""
        from NNMambaSegmentationLib.segmentation_run import SegmentationRun
        from NNMambaSlicerLib.backend import require_shared_backend

        return SegmentationRun(backend or require_shared_backend(), inputVolumes, model, **options)

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
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_demo_abdomen_and_click()

    def test_demo_abdomen_and_click(self):
        import numpy as np
        import SampleData
        from NNMambaSegmentationLib.segments import find_segment
        from NNMambaSlicerLib.backend import Backend, shared_backend

        import NNMambaSlicer

        NNMambaSlicer.registerSampleData()
        volume = SampleData.downloadSample("NNMambaDemoAbdomenCT")
        self.assertIsNotNone(volume)
        backend = shared_backend()
        ownBackend = backend is None
        if ownBackend:
            backend = Backend.local(device="cpu")
        try:
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
        finally:
            if ownBackend:
                backend.stop()
        self.delayDisplay("Test passed")
