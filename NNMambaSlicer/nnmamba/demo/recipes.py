"""The recipes of the three bundled demo models: what each network is, which phantoms it learns from and is judged
on, and how it is trained. ``nnmamba train demo <task>`` runs one and reproduces the shipped package bit for bit
(same seed, same torch thread count, same torch version)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

from ..presets.abdomen import ANATOMICAL_STRUCTURE, KIDNEY, LEFT, RIGHT
from ..presets.base import rgb, terminology_entry
from .phantoms import LANDMARK_NAMES
from .training_data import Augmentation

# 3.7 x 3.7 x 4.9 mm voxels: the organs span enough voxels for a Dice above 0.9 at this network width (at the
# phantom's default 4.4 x 5.8 mm, the first recipe plateaued at 0.876 held-out)
CT_PHANTOM_SIZE = (96, 96, 56)

NOT_CLINICAL = ("Demonstration model: trained on synthetic phantoms to show the NNMamba pipeline end to end. "
                "Not for clinical use, and not expected to work on real images.")
_BASE = {"format_version": 1, "version": "1.0.0",
         "provenance": {"license": "Apache-2.0", "source": "nnmamba.demo.recipes (synthetic phantoms)"}}


def _organ(value, name, type_code, color, modifier=None):
    return {"value": value, "name": name, "color": rgb(*color),
            "terminology": terminology_entry(ANATOMICAL_STRUCTURE, type_code, modifier)}


CT_ORGANS = [
    _organ(1, "liver", ("SCT", "10200004", "Liver"), (221, 130, 101)),
    _organ(2, "spleen", ("SCT", "78961009", "Spleen"), (157, 108, 162)),
    _organ(3, "right kidney", KIDNEY, (185, 102, 83), RIGHT),
    _organ(4, "left kidney", KIDNEY, (185, 102, 83), LEFT),
    _organ(5, "aorta", ("SCT", "15825003", "Aorta"), (224, 97, 76)),
    _organ(6, "lumbar spine", ("SCT", "122496007", "Lumbar spine"), (212, 188, 102)),
]

SEGMENTATION_META = dict(
    _BASE, id="demo-abdomen-ct", name="Demo: abdominal CT organs (synthetic)", task="segmentation",
    network={"class": "NNMambaSeg", "variant": "nnunet", "in_channels": 1, "out_channels": 7, "channels": 8},
    input={"channels": [{"name": "CT", "modality": "CT"}], "orientation": "LPS",
           "resampling": {"mode": "spacing", "spacing": [3.7, 3.7, 4.9]},
           "normalization": {"scheme": "ct", "clip": [-200.0, 500.0], "mean": 80.0, "std": 150.0},
           "patch_size": [64, 64, 48]},
    outputs={"labels": CT_ORGANS}, card=NOT_CLINICAL)

LANDMARKS_META = dict(
    _BASE, id="demo-fetal-landmarks", name="Demo: fetal cerebellar landmarks (synthetic)", task="landmarks",
    network={"class": "NNMambaSeg", "variant": "nnunet", "in_channels": 1, "out_channels": 6, "channels": 8},
    input={"channels": [{"name": "T2", "modality": "MR"}], "orientation": "as-stored",
           "resampling": {"mode": "shape", "shape": [64, 64, 64], "landmark_axis_order": "physical"},
           "normalization": {"scheme": "window", "sigmas": 2.0, "range": [0.0, 1.0]},
           "patch_size": [64, 64, 64]},
    outputs={"landmarks": [{"name": name} for name in LANDMARK_NAMES],
             "lines": [{"name": "TCD", "from": "TCD1", "to": "TCD2"}, {"name": "HDV", "from": "HDV1", "to": "HDV2"},
                       {"name": "ADV", "from": "ADV1", "to": "ADV2"}],
             "decoding": {"method": "distinct-peaks", "separation_voxels": 3.0, "refine": "quadratic",
                          "peak_scale": 1.0}},
    card=NOT_CLINICAL)

# the vermis is a midline structure: its four ends lie on the plane that bisects TCD1-TCD2 at right angles
VERMIS_MIDLINE = {"across": ["TCD1", "TCD2"], "on": ["HDV1", "HDV2", "ADV1", "ADV2"]}

CLASSIFICATION_META = dict(
    _BASE, id="demo-brain-atrophy", name="Demo: brain atrophy classifier (synthetic)", task="classification",
    network={"class": "NNMambaEncoder", "variant": "current", "in_channels": 1, "out_channels": 1, "channels": 8},
    input={"channels": [{"name": "T1", "modality": "MR"}], "orientation": "as-stored",
           "resampling": {"mode": "shape", "shape": [48, 48, 48], "landmark_axis_order": "physical"},
           "normalization": {"scheme": "zscore", "nonzero_mask": True}},
    outputs={"classes": ["normal", "atrophy"], "decision": {"rule": "sigmoid-threshold", "threshold": 0.5}},
    card=NOT_CLINICAL)


@dataclass(frozen=True)
class Recipe:
    """One demo model: the package ``folder`` name under Resources/Models, its model.json, the phantom seeds of
    each split (disjoint) and the :func:`nnmamba.demo.training.fit` settings."""

    folder: str
    meta: dict
    train_seeds: range
    val_seeds: range
    test_seeds: range
    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    threads: int = 2
    options: dict = field(default_factory=dict)
    phantom_size: Optional[tuple] = None

    def model_json(self) -> dict:
        return copy.deepcopy(self.meta)


RECIPES = {
    "segmentation": Recipe(
        "demo-abdomen-ct", SEGMENTATION_META, range(0, 64), range(1000, 1004), range(2000, 2020),
        steps=1300, batch_size=2, lr=2e-3, phantom_size=CT_PHANTOM_SIZE,
        options={"schedule": "poly", "augmentation": Augmentation(foreground_fraction=0.6)}),
    # mirror images (any axis, TCD1/TCD2 swapped) double the poses; the test seeds are ones no recipe ever used
    "landmarks": Recipe(
        "demo-fetal-landmarks", LANDMARKS_META, range(0, 200), range(1000, 1012), range(4000, 4100),
        steps=1100, batch_size=2, lr=2e-3,
        options={"schedule": "poly", "sigma": 2.0,
                 "augmentation": Augmentation(flip_axes=(0, 1, 2), mirror_pairs=(("TCD1", "TCD2"),),
                                              foreground_fraction=0.0)}),
    # twice the phantoms and mirror images along every axis (a class is the same in any of them) against the first
    # recipe's overfitting; 100 validation phantoms checked every 120 steps choose the state to keep
    "classification": Recipe(
        "demo-brain-atrophy", CLASSIFICATION_META, range(0, 600), range(1000, 1100), range(2000, 2100),
        steps=1200, batch_size=4, lr=1e-3,
        options={"schedule": "poly", "validate_every": 120, "augmentation": Augmentation(flip_axes=(0, 1, 2))}),
}


def run_recipe(task: str, out_folder, progress=True, log=print, overwrite=False):
    """Train the demo model of ``task`` from its recipe, measure it on the held-out test phantoms, and write the
    package (model card with recipe, seeds, wall time and held-out metrics) to ``out_folder``."""
    import torch

    from ..modelpkg import write_package
    from ..predictor import NetworkPredictor
    from .evaluation import evaluate
    from .training import _unfinished_package, default_phantom, describe_run, fit, refuse_existing

    recipe = RECIPES[task]
    refuse_existing(out_folder, overwrite)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        run = fit(recipe.model_json(), recipe.train_seeds, recipe.val_seeds, recipe.steps, recipe.batch_size,
                  recipe.lr, recipe.seed, progress, log, phantom_size=recipe.phantom_size, **recipe.options)
        meta, calibration = finish_on_validation(task, recipe, run.model)
        package = _unfinished_package(meta, "unwritten")
        make_phantom = default_phantom(task, recipe.phantom_size)
        predictor = NetworkPredictor(run.model, device="cpu", activation=package.inference["activation"],
                                     mirroring=False)
        held_out = evaluate(package, [make_phantom(s) for s in recipe.test_seeds], predictor)
    finally:
        torch.set_num_threads(threads)
    meta = describe_run(meta, run)
    meta["provenance"]["training"]["test_seeds"] = [recipe.test_seeds.start, recipe.test_seeds.stop - 1]
    meta["provenance"]["evaluation"] = held_out
    if calibration:
        meta["card"] += " " + calibration.pop("card")
        meta["provenance"]["training"]["calibration"] = calibration
    meta["card"] += "\n" + held_out_summary(task, held_out, recipe)
    return write_package(out_folder, meta, run.model, overwrite=overwrite)


def finish_on_validation(task, recipe, model):
    """After training, what the validation phantoms still set (deterministically): a classifier's probability is
    calibrated (Platt scaling folded into ``model``); a landmark model's full-confidence peak height is measured and
    its decoding given the training anatomy's distances (:func:`.calibration.landmark_shape`) and the vermis's
    midline (training validated without either, so the run's record stays as it was). Returns model.json
    and the record of what was done (None for segmentation)."""
    from .calibration import calibrate_classifier, landmark_peak_scale, landmark_shape
    from .training import _unfinished_package, default_phantom

    meta = recipe.model_json()
    if task == "segmentation":
        return meta, None
    package = _unfinished_package(meta, "unwritten")
    make_phantom = default_phantom(task, recipe.phantom_size)
    validation = [make_phantom(seed) for seed in recipe.val_seeds]
    if task == "classification":
        return meta, calibrate_classifier(package, model, validation)
    record = landmark_peak_scale(package, model, validation)
    meta["outputs"]["decoding"]["peak_scale"] = record["peak_scale"]
    shape = landmark_shape(_unfinished_package(meta, "unwritten"), model,
                           [make_phantom(seed) for seed in recipe.train_seeds], validation)
    meta["outputs"]["decoding"]["shape"] = shape.pop("shape")
    meta["outputs"]["decoding"]["midline"] = VERMIS_MIDLINE
    record["card"] += (" " + shape.pop("card") + " The vermis's four points are then put on the plane that bisects "
                       "TCD1-TCD2 at right angles.")
    record["shape"] = shape
    return meta, record


def held_out_summary(task, metrics, recipe) -> str:
    """The model-card lines with the held-out figures the issue asks for."""
    seeds = f"{metrics['cases']} phantoms (seeds {recipe.test_seeds.start}-{recipe.test_seeds.stop - 1})"
    if task == "segmentation":
        organs = ", ".join(f"{name} {value:.3f}" for name, value in metrics["dice"].items())
        distances = ", ".join(f"{name} {value:.1f}" for name, value in metrics["hd95_mm"].items())
        return (f"Held-out test, {seeds}: mean Dice {metrics['mean_dice']:.3f} (lowest {metrics['min_dice']:.3f}); "
                f"{organs}. HD95 (mm): mean {metrics['mean_hd95_mm']:.1f}; {distances}.")
    if task == "landmarks":
        within = ", ".join(f"{name} {100 * value:.0f}%" for name, value in metrics["within_3mm"].items())
        lines = ", ".join(f"{name} {100 * value:.0f}%" for name, value in metrics["line_length_within_2mm"].items())
        confident = metrics["confident_within_3mm"]
        return (f"Held-out test, {seeds}: mean radial error {metrics['mean_radial_error_mm']:.2f} mm, largest "
                f"{metrics['max_error_mm']:.1f} mm; points within 3 mm: {within}; line lengths within 2 mm of the "
                f"truth: {lines}. Points with confidence >= 0.5: {metrics['confident_points']}, of which "
                + ("none" if confident is None else f"{100 * confident:.1f}%") + " within 3 mm.")
    table = "; ".join(f"p {row['range'][0]:.1f}-{row['range'][1]:.1f}: {row['cases']} cases, mean p "
                      f"{row['mean_probability']:.2f}, {100 * row['observed']:.0f}% atrophy"
                      for row in metrics["reliability"])
    return (f"Held-out test, {seeds}: AUC {metrics['auc']:.3f} (a perfect reader of the phantoms' atrophy severity: "
            f"{metrics['auc_ceiling']:.3f}), accuracy {metrics['accuracy']:.3f}, Brier score {metrics['brier']:.3f}. "
            f"Reliability: {table}.")
