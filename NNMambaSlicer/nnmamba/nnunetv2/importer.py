"""nnU-Net v2 result folders -> model packages (``nnmamba models import RESULTS/Dataset001_X/...``).

A v2 result folder is ``<Trainer>__<Plans>__<configuration>/`` with ``plans.json``, ``dataset.json`` and
``fold_k/checkpoint_final.pth`` (or ``checkpoint_best.pth``). The checkpoint is opened with
``torch.load(weights_only=True)`` and the allow-list of :mod:`nnmamba.checkpoints` (``trust`` lifts it); it must hold
an nnMamba network (a checkpoint of an ``nnMambaTrainer``), and its own copy of the plans must agree with
``plans.json``. Every check runs before anything is written.

The package reproduces nnU-Net v2's inference (``input.nnunet_v2``, run by :mod:`.preprocessing`): the plans'
transpose, crop to nonzero, per-channel CT / z-score normalisation, resampling with the plans' kwargs (cubic, separate
z for anisotropic spacing; logits back linear), the patch size and Gaussian sliding window with nnU-Net's steps,
logits blended, softmax or per-region sigmoid (BraTS-style ``regions_class_order``) after resampling back, and the
labels of ``dataset.json`` with their names. Test-time mirroring is off by default (``--mirroring`` turns it on).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from ..modelpkg import sha256_file, user_models_dir, write_package
from ..presets import ModelImportError, get_preset
from ..presets.base import distinct_colors
from . import TRAINERS

__all__ = ["import_nnunet_v2_folder", "is_v2_result_folder", "summarize_v2_plans"]

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
_FOLD = re.compile(r"^fold_(\d+|all)$")
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _is_trainer_dir(folder):
    return (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()


def is_v2_result_folder(folder):
    """True for a v2 trainer folder, the dataset folder above it, or a fold folder inside it."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return False
    if _is_trainer_dir(folder) or (_FOLD.match(folder.name) and _is_trainer_dir(folder.parent)):
        return True
    return any(child.is_dir() and _is_trainer_dir(child) for child in folder.iterdir())


def _locate(folder, fold):
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelImportError(f"nnU-Net result folder not found: {folder}")
    if _FOLD.match(folder.name) and _is_trainer_dir(folder.parent):
        if fold is not None and _fold_name(fold) != folder.name:
            raise ModelImportError(f"{folder} is {folder.name}, but fold {fold} was asked for.")
        fold, folder = folder.name, folder.parent
    if not _is_trainer_dir(folder):
        candidates = sorted(c for c in folder.iterdir() if c.is_dir() and _is_trainer_dir(c))
        if len(candidates) != 1:
            found = f"; it holds several: {', '.join(c.name for c in candidates)}; pass one" if candidates else ""
            raise ModelImportError(f"{folder} is not an nnU-Net v2 result folder (expected "
                                   f"<Trainer>__<Plans>__<configuration>/ with plans.json, dataset.json and "
                                   f"fold_0..fold_4){found}.")
        folder = candidates[0]
    folds = sorted((c.name for c in folder.iterdir() if c.is_dir() and _FOLD.match(c.name)
                    and any((c / name).is_file() for name in CHECKPOINTS)),
                   key=lambda n: (n == "fold_all", len(n), n))
    if not folds:
        raise ModelImportError(f"{folder} has no fold folder with a checkpoint ({' or '.join(CHECKPOINTS)} in "
                               "fold_0..fold_4 or fold_all): the training has not finished or the folds were not "
                               "copied.")
    notes = []
    if fold is None:
        # nnUNetPredictor's default: every numbered fold there is (fold_all only when it is the only one)
        chosen = [name for name in folds if name != "fold_all"] or ["fold_all"]
        missing = sorted(set(range(5)) - {int(name[5:]) for name in chosen if name != "fold_all"})
        if chosen != ["fold_all"] and missing:
            notes.append(f"Folds {', '.join(map(str, missing))} have no checkpoint here; the ensemble is of "
                         f"{', '.join(chosen)}.")
    else:
        chosen = [_fold_name(fold)]
        if chosen[0] not in folds:
            raise ModelImportError(f"{folder} has no {chosen[0]} with a checkpoint (available: {', '.join(folds)}).")
    return folder, [folder / name for name in chosen], notes


def _fold_name(fold):
    text = str(fold)
    if text in ("all", "fold_all"):
        return "fold_all"
    if text.startswith("fold_"):
        text = text[5:]
    try:
        return f"fold_{int(text)}"
    except ValueError:
        raise ModelImportError(f"fold must be 'all' or a number, not {fold!r}.") from None


def _read_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelImportError(f"{path}: not readable JSON ({error}).") from None


def _configuration(plans, name, source):
    configurations = plans.get("configurations") if isinstance(plans, dict) else None
    if not isinstance(configurations, dict):
        raise ModelImportError(f"{source}: not nnU-Net v2 plans (no 'configurations').")
    if name not in configurations:
        raise ModelImportError(f"{source} has no configuration {name!r} (it has {', '.join(configurations)}).")
    chosen, seen = dict(configurations[name]), {name}
    while "inherits_from" in chosen:
        parent = chosen.pop("inherits_from")
        if parent in seen or parent not in configurations:
            raise ModelImportError(f"{source}: configuration {name!r} inherits from {parent!r}, which is missing "
                                   "or circular.")
        seen.add(parent)
        chosen = dict(configurations[parent], **chosen)
    return chosen


_SCHEMES = {"CTNormalization": "ct", "ZScoreNormalization": "zscore", "NoNormalization": "none"}
_RESAMPLING = "resample_data_or_seg_to_shape"


def _normalizations(plans, configuration, source):
    """One ``model.json`` normalisation per input channel, from the plans' schemes and foreground statistics."""
    schemes = configuration.get("normalization_schemes") or []
    masks = configuration.get("use_mask_for_norm") or [False] * len(schemes)
    properties = plans.get("foreground_intensity_properties_per_channel") or {}
    result = []
    for channel, scheme in enumerate(schemes):
        if scheme not in _SCHEMES:
            raise ModelImportError(f"{source}: channel {channel} uses nnU-Net's {scheme}, which nnmamba does not "
                                   f"reproduce (supported: {', '.join(_SCHEMES)}).")
        if _SCHEMES[scheme] == "ct":
            stats = properties.get(str(channel)) or properties.get(channel) or {}
            try:
                result.append({"scheme": "ct", "clip": [float(stats["percentile_00_5"]),
                                                        float(stats["percentile_99_5"])],
                               "mean": float(stats["mean"]), "std": max(float(stats["std"]), 1e-8)})
            except (KeyError, TypeError, ValueError):
                raise ModelImportError(f"{source}: channel {channel} is CT but the plans hold no foreground "
                                       "intensity statistics (foreground_intensity_properties_per_channel).") from None
        elif _SCHEMES[scheme] == "zscore":
            result.append({"scheme": "zscore", "nonzero_mask": bool(masks[channel])})
        else:
            result.append({"scheme": "none"})
    if not result:
        raise ModelImportError(f"{source}: the configuration lists no normalization_schemes.")
    return result


def _resampling_kwargs(configuration, which, source):
    function = configuration.get(f"resampling_fn_{which}", _RESAMPLING)
    if function != _RESAMPLING:
        raise ModelImportError(f"{source}: resampling_fn_{which} is {function}; nnmamba reproduces nnU-Net's "
                               f"{_RESAMPLING} only.")
    kwargs = configuration.get(f"resampling_fn_{which}_kwargs") or {}
    try:
        return {"order": int(kwargs.get("order", 3 if which == "data" else 1)),
                "order_z": int(kwargs.get("order_z", 0)),
                "force_separate_z": None if kwargs.get("force_separate_z") is None
                else bool(kwargs["force_separate_z"])}
    except (TypeError, ValueError):
        raise ModelImportError(f"{source}: resampling_fn_{which}_kwargs {kwargs} are not nnU-Net's.") from None


def _permutation(value, name, source):
    try:
        axes = [int(a) for a in value]
    except (TypeError, ValueError):
        axes = []
    if sorted(axes) != [0, 1, 2]:
        raise ModelImportError(f"{source}: {name} {value!r} is not a permutation of the three axes.")
    return axes


