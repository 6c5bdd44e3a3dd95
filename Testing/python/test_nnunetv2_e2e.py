"""The proof against nnU-Net v2 itself: our phantoms as an nnU-Net v2 dataset, nnU-Net's planning and
preprocessing, our trainer through `nnmamba train nnunetv2`, `nnmamba models import` of the result folder, and the
held-out case (another spacing, a zero border: both pipelines crop and resample) through `nnmamba predict` and
through nnU-Net's own nnUNetPredictor on the same weights. Measured (2 CPU cores, shared): about 3 minutes, most of it
nnU-Net's planning, preprocessing and the smoke training; probabilities agree to 6e-8 with nnU-Net's blending
buffers in float32, to ~2e-2 with its float16 ones (see nnunetv2_helpers.float32_blending)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="needs nnU-Net v2: pip install 'nnmamba[nnunet]'")

import nnunetv2_helpers as helpers  # noqa: E402

TEST_I = helpers.TEST_SIZE[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunetv2")
    env = helpers.environment(root)
    started = time.perf_counter()
    helpers.write_raw_dataset(env)
    helpers.plan_and_preprocess(env)
    trainer_dir = helpers.train_smoke(env)
    return {"root": root, "env": env, "trainer_dir": trainer_dir, "seconds": time.perf_counter() - started}


def test_result_folder_is_nnunets(trained):
    folder = trained["trainer_dir"]
    assert (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()
    assert (folder / "fold_0" / "checkpoint_final.pth").is_file()


def test_nnmamba_predict_matches_nnunet_predictor(trained, monkeypatch):
    import SimpleITK as sitk

    from nnmamba.imaging import read_image
    from nnmamba.inference import ProbabilitySink, sliding_window_predict
    from nnmamba.modelpkg import resolve_model
    from nnmamba.tasks.common import make_predictor, prepare_input

    root, env = trained["root"], trained["env"]
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    models = root / "models"
    result = subprocess.run([sys.executable, "-m", "nnmamba", "models", "import", str(trained["trainer_dir"]),
                             "--out", str(models), "--id", "phantom-v2"], env=env, capture_output=True,
                            encoding="utf-8", errors="replace")
    assert result.returncode == 0, result.stderr
    image_path = root / "heldout_0000.nii.gz"
    helpers.held_out_case(image_path)
    out = root / "heldout-nnmamba.nii.gz"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "nnmamba", "predict", "segment", "--model",
                             str(models / "phantom-v2"), "--input", str(image_path), "--output", str(out),
                             "--device", "cpu"], env=env, capture_output=True, encoding="utf-8", errors="replace")
    assert result.returncode == 0, result.stderr
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))

    predictor = helpers.nnunet_predictor(trained["trainer_dir"])
    image = sitk.ReadImage(str(image_path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    properties = {"spacing": list(image.GetSpacing())[::-1]}   # nnU-Net's SimpleITKIO: array order (K, J, I)
    with helpers.float32_blending():   # nnU-Net's pipeline, its float16 blending buffers widened (see there)
        theirs, their_probabilities = predictor.predict_single_npy_array(array, properties, None, None, True)
    as_shipped, as_shipped_probabilities = predictor.predict_single_npy_array(array, dict(properties), None, None,
                                                                              True)
    assert theirs.shape == ours.shape == as_shipped.shape

    # our probabilities on the input grid, through the same preparation and mapping back as `nnmamba predict`
    package = resolve_model(str(models / "phantom-v2"))
    prepared = prepare_input(package, read_image(str(image_path)))
    mapping = prepared.resampling
    assert mapping.box[2] == [3, TEST_I - 3] and mapping.cropped_shape != mapping.network_shape  # crop + resample
    network = make_predictor(package, "cpu")
    logits = sliding_window_predict(prepared.network.array, network, package.input["patch_size"][::-1],
                                    package.network["out_channels"], overlap=0.5, sink=ProbabilitySink(np.float32),
                                    importance=mapping.importance)
    probabilities = mapping.probabilities(lambda c: logits[c], len(logits))
    assert probabilities.shape == their_probabilities.shape
    difference = float(np.abs(probabilities - their_probabilities).max())
    float16_difference = float(np.abs(probabilities - as_shipped_probabilities).max())
    dice, dice_as_shipped = _dice(ours, theirs), _dice(ours, as_shipped)
    present = sorted(set(np.unique(theirs).tolist()) - {0})
    print(f"\nprobability max |difference| vs nnUNetPredictor: {difference:.2e} (float32 blending), "
          f"{float16_difference:.2e} (as shipped, float16 blending); labels present {present}; Dice per label "
          f"{dice} (float32 blending), {dice_as_shipped} (as shipped); setup {trained['seconds']:.0f} s, predict + "
          f"compare {time.perf_counter() - started:.0f} s")
    assert difference < 1e-3
    # Labels may differ only where nnU-Net's own probabilities are tied to rounding (a smoke model has many such
    # voxels): each disagreeing voxel's top-two margin is far below any real decision.
    assert _largest_margin_where_they_differ(ours, theirs, their_probabilities) < 1e-4, dice
    # A smoke model (4 iterations) may call everything one label, which makes the label maps agree trivially; the
    # whole ranking of the seven classes puts every label at every voxel, so every label is compared everywhere.
    ours_ranked, theirs_ranked = np.argsort(-probabilities, axis=0), np.argsort(-their_probabilities, axis=0)
    ranked_apart = np.any(ours_ranked != theirs_ranked, axis=0)
    closest_pair = np.diff(np.sort(their_probabilities, axis=0), axis=0).min(axis=0)
    print(f"classes ranked apart at {int(ranked_apart.sum())} of {ranked_apart.size} voxels")
    assert float(closest_pair[ranked_apart].max(initial=0.0)) < 1e-4
    assert float16_difference < 0.1   # float16 rounding, not a different pipeline
    assert os.environ.get("nnUNet_extTrainer")   # set for nnU-Net's predictor, not written anywhere


def _dice(a_labels, b_labels, labels=range(1, 7)):
    dice = {}
    for label in labels:
        a, b = a_labels == label, b_labels == label
        total = int(a.sum() + b.sum())
        dice[label] = 1.0 if total == 0 else round(float(2.0 * np.logical_and(a, b).sum() / total), 4)
    return dice


def _largest_margin_where_they_differ(a_labels, b_labels, probabilities):
    """The largest gap between the two most probable classes over the voxels whose labels differ (0 if none)."""
    differ = a_labels != b_labels
    if not differ.any():
        return 0.0
    top_two = np.sort(probabilities[:, differ], axis=0)[-2:]
    margin = float((top_two[1] - top_two[0]).max())
    print(f"{int(differ.sum())} voxels differ, each a tie: largest top-two margin {margin:.1e}")
    return margin
