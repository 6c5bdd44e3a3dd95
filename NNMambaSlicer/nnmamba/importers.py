"""Turn official nnMamba checkpoints and nnU-Net v1 result folders into model packages, once.

The pickle is opened by ``checkpoints.load_checkpoint`` (plain data only unless ``trust``), the network is detected
from the weights and checked against the preset, nnU-Net plans supply target spacing, patch size and normalisation,
and ``modelpkg.write_package`` writes the result atomically. Provenance records the source file, its SHA-256, and
every assumption the importer made (also returned to the user as notes).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from .modelpkg import catalog_entry, sha256_file, user_models_dir, write_package
from .presets import ModelImportError, check_fits, get_preset

__all__ = ["ModelImportError", "import_checkpoint", "import_nnunet_v1_folder", "import_source",
           "summarize_nnunet_plans"]

_FOLD_DIR = re.compile(r"^(fold_\d+|all)$")
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


# ------------------------------------------------------------------------------------------------ nnU-Net plans

def summarize_nnunet_plans(plans, source="plans", stage=None):
    """What model.json needs from nnU-Net v1 plans, in I J K order (plans store z y x).

    ``stage``: index into ``plans_per_stage``; default the last one, which is 3d_fullres.
    """
    if not isinstance(plans, dict) or "plans_per_stage" not in plans:
        raise ModelImportError(f"{source}: not nnU-Net v1 plans (no 'plans_per_stage').")
    transpose = [int(a) for a in plans.get("transpose_forward", (0, 1, 2))]
    if transpose != [0, 1, 2]:
        # The network was trained on axis-permuted arrays; model.json has no field for that permutation yet, and
        # feeding unpermuted arrays would silently give wrong results, so such models are refused.
        raise ModelImportError(f"{source}: the plans transpose the image axes before the network (transpose_forward "
                               f"{transpose}); importing such models is not supported.")
    stages = plans["plans_per_stage"]
    keys = sorted(stages) if isinstance(stages, dict) else list(range(len(stages)))
    index = keys[-1] if stage is None else stage
    if index not in keys:
        raise ModelImportError(f"{source}: the plans have no stage {index} (stages {keys}).")
    chosen = stages[index]
    try:
        spacing = [float(v) for v in chosen["current_spacing"]][::-1]
        patch = [int(v) for v in chosen["patch_size"]][::-1]
    except (KeyError, TypeError, ValueError) as error:
        raise ModelImportError(f"{source}: stage {index} of the plans lacks a readable {error}.") from None
    if len(spacing) != 3 or len(patch) != 3:
        raise ModelImportError(f"{source}: stage {index} is not 3D (patch size {patch[::-1]}); nnMamba is 3D only.")
    modalities = plans.get("modalities") or plans.get("dataset_properties", {}).get("modalities") or {}
    names = [str(modalities[key]) for key in sorted(modalities, key=int)]
    return {
        "spacing": spacing,
        "patch_size": patch,
        "channel_names": names or None,
        "normalization": _plans_normalization(plans, source),
        "classes": [int(c) for c in plans.get("all_classes", [])],
        "stage": index,
    }


def _by_channel(mapping, channel, default=None):
    for key in (channel, int(channel), str(channel)):
        if key in mapping:
            return mapping[key]
    return default


def _plans_normalization(plans, source):
    schemes = plans.get("normalization_schemes") or {}
    use_mask = plans.get("use_mask_for_norm") or {}
    properties = (plans.get("dataset_properties") or {}).get("intensityproperties") or {}
    per_channel = []
    for channel in sorted(schemes, key=int):
        scheme = schemes[channel]
        if scheme == "CT":
            stats = _by_channel(properties, channel)
            try:
                per_channel.append({"scheme": "ct", "clip": [float(stats["percentile_00_5"]),
                                                             float(stats["percentile_99_5"])],
                                    "mean": float(stats["mean"]), "std": float(stats["sd"])})
            except (KeyError, TypeError):
                raise ModelImportError(f"{source}: channel {channel} is CT but the plans hold no intensity "
                                       "statistics (dataset_properties.intensityproperties); give --ct-constants "
                                       "LOW HIGH MEAN STD.") from None
        elif scheme == "noNorm":
            per_channel.append({"scheme": "none"})
        elif scheme == "CT2":
            raise ModelImportError(f"{source}: channel {channel} uses nnU-Net's 'CT2' normalisation (per-image "
                                   "statistics after clipping), which model.json cannot express; not supported.")
        else:   # 'nonCT': per-image z-score, inside the nonzero mask when use_mask_for_norm
            per_channel.append({"scheme": "zscore", "nonzero_mask": bool(_by_channel(use_mask, channel, False))})
    if not per_channel:
        return None
    if any(n != per_channel[0] for n in per_channel):
        raise ModelImportError(f"{source}: the channels are normalised differently ({per_channel}); model.json "
                               "has one normalisation for all input channels, so this model is not supported.")
    return per_channel[0]


# ---------------------------------------------------------------------------------------------------- imports

def import_checkpoint(path, preset, out_dir=None, trust=False, plans=None, model_id=None, catalog_id=None,
                      catalog=None, overwrite=False, **overrides):
    """Import one checkpoint file (nnU-Net ``.model``, plain ``.pth`` state_dict, ``.safetensors``).

    ``preset``: a name from :data:`nnmamba.presets.PRESETS` (may be None with ``catalog_id``, whose entry names it).
    ``plans``: an nnU-Net plans ``.pkl`` (or a dict); without it the ``<checkpoint>.pkl`` sidecar is used when
    present. The package goes to ``out_dir/<id>`` (default: the user models folder). ``overrides``: name,
    version, description, spacing, patch_size, ct_constants, channel_names. Returns the opened package; what the
    importer assumed is in ``package.provenance['notes']``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelImportError(f"Checkpoint file not found: {path}")
    stage = _sidecar_stage(path, trust)
    return _import(path, preset, out_dir, trust, plans, model_id, catalog_id, catalog, overwrite, overrides,
                   fallback_id=path.name.split(".")[0], stage=stage, extra={})


