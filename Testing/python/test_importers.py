"""Importing official checkpoints and nnU-Net v1 result folders into model packages: presets, plans, provenance,
catalog hashes, refusals, and the ``nnmamba models`` commands."""

import json
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from nnmamba.checkpoints import UnsafeCheckpointError
from nnmamba.cli import main
from nnmamba.importers import ModelImportError, import_checkpoint, import_nnunet_v1_folder
from nnmamba.modelpkg import ModelPackage, load_catalog, sha256_file
from nnmamba.networks import NNMambaEncoder, NNMambaSeg
from nnmamba.presets import PRESETS

from checkpoint_files import Payload, nnunet_plans, write_nnunet_model

FORMATS = [Path(__file__).resolve().parents[1] / "data" / "slicer-formats", Path("/work/shared/slicer-formats")]
TERMINOLOGY_FILES = {
    "Segmentation category and type - 3D Slicer General Anatomy list":
        "SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json",
    "Segmentation category and type - DICOM master list": "SegmentationCategoryTypeModifier-DICOM-Master.json",
}
AMOS_ORDER = ["spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
              "inferior vena cava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum",
              "urinary bladder", "prostate/uterus"]


def seg_net(in_ch=1, classes=16, variant="nnunet", seed=0):
    torch.manual_seed(seed)
    net = NNMambaSeg(in_ch=in_ch, channels=4, number_classes=classes, variant=variant).eval()
    net.do_ds = False
    return net


def anisotropic_plans(**changes):
    plans = nnunet_plans()
    stage = plans["plans_per_stage"][0]
    stage["current_spacing"] = np.array([2.0, 0.71, 0.75])        # z y x
    stage["patch_size"] = np.array([64, 128, 160])
    plans.update(changes)
    return plans


def brats_plans():
    plans = nnunet_plans(num_classes=3, modality="nonCT")
    names = {0: "FLAIR", 1: "T1w", 2: "t1gd", 3: "T2w"}
    plans.update(num_modalities=4, modalities=names, normalization_schemes={c: "nonCT" for c in names},
                 use_mask_for_norm={c: True for c in names})
    plans["plans_per_stage"][0]["current_spacing"] = np.array([1.0, 1.0, 1.0])
    return plans


def same_weights(package, net):
    """The package loads strictly into a fresh network and every tensor equals the source network's (the
    forward-pass identity of a round trip is tested in test_modelpkg.py)."""
    model = package.build_model()
    source = net.state_dict()
    return all(torch.equal(value, source[key]) for key, value in model.state_dict().items())


# ------------------------------------------------------------------------------------------------------ presets

def test_amos_import_takes_spacing_patch_and_ct_constants_from_the_plans(tmp_path):
    net = seg_net()
    source = write_nnunet_model(tmp_path / "model_final_checkpoint.model", net, anisotropic_plans())
    package = import_checkpoint(source, "amos-ct", out_dir=tmp_path / "models")
    meta = package.meta
    assert package.root == tmp_path / "models" / "amos-ct-nnmamba"
    assert meta["input"]["resampling"] == {"mode": "spacing", "spacing": [0.75, 0.71, 2.0]}   # zyx -> I J K
    assert meta["input"]["patch_size"] == [160, 128, 64]
    assert meta["input"]["normalization"] == {"scheme": "ct", "clip": [-980.0, 530.0], "mean": 40.5, "std": 90.1}
    assert [label["name"] for label in meta["outputs"]["labels"]] == AMOS_ORDER
    assert [label["value"] for label in meta["outputs"]["labels"]] == list(range(1, 16))
    provenance = meta["provenance"]
    assert provenance["imported_from"] == "model_final_checkpoint.model"
    assert provenance["imported_sha256"] == sha256_file(source)
    assert provenance["trainer"] == "nnUNetTrainerV2_nnMamba" and provenance["preset"] == "amos-ct"
    assert provenance["created"][:2] == "20" and "notes" not in provenance
    assert provenance["plans"] == "model_final_checkpoint.model.pkl" and provenance["nnunet_stage"] == 0
    assert same_weights(ModelPackage.open(package.root), net)