def summarize_v2_plans(plans, configuration_name, dataset, source="plans.json"):
    """What model.json needs from v2 plans + dataset.json: ``input.nnunet_v2`` (nnU-Net's axis order) and the
    descriptive fields in I J K order (the SimpleITK array is K J I, then transposed by the plans)."""
    forward = _permutation(plans.get("transpose_forward", (0, 1, 2)), "transpose_forward", source)
    backward = _permutation(plans.get("transpose_backward", [forward.index(a) for a in range(3)]),
                            "transpose_backward", source)
    if [forward[a] for a in backward] != [0, 1, 2]:
        raise ModelImportError(f"{source}: transpose_backward {backward} does not undo transpose_forward {forward}.")
    configuration = _configuration(plans, configuration_name, source)
    spacing = [float(v) for v in configuration.get("spacing", [])]
    patch = [int(v) for v in configuration.get("patch_size", [])]
    if len(spacing) != 3 or len(patch) != 3:
        raise ModelImportError(f"{source}: configuration {configuration_name!r} is not 3D (patch size "
                               f"{patch}); nnMamba is 3D only.")
    if any(p % 16 for p in patch):
        raise ModelImportError(f"{source}: patch size {patch} has axes not divisible by 16, which nnMamba "
                               "needs; this result folder was not trained by an nnMamba trainer.")
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    names = [str(channels[key]) for key in sorted(channels, key=int)]
    normalizations = _normalizations(plans, configuration, source)
    spacing_kji = [spacing[backward[a]] for a in range(3)]
    nnunet_v2 = {"transpose_forward": forward, "transpose_backward": backward, "spacing": spacing,
                 "patch_size": patch, "normalization": normalizations,
                 "resampling_data": _resampling_kwargs(configuration, "data", source),
                 "resampling_probabilities": _resampling_kwargs(configuration, "probabilities", source)}
    # patch_size[::-1] is what the sliding window uses: the network array's (transposed) axes
    return {"spacing": spacing_kji[::-1], "patch_size": patch[::-1], "channel_names": names or None,
            "normalization": normalizations[0], "nnunet_v2": nnunet_v2}


def dataset_outputs(dataset, source="dataset.json"):
    """``(labels [(value, name)], regions [(name, [values])], class_order or None, outputs)`` from dataset.json.
    Region-based training (labels given as lists, ``regions_class_order``): one output per region, the label map
    value ``regions_class_order[i]`` named after region i, and each region also as the union of the values it
    covers. ``outputs`` is the number of network outputs the labels imply."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelImportError(f"{source} has no 'labels'.")
    entries = [(name, value) for name, value in labels.items() if name != "ignore"]
    if any(isinstance(value, (list, tuple)) for _, value in entries):
        regions = [(str(name), sorted({int(v) for v in (value if isinstance(value, (list, tuple)) else [value])}))
                   for name, value in entries]
        regions = [(name, values) for name, values in regions if values != [0]]
        order = dataset.get("regions_class_order")
        if not isinstance(order, list) or len(order) != len(regions):
            raise ModelImportError(f"{source} describes region-based training but its regions_class_order "
                                   f"{order!r} does not give one label value for each of the {len(regions)} "
                                   "regions.")
        order = [int(v) for v in order]
        if len(set(order)) != len(order) or min(order) < 1:
            raise ModelImportError(f"{source}: regions_class_order {order} must be distinct values >= 1.")
        pairs = [(value, name) for value, (name, _) in zip(order, regions)]
        unions = [(f"{name} (region)", [v for v in order if v in values]) for name, values in regions]
        unions = [(name, values) for name, values in unions if len(values) > 1]
        return pairs, unions, order, len(regions)
    try:
        pairs = sorted((int(value), str(name)) for name, value in entries)
    except (TypeError, ValueError):
        raise ModelImportError(f"{source}: label values must be integers or lists of integers.") from None
    if not pairs or pairs[0][0] != 0:
        raise ModelImportError(f"{source}: labels must include background = 0.")
    values = [value for value, _ in pairs]
    if values != list(range(len(values))):
        raise ModelImportError(f"{source}: label values must be consecutive from 0, got {values}.")
    return pairs[1:], [], None, len(pairs)


def _load(path, trust):
    from ..checkpoints import CheckpointError, _torch_load

    obj = _torch_load(path, trust)
    if not isinstance(obj, dict) or "network_weights" not in obj:
        raise CheckpointError(f"{path}: not an nnU-Net v2 checkpoint (no 'network_weights').")
    return obj


def _check_trainer(checkpoint, folder_trainer, path):
    trainer = checkpoint.get("trainer_name")
    if trainer and folder_trainer and trainer != folder_trainer:
        raise ModelImportError(f"{path} was saved by trainer {trainer}, but its folder is named for "
                               f"{folder_trainer}: the checkpoint was copied into the wrong result folder.")
    return trainer or folder_trainer


def _check_plans_match(checkpoint, plans, configuration_name, path):
    """The plans the trainer held (stored in the checkpoint) must be the plans.json beside it."""
    init = checkpoint.get("init_args") or {}
    stored = init.get("plans") if isinstance(init, dict) else None
    if not isinstance(stored, dict):
        return ["The checkpoint holds no copy of its plans; plans.json was taken as it is."]
    if init.get("configuration") not in (None, configuration_name):
        raise ModelImportError(f"{path} was trained with configuration {init.get('configuration')!r}, but its "
                               f"folder is for {configuration_name!r}.")
    mine = _configuration(plans, configuration_name, "plans.json")
    theirs = _configuration(stored, configuration_name, f"{path.name} (its plans)")
    differences = []
    for key in ("spacing", "normalization_schemes", "use_mask_for_norm"):
        if mine.get(key) != theirs.get(key):
            differences.append(f"{key} {mine.get(key)} in plans.json, {theirs.get(key)} in the checkpoint")
    if plans.get("foreground_intensity_properties_per_channel") != \
            stored.get("foreground_intensity_properties_per_channel"):
        differences.append("different foreground intensity statistics")
    if plans.get("transpose_forward") != stored.get("transpose_forward"):
        differences.append("different transpose_forward")
    if differences:
        raise ModelImportError(f"plans.json does not belong to {path} ({'; '.join(differences)}): the result "
                               "folder mixes two trainings. Copy the plans.json that was written with this fold.")
    return []


def _read_fold(fold_dir, checkpoint, trust, folder_trainer, plans, configuration_name, notes):
    """``(path, sha256, trainer, state_dict, architecture, mirroring axes)`` of one fold's checkpoint, checked."""
    from ..checkpoints import CheckpointError, detect_architecture, extract_state_dict

    if checkpoint:
        name = checkpoint if checkpoint.endswith(".pth") else checkpoint + ".pth"
        path = fold_dir / name
        if not path.is_file():
            available = sorted(p.name for p in fold_dir.glob("*.pth")) or ["none"]
            raise ModelImportError(f"{fold_dir} has no {name} (checkpoints there: {', '.join(available)}).")
    else:
        path = next(fold_dir / n for n in CHECKPOINTS if (fold_dir / n).is_file())
        if path.name != CHECKPOINTS[0]:
            notes.append(f"{fold_dir.name} has no {CHECKPOINTS[0]} (training unfinished?); used {path.name}.")
    sha = sha256_file(path)
    loaded = _load(path, trust)
    trainer = _check_trainer(loaded, folder_trainer, path)
    try:
        state_dict = extract_state_dict(dict(loaded["network_weights"]), str(path))
        architecture = detect_architecture(state_dict, str(path))
    except CheckpointError as error:
        raise ModelImportError(f"{path} was trained by {trainer}, whose network is not nnMamba ({error}); nnmamba "
                               f"runs networks of the nnMamba trainers ({', '.join(TRAINERS)}) only.") from None
    if architecture.network != "NNMambaSeg" or architecture.variant != "nnunet":
        raise ModelImportError(f"{path} holds an {architecture.network} ({architecture.variant}), not the nnU-Net "
                               "variant of NNMambaSeg an nnMamba trainer builds.")
    notes += [n for n in _check_plans_match(loaded, plans, configuration_name, path) if n not in notes]
    return path, sha, trainer, state_dict, architecture, loaded.get("inference_allowed_mirroring_axes")


