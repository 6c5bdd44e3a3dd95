"""A module's parameter node bound to its ``.ui`` and observed, as Slicer's scripted-module template does it, once
for the three NNMamba modules.

Slicer 5.6 and 5.8's ``connectGui`` returns no tag, so ``disconnectGui`` cannot undo a connection there: a node that
is connected already is not connected again (with the template's pattern every ``enter()`` would add one more set of
connectors and observers). From 5.10 on, the tag disconnects as usual.
"""

from __future__ import annotations


class ParameterBinding:
    """``binding.set(parameterNode)`` on enter/scene changes, ``binding.set(None)`` on exit; ``on_modified()`` runs
    after every change of the node (and once when it is set)."""

    def __init__(self, ui, on_modified):
        self.ui = ui
        self.on_modified = on_modified
        self.node = None
        self._tag = None
        self._observer = None
        self._untagged = set()   # MRML IDs of nodes connected for good (Slicer 5.6/5.8: connectGui gave no tag)

    def set(self, node):
        import vtk

        if self.node is not None:
            if self._tag is not None:
                self.node.disconnectGui(self._tag)
            if self._observer is not None:
                self.node.RemoveObserver(self._observer)
        self.node, self._tag, self._observer = node, None, None
        if node is None:
            return
        key = node.parameterNode.GetID()
        if key not in self._untagged:
            self._tag = node.connectGui(self.ui)
            if self._tag is None:
                self._untagged.add(key)
        self._observer = node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._modified)
        self.on_modified()

    def _modified(self, caller=None, event=None):
        self.on_modified()
