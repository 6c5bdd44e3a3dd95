"""Model packages: model.json validated with every problem reported at once (with JSON paths), weights checked
against their sha256 before use, atomic writes, zips read in place, installed models found by id."""

import copy
import json
import zipfile

import pytest
import torch
from jsonschema import Draft202012Validator

from nnmamba.checkpoints import CheckpointError
from nnmamba.modelpkg import (
    ModelPackage,
    ModelPackageError,
    find_packages,
    load_catalog,
    load_schema,
    resolve_model,
    schema_problems,
    semantic_problems,
    write_package,
    zip_package,
)
from nnmamba.networks import NNMambaEncoder, NNMambaSeg
from nnmamba.presets import PRESETS

TISSUE = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^85756007^Tissue~SCT^85756007^Tissue"
          "~^^~Anatomic codes - DICOM master list~^^~^^")


def seg_meta(model_id="tiny-seg", version="1.0.0", classes=3):
    return {
        "format_version": 1, "id": model_id, "name": "Tiny segmentation", "version": version,
        "task": "segmentation",
        "network": {"class": "NNMambaSeg", "variant": "nnunet", "in_channels": 1, "out_channels": classes,
                    "channels": 4},
        "input": {"channels": [{"name": "CT", "modality": "CT"}], "orientation": "as-stored",
                  "resampling": {"mode": "spacing", "spacing": [0.8, 0.8, 2.0]},
                  "normalization": {"scheme": "ct", "clip": [-1000.0, 400.0], "mean": 50.0, "std": 140.0},
                  "patch_size": [32, 32, 32]},
        "outputs": {"labels": [{"value": v, "name": f"organ {v}", "color": [0.2 * v, 0.5, 0.5], "terminology": TISSUE}
                               for v in range(1, classes)]},
        "provenance": {"source": "tests", "license": "Apache-2.0"},
    }


def landmark_meta():
    names = ["TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2"]
    return {
        "format_version": 1, "id": "tiny-landmarks", "name": "Tiny landmarks", "version": "1.0.0", "task": "landmarks",
        "network": {"class": "NNMambaSeg", "variant": "miccss", "in_channels": 1, "out_channels": 6, "channels": 4},
        "weights": {"file": "weights.safetensors", "sha256": "0" * 64},
        "input": {"channels": [{"name": "MRI", "modality": "MR"}], "orientation": "as-stored",
                  "resampling": {"mode": "shape", "shape": [128, 128, 128], "landmark_axis_order": "lfc"},
                  "normalization": {"scheme": "window", "sigmas": 2.0, "range": [0.0, 255.0]},
                  "patch_size": [128, 128, 128]},
        "outputs": {"landmarks": [{"name": n} for n in names],
                    "lines": [{"name": n, "from": f"{n}1", "to": f"{n}2"} for n in ("TCD", "HDV", "ADV")]},
    }


def classifier_meta():
    return {
        "format_version": 1, "id": "tiny-cls", "name": "Tiny classifier", "version": "1.0.0", "task": "classification",
        "network": {"class": "NNMambaEncoder", "variant": "current", "in_channels": 1, "out_channels": 1,
                    "channels": 4},
        "weights": {"file": "weights.safetensors", "sha256": "0" * 64},
        "input": {"channels": [{"name": "T1", "modality": "MR"}], "orientation": "as-stored",
                  "resampling": {"mode": "none"}, "normalization": {"scheme": "none"}},
        "outputs": {"classes": ["NC", "AD"], "decision": {"rule": "sigmoid-threshold", "threshold": 0.5}},
    }


def with_weights_placeholder(meta):
    return dict(meta, weights={"file": "weights.safetensors", "sha256": "0" * 64})


def problems_of(meta):
    return schema_problems(meta) + semantic_problems(meta)


