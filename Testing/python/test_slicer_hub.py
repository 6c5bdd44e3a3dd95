"""NNMambaSlicerLib (the hub module's GUI-free code) against real MRML from slicer-core and a real local nnmamba
server: volume nodes <-> arrays and LPS geometry (oblique, flipped), the backend's upload cache, jobs with progress
and cancel, a refused token, dependency checks, the environment report, the model manager and the classification
table."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from NNMambaSlicerLib import backend as backend_module
from NNMambaSlicerLib.backend import Backend, JobStatus
from NNMambaSlicerLib.volumes import VolumeNodeError, add_volume, volume_array, volume_geometry

from nnmamba.geometry import Geometry

from slicer_scene import new_scene

ROOT = Path(__file__).resolve().parents[2]

ANGLE = np.deg2rad(25)
OBLIQUE = Geometry.create((12.5, -30.0, 4.25), (0.7, 0.9, 2.5),
                          [[np.cos(ANGLE), 0, np.sin(ANGLE)], [0, 1, 0], [-np.sin(ANGLE), 0, np.cos(ANGLE)]])
FLIPPED = Geometry.create((-3.0, 8.0, 100.0), (1.0, 1.25, 3.0), [[-1, 0, 0], [0, 0, 1], [0, 1, 0]])
LEFT_HANDED = Geometry.create((-3.0, 8.0, 100.0), (1.0, 1.25, 3.0), [[-1, 0, 0], [0, 0, 1], [0, -1, 0]])


def random_volume(shape=(6, 9, 11), dtype=np.int16, seed=0):
    return np.random.default_rng(seed).integers(-500, 1500, size=shape).astype(dtype)


def assert_same_geometry(actual, expected, atol=1e-9):
    np.testing.assert_allclose(actual.origin, expected.origin, atol=atol)
    np.testing.assert_allclose(actual.spacing, expected.spacing, atol=atol)
    np.testing.assert_allclose(actual.direction, expected.direction, atol=atol)


# ------------------------------------------------------------------------------------------------------ volumes

@pytest.mark.parametrize("geometry", [OBLIQUE, FLIPPED], ids=["oblique", "flipped"])
def test_volume_round_trip_keeps_voxels_and_geometry(scene, geometry):
    array = random_volume()
    node = add_volume(scene.scene, array, geometry, "input")
    assert node.IsA("vtkMRMLScalarVolumeNode") and node.GetName() == "input"
    assert node.GetImageData().GetDimensions() == (11, 9, 6)   # I J K
    assert_same_geometry(volume_geometry(node), geometry)
    copy = volume_array(node)
    np.testing.assert_array_equal(copy, array)
    copy[0, 0, 0] += 1   # a copy: the node's voxels stay as they were
    assert volume_array(node)[0, 0, 0] == array[0, 0, 0]
    ijk_to_ras = np.array(scene.slicer.util.arrayFromVTKMatrix(_ijk_to_ras(node)))
    np.testing.assert_allclose(ijk_to_ras, geometry.ijk_to_ras(), atol=1e-9)


def _ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


@pytest.mark.parametrize("geometry", [OBLIQUE, FLIPPED], ids=["oblique", "flipped"])
def test_geometry_matches_simpleitk_reading_the_nrrd_slicer_writes(scene, geometry, tmp_path):
    array = random_volume(dtype=np.float32)
    node = add_volume(scene.scene, array, geometry, "written by Slicer")
    storage = scene.add_storage_node("vtkMRMLVolumeArchetypeStorageNode", tmp_path / "volume.nrrd")
    assert storage.WriteData(node) == 1
    image = sitk.ReadImage(str(tmp_path / "volume.nrrd"))
    assert_same_geometry(Geometry.from_sitk(image), volume_geometry(node), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume_array(node))


@pytest.mark.parametrize("geometry", [OBLIQUE, FLIPPED], ids=["oblique", "flipped"])
def test_geometry_of_a_volume_slicer_reads_from_a_simpleitk_file(scene, geometry, tmp_path):
    array = random_volume(dtype=np.uint8)
    node = read_with_slicer(scene, array, geometry, tmp_path)
    assert_same_geometry(volume_geometry(node), geometry, atol=1e-6)
    np.testing.assert_array_equal(volume_array(node), array)


def test_left_handed_file_keeps_every_voxel_at_its_place(scene, tmp_path):
    """Slicer's reader makes a left-handed IJK->RAS right-handed by reversing K; what counts is that each voxel
    value still sits at the same physical point."""
    array = random_volume(dtype=np.uint8)
    node = read_with_slicer(scene, array, LEFT_HANDED, tmp_path)
    geometry, voxels = volume_geometry(node), volume_array(node)
    assert np.linalg.det(geometry.direction) > 0
    np.testing.assert_array_equal(voxels, array[::-1])
    index = np.array([[0, 0, 0], [10, 8, 5], [3, 4, 1]])   # I J K in the file
    points = LEFT_HANDED.index_to_lps(index)
    found = np.rint(geometry.lps_to_index(points)).astype(int)
    for (i, j, k), (fi, fj, fk) in zip(index, found):
        assert voxels[fk, fj, fi] == array[k, j, i]


def read_with_slicer(scene, array, geometry, folder):
    image = geometry.apply_to_sitk(sitk.GetImageFromArray(array))
    sitk.WriteImage(image, str(folder / "from_sitk.nrrd"))
    node = scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "read by Slicer")
    storage = scene.add_storage_node("vtkMRMLVolumeArchetypeStorageNode", folder / "from_sitk.nrrd")
    assert storage.ReadData(node) == 1
    return node


def test_vector_and_missing_volumes_are_refused_clearly(scene):
    vector = scene.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour photo")
    scene.slicer.util.updateVolumeFromArray(vector, np.zeros((2, 3, 4, 3), dtype=np.uint8))
    with pytest.raises(VolumeNodeError, match="3 components per voxel.*scalar volume"):
        volume_array(vector)
    with pytest.raises(VolumeNodeError, match="No input volume"):
        volume_geometry(None)
    empty = scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(VolumeNodeError, match="no voxels"):
        volume_array(empty)
    with pytest.raises(VolumeNodeError, match="3D"):
        add_volume(scene.scene, np.zeros((4, 4)), OBLIQUE, "flat")


def test_add_volume_as_label_map_and_with_64_bit_labels(scene):
    labels = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    node = add_volume(scene.scene, labels, OBLIQUE, "labels", class_name="vtkMRMLLabelMapVolumeNode")
    assert node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetDisplayNode() is not None
    np.testing.assert_array_equal(volume_array(node), labels)


# ------------------------------------------------------------------------------------------------------ backend

def test_local_backend_lists_models_by_task(local_backend):
    assert local_backend.kind == "local" and local_backend.is_alive()
    assert {m["id"] for m in local_backend.models("classification")} >= {"test-cls"}
    assert all(m["task"] == "segmentation" for m in local_backend.models("segmentation"))
    assert "test-seg" in {m["id"] for m in local_backend.models()}


def test_volume_is_uploaded_once_and_again_after_it_changed(scene, local_backend):
    from nnmamba.client import BackendRequestError

    node = add_volume(scene.scene, random_volume(), OBLIQUE, "brain")
    first = local_backend.session_for([node])
    assert local_backend.session_for(node) == first   # unchanged: no second upload
    node.SetAttribute("NNMamba.Classification", "atrophy")   # what a classification run does to the node
    node.SetName("renamed")
    assert local_backend.session_for([node]) == first
    info = local_backend.client.session(first)
    assert info["shape"] == [1, 6, 9, 11] and info["name"] == "brain"   # the name at upload time
    np.testing.assert_allclose(info["geometry"]["origin"], OBLIQUE.origin, atol=1e-9)

    scene.slicer.util.arrayFromVolume(node)[0, 0, 0] += 7   # voxels edited in place
    scene.slicer.util.arrayFromVolumeModified(node)
    second = local_backend.session_for([node])
    assert second != first
    with pytest.raises(BackendRequestError) as gone:   # the outdated upload was freed on the server
        local_backend.client.session(first)
    assert gone.value.status == 404

    node.SetSpacing(1.0, 1.0, 1.0)   # geometry edited
    third = local_backend.session_for([node])
    assert third != second
    np.testing.assert_allclose(local_backend.client.session(third)["geometry"]["spacing"], [1, 1, 1])

    local_backend.client.delete_session(third)   # expired on the server: uploaded again, not an error
    assert local_backend.session_for([node]) not in (third, None)


def test_two_channels_on_one_grid_and_a_mismatch(scene, local_backend):
    a = add_volume(scene.scene, random_volume(seed=1), FLIPPED, "T1")
    b = add_volume(scene.scene, random_volume(seed=2), FLIPPED, "T2")
    session = local_backend.session_for([a, b])
    assert local_backend.client.session(session)["shape"] == [2, 6, 9, 11]
    c = add_volume(scene.scene, random_volume(seed=3), OBLIQUE, "elsewhere")
    with pytest.raises(ValueError, match="do not share one voxel grid"):
        local_backend.session_for([a, c])


def poll_until_done(job, timeout=60.0):
    statuses = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job.poll()
        statuses.append(status)
        if status.done:
            return statuses
        time.sleep(0.05)
    raise AssertionError(f"job did not end within {timeout} s: {statuses[-1]}")


def test_classification_job_completes_with_progress_and_result(scene, local_backend, tmp_path):
    node = add_volume(scene.scene, random_volume(shape=(16, 16, 16)), OBLIQUE, "patient 7")
    job = local_backend.start_job([node], "classification", "test-cls")
    statuses = poll_until_done(job)
    final = statuses[-1]
    assert isinstance(final, JobStatus) and final.state == "done" and final.succeeded and final.error is None
    assert final.progress == pytest.approx(1.0)
    assert all(0.0 <= s.progress <= 1.0 for s in statuses)
    result = job.result_json()
    assert result["classes"] == ["NC", "AD"] and result["decision"] in result["classes"]
    assert sum(result["probabilities"]) == pytest.approx(1.0)
    path = job.result_file(tmp_path / "results")
    assert path.name == "patient_7.json" and path.read_text().startswith("{")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]


def test_segmentation_job_result_file_reads_back(scene, local_backend, tmp_path):
    from nnmamba.formats import read_segmentation

    node = add_volume(scene.scene, random_volume(shape=(12, 14, 16)), FLIPPED, "ct")
    job = local_backend.start_job(node, "segmentation", "test-seg")
    assert poll_until_done(job)[-1].state == "done"
    segmentation = read_segmentation(job.result_file(tmp_path))
    assert segmentation.labels.shape == (12, 14, 16)
    assert_same_geometry(segmentation.geometry, FLIPPED, atol=1e-5)


def test_running_job_is_cancelled(scene, local_backend):
    node = add_volume(scene.scene, random_volume(shape=(64, 64, 64)), OBLIQUE, "large")
    job = local_backend.start_job([node], "segmentation", "test-seg", overlap=0.9)
    deadline = time.monotonic() + 30
    while job.poll().state == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.last_status.state == "running"
    job.cancel()
    final = poll_until_done(job, timeout=30)[-1]
    assert final.state == "cancelled" and final.done and not final.succeeded
    job.cancel()   # cancelling an ended job is harmless


def test_failed_job_reports_the_servers_reason(scene, local_backend):
    from nnmamba.client import BackendRequestError

    node = add_volume(scene.scene, random_volume(), OBLIQUE, "x")
    with pytest.raises(BackendRequestError, match="is a segmentation model"):
        local_backend.start_job([node], "classification", "test-seg")
    with pytest.raises(BackendRequestError, match="No model 'nope'"):
        local_backend.start_job([node], "classification", "nope")


def test_remote_backend_with_a_wrong_token_fails_at_connect(local_backend):
    from nnmamba.client import BackendError

    with pytest.raises(BackendError, match="refused the token") as error:
        Backend.remote(local_backend.url, "not-the-token")
    assert error.value.status == 401
    remote = Backend.remote(local_backend.url, local_backend.server.token)
    assert remote.kind == "remote" and remote.url == local_backend.url
    assert "test-cls" in {m["id"] for m in remote.models("classification")}
    remote.stop()   # a remote backend never stops the server
    assert local_backend.is_alive()


def test_shared_backend_accessors(local_backend):
    assert backend_module.shared_backend() is None
    with pytest.raises(backend_module.BackendNotConnected, match="Open the NNMamba module"):
        backend_module.require_shared_backend()
    try:
        assert backend_module.set_shared_backend(local_backend) is local_backend
        assert backend_module.require_shared_backend() is local_backend
    finally:
        backend_module._shared = None   # not set_shared_backend(None): that would stop the module's server


def test_local_server_command_finds_the_shipped_nnmamba():
    server = backend_module._local_server_class()(python="/opt/Slicer/bin/PythonSlicer", device="cpu")
    command = server.command()
    assert command[:2] == ["/opt/Slicer/bin/PythonSlicer", "-c"]
    assert str(ROOT / "NNMambaSlicer") in command[2] and command[3:6] == ["serve", "--host", "127.0.0.1"]
    assert backend_module.default_python()


# --------------------------------------------------------------------------------------------------- install

def test_requirements_file_lists_what_nnmamba_imports_and_nothing_of_slicers():
    from NNMambaSlicerLib.install import PROTECTED, REQUIREMENTS_FILE, import_name, load_requirements

    requirements = load_requirements()
    assert REQUIREMENTS_FILE == ROOT / "NNMambaSlicer" / "Resources" / "requirements.txt"
    assert {import_name(r) for r in requirements} >= {"safetensors", "slicerio", "jsonschema", "tqdm", "fastapi",
                                                      "uvicorn"}
    assert not {import_name(r) for r in requirements} & {"numpy", "SimpleITK", "requests", "torch"}
    assert all("==" not in r for r in requirements)   # no exact pins
    assert "numpy" in PROTECTED and "SimpleITK" in PROTECTED and "requests" in PROTECTED


def test_missing_requirements_by_import_name(tmp_path):
    from NNMambaSlicerLib.install import load_requirements, missing_requirements

    present = {"safetensors", "yaml", "fastapi"}

    def find_spec(name):
        return object() if name in present else None

    requirements = ["safetensors>=0.4", "PyYAML>=6", "uvicorn[standard]>=0.29", "fastapi ; python_version >= '3.9'",
                    "old-thing ; python_version < '3.0'", "slicer-io-x>=1"]
    assert missing_requirements(requirements, find_spec=find_spec) == ["uvicorn[standard]>=0.29", "slicer-io-x>=1"]
    # this environment has them all (the venv is what Slicer has after 'Install dependencies')
    assert missing_requirements(load_requirements()) == []
    (tmp_path / "bad.txt").write_text("# ours\nsafetensors\nnumpy>=2  # Slicer's\n")
    with pytest.raises(ValueError, match="numpy>=2.*Slicer"):
        load_requirements(tmp_path / "bad.txt")


def test_nothing_to_install_in_a_complete_environment():
    import torch
    from NNMambaSlicerLib.install import dependency_status, ensure_dependencies, install_torch, torch_installed

    assert torch_installed() and install_torch(ask=True) is torch
    assert ensure_dependencies(ask=True) == []   # no dialog, no pip: everything is importable
    status = dependency_status()
    assert status["torch"] and all(status.values()) and "fastapi>=0.110" in status


def test_protected_constraints_pin_installed_versions():
    from NNMambaSlicerLib.install import protected_constraints

    versions = {"numpy": "2.0.2", "SimpleITK": "2.5.5"}
    assert protected_constraints(versions.get) == ["numpy==2.0.2", "SimpleITK==2.5.5"]
    import numpy

    assert f"numpy=={numpy.__version__}" in protected_constraints()


# -------------------------------------------------------------------------------------------- environment report

def test_environment_report_from_the_servers_answer(local_backend):
    import torch
    from NNMambaSlicerLib.environment_report import collect_report, format_report

    report = collect_report(local_backend)
    assert report["source"] == "server" and report["problem"] is None
    text = format_report(report)
    assert text.startswith("NNMamba environment report\n")
    fields = report_fields(text)
    assert fields["Backend"] == f"local server at {local_backend.url}"
    assert fields["torch"] == f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})"
    assert fields["CUDA available"] == "no" and fields["Device"] == "cpu"
    assert fields["Selective scan"].startswith(report["environment"]["scan_backend"] + " (")
    assert fields["nnmamba (backend)"] == "0.1.0" and fields["Jobs"] == "0 running, 0 queued"
    assert fields["Backend memory"].endswith(" GB")


def report_fields(text):
    """``key: value`` lines of the report as a dict (the keys are padded to one width)."""
    return {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in text.splitlines()[1:])}


def test_environment_report_without_a_server_and_with_a_dead_one(models_root):
    from NNMambaSlicerLib.environment_report import collect_report, environment_text

    from nnmamba.client import Client

    fields = report_fields(environment_text(None, device="cpu"))
    assert fields["Backend"] == "none connected" and fields["Facts from"] == "this process (no backend connected)"
    assert fields["Device"] == "cpu" and "Problem" not in fields
    dead = Backend(Client("http://127.0.0.1:9", token="x", timeout=1, retries=0))
    report = collect_report(dead, device="cpu")
    assert "did not answer" in report["problem"] and report["source"].startswith("this process")


# -------------------------------------------------------------------------------------------------- models

def test_model_list_has_installed_bundled_and_catalog_models(models_root, tmp_path):
    from NNMambaSlicerLib.models import list_models

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{}")
    rows = {row.id: row for row in list_models(tmp_path)}
    assert rows["broken"].state == "invalid" and "model.json" in rows["broken"].problem or rows["broken"].problem
    demo = rows["demo-brain-atrophy"]
    assert demo.source == "bundled" and demo.task == "classification" and demo.installed and demo.state == "installed"
    catalog = rows["adni-nc-ad-nnmamba"]
    assert catalog.source == "catalog" and not catalog.installed and catalog.preset == "adni-nc-ad"
    assert catalog.state == "not installed"
    assert {row.task for row in list_models(tmp_path, task="landmarks")} == {"landmarks"}


def test_import_package_folder_and_zip_then_verify(models_root, tmp_path):
    from NNMambaSlicerLib.models import ModelImportFailed, import_model, list_models, verify_model

    from nnmamba.modelpkg import zip_package

    target = tmp_path / "models"
    package, notes = import_model(models_root / "test-cls", models_dir=target)
    assert package.root == target / "test-cls" and notes == []
    assert verify_model(package.root).verified is True
    row = next(row for row in list_models(target) if row.id == "test-cls")
    assert row.source == "user" and row.inputs == ["image 0"]
    with pytest.raises(ModelImportFailed, match="already installed"):
        import_model(models_root / "test-cls", models_dir=target)

    archive = zip_package(models_root / "test-seg", tmp_path / "seg.zip")
    zipped, _ = import_model(archive, models_dir=target)
    assert zipped.root == target / "test-seg.zip" and zipped.is_zip
    assert not [p for p in target.iterdir() if p.name.startswith(".")]

    weights = target / "test-cls" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="modified or is corrupt"):
        verify_model(target / "test-cls")


def test_import_checkpoint_needs_a_preset_and_imports_with_one(tmp_path):
    import torch
    from NNMambaSlicerLib.models import ModelImportFailed, import_model, presets, source_kind

    from nnmamba.networks import NNMambaEncoder

    torch.save(NNMambaEncoder(channels=4).eval().state_dict(), tmp_path / "best_weight.pth")
    assert source_kind(tmp_path / "best_weight.pth") == "checkpoint"
    with pytest.raises(ModelImportFailed, match="Choose a preset"):
        import_model(tmp_path / "best_weight.pth", models_dir=tmp_path / "models")
    with pytest.raises(ModelImportFailed, match="preset 'brats'"):
        import_model(tmp_path / "best_weight.pth", preset="brats", models_dir=tmp_path / "models")
    package, notes = import_model(tmp_path / "best_weight.pth", preset="adni-nc-ad", models_dir=tmp_path / "models")
    assert package.task == "classification" and package.root.parent == tmp_path / "models"
    assert package.provenance["imported_from"] == "best_weight.pth"
    assert ("adni-nc-ad", "classification") in {(name, task) for name, _, task in presets()}
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelImportFailed, match="not a model package"):
        source_kind(tmp_path / "notes.txt")


def test_zip_with_a_path_outside_is_refused(tmp_path):
    import zipfile

    from NNMambaSlicerLib.models import ModelImportFailed, import_model

    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../../escaped.txt", "x")
    with pytest.raises(ModelImportFailed, match="outside the archive"):
        import_model(tmp_path / "evil.zip", preset="generic-segmentation", models_dir=tmp_path / "models")
    assert not (tmp_path.parent / "escaped.txt").exists()


# ------------------------------------------------------------------------------------------ classification table

RESULT = {"classes": ["normal", "atrophy"], "probabilities": [0.25, 0.75], "decision": "atrophy",
          "rule": {"rule": "sigmoid-threshold", "threshold": 0.5}, "model": {"id": "demo-brain-atrophy",
                                                                              "version": "1.0.0"}}


def table_rows(table):
    from NNMambaSlicerLib.classification_nodes import CLASS_COLUMN, PROBABILITY_COLUMN

    vtk_table = table.GetTable()
    names, values = vtk_table.GetColumnByName(CLASS_COLUMN), vtk_table.GetColumnByName(PROBABILITY_COLUMN)
    return [(names.GetValue(r), values.GetValue(r)) for r in range(table.GetNumberOfRows())]


def test_classification_table_attributes_and_hierarchy(scene):
    from NNMambaSlicerLib.classification_nodes import decision_text, read_decision, update_classification_nodes

    volume = add_volume(scene.scene, random_volume(), OBLIQUE, "Brain MR")
    table = update_classification_nodes(scene.scene, volume, RESULT)
    assert table.GetName() == "Brain MR classification"
    assert table_rows(table) == [("normal", 0.25), ("atrophy", 0.75)]
    assert table.GetTable().GetColumnByName("probability").GetDataTypeAsString() == "double"
    assert table.GetTable().GetColumnByName("class").IsA("vtkStringArray")
    assert volume.GetAttribute("NNMamba.Classification") == "atrophy"
    assert volume.GetAttribute("NNMamba.ClassificationModel") == "demo-brain-atrophy 1.0.0"
    assert float(volume.GetAttribute("NNMamba.ClassificationProbability")) == 0.75
    assert read_decision(volume) == ("atrophy", "demo-brain-atrophy 1.0.0", 0.75)
    assert decision_text(RESULT) == "atrophy (75.0%)"
    hierarchy = scene.scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(table)) == hierarchy.GetItemByDataNode(volume)

    again = update_classification_nodes(scene.scene, volume, dict(RESULT, probabilities=[0.9, 0.1],
                                                                   decision="normal"), model_id="other-model")
    assert again is table and scene.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    assert table_rows(table) == [("normal", 0.9), ("atrophy", 0.1)]
    assert volume.GetAttribute("NNMamba.Classification") == "normal"
    assert volume.GetAttribute("NNMamba.ClassificationModel") == "other-model 1.0.0"


def test_a_table_the_user_deleted_is_made_again(scene):
    from NNMambaSlicerLib.classification_nodes import update_classification_nodes

    volume = add_volume(scene.scene, random_volume(), OBLIQUE, "v")
    first = update_classification_nodes(scene.scene, volume, RESULT)
    hierarchy = scene.scene.GetSubjectHierarchyNode()
    hierarchy.RemoveItem(hierarchy.GetItemByDataNode(first))   # what deleting it in the Data module does
    assert first.GetScene() is None
    table = update_classification_nodes(scene.scene, volume, RESULT)
    assert table.GetScene() is scene.scene and len(table_rows(table)) == 2


@pytest.mark.parametrize("bad,match", [
    ({"classes": ["a", "a"], "probabilities": [0.5, 0.5]}, "twice"),
    ({"classes": ["a", "b"], "probabilities": [0.5]}, "one probability"),
    ({"classes": ["a", "b"], "probabilities": [0.5, 1.5]}, "one probability"),
    ({"classes": ["a", "b"], "probabilities": [0.5, 0.5], "decision": "c"}, "not one of the classes"),
    ([], "JSON object"),
])
def test_bad_classification_results_are_refused(scene, bad, match):
    from NNMambaSlicerLib.classification_nodes import ClassificationResultError, update_classification_nodes

    volume = add_volume(scene.scene, random_volume(), OBLIQUE, "v")
    with pytest.raises(ClassificationResultError, match=match):
        update_classification_nodes(scene.scene, volume, bad)
    assert volume.GetAttribute("NNMamba.Classification") is None


def test_classification_survives_saving_the_scene(scene, tmp_path):
    from NNMambaSlicerLib.classification_nodes import find_classification_table, update_classification_nodes

    volume = add_volume(scene.scene, random_volume(), OBLIQUE, "Brain MR")
    table = update_classification_nodes(scene.scene, volume, RESULT)
    for node, class_name, name in ((volume, "vtkMRMLVolumeArchetypeStorageNode", "brain.nrrd"),
                                   (table, "vtkMRMLTableStorageNode", "classification.csv")):
        storage = scene.add_storage_node(class_name, tmp_path / name)
        node.SetAndObserveStorageNodeID(storage.GetID())
        assert storage.WriteData(node) == 1
    scene.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.scene.Commit()
    scene.close()

    loaded = new_scene()
    loaded.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert loaded.scene.Connect() == 1
    volume = loaded.scene.GetFirstNodeByName("Brain MR")
    assert volume.GetAttribute("NNMamba.Classification") == "atrophy"
    table = find_classification_table(volume)
    assert table is not None and table.GetName() == "Brain MR classification"
    assert table_rows(table) == [("normal", 0.25), ("atrophy", 0.75)]
    hierarchy = loaded.scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(table)) == hierarchy.GetItemByDataNode(volume)
    loaded.close()


# ------------------------------------------------------------------------------------- sample data, module file

def test_sample_data_sources_point_at_the_shipped_volumes_with_their_sha256():
    import hashlib

    from NNMambaSlicerLib.sample_data import SAMPLES, sample_data_sources

    sources = {source["sampleName"]: source for source in sample_data_sources()}
    assert set(sources) == set(SAMPLES)
    for name, source in sources.items():
        path = ROOT / "Resources" / "SampleData" / f"{name}.nrrd"
        assert source["category"] == "NNMamba" and source["uris"] == path.resolve().as_uri()
        assert source["fileNames"] == f"{name}.nrrd" and source["nodeNames"] == name
        assert source["checksums"] == "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_background_start_hands_over_the_failure():
    from nnmamba.client import BackendError

    starter = backend_module.start_local_backend(device="cpu", python="/nonexistent/bin/PythonSlicer")
    with pytest.raises(BackendError, match="Cannot run the Python interpreter /nonexistent/bin/PythonSlicer"):
        starter.result(timeout=30)
    assert starter.finished and backend_module.shared_backend() is None and backend_module.starting_backend() is None


def test_module_file_uses_only_widgets_of_its_ui_and_fields_of_its_parameter_node():
    import ast
    import re
    import xml.etree.ElementTree as ET

    module = ROOT / "NNMambaSlicer" / "NNMambaSlicer.py"
    tree = ast.parse(module.read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}
    ui = ET.parse(ROOT / "NNMambaSlicer" / "Resources" / "UI" / "NNMambaSlicer.ui")
    widgets = {w.get("name"): w.get("class") for w in ui.iter("widget")}
    assert used <= set(widgets) and ui.getroot().find("widget").get("class") == "qMRMLWidget"
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"NNMambaSlicer", "NNMambaSlicerWidget", "NNMambaSlicerLogic", "NNMambaSlicerTest"} <= set(classes)
    fields = {node.target.id for node in classes["NNMambaSlicerParameterNode"].body if isinstance(node, ast.AnnAssign)}
    bound = {w.get("name"): w.find("property[@name='SlicerParameterName']/string").text for w in ui.iter("widget")
             if w.find("property[@name='SlicerParameterName']") is not None}
    assert set(bound.values()) <= fields and bound == {"inputVolumeSelector": "inputVolume",
                                                       "showTableCheckBox": "showTableInLayout"}
    reloaded = set(re.findall(r'"(\w+)"', module.read_text().split("def onReload")[1].split("def enter")[0]))
    lib = {p.stem for p in (ROOT / "NNMambaSlicer" / "NNMambaSlicerLib").glob("*.py")} - {"__init__", "backend"}
    assert lib <= reloaded


def test_two_requirement_sets_client_inside_local_and_numba_for_the_fast_scan():
    from NNMambaSlicerLib.install import CLIENT_REQUIREMENTS_FILE, load_requirements, requirement_name

    client = [requirement_name(line) for line in load_requirements(CLIENT_REQUIREMENTS_FILE)]
    local = [requirement_name(line) for line in load_requirements()]
    assert client == ["slicerio", "jsonschema"] and local[:2] == client   # `-r requirements-client.txt` followed
    assert {"safetensors", "tqdm", "fastapi", "uvicorn", "pydantic", "numba"} <= set(local)
    assert "torch" not in local   # torch comes from the PyTorch extension only


def test_installs_go_through_slicer_packaging_which_must_be_imported(monkeypatch):
    """Slicer 5.12's ``slicer.packaging`` is not an attribute of ``slicer`` until imported. A stand-in module with
    its pip_ensure signature (Slicer@5.12 Base/Python/slicer/packaging.py) records the call: in testing mode nothing
    is asked, and a package still missing afterwards is a clear error, not a silent success."""
    import types

    import slicer
    from NNMambaSlicerLib import install

    calls = []

    def pip_ensure(requirements, constraints=None, prompt_install=True, requester=None):
        calls.append(([str(r) for r in requirements], prompt_install, requester, Path(constraints).is_file()))

    stand_in = types.ModuleType("slicer.packaging")
    stand_in.pip_ensure = pip_ensure
    monkeypatch.setitem(sys.modules, "slicer.packaging", stand_in)
    monkeypatch.delattr(slicer, "packaging", raising=False)
    monkeypatch.setattr(install, "testing", lambda: True)
    with pytest.raises(install.DependencyError, match="still missing after the install: nnmamba-absent-x>=1"):
        install.ensure_client(ask=True) or install.install_requirements(["nnmamba-absent-x>=1"], ask=False)
    assert calls == [(["nnmamba-absent-x>=1"], False, "NNMamba", True)]


def test_local_backend_check_names_what_is_missing_without_importing(monkeypatch):
    from NNMambaSlicerLib import install

    monkeypatch.setattr(install, "load_requirements", lambda path=None: ["fastapi>=0.110", "nnmamba-absent-y>=1"])
    monkeypatch.setattr(install, "torch_installed", lambda: False)
    with pytest.raises(install.DependencyError, match=r"needs torch \(PyTorch extension\), nnmamba-absent-y>=1\. "
                                                      "Press 'Install dependencies'"):
        install.check_local_backend()
