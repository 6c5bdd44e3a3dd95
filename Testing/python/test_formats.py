"""Result files: written by nnmamba.formats, read back by our readers, by slicerio, and by Slicer's own C++ readers
(slicer-core), on oblique, flipped, anisotropic, odd-sized grids. Also: bad input fails before any file exists."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnmamba.formats import (
    atomic_path,
    atomic_write,
    read_classification_json,
    read_landmarks,
    read_segmentation,
    write_classification_csv,
    write_classification_json,
    write_landmarks,
    write_segmentation,
)
from nnmamba.formats.atomic import TEMP_PREFIX
from nnmamba.formats.classification_file import schema_path
from nnmamba.geometry import Geometry, lps_to_ras

from geometry_cases import rotation
from slicer_scene import new_scene

MARKUPS_SCHEMA_NAME = "markups-schema-v1.0.3.json"  # Slicer's own schema; the repo copy wins over the shared one
MARKUPS_SCHEMA_PLACES = [
    Path(__file__).resolve().parents[1] / "data" / "slicer-formats",
    Path("/work/shared/slicer-formats"),
]
TUMOR = (
    "Segmentation category and type - 3D Slicer General Anatomy list~SCT^49755003^Morphologically Altered Structure"
    "~SCT^4147007^Mass~^^~Anatomic codes - DICOM master list~SCT^12738006^Brain~^^"
)
EDEMA = (
    "Segmentation category and type - DICOM master list~SCT^49755003^Morphologically Altered Structure"
    "~SCT^79654002^Edema~^^~~^^~^^"
)




# Oblique, with swapped and flipped axes (det < 0), anisotropic spacing.
OBLIQUE = Geometry.create(
    (-87.25, 120.5, -33.0), (0.7, 1.3, 4.5), rotation(0.3, -0.25, 0.8) @ np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1.0]])
)
SEGMENTS = [
    {"value": 1, "name": "necrotic core", "color": [0.8, 0.1, 0.1], "terminology": TUMOR},
    {"value": 2, "name": "edema", "color": [0.1, 0.8, 0.1], "terminology": EDEMA},
    {"value": 3, "name": "enhancing tumor", "color": [0.9, 0.9, 0.2], "terminology": None},
    {"value": 4, "name": "never predicted", "color": [0.0, 0.0, 1.0], "terminology": None},
]
REGIONS = [
    {"name": "whole tumor", "color": [1.0, 0.5, 0.0], "terminology": TUMOR, "labels": [1, 2, 3]},
    {"name": "tumor core", "color": [1.0, 0.0, 1.0], "terminology": None, "labels": [1, 3]},
]


def blob_labels(shape=(11, 9, 7), seed=0):
    """KJI labels 0..3 (value 4 is declared but absent) with an asymmetric layout, so any transpose shows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=shape).astype(np.int64)
    labels[0] = 0
    labels[-1, -1, -1] = 3
    return labels


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(TEMP_PREFIX))


@pytest.fixture
def slicer_scene():
    scene = new_scene()
    yield scene
    scene.close()


# --- atomic writes ----------------------------------------------------------------------------------------------


def test_atomic_write_creates_folder_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "new" / "folder" / "result.json"
    with atomic_write(target) as handle:
        handle.write("Läsion\n")
        assert not target.exists()  # nothing visible until the body finished
    assert target.read_text(encoding="utf-8") == "Läsion\n"
    assert leftovers(target.parent) == []
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0600


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "result.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_write(target, "wb") as handle:
            handle.write(b"half of the new content")
            raise RuntimeError("midway")
    assert target.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_atomic_path_keeps_the_double_suffix_and_cleans_up(tmp_path):
    target = tmp_path / "case.seg.nrrd"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(TEMP_PREFIX) and temp.name.endswith(".seg.nrrd")
        temp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(KeyError):
        with atomic_path(target) as temp:
            temp.write_bytes(b"partial")
            raise KeyError("injected")
    assert target.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_atomic_write_rejects_append_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x.txt", "a"):
            pass