@pytest.fixture(scope="module")
def seg_net():
    torch.manual_seed(3)
    net = NNMambaSeg(in_ch=1, channels=4, number_classes=3, variant="nnunet").eval()
    with torch.no_grad():   # non-trivial BN statistics, so that a wrong load would show in the outputs
        for norm in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)):
            norm.running_mean.uniform_(-0.3, 0.3)
            norm.running_var.uniform_(0.5, 1.5)
    net.do_ds = False
    return net


@pytest.fixture
def package(tmp_path, seg_net):
    return write_package(tmp_path / "models" / "tiny-seg", seg_meta(), seg_net)


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_round_trip_write_open_build_gives_identical_outputs(tmp_path, package, seg_net):
    reopened = ModelPackage.open(package.root, verify=True)
    stored = json.loads((package.root / "model.json").read_text())
    assert stored["weights"]["file"] == "weights.safetensors" and len(stored["weights"]["sha256"]) == 64
    assert list(stored)[:8] == ["format_version", "id", "name", "version", "task", "network", "weights", "input"]
    assert (reopened.id, reopened.task, reopened.architecture.variant) == ("tiny-seg", "segmentation", "nnunet")
    model = reopened.build_model()
    assert model.do_ds is False and not model.training
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.equal(_outputs(model, x), _outputs(seg_net, x))
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-seg"]   # no staging leftovers


def test_zip_package_is_read_in_place(tmp_path, package, seg_net):
    zip_path = zip_package(package.root, tmp_path / "tiny.zip")
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["tiny-seg/model.json", "tiny-seg/weights.safetensors"]
    zipped = ModelPackage.open(zip_path)
    assert zipped.is_zip and zipped.meta == package.meta
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.equal(_outputs(zipped.build_model(), x), _outputs(seg_net, x))
    flat = tmp_path / "flat.zip"   # files at the top level of the zip work too
    with zipfile.ZipFile(flat, "w") as archive:
        for name in ("model.json", "weights.safetensors"):
            archive.write(package.root / name, name)
    assert ModelPackage.open(flat).verify()
    assert not list(tmp_path.glob("*.partial"))


def test_a_model_json_with_three_errors_reports_all_three(tmp_path, package):
    meta = json.loads((package.root / "model.json").read_text())
    meta["input"]["patch_size"][2] = 100                                  # schema: multiple of 16
    meta["outputs"]["labels"][0]["color"][1] = 1.5                        # schema: colour range
    meta["input"]["channels"].append({"name": "PET", "modality": "PT"})   # rule: one channel per network input
    (package.root / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError) as caught:
        ModelPackage.open(package.root)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert "$.input.patch_size[2]: 100 is not a multiple of 16" in problems
    assert any(p.startswith("$.outputs.labels[0].color[1]: 1.5 is greater than the maximum of 1") for p in problems)
    assert any(p.startswith("$.input.channels: 2 channel(s) listed but network.in_channels is 1") for p in problems)
    assert "3 problems" in str(caught.value) and str(package.root) in str(caught.value)


