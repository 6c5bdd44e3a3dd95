"""A compact, seeded trainer for the demo models: synthetic phantoms in, a model package out.

Bit-for-bit repeatable from ``seed``: the network's initialisation and dropout come from ``torch.manual_seed``, the
batches from one ``numpy.random.default_rng(seed)``, the phantoms from their own seeds, and deterministic algorithms
are switched on for the run. CPU float results also depend on how work is split between threads, so a rerun must use
the same ``torch.get_num_threads()`` (the caller's choice; it is written into the model card).

Validation runs the real inference path (``segment_volume`` / ``detect_landmarks`` / ``classify_volume``) on the
validation phantoms, so the reported metric is what a user of the package would measure; the best validation state
is what gets written.
"""

from __future__ import annotations

import copy
import datetime
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional

import numpy as np
import torch

from ..modelpkg import ModelPackage, validate_meta, write_package
from ..predictor import NetworkPredictor
from ..tasks.classification import classify_volume
from ..tasks.landmarks import detect_landmarks
from ..tasks.segmentation import segment_volume
from .losses import classification_loss, dice_ce_loss, heatmap_loss
from .training_data import Augmentation, Sampler, TrainingDataError, default_phantom, phantom_volume, prepare_case

METRICS = {"segmentation": ("mean_dice", True), "landmarks": ("mean_radial_error_mm", False),
           "classification": ("auc", True)}  # name, higher is better


@dataclass
class TrainingRun:
    """What :func:`fit` produced: the best-state network and the run's record."""

    model: torch.nn.Module
    losses: List[float]
    validations: List[dict]           # {"step", metric name: value}
    best: Optional[dict]
    seconds: float
    recipe: dict = field(default_factory=dict)


def _unfinished_package(meta, folder):
    """The package object inference functions need, before there are weights (validation uses it in memory)."""
    checked = validate_meta(dict(copy.deepcopy(meta), weights={"file": "weights.safetensors", "sha256": "0" * 64}),
                            "model.json to train")
    return ModelPackage(folder, checked)


def _check_seeds(train_seeds, val_seeds):
    train_seeds, val_seeds = [int(s) for s in train_seeds], [int(s) for s in val_seeds]
    if not train_seeds or not val_seeds:
        raise TrainingDataError("Give at least one training seed and one validation seed.")
    shared = sorted(set(train_seeds) & set(val_seeds))
    if shared:
        raise TrainingDataError(f"Training and validation seeds must be disjoint; both contain {shared[:10]}.")
    return train_seeds, val_seeds


