"""Writers of checkpoint files shaped like the official ones, for the checkpoint tests."""

import io
import pickle
from collections import OrderedDict

import numpy as np
import torch


class _LegacyNumpyPickler(pickle._Pickler):
    """Writes numpy globals under their numpy 1.x names (numpy.core.*), as files made in 2023-2024 have them."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            qualname = name or obj.__name__
            self.write(pickle.GLOBAL + f"{module.replace('numpy._core', 'numpy.core')}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


class legacy_pickle:  # a pickle_module for torch.save
    Pickler = _LegacyNumpyPickler
    Unpickler = pickle.Unpickler
    load = staticmethod(pickle.load)
    dump = staticmethod(pickle.dump)
    HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL


def legacy_pickle_bytes(obj):
    buffer = io.BytesIO()
    _LegacyNumpyPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def nnunet_plans(num_classes=15, modality="CT"):
    stage = OrderedDict(batch_size=2, num_pool_per_axis=[5, 5, 5], patch_size=np.array([128, 128, 128]),
                        median_patient_size_in_voxels=np.array([160, 420, 420]),
                        current_spacing=np.array([2.0, 0.71, 0.71]), original_spacing=np.array([2.0, 0.71, 0.71]),
                        do_dummy_2D_data_aug=False,
                        pool_op_kernel_sizes=[[2, 2, 2]] * 5, conv_kernel_sizes=[[3, 3, 3]] * 6)
    return {
        "num_stages": 1, "num_modalities": 1, "modalities": {0: modality},
        "normalization_schemes": OrderedDict({0: modality}), "use_mask_for_norm": OrderedDict({0: False}),
        "all_classes": list(range(1, num_classes + 1)), "num_classes": num_classes,
        "plans_per_stage": {0: stage}, "original_spacings": [np.array([2.0, 0.7, 0.7])],
        "dataset_properties": {"intensityproperties": {0: {"mean": np.float64(40.5), "sd": np.float64(90.1),
                                                           "percentile_00_5": -980.0, "percentile_99_5": 530.0}}},
        "preprocessor_name": "GenericPreprocessor", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "base_num_features": 32, "conv_per_stage": 2, "data_identifier": "nnUNetData_plans_v2.1",
        "keep_only_largest_region": None, "min_region_size_per_class": None, "min_size_per_class": None,
    }


def write_nnunet_model(path, model, plans, legacy_numpy=True):
    """``model_final_checkpoint.model`` + ``.model.pkl`` as nnU-Net v1's ``save_checkpoint`` writes them."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    losses = [np.float64(0.9 - 0.01 * i) for i in range(5)]
    checkpoint = {
        "epoch": 5,
        "state_dict": OrderedDict((k, v.cpu()) for k, v in model.state_dict().items()),
        "optimizer_state_dict": optimizer.state_dict(),
        "lr_scheduler_state_dict": {"factor": 0.2, "best": np.float64(0.5), "patience": 30},
        "plot_stuff": (losses, losses, [], [np.float64(0.7)] * 5),
        "best_stuff": (3, np.float64(0.85), np.float64(0.86)),
    }
    torch.save(checkpoint, path, pickle_module=legacy_pickle if legacy_numpy else pickle)
    info = {"init": (str(path.parent / "plans.pkl"), 0, str(path.parent), "/data/preprocessed", True, None, True,
                     True, False),
            "name": "nnUNetTrainerV2_nnMamba", "class": "<class 'nnunet.training.network_training.X'>",
            "plans": plans}
    sidecar = path.with_name(path.name + ".pkl")
    sidecar.write_bytes(legacy_pickle_bytes(info) if legacy_numpy else pickle.dumps(info))
    return path


class Payload:
    """An arbitrary object: a file that pickles one must be refused unless trusted."""

    def __init__(self, value=1):
        self.value = value