def test_amos_without_plans_asks_for_them_or_explicit_values(tmp_path):
    torch.save(seg_net().state_dict(), tmp_path / "amos.pth")
    with pytest.raises(ModelImportError) as caught:
        import_checkpoint(tmp_path / "amos.pth", "amos-ct", out_dir=tmp_path / "models")
    for hint in ("--plans", "--spacing", "--patch-size", "--ct-constants"):
        assert hint in str(caught.value)
    assert not (tmp_path / "models").exists()
    package = import_checkpoint(tmp_path / "amos.pth", "amos-ct", out_dir=tmp_path / "models", spacing=(0.8, 0.8, 2),
                                patch_size=(128, 128, 64), ct_constants=(-991, 362, 50, 141))
    assert package.input["normalization"] == {"scheme": "ct", "clip": [-991.0, 362.0], "mean": 50.0, "std": 141.0}
    assert package.input["patch_size"] == [128, 128, 64]


@pytest.mark.parametrize("preset,make", [
    ("brats", lambda: seg_net(in_ch=4, classes=4)),
    ("lfc-landmarks", lambda: seg_net(classes=6, variant="miccss")),
    ("adni-nc-ad", lambda: NNMambaEncoder(channels=4).eval()),
    ("adni-smci-pmci", lambda: NNMambaEncoder(channels=4, variant="mamba_seq").eval()),
])
def test_each_preset_imports_a_state_dict_of_its_architecture(tmp_path, preset, make):
    net = make()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "weights.pth")
    package = import_checkpoint(tmp_path / "weights.pth", preset, out_dir=tmp_path)
    assert package.id == PRESETS[preset].default_id and package.task == PRESETS[preset].task
    assert package.network["channels"] == 4
    reopened = ModelPackage.open(package.root, verify=True)
    inputs, outputs = reopened.input, reopened.outputs
    if preset == "brats":
        assert [c["name"] for c in inputs["channels"]] == ["FLAIR", "T1", "T1ce", "T2"]
        assert inputs["normalization"] == {"scheme": "zscore", "nonzero_mask": True}
        assert [r["labels"] for r in outputs["regions"]] == [[1, 2, 3], [1, 3], [3]]
        assert any("No plans: assumed patch size [128, 128, 128]" in n for n in package.provenance["notes"])
    elif preset == "lfc-landmarks":
        assert [p["name"] for p in outputs["landmarks"]] == ["TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2"]
        assert [(line["from"], line["to"]) for line in outputs["lines"]] == [("TCD1", "TCD2"), ("HDV1", "HDV2"),
                                                                             ("ADV1", "ADV2")]
        assert inputs["resampling"] == {"mode": "shape", "shape": [128, 128, 128], "landmark_axis_order": "lfc"}
        assert inputs["normalization"] == {"scheme": "window", "sigmas": 2.0, "range": [0.0, 255.0]}
        assert reopened.inference["activation"] == "relu"
    else:
        assert outputs["classes"] == (["NC", "AD"] if preset == "adni-nc-ad" else ["sMCI", "pMCI"])
        assert outputs["decision"] == {"rule": "sigmoid-threshold", "threshold": 0.5}
        assert inputs["resampling"] == {"mode": "none"} and inputs["normalization"] == {"scheme": "none"}
        assert inputs["expected"]["size"] == [113, 137, 113] and inputs["axis_order"] == "ijk"
    assert reopened.build_model() is not None   # strict load of the converted weights


