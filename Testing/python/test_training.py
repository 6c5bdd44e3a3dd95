"""The demo trainer: bit-for-bit repeatable from the seed, each task's loss goes down on a tiny setting, targets agree
with the phantoms through the network geometry, and the written package runs through the real task function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnmamba.demo.evaluation import auc
from nnmamba.demo.losses import classification_loss, dice_ce_loss, heatmap_loss
from nnmamba.demo.phantoms import CT_LABELS, LANDMARK_NAMES, abdomen_ct, brain_atrophy, fetal_brain
from nnmamba.demo.training import fit, train, validate
from nnmamba.demo.training_data import (
    Augmentation,
    Case,
    Sampler,
    TrainingDataError,
    gaussian_heatmaps,
    phantom_volume,
    prepare_case,
)
from nnmamba.modelpkg import ModelPackage
from nnmamba.tasks.classification import classify_volume
from nnmamba.tasks.common import prepare_input
from nnmamba.tasks.landmarks import detect_landmarks
from nnmamba.tasks.segmentation import segment_volume

SIZE = (32, 32, 32)
BASE = {"format_version": 1, "version": "0.1.0", "provenance": {"license": "Apache-2.0"}}


def segmentation_meta():
    return dict(BASE, id="tiny-ct", name="Tiny CT organs", task="segmentation",
                network={"class": "NNMambaSeg", "variant": "nnunet", "in_channels": 1, "out_channels": 7,
                         "channels": 4},
                input={"channels": [{"name": "CT", "modality": "CT"}], "orientation": "LPS",
                       "resampling": {"mode": "spacing", "spacing": [11.0, 11.0, 15.0]},
                       "normalization": {"scheme": "ct", "clip": [-200.0, 300.0], "mean": 40.0, "std": 120.0},
                       "patch_size": [32, 32, 32]},
                outputs={"labels": [{"value": v, "name": n, "color": [0.5, 0.5, 0.5]} for v, n in CT_LABELS.items()]})


def landmark_meta():
    return dict(BASE, id="tiny-lfc", name="Tiny cerebellar landmarks", task="landmarks",
                network={"class": "NNMambaSeg", "variant": "miccss", "in_channels": 1, "out_channels": 6,
                         "channels": 4},
                input={"channels": [{"name": "T2", "modality": "MR"}], "orientation": "as-stored",
                       "resampling": {"mode": "shape", "shape": [32, 32, 32], "landmark_axis_order": "physical"},
                       "normalization": {"scheme": "window", "sigmas": 2.0, "range": [0.0, 1.0]},
                       "patch_size": [32, 32, 32]},
                outputs={"landmarks": [{"name": n} for n in LANDMARK_NAMES],
                         "lines": [{"name": "TCD", "from": "TCD1", "to": "TCD2"}],
                         "decoding": {"method": "argmax", "refine": "none", "peak_scale": 1.0}})


def classification_meta():
    return dict(BASE, id="tiny-atrophy", name="Tiny atrophy classifier", task="classification",
                network={"class": "NNMambaEncoder", "variant": "current", "in_channels": 1, "out_channels": 1,
                         "channels": 4},
                input={"channels": [{"name": "T1", "modality": "MR"}], "orientation": "as-stored",
                       "resampling": {"mode": "shape", "shape": [32, 32, 32], "landmark_axis_order": "physical"},
                       "normalization": {"scheme": "zscore", "nonzero_mask": True}},
                outputs={"classes": ["normal", "atrophy"], "decision": {"rule": "sigmoid-threshold", "threshold": 0.5}})


METAS = {"segmentation": segmentation_meta, "landmarks": landmark_meta, "classification": classification_meta}
QUIET = {"progress": False, "log": lambda message: None, "phantom_size": SIZE}


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------ repeatability

@pytest.mark.slow
def test_same_seed_gives_identical_weights_and_another_seed_differs():
    def run(seed):
        return _weights(fit(landmark_meta(), [0, 1], [50], steps=3, batch_size=2, lr=1e-3, seed=seed,
                            validate_every=3, augmentation=Augmentation(flip_axes=(0, 1, 2),
                                                                        mirror_pairs=(("TCD1", "TCD2"),)),
                            **QUIET).model)

    first, again, other = run(3), run(3), run(4)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


# ------------------------------------------------------------------------------------------------ learning

LEARNING = {  # steps, batch, lr, required ratio mean(last 5 losses) / mean(first 5)
    "segmentation": (15, 2, 3e-3, 0.95),
    "landmarks": (15, 2, 3e-3, 0.3),
    "classification": (20, 4, 3e-3, 0.9),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(LEARNING))
def test_loss_goes_down_on_a_tiny_setting(task):
    steps, batch, lr, ratio = LEARNING[task]
    run = fit(METAS[task](), range(4), [100, 101], steps=steps, batch_size=batch, lr=lr, seed=0,
              validate_every=steps, **QUIET)
    assert len(run.losses) == steps and all(np.isfinite(run.losses))
    assert np.mean(run.losses[-5:]) < ratio * np.mean(run.losses[:5]), run.losses
    assert run.best["step"] == steps and len(run.validations) == 1


# ------------------------------------------------------------------------------------------------ packages

def test_landmark_package_keeps_the_best_state_and_runs_on_a_fresh_phantom(tmp_path):
    messages = []
    package = train(landmark_meta(), tmp_path / "lfc", [0, 1], [60, 61], steps=4, batch_size=2, lr=3e-3, seed=1,
                    progress=False, log=messages.append, validate_every=1, phantom_size=SIZE)
    reopened = ModelPackage.open(tmp_path / "lfc", verify=True)
    record = reopened.provenance["training"]
    errors = [v["mean_radial_error_mm"] for v in record["validations"]]
    assert len(errors) == 4 and len(messages) == 4
    assert record["best"]["mean_radial_error_mm"] == min(errors)
    assert record["best"]["step"] == 1 + int(np.argmin(errors))
    # the written weights are the best state: validating them again gives the best metric
    validation = [fetal_brain(s, size=SIZE) for s in (60, 61)]
    assert validate(reopened, reopened.build_model(), validation) == pytest.approx(min(errors), abs=1e-6)
    assert "best at step" in reopened.meta["card"] and record["val_seeds"] == [60, 61]
    assert record["threads"] == torch.get_num_threads() and record["wall_seconds"] >= 0

    result = detect_landmarks(package, phantom_volume(fetal_brain(900, size=SIZE)), device="cpu")
    assert [p["label"] for p in result.points] == list(LANDMARK_NAMES)
    assert result.lines[0]["name"] == "TCD" and result.lines[0]["length"] >= 0


def test_segmentation_package_runs_on_a_fresh_phantom(tmp_path):
    package = train(segmentation_meta(), tmp_path / "ct", [0], [70], steps=2, batch_size=1, lr=1e-3, seed=0,
                    **QUIET)
    assert ModelPackage.open(package.root).meta["provenance"]["training"]["task"] == "segmentation"
    phantom = abdomen_ct(901, size=SIZE)
    result = segment_volume(package, phantom_volume(phantom), device="cpu")
    assert result.labels.shape == phantom.image.shape and int(result.labels.max()) < 7
    assert "Validation (mean_dice" in package.meta["card"]


def test_classification_package_runs_on_a_fresh_phantom(tmp_path):
    package = train(classification_meta(), tmp_path / "cls", [0, 1], [80, 81], steps=2, batch_size=2, lr=1e-3,
                    seed=0, **QUIET)
    result = classify_volume(package, phantom_volume(brain_atrophy(902, size=SIZE)), device="cpu")
    assert result.decision in ("normal", "atrophy") and sum(result.probabilities) == pytest.approx(1.0)
    assert 0.0 <= package.provenance["training"]["best"]["auc"] <= 1.0


def test_existing_folder_is_not_overwritten(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        train(classification_meta(), tmp_path / "taken", [0], [2, 3], steps=1, batch_size=1, **QUIET)


# ------------------------------------------------------------------------------------------------ targets

def _unwritten(meta):
    from nnmamba.demo.training import _unfinished_package

    return _unfinished_package(meta, "unwritten")


def test_landmark_targets_decode_back_to_the_phantom_landmarks():
    package = _unwritten(landmark_meta())
    phantom = fetal_brain(5, size=(40, 36, 30))
    case = prepare_case(package, phantom)
    prepared = prepare_input(package, phantom_volume(phantom))
    shape = case.image.shape[1:]
    heatmaps = gaussian_heatmaps(case.points, (0, 0, 0), shape, sigma=1.5)
    voxel = np.linalg.norm(prepared.network.geometry.spacing)
    for heatmap, name in zip(heatmaps, LANDMARK_NAMES):
        peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        assert heatmap[peak] > 0.7
        position = prepared.resampling.landmark_to_lps(np.array(peak, dtype=float))
        assert np.linalg.norm(position - phantom.landmarks[name]) <= 0.5 * voxel + 1e-6


def test_segmentation_labels_follow_reorientation_and_resampling():
    package = _unwritten(segmentation_meta())
    phantom = abdomen_ct(3, size=SIZE)
    case = prepare_case(package, phantom)
    assert case.labels.shape == case.image.shape[1:] and case.labels.dtype == np.uint8
    assert set(np.unique(case.labels)) <= set(range(7)) and len(case.foreground) > 0
    # every organ is still there, at a plausible intensity (CT-normalised soft tissue, not air)
    soft_tissue = case.image[0][case.labels == 1]  # liver
    air = case.image[0][case.labels == 0].min()
    assert soft_tissue.size and np.median(soft_tissue) > air + 1.0


def test_mirroring_swaps_sided_landmarks():
    package = _unwritten(landmark_meta())
    points = np.array([[5.0, 16, 16], [26, 16, 16]] + [[16.0, 16, 16]] * 4)
    image = np.zeros((1, 32, 32, 32), np.float32)
    image[0, 16, 16, 5] = 1.0  # marks TCD1's side
    case = Case(image, None, points, None, None)
    sampler = Sampler(package, [case], Augmentation(flip_axes=(0,), mirror_pairs=(("TCD1", "TCD2"),),
                                                    intensity_scale=0.0, intensity_shift=0.0))
    rng = np.random.default_rng(0)
    seen_flip = seen_plain = False
    for _ in range(12):
        images, heatmaps = sampler.batch(rng, 1)
        tcd1_i = np.unravel_index(int(np.argmax(heatmaps[0, 0])), heatmaps.shape[2:])[2]
        mark_i = np.unravel_index(int(np.argmax(images[0, 0])), images.shape[2:])[2]
        if mark_i == 5:
            seen_plain = True
            assert tcd1_i == 5
        else:
            seen_flip = True
            assert mark_i == 26 and tcd1_i == 5  # mirrored: the old TCD2 (now at i=5) is the new TCD1
    assert seen_flip and seen_plain


def test_flipping_landmarks_without_mirror_pairs_is_refused():
    package = _unwritten(landmark_meta())
    case = Case(np.zeros((1, 32, 32, 32), np.float32), None, np.full((6, 3), 16.0), None, None)
    with pytest.raises(TrainingDataError, match="mirror_pairs"):
        Sampler(package, [case], Augmentation(flip_axes=(0,)))


def test_overlapping_seeds_and_bad_settings_are_refused():
    with pytest.raises(TrainingDataError, match="disjoint"):
        fit(landmark_meta(), [0, 1], [1, 2], steps=1, **QUIET)
    with pytest.raises(TrainingDataError, match="steps"):
        fit(landmark_meta(), [0], [1], steps=0, **QUIET)
    with pytest.raises(TrainingDataError, match="one class"):
        fit(classification_meta(), [0], [2, 4], steps=1, **QUIET)


# ------------------------------------------------------------------------------------------------ losses, metric

def test_auc_counts_ties_as_half():
    assert auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auc([0.1, 0.9], [True, False]) == 0.0
    assert auc([0.5, 0.5, 0.2, 0.7], [True, False, False, True]) == pytest.approx((2 + 1 + 0.5) / 4)
    with pytest.raises(ValueError):
        auc([0.1, 0.2], [True, True])


def test_losses_are_small_for_right_answers_and_large_for_wrong_ones():
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6, 2:6] = 1
    right = torch.nn.functional.one_hot(target, 2).permute(0, 4, 1, 2, 3).float() * 20
    assert dice_ce_loss(right, target) < 0.01 < 1.0 < dice_ce_loss(-right, target)
    heat = torch.rand(1, 2, 4, 4, 4)
    assert float(heatmap_loss(heat * 255, heat, 255.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(heatmap_loss(heat, heat, 255.0)) > 0.01
    logits = torch.tensor([[5.0], [-5.0]])
    assert classification_loss(logits, torch.tensor([1, 0])) < 0.01 < 1.0 < classification_loss(logits,
                                                                                              torch.tensor([0, 1]))


def test_the_relu_head_starts_open_so_every_class_map_gets_gradient():
    from nnmamba.demo.training import _open_relu_head
    from nnmamba.networks import NNMambaSeg

    network = NNMambaSeg(in_ch=1, channels=4, number_classes=3, variant="nnunet").eval()
    network.do_ds = False
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        closed = (network(image) > 0).float().mean()
        _open_relu_head(network)
        opened = (network(image) > 0).float().mean()
    assert closed < 0.8 and opened > 0.99  # BN + ReLU cut about half the logits to 0 before
    assert set(network.state_dict()) == set(NNMambaSeg(in_ch=1, channels=4, number_classes=3,
                                                        variant="nnunet").state_dict())


def _two_landmark_target():
    """Two channels whose Gaussians sit at different places of a 16^3 patch."""
    from nnmamba.demo.training_data import gaussian_heatmaps

    return torch.from_numpy(gaussian_heatmaps([(4, 4, 4), (11, 11, 11)], (0, 0, 0), (16, 16, 16), 1.5))[None]


def test_a_channel_lit_on_another_landmarks_place_costs_as_much_as_missing_its_own():
    target = _two_landmark_target()
    right = target.clone()
    confused = target.clone()
    confused[:, 0] += target[:, 1]          # channel 0 also answers at landmark 1's place
    missing = target.clone()
    missing[:, 0] = 0                       # channel 0 finds nothing
    wrong_blob, no_blob = (float(heatmap_loss(output, target, 1.0) - heatmap_loss(right, target, 1.0))
                           for output in (confused, missing))
    # weighted only under a channel's own Gaussian, the extra blob cost about 1/1000 of a miss (the first demo
    # model lit every channel on every cerebellar point); with every landmark's place weighted, the same
    assert wrong_blob == pytest.approx(no_blob, rel=0.05)


def test_brier_score_and_reliability_table_of_a_calibrated_and_an_overconfident_probability():
    from nnmamba.demo.calibration import brier_score, reliability_table

    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 4000)
    positive = rng.random(4000) < 1 / (1 + np.exp(-true_logit))
    calibrated, overconfident = (1 / (1 + np.exp(-scale * true_logit)) for scale in (1.0, 4.0))
    assert brier_score(calibrated, positive) < brier_score(overconfident, positive)
    assert brier_score(positive.astype(float), positive) == 0.0
    table = reliability_table(calibrated, positive)
    assert sum(row["cases"] for row in table) == 4000 and len(table) == 5
    assert all(abs(row["mean_probability"] - row["observed"]) < 0.05 for row in table)
    worst = reliability_table(overconfident, positive)
    assert max(abs(row["mean_probability"] - row["observed"]) for row in worst) > 0.1


def test_hd95_of_two_concentric_balls_is_their_radius_difference():
    from nnmamba.demo.evaluation import hd95

    grid = np.indices((40, 40, 40)).astype(float)
    distance = np.sqrt(sum((g - 20) ** 2 for g in grid))
    spacing = (2.0, 2.0, 2.0)
    inner, outer = distance <= 6, distance <= 10
    assert hd95(inner, outer, spacing) == pytest.approx(8.0, abs=2.1)   # 4 voxels of 2 mm, within a voxel
    assert hd95(outer, outer, spacing) == pytest.approx(0.0, abs=1e-6)
    assert hd95(np.zeros_like(inner), outer, spacing) is None