# --- segmentations ----------------------------------------------------------------------------------------------


def test_segmentation_round_trip_with_our_reader_and_slicerio(tmp_path):
    import slicerio

    labels = blob_labels()
    path = tmp_path / "brats.seg.nrrd"
    write_segmentation(path, labels, OBLIQUE, SEGMENTS)

    ours = read_segmentation(path)
    assert ours.labels.shape == (11, 9, 7) and ours.layers.shape == (1, 11, 9, 7)
    assert np.array_equal(ours.labels, labels)
    for read, written in zip(ours.geometry, OBLIQUE):
        assert np.allclose(read, written, atol=1e-9)
    assert ours.offset == (0, 0, 0) and ours.reference_shape == (11, 9, 7)
    assert [s["name"] for s in ours.segments] == [s["name"] for s in SEGMENTS]
    assert [s["id"] for s in ours.segments] == ["necrotic_core", "edema", "enhancing_tumor", "never_predicted"]
    assert [s["value"] for s in ours.segments] == [1, 2, 3, 4]
    assert [s["terminology"] for s in ours.segments] == [s["terminology"] for s in SEGMENTS]
    assert np.allclose([s["color"] for s in ours.segments], [s["color"] for s in SEGMENTS])
    assert ours.mask("edema").sum() == (labels == 2).sum()

    theirs = slicerio.read_segmentation(str(path))
    assert theirs["voxels"].dtype == np.uint8
    assert np.array_equal(theirs["voxels"], labels.transpose(2, 1, 0))  # slicerio is IJK
    assert np.allclose(theirs["ijkToLPS"], OBLIQUE.ijk_to_lps(), atol=1e-9)
    assert theirs["masterRepresentation"] == "Binary labelmap"
    by_name = {s["name"]: s for s in theirs["segments"]}
    assert by_name["necrotic core"]["labelValue"] == 1 and by_name["necrotic core"]["layer"] == 0
    assert by_name["necrotic core"]["terminology"]["type"] == ["SCT", "4147007", "Mass"]
    assert by_name["edema"]["colorAutoGenerated"] is False and by_name["edema"]["nameAutoGenerated"] is False


def test_regions_make_a_four_dimensional_file(tmp_path):
    import nrrd

    labels = blob_labels()
    path = tmp_path / "overlap.seg.nrrd"
    write_segmentation(path, labels, OBLIQUE, SEGMENTS, regions=REGIONS)
    header = nrrd.read_header(str(path))
    assert header["kinds"] == ["list", "domain", "domain", "domain"]
    assert list(header["sizes"]) == [3, 7, 9, 11]
    back = read_segmentation(path)
    assert np.array_equal(back.labels, labels)
    assert np.array_equal(back.mask("whole tumor"), np.isin(labels, [1, 2, 3]))
    assert np.array_equal(back.mask("tumor_core"), np.isin(labels, [1, 3]))
    assert [(s["layer"], s["value"]) for s in back.segments[-2:]] == [(1, 1), (2, 1)]


def test_large_label_values_use_uint16(tmp_path):
    import nrrd

    labels = np.zeros((3, 4, 5), dtype=np.int32)
    labels[1, 2, 3] = 300
    path = tmp_path / "many.seg.nrrd"
    write_segmentation(path, labels, Geometry.create(), [{"value": 300, "name": "x", "color": [1, 0, 0]}])
    assert nrrd.read_header(str(path))["type"] in ("uint16", "unsigned short")
    assert read_segmentation(path).labels[1, 2, 3] == 300


def _slicer_voxel_indices(slicer, segment, value):
    """KJI indices (in the reference grid) of the voxels Slicer holds for a segment, and its IJK->RAS matrix."""
    import vtk
    from vtk.util import numpy_support

    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k1 - k0 + 1, j1 - j0 + 1, -1)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return np.argwhere(voxels == value) + [k0, j0, i0], ijk_to_ras, (i0, j0, k0)


