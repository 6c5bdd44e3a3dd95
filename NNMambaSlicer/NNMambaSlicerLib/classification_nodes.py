"""A classification result in the scene: a table of class probabilities under the volume in the subject hierarchy,
and the decision written on the volume itself (node attributes, saved with the scene), so that a saved scene keeps
what the model said about each image.

The volume refers to its table (node reference), so re-running a model on the same volume refills that table
instead of adding a second one.
"""

from __future__ import annotations

import math

from .backend import JobRun

ATTRIBUTE_CLASS = "NNMamba.Classification"
ATTRIBUTE_MODEL = "NNMamba.ClassificationModel"
ATTRIBUTE_PROBABILITY = "NNMamba.ClassificationProbability"
TABLE_ROLE = "NNMambaClassificationTable"     # volume -> its classification table
TABLE_ATTRIBUTE_MODEL = "NNMamba.Model"
TABLE_ATTRIBUTE_RULE = "NNMamba.DecisionRule"
CLASS_COLUMN, PROBABILITY_COLUMN = "class", "probability"


class ClassificationResultError(ValueError):
    """A classification answer that cannot be shown (a server of another version, or a damaged file)."""


def parse_classification_result(result):
    """``{"classes", "probabilities", "decision", "model", "rule"}`` checked: one finite probability in 0..1 per
    unique class name, and a decision that is one of the classes (the most probable one when absent)."""
    if not isinstance(result, dict):
        raise ClassificationResultError(f"A classification result is a JSON object, got {type(result).__name__}.")
    classes, probabilities = result.get("classes"), result.get("probabilities")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise ClassificationResultError(f"The result's 'classes' must be a non-empty list of names, got {classes!r}.")
    if len(set(classes)) != len(classes):
        raise ClassificationResultError(f"The result names a class twice: {classes}.")
    try:
        values = [float(p) for p in probabilities]
    except (TypeError, ValueError):
        values = []
    if len(values) != len(classes) or not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in values):
        raise ClassificationResultError(f"The result needs one probability in 0..1 per class ({len(classes)}), got "
                                        f"{probabilities!r}.")
    decision = result.get("decision")
    if decision is None:
        decision = classes[max(range(len(values)), key=values.__getitem__)]
    if decision not in classes:
        raise ClassificationResultError(f"The decision {decision!r} is not one of the classes {classes}.")
    model = result.get("model") if isinstance(result.get("model"), dict) else {}
    return {"classes": list(classes), "probabilities": values, "decision": decision, "model": model,
            "rule": result.get("rule") if isinstance(result.get("rule"), dict) else {}}


def decision_text(result):
    """The decision for the big label: ``atrophy (87.3%)``."""
    parsed = parse_classification_result(result)
    probability = parsed["probabilities"][parsed["classes"].index(parsed["decision"])]
    return f"{parsed['decision']} ({probability:.1%})"


def find_classification_table(volume_node):
    """The table a previous run made for this volume, if it is still in the scene."""
    return volume_node.GetNodeReference(TABLE_ROLE) if volume_node is not None else None


def update_classification_nodes(scene, volume_node, result, model_id=None):
    """Fill (or create) the volume's classification table, set the decision attributes on the volume and place the
    table under the volume in the subject hierarchy. Returns the table node."""
    import vtk

    if volume_node is None:
        raise ClassificationResultError("No volume to attach the classification to.")
    parsed = parse_classification_result(result)
    model = model_id or parsed["model"].get("id") or "unknown model"
    version = parsed["model"].get("version")
    model_label = f"{model} {version}" if version else model

    table = find_classification_table(volume_node)
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{volume_node.GetName()} classification")
        volume_node.SetNodeReferenceID(TABLE_ROLE, table.GetID())
    names = vtk.vtkStringArray()
    names.SetName(CLASS_COLUMN)
    values = vtk.vtkDoubleArray()
    values.SetName(PROBABILITY_COLUMN)
    for name, probability in zip(parsed["classes"], parsed["probabilities"]):
        names.InsertNextValue(name)
        values.InsertNextValue(probability)
    was_modifying = table.StartModify()
    table.SetLocked(False)
    table.RemoveAllColumns()
    table.AddColumn(names)
    table.AddColumn(values)
    table.SetColumnDescription(CLASS_COLUMN, "Class name")
    table.SetColumnDescription(PROBABILITY_COLUMN, "Predicted probability of the class")
    table.SetUseColumnNameAsColumnHeader(True)
    table.SetAttribute(TABLE_ATTRIBUTE_MODEL, model_label)
    if parsed["rule"].get("rule"):
        table.SetAttribute(TABLE_ATTRIBUTE_RULE, str(parsed["rule"]["rule"]))
    table.SetLocked(True)   # a model's output, not a spreadsheet: edits would misrepresent it
    table.EndModify(was_modifying)

    probability = parsed["probabilities"][parsed["classes"].index(parsed["decision"])]
    volume_node.SetAttribute(ATTRIBUTE_CLASS, parsed["decision"])
    volume_node.SetAttribute(ATTRIBUTE_MODEL, model_label)
    volume_node.SetAttribute(ATTRIBUTE_PROBABILITY, f"{probability:.6g}")
    place_under_volume(scene, table, volume_node)
    return table


def place_under_volume(scene, node, volume_node):
    """Make ``node`` a child of the volume in the subject hierarchy (items are created when missing, as happens
    outside the application)."""
    hierarchy = scene.GetSubjectHierarchyNode()
    if hierarchy is None:
        return
    volume_item = hierarchy.GetItemByDataNode(volume_node)
    if not volume_item:
        volume_item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), volume_node)
    item = hierarchy.GetItemByDataNode(node)
    if not item:
        hierarchy.CreateItem(volume_item, node)
    elif hierarchy.GetItemParent(item) != volume_item:
        hierarchy.SetItemParent(item, volume_item)


def read_decision(volume_node):
    """``(class, model, probability)`` stored on the volume by a previous run, or None."""
    decision = volume_node.GetAttribute(ATTRIBUTE_CLASS) if volume_node is not None else None
    if not decision:
        return None
    probability = volume_node.GetAttribute(ATTRIBUTE_PROBABILITY)
    return decision, volume_node.GetAttribute(ATTRIBUTE_MODEL), float(probability) if probability else None



class ClassificationRun(JobRun):
    """Classify one volume: the job in the background, then :meth:`finish` fills its table and decision attributes
    (GUI thread)."""

    task = "classification"
    error_class = ClassificationResultError
    what = "Classification"

    def __init__(self, backend, volume_node, model, **options):
        super().__init__(backend, [volume_node], model, what_model="classification model", **options)

    def fetch(self):
        self.result = self.job.result_json()

    def finish(self):
        self.finished_status()
        return update_classification_nodes(self.volume_node.GetScene(), self.volume_node, self.result,
                                           model_id=self.model)
