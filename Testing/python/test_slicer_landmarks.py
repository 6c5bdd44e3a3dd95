"""NNMambaLandmarksLib against real MRML (slicer-core): landmark result -> point list, measurement lines and table;
lines that follow dragged points; re-runs that reuse nodes; .mrk.json/CSV export read back by Slicer; and one
end-to-end run through a real local server with a random-weight landmark model."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from NNMambaLandmarksLib import (
    LandmarkExportError,
    LandmarkLinks,
    LandmarkResultError,
    export_csv,
    export_markups_json,
    find_landmark_nodes,
    update_landmark_nodes,
)
from NNMambaLandmarksLib.landmark_nodes import TABLE_COLUMNS

from nnmamba.geometry import Geometry, lps_to_ras

from slicer_scene import new_scene

ROOT = Path(__file__).resolve().parents[2]

MARKUPS_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "slicer-formats" / "markups-schema-v1.0.3.json"
LABELS = ["TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2"]
LINES = [{"name": n, "from": f"{n}1", "to": f"{n}2", "length": 0.0} for n in ("TCD", "HDV", "ADV")]
POSITIONS = {"TCD1": [10.0, -20.0, 5.0], "TCD2": [13.0, -24.0, 5.0], "HDV1": [0.0, 0.0, 0.0],
             "HDV2": [0.0, 0.0, 12.5], "ADV1": [-4.5, 7.25, 3.0], "ADV2": [1.5, 9.0, -2.0]}
CONFIDENCE = {"TCD1": 0.93, "TCD2": 0.5, "HDV1": 0.125, "HDV2": 1.0, "ADV1": 0.0, "ADV2": 0.666}


def result(positions=None, lines=None, labels=None):
    positions = positions or POSITIONS
    return {"points": [{"label": label, "position": positions[label], "confidence": CONFIDENCE[label]}
                       for label in (labels or LABELS)],
            "lines": LINES if lines is None else lines, "seconds": 0.1, "notes": []}


def distance(a, b):
    return math.dist(a, b)


def nodes_of_class(scene, class_name):
    collection = scene.scene.GetNodesByClass(class_name)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def table_length(table, row):
    return table.GetTable().GetValue(row, 3).ToDouble()


def point_position(node, index):
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(index, position)
    return position


# --- building the nodes -----------------------------------------------------------------------------------------


def test_six_labelled_points_at_ras_positions_with_confidence_and_fixed_count(scene):
    nodes = update_landmark_nodes(scene.scene, result(), name="Fetal landmarks")
    points = nodes.points
    assert points.GetClassName() == "vtkMRMLMarkupsFiducialNode" and points.GetName() == "Fetal landmarks"
    assert points.GetNumberOfControlPoints() == 6
    for index, label in enumerate(LABELS):
        assert points.GetNthControlPointLabel(index) == label
        np.testing.assert_allclose(point_position(points, index), lps_to_ras(POSITIONS[label]), atol=1e-12)
        assert points.GetNthControlPointDescription(index) == f"confidence {CONFIDENCE[label]:.2f}"
    assert points.GetNthControlPointDescription(0) == "confidence 0.93"
    assert points.GetFixedNumberOfControlPoints()
    assert points.AddControlPoint([1.0, 2.0, 3.0], "extra") < 0 and points.GetNumberOfControlPoints() == 6
    assert not points.GetLocked()  # the user must be able to drag the points


def test_three_lines_measure_the_euclidean_distances_and_fill_the_table(scene):
    nodes = update_landmark_nodes(scene.scene, result())
    assert list(nodes.lines) == ["TCD", "HDV", "ADV"]
    for line in LINES:
        node = nodes.lines[line["name"]]
        assert node.GetClassName() == "vtkMRMLMarkupsLineNode" and node.GetName() == line["name"]
        assert [node.GetNthControlPointLabel(i) for i in range(2)] == [line["from"], line["to"]]
        expected = distance(POSITIONS[line["from"]], POSITIONS[line["to"]])
        assert node.GetLineLengthWorld() == pytest.approx(expected, abs=1e-9)
        assert node.GetMeasurement("length").GetValue() == pytest.approx(expected, abs=1e-9)
        assert node.GetLocked()  # derived from the points
    assert nodes.line_length("TCD") == pytest.approx(5.0)
    table = nodes.table
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == list(TABLE_COLUMNS)
    assert table.GetNumberOfRows() == 3
    assert [table.GetCellText(r, 0) for r in range(3)] == ["TCD", "HDV", "ADV"]
    assert [table.GetCellText(1, c) for c in (1, 2)] == ["HDV1", "HDV2"]
    assert table_length(table, 0) == pytest.approx(5.0)
    assert table_length(table, 1) == pytest.approx(12.5)
    assert table.GetColumnUnitLabel("Length (mm)") == "mm"


def test_dragging_a_point_moves_the_line_end_and_updates_length_and_table(scene):
    nodes = update_landmark_nodes(scene.scene, result())
    links = LandmarkLinks(nodes.points)
    links.attach()
    assert links.attached
    moved = lps_to_ras([10.0, -20.0, 17.0])  # TCD1 moved 12 mm in S: TCD = sqrt(3^2 + 4^2 + 12^2) = 13
    nodes.points.SetNthControlPointPosition(0, *moved)
    tcd = nodes.lines["TCD"]
    np.testing.assert_allclose(point_position(tcd, 0), moved, atol=1e-12)
    assert tcd.GetLineLengthWorld() == pytest.approx(13.0)
    assert tcd.GetMeasurement("length").GetValue() == pytest.approx(13.0)
    assert table_length(nodes.table, 0) == pytest.approx(13.0)
    assert nodes.line_length("HDV") == pytest.approx(12.5)  # other lines untouched

    links.detach()
    assert not links.attached
    nodes.points.SetNthControlPointPosition(0, *lps_to_ras(POSITIONS["TCD1"]))
    assert tcd.GetLineLengthWorld() == pytest.approx(13.0)  # no longer followed
    links.attach()  # re-attaching catches up at once
    assert tcd.GetLineLengthWorld() == pytest.approx(5.0)
    links.detach()


def test_lines_follow_points_under_a_parent_transform(scene):
    import vtk

    volume = scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "fetal")
    transform = scene.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 50.0)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    nodes = update_landmark_nodes(scene.scene, result(), volume_node=volume)
    assert nodes.points.GetName() == "fetal landmarks"
    assert nodes.points.GetTransformNodeID() == transform.GetID()
    assert all(line.GetTransformNodeID() == transform.GetID() for line in nodes.lines.values())
    assert nodes.points.GetNthControlPointAssociatedNodeID(0) == volume.GetID()
    world = [0.0, 0.0, 0.0]
    nodes.points.GetNthControlPointPositionWorld(0, world)
    np.testing.assert_allclose(world, lps_to_ras(POSITIONS["TCD1"]) + [50.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(point_position(nodes.lines["TCD"], 0), lps_to_ras(POSITIONS["TCD1"]), atol=1e-9)
    assert nodes.line_length("TCD") == pytest.approx(5.0)


def test_rerun_updates_the_same_nodes_without_duplicates(scene):
    first = update_landmark_nodes(scene.scene, result())
    links = LandmarkLinks(first.points)
    links.attach()
    shifted = {label: [v + 1.0 for v in position] for label, position in POSITIONS.items()}
    shifted["TCD2"] = [10.0, -20.0, 25.0]
    second = update_landmark_nodes(scene.scene, result(shifted), points_node=first.points)
    links.detach()
    assert second.points is first.points and second.table is first.table
    assert all(second.lines[name] is first.lines[name] for name in first.lines)
    assert len(nodes_of_class(scene, "vtkMRMLMarkupsFiducialNode")) == 1
    assert len(nodes_of_class(scene, "vtkMRMLMarkupsLineNode")) == 3
    assert len(nodes_of_class(scene, "vtkMRMLTableNode")) == 1
    np.testing.assert_allclose(point_position(second.points, 1), lps_to_ras([10.0, -20.0, 25.0]), atol=1e-12)
    assert second.line_length("TCD") == pytest.approx(distance(shifted["TCD1"], shifted["TCD2"]))
    assert table_length(second.table, 0) == pytest.approx(second.line_length("TCD"))
    assert second.table.GetNumberOfRows() == 3

    found = find_landmark_nodes(first.points)  # e.g. after the module is reloaded
    assert found.table is first.table and list(found.lines) == ["TCD", "HDV", "ADV"]


def test_rerun_with_fewer_lines_removes_the_stale_line(scene):
    first = update_landmark_nodes(scene.scene, result())
    second = update_landmark_nodes(scene.scene, result(lines=LINES[:2]), points_node=first.points)
    assert list(second.lines) == ["TCD", "HDV"]
    assert [n.GetName() for n in nodes_of_class(scene, "vtkMRMLMarkupsLineNode")] == ["TCD", "HDV"]
    assert second.table.GetNumberOfRows() == 2


def test_rerun_with_other_landmarks_rebuilds_the_point_list(scene):
    first = update_landmark_nodes(scene.scene, result())
    other = {"points": [{"label": "A", "position": [0, 0, 0], "confidence": 0.5},
                        {"label": "B", "position": [0, 3, 4], "confidence": 0.5}],
             "lines": [{"name": "AB", "from": "A", "to": "B"}]}
    second = update_landmark_nodes(scene.scene, other, points_node=first.points)
    assert second.points is first.points
    assert [second.points.GetNthControlPointLabel(i) for i in range(2)] == ["A", "B"]
    assert second.points.GetNumberOfControlPoints() == 2 and second.points.GetFixedNumberOfControlPoints()
    assert list(second.lines) == ["AB"] and second.line_length("AB") == pytest.approx(5.0)


def test_nodes_go_beside_the_volume_in_the_subject_hierarchy(scene):
    slicer = scene.slicer
    volume = scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "fetal")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene.scene)
    study = hierarchy.CreateStudyItem(hierarchy.GetSceneItemID(), "study")
    hierarchy.CreateItem(study, volume)
    nodes = update_landmark_nodes(scene.scene, result(), volume_node=volume)
    for node in [nodes.points, nodes.table, *nodes.lines.values()]:
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study


# --- bad results --------------------------------------------------------------------------------------------------


def test_a_line_to_a_missing_landmark_is_a_clear_error_and_changes_nothing(scene):
    bad = result(labels=[label for label in LABELS if label != "HDV2"])
    with pytest.raises(LandmarkResultError, match=r"Line 'HDV' ends at landmark 'HDV2'.*does not contain"):
        update_landmark_nodes(scene.scene, bad)
    assert nodes_of_class(scene, "vtkMRMLMarkupsNode") == []


@pytest.mark.parametrize("document, message", [
    ({"segments": []}, "no 'points' list"),
    ({"points": [{"label": "A", "position": [0, 0, float("nan")]}]}, "no finite"),
    ({"points": [{"label": "A", "position": [0, 0, 0]}, {"label": "A", "position": [1, 1, 1]}]}, "more than once"),
    ({"points": [{"label": "A", "position": [0, 0, 0]}], "lines": [{"name": "L", "from": "A", "to": "A"}]},
     "same landmark"),
])
def test_bad_results_are_value_errors_that_say_what_is_wrong(scene, document, message):
    with pytest.raises(ValueError, match=message):
        update_landmark_nodes(scene.scene, document)


# --- export -------------------------------------------------------------------------------------------------------


def test_export_mrk_json_validates_and_reads_back_through_slicer(scene, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    nodes = update_landmark_nodes(scene.scene, result(), name="Fetal landmarks")
    links = LandmarkLinks(nodes.points)
    links.attach()
    nodes.points.SetNthControlPointPosition(0, *lps_to_ras([10.0, -20.0, 17.0]))  # the user's correction
    links.detach()
    path = export_markups_json(nodes, tmp_path / "landmarks.mrk.json")
    document = json.loads(path.read_text())
    jsonschema.validate(document, json.loads(MARKUPS_SCHEMA.read_text()))
    assert [m["type"] for m in document["markups"]] == ["Fiducial", "Line", "Line", "Line"]
    assert document["markups"][1]["measurements"][0]["value"] == pytest.approx(13.0)

    loaded = new_scene()
    try:
        assert loaded.markups.LoadMarkups(str(path), "")
        found = {n.GetName(): n for n in nodes_of_class(loaded, "vtkMRMLMarkupsNode")}
        assert sorted(found) == ["ADV", "Fetal landmarks", "HDV", "TCD"]
        points = found["Fetal landmarks"]
        assert [points.GetNthControlPointLabel(i) for i in range(6)] == LABELS
        assert points.GetNthControlPointDescription(0) == "confidence 0.93"
        np.testing.assert_allclose(point_position(points, 0), lps_to_ras([10.0, -20.0, 17.0]), atol=1e-9)
        np.testing.assert_allclose(point_position(points, 3), lps_to_ras(POSITIONS["HDV2"]), atol=1e-9)
        assert found["TCD"].GetLineLengthWorld() == pytest.approx(13.0)
    finally:
        loaded.close()


def test_export_csv_has_points_in_lps_and_current_lengths(scene, tmp_path):
    nodes = update_landmark_nodes(scene.scene, result())
    nodes.points.SetNthControlPointDescription(0, "checked by Dr X")   # the user's note: the confidence stays
    path = export_csv(nodes.points, tmp_path / "landmarks.csv")  # a points node is enough
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == LABELS + ["TCD", "HDV", "ADV"]
    assert [float(rows[0][k]) for k in ("x_lps", "y_lps", "z_lps")] == POSITIONS["TCD1"]
    assert rows[0]["kind"] == "point" and float(rows[0]["confidence"]) == pytest.approx(0.93)
    lengths = {r["name"]: float(r["length_mm"]) for r in rows if r["kind"] == "line"}
    for line in LINES:
        assert lengths[line["name"]] == pytest.approx(distance(POSITIONS[line["from"]], POSITIONS[line["to"]]),
                                                      abs=1e-3)
    assert rows[-1]["from"] == "ADV1" and rows[-1]["to"] == "ADV2"
    assert [p.name for p in tmp_path.iterdir()] == ["landmarks.csv"]  # no temp file left


def test_exporting_nothing_is_a_clear_error(scene, tmp_path):
    empty = scene.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty")
    with pytest.raises(LandmarkExportError, match="no landmarks to export"):
        export_csv(empty, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


# --- end to end: volume node -> local server job -> nodes ---------------------------------------------------------


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from NNMambaSlicerLib.backend import Backend

    from model_packages import landmark_package

    root = tmp_path_factory.mktemp("models")
    landmark_package(root / "lm")
    landmark_package(root / "broken", model_id="broken-landmarks")  # its weights get spoiled by a test
    running = Backend.local(device="cpu", models_dir=root)
    yield running
    running.stop()


@pytest.mark.slow  # about 5 s of CPU inference plus the server's start
def test_a_real_server_job_gives_six_points_and_measured_lines(scene, backend):
    from NNMambaLandmarksLib.landmark_run import LandmarkRun, landmark_models
    from NNMambaSlicerLib.job_panel import describe_status
    from NNMambaSlicerLib.volumes import add_volume, volume_geometry

    angle = np.deg2rad(25)
    geometry = Geometry.create((12.0, -30.0, 4.0), (0.9, 0.8, 1.5),
                               [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    array = np.random.default_rng(1).normal(300, 60, size=(20, 28, 24)).astype(np.int16)
    volume = add_volume(scene.scene, array, geometry, "fetal")
    assert ("test-landmarks", "Random landmarks test model (test-landmarks, v0.0.1)") in landmark_models(backend)

    run = LandmarkRun(backend, volume, "test-landmarks")
    nodes = run.wait(timeout=60, interval=0.05)
    assert run.status.state == "done" and describe_status(run.status) == "done"
    assert [nodes.points.GetNthControlPointLabel(i) for i in range(nodes.points.GetNumberOfControlPoints())] == LABELS
    assert nodes.points.GetName() == "fetal landmarks"
    assert nodes.points.GetAttribute("NNMamba.Model") == "test-landmarks"
    assert all(nodes.points.GetNthControlPointDescription(i).startswith("confidence ") for i in range(6))
    for name in ("TCD", "HDV", "ADV"):
        assert math.isfinite(nodes.line_length(name))
    shape = np.array(array.shape[::-1])  # I, J, K
    for index in range(6):  # every landmark lies inside the volume: the RAS/LPS and axis conventions agree
        ijk = volume_geometry(volume).lps_to_index(lps_to_ras(point_position(nodes.points, index)))
        assert np.all(ijk > -0.5 - 1e-6) and np.all(ijk < shape - 0.5 + 1e-6), (index, ijk)

    again = LandmarkRun(backend, volume, "test-landmarks", points_node=nodes.points).wait(timeout=60, interval=0.05)
    assert again.points is nodes.points and len(nodes_of_class(scene, "vtkMRMLMarkupsLineNode")) == 3


@pytest.mark.slow
def test_a_failed_job_is_a_clear_error_and_leaves_the_scene_alone(scene, backend, tmp_path):
    from NNMambaLandmarksLib.landmark_run import LandmarkRun, LandmarkRunError
    from NNMambaSlicerLib.volumes import add_volume

    assert "broken-landmarks" in [m["id"] for m in backend.models(task="landmarks")]
    weights = next((Path(backend.server.models_dir) / "broken").glob("*.safetensors"))   # the server names no path
    weights.write_bytes(b"not the weights the package's sha256 names")
    array = np.random.default_rng(2).normal(300, 60, size=(8, 8, 8)).astype(np.int16)
    volume = add_volume(scene.scene, array, Geometry.create(), "fetal")
    run = LandmarkRun(backend, volume, "broken-landmarks")
    with pytest.raises(LandmarkRunError, match="Landmark detection failed: .*broken-landmarks.*corrupt"):
        run.wait(timeout=30, interval=0.05)
    assert run.status.state == "failed"
    assert nodes_of_class(scene, "vtkMRMLMarkupsNode") == []


def test_status_line_says_the_state_and_the_servers_message():
    from NNMambaSlicerLib.backend import JobStatus, describe_eta
    from NNMambaSlicerLib.job_panel import describe_status

    assert describe_status(JobStatus("running", 0.45, 12.2, "tile 3 of 12", False)) == "running: tile 3 of 12"
    assert describe_status(JobStatus("queued", 0.0, None, "queued (1 job ahead)", False)) == "queued (1 job ahead)"
    assert describe_status(JobStatus("running", 0.1, 600.0, "", False)) == "running"
    assert describe_eta(JobStatus("running", 0.45, 12.2, "tile 3 of 12", False)) == "about 12 s left"
    assert describe_eta(JobStatus("running", 0.1, 600.0, "", False)) == "about 10 min left"


def test_only_a_landmark_result_or_an_empty_list_is_replaced_without_asking(scene):
    from NNMambaLandmarksLib.landmark_nodes import replaces_other_points
    from NNMambaSegmentationLib.click_points import new_click_points

    assert replaces_other_points(None) == 0
    empty = scene.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty")
    assert replaces_other_points(empty) == 0
    mine = scene.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my points")
    for x in (1.0, 2.0):
        mine.AddControlPoint([x, 0.0, 0.0], f"p{x:g}")
    assert replaces_other_points(mine) == 2
    clicks = new_click_points(scene.scene)
    clicks.AddControlPoint([0.0, 0.0, 0.0])
    assert replaces_other_points(clicks) == 1   # the segmentation module's click list is not ours to wipe
    nodes = update_landmark_nodes(scene.scene, result(), model="demo")
    assert replaces_other_points(nodes.points) == 0
