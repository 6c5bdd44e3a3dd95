"""nnMamba inside nnU-Net v2 (the optional extra ``nnmamba[nnunet]``): trainers, training runs, v2 result imports.

- :mod:`.trainers`: ``nnUNetTrainer`` subclasses that build :class:`~nnmamba.networks.NNMambaSeg` (variant
  ``nnunet``) through nnU-Net's ``build_network_architecture`` hook. Importing it imports nnunetv2 and torch.
- :mod:`.training`: ``nnmamba train nnunetv2``: nnU-Net's own ``run_training`` with our trainer found through
  nnU-Net's ``nnUNet_extTrainer`` search path (:func:`trainer_dir`), nothing written into site-packages.
- :mod:`.importer`: a v2 result folder (plans.json, dataset.json, fold_*/checkpoint_*.pth) -> model package.

This module itself is light: no torch, no nnunetv2 at import.
"""

from __future__ import annotations

from pathlib import Path

TRAINERS = ("nnMambaTrainer", "nnMambaTrainer_250epochs", "nnMambaTrainer_smoke")
DEFAULT_TRAINER = "nnMambaTrainer"

__all__ = ["DEFAULT_TRAINER", "TRAINERS", "require_nnunetv2", "trainer_dir"]


def trainer_dir():
    """The folder to put on nnU-Net v2's ``nnUNet_extTrainer`` path so that ``nnUNetv2_train -tr nnMambaTrainer``
    and ``nnUNetv2_predict`` find our trainers (it holds one module re-exporting them)."""
    return str(Path(__file__).resolve().parent / "ext")


def require_nnunetv2(what="this"):
    """Import nnunetv2 or raise a RuntimeError that says how to install it."""
    try:
        import nnunetv2
    except ImportError:
        raise RuntimeError(f"{what} needs nnU-Net v2, which is not installed: pip install 'nnmamba[nnunet]' "
                           "(or pip install nnunetv2).") from None
    return nnunetv2

