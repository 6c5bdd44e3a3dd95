"""`nnmamba predict` against nnU-Net v2's own `nnUNetPredictor` on the same CT and the same nnMamba weights.

Writes a CT phantom (``nnmamba.demo.phantoms_ct``, default 192x192x96 voxels of 2x2x3 mm) and an nnU-Net v2 result
folder of ``nnMambaTrainer`` (width 32, the official size; seeded random weights: speed, not the answer, is measured)
whose plans resample to 2.5x2.5x3 mm with 64x128x128 patches. The folder is imported once with `nnmamba models
import`; then each contender runs in its own fresh process, from reading the .nii.gz to writing the label map
.nii.gz, model loading included (nnU-Net: ``initialize_from_trained_model_folder`` + ``predict_from_files_sequential``;
nnmamba: ``nnmamba predict segment``), both on the CPU with test-time mirroring off, tile step 0.5, Gaussian
weighting. Printed: seconds and peak RSS (of each child process, by ``wait4``) side by side, their ratios, and how
many voxels the two label maps share.

    .venv/bin/python Testing/benchmarks/bench_vs_nnunetv2.py [--size 192 192 96] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import print_table  # noqa: E402

DATASET = "Dataset502_BenchCT"
TRAINER_DIR = "nnMambaTrainer__nnUNetPlans__3d_fullres"
SPACING_MM = (2.0, 2.0, 3.0)            # I J K of the CT
TARGET_ZYX = [3.0, 2.5, 2.5]            # the plans' spacing (nnU-Net's axis order)
PATCH_ZYX = [64, 128, 128]


def write_ct(path, size):
    import numpy as np
    import SimpleITK as sitk

    from nnmamba.demo.phantoms_ct import abdomen_ct

    case = abdomen_ct(7, size=tuple(size), spacing=SPACING_MM)
    image = sitk.GetImageFromArray(case.image.astype(np.int16))
    image.SetSpacing([float(s) for s in case.geometry.spacing])
    image.SetOrigin([float(o) for o in case.geometry.origin])
    image.SetDirection([float(d) for d in np.asarray(case.geometry.direction).ravel()])
    sitk.WriteImage(image, str(path))


def write_result_folder(results):
    """An nnU-Net v2 result folder as training with nnMambaTrainer leaves it (plans as nnU-Net's planner writes)."""
    import torch

    from nnmamba.demo.phantoms_ct import CT_LABELS
    from nnmamba.nnunetv2.trainers import nnMambaTrainer

    folder = Path(results) / DATASET / TRAINER_DIR
    (folder / "fold_0").mkdir(parents=True)
    linear = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": PATCH_ZYX, "median_image_size_in_voxels": [96.0, 154.0, 154.0], "spacing": TARGET_ZYX,
        "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": dict(linear, is_seg=True),
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": linear, "batch_dice": False,
        "architecture": {"network_class_name": "nnmamba.networks.NNMambaSeg", "arch_kwargs": {},
                         "_kw_requires_import": []}}
    plans = {"dataset_name": DATASET, "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": TARGET_ZYX,
             "original_median_shape_after_transp": [96, 154, 154], "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {"0": {
                 "max": 1500.0, "mean": 80.0, "median": 60.0, "min": -1000.0, "percentile_00_5": -150.0,
                 "percentile_99_5": 900.0, "std": 180.0}},
             "configurations": {"3d_fullres": configuration}}
    labels = {"background": 0, **{name: value for value, name in CT_LABELS.items()}}
    dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    torch.manual_seed(0)
    network = nnMambaTrainer.build_network_architecture(None, None, 1, len(labels))
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnMambaTrainer", "current_epoch": 1000,
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset,
                              "device": torch.device("cpu")},
                "inference_allowed_mirroring_axes": (0, 1, 2)}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def run_nnunet(folder, image, output):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnmamba.nnunetv2.training import patch_trainer_lookup, use_nnmamba_trainers

    use_nnmamba_trainers()
    patch_trainer_lookup()
    started = time.perf_counter()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    predictor.predict_from_files_sequential([[str(image)]], [str(output).replace(".nii.gz", "")],
                                            save_probabilities=False, overwrite=True)
    return time.perf_counter() - started


def run_nnmamba(package, image, output):
    from nnmamba.cli import main

    started = time.perf_counter()
    code = main(["predict", "segment", "--model", str(package), "--input", str(image), "--output", str(output),
                 "--device", "cpu"])
    if code:
        raise SystemExit(f"nnmamba predict failed ({code})")
    return time.perf_counter() - started


def child(kind, source, image, output, report):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)   # the same threads for both (nnU-Net caps its own at 8)
    seconds = (run_nnunet if kind == "nnunet" else run_nnmamba)(source, image, output)
    Path(report).write_text(json.dumps({"seconds": seconds}))


def measure(kind, source, image, output, env):
    """(seconds from reading to writing, whole process seconds, peak RSS in GB) of one contender, in a fresh
    process."""
    report = Path(str(output) + ".json")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", kind, str(source), str(image), str(output),
                                str(report)], env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"{kind} failed with exit code {process.returncode}")
    return json.loads(report.read_text())["seconds"], wall, usage.ru_maxrss / 1024 ** 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[192, 192, 96], help="CT voxels, I J K")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each (the best is kept)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        raise SystemExit("needs nnU-Net v2: pip install -e '.[nnunet]' (see .ci/setup-env)") from None
    import numpy as np
    import SimpleITK as sitk

    from nnmamba.importers import import_source

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, nnUNet_raw=str(tmp / "raw"), nnUNet_preprocessed=str(tmp / "preprocessed"),
                   nnUNet_results=str(tmp / "results"), PYTHONWARNINGS="ignore")
        image = tmp / "ct_0000.nii.gz"
        write_ct(image, args.size)
        folder = write_result_folder(tmp / "results")
        package = import_source(folder, out_dir=tmp / "models", model_id="bench-v2").root
        results = {}
        for _ in range(args.rounds):
            for kind, source in (("nnunet", folder), ("nnmamba", package)):
                output = tmp / f"{kind}.nii.gz"
                seconds, wall, peak = measure(kind, source, image, output, env)
                best = results.get(kind)
                if best is None or seconds < best[0]:
                    results[kind] = (seconds, wall, peak)
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "nnunet.nii.gz")))
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "nnmamba.nii.gz")))
        agree = float(np.mean(theirs == ours)) if theirs.shape == ours.shape else float("nan")
    n, m = results["nnunet"], results["nnmamba"]
    print(f"CT {args.size[0]}x{args.size[1]}x{args.size[2]} at {SPACING_MM} mm -> network grid at "
          f"{TARGET_ZYX[::-1]} mm, patch {PATCH_ZYX[::-1]} (I J K), nnMambaTrainer width 32, CPU, "
          f"{os.cpu_count()} cores, mirroring off, best of {args.rounds}")
    print_table(["", "nnUNetPredictor", "nnmamba predict", "nnmamba / nnU-Net"],
                [["read -> write (s)", f"{n[0]:.1f}", f"{m[0]:.1f}", f"{m[0] / n[0]:.2f}"],
                 ["whole process (s)", f"{n[1]:.1f}", f"{m[1]:.1f}", f"{m[1] / n[1]:.2f}"],
                 ["peak RSS (GB)", f"{n[2]:.2f}", f"{m[2]:.2f}", f"{m[2] / n[2]:.2f}"]])
    print(f"label maps agree on {agree:.4%} of the voxels")


if __name__ == "__main__":
    main()
