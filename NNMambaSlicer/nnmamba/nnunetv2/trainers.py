"""nnU-Net v2 trainers that train :class:`~nnmamba.networks.NNMambaSeg` (variant ``nnunet``).

Everything but the network is nnU-Net's own: planning, preprocessing, data augmentation, loss, optimiser, schedule,
validation and checkpoints (``fold_k/checkpoint_final.pth``), so a result folder looks like any other and both
``nnmamba models import`` and nnU-Net's ``nnUNetPredictor`` read it. The network is built in
``build_network_architecture``, the hook nnU-Net calls for training and for inference.

Deep supervision follows our network's stages, not nnU-Net's pooling list: NNMambaSeg returns four outputs at 1,
1/2, 1/4 and 1/8 of the patch (isotropic stride 2), so the targets are downsampled by those factors and nnU-Net's
loss weights (1/2^k, the coarsest 0, normalised) apply to those four. NNMambaSeg needs every patch axis divisible by
16; a planned patch that is not is rounded up to the next multiple of 16 when the trainer starts, and the rounded
patch is what the result folder's plans.json records (so inference uses it too).

Importing this module imports torch and nnunetv2.
"""

from __future__ import annotations

import math

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch._dynamo import OptimizedModule

from ..networks import NNMambaSeg
from ..networks.segmentation import DIVISOR

CUDA = torch.device("cuda")   # nnU-Net's default device argument
NETWORK_STAGES = 4   # outputs of NNMambaSeg(variant="nnunet") with do_ds: full, 1/2, 1/4, 1/8 resolution


def _round_patch(patch_size):
    return [int(DIVISOR * math.ceil(int(p) / DIVISOR)) for p in patch_size]


class nnMambaTrainer(nnUNetTrainer):
    """nnU-Net v2's default trainer with nnMamba as the network (width ``nnmamba_channels``, ``nnmamba_blocks``
    residual blocks per stage, as the official nnMamba nnU-Net trainer: 32 and 3)."""

    nnmamba_channels = 32
    nnmamba_blocks = 3

    # nnU-Net stores the __init__ arguments by signature in checkpoints: keep its signature exactly
    def __init__(self, plans, configuration, fold, dataset_json, device=CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        planned = list(self.configuration_manager.patch_size)
        rounded = _round_patch(planned)
        if rounded != planned:
            # plans.json of the result folder is written from plans_manager.plans: record the patch really used
            self.plans_manager.plans["configurations"][configuration]["patch_size"] = rounded
            self.configuration_manager.configuration["patch_size"] = rounded
            self.print_to_log_file(f"nnMamba needs patch axes divisible by {DIVISOR}: patch size {planned} -> "
                                   f"{rounded}", also_print_to_console=True)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        network = NNMambaSeg(in_ch=num_input_channels, channels=cls.nnmamba_channels, blocks=cls.nnmamba_blocks,
                             number_classes=num_output_channels, variant="nnunet")
        network.do_ds = bool(enable_deep_supervision)
        return network

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        dim = len(self.configuration_manager.patch_size)
        return [[1.0 / 2 ** k] * dim for k in range(NETWORK_STAGES)]

    def set_deep_supervision_enabled(self, enabled):
        network = self.network.module if self.is_ddp else self.network
        if isinstance(network, OptimizedModule):
            network = network._orig_mod
        network.do_ds = bool(enabled)

    def _do_i_compile(self):
        return False   # the Mamba scan's custom kernels and torch.compile do not mix; eager is what we test


class nnMambaTrainer_250epochs(nnMambaTrainer):
    """A quarter of nnU-Net's 1000 epochs: a first model in a day on one GPU."""

    def __init__(self, plans, configuration, fold, dataset_json, device=CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 250


class nnMambaTrainer_smoke(nnMambaTrainer):
    """Minutes on a CPU: one epoch of four iterations, a narrow network (width 8). It proves
    the path from nnU-Net's preprocessed data to a result folder; its weights are not a useful model."""

    nnmamba_channels = 8

    def __init__(self, plans, configuration, fold, dataset_json, device=CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 4
        self.num_val_iterations_per_epoch = 1
