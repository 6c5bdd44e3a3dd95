"""Click-to-segment without the GUI: a point in a slice view -> the server's structure under it -> that structure's
segment, with undo.

What a click does (one rule per kind, so the result of a click never depends on older clicks):
- positive: the structure under the point (the model's connected region there) is ADDED to the segment of that
  structure, created on the first click with the model's name, colour and terminology;
- negative: the structure under the point is REMOVED from that structure's segment ("not this part").
Only voxels inside the answer's box are read and written, and there only this segment's; voxels outside the box,
edits the user made elsewhere and other segments are never touched. (Replacing the whole segment with each answer
would erase other parts of the structure and the user's own edits; replacing the box with the answer would erase the
parts of other components that fall into the box.)

Undo keeps, per click, the segment's previous voxels in that box only (a few KB, not a volume copy), in a bounded
stack. The network calls (the upload, when the server lacks the volume, and the click) can run in a thread
(:meth:`ClickSession.start_click`); every scene read and MRML change happens on the caller's thread, in
:meth:`ClickSession.prepare` and :meth:`PendingClick.finish`, as Slicer requires.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from NNMambaSlicerLib.backend import UploadExpired
from NNMambaSlicerLib.background import BackgroundCall

from .labelmaps import read_box, volume_ijk_to_ras, volume_shape, write_box
from .segments import add_structure_segment, find_segment, prepare_segmentation_node

DEFAULT_UNDO_DEPTH = 20


class ClickError(ValueError):
    """A click that cannot be answered as given (outside the volume, nothing to undo, no input)."""


@dataclass
class ClickOutcome:
    """What one click did. ``structure`` is the model's name of what lies under the point ("background" when the
    model sees nothing there); ``changed`` counts the voxels that changed."""

    structure: str
    positive: bool
    segment_id: Optional[str] = None
    changed: int = 0
    created: bool = False
    seconds: float = 0.0               # the whole round trip, as the user feels it
    network_passes: int = 0            # 0: answered from the server's cache
    notes: list = field(default_factory=list)


@dataclass
class _UndoStep:
    segment_id: str
    structure: str
    created: bool
    offset: tuple
    previous: object                   # uint8 KJI voxels of the segment in the box before the click


# A first click prepares the whole volume and may run many windows on a CPU: minutes, not the usual 60 s.
CLICK_TIMEOUT = 1800.0


@dataclass
class ClickRequest:
    """A checked click, ready to be sent: the point as clicked (world RAS), in LPS on the volume grid, and the
    volumes' upload."""

    world: tuple
    lps: list
    positive: bool
    upload: object                     # NNMambaSlicerLib.backend.Upload