def fit(meta, train_seeds, val_seeds, steps, batch_size=2, lr=1e-3, seed=0, progress=True, log=print, *,
        phantom: Optional[Callable] = None, phantom_size=None, sigma=2.0, augmentation: Optional[Augmentation] = None,
        validate_every=None, weight_decay=0.0) -> TrainingRun:
    """Train the network ``meta`` describes on phantoms; returns the best-validation network (no files written).

    ``phantom``: ``seed -> Phantom`` (default: the task's phantom, at ``phantom_size`` voxels I J K). ``sigma``: the
    landmark heatmap width in network voxels. ``validate_every``: steps between validations (default: five per run,
    and always after the last step).
    """
    package = _unfinished_package(meta, "unwritten")
    task = package.task
    train_seeds, val_seeds = _check_seeds(train_seeds, val_seeds)
    if int(steps) < 1 or int(batch_size) < 1 or not lr > 0:
        raise TrainingDataError(f"steps and batch_size must be >= 1 and lr > 0 (got {steps}, {batch_size}, {lr}).")
    steps, batch_size = int(steps), int(batch_size)
    augmentation = augmentation or Augmentation()
    make_phantom = phantom or default_phantom(task, phantom_size)
    validate_every = max(1, int(validate_every or -(-steps // 5)))
    peak_scale = float(package.outputs.get("decoding", {}).get("peak_scale", 255.0))
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    started = time.perf_counter()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        sampler = Sampler(package, [prepare_case(package, make_phantom(s)) for s in train_seeds], augmentation, sigma)
        validation = [make_phantom(s) for s in val_seeds]
        if task == "classification" and len({p.label for p in validation}) < 2:
            raise TrainingDataError("The validation seeds give phantoms of one class only; the AUC needs both.")
        model = package.architecture.build()
        if hasattr(model, "do_ds"):
            model.do_ds = False  # train the full-resolution output, the one inference uses
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        losses, validations, best, best_state = [], [], None, None
        metric, higher_is_better = METRICS[task]
        bar = _progress_bar(steps, progress)
        if progress and log is print:
            log = bar.write  # keeps the bar on its own line
        for step in range(1, steps + 1):
            model.train()
            images, targets = sampler.batch(rng, batch_size)
            output = model(torch.from_numpy(images))
            target = torch.from_numpy(targets)
            if task == "segmentation":
                loss = dice_ce_loss(output, target)
            elif task == "landmarks":
                loss = heatmap_loss(output, target, peak_scale)
            else:
                loss = classification_loss(output, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if step % validate_every == 0 or step == steps:
                value = validate(package, model, validation)
                validations.append({"step": step, metric: value})
                improved = best is None or (value > best[metric] if higher_is_better else value < best[metric])
                if improved:
                    best = {"step": step, metric: value}
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                log(f"step {step}/{steps}: loss {losses[-1]:.4f}, validation {metric} {value:.4f}"
                    + (" (best)" if improved else ""))
        bar.close()
        model.load_state_dict(best_state)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=warn_only)
    name = getattr(phantom, "__name__", "") if phantom else _phantom_name(task)
    recipe = {"task": task, "phantom": name if name.isidentifier() else "custom",
              "phantom_size": list(phantom_size) if phantom_size is not None else None,
              "train_seeds": train_seeds, "val_seeds": val_seeds, "steps": steps, "batch_size": batch_size,
              "lr": lr, "weight_decay": weight_decay, "seed": seed, "optimizer": "Adam",
              "loss": {"segmentation": "cross-entropy + foreground soft Dice", "landmarks": "heatmap MSE",
                       "classification": "BCE with logits / cross-entropy"}[task],
              "augmentation": asdict(augmentation), "validate_every": validate_every,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version()}
    if task == "landmarks":
        recipe.update(sigma_voxels=float(sigma), peak_scale=peak_scale)
    return TrainingRun(model.eval(), losses, validations, best, time.perf_counter() - started, recipe)


def _phantom_name(task):
    return {"segmentation": "abdomen_ct", "landmarks": "fetal_brain", "classification": "brain_atrophy"}[task]


def _progress_bar(steps, enabled):
    from tqdm import tqdm

    return tqdm(total=steps, desc="training", unit="step", disable=not enabled, leave=False)


def train(meta, out_folder, train_seeds, val_seeds, steps, batch_size=2, lr=1e-3, seed=0, progress=True, log=print,
          *, overwrite=False, **options) -> ModelPackage:
    """Train (see :func:`fit` for ``options``) and write the best state as a model package in ``out_folder``, with
    the recipe, validation metrics and wall time in ``card`` and ``provenance.training``."""
    run = fit(meta, train_seeds, val_seeds, steps, batch_size, lr, seed, progress, log, **options)
    return write_package(out_folder, describe_run(meta, run), run.model, overwrite=overwrite)


def describe_run(meta, run: TrainingRun) -> dict:
    """``meta`` with the training record added (model card text and ``provenance``)."""
    meta = copy.deepcopy(meta)
    metric = METRICS[run.recipe["task"]][0]
    provenance = dict(meta.get("provenance", {}))
    provenance.setdefault("source", "nnmamba.demo.training on synthetic phantoms (nnmamba.demo.phantoms)")
    provenance["created"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    provenance["training"] = dict(run.recipe, best=run.best, validations=run.validations,
                                  final_loss=run.losses[-1], wall_seconds=round(run.seconds, 1))
    recipe = run.recipe
    card = [
        f"Trained on synthetic {recipe['phantom']} phantoms only: a demonstration model, not for clinical use.",
        f"Recipe: {recipe['steps']} steps of Adam (lr {recipe['lr']}, batch {recipe['batch_size']}), seed "
        f"{recipe['seed']}, loss {recipe['loss']}; {len(recipe['train_seeds'])} training and "
        f"{len(recipe['val_seeds'])} validation phantoms (disjoint seeds).",
        f"Validation ({metric}, best at step {run.best['step']}): {run.best[metric]:.4f}.",
        f"Wall time {run.seconds:.0f} s on {recipe['threads']} CPU thread(s), torch {recipe['torch']}. "
        "Retraining with the same seed and thread count reproduces the weights bit for bit.",
    ]
    meta["card"] = (meta["card"].rstrip() + "\n\n" if meta.get("card") else "") + "\n".join(card)
    meta["provenance"] = provenance
    return meta


# --------------------------------------------------------------------------------------------------- validation

def validate(package, model, phantoms) -> float:
    """The task metric over validation phantoms, through the inference code path on their original grids."""
    predictor = NetworkPredictor(model, device="cpu", activation=package.inference["activation"], mirroring=False)
    task = package.task
    if task == "segmentation":
        scores = []
        for phantom in phantoms:
            labels = segment_volume(package, phantom_volume(phantom), device="cpu", predictor=predictor).labels
            scores += dice_scores(labels, phantom.labels, package.network["out_channels"])
        return float(np.mean(scores)) if scores else 0.0
    if task == "landmarks":
        errors = []
        for phantom in phantoms:
            result = detect_landmarks(package, phantom_volume(phantom), device="cpu", predictor=predictor)
            errors += [float(np.linalg.norm(np.asarray(p["position"]) - np.asarray(phantom.landmarks[p["label"]])))
                       for p in result.points]
        return float(np.mean(errors))
    probabilities, truth = [], []
    for phantom in phantoms:
        probabilities.append(classify_volume(package, phantom_volume(phantom), device="cpu",
                                             predictor=predictor).probabilities)
        truth.append(int(phantom.label))
    probabilities, truth = np.asarray(probabilities), np.asarray(truth)
    classes = [c for c in range(probabilities.shape[1]) if 0 < np.sum(truth == c) < len(truth)]
    return float(np.mean([auc(probabilities[:, c], truth == c) for c in classes]))


def dice_scores(predicted, reference, num_classes) -> list:
    """Dice of each foreground class present in either map (a class absent from both is not scored)."""
    scores = []
    for value in range(1, num_classes):
        a, b = predicted == value, reference == value
        total = int(a.sum()) + int(b.sum())
        if total:
            scores.append(2.0 * int(np.logical_and(a, b).sum()) / total)
    return scores


def auc(scores, positive) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counting one half."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        raise ValueError("The AUC needs at least one positive and one negative case.")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))
