"""Bad nnU-Net v2 result folders: each refused with a clear message, nothing imported (no training needed)."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("nnunetv2", reason="needs nnU-Net v2: pip install 'nnmamba[nnunet]'")

import torch  # noqa: E402

from nnmamba.importers import import_source  # noqa: E402

PLANS = {"dataset_name": "Dataset501_Phantom", "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
         "foreground_intensity_properties_per_channel": {"0": {"mean": 40.0, "std": 60.0, "percentile_00_5": -100.0,
                                                               "percentile_99_5": 300.0}},
         "configurations": {"3d_fullres": {"spacing": [8.0, 6.0, 6.0], "patch_size": [32, 48, 48],
                                           "normalization_schemes": ["CTNormalization"],
                                           "use_mask_for_norm": [False]}}}
DATASET = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2}, "file_ending": ".nii.gz"}


def make_folder(root, weights=None, plans=PLANS, trainer="nnMambaTrainer", folds=("fold_0",), extra=None,
                stored_plans=PLANS):
    """A v2 result folder; ``weights`` one state_dict for every fold or a list of one per fold; ``stored_plans``
    the plans inside the checkpoints."""
    folder = root / "Dataset501_Phantom" / f"{trainer}__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(DATASET))
    if weights is None:
        weights = _weights()
    for index, fold in enumerate(folds):
        (folder / fold).mkdir()
        checkpoint = {"network_weights": weights[index] if isinstance(weights, list) else weights,
                      "trainer_name": trainer, "current_epoch": 1,
                      "init_args": {"plans": stored_plans, "configuration": "3d_fullres", "fold": 0,
                                    "dataset_json": DATASET, "device": torch.device("cpu")},
                      "inference_allowed_mirroring_axes": (0, 1, 2)}
        checkpoint.update(extra or {})
        torch.save(checkpoint, folder / fold / "checkpoint_final.pth")
    return folder


def refused(folder, out, match, **kwargs):
    with pytest.raises(ValueError, match=match) as error:
        import_source(folder, out_dir=out, **kwargs)
    assert not out.exists() or not os.listdir(out), "something was imported"
    print(f"{folder.name}: {error.value}")
    return str(error.value)


def test_good_folder_imports(tmp_path):
    package = import_source(make_folder(tmp_path), out_dir=tmp_path / "models")
    assert [label["name"] for label in package.outputs["labels"]] == ["liver", "spleen"]
    assert package.input["resampling"]["spacing"] == [6.0, 6.0, 8.0]
    assert package.input["normalization"]["scheme"] == "ct"


def test_missing_fold(tmp_path):
    refused(make_folder(tmp_path), tmp_path / "models", r"no fold_3 with a checkpoint \(available: fold_0\)", fold=3)


def test_no_folds_at_all(tmp_path):
    refused(make_folder(tmp_path, folds=()), tmp_path / "models", "has no fold folder with a checkpoint")


def test_plans_checkpoint_mismatch(tmp_path):
    other = json.loads(json.dumps(PLANS))
    other["configurations"]["3d_fullres"]["spacing"] = [5.0, 1.0, 1.0]
    refused(make_folder(tmp_path, plans=other), tmp_path / "models", "plans.json does not belong to")


def test_unknown_trainers_checkpoint(tmp_path):
    weights = {"encoder.stages.0.0.convs.0.conv.weight": torch.zeros(32, 1, 3, 3, 3)}
    refused(make_folder(tmp_path, weights=weights, trainer="nnUNetTrainer"), tmp_path / "models",
            "trained by nnUNetTrainer, whose network is not nnMamba")


class Payload:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


def test_arbitrary_pickled_objects(tmp_path):
    message = refused(make_folder(tmp_path, extra={"logging": Payload()}), tmp_path / "models",
                      "needs globals beyond tensors and plain data")
    assert "could run code" in message      # (which global it names first depends on what was loaded before)


def test_region_based_imports_as_regions(tmp_path):
    folder = make_folder(tmp_path, weights=_weights(out=3))
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    (folder / "dataset.json").write_text(json.dumps(dict(DATASET, labels=labels, regions_class_order=[1, 2, 3])))
    package = import_source(folder, out_dir=tmp_path / "models")
    assert package.input["nnunet_v2"]["regions"] == {"class_order": [1, 2, 3]}
    assert [(label["value"], label["name"]) for label in package.outputs["labels"]] == [
        (1, "whole tumor"), (2, "tumor core"), (3, "enhancing tumor")]
    assert [(region["name"], region["labels"]) for region in package.outputs["regions"]] == [
        ("whole tumor (region)", [1, 2, 3]), ("tumor core (region)", [2, 3])]


def test_region_order_must_match_regions(tmp_path):
    folder = make_folder(tmp_path, weights=_weights(out=3))
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    (folder / "dataset.json").write_text(json.dumps(dict(DATASET, labels=labels, regions_class_order=[1, 2])))
    refused(folder, tmp_path / "models", "regions_class_order")


def test_transposed_plans_import(tmp_path):
    plans = json.loads(json.dumps(PLANS))
    plans.update(transpose_forward=[2, 0, 1], transpose_backward=[1, 2, 0])
    plans["configurations"]["3d_fullres"].update(spacing=[6.0, 8.0, 7.0], patch_size=[48, 32, 64])
    package = import_source(make_folder(tmp_path, plans=plans, stored_plans=plans), out_dir=tmp_path / "models")
    spec = package.input["nnunet_v2"]
    assert spec["transpose_forward"] == [2, 0, 1] and spec["patch_size"] == [48, 32, 64]
    assert package.input["patch_size"] == [64, 32, 48]          # the network array's axes, reversed
    # K J I spacing: axis a of the SimpleITK array is transposed axis transpose_backward[a]
    assert package.input["resampling"]["spacing"] == [6.0, 7.0, 8.0]


def test_fold_ensemble_averages_the_folds_logits(tmp_path):
    first, second = _weights(seed=1), _weights(seed=2)
    folder = make_folder(tmp_path, folds=("fold_0", "fold_1"), weights=[first, second])
    package = import_source(folder, out_dir=tmp_path / "models")
    assert package.network["ensemble"] == 2 and package.provenance["fold"] == ["fold_0", "fold_1"]
    one = import_source(folder, out_dir=tmp_path / "models", fold=1)
    assert "ensemble" not in one.network
    from nnmamba.nnunetv2.trainers import nnMambaTrainer_smoke

    x = torch.randn(1, 1, 32, 32, 32)
    expected = 0
    for weights in (first, second):
        network = nnMambaTrainer_smoke.build_network_architecture(None, None, 1, 3, False)
        network.load_state_dict(weights)
        with torch.no_grad():
            expected = expected + network.eval()(x) / 2
    with torch.no_grad():
        got = package.build_model()(x)
    assert torch.allclose(got, expected, atol=1e-5)


def test_ensemble_of_different_networks_refused(tmp_path):
    folder = make_folder(tmp_path, folds=("fold_0", "fold_1"), weights=[_weights(), _weights(out=4)])
    refused(folder, tmp_path / "models", "different networks|outputs")


def _weights(seed=0, out=3):
    from nnmamba.nnunetv2.trainers import nnMambaTrainer_smoke

    torch.manual_seed(seed)
    return nnMambaTrainer_smoke.build_network_architecture(None, None, 1, out).state_dict()


def test_imported_model_runs_without_nnunet_installed(tmp_path):
    """A user runs an imported v2 model with nnmamba alone: nnunetv2 blocked, the package segments a volume."""
    import subprocess
    import sys

    package = import_source(make_folder(tmp_path), out_dir=tmp_path / "models")
    code = f"""