def import_nnunet_v1_folder(folder, out_dir=None, preset=None, fold=None, checkpoint="model_final_checkpoint",
                            trust=False, plans=None, model_id=None, catalog_id=None, catalog=None, overwrite=False,
                            **overrides):
    """Import one fold of an nnU-Net v1 result folder (``<Trainer>__nnUNetPlansv2.1/`` with ``plans.pkl`` and
    ``fold_k/`` or ``all/``; the task folder above it or a fold folder inside it are accepted too).

    ``fold``: 'all', an int, or None to pick 'all' when present, else the lowest fold. One fold only: nnU-Net's
    5-fold ensemble is 5x slower for a small gain. ``preset`` None gives generic label names. Other arguments as
    :func:`import_checkpoint`.
    """
    trainer_dir, fold_dir, notes = _locate_fold(Path(folder).expanduser(), fold)
    checkpoint = checkpoint or "model_final_checkpoint"
    name = checkpoint if checkpoint.endswith(".model") else checkpoint + ".model"
    model_file = fold_dir / name
    if not model_file.is_file():
        available = sorted(p.name for p in fold_dir.glob("*.model")) or ["none"]
        raise ModelImportError(f"{fold_dir} has no {name} (checkpoints there: {', '.join(available)}); pass "
                               "checkpoint='model_best' (CLI: --checkpoint model_best) or another fold.")
    plans_file = trainer_dir / "plans.pkl"
    trainer, _, plans_identifier = trainer_dir.name.partition("__")
    configuration = trainer_dir.parent.parent.name
    task = trainer_dir.parent.name
    extra = {"trainer": trainer, "fold": fold_dir.name, "checkpoint": name}
    if plans_identifier:
        extra["plans_identifier"] = plans_identifier
    if configuration in ("2d", "3d_lowres", "3d_fullres", "3d_cascade_fullres"):
        extra["configuration"] = configuration
    if task.startswith("Task"):
        extra["nnunet_task"] = task
    stage = _sidecar_stage(model_file, trust)
    if stage is None and configuration == "3d_lowres":
        stage = 0
    fallback = task if task.startswith("Task") else trainer_dir.name
    if plans is None and plans_file.is_file():
        plans = plans_file
    return _import(model_file, preset or "generic-segmentation", out_dir, trust, plans, model_id, catalog_id,
                   catalog, overwrite, overrides, fallback_id=fallback, stage=stage, extra=extra, notes=notes)


def import_source(source, preset=None, **kwargs):
    """A folder is an nnU-Net v2 result folder (plans.json) or a v1 one, a file a checkpoint (the CLI's ``models
    import``)."""
    source = Path(source).expanduser()
    if source.is_dir():
        from .nnunetv2.importer import import_nnunet_v2_folder, is_v2_result_folder

        if is_v2_result_folder(source):
            for key in ("plans", "catalog_id", "spacing", "patch_size", "ct_constants"):
                if kwargs.get(key) is not None:
                    raise ModelImportError(f"'{key}' does not apply to nnU-Net v2 result folders (their plans.json "
                                           "and dataset.json are used).")
            if preset not in (None, "generic-segmentation"):
                raise ModelImportError("nnU-Net v2 result folders are imported with the labels of their "
                                       "dataset.json; leave the preset out.")
            kwargs.pop("plans", None)
            kwargs.pop("catalog_id", None)
            kwargs.pop("catalog", None)
            return import_nnunet_v2_folder(source, **kwargs)
        return import_nnunet_v1_folder(source, preset=preset, **kwargs)
    for key in ("fold", "checkpoint"):
        if kwargs.pop(key, None) is not None:
            raise ModelImportError(f"'{key}' applies to nnU-Net result folders only; {source} is a file.")
    if preset is None and kwargs.get("catalog_id") is None:
        raise ModelImportError(f"Say what {source.name} is: give a preset (--preset; known: "
                               f"{', '.join(_preset_names())}) or a catalog id (--catalog).")
    return import_checkpoint(source, preset, **kwargs)


def _preset_names():
    from .presets import PRESETS

    return list(PRESETS)


def _import(path, preset, out_dir, trust, plans, model_id, catalog_id, catalog, overwrite, overrides, fallback_id,
            stage, extra, notes=None):
    from . import __version__
    from .checkpoints import load_checkpoint

    notes = list(notes or [])
    entry = catalog_entry(catalog_id, catalog) if catalog_id else None
    if entry is not None:
        if preset is not None and preset != "generic-segmentation" and preset != entry["preset"]:
            raise ModelImportError(f"Catalog entry {entry['id']!r} is imported with preset {entry['preset']!r}, "
                                   f"not {preset!r}; leave the preset out.")
        preset = entry["preset"]
    preset = get_preset(preset)
    if not model_id:
        generic = preset.name == "generic-segmentation"
        model_id = entry["id"] if entry else (_as_id(fallback_id) if generic else preset.default_id)
    if not _ID_PATTERN.match(model_id):
        raise ModelImportError(f"Model id {model_id!r} is not valid: use lower-case letters, digits, '.', '_' and "
                               "'-', starting with a letter or digit.")
    # Hash (and check against the catalog) before the checkpoint itself is unpickled.
    source_sha = sha256_file(path)
    if entry is not None:
        _check_catalog_hash(entry, path, source_sha, notes)
    plans_dict = plans if isinstance(plans, dict) else None
    loaded = load_checkpoint(path, trust=trust, plans_path=None if plans_dict is not None else plans)
    check_fits(preset, loaded.architecture, path.name)
    plans_dict = plans_dict if plans_dict is not None else loaded.plans
    summary = None
    if preset.uses_plans and plans_dict is not None:
        summary = summarize_nnunet_plans(plans_dict, _plans_label(plans, path), stage)
        _check_plans_fit(summary, loaded.architecture, _plans_label(plans, path))
        extra = dict(extra, nnunet_stage=summary["stage"])
    elif plans_dict is not None and not preset.uses_plans:
        notes.append(f"Preset {preset.name!r} does not use nnU-Net plans; the plans found were ignored.")
    meta, preset_notes = preset.build_meta(loaded.architecture, summary, overrides)
    notes += preset_notes
    meta["id"] = model_id
    if entry is not None:
        meta["version"] = overrides.get("version") or entry["version"]
        meta["name"] = overrides.get("name") or entry.get("name") or meta["name"]
    provenance = meta["provenance"]
    if entry is not None:
        provenance.update(source=entry["obtain"].get("url") or entry["obtain"]["instructions"],
                          license=entry["license"], citation=entry["citation"], catalog_id=entry["id"])
    provenance.update(imported_from=path.name, imported_sha256=source_sha,
                      created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
                      importer=f"nnmamba {__version__}", **extra)
    if plans is not None and not isinstance(plans, dict):
        provenance["plans"] = Path(plans).name
        provenance["plans_sha256"] = sha256_file(plans)
    elif plans is None and loaded.plans is not None:
        provenance["plans"] = f"{path.name}.pkl"
    if loaded.trainer:
        provenance.setdefault("trainer", loaded.trainer)
    if notes:
        provenance["notes"] = notes
    folder = Path(out_dir).expanduser() if out_dir is not None else user_models_dir()
    return write_package(folder / model_id, meta, loaded, overwrite=overwrite)


def _plans_label(plans, path):
    if isinstance(plans, dict):
        return "plans"
    return Path(plans).name if plans is not None else f"{path.name}.pkl"


