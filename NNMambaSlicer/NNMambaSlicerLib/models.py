"""The model manager behind the hub's Models section: what is installed, what the catalog offers, importing a
package folder, a package .zip, an official checkpoint or an nnU-Net v1 result folder (also zipped), and verifying
the weights.

Bringing one's own model must need no file editing (a user pain point of other AI extensions): a model package is
validated and copied into the models folder, anything else goes through :mod:`nnmamba.importers` with a preset.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

CHECKPOINT_SUFFIXES = (".model", ".pth", ".pt", ".safetensors", ".ckpt")


class ModelImportFailed(ValueError):
    """An import that did not produce a package; the message says why and what to do."""


class ModelAlreadyInstalled(ModelImportFailed):
    """A model with that id is installed already; importing again with ``overwrite=True`` replaces it."""


def models_folder(models_dir=None, create=True):
    """Where imported models go (``models_dir``, else $NNMAMBA_MODELS_DIR, else ~/.nnmamba/models)."""
    from nnmamba.modelpkg import user_models_dir

    folder = Path(models_dir).expanduser() if models_dir else user_models_dir()
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def list_models(models_dir=None, task=None, include_catalog=True, catalog=None):
    """The Models table: :func:`nnmamba.modelpkg.list_models` with the models folder the user chose."""
    from nnmamba.modelpkg import list_models as package_list

    return package_list(models_dir, task=task, include_catalog=include_catalog, catalog=catalog)


def verify_model(path):
    """Re-check a package (schema, rules, weights' SHA-256); raises ModelPackageError saying what is wrong."""
    from nnmamba.modelpkg import ModelPackage, package_row

    package = ModelPackage.open(path, verify=True)
    row = package_row(package, "user")
    row.verified = True
    return row


def presets():
    """``[(name, title, task)]`` for the preset combo box."""
    from nnmamba.presets import PRESETS

    return [(name, preset.title, preset.task) for name, preset in PRESETS.items()]


def source_kind(path):
    """'package' (folder or .zip with model.json), 'nnunet-folder', 'nnunet-zip' or 'checkpoint'."""
    path = Path(path).expanduser()
    if path.is_dir():
        return "package" if (path / "model.json").is_file() else "nnunet-folder"
    if not path.is_file():
        raise ModelImportFailed(f"{path} does not exist.")
    if path.name == "model.json":
        return "package"
    if path.name.lower().endswith(CHECKPOINT_SUFFIXES):   # before the zip test: torch.save writes zip files
        return "checkpoint"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if "model.json" in names or any(n.count("/") == 1 and n.endswith("/model.json") for n in names):
            return "package"
        return "nnunet-zip"
    raise ModelImportFailed(f"{path.name} is not a model package (.zip or folder with model.json), an nnU-Net v1 "
                            f"result folder, or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}).")


def import_model(source, preset=None, catalog_id=None, models_dir=None, model_id=None, overwrite=False, trust=False):
    """Install ``source`` into the models folder; returns ``(package, notes)``.

    A model package (folder or .zip) is verified and copied as it is. A checkpoint file, an nnU-Net v1 result
    folder, or a .zip of one is imported with ``preset`` (or the catalog entry ``catalog_id``, which names it).
    A pickle that needs more than plain data raises nnmamba.checkpoints.UnsafeCheckpointError unless ``trust``.
    """
    from nnmamba.checkpoints import CheckpointError, UnsafeCheckpointError
    from nnmamba.importers import import_source
    from nnmamba.modelpkg import ModelPackageError

    source = Path(source).expanduser()
    kind = source_kind(source)
    target = models_folder(models_dir)
    try:
        if kind == "package":
            return _install_package(source, target, overwrite), []
        options = {"preset": preset, "catalog_id": catalog_id, "out_dir": target, "model_id": model_id,
                   "overwrite": overwrite, "trust": trust}
        if kind == "checkpoint" and preset is None and catalog_id is None:
            raise ModelImportFailed(f"Choose a preset for {source.name}: a checkpoint carries no labels, classes "
                                    "or input preparation, the preset supplies them.")
        if kind == "nnunet-zip":
            with tempfile.TemporaryDirectory(prefix="nnmamba-import-") as folder:
                package = import_source(_extract_safely(source, Path(folder)), **options)
        else:
            package = import_source(source, **options)
    except UnsafeCheckpointError:
        raise   # the caller may ask the user whether the file is trusted, then retry with trust=True
    except (ModelPackageError, CheckpointError) as error:   # includes the importers' ModelImportError
        if "already exists" in str(error):   # write_package refusing to replace a package
            raise ModelAlreadyInstalled(f"{error} Import again with 'replace' to overwrite it.") from None
        raise ModelImportFailed(str(error)) from None
    return package, list(package.provenance.get("notes", []))


def _install_package(source, target, overwrite):
    from nnmamba.modelpkg import ModelPackage

    package = ModelPackage.open(source, verify=True)
    destination = target / (f"{package.id}.zip" if package.is_zip else package.id)
    for existing in (target / package.id, target / f"{package.id}.zip"):
        if existing.exists() and existing.resolve() == Path(package.root).resolve():
            return package   # already in place
        if existing.exists() and not overwrite:
            raise ModelAlreadyInstalled(f"A model {package.id!r} is already installed at {existing}. Import again "
                                        "with 'replace' to overwrite it, or remove it first.")
    staging = target / f".{destination.name}.partial"
    _remove(staging)
    try:
        if package.is_zip:
            shutil.copyfile(package.root, staging)
        else:
            staging.mkdir()
            for name in ("model.json", package.meta["weights"]["file"]):
                shutil.copyfile(Path(package.root) / name, staging / name)
        ModelPackage.open(staging, verify=True)
        for existing in (target / package.id, target / f"{package.id}.zip"):
            _remove(existing)
        staging.rename(destination)
    finally:
        _remove(staging)
    return ModelPackage.open(destination, verify=False)


def _remove(path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _extract_safely(archive_path, folder):
    """Extract a zip refusing members that would land outside ``folder``; returns the single top folder if the
    archive has one."""
    root = folder.resolve()
    with zipfile.ZipFile(archive_path) as archive:
        for member in archive.infolist():
            destination = (folder / member.filename).resolve()
            if root != destination and root not in destination.parents:
                raise ModelImportFailed(f"{archive_path.name} holds {member.filename!r}, a path outside the archive; "
                                        "refusing to extract it.")
        archive.extractall(folder)
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(("__MACOSX", "."))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def import_question(error):
    """What to ask before importing again after ``error``: 'trust' (a pickle that needs more than plain data),
    'overwrite' (a model with that id is installed), or None (a plain error: show it)."""
    from nnmamba.checkpoints import UnsafeCheckpointError

    if isinstance(error, UnsafeCheckpointError):
        return "trust"
    if isinstance(error, ModelAlreadyInstalled):
        return "overwrite"
    return None
