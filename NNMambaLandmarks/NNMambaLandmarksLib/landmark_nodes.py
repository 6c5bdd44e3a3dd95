"""Scene nodes for a landmark result: one point list (a fixed set of labelled points), one line per measurement
(TCD, HDV, ADV) whose ends sit on those points, and a small table of the line lengths.

The point list is what the user edits; the lines are derived from it, so they are locked (a drag grabs the point,
not the line's own handle) and :func:`follow_points` copies the point positions onto them (LandmarkLinks calls it on
every drag). The points node remembers its lines and table through node references, so a re-run, a saved scene or a
reloaded module finds and updates the same nodes instead of adding duplicates.

Positions: the server answers in LPS millimetres of the volume's own frame; the scene is RAS, and the nodes go under
the volume's parent transform so that they stay on the anatomy when the volume is moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .landmark_result import parse_landmark_result

LINE_ROLE = "NNMambaLandmarkLine"          # points node -> its line nodes (in result order)
TABLE_ROLE = "NNMambaMeasurementTable"     # points node -> its measurement table
VOLUME_ROLE = "NNMambaLandmarkVolume"      # points node -> the volume the landmarks were found on
MODEL_ATTRIBUTE = "NNMamba.Model"          # on the points node: the model id that found them
CONFIDENCE_ATTRIBUTE = "NNMamba.Confidence."  # + label, on the points node: the model's confidence in that point
MEASUREMENT_ATTRIBUTE = "NNMamba.Measurement"  # on a line node: the measurement's name (survives renaming)
FROM_ATTRIBUTE = "NNMamba.From"            # on a line node: the landmark label at each end
TO_ATTRIBUTE = "NNMamba.To"
TABLE_COLUMNS = ("Measurement", "From", "To", "Length (mm)")


@dataclass
class LandmarkNodes:
    """The nodes of one landmark result. ``lines`` maps measurement name -> vtkMRMLMarkupsLineNode, in order."""

    points: object
    lines: dict = field(default_factory=dict)
    table: object = None

    def line_ends(self, name):
        """The (from, to) landmark labels of a measurement line."""
        line = self.lines[name]
        return line.GetAttribute(FROM_ATTRIBUTE), line.GetAttribute(TO_ATTRIBUTE)

    def line_length(self, name):
        """The current length in mm of a measurement line (Slicer's own measurement)."""
        return float(self.lines[name].GetLineLengthWorld())

    def point_index(self, label):
        """The control point index of a landmark label, or -1."""
        for index in range(self.points.GetNumberOfControlPoints()):
            if self.points.GetNthControlPointLabel(index) == label:
                return index
        return -1


def update_landmark_nodes(scene, result, points_node=None, volume_node=None, name=None, model=None):
    """Show a landmark ``result`` (the server's JSON dict, or a LandmarkSet) in ``scene``.

    ``points_node``: an existing point list to update (a re-run); its referenced lines and table are reused and the
    ones no longer in the result removed. ``volume_node``: the input volume (sets each point's associated node, the
    parent transform and the subject-hierarchy place). ``name``: the point list's name for a new node.
    ``model``: the model id, kept as the points node's ``NNMamba.Model`` attribute.
    The result is checked before anything is touched. Returns :class:`LandmarkNodes`.
    """
    landmark_set = parse_landmark_result(result)
    if points_node is None:
        base = name or (f"{volume_node.GetName()} landmarks" if volume_node is not None else "Landmarks")
        points_node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(base))
    _ensure_display(points_node)
    transform_id = volume_node.GetTransformNodeID() if volume_node is not None else points_node.GetTransformNodeID()
    points_node.SetAndObserveTransformNodeID(transform_id)
    if volume_node is not None:
        points_node.SetNodeReferenceID(VOLUME_ROLE, volume_node.GetID())
    if model:
        points_node.SetAttribute(MODEL_ATTRIBUTE, str(model))
    _set_points(points_node, landmark_set.landmarks, volume_node)

    nodes = LandmarkNodes(points_node)
    old_lines = {line.GetAttribute(MEASUREMENT_ATTRIBUTE): line for line in _referenced(points_node, LINE_ROLE)}
    points_node.RemoveNodeReferenceIDs(LINE_ROLE)
    for measurement in landmark_set.measurements:
        line = old_lines.pop(measurement.name, None)
        if line is None:
            line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", measurement.name)
        _set_line(line, measurement, transform_id)
        points_node.AddNodeReferenceID(LINE_ROLE, line.GetID())
        nodes.lines[measurement.name] = line
    for stale in old_lines.values():
        scene.RemoveNode(stale)

    table = points_node.GetNodeReference(TABLE_ROLE)
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{points_node.GetName()} measurements")
        points_node.SetNodeReferenceID(TABLE_ROLE, table.GetID())
    nodes.table = table
    follow_points(nodes)
    if volume_node is not None:
        _place_beside(scene, volume_node, [points_node, *nodes.lines.values(), table])
    return nodes


def find_landmark_nodes(points_node):
    """The :class:`LandmarkNodes` a point list made by :func:`update_landmark_nodes` refers to (or None for None)."""
    if points_node is None:
        return None
    lines = {}
    for line in _referenced(points_node, LINE_ROLE):
        lines[line.GetAttribute(MEASUREMENT_ATTRIBUTE) or line.GetName()] = line
    return LandmarkNodes(points_node, lines, points_node.GetNodeReference(TABLE_ROLE))


