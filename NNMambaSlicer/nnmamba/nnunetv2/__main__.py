"""``python -m nnmamba.nnunetv2``: print the folder for nnU-Net v2's ``nnUNet_extTrainer`` (our trainers)."""

from . import trainer_dir

print(trainer_dir())