import sys
sys.modules["nnunetv2"] = None                        # any import of nnU-Net fails
import numpy as np
from nnmamba.geometry import Geometry
from nnmamba.imaging import Volume
from nnmamba.modelpkg import resolve_model
from nnmamba.tasks import segment_volume
image = np.zeros((1, 30, 40, 44), np.float32)
image[0, 2:28, 5:35, 4:40] = np.random.default_rng(0).normal(50, 80, (26, 30, 36))
volume = Volume(image, Geometry.create([0, 0, 0], [5.0, 5.0, 7.0], np.eye(3)))
result = segment_volume(resolve_model({str(package.root)!r}), volume, device="cpu")
assert result.labels.shape == (30, 40, 44), result.labels.shape
assert (result.labels[:, :5] == 0).all()              # outside the nonzero box: background, as nnU-Net
print("ok", sorted(np.unique(result.labels).tolist()), "nnunetv2" in sys.modules and sys.modules["nnunetv2"])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace",
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


@pytest.mark.parametrize("argv, environment, message", [
    (["train", "nnunetv2", "501", "3d_fullres", "0"], {}, "needs the environment variable"),
    (["train", "nnunetv2", "501", "3d_fullres", "0", "--trainer", "nnUNetTrainer"], "set",
     "Unknown nnMamba trainer 'nnUNetTrainer'"),
    (["train", "nnunetv2", "501", "3d_fullres", "fourth", "--device", "cpu"], "set", "fold must be 'all' or a number"),
    (["train", "nnunetv2", "501", "3d_fullres", "0", "--device", "cpu", "--num-gpus", "2"], "set",
     "--num-gpus 2"),
])
def test_train_nnunetv2_bad_input_is_one_line(capsys, monkeypatch, tmp_path, argv, environment, message):
    from nnmamba.cli import main

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if environment == "set":
            monkeypatch.setenv(key, str(tmp_path / key))
        else:
            monkeypatch.delenv(key, raising=False)
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("nnmamba: error:") and message in error and "\n" not in error, error