def replaces_other_points(points_node):
    """How many points a landmark run into ``points_node`` would wipe that are not ours: 0 for no list, an empty
    list, or one a landmark run made (its points carry the model's attribute); else the user's own points (or the
    NNMamba click list) that deserve a question first."""
    if points_node is None or points_node.GetNumberOfControlPoints() == 0:
        return 0
    if points_node.GetAttribute(MODEL_ATTRIBUTE) or points_node.GetNumberOfNodeReferences(LINE_ROLE):
        return 0
    return points_node.GetNumberOfControlPoints()


def follow_points(nodes):
    """Put each line's ends on its landmarks (world positions, so differing transforms do not matter), then refresh
    the table. Lines whose landmark is gone (the user renamed a point) keep their last position."""
    for line in nodes.lines.values():
        for end, attribute in enumerate((FROM_ATTRIBUTE, TO_ATTRIBUTE)):
            index = nodes.point_index(line.GetAttribute(attribute))
            if index < 0 or line.GetNumberOfControlPoints() != 2:
                continue
            position = [0.0, 0.0, 0.0]
            nodes.points.GetNthControlPointPositionWorld(index, position)
            current = [0.0, 0.0, 0.0]
            line.GetNthControlPointPositionWorld(end, current)
            if current != position:  # no Modified storm while other points are dragged
                line.SetNthControlPointPositionWorld(end, *position)
    update_measurement_table(nodes)


def update_measurement_table(nodes):
    """Fill the table with one row per line: name, from, to, current length (mm)."""
    import vtk

    table = nodes.table
    if table is None:
        return
    if [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] != list(TABLE_COLUMNS):
        table.RemoveAllColumns()
        for column in TABLE_COLUMNS:
            array = vtk.vtkDoubleArray() if column == TABLE_COLUMNS[-1] else vtk.vtkStringArray()
            array.SetName(column)
            table.AddColumn(array)
        table.SetColumnUnitLabel(TABLE_COLUMNS[-1], "mm")
        table.SetColumnDescription(TABLE_COLUMNS[-1], "Line length, updated when a landmark moves")
        table.SetLocked(True)  # derived numbers: not editable in the table view
    rows = [(name, *nodes.line_ends(name), nodes.line_length(name)) for name in nodes.lines]
    vtk_table = table.GetTable()
    old = [tuple(table.GetCellText(r, c) for c in range(3)) + (vtk_table.GetValue(r, 3).ToDouble(),)
           for r in range(table.GetNumberOfRows())]
    if old == rows:
        return
    vtk_table.SetNumberOfRows(len(rows))
    for row, values in enumerate(rows):
        for column, value in enumerate(values):
            vtk_table.GetColumn(column).SetVariantValue(row, vtk.vtkVariant(value))
    vtk_table.Modified()
    table.Modified()


def _set_points(points_node, landmarks, volume_node):
    from nnmamba.geometry import lps_to_ras

    labels = [landmark.label for landmark in landmarks]
    state = points_node.StartModify()
    try:
        current = [points_node.GetNthControlPointLabel(i) for i in range(points_node.GetNumberOfControlPoints())]
        if current != labels:  # a different model: start over (fixed count must be lifted to add or remove)
            points_node.SetFixedNumberOfControlPoints(False)
            points_node.RemoveAllControlPoints()
            for landmark in landmarks:
                points_node.AddControlPoint(list(lps_to_ras(landmark.position_lps)), landmark.label)
        for index, landmark in enumerate(landmarks):
            points_node.SetNthControlPointPosition(index, *lps_to_ras(landmark.position_lps))
            points_node.SetNthControlPointLabel(index, landmark.label)
            points_node.SetNthControlPointDescription(index, landmark.description)   # what Slicer shows
            points_node.SetAttribute(CONFIDENCE_ATTRIBUTE + landmark.label,        # the number, for exports
                                     "" if landmark.confidence is None else repr(float(landmark.confidence)))
            if volume_node is not None:
                points_node.SetNthControlPointAssociatedNodeID(index, volume_node.GetID())
        points_node.SetFixedNumberOfControlPoints(True)  # one point per landmark: no adding, no deleting
    finally:
        points_node.EndModify(state)


def _set_line(line, measurement, transform_id):
    _ensure_display(line)
    line.SetAttribute(MEASUREMENT_ATTRIBUTE, measurement.name)
    line.SetAttribute(FROM_ATTRIBUTE, measurement.start)
    line.SetAttribute(TO_ATTRIBUTE, measurement.end)
    line.SetAndObserveTransformNodeID(transform_id)
    if line.GetNumberOfControlPoints() != 2:
        line.RemoveAllControlPoints()
        line.AddControlPoint([0.0, 0.0, 0.0], measurement.start)
        line.AddControlPoint([0.0, 0.0, 0.0], measurement.end)
    line.SetNthControlPointLabel(0, measurement.start)
    line.SetNthControlPointLabel(1, measurement.end)
    line.SetLocked(True)  # the ends follow the points; dragging happens on the point list


def _ensure_display(node):
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()


def _referenced(node, role):
    found = (node.GetNthNodeReference(role, i) for i in range(node.GetNumberOfNodeReferences(role)))
    return [other for other in found if other is not None]


def _place_beside(scene, volume_node, nodes):
    """Put the result next to its volume in the subject hierarchy (same study), as Slicer's own modules do."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    volume_item = hierarchy.GetItemByDataNode(volume_node) if hierarchy is not None else 0
    if not volume_item:
        return  # no hierarchy item for the volume (scene without the Subject Hierarchy logic)
    parent = hierarchy.GetItemParent(volume_item)
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:
            hierarchy.CreateItem(parent, node)
