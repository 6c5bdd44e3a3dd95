"""Found by nnU-Net v2 through ``nnUNet_extTrainer`` (see ``nnmamba.nnunetv2.trainer_dir``): re-exports our
trainers so that nnU-Net's trainer search, which imports every module of the folder, finds them by name."""

from nnmamba.nnunetv2.trainers import nnMambaTrainer, nnMambaTrainer_250epochs, nnMambaTrainer_smoke  # noqa: F401