def import_nnunet_v2_folder(folder, out_dir=None, fold=None, checkpoint=None, trust=False, model_id=None,
                            overwrite=False, **overrides):
    """Import an nnU-Net v2 result folder trained with an nnMamba trainer: one fold (``fold``), or by default the
    ensemble of its folds as nnUNetPredictor runs it. Returns the package; nothing is written unless every fold
    passes every check."""
    from .. import __version__
    from ..checkpoints import LoadedCheckpoint

    trainer_dir, fold_dirs, notes = _locate(folder, fold)
    folder_trainer, plans_identifier, configuration_name = (trainer_dir.name.split("__") + ["", ""])[:3]
    if not configuration_name:
        raise ModelImportError(f"{trainer_dir.name} is not named <Trainer>__<Plans>__<configuration> as nnU-Net v2 "
                               "names its result folders; the configuration cannot be told.")
    plans = _read_json(trainer_dir / "plans.json")
    dataset = _read_json(trainer_dir / "dataset.json")
    summary = summarize_v2_plans(plans, configuration_name, dataset)
    labels, unions, class_order, num_outputs = dataset_outputs(dataset)
    folds = [_read_fold(fold_dir, checkpoint, trust, folder_trainer, plans, configuration_name, notes)
             for fold_dir in fold_dirs]
    path, _, trainer, _, architecture, axes = folds[0]
    for other in folds[1:]:
        if other[4] != architecture:
            raise ModelImportError(f"{other[0]} holds a {tuple(other[4])} but {path} a {tuple(architecture)}: the "
                                   "folds are of different networks and cannot be ensembled.")
    if trainer not in TRAINERS:
        notes.append(f"Trainer {trainer} is not one of nnmamba's ({', '.join(TRAINERS)}); its weights are an "
                     "NNMambaSeg and were imported as such.")
    if architecture.num_classes != num_outputs:
        what = (f"{num_outputs} regions" if class_order else
                f"{len(labels)} foreground labels ({num_outputs} outputs with background)")
        raise ModelImportError(f"dataset.json lists {what} but the network in {path} has "
                               f"{architecture.num_classes} outputs: the files belong to different trainings.")
    names = summary["channel_names"] or []
    if names and len(names) != architecture.in_channels:
        raise ModelImportError(f"dataset.json lists {len(names)} input channels but the network in {path} takes "
                               f"{architecture.in_channels}: the files belong to different trainings.")
    meta, preset_notes = get_preset("generic-segmentation").build_meta(architecture, summary, overrides)
    notes += [n for n in preset_notes if not n.startswith("No preset")]
    colors = distinct_colors(len(labels) + len(unions))
    meta["outputs"] = {"labels": [{"value": value, "name": name, "color": colors[i]}
                                  for i, (value, name) in enumerate(labels)]}
    if unions:
        meta["outputs"]["regions"] = [{"name": name, "labels": values, "color": colors[len(labels) + i]}
                                      for i, (name, values) in enumerate(unions)]
    meta["input"]["nnunet_v2"] = summary["nnunet_v2"]
    if class_order:
        meta["input"]["nnunet_v2"]["regions"] = {"class_order": class_order}
    # logits are blended (tiles, mirrorings, folds) and the softmax/sigmoid comes after resampling back, as nnU-Net
    meta["inference"] = {"overlap": 0.5, "mirroring": False, "activation": "none"}
    fold_names = [fold_dir.name for fold_dir in fold_dirs]
    if len(folds) > 1:
        meta["network"]["ensemble"] = len(folds)
    dataset_name = trainer_dir.parent.name
    which = fold_names[0] if len(folds) == 1 else f"ensemble of {len(folds)} folds"
    model_id = model_id or _as_id(f"{dataset_name}-{configuration_name}-"
                                  f"{fold_names[0] if len(folds) == 1 else 'ensemble'}")
    if not _ID_PATTERN.match(model_id):
        raise ModelImportError(f"Model id {model_id!r} is not valid: use lower-case letters, digits, '.', '_' and "
                               "'-', starting with a letter or digit.")
    meta["id"] = model_id
    meta["name"] = overrides.get("name") or f"{dataset_name} ({configuration_name}, {which})"
    meta["description"] = overrides.get("description") or (
        f"nnMamba trained with nnU-Net v2 ({trainer}, {plans_identifier}, {configuration_name}) on {dataset_name}, "
        f"{which}.")
    if axes is not None and sorted(int(a) for a in axes) != [0, 1, 2]:
        notes.append(f"nnU-Net mirrors this model along axes {list(axes)} only; nnmamba's --mirroring flips all "
                     "three, so leave it off to compare with nnU-Net.")
    notes.append("Test-time mirroring is off (nnUNetPredictor's default is on): nnmamba predict --mirroring or "
                 "inference.mirroring true matches nnU-Net's default, 8x slower.")
    if class_order:
        notes.append("Region-based training: label value regions_class_order[i] marks region i where no later "
                     "region is present (nnU-Net's label map); each region with several values is also a segment.")
    provenance = meta["provenance"]
    provenance.update(source="nnU-Net v2 result folder",
                      imported_from=", ".join(f"{fold_dir.name}/{f[0].name}" for fold_dir, f in zip(fold_dirs, folds)),
                      imported_sha256=folds[0][1],
                      trainer=trainer, fold=fold_names[0] if len(folds) == 1 else fold_names, checkpoint=path.name,
                      plans_identifier=plans_identifier, configuration=configuration_name,
                      nnunet_dataset=dataset_name, plans="plans.json",
                      plans_sha256=sha256_file(trainer_dir / "plans.json"),
                      created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
                      importer=f"nnmamba {__version__}", notes=notes)
    if len(folds) > 1:
        provenance["imported_sha256_per_fold"] = [f[1] for f in folds]
    checkpoints = [LoadedCheckpoint(f[3], architecture, None, trainer, str(f[0])) for f in folds]
    if len(checkpoints) == 1:
        weights = checkpoints[0]
    else:
        from .ensemble import FoldEnsemble

        weights = FoldEnsemble([c.build_model() for c in checkpoints])
    out = Path(out_dir).expanduser() if out_dir is not None else user_models_dir()
    return write_package(out / model_id, meta, weights, overwrite=overwrite)


def _as_id(text):
    slug = re.sub(r"[^a-z0-9._-]+", "-", str(text).lower()).strip("-._")
    return slug or "model"