@pytest.mark.parametrize(
    "geometry, shape, offset, regions",
    [
        (OBLIQUE, (11, 9, 7), (0, 0, 0), ()),
        (OBLIQUE, (11, 9, 7), (3, 5, 2), REGIONS),
        (Geometry.create((10.0, -20.0, 5.0), (1.0, 1.0, 1.0)), (4, 6, 5), (7, 0, 1), ()),
    ],
    ids=["oblique-3d", "oblique-regions-offset", "axial-offset"],
)
def test_slicer_reads_our_segmentation(tmp_path, slicer_scene, geometry, shape, offset, regions):
    import vtk

    slicer = slicer_scene.slicer
    labels = blob_labels(shape)
    reference_shape = (20, 19, 18)
    path = tmp_path / "result.seg.nrrd"
    write_segmentation(path, labels, geometry, SEGMENTS, regions, offset=offset, reference_shape=reference_shape)

    node = slicer_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer_scene.add_storage_node("vtkMRMLSegmentationStorageNode", path)
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    entries = SEGMENTS + list(regions)
    assert segmentation.GetNumberOfSegments() == len(entries)

    masks = [labels == s["value"] for s in SEGMENTS] + [np.isin(labels, r["labels"]) for r in regions]
    for index, (entry, mask) in enumerate(zip(entries, masks)):
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(index))
        assert segment.GetName() == entry["name"]
        assert np.allclose(segment.GetColor(), entry["color"], atol=1e-6)
        assert segment.GetNameAutoGenerated() is False and segment.GetColorAutoGenerated() is False
        value = entry.get("value", 1)
        assert segment.GetLabelValue() == value
        tag = vtk.mutable("")
        assert segment.GetTag("TerminologyEntry", tag)
        if entry["terminology"]:
            assert str(tag) == entry["terminology"]
        indices, ijk_to_ras, start = _slicer_voxel_indices(slicer, segment, value)
        expected = np.argwhere(mask) + np.array(offset)[::-1]
        assert len(indices) == mask.sum()  # "never predicted" included: 0 voxels
        assert np.array_equal(indices, expected)
        assert np.allclose(ijk_to_ras, geometry.ijk_to_ras(), atol=1e-6)
        assert start == offset

    # The reference grid survives too, so Slicer's Segment Editor can grow the result over the whole image.
    matrix, extent = vtk.vtkMatrix4x4(), [0] * 6
    reference = segmentation.GetConversionParameter("Reference image geometry")
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(reference, matrix, extent)
    assert np.allclose(slicer.util.arrayFromVTKMatrix(matrix), geometry.ijk_to_ras(), atol=1e-9)
    assert extent == [0, 17, 0, 18, 0, 19]

    back = read_segmentation(path)
    assert back.offset == offset and back.reference_shape == reference_shape
    for read, written in zip(back.geometry, geometry):
        assert np.allclose(read, written, atol=1e-9)


def test_our_reader_reads_a_slicer_written_overlapping_file():
    import slicerio

    path = slicerio.get_testdata_file("SegmentationOverlapping.seg.nrrd")
    ours = read_segmentation(path)
    theirs = slicerio.read_segmentation(path)
    assert ours.layers.ndim == 4 and ours.layers.shape[0] == theirs["voxels"].shape[0] > 1
    assert ours.layers.shape[1:] == theirs["voxels"].shape[:0:-1]
    assert [s["name"] for s in ours.segments] == [s["name"] for s in theirs["segments"]]
    first = theirs["segments"][0]
    assert ours.mask(first["id"]).sum() == slicerio.segment_mask(theirs, first["id"]).sum() > 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"segments": SEGMENTS[1:]}, r"Label values \[1\]"),
        ({"segments": SEGMENTS + [dict(SEGMENTS[0], name="again")]}, "segment value must be unique"),
        ({"segments": [dict(SEGMENTS[0], name="Läsion")] + SEGMENTS[1:]}, "ASCII"),
        ({"segments": [dict(SEGMENTS[0], color=[1, 2, 0])] + SEGMENTS[1:]}, "color"),
        ({"segments": [dict(SEGMENTS[0], terminology="Tissue")] + SEGMENTS[1:]}, "TerminologyEntry"),
        ({"segments": [dict(SEGMENTS[0], value=0)] + SEGMENTS[1:]}, "value"),
        ({"regions": [dict(REGIONS[0], labels=[1, 9])]}, "labels"),
        ({"regions": [dict(REGIONS[0], name="edema")]}, "name must be unique"),
        ({"labels": blob_labels().astype(float)}, "integers"),
        ({"labels": -blob_labels()}, "negative"),
        ({"offset": (-1, 0, 0)}, "offset"),
        ({"offset": (10, 0, 0), "reference_shape": (11, 9, 12)}, "beyond the reference image"),
    ],
)
def test_bad_segmentation_input_leaves_old_file_untouched(tmp_path, change, message):
    path = tmp_path / "result.seg.nrrd"
    path.write_bytes(b"previous result")
    arguments = {"labels": blob_labels(), "geometry": OBLIQUE, "segments": SEGMENTS, **change}
    with pytest.raises(ValueError, match=message):
        write_segmentation(path, **arguments)
    assert path.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []


def test_segmentation_writer_failing_inside_the_write_leaves_nothing(tmp_path, monkeypatch):
    import slicerio

    def failing_write(file, segmentation, **kwargs):
        Path(file).write_bytes(b"NRRD0005\npartial")
        raise OSError("disk full")

    monkeypatch.setattr(slicerio, "write_segmentation", failing_write)
    path = tmp_path / "sub" / "result.seg.nrrd"
    with pytest.raises(OSError, match="disk full"):
        write_segmentation(path, blob_labels(), OBLIQUE, SEGMENTS)
    assert not path.exists() and leftovers(path.parent) == []


def test_reading_a_file_that_is_not_nrrd_fails_clearly(tmp_path):
    path = tmp_path / "broken.seg.nrrd"
    path.write_text("not a segmentation")
    with pytest.raises(ValueError, match="not a readable .seg.nrrd"):
        read_segmentation(path)


def test_failure_at_the_final_rename_removes_the_temp_file(tmp_path):
    path = tmp_path / "result.seg.nrrd"
    path.mkdir()  # a real failure after the whole file was written: the target is a folder
    with pytest.raises(OSError):
        write_segmentation(path, blob_labels(), OBLIQUE, SEGMENTS)
    assert path.is_dir() and leftovers(tmp_path) == []


