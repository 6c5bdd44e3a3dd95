"""Shared by the nnU-Net v2 tests and the benchmark: a small nnU-Net v2 raw dataset from our CT phantoms, planned,
preprocessed and trained with nnU-Net's own entry points, in fresh folders."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

DATASET_ID = 501
DATASET = f"Dataset{DATASET_ID}_Phantom"
SPACING = (6.0, 6.0, 8.0)           # every training case at this spacing: it becomes the target spacing
TRAIN_SIZE = (48, 48, 32)           # I J K: small enough for nnU-Net planning in seconds
TEST_SIZE = (64, 56, 40)            # larger than the patch: several sliding-window tiles
HELD_OUT_SPACING = (5.0, 5.5, 7.0)  # not the target spacing: both pipelines resample (cubic, box to box)


def environment(root):
    root = Path(root)
    env = dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1",
               OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    for key in ("raw", "preprocessed", "results"):
        (root / key).mkdir(parents=True, exist_ok=True)
    return env


def phantom(seed, size):
    from nnmamba.demo.phantoms_ct import abdomen_ct

    return abdomen_ct(seed, size=size, spacing=SPACING)


def write_image(array_kji, geometry, path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing([float(s) for s in geometry.spacing])
    image.SetOrigin([float(o) for o in geometry.origin])
    image.SetDirection([float(d) for d in np.asarray(geometry.direction).ravel()])
    sitk.WriteImage(image, str(path))


def write_raw_dataset(env, cases=6):
    from nnmamba.demo.phantoms_ct import CT_LABELS

    folder = Path(env["nnUNet_raw"]) / DATASET
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for seed in range(cases):
        case = phantom(seed, TRAIN_SIZE)
        write_image(case.image.astype(np.float32), case.geometry, folder / "imagesTr" / f"case_{seed:03d}_0000.nii.gz")
        write_image(case.labels.astype(np.uint8), case.geometry, folder / "labelsTr" / f"case_{seed:03d}.nii.gz")
    labels = {"background": 0, **{name: value for value, name in CT_LABELS.items()}}
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels,
                                                     "numTraining": cases, "file_ending": ".nii.gz"}))
    return folder


def held_out_case(path, seed=900, spacing=HELD_OUT_SPACING, border=3):
    """A case at another spacing than the training cases (so both pipelines resample) with a zero border along
    I (a scanner's field of view, so both crop to the nonzero box)."""
    from nnmamba.demo.phantoms_ct import abdomen_ct

    case = abdomen_ct(seed, size=TEST_SIZE, spacing=spacing)
    image = case.image.astype(np.float32)
    if border:
        image[..., :border] = 0
        image[..., -border:] = 0
    write_image(image, case.geometry, path)
    return case


def run(command, env, timeout=600):
    result = subprocess.run(command, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{command[:4]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def nnunet_command(name):
    return [sys.executable, "-c", f"import sys; from nnunetv2.{name[0]} import {name[1]}; sys.argv[0] = 'nnunet'; "
            f"{name[1]}()"]


def plan_and_preprocess(env):
    run(nnunet_command(("experiment_planning.plan_and_preprocess_entrypoints", "plan_and_preprocess_entry"))
        + ["-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"],
        dict(env, nnUNet_n_proc_DA="1"))   # the planner sets torch's thread count from it: 0 is refused


def train_smoke(env, fold="0"):
    run([sys.executable, "-m", "nnmamba", "train", "nnunetv2", str(DATASET_ID), "3d_fullres", fold,
         "--trainer", "nnMambaTrainer_smoke", "--device", "cpu"], env)
    return Path(env["nnUNet_results"]) / DATASET / "nnMambaTrainer_smoke__nnUNetPlans__3d_fullres"


def nnunet_predictor(trainer_dir, folds=(0,)):
    """nnU-Net's own predictor on the result folder (our trainer found through nnUNet_extTrainer)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnmamba.nnunetv2.training import patch_trainer_lookup, use_nnmamba_trainers

    use_nnmamba_trainers()
    patch_trainer_lookup()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(trainer_dir), use_folds=folds,
                                                   checkpoint_name="checkpoint_final.pth")
    return predictor


@contextlib.contextmanager
def float32_blending():
    """nnUNetPredictor blends tiles into float16 buffers (logits and weight sums, even on the CPU): where a tile's
    Gaussian weight is small (image borders, corners) logit x weight falls below float16's range and the blended
    logit becomes 0 (uniform probabilities), elsewhere it is rounded to ~5e-4 relative. Inside this context its
    buffers are float32 (nothing else changes), so its result is nnU-Net's pipeline without that rounding."""
    import torch
    from nnunetv2.inference import predict_from_raw_data as module

    class Float32Zeros:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def zeros(*args, **kwargs):
            if kwargs.get("dtype") is torch.half:
                kwargs["dtype"] = torch.float32
            return torch.zeros(*args, **kwargs)

    module.torch = Float32Zeros()
    try:
        yield
    finally:
        module.torch = torch


def predictor_ready_folder(results, weights_per_fold, patch_zyx, spacing_zyx, dataset, trainer="nnMambaTrainer_smoke"):
    """A v2 result folder as nnU-Net's planner and training leave it (plans complete enough for nnUNetPredictor),
    with the given state_dicts as folds 0, 1, ... (no training: random weights are as good a test of the pipeline).
    CT normalisation, cubic resampling, linear back."""
    import torch

    name = "Dataset503_Folds"
    folder = Path(results) / name / f"{trainer}__nnUNetPlans__3d_fullres"
    linear = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(patch_zyx), "median_image_size_in_voxels": list(patch_zyx), "spacing": list(spacing_zyx),
        "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": dict(linear, order=3),
        "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_seg_kwargs": dict(linear, is_seg=True),
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape", "resampling_fn_probabilities_kwargs": linear,
        "batch_dice": False, "architecture": {"network_class_name": "nnmamba", "arch_kwargs": {},
                                              "_kw_requires_import": []}}
    plans = {"dataset_name": name, "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
             "original_median_spacing_after_transp": list(spacing_zyx),
             "original_median_shape_after_transp": list(patch_zyx), "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
             "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {"0": {
                 "max": 1500.0, "mean": 80.0, "median": 60.0, "min": -1000.0, "percentile_00_5": -150.0,
                 "percentile_99_5": 900.0, "std": 180.0}},
             "configurations": {"3d_fullres": configuration}}
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    for fold, weights in enumerate(weights_per_fold):
        (folder / f"fold_{fold}").mkdir()
        torch.save({"network_weights": weights, "trainer_name": trainer, "current_epoch": 1,
                    "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": fold, "dataset_json": dataset,
                                  "device": torch.device("cpu")},
                    "inference_allowed_mirroring_axes": (0, 1, 2)}, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder
