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
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import best_time, print_table  # noqa: E402

from nnmamba.networks import NNMambaSeg, prepare_for_inference  # noqa: E402
from nnmamba.runtime import retain_freed_memory  # noqa: E402
from nnmamba.ssm import last_scan_choice  # noqa: E402

LAYOUTS = {"NCDHW": torch.contiguous_format, "channels-last": torch.channels_last_3d}


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


def time_network(net, x, layout, device):
    fmt = LAYOUTS[layout]
    net = net.to(device=device, memory_format=fmt).eval()
    x = x.to(device).contiguous(memory_format=fmt)
    with torch.inference_mode():
        return best_time(lambda: net(x), repeats=3, budget_s=60)


def main():
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--backends", default="auto,torch", help="scan back ends to time nnMamba with")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    x = torch.randn(1, 1, args.size, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(x.shape)} on {device}")

    rows, baseline = [], {}
    net = nnunet_3d_fullres()
    for layout in LAYOUTS:
        baseline[layout] = time_network(net, x, layout, device)
        rows.append([f"nnU-Net 3d_fullres ({layout})", f"{_params(net) / 1e6:.1f}M", "-", _seconds(baseline[layout])])
    best_baseline = min(baseline.values())
    del net
    for backend in args.backends.split(","):
        net = NNMambaSeg(in_ch=1, number_classes=16, scan_backend=None if backend == "auto" else backend)
        variants = [("NCDHW", net), ("channels-last", net),
                    ("channels-last + BN folded", prepare_for_inference(net, device, channels_last=True))]
        for label, model in variants:
            seconds = time_network(model, x, "NCDHW" if label == "NCDHW" else "channels-last", device)
            rows.append([f"nnMambaSeg MICCSS K=16 ({label})", f"{_params(net) / 1e6:.2f}M",
                         last_scan_choice().backend, _seconds(seconds), f"{seconds / best_baseline:.2f}"])
    for row, seconds in zip(rows, baseline.values()):
        row.append(f"{seconds / best_baseline:.2f}")
    print_table(["network", "params", "scan", "seconds", "ratio vs best nnU-Net"], rows)
    print("Goal: ratio <= 0.35")


def _seconds(seconds):
    return f"{seconds:.3g}"


def _params(model):
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
