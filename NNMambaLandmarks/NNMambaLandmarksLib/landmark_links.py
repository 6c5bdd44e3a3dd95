"""Keeps the measurement lines and table on the landmarks while the user drags points.

The widget owns one LandmarkLinks per shown result: ``attach()`` after the nodes are built, ``detach()`` in
``cleanup()``, on scene close and before showing another result. A plain VTK observer (not the widget's
VTKObservationMixin) so the same code runs, and is tested, outside the Slicer application.
"""

from __future__ import annotations

from .landmark_nodes import find_landmark_nodes, follow_points

# Events after which a line end may be off its point: a drag step, a typed coordinate, a point placed again,
# or the point list moved by its parent transform.
_POINT_EVENTS = ("PointModifiedEvent", "PointPositionDefinedEvent", "PointPositionUndefinedEvent",
                 "TransformModifiedEvent")


class LandmarkLinks:
    """Observe a points node made by ``update_landmark_nodes`` and make its lines and table follow it."""

    def __init__(self, points_node):
        self.points_node = points_node
        self._tags = []

    @property
    def attached(self):
        return bool(self._tags)

    def attach(self):
        """Start following (idempotent), and bring the lines up to date once."""
        if self._tags or self.points_node is None:
            return
        for event in _POINT_EVENTS:
            self._tags.append(self.points_node.AddObserver(getattr(self.points_node, event), self._on_points_changed))
        self.sync()

    def detach(self):
        """Stop following (idempotent). Safe after the node has left the scene."""
        for tag in self._tags:
            self.points_node.RemoveObserver(tag)
        self._tags = []

    def sync(self):
        """Copy the current point positions onto the lines and refresh the table."""
        nodes = find_landmark_nodes(self.points_node)
        if nodes is not None and nodes.points.GetScene() is not None:
            follow_points(nodes)

    def _on_points_changed(self, caller, event):
        self.sync()
