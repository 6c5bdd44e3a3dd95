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
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch

from ..modelpkg import ModelPackage, validate_meta, write_package
from ..predictor import NetworkPredictor
from .evaluation import HEADLINE, evaluate
from .losses import HEATMAP_WEIGHTINGS, classification_loss, dice_ce_loss, heatmap_loss
from .training_data import Augmentation, Sampler, TrainingDataError, default_phantom, prepare_case


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
        validate_every=None, weight_decay=0.0, schedule="constant",
        heatmap_weighting="every-landmark") -> TrainingRun:
    """Train the network ``meta`` describes on phantoms; returns the best-validation network (no files written).

    ``phantom``: ``seed -> Phantom`` (default: the task's phantom, at ``phantom_size`` voxels I J K). ``sigma``: the
    landmark heatmap width in network voxels; ``heatmap_weighting``: see :func:`~.losses.heatmap_loss`.
    ``validate_every``: steps between validations (default: five per run,
    and always after the last step). ``schedule``: ``constant`` or ``poly`` (nnU-Net's lr * (1 - step/steps)^0.9,
    which lets the last steps settle).
    """
    package = _unfinished_package(meta, "unwritten")
    task = package.task
    train_seeds, val_seeds = _check_seeds(train_seeds, val_seeds)
    if int(steps) < 1 or int(batch_size) < 1 or not lr > 0:
        raise TrainingDataError(f"steps and batch_size must be >= 1 and lr > 0 (got {steps}, {batch_size}, {lr}).")
    steps, batch_size = int(steps), int(batch_size)
    if heatmap_weighting not in HEATMAP_WEIGHTINGS:
        raise TrainingDataError(f"heatmap_weighting must be one of {', '.join(HEATMAP_WEIGHTINGS)}, got "
                                f"{heatmap_weighting!r}.")
    if schedule not in ("constant", "poly"):
        raise TrainingDataError(f"schedule must be 'constant' or 'poly', got {schedule!r}.")
    augmentation = augmentation or Augmentation()
    make_phantom = phantom or default_phantom(task, phantom_size)
    validate_every = max(1, int(validate_every or -(-steps // 5)))
    peak_scale = float(package.outputs.get("decoding", {}).get("peak_scale", 255.0))
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    started, cpu_started = time.perf_counter(), time.process_time()
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
        if task == "segmentation":
            _open_relu_head(model)  # (a landmark head wants its zeros: heatmaps are 0 almost everywhere)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        losses, validations, best, best_state = [], [], None, None
        metric, higher_is_better = HEADLINE[task]
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
                loss = heatmap_loss(output, target, peak_scale, heatmap_weighting)
            else:
                loss = classification_loss(output, target)
            optimizer.zero_grad(set_to_none=True)
            if schedule == "poly":
                for group in optimizer.param_groups:
                    group["lr"] = lr * (1 - (step - 1) / steps) ** 0.9
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
    recipe = {"task": task, "phantom": name if name.isidentifier() or name.startswith("dataset ") else "custom",
              "phantom_size": list(phantom_size) if phantom_size is not None else None,
              "train_seeds": train_seeds, "val_seeds": val_seeds, "steps": steps, "batch_size": batch_size,
              "lr": lr, "schedule": schedule, "weight_decay": weight_decay, "seed": seed, "optimizer": "Adam",
              "loss": {"segmentation": "cross-entropy + foreground soft Dice",
                       "landmarks": "heatmap MSE, every landmark's place weighted as much as the background"
                       if heatmap_weighting == "every-landmark" else
                       "heatmap MSE, peaks weighted as much as the background",
                       "classification": "BCE with logits / cross-entropy"}[task],
              "augmentation": asdict(augmentation), "validate_every": validate_every,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version()}
    if task == "landmarks":
        recipe.update(sigma_voxels=float(sigma), peak_scale=peak_scale, heatmap_weighting=heatmap_weighting)
    # the processor time too: the wall time of a run that shared its cores says little about the recipe
    recipe["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    return TrainingRun(model.eval(), losses, validations, best, time.perf_counter() - started, recipe)


def _open_relu_head(model, bias=2.0):
    """The official segmentation network ends in BN + ReLU (``conv8``), so from a zero-bias start half of every
    output map is cut to 0 and gets no gradient, and a 7-class head learns several times slower. Starting the head's
    BN biases at +2 keeps it in ReLU's linear range at first; it learns where to cut. Same architecture and keys."""
    head = getattr(model, "conv8", None)
    if head is None:
        return
    with torch.no_grad():
        for layer in head.modules():
            if isinstance(layer, torch.nn.BatchNorm3d):
                layer.bias.fill_(bias)


def _phantom_name(task):
    return {"segmentation": "abdomen_ct", "landmarks": "fetal_brain", "classification": "brain_atrophy"}[task]


def _progress_bar(steps, enabled):
    from tqdm import tqdm

    return tqdm(total=steps, desc="training", unit="step", disable=not enabled, leave=False)


def train(meta, out_folder, train_seeds, val_seeds, steps, batch_size=2, lr=1e-3, seed=0, progress=True, log=print,
          *, overwrite=False, **options) -> ModelPackage:
    """Train (see :func:`fit` for ``options``) and write the best state as a model package in ``out_folder``, with
    the recipe, validation metrics and wall time in ``card`` and ``provenance.training``."""
    refuse_existing(out_folder, overwrite)
    run = fit(meta, train_seeds, val_seeds, steps, batch_size, lr, seed, progress, log, **options)
    return write_package(out_folder, describe_run(meta, run), run.model, overwrite=overwrite)


def refuse_existing(out_folder, overwrite):
    """Before a long training run, not after it: a package folder that exists is only replaced on request."""
    if Path(out_folder).exists() and not overwrite:
        raise TrainingDataError(f"{out_folder} already exists; choose another folder, or overwrite it "
                                "(--overwrite).")


def describe_run(meta, run: TrainingRun) -> dict:
    """``meta`` with the training record added (model card text and ``provenance``)."""
    meta = copy.deepcopy(meta)
    metric = HEADLINE[run.recipe["task"]][0]
    provenance = dict(meta.get("provenance", {}))
    provenance.setdefault("source", "nnmamba.demo.training on synthetic phantoms (nnmamba.demo.phantoms)")
    provenance["created"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    provenance["training"] = dict(run.recipe, best=run.best, validations=run.validations,
                                  final_loss=run.losses[-1], wall_seconds=round(run.seconds, 1))
    recipe = run.recipe
    card = [
        f"Trained on the {recipe['phantom']}." if recipe["phantom"].startswith("dataset ") else
        f"Trained on synthetic {recipe['phantom']} phantoms only: a demonstration model, not for clinical use.",
        f"Recipe: {recipe['steps']} steps of Adam (lr {recipe['lr']}, batch {recipe['batch_size']}), seed "
        f"{recipe['seed']}, loss {recipe['loss']}; {len(recipe['train_seeds'])} training and "
        f"{len(recipe['val_seeds'])} validation phantoms (disjoint seeds).",
        f"Validation ({metric}, best at step {run.best['step']}): {run.best[metric]:.4f}.",
        f"Wall time {run.seconds:.0f} s (processor time {recipe['cpu_seconds']:.0f} s) on {recipe['threads']} CPU "
        f"thread(s), torch {recipe['torch']}. "
        "Retraining with the same seed and thread count reproduces the weights bit for bit.",
    ]
    meta["card"] = (meta["card"].rstrip() + "\n\n" if meta.get("card") else "") + "\n".join(card)
    meta["provenance"] = provenance
    return meta


# ------------------------------------------------------------------------------------------------ validation

def validate(package, model, phantoms) -> float:
    """The task's headline metric over validation phantoms, through the inference code path on their own grids."""
    predictor = NetworkPredictor(model, device="cpu", activation=package.inference["activation"], mirroring=False)
    return evaluate(package, phantoms, predictor)[HEADLINE[package.task][0]]