def test_v2_import_options_that_do_not_apply_are_refused(tmp_path):
    refused(make_folder(tmp_path), tmp_path / "models", "'spacing' does not apply", spacing=[1.0, 1.0, 1.0])


def test_fold_ensemble_matches_nnunet_predictor(tmp_path, monkeypatch):
    """Two random folds: the imported ensemble through nnmamba's pipeline and nnUNetPredictor(use_folds=(0, 1))
    give the same probabilities (its float16 blending buffers widened, see nnunetv2_helpers.float32_blending)."""
    import nnunetv2_helpers as helpers
    import numpy as np

    from nnmamba.geometry import Geometry
    from nnmamba.imaging import Volume
    from nnmamba.inference import ProbabilitySink, sliding_window_predict
    from nnmamba.tasks.common import make_predictor, prepare_input

    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2},
               "file_ending": ".nii.gz"}
    folder = helpers.predictor_ready_folder(tmp_path / "results", [_weights(seed=3), _weights(seed=4)], [32, 32, 32],
                                            [4.0, 3.0, 3.0], dataset)
    package = import_source(folder, out_dir=tmp_path / "models")
    assert package.network["ensemble"] == 2
    rng = np.random.default_rng(1)
    image = np.zeros((1, 30, 44, 40), np.float32)                                   # K J I
    image[0, :, 3:41, 2:38] = rng.normal(60, 200, (30, 38, 36))
    spacing_kji = [3.5, 2.7, 3.2]
    volume = Volume(image, Geometry.create([0, 0, 0], spacing_kji[::-1], np.eye(3)))
    prepared = prepare_input(package, volume)
    mapping = prepared.resampling
    logits = sliding_window_predict(prepared.network.array, make_predictor(package, "cpu"),
                                    package.input["patch_size"][::-1], 3, sink=ProbabilitySink(np.float32),
                                    importance=mapping.importance)
    ours = mapping.probabilities(lambda c: logits[c], 3)
    predictor = helpers.nnunet_predictor(folder, folds=(0, 1))
    with helpers.float32_blending():
        _, theirs = predictor.predict_single_npy_array(image.copy(), {"spacing": spacing_kji}, None, None, True)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-4