def test_importing_formats_loads_no_heavy_package():
    code = (
        "import sys, nnmamba.formats; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'slicerio', 'nrrd', 'torch', 'SimpleITK', 'slicer'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- landmarks --------------------------------------------------------------------------------------------------

POINTS = [
    {"label": "TCD1", "position": [10.5, -20.25, 30.0], "description": "confidence 0.93"},
    {"label": "TCD2", "position": [13.5, -16.25, 30.0], "description": "confidence 0.88"},
    {"label": "HDV1", "position": [-4.0, 7.0, 12.5]},
    {"label": "HDV2", "position": [-4.0, 9.0, 1.25], "description": ""},
]
LINES = [
    {"name": "TCD", "from": "TCD1", "to": "TCD2", "description": "transverse cerebellar diameter"},
    {"name": "HDV", "from": "HDV1", "to": "HDV2"},
]


def test_landmarks_file_validates_against_slicer_schema(tmp_path):
    import jsonschema

    path = tmp_path / "landmarks.mrk.json"
    write_landmarks(path, POINTS, LINES)
    document = json.loads(path.read_text())
    schema = next(
        (place / MARKUPS_SCHEMA_NAME for place in MARKUPS_SCHEMA_PLACES if (place / MARKUPS_SCHEMA_NAME).exists()), None
    )
    if schema is None:
        pytest.skip(f"{MARKUPS_SCHEMA_NAME} not found in {[str(p) for p in MARKUPS_SCHEMA_PLACES]}")
    jsonschema.validate(document, json.loads(schema.read_text()))
    assert document["@schema"].endswith("markups-schema-v1.0.3.json#")
    fiducial, tcd, hdv = document["markups"]
    assert (fiducial["type"], fiducial["coordinateSystem"], fiducial["coordinateUnits"]) == ("Fiducial", "LPS", "mm")
    assert fiducial["fixedNumberOfControlPoints"] is True and fiducial["locked"] is False
    assert [p["id"] for p in fiducial["controlPoints"]] == ["1", "2", "3", "4"]
    assert {p["positionStatus"] for p in fiducial["controlPoints"]} == {"defined"}
    assert [p["label"] for p in tcd["controlPoints"]] == ["TCD1", "TCD2"]
    assert tcd["measurements"] == [
        {"name": "length", "enabled": True, "value": 5.0, "units": "mm", "printFormat": "%-#4.4g%s"}
    ]
    assert hdv["type"] == "Line" and hdv["name"] == "HDV"


def test_slicer_loads_every_markup_of_the_file(tmp_path, slicer_scene):
    path = tmp_path / "landmarks.mrk.json"
    write_landmarks(path, POINTS, LINES, name="Fetal landmarks")
    markups_logic = slicer_scene.markups
    assert markups_logic.LoadMarkups(str(path), "")
    nodes = slicer_scene.scene.GetNodesByClass("vtkMRMLMarkupsNode")
    loaded = {nodes.GetItemAsObject(i).GetName(): nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())}
    assert sorted(loaded) == ["Fetal landmarks", "HDV", "TCD"]  # one node per markup, named from the file

    fiducial = loaded["Fetal landmarks"]
    assert fiducial.GetClassName() == "vtkMRMLMarkupsFiducialNode"
    assert fiducial.GetNumberOfControlPoints() == len(POINTS)
    for index, point in enumerate(POINTS):
        assert fiducial.GetNthControlPointLabel(index) == point["label"]
        assert fiducial.GetNthControlPointDescription(index) == point.get("description", "")
        assert np.allclose(fiducial.GetNthControlPointPosition(index), lps_to_ras(point["position"]), atol=1e-9)

    for line in LINES:
        node = loaded[line["name"]]
        assert node.GetClassName() == "vtkMRMLMarkupsLineNode"
        assert [node.GetNthControlPointLabel(i) for i in range(2)] == [line["from"], line["to"]]
        start, end = (next(p["position"] for p in POINTS if p["label"] == line[e]) for e in ("from", "to"))
        expected = math.dist(start, end)
        assert node.GetLineLengthWorld() == pytest.approx(expected, abs=1e-9)
        measurement = node.GetMeasurement("length")
        assert measurement.GetValue() == pytest.approx(expected, abs=1e-9) and measurement.GetUnits() == "mm"

    back = read_landmarks(path)
    assert [p["label"] for p in back.points] == [p["label"] for p in POINTS]
    assert np.allclose([p["position"] for p in back.points], [p["position"] for p in POINTS])
    assert back.points[0]["description"] == "confidence 0.93"
    assert [(line["name"], line["from"], line["to"]) for line in back.lines] == [
        ("TCD", "TCD1", "TCD2"),
        ("HDV", "HDV1", "HDV2"),
    ]
    assert back.lines[0]["length"] == pytest.approx(5.0) and back.lines[0]["description"] == LINES[0]["description"]


def test_our_reader_reads_a_slicer_written_point_list(tmp_path, slicer_scene):
    node = slicer_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "From Slicer")
    node.AddControlPoint([1.0, 2.0, 3.0], "A")  # RAS
    storage = slicer_scene.add_storage_node("vtkMRMLMarkupsJsonStorageNode", tmp_path / "slicer.mrk.json")
    assert storage.WriteData(node)
    back = read_landmarks(tmp_path / "slicer.mrk.json")
    assert back.points == [{"label": "A", "position": [-1.0, -2.0, 3.0], "description": ""}]


