"""nnmamba.nnunetv2.preprocessing against nnU-Net v2's own functions, piece by piece: resampling (isotropic and
separate z, images and probabilities), the crop to nonzero, the tile weights and step positions, normalisation.
The module itself needs neither nnU-Net nor torch; these comparisons need nnU-Net."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nnmamba.nnunetv2 import preprocessing as ours


def test_module_imports_neither_nnunet_nor_torch():
    code = ("import sys, nnmamba.nnunetv2.preprocessing, nnmamba.nnunetv2.importer; "
            "print(sorted(m for m in ('torch', 'nnunetv2', 'skimage', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


nnunet = pytest.importorskip("nnunetv2", reason="needs nnU-Net v2: pip install 'nnmamba[nnunet]'")


def _smooth(shape, seed):
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    return (np.sin(grid[0] * 2.1) * np.cos(grid[1] * 1.3) + grid[2] + 0.1 * rng.standard_normal(shape)
            ).astype(np.float32)


@pytest.mark.parametrize("shape, spacing, target, kwargs", [
    ((23, 31, 29), (1.0, 1.0, 1.0), (1.4, 0.8, 1.1), {"order": 3, "order_z": 0, "force_separate_z": None}),
    ((12, 40, 36), (5.0, 0.9, 0.9), (3.0, 1.2, 1.2), {"order": 3, "order_z": 0, "force_separate_z": None}),
    ((30, 18, 40), (0.8, 4.0, 0.8), (0.8, 2.4, 1.0), {"order": 3, "order_z": 0, "force_separate_z": None}),
    ((16, 24, 20), (1.0, 1.0, 1.0), (2.0, 0.5, 1.5), {"order": 1, "order_z": 0, "force_separate_z": None}),
    ((14, 30, 30), (4.0, 1.0, 1.0), (2.0, 1.5, 1.5), {"order": 1, "order_z": 1, "force_separate_z": True}),
])
def test_resampling_matches_nnunet(shape, spacing, target, kwargs):
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape, resample_data_or_seg_to_shape

    data = np.stack([_smooth(shape, 0), _smooth(shape, 1) * 100])
    new_shape = compute_new_shape(shape, spacing, target)
    assert list(new_shape) == ours.compute_new_shape(shape, spacing, target)
    theirs = resample_data_or_seg_to_shape(data, new_shape, spacing, target, is_seg=False, **kwargs)
    mine = ours.resample(data, new_shape, spacing, target, **kwargs)
    assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
    scale = np.abs(theirs).max()
    assert np.abs(mine - theirs).max() <= 1e-6 * scale


def test_separate_axis_rule_matches_nnunet():
    from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis

    cases = [((1, 1, 1), (1, 1, 1)), ((5, 1, 1), (1, 1, 1)), ((1, 1, 1), (1, 4, 1)), ((3, 3, 1), (1, 1, 1)),
             ((0.24, 1.25, 1.25), (1, 1, 1)), ((2.9, 1, 1), (1, 1, 1)), ((1, 1, 7), (1, 1, 1))]
    for current, target in cases:
        for force in (None, True, False):
            separate, axis = determine_do_sep_z_and_axis(force, current, target)
            assert ours.separate_axis(current, target, force) == (axis if separate else None), (current, force)


def test_crop_to_nonzero_matches_nnunet():
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    data = np.zeros((2, 20, 24, 22), dtype=np.float32)
    data[0, 3:15, 5:20, 2:9] = 1
    data[1, 6:18, 4:10, 8:21] = 2
    data[0, 8:10, 8:10, 4:6] = 0       # a hole, filled
    theirs, seg, box = crop_to_nonzero(data.copy())
    mine, mask, my_box = ours.crop_to_nonzero(data.copy())
    assert my_box == [list(b) for b in box]
    assert np.array_equal(mine, theirs) and np.array_equal(mask, seg[0] >= 0)
    assert ours.bounding_box(np.zeros((4, 5, 6), bool)) == [[0, 4], [0, 5], [0, 6]]


@pytest.mark.parametrize("patch", [(32, 48, 48), (16, 64, 80), (33, 17, 64)])
def test_tile_weights_and_steps_match_nnunet(patch):
    import torch
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    theirs = compute_gaussian(tuple(patch), sigma_scale=1. / 8, value_scaling_factor=10, device=torch.device("cpu"))
    assert np.array_equal(ours.gaussian_weights(patch), theirs.float().numpy())
    for size in (patch[0], patch[0] + 1, 2 * patch[0] + 7, 5 * patch[0] - 3):
        image = (size, patch[1] * 3 + 1, patch[2])
        assert [ours.tile_steps(s, p) for s, p in zip(image, patch)] == \
            compute_steps_for_sliding_window(image, patch, 0.5)


@pytest.mark.parametrize("scheme, mask", [("CTNormalization", False), ("ZScoreNormalization", False),
                                          ("ZScoreNormalization", True)])
def test_normalization_matches_nnunet(scheme, mask):
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    image = _smooth((12, 14, 16), 3) * 300
    image[:3] = 0
    nonzero = ours.nonzero_mask(image[None])
    stats = {"mean": 20.0, "std": 150.0, "percentile_00_5": -200.0, "percentile_99_5": 500.0}
    theirs = getattr(schemes, scheme)(use_mask_for_norm=mask, intensityproperties=stats).run(
        image.copy(), np.where(nonzero, 0, -1).astype(np.int8))
    entry = ({"scheme": "ct", "clip": [-200.0, 500.0], "mean": 20.0, "std": 150.0} if scheme == "CTNormalization"
             else {"scheme": "zscore", "nonzero_mask": mask})
    mine = ours.normalize_channel(image.copy(), entry, nonzero)
    assert np.abs(mine - theirs).max() < 1e-5


def _plans(transpose, spacing, patch):
    linear = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    backward = [transpose.index(a) for a in range(3)]
    return {"dataset_name": "Dataset501_Phantom", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
            "original_median_spacing_after_transp": spacing, "original_median_shape_after_transp": [32, 32, 32],
            "transpose_forward": transpose, "transpose_backward": backward, "label_manager": "LabelManager",
            "experiment_planner_used": "ExperimentPlanner",
            "foreground_intensity_properties_per_channel": {
                "0": {"mean": 40.0, "std": 60.0, "percentile_00_5": -100.0, "percentile_99_5": 300.0},
                "1": {"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0}},
            "configurations": {"3d_fullres": {
                "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                "patch_size": patch, "median_image_size_in_voxels": [32, 32, 32], "spacing": spacing,
                "normalization_schemes": ["CTNormalization", "ZScoreNormalization"], "use_mask_for_norm": [False, True],
                "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg":
                "resample_data_or_seg_to_shape", "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": dict(linear, order=3), "resampling_fn_seg_kwargs": dict(linear,
                                                                                                     is_seg=True),
                "resampling_fn_probabilities_kwargs": linear, "batch_dice": False,
                "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}}}}


@pytest.mark.parametrize("transpose, regions", [([0, 1, 2], False), ([2, 0, 1], False), ([1, 2, 0], True)])
def test_whole_pipeline_matches_nnunet_preprocessing_and_export(transpose, regions):
    """Transpose, crop (zero border), CT + masked z-score, anisotropic cubic resampling, and the way back (linear,
    separate z, softmax or regions, uncrop, transpose back) against nnU-Net's DefaultPreprocessor and export."""
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnmamba.geometry import Geometry
    from nnmamba.imaging import Volume
    from nnmamba.nnunetv2.importer import dataset_outputs, summarize_v2_plans

    spacing_kji = [4.5, 1.0, 1.2]                      # anisotropic: separate z
    target_kji = [3.0, 1.5, 1.5]
    plans = _plans(transpose, [target_kji[a] for a in transpose], [16, 16, 16])
    labels = ({"background": 0, "whole": [1, 2], "core": [2]} if regions else
              {"background": 0, "liver": 1, "spleen": 2})
    dataset = {"channel_names": {"0": "CT", "1": "MR"}, "labels": labels, "file_ending": ".nii.gz",
               **({"regions_class_order": [1, 2]} if regions else {})}
    image = np.stack([_smooth((20, 34, 30), 4) * 200, _smooth((20, 34, 30), 5) * 3 + 10])
    image[:, :, :, :4] = 0                             # zero border: crop to the nonzero box
    manager = PlansManager(plans)
    configuration = manager.get_configuration("3d_fullres")
    theirs, _, properties = DefaultPreprocessor(verbose=False).run_case_npy(
        image.copy(), None, {"spacing": spacing_kji}, manager, configuration, dataset)
    spec = summarize_v2_plans(plans, "3d_fullres", dataset)["nnunet_v2"]
    pairs, _, order, outputs = dataset_outputs(dataset)
    if order:
        spec["regions"] = {"class_order": order}
    geometry = Geometry.create([0, 0, 0], spacing_kji[::-1], np.eye(3))
    mine, mapping = ours.prepare_nnunet_v2(spec, Volume(image.astype(np.float32), geometry))
    window = mapping.padding or (Ellipsis,)
    assert mine.array[(slice(None), *window)].shape == theirs.shape
    assert np.abs(mine.array[(slice(None), *window)] - theirs).max() < 1e-4

    logits = np.random.default_rng(0).standard_normal((outputs, *mine.array.shape[1:])).astype(np.float32) * 3
    their_logits = torch.from_numpy(logits[(slice(None), *window)].copy())
    segmentation, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
        their_logits, manager, configuration, manager.get_label_manager(dataset), properties,
        return_probabilities=True)
    my_labels = mapping.probabilities_to_input(lambda c: logits[c], outputs)
    my_probabilities = mapping.probabilities(lambda c: logits[c], outputs)
    assert my_labels.shape == segmentation.shape == image.shape[1:]
    assert np.abs(my_probabilities - probabilities).max() < 1e-5
    assert np.mean(my_labels == segmentation) > 0.9999
