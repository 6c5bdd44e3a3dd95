"""The click-to-segment tool as the user meets it, without Qt: place mode on our click list, the clicks it places
(and the modifier clicks that place mode ignores) -> :class:`~.clicks.ClickSession` in the background -> the
segment, undo, and Slicer left as it was found when the tool stops.

Markups place mode places a point only on a click without modifiers (Slicer's vtkSlicerMarkupsWidget), so a
negative click (Ctrl/Shift-click; Cmd/Shift on macOS, where VTK reports Cmd as Ctrl) is taken from the slice views'
interactors directly; views made by a later layout change are observed too (:meth:`ClickTool.observe_views`).
Starting the tool turns on place-mode persistence and makes our list the active place node; stopping restores both,
so that the next toolbar placement behaves as before.
"""

from __future__ import annotations

import functools
import sys

from .click_points import is_click_points, mark_point, new_click_points, point_world, remove_point

NEGATIVE_CLICK = "Cmd/Shift-click" if sys.platform == "darwin" else "Ctrl/Shift-click"
DRAG_PIXELS = 3   # a press and release further apart than this is a drag (Shift-drag pans), not a click


class SliceView:
    """What the click tool needs of a slice view: its VTK interactor, and the RAS point under a device position."""

    def __init__(self, interactor, slice_node, device_to_xyz=None):
        self.interactor = interactor
        self.slice_node = slice_node
        self._device_to_xyz = device_to_xyz or (lambda position: (position[0], position[1], 0.0))

    @classmethod
    def of_qt_view(cls, view):
        """Slicer's qMRMLSliceView (its convertDeviceToXYZ knows the screen's pixel ratio and the light box)."""
        return cls(view.interactorStyle().GetInteractor(), view.mrmlSliceNode(), view.convertDeviceToXYZ)

    def device_to_ras(self, position):
        xyz = self._device_to_xyz(position)
        return self.slice_node.GetXYToRAS().MultiplyPoint([xyz[0], xyz[1], xyz[2], 1.0])[:3]


