"""``nnmamba train nnunetv2``: nnU-Net v2's own training run (``nnunetv2.run.run_training.run_training``) with an
nnMamba trainer.

nnU-Net v2 looks trainers up by name in its own package and then in the folders of ``nnUNet_extTrainer``; we put
:func:`nnmamba.nnunetv2.trainer_dir` first on that path for this process and the processes it spawns (multi-GPU
DDP), so nothing is written into site-packages. The same folder serves ``nnUNetv2_train`` and ``nnUNetv2_predict``
when the variable is exported by hand (see the README).
"""

from __future__ import annotations

import os

from . import TRAINERS, require_nnunetv2, trainer_dir

DEVICES = ("cuda", "cpu", "mps")
_REQUIRED_ENV = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def use_nnmamba_trainers(environ=None):
    """Put our trainer folder first on ``nnUNet_extTrainer`` (in ``environ``, default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    ours = trainer_dir()
    paths = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p and p != ours]
    environ["nnUNet_extTrainer"] = os.pathsep.join([ours] + paths)


def patch_trainer_lookup():
    """In this process, resolve our trainer names directly, before nnU-Net's search (which imports every trainer
    module of nnunetv2, some needing optional packages such as timm); other names go to nnU-Net's own search.
    Spawned processes (DDP) rely on ``nnUNet_extTrainer`` instead."""
    import nnunetv2.inference.predict_from_raw_data as predict_module
    import nnunetv2.run.run_training as training_module

    from . import trainers

    for module in (training_module, predict_module):
        original = getattr(module.recursive_find_trainer_class_by_name, "nnmamba_original",
                           module.recursive_find_trainer_class_by_name)

        def find(name, _original=original):
            return getattr(trainers, name) if name in TRAINERS else _original(name)

        find.nnmamba_original = original
        module.recursive_find_trainer_class_by_name = find


def check_environment(environ=None):
    """nnU-Net's three folders must be set before nnunetv2 is imported (it reads them once, at import)."""
    environ = os.environ if environ is None else environ
    missing = [name for name in _REQUIRED_ENV if not environ.get(name)]
    if missing:
        raise ValueError(f"nnU-Net v2 needs the environment variable(s) {', '.join(missing)} (its raw, "
                         "preprocessed and results folders); set them as for nnUNetv2_train.")


def run(dataset, configuration, fold, trainer="nnMambaTrainer", plans="nnUNetPlans", device="cuda", num_gpus=1,
        continue_training=False, validation_only=False, pretrained_weights=None, npz=False):
    """Train one fold as ``nnUNetv2_train DATASET CONFIGURATION FOLD -tr TRAINER`` would."""
    check_environment()
    if trainer not in TRAINERS:
        raise ValueError(f"Unknown nnMamba trainer {trainer!r}; choose one of {', '.join(TRAINERS)} (nnU-Net's "
                         "own trainers run with nnUNetv2_train).")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}.")
    if num_gpus < 1 or (num_gpus > 1 and device != "cuda"):
        raise ValueError(f"--num-gpus {num_gpus}: give 1, or more than 1 with --device cuda (nnU-Net's DDP).")
    if fold != "all":
        try:
            fold = int(fold)
        except ValueError:
            raise ValueError(f"fold must be 'all' or a number, not {fold!r}.") from None
    use_nnmamba_trainers()
    require_nnunetv2("nnmamba train nnunetv2")
    import nnunetv2.paths

    if not hasattr(nnunetv2.paths, "nnUNet_extTrainer"):
        raise RuntimeError("This nnunetv2 has no nnUNet_extTrainer trainer search path; upgrade it (pip install -U "
                           "nnunetv2) so that nnU-Net finds the nnMamba trainers without files in site-packages.")
    import torch
    from nnunetv2.run.run_training import run_training

    patch_trainer_lookup()

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu.")
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    elif device == "cuda":
        torch.set_num_threads(1)
    run_training(str(dataset), configuration, fold, trainer, plans, pretrained_weights, num_gpus, npz,
                 continue_training, validation_only, device=torch.device(device))
