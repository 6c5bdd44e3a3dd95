"""Whole-network forward: nnMambaSeg (MICCSS, K=16) against nnU-Net's default 3d_fullres network.

Both on one 1x1x128³ patch, measured in the same run, each in both memory layouts (PyTorch's default NCDHW
and channels-last), and nnMamba also as our inference runs it (``prepare_for_inference``: channels-last, BN
folded into the convolutions). The baseline is ``dynamic_network_architectures``'
``PlainConvUNet`` with features 32-64-128-256-320-320 over 6 stages (the nnU-Net row of the nnMamba paper,
31.2M parameters). Goal: nnMamba / nnU-Net time ratio ≤ 0.35 (the paper counts 141 vs 680 GFLOPs); the ratio
printed is against the baseline's faster layout.

    bash .ci/setup-env --bench
    .venv/bin/python Testing/benchmarks/bench_network.py [--size 128] [--backends auto,torch] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import best_times_interleaved, print_table  # noqa: E402

from nnmamba import ssm  # noqa: E402
from nnmamba.networks import NNMambaSeg, prepare_for_inference  # noqa: E402
from nnmamba.runtime import retain_freed_memory  # noqa: E402


def nnunet_3d_fullres(num_classes=16):
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
    except ImportError:
        sys.exit("The baseline needs dynamic-network-architectures: bash .ci/setup-env --bench")
    return PlainConvUNet(
        input_channels=1, n_stages=6, features_per_stage=[32, 64, 128, 256, 320, 320], conv_op=torch.nn.Conv3d,
        kernel_sizes=3, strides=[1, 2, 2, 2, 2, 2], n_conv_per_stage=2, num_classes=num_classes,
        n_conv_per_stage_decoder=2, conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=False)


def main():
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--backends", default="auto,torch", help="scan back ends to time nnMamba with")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    x = torch.randn(1, 1, args.size, args.size, args.size, device=device)
    x_last = x.contiguous(memory_format=torch.channels_last_3d)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(x.shape)} on {device}")

    baseline = nnunet_3d_fullres().to(device).eval()
    baseline_last = copy.deepcopy(baseline).to(memory_format=torch.channels_last_3d)
    contenders = {"nnU-Net 3d_fullres (NCDHW)": (baseline, x, _params(baseline)),
                  "nnU-Net 3d_fullres (channels-last)": (baseline_last, x_last, _params(baseline))}
    scans = {}
    for backend in args.backends.split(","):
        net = NNMambaSeg(in_ch=1, number_classes=16, scan_backend=None if backend == "auto" else backend)
        scans[backend] = ssm.choose_backend(device, None if backend == "auto" else backend).backend
        contenders[f"nnMambaSeg K=16, {backend} scan (NCDHW)"] = (net.to(device).eval(), x, _params(net))
        contenders[f"nnMambaSeg K=16, {backend} scan (channels-last, BN folded)"] = (
            prepare_for_inference(net, device, channels_last=True), x_last, _params(net))
    with torch.inference_mode():
        seconds = best_times_interleaved({name: partial(model, inp) for name, (model, inp, _) in contenders.items()},
                                         rounds=args.rounds)
    reference = min(seconds[name] for name in list(contenders)[:2])
    rows = []
    for name, (_, _, params) in contenders.items():
        backend = next((b for b in scans if f", {b} scan" in name), None)
        rows.append([name, f"{params / 1e6:.2f}M", scans.get(backend, "-"), _seconds(seconds[name]),
                     f"{seconds[name] / reference:.2f}"])
    print(f"best of {args.rounds} interleaved rounds after a warm-up")
    print_table(["network", "params", "scan", "seconds", "ratio vs best nnU-Net"], rows)
    print("Goal: ratio <= 0.35 (nnMamba as our inference runs it: channels-last, BN folded)")


def _seconds(seconds):
    return f"{seconds:.3g}"


def _params(model):
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