@pytest.mark.parametrize(
    "points, lines, message",
    [
        ([dict(POINTS[0], position=[1.0, float("nan"), 2.0])], [], "NaN"),
        ([POINTS[0], dict(POINTS[1], label="TCD1")], [], r"label must be unique; repeated: \['TCD1'\]"),
        (POINTS, [{"name": "X", "from": "TCD1", "to": "ADV2"}], "'ADV2'"),
        (POINTS, [{"name": "X", "from": "TCD1", "to": "TCD1"}], "same landmark"),
        (POINTS, [LINES[0], LINES[0]], "line name must be unique"),
        ([dict(POINTS[0], position=[1.0, 2.0])], [], r"\[x, y, z\]"),
    ],
)
def test_bad_landmarks_raise_and_write_nothing(tmp_path, points, lines, message):
    path = tmp_path / "landmarks.mrk.json"
    with pytest.raises(ValueError, match=message):
        write_landmarks(path, points, lines)
    assert list(tmp_path.iterdir()) == []


def test_reading_a_json_that_is_not_markups_fails_clearly(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"markups": []}')
    with pytest.raises(ValueError, match="not a Slicer markups file"):
        read_landmarks(path)


# --- classification ---------------------------------------------------------------------------------------------

RESULT = {
    "model": {"id": "nnmamba-adni-nc-ad", "version": "1"},
    "input": "sub-01_T1w.nii.gz",
    "classes": ["NC", "AD"],
    "probabilities": [np.float32(0.25), np.float64(0.75)],
    "decision": "AD",
    "rule": {"kind": "threshold", "class": "AD", "threshold": 0.5},
    "logits": np.array([1.0986]),
}


def test_classification_json_keeps_every_key(tmp_path):
    path = tmp_path / "out" / "classification.json"
    write_classification_json(path, RESULT)
    back = read_classification_json(path)
    assert back["probabilities"] == [0.25, 0.75] and back["decision"] == "AD"
    assert back["rule"] == RESULT["rule"] and back["model"] == RESULT["model"] and back["logits"] == [1.0986]


def test_slicer_reads_the_classification_table(tmp_path, slicer_scene):
    path = tmp_path / "classification.csv"
    write_classification_csv(path, RESULT)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["class", "probability", "decision"], ["NC", "0.25", "0"], ["AD", "0.75", "1"]]
    assert schema_path(path).name == "classification.schema.csv"

    table_node = slicer_scene.scene.AddNewNodeByClass("vtkMRMLTableNode")
    storage = slicer_scene.add_storage_node("vtkMRMLTableStorageNode", path)
    assert storage.ReadData(table_node) == 1
    table = table_node.GetTable()
    assert table.GetNumberOfRows() == 2
    columns = {table.GetColumn(c).GetName(): table.GetColumn(c) for c in range(table.GetNumberOfColumns())}
    assert sorted(columns) == ["class", "decision", "probability"]
    assert [columns["class"].GetValue(r) for r in range(2)] == ["NC", "AD"]
    assert columns["probability"].IsA("vtkDoubleArray")  # typed by the .schema.csv, not text
    assert [columns["probability"].GetValue(r) for r in range(2)] == [0.25, 0.75]
    assert columns["decision"].IsA("vtkIntArray")
    assert [columns["decision"].GetValue(r) for r in range(2)] == [0, 1]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"decision": "MCI"}, "not one of the classes"),
        ({"probabilities": [0.5]}, "one number per class"),
        ({"probabilities": [1.5, -0.5]}, "within 0..1"),
        ({"probabilities": [float("nan"), 1.0]}, "finite"),
        ({"classes": ["AD", "AD"]}, "unique"),
    ],
)
def test_bad_classification_raises_and_writes_nothing(tmp_path, change, message):
    for writer in (write_classification_json, write_classification_csv):
        with pytest.raises(ValueError, match=message):
            writer(tmp_path / "classification.out", {**RESULT, **change})
    assert list(tmp_path.iterdir()) == []
