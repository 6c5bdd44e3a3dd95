"""Whole-network forward: nnMambaSeg (MICCSS, K=16) against nnU-Net's default 3d_fullres network, interleaved.

nnMamba runs exactly as ``nnmamba predict`` runs it: the network a :class:`nnmamba.predictor.NetworkPredictor`
prepares (``prepare_for_inference``: BN folded, convolutions fused with their ReLU and residual sums by oneDNN,
channels-last), fed a channels-last tile, with the scan back end ``auto`` picks (numba when installed),
PyTorch's default thread count and freed memory kept in the process (as the ``nnmamba`` command does).
"before" is the previous rewrite (BN folded and channels-last only, no fused convolutions), timed in the same
rounds; run against an older checkout it is that checkout's network. The baseline is
``dynamic_network_architectures``' ``PlainConvUNet`` with features 32-64-128-256-320-320 over 6 stages (the
nnU-Net row of the nnMamba paper, 31.2M parameters), in both memory layouts; each round's ratio is against the
faster of the two in that round.

Every contender runs once per round, in turn, so that a slow spell of the (shared) machine hits all alike; the
table gives the median and the spread (min-max) over the rounds of the times and of the per-round ratios.
Goal: nnMamba / nnU-Net ≤ 0.35 in the median (the paper counts 141 vs 680 GFLOPs).

    bash .ci/setup-env --bench
    .venv/bin/python Testing/benchmarks/bench_network.py [--sizes 128,96] [--rounds 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import print_table, times_interleaved  # noqa: E402

from nnmamba.networks import NNMambaSeg, prepare_for_inference  # noqa: E402
from nnmamba.predictor import NetworkPredictor  # noqa: E402
from nnmamba.runtime import retain_freed_memory  # noqa: E402
from nnmamba.ssm import ENV_VAR, last_scan_choice  # noqa: E402

GOAL = 0.35
BASELINES = ("nnU-Net 3d_fullres (NCDHW)", "nnU-Net 3d_fullres (channels-last)")
BEFORE, AFTER = "nnMamba K=16, before (BN folded, channels-last)", "nnMamba K=16, as nnmamba predict runs it"


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


def contenders(device):
    """{name: (callable on an NCDHW input → output, parameter count)}."""
    torch.manual_seed(0)
    baseline = nnunet_3d_fullres().to(device).eval()
    baseline_last = copy.deepcopy(baseline).to(memory_format=torch.channels_last_3d)
    net = NNMambaSeg(in_ch=1, number_classes=16).eval()
    predictor = NetworkPredictor(net, device=str(device))         # what tasks.common.make_predictor builds
    try:
        before = prepare_for_inference(net, device, fuse=False)
    except TypeError:                                             # the code before the fused rewrite
        before = prepare_for_inference(net, device)
    last = torch.channels_last_3d
    nets = {
        BASELINES[0]: (baseline, _params(baseline)),
        BASELINES[1]: (lambda x: baseline_last(x.contiguous(memory_format=last)), _params(baseline)),
        BEFORE: (lambda x: before(x.contiguous(memory_format=last)), _params(net)),
        AFTER: (lambda x: predictor.model(x.contiguous(memory_format=last)), _params(net)),
    }
    return nets


def run_size(size, nets, device, rounds):
    x = torch.randn(1, 1, size, size, size, device=device)
    with torch.inference_mode():
        reference, fast = nets[BEFORE][0](x), nets[AFTER][0](x)
        difference = float((fast - reference).abs().max() / reference.abs().max())
        times = times_interleaved({name: (lambda f=f: f(x)) for name, (f, _) in nets.items()}, rounds)
    best_baseline = [min(pair) for pair in zip(*(times[name] for name in BASELINES))]
    rows, ratios = [], {}
    for name, (_, params) in nets.items():
        ratio = [t / b for t, b in zip(times[name], best_baseline)]
        ratios[name] = statistics.median(ratio)
        rows.append([name, f"{params / 1e6:.2f}M", f"{statistics.median(times[name]):.3f}",
                     f"{min(times[name]):.3f}-{max(times[name]):.3f}", f"{ratios[name]:.3f}",
                     f"{min(ratio):.3f}-{max(ratio):.3f}"])
    print(f"\n1x1x{size}^3, {rounds} interleaved rounds after a warm-up; max |after - before| / max |before| = "
          f"{difference:.1e}")
    print_table(["network", "params", "median s", "spread s", "ratio vs nnU-Net", "ratio spread"], rows)
    verdict = "met" if ratios[AFTER] <= GOAL else "NOT met"
    print(f"ratio median {ratios[BEFORE]:.3f} before -> {ratios[AFTER]:.3f} after; goal <= {GOAL}: {verdict}")
    return ratios


def main():
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,96", help="cubic tile edges, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    nets = contenders(device)
    with torch.inference_mode():
        nets[AFTER][0](torch.randn(1, 1, 16, 16, 16, device=device))
    choice = last_scan_choice()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device {device}; "
          f"scan back end {choice.backend} ({choice.reason}); {ENV_VAR}={os.environ.get(ENV_VAR, '(unset)')}")
    for size in (int(s) for s in args.sizes.split(",")):
        run_size(size, nets, device, args.rounds)


def _params(model):
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