class ClickSession:
    """Clicks on ``volume_nodes`` (the model's input channels, first = the grid) with ``model`` through
    ``backend`` (an NNMambaSlicerLib Backend), written into ``segmentation_node``."""

    def __init__(self, backend, volume_nodes, model, segmentation_node, undo_depth=DEFAULT_UNDO_DEPTH):
        if segmentation_node is None:
            raise ClickError("Choose or create an output segmentation before clicking.")
        nodes = [volume_nodes] if hasattr(volume_nodes, "GetID") else list(volume_nodes or [])
        if not nodes or any(node is None for node in nodes):
            raise ClickError("Select the input volume(s) before clicking.")
        self.backend = backend
        self.volume_nodes = nodes
        self.model = model
        self.segmentation_node = segmentation_node
        self._undo = deque(maxlen=max(int(undo_depth), 1))
        self._structures = None
        self._prepared = False

    @property
    def volume_node(self):
        return self.volume_nodes[0]

    @property
    def can_undo(self):
        return bool(self._undo)

    # -- one click: check (here), ask (any thread), apply (here) -----------------------------------------------------
    def click(self, ras_point, positive=True):
        """Answer and apply a click now (scripts, tests): :meth:`prepare`, :meth:`ask`, :meth:`apply`."""
        started = time.perf_counter()
        request = self.prepare(ras_point, positive)
        try:
            answer = self.ask(request)
        except UploadExpired:
            request = self.prepare(ras_point, positive, snapshot=True)
            answer = self.ask(request)
        return self.apply(request, answer, started)

    def start_click(self, ras_point, positive=True):
        """Check the point now (errors raise here), ask the server in a thread; poll the returned
        :class:`PendingClick` and call its ``finish()`` on this thread."""
        started = time.perf_counter()
        return PendingClick(self, self.prepare(ras_point, positive), started)

    def prepare(self, ras_point, positive=True, snapshot=False):
        """Check a world RAS point against the volume, and note what to upload (a copy of the voxels only when the
        server does not have them yet, or ``snapshot``). Reads the scene: call it on the GUI thread."""
        import numpy as np

        from nnmamba.geometry import ras_to_lps

        ras = self._to_volume_frame(ras_point)
        index = np.linalg.inv(volume_ijk_to_ras(self.volume_node)) @ np.append(ras, 1.0)
        size = np.array(volume_shape(self.volume_node)[::-1])   # I, J, K
        if np.any(index[:3] < -0.5) or np.any(index[:3] > size - 0.5):
            r, a, s = ras
            raise ClickError(f"The point ({r:.1f}, {a:.1f}, {s:.1f}) mm (RAS) lies outside volume "
                             f"{self.volume_node.GetName()!r}; click inside the image.")
        upload = self.backend.upload_for(self.volume_nodes, snapshot=snapshot)
        world = tuple(float(v) for v in ras_point)
        return ClickRequest(world, ras_to_lps(ras).tolist(), bool(positive), upload)

    def ask(self, request):
        """The server's answer for a prepared click (network only: safe in a worker thread)."""
        session = request.upload.session()
        return self.backend.client.click(session, self.model, [request.lps], coordinates="LPS",
                                         timeout=CLICK_TIMEOUT)

    def apply(self, request, answer, started=None):
        """Write a server answer into the segment of its structure; returns a :class:`ClickOutcome`."""
        import numpy as np

        mask = np.asarray(answer["mask"], dtype=bool)
        offset = tuple(int(v) for v in answer["offset"])
        outcome = ClickOutcome(str(answer.get("name", "")), request.positive,
                               network_passes=int(answer.get("network_passes", 0)),
                               notes=list(answer.get("notes", [])))
        outcome.seconds = time.perf_counter() - started if started is not None else float(answer.get("seconds", 0))
        if int(answer.get("label", 0)) == 0 or not mask.any():
            if not outcome.notes:
                outcome.notes.append("The model sees background under the point; nothing changed.")
            return outcome
        segment_id = find_segment(self.segmentation_node, outcome.structure)
        if segment_id is None and not request.positive:
            outcome.notes.append(f"There is no {outcome.structure!r} segment to remove this region from.")
            return outcome
        if segment_id is None:
            self._prepare_node()
            segment_id = add_structure_segment(self.segmentation_node, self._structure(answer))
            outcome.created = True
        matrix = volume_ijk_to_ras(self.volume_node)
        previous = read_box(self.segmentation_node, segment_id, matrix, offset, mask.shape)
        wanted = (previous.astype(bool) | mask) if request.positive else (previous.astype(bool) & ~mask)
        outcome.segment_id = segment_id
        outcome.changed = int(np.count_nonzero(wanted != previous.astype(bool)))
        if outcome.changed == 0:
            outcome.notes.append("The segment already matched the model here; nothing changed.")
            return outcome
        write_box(self.segmentation_node, segment_id, wanted.astype(np.uint8), matrix, offset)
        self._undo.append(_UndoStep(segment_id, outcome.structure, outcome.created, offset, previous))
        return outcome

    def undo(self):
        """Restore the segment changed by the last click (a segment the click created is removed); returns the
        structure's name."""
        if not self._undo:
            raise ClickError("There is no click to undo.")
        step = self._undo.pop()
        segmentation = self.segmentation_node.GetSegmentation()
        if segmentation.GetSegment(step.segment_id) is None:
            raise ClickError(f"The segment {step.structure!r} changed by the last click was deleted; there is "
                             "nothing to undo.")
        if step.created:
            segmentation.RemoveSegment(step.segment_id)
        else:
            write_box(self.segmentation_node, step.segment_id, step.previous, volume_ijk_to_ras(self.volume_node),
                      step.offset)
        return step.structure

    # -- helpers -----------------------------------------------------------------------------------------------------
    def _prepare_node(self):
        if not self._prepared:
            prepare_segmentation_node(self.segmentation_node, self.volume_node)
            self._prepared = True

    def structures(self):
        """The model's labels ({value, name, color, terminology}) by value, read once from the server."""
        if self._structures is None:
            package = self.backend.client.model(self.model) or {}
            labels = (package.get("outputs") or {}).get("labels") or []
            self._structures = {int(label["value"]): label for label in labels if "value" in label}
        return self._structures

    def _structure(self, answer):
        label = int(answer["label"])
        entry = dict(self.structures().get(label) or {})
        entry.setdefault("color", (0.5, 0.5, 0.5))
        entry["name"] = str(answer["name"])     # the name the server matched: the segment's key
        entry["value"] = label
        return entry

    def _to_volume_frame(self, ras_point):
        """A world RAS point in the volume's own frame (the volume may sit under a transform)."""
        import numpy as np

        point = np.asarray(ras_point, dtype=float).reshape(-1)
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise ClickError(f"A click point needs three finite RAS coordinates, got {ras_point!r}.")
        parent = self.volume_node.GetParentTransformNode()
        if parent is None:
            return point
        import slicer
        import vtk

        world_to_volume = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, parent, world_to_volume)
        return np.array(world_to_volume.TransformPoint(point.tolist()))


class PendingClick:
    """A click whose server calls run in a thread. Poll ``done`` from the GUI thread (e.g. a QTimer); then
    ``finish()`` there writes the answer and returns the :class:`ClickOutcome`, or raises what the server call
    raised. When the server forgot the volume meanwhile, ``done`` copies it from the scene and asks again."""

    def __init__(self, session, request, started):
        self.session = session
        self.request = request
        self.started = started
        self._retried = False
        self._call = BackgroundCall(session.ask, request, name="nnmamba-click")

    @property
    def done(self):
        if not self._call.finished:
            return False
        if isinstance(self._call.error, UploadExpired) and not self._retried:
            self._retried = True
            self.request = self.session.prepare(self.request.world, self.request.positive, snapshot=True)
            self._call = BackgroundCall(self.session.ask, self.request, name="nnmamba-click")
            return False
        return True

    def finish(self, timeout=None):
        answer = self._call.result(timeout, "The server has not answered the click yet.")
        return self.session.apply(self.request, answer, self.started)


def describe_click(outcome):
    """One status line, e.g. "liver: +1234 voxels in 0.42 s, from the cache"."""
    timing = f"{outcome.seconds:.2f} s" + (", from the cache" if outcome.network_passes == 0 else "")
    if outcome.changed:
        sign = "+" if outcome.positive else "\u2212"
        return f"{outcome.structure}: {sign}{outcome.changed} voxels in {timing}"
    note = outcome.notes[0] if outcome.notes else "nothing changed"
    return f"{note} ({timing})"