@pytest.mark.parametrize("make,edit,expected", [
    (seg_meta, lambda m: m["outputs"].pop("labels"), "$.outputs: 'labels' is a required property"),
    (seg_meta, lambda m: m["outputs"]["labels"][1].update(value=1), "label value 1 is used twice"),
    (seg_meta, lambda m: m["outputs"]["labels"][1].update(value=3), "$.outputs.labels[1].value: 3 is not below"),
    (seg_meta, lambda m: m["outputs"]["labels"].pop(), "no label for output channel(s) 2"),
    (seg_meta, lambda m: m["outputs"].update(regions=[{"name": "all", "labels": [1, 7], "color": [1, 0, 0]}]),
     "$.outputs.regions[0].labels[1]: 7 is not one of the label values"),
    (seg_meta, lambda m: m["network"].update(variant="current"), "$.network.variant: 'current' is not one of"),
    (seg_meta, lambda m: m["input"].pop("patch_size"), "$.input: 'patch_size' is a required property"),
    (seg_meta, lambda m: m["input"]["normalization"].pop("mean"), "$.input.normalization: 'mean' is a required"),
    (seg_meta, lambda m: m["input"]["normalization"].update(clip=[400.0, -1000.0]), "low 400.0 must be below"),
    (seg_meta, lambda m: m["input"]["resampling"]["spacing"].__setitem__(0, 0),
     "$.input.resampling.spacing[0]: 0 is less than or equal to the minimum of 0"),
    (seg_meta, lambda m: m["outputs"]["labels"][0].update(terminology="Tissue"), "$.outputs.labels[0].terminology"),
    (seg_meta, lambda m: m.update(id="Bad Id"), "$.id: 'Bad Id' does not match"),
    (seg_meta, lambda m: m["outputs"].update(classes=["a", "b"]), "('classes' was unexpected)"),
    (landmark_meta, lambda m: m["outputs"]["landmarks"].pop(), "5 landmark(s) but network.out_channels is 6"),
    (landmark_meta, lambda m: m["outputs"]["lines"][0].update(to="TCD3"),
     "$.outputs.lines[0].to: 'TCD3' is not a landmark name"),
    (landmark_meta, lambda m: m["outputs"].update(decoding={"method": "distinct-peaks", "shape": {"pairs": [
        {"from": "TCD1", "to": "TCD9", "mean_mm": 20.0, "sd_mm": 1.0}]}}),
     "$.outputs.decoding.shape.pairs[0].to: 'TCD9' is not a landmark name"),
    (landmark_meta, lambda m: m["outputs"].update(decoding={"method": "distinct-peaks", "shape": {"pairs": [
        {"from": "TCD1", "to": "TCD2", "mean_mm": 20.0, "sd_mm": 1.0}], "correlation": [[1.0, 0.5]]}}),
     "$.outputs.decoding.shape.correlation: 1 x 1 numbers expected"),
    (landmark_meta, lambda m: m["outputs"].update(decoding={"method": "distinct-peaks", "shape": {"pairs": [
        {"from": "TCD1", "to": "TCD2", "mean_mm": 20.0, "sd_mm": 0}]}}),
     "$.outputs.decoding.shape.pairs[0].sd_mm: 0 is less than or equal to the minimum of 0"),
    (landmark_meta, lambda m: m["outputs"].update(decoding={"midline": {"across": ["TCD1", "TCD1"], "on": ["HDV1"]}}),
     "two different landmarks define the midline"),
    (landmark_meta, lambda m: m["outputs"].update(decoding={"midline": {"across": ["TCD1", "TCD2"], "on": ["VERMIS"]}}),
     "$.outputs.decoding.midline.on: 'VERMIS' not landmark name(s)"),
    (landmark_meta, lambda m: m["outputs"].update(decoding={"midline": {"across": ["TCD1", "TCD2"], "on": ["TCD2"]}}),
     "a landmark that defines the midline cannot be moved onto it"),
    (landmark_meta, lambda m: m["input"]["resampling"].pop("landmark_axis_order"),
     "$.input.resampling: 'landmark_axis_order' is a required property"),
    (landmark_meta, lambda m: m["input"]["patch_size"].__setitem__(0, 120), "120 is not a multiple of 16"),
    (classifier_meta, lambda m: m["outputs"]["classes"].append("MCI"), "means exactly 2 classes"),
    (classifier_meta, lambda m: m["outputs"].update(decision={"rule": "argmax"}), "needs 'sigmoid-threshold'"),
    (classifier_meta, lambda m: m["network"].update(**{"class": "NNMambaSeg"}), "$.network.class: 'NNMambaEncoder'"),
])
def test_each_rule_is_reported_with_its_json_path(make, edit, expected):
    meta = with_weights_placeholder(make())
    assert problems_of(meta) == [], problems_of(meta)
    edit(meta)
    problems = problems_of(meta)
    assert any(expected in p for p in problems), problems