def test_brats_takes_channel_names_and_mask_from_the_plans(tmp_path):
    net = seg_net(in_ch=4, classes=4)
    source = write_nnunet_model(tmp_path / "model_final_checkpoint.model", net, brats_plans())
    package = import_checkpoint(source, "brats", out_dir=tmp_path)
    assert [c["name"] for c in package.input["channels"]] == ["FLAIR", "T1w", "t1gd", "T2w"]
    assert {c["modality"] for c in package.input["channels"]} == {"MR"}
    assert package.input["normalization"] == {"scheme": "zscore", "nonzero_mask": True}
    assert package.input["resampling"]["spacing"] == [1.0, 1.0, 1.0]
    assert "notes" not in package.provenance
    assert same_weights(package, net)


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    torch.save(NNMambaEncoder(channels=4).state_dict(), tmp_path / "best_weight.pth")
    with pytest.raises(ModelImportError, match=r"holds an NNMambaEncoder classifier.*preset 'amos-ct' needs an "
                                               r"NNMambaSeg.*Presets that fit it: adni-nc-ad, adni-smci-pmci"):
        import_checkpoint(tmp_path / "best_weight.pth", "amos-ct", out_dir=tmp_path / "models")
    torch.save(seg_net(classes=6, variant="miccss").state_dict(), tmp_path / "landmarks.pth")
    with pytest.raises(ModelImportError, match=r"4 input channel\(s\), not 1; 4 output channel\(s\), not 6.*"
                                               "lfc-landmarks"):
        import_checkpoint(tmp_path / "landmarks.pth", "brats", out_dir=tmp_path / "models")
    with pytest.raises(ModelImportError, match="Unknown preset 'amos'; known presets: amos-ct, brats"):
        import_checkpoint(tmp_path / "landmarks.pth", "amos", out_dir=tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_unsafe_checkpoints_are_refused_unless_trusted(tmp_path):
    net = seg_net(classes=6, variant="miccss")
    torch.save({"state_dict": net.state_dict(), "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="--trust"):
        import_checkpoint(tmp_path / "evil.pth", "lfc-landmarks", out_dir=tmp_path / "models")
    package = import_checkpoint(tmp_path / "evil.pth", "lfc-landmarks", out_dir=tmp_path / "models", trust=True)
    assert same_weights(package, net)


@pytest.mark.parametrize("preset", ["amos-ct", "brats"])
def test_terminology_codes_exist_in_slicers_lists(preset):
    """scheme+value of category, type and modifier exist in the named list, nested as in the list; colours are
    the list's recommended ones where it has one."""
    entries = list(PRESETS[preset].labels) + list(PRESETS[preset].regions)
    coded = [entry for entry in entries if "terminology" in entry]
    assert len(coded) == {"amos-ct": 14, "brats": 3}[preset]   # AMOS 15 'prostate/uterus' has no single code
    for entry in coded:
        context, category, type_code, modifier, anatomic_context, region, region_modifier = \
            entry["terminology"].split("~")
        assert (anatomic_context, region, region_modifier) == ("Anatomic codes - DICOM master list", "^^", "^^")
        codes = _terminology_list(context)["SegmentationCodes"]["Category"]
        found_category = _find(codes, category, entry["name"])
        found_type = _find(found_category["Type"], type_code, entry["name"])
        found_modifier = _find(found_type.get("Modifier", []), modifier, entry["name"]) if modifier != "^^" else None
        if entry["name"].split()[0] in ("right", "left"):
            assert found_modifier["CodeMeaning"].lower() == entry["name"].split()[0]
        recommended = (found_modifier or found_type).get("recommendedDisplayRGBValue")
        if recommended:
            assert entry["color"] == pytest.approx([c / 255 for c in recommended], abs=1e-4), entry["name"]


def _terminology_list(context):
    for folder in FORMATS:
        path = folder / TERMINOLOGY_FILES[context]
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    pytest.skip(f"terminology list for {context!r} not available")


def _find(items, code, name):
    scheme, value, meaning = code.split("^")
    for item in items:
        if (item["CodingSchemeDesignator"], item["CodeValue"]) == (scheme, value):
            assert item["CodeMeaning"] == meaning, name
            return item
    raise AssertionError(f"{name}: {code} is not in the terminology list")


# --------------------------------------------------------------------------------------- nnU-Net result folders

def make_result_folder(root, net, plans, folds=("fold_0", "fold_1"), plans_pkl=None):
    trainer = root / "3d_fullres" / "Task216_Amos2022_task1" / "nnUNetTrainerV2_nnMamba__nnUNetPlansv2.1"
    for fold in folds:
        (trainer / fold).mkdir(parents=True)
        write_nnunet_model(trainer / fold / "model_final_checkpoint.model", net, plans)
    (trainer / "plans.pkl").write_bytes(pickle.dumps(plans_pkl if plans_pkl is not None else plans))
    return trainer


def test_nnunet_v1_result_folder_without_preset(tmp_path):
    net = seg_net()
    folder_plans = anisotropic_plans()
    folder_plans["plans_per_stage"][0]["current_spacing"] = np.array([3.0, 0.8, 0.8])
    trainer = make_result_folder(tmp_path / "results", net, nnunet_plans(), plans_pkl=folder_plans)
    package = import_nnunet_v1_folder(trainer, out_dir=tmp_path / "models")
    meta = package.meta
    assert package.id == "task216_amos2022_task1"
    assert meta["input"]["resampling"]["spacing"] == [0.8, 0.8, 3.0]   # the folder's plans.pkl, not the sidecar
    assert meta["input"]["patch_size"] == [160, 128, 64]
    labels = meta["outputs"]["labels"]
    assert [label["name"] for label in labels] == [f"Label {i}" for i in range(1, 16)]
    assert len({tuple(label["color"]) for label in labels}) == 15
    provenance = meta["provenance"]
    assert (provenance["fold"], provenance["trainer"], provenance["configuration"]) == \
        ("fold_0", "nnUNetTrainerV2_nnMamba", "3d_fullres")
    assert provenance["plans"] == "plans.pkl" and provenance["plans_identifier"] == "nnUNetPlansv2.1"
    assert provenance["imported_sha256"] == sha256_file(trainer / "fold_0" / "model_final_checkpoint.model")
    assert any("Used fold_0 of the available folds (fold_0, fold_1)" in n for n in provenance["notes"])
    assert any("labels are named generically" in n for n in provenance["notes"])
    assert same_weights(package, net)


def test_nnunet_folder_layout_variants_and_errors(tmp_path):
    net = seg_net()
    trainer = make_result_folder(tmp_path / "results", net, nnunet_plans())
    task = trainer.parent
    package = import_nnunet_v1_folder(task, out_dir=tmp_path / "models", preset="amos-ct", fold=1)
    assert package.id == "amos-ct-nnmamba" and package.provenance["fold"] == "fold_1"
    assert len(package.outputs["labels"]) == 15 and package.outputs["labels"][0]["name"] == "spleen"
    package = import_nnunet_v1_folder(trainer / "fold_0", out_dir=tmp_path / "models", model_id="from-fold")
    assert package.provenance["fold"] == "fold_0"
    with pytest.raises(ModelImportError, match=r"has no fold_3 with a checkpoint \(available: fold_0, fold_1\)"):
        import_nnunet_v1_folder(trainer, out_dir=tmp_path / "models", fold=3)
    with pytest.raises(ModelImportError, match=r"has no model_best.model \(checkpoints there: "
                                               r"model_final_checkpoint.model\)"):
        import_nnunet_v1_folder(trainer, out_dir=tmp_path / "models", checkpoint="model_best")
    with pytest.raises(ModelImportError, match="not an nnU-Net v1 result folder"):
        import_nnunet_v1_folder(tmp_path / "models", out_dir=tmp_path / "other")


def test_plans_the_package_cannot_express_are_refused(tmp_path):
    net = seg_net()
    transposed = nnunet_plans()
    transposed["transpose_forward"] = [2, 0, 1]
    trainer = make_result_folder(tmp_path / "a", net, nnunet_plans(), folds=("all",), plans_pkl=transposed)
    with pytest.raises(ModelImportError, match=r"transpose the image axes.*\[2, 0, 1\]"):
        import_nnunet_v1_folder(trainer, out_dir=tmp_path / "models")
    trainer = make_result_folder(tmp_path / "b", net, nnunet_plans(), folds=("all",), plans_pkl=brats_plans())
    with pytest.raises(ModelImportError, match="plans list 4 input modalities but the network takes 1"):
        import_nnunet_v1_folder(trainer, out_dir=tmp_path / "models")
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------------------------------------------------------ catalog

def test_catalog_imports_verify_a_known_sha256_and_record_an_unknown_one(tmp_path):
    net = NNMambaEncoder(channels=4).eval()
    source = tmp_path / "best_weight.pth"
    torch.save(net.state_dict(), source)
    digest = sha256_file(source)

    package = import_checkpoint(source, None, catalog_id="adni-nc-ad-nnmamba", out_dir=tmp_path / "models")
    assert package.provenance["catalog_id"] == "adni-nc-ad-nnmamba" and package.id == "adni-nc-ad-nnmamba"
    assert package.provenance["imported_sha256"] == digest
    assert any("could not be verified" in n and digest in n for n in package.provenance["notes"])

    catalog = {"format_version": 1, "models": load_catalog()}
    entry = next(e for e in catalog["models"] if e["id"] == "adni-nc-ad-nnmamba")
    entry["files"] = [{"name": "best_weight.pth", "sha256": digest}]
    (tmp_path / "known.json").write_text(json.dumps(catalog))
    package = import_checkpoint(source, None, catalog_id="adni-nc-ad-nnmamba", catalog=tmp_path / "known.json",
                                out_dir=tmp_path / "models", overwrite=True)
    assert any("matches the catalog entry" in n for n in package.provenance["notes"])

    entry["files"] = [{"name": "best_weight.pth", "sha256": "0" * 64}]
    (tmp_path / "wrong.json").write_text(json.dumps(catalog))
    with pytest.raises(ModelImportError, match="does not match the catalog entry 'adni-nc-ad-nnmamba'.*Download it"):
        import_checkpoint(source, None, catalog_id="adni-nc-ad-nnmamba", catalog=tmp_path / "wrong.json",
                          out_dir=tmp_path / "other")
    assert not (tmp_path / "other").exists()
    with pytest.raises(ModelImportError, match="is imported with preset 'adni-nc-ad', not 'brats'"):
        import_checkpoint(source, "brats", catalog_id="adni-nc-ad-nnmamba", out_dir=tmp_path / "other")


# ---------------------------------------------------------------------------------------------------------- CLI

class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``nnmamba models ...`` in this process (test_cli.py runs the command as a child process; here the
    interpreter start-up would cost more than the commands)."""
    # main() tunes glibc malloc for long inference runs; that must not leak into the rest of this test process.
    monkeypatch.setattr("nnmamba.runtime.retain_freed_memory", lambda: False)

    def run(*args, models_dir):
        monkeypatch.setenv("NNMAMBA_MODELS_DIR", str(models_dir))
        capsys.readouterr()
        code = main(["models", *args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def test_cli_import_list_verify(tmp_path, run_cli):
    models = tmp_path / "models"
    torch.save(seg_net(classes=6, variant="miccss").state_dict(), tmp_path / "f1-43.pth")
    result = run_cli("import", str(tmp_path / "f1-43.pth"), "--catalog", "lfc-fetal-landmarks-nnmamba",
                     models_dir=models)
    assert result.returncode == 0, result.stderr
    assert "Imported lfc-fetal-landmarks-nnmamba 1.0.0 (landmarks" in result.stdout
    assert "note: The catalog has no sha256" in result.stdout

    result = run_cli("list", "--json", models_dir=models)
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert rows["lfc-fetal-landmarks-nnmamba"]["status"] == "user"
    assert rows["lfc-fetal-landmarks-nnmamba"]["where"] == str(models / "lfc-fetal-landmarks-nnmamba")
    assert rows["amos-ct-nnmamba"]["status"] == "not installed" and rows["amos-ct-nnmamba"]["task"] == "segmentation"

    result = run_cli("verify", "lfc-fetal-landmarks-nnmamba", "--load", models_dir=models)
    assert result.returncode == 0 and "weights sha256 matches, weights load strictly" in result.stdout

    weights = models / "lfc-fetal-landmarks-nnmamba" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-50] ^= 0x01
    weights.write_bytes(bytes(data))
    meta_path = models / "lfc-fetal-landmarks-nnmamba" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["outputs"]["lines"][0]["to"] = "TCD9"
    meta_path.write_text(json.dumps(meta))
    result = run_cli("verify", str(meta_path.parent), models_dir=models)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "2 problems" in result.stderr and "$.outputs.lines[0].to: 'TCD9'" in result.stderr
    assert "modified or is corrupt" in result.stderr


def test_cli_refusals_exit_codes(tmp_path, run_cli):
    torch.save(NNMambaEncoder(channels=4).state_dict(), tmp_path / "cls.pth")
    result = run_cli("import", str(tmp_path / "cls.pth"), "--preset", "lfc-landmarks", models_dir=tmp_path)
    assert result.returncode == 2 and "Presets that fit it: adni-nc-ad" in result.stderr
    result = run_cli("import", str(tmp_path / "cls.pth"), models_dir=tmp_path)
    assert result.returncode == 2 and "--preset" in result.stderr
    torch.save({"state_dict": NNMambaEncoder(channels=4).state_dict(), "x": Payload()}, tmp_path / "evil.pth")
    result = run_cli("import", str(tmp_path / "evil.pth"), "--preset", "adni-nc-ad", models_dir=tmp_path)
    assert result.returncode == 3 and "--trust" in result.stderr
    result = run_cli("verify", "no-such-model", models_dir=tmp_path)
    assert result.returncode == 2 and "No model package 'no-such-model'" in result.stderr
    assert run_cli(models_dir=tmp_path).returncode == 2