class ClickTool:
    """``session()`` gives the ClickSession for the current inputs (raising a clear error when they are missing);
    ``on_status(text)`` shows a line; ``on_changed()`` refreshes buttons; ``negative()`` says whether a plain click is
    negative (the module's "Negative" box). ``interaction``/``selection``: the application's interaction and
    selection nodes; ``markups_logic``: Slicer's markups logic; ``views()``: the slice views to watch, as
    :class:`SliceView` objects (Slicer's qMRMLSliceView through :meth:`SliceView.of_qt_view`, or any other renderer of
    Slicer's slice views, such as trame-slicer's)."""

    def __init__(self, session, on_status, interaction, selection, markups_logic, on_changed=None, negative=None,
                 views=None):
        self._session = session
        self.on_status = on_status
        self.on_changed = on_changed or (lambda: None)
        self.negative = negative or (lambda: False)
        self.interaction = interaction
        self.selection = selection
        self.markups_logic = markups_logic
        self.views = views or (lambda: [])
        self.points = None
        self.pending = None           # (PendingClick, point ID)
        self.answered = []            # IDs of the points whose clicks can be undone, oldest first
        self._saved = None            # (persistence, active place node ID) before the tool started
        self._tags = []               # (object, observer tag)
        self._view_tags = []
        self._press = None            # (interactor, position) of a modifier press
        self._next_negative = False

    @property
    def active(self):
        return self._saved is not None

    # -- start / stop -------------------------------------------------------------------------------------------------
    def start(self, points=None):
        """Enter place mode on ``points`` (a new click list when it is not ours); returns the list."""
        if self.active:
            return self.points
        self._session()   # checks the inputs before anything changes
        # Saved before a new list is added: the markups logic makes every new point list the active one.
        self._saved = (self.interaction.GetPlaceModePersistence(), self.selection.GetActivePlaceNodeID())
        if not is_click_points(points) or points.GetScene() is None:
            points = new_click_points(self.interaction.GetScene())
        self.points = points
        self._observe(points, points.PointPositionDefinedEvent, self._on_placed)
        self.markups_logic.SetActiveList(points)
        self.markups_logic.StartPlaceMode(True, self.interaction)
        self._observe(self.interaction, self.interaction.InteractionModeChangedEvent, self._on_mode_changed)
        self.observe_views()
        self.on_status(f"Click a structure in a slice view ({NEGATIVE_CLICK}: remove it).")
        return points

    def stop(self):
        """Leave place mode and restore persistence and the active place node as they were."""
        if not self.active:
            return
        saved, self._saved = self._saved, None
        for subject, tag in self._tags + self._view_tags:
            subject.RemoveObserver(tag)
        self._tags, self._view_tags = [], []
        ours = self.points is not None and self.selection.GetActivePlaceNodeID() == self.points.GetID()
        if ours and self.interaction.GetCurrentInteractionMode() == self.interaction.Place:
            self.interaction.SwitchToViewTransformMode()
        self.interaction.SetPlaceModePersistence(saved[0])
        if ours:
            self.selection.SetActivePlaceNodeID(saved[1])
        self.on_changed()

    def forget(self):
        """The inputs changed: clear the click points and the undo steps."""
        if self.points is not None and self.points.GetScene() is not None:
            self.points.RemoveAllControlPoints()
        self.pending, self.answered = None, []

    def observe_views(self, *args):
        """Watch the slice views that exist now for modifier clicks (call again after a layout change)."""
        for subject, tag in self._view_tags:
            subject.RemoveObserver(tag)
        self._view_tags = []
        if not self.active:
            return
        for view in self.views():
            interactor = view.interactor
            handler = functools.partial(self._on_button, view)
            for event in ("LeftButtonPressEvent", "LeftButtonReleaseEvent"):
                self._view_tags.append((interactor, interactor.AddObserver(event, handler, 10.0)))

    def _observe(self, subject, event, handler):
        self._tags.append((subject, subject.AddObserver(event, handler)))

    def _on_mode_changed(self, interaction, event):
        if interaction.GetCurrentInteractionMode() != interaction.Place:
            self.stop()   # the user left place mode (Esc, toolbar)

    # -- clicks -------------------------------------------------------------------------------------------------------
    def _on_button(self, view, interactor, event):
        if not (interactor.GetControlKey() or interactor.GetShiftKey()):
            return
        position = interactor.GetEventPosition()
        if event == "LeftButtonPressEvent":
            self._press = (interactor, position)
            return
        press, self._press = self._press, None
        if press is None or press[0] is not interactor:
            return
        if max(abs(a - b) for a, b in zip(press[1], position)) > DRAG_PIXELS:
            return
        self.place(view.device_to_ras(position), positive=False)

    def place(self, ras, positive=True):
        """Add a click point at world ``ras`` as if the user had placed it (negative ones too)."""
        import vtk

        self._next_negative = not positive
        try:
            self.points.AddControlPointWorld(vtk.vtkVector3d(*ras))   # -> _on_placed
        finally:
            self._next_negative = False

    def _on_placed(self, points, event):
        from .clicks import ClickError

        index = points.GetNumberOfControlPoints() - 1
        if index < 0 or points.GetNthControlPointPositionStatus(index) != points.PositionDefined:
            return   # not a placed point (e.g. the place-mode preview)
        positive = not (self._next_negative or self.negative())
        mark_point(points, index, positive)
        point_id = points.GetNthControlPointID(index)
        if self.pending is not None:
            remove_point(points, point_id)
            self.on_status("Still answering the previous click; that point was ignored.")
            return
        try:
            self.pending = (self._session().start_click(point_world(points, index), positive=positive), point_id)
        except ClickError as error:   # e.g. outside the volume: a status line, no pop-up
            remove_point(points, point_id)
            self.on_status(str(error))
            return
        except Exception:
            remove_point(points, point_id)
            raise
        self.on_status("Asking the model...")

    def poll(self):
        """From the widget's timer while :attr:`pending`: write a finished answer; returns its ClickOutcome (None
        while waiting). A refused click is a status line; other errors raise."""
        from .clicks import describe_click

        if self.pending is None or not self.pending[0].done:
            return None
        (pending, point_id), self.pending = self.pending, None
        try:
            outcome = pending.finish()
        except ValueError as error:   # refused as given (a point the server cannot use)
            remove_point(self.points, point_id)
            self.on_status(str(error))
            return None
        except Exception:
            remove_point(self.points, point_id)
            raise
        if outcome.changed:
            self.answered.append(point_id)
        else:
            remove_point(self.points, point_id)
        self.on_status(f"Last click: {describe_click(outcome)}")
        self.on_changed()
        return outcome

    def wait(self, timeout=600.0, interval=0.002):
        """Poll until the pending click is answered (scripts, tests, benchmarks); its ClickOutcome, or None when a
        refused click only got a status line."""
        import time

        deadline = time.monotonic() + timeout
        while self.pending is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"The click was not answered within {timeout:g} s.")
            outcome = self.poll()
            if outcome is not None:
                return outcome
            time.sleep(interval)
        return None

    def undo(self, session):
        """Undo the last answered click in ``session``; returns the structure's name."""
        try:
            structure = session.undo()
        finally:
            if self.answered:
                remove_point(self.points, self.answered.pop())
            self.on_changed()
        self.on_status(f"Undid the last click on {structure}.")
        return structure
