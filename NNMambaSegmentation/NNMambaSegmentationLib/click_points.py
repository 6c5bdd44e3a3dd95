"""The point list that collects the user's clicks: positive points show green, negative points red (a markups
point's "selected" state picks its colour, so no per-point colour is needed), each carries its sign in its
description, and is locked once answered so that a drag cannot suggest the segment follows it."""

from __future__ import annotations

POINTS_NAME = "NNMamba clicks"
POSITIVE, NEGATIVE = "positive", "negative"
POSITIVE_COLOR = (0.2, 0.85, 0.3)
NEGATIVE_COLOR = (0.95, 0.25, 0.2)
ROLE_ATTRIBUTE = "NNMamba.Role"


def new_click_points(scene):
    """A fiducial list for clicks, styled for the task and marked as ours."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GetUniqueNameByString(POINTS_NAME))
    node.SetAttribute(ROLE_ATTRIBUTE, "clicks")
    node.SetMarkupLabelFormat("")
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetSelectedColor(*POSITIVE_COLOR)
    display.SetColor(*NEGATIVE_COLOR)
    display.SetActiveColor(*POSITIVE_COLOR)
    display.SetPointLabelsVisibility(False)
    display.SetGlyphScale(2.0)
    return node


def is_click_points(node):
    return node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == "clicks"


def mark_point(node, index, positive):
    """Record a point's sign (description, colour) and lock it."""
    node.SetNthControlPointDescription(index, POSITIVE if positive else NEGATIVE)
    node.SetNthControlPointSelected(index, bool(positive))
    node.SetNthControlPointLocked(index, True)


def point_is_positive(node, index):
    return node.GetNthControlPointDescription(index) != NEGATIVE


def point_world(node, index):
    """The point's world RAS position (parent transforms applied)."""
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(index, position)
    return position


def remove_point(node, point_id):
    """Remove the point with this ID if it is still there."""
    if node is None or not point_id:
        return
    index = node.GetNthControlPointIndexByID(point_id)
    if index >= 0:
        node.RemoveNthControlPoint(index)