def _check_plans_fit(summary, architecture, source):
    names = summary["channel_names"]
    if names and len(names) != architecture.in_channels:
        raise ModelImportError(f"{source}: the plans list {len(names)} input modalities but the network takes "
                               f"{architecture.in_channels} inputs (plans of another model, or a cascade "
                               "second-stage model, which is not supported).")
    classes = summary["classes"]
    if classes and len(classes) + 1 != architecture.num_classes:
        raise ModelImportError(f"{source}: the plans list {len(classes)} foreground classes but the network has "
                               f"{architecture.num_classes} outputs (expected classes + background); these plans "
                               "belong to another model.")


def _sidecar_stage(path, trust):
    """The plans stage an nnU-Net trainer was built with (``init[5]`` of ``<file>.pkl``), when readable."""
    from .checkpoints import CheckpointError, load_plans

    sidecar = path.with_name(path.name + ".pkl")
    if not sidecar.is_file():
        return None
    try:
        info = load_plans(sidecar, trust)
    except CheckpointError:
        return None   # load_checkpoint reads it again and reports the problem
    init = info.get("init") if isinstance(info, dict) else None
    if isinstance(init, (tuple, list)) and len(init) > 5 and isinstance(init[5], int):
        return init[5]
    return None


def _check_catalog_hash(entry, path, sha, notes):
    hashes = {f["name"]: f["sha256"] for f in entry["files"]}
    known = {name: value for name, value in hashes.items() if value}
    expected = hashes.get(path.name)
    if expected == sha or (path.name not in hashes and sha in known.values()):
        notes.append(f"sha256 of {path.name} matches the catalog entry {entry['id']}.")
        return
    if expected or (path.name not in hashes and known):
        what = f"expects {expected[:12]}..." if expected else f"lists {', '.join(known)} only"
        raise ModelImportError(f"{path.name} (sha256 {sha[:12]}...) does not match the catalog entry "
                               f"{entry['id']!r}, which {what}: the file was modified, is incomplete, or is a "
                               f"different file. Download it again ({entry['obtain'].get('url', 'see the catalog')}).")
    notes.append(f"The catalog has no sha256 for {entry['id']}'s files (their list is not published), so "
                 f"{path.name} could not be verified; its sha256 {sha} is recorded in provenance.imported_sha256.")


def _as_id(text):
    slug = re.sub(r"[^a-z0-9._-]+", "-", str(text).lower()).strip("-._")
    return slug or "model"


# ---------------------------------------------------------------------------------------- result folder layout

def _is_trainer_dir(folder):
    if (folder / "plans.pkl").is_file():
        return True
    return any(child.is_dir() and _FOLD_DIR.match(child.name) for child in folder.iterdir())


def _fold_name(fold):
    if str(fold) == "all":
        return "all"
    try:
        return f"fold_{int(fold)}"
    except (TypeError, ValueError):
        raise ModelImportError(f"fold must be 'all' or a number, not {fold!r}.") from None


def _locate_fold(folder, fold):
    """``(trainer_dir, fold_dir, notes)`` for a trainer folder, the task folder above it, or a fold folder."""
    if not folder.is_dir():
        raise ModelImportError(f"nnU-Net result folder not found: {folder}")
    if _FOLD_DIR.match(folder.name) and _is_trainer_dir(folder.parent):
        if fold is not None and _fold_name(fold) != folder.name:
            raise ModelImportError(f"{folder} is {folder.name}, but fold {fold} was asked for.")
        return folder.parent, folder, []
    trainer = folder
    if not _is_trainer_dir(folder):
        candidates = sorted(c for c in folder.iterdir() if c.is_dir() and _is_trainer_dir(c))
        if len(candidates) != 1:
            found = f"; it holds several: {', '.join(c.name for c in candidates)}; pass one" if candidates else ""
            raise ModelImportError(f"{folder} is not an nnU-Net v1 result folder (expected "
                                   f"<Trainer>__nnUNetPlansv2.1/ with plans.pkl and fold_0..fold_4 or all/){found}.")
        trainer = candidates[0]
    folds = sorted((c.name for c in trainer.iterdir() if c.is_dir() and _FOLD_DIR.match(c.name)
                    and any(c.glob("*.model"))), key=lambda n: (n != "all", len(n), n))
    if not folds:
        raise ModelImportError(f"{trainer} has no fold folder with a .model checkpoint (fold_0..fold_4 or all).")
    if fold is None:
        chosen = folds[0]
        notes = [f"Used {chosen} of the available folds ({', '.join(folds)}): one fold, not nnU-Net's ensemble."
                 ] if len(folds) > 1 else []
        return trainer, trainer / chosen, notes
    name = _fold_name(fold)
    if name not in folds:
        raise ModelImportError(f"{trainer} has no {name} with a checkpoint (available: {', '.join(folds)}).")
    return trainer, trainer / name, []