def test_multi_logit_classifiers_need_one_class_per_logit_and_argmax():
    meta = classifier_meta()
    meta["network"]["out_channels"] = 3
    meta["outputs"] = {"classes": ["NC", "MCI", "AD"], "decision": {"rule": "argmax"}}
    assert problems_of(meta) == []
    meta["outputs"]["classes"].pop()
    assert any("2 classes but network.out_channels is 3" in p for p in problems_of(meta))


def test_inference_defaults_depend_on_the_task():
    defaults = {"overlap": 0.5, "mirroring": False}
    assert ModelPackage("x", seg_meta()).inference == dict(defaults, activation="softmax")
    assert ModelPackage("x", landmark_meta()).inference == dict(defaults, activation="relu")
    assert ModelPackage("x", classifier_meta()).inference == dict(defaults, activation="none")
    meta = dict(seg_meta(), inference={"mirroring": True})
    assert ModelPackage("x", meta).inference == dict(defaults, mirroring=True, activation="softmax")
    assert ModelPackage("x", landmark_meta()).outputs["decoding"] == {"method": "argmax", "refine": "none"}


def _flip_a_byte(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_weights_are_refused(tmp_path, package):
    _flip_a_byte(package.root / "weights.safetensors")
    with pytest.raises(ModelPackageError, match="modified or is corrupt.*Re-import the model or download"):
        ModelPackage.open(package.root)
    unverified = ModelPackage.open(package.root, verify=False)    # listing does not hash ...
    with pytest.raises(ModelPackageError, match="weights.safetensors was modified or is corrupt"):
        unverified.build_model()                                   # ... but using the weights always does


def test_tampered_weights_inside_a_zip_are_refused(tmp_path, package):
    weights = bytearray((package.root / "weights.safetensors").read_bytes())
    weights[-100] ^= 0xFF
    zip_path = tmp_path / "tampered.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.write(package.root / "model.json", "model.json")
        archive.writestr("weights.safetensors", bytes(weights))
    with pytest.raises(ModelPackageError, match="modified or is corrupt"):
        ModelPackage.open(zip_path)
    with pytest.raises(ModelPackageError, match="modified or is corrupt"):
        ModelPackage.open(zip_path, verify=False).build_model()


def test_missing_weights_and_bad_json_are_clear(tmp_path, package):
    (package.root / "weights.safetensors").unlink()
    with pytest.raises(ModelPackageError, match=r"\$.weights.file: weights.safetensors is missing"):
        ModelPackage.open(package.root, verify=False)
    (package.root / "model.json").write_text("[]")
    with pytest.raises(ModelPackageError, match=r"\$: \[\] is not of type 'object'"):
        ModelPackage.open(package.root)
    (package.root / "model.json").write_text("{not json")
    with pytest.raises(ModelPackageError, match="not valid JSON"):
        ModelPackage.open(package.root)
    with pytest.raises(ModelPackageError, match="not found"):
        ModelPackage.open(tmp_path / "nowhere")


def test_write_package_never_leaves_a_half_written_package(tmp_path, seg_net):
    models = tmp_path / "models"
    bad = seg_meta()
    bad["input"]["patch_size"] = [32, 32, 40]
    with pytest.raises(ModelPackageError, match="40 is not a multiple of 16"):
        write_package(models / "tiny-seg", bad, seg_net)
    assert not models.exists() or not any(models.iterdir())
    other = NNMambaSeg(in_ch=1, channels=8, number_classes=3, variant="nnunet")   # weights of another width
    with pytest.raises(CheckpointError, match="weights do not fit NNMambaSeg"):
        write_package(models / "tiny-seg", seg_meta(), other.state_dict())
    assert not any(models.iterdir())


def test_existing_packages_are_replaced_only_when_asked(tmp_path, seg_net):
    folder = tmp_path / "tiny-seg"
    write_package(folder, seg_meta(), seg_net)
    with pytest.raises(ModelPackageError, match="already exists.*--force"):
        write_package(folder, seg_meta(version="2.0.0"), seg_net)
    (folder / "stale.txt").write_text("from the old package")
    replaced = write_package(folder, seg_meta(version="2.0.0"), seg_net, overwrite=True)
    assert replaced.version == "2.0.0" and not (folder / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-seg"]


def test_installed_models_are_found_by_id(tmp_path, monkeypatch, seg_net):
    models = tmp_path / "models"
    monkeypatch.setenv("NNMAMBA_MODELS_DIR", str(models))
    write_package(models / "tiny-old", seg_meta(version="1.2.0"), seg_net)
    write_package(models / "tiny-new", seg_meta(version="1.10.0"), seg_net)
    zip_package(models / "tiny-new", models / "tiny-zip.zip")
    (models / "broken").mkdir()
    (models / "broken" / "model.json").write_text(json.dumps({"id": "broken"}))
    problems = []
    found = [p for p in find_packages(problems=problems) if p.origin == "user"]
    assert sorted(p.root.name for p in found) == ["tiny-new", "tiny-old", "tiny-zip.zip"]
    assert [path.name for path, _ in problems] == ["broken"] and "'format_version' is a required" in problems[0][1]
    best = resolve_model("tiny-seg")
    assert best.version == "1.10.0" and best.root.name in ("tiny-new", "tiny-zip.zip")
    assert resolve_model(str(models / "tiny-old")).version == "1.2.0"
    with pytest.raises(ModelPackageError, match="No model package 'nope'.*Installed: .*demo-abdomen-ct.*tiny-seg"):
        resolve_model("nope")
    with pytest.raises(ModelPackageError, match="It is in the catalog.*--catalog amos-ct-nnmamba"):
        resolve_model("amos-ct-nnmamba")


def test_schemas_are_valid_draft_2020_12():
    for name in ("model", "catalog"):
        Draft202012Validator.check_schema(load_schema(name))


def test_the_catalog_validates_and_names_real_presets():
    entries = load_catalog()
    ids = [e["id"] for e in entries]
    assert set(ids) == {"amos-ct-nnmamba", "brats-glioma-nnmamba", "lfc-fetal-landmarks-nnmamba",
                        "adni-nc-ad-nnmamba", "adni-smci-pmci-nnmamba"}
    for entry in entries:
        preset = PRESETS[entry["preset"]]
        assert entry["task"] == preset.task and entry["id"] == preset.default_id
        assert "1wYHVSvSU-wGJdU62WZ0B5rfv_bZ68bJl" in entry["obtain"]["url"] and entry["obtain"]["manual"]
        if any(f["sha256"] is None for f in entry["files"]):
            assert "not published" in entry["files_note"] and "sha256" in entry["files_note"]


def test_an_invalid_catalog_is_reported(tmp_path):
    catalog = json.loads(json.dumps({"format_version": 1, "models": load_catalog()}))
    catalog["models"][1]["id"] = catalog["models"][0]["id"]
    catalog["models"][2]["files"][0]["sha256"] = "abc"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog))
    with pytest.raises(ModelPackageError) as caught:
        load_catalog(path)
    assert any("$.models[2].files[0].sha256" in p for p in caught.value.problems)
    assert any("$.models[1]: id 'amos-ct-nnmamba' is used twice" in p for p in caught.value.problems)


def test_classifier_package_round_trip(tmp_path):
    torch.manual_seed(4)
    net = NNMambaEncoder(channels=4).eval()
    meta = copy.deepcopy(classifier_meta())
    package = write_package(tmp_path / "cls", meta, net)
    x = torch.randn(1, 1, 24, 28, 24)
    assert torch.equal(_outputs(package.build_model(), x), _outputs(net, x))
