"""The ``nnmamba`` command.

Exit codes: 0 success; 1 unexpected failure; 2 bad input or usage; 3 a file refused as unsafe to unpickle;
4 the requested device or back end is not available.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_UNSAFE, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    from .checkpoints import CheckpointError, UnsafeCheckpointError
    from .runtime import retain_freed_memory

    retain_freed_memory()

    try:
        return args.handler(args) or EXIT_OK
    except UnsafeCheckpointError as error:
        return _fail(error, EXIT_UNSAFE)
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        return _fail(error, EXIT_BAD_INPUT)
    except RuntimeError as error:
        return _fail(error, EXIT_UNAVAILABLE)


def _fail(error, code):
    print(f"nnmamba: error: {error}", file=sys.stderr)
    return code


def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(prog="nnmamba", description="nnMamba networks: inspect, convert, run.")
    parser.add_argument("--version", action="version", version=f"nnmamba {__version__}")
    sub = parser.add_subparsers(title="commands")

    info = sub.add_parser("info", help="versions, device and the selective-scan back end that will run")
    _device_option(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(handler=cmd_info)

    check = sub.add_parser("check", help="forward passes of every network on a random volume, timed after a warm-up")
    _device_option(check)
    check.add_argument("--size", type=int, default=64, help="edge of the cubic test volume (multiple of 16)")
    check.add_argument("--channels", type=int, default=32, help="network width C (official: 32)")
    check.set_defaults(handler=cmd_check)

    inspect = sub.add_parser("inspect", help="detect the network of an official checkpoint")
    inspect.add_argument("checkpoint")
    _trust_option(inspect)
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=cmd_inspect)

    convert = sub.add_parser("convert", help="convert an official checkpoint to safetensors weights")
    convert.add_argument("checkpoint")
    convert.add_argument("output", help="the .safetensors file to write")
    _trust_option(convert)
    convert.set_defaults(handler=cmd_convert)
    return parser


def _device_option(parser):
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")


def _trust_option(parser):
    parser.add_argument("--trust", action="store_true",
                        help="allow arbitrary pickled objects (only for files from a source you trust)")


def cmd_info(args):
    from .environment import environment_report

    report = environment_report(args.device)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")


def cmd_check(args):
    import torch

    from .environment import resolve_device
    from .networks import NNMambaEncoder, NNMambaSeg, check_spatial_size, prepare_for_inference
    from .ssm import last_scan_choice

    device = resolve_device(args.device)
    size = args.size
    check_spatial_size((size,) * 3)
    torch.manual_seed(0)
    volume = torch.randn(1, 1, size, size, size, device=device).contiguous(memory_format=torch.channels_last_3d)
    networks = [
        ("nnMambaSeg MICCSS (README/LFC)", NNMambaSeg(channels=args.channels, variant="miccss")),
        ("nnMambaSeg nnU-Net variant", NNMambaSeg(channels=args.channels, number_classes=16, variant="nnunet")),
        ("nnMambaEncoder (classifier)", NNMambaEncoder(channels=args.channels)),
    ]
    print(f"Random {size}^3 volume on {device}; untrained networks (shapes and speed only, not accuracy).")
    for name, net in networks:
        params = sum(p.numel() for p in net.parameters())
        net = prepare_for_inference(net, device)   # BN folded, channels-last: as the inference engine runs it
        with torch.inference_mode():
            net(volume)  # warm-up: first-call set-up (kernel compilation, allocator) is not the speed
            start = time.perf_counter()
            out = net(volume)
            out = out[0] if isinstance(out, list) else out
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        finite = bool(torch.isfinite(out).all())
        print(f"{name:<32} params {params:>11,}  output {tuple(out.shape)}  {seconds:6.2f} s  "
              f"finite={finite}  scan={last_scan_choice().backend}")
        if not finite:
            raise RuntimeError(f"{name} produced non-finite values")


def cmd_inspect(args):
    from .checkpoints import load_checkpoint

    loaded = load_checkpoint(args.checkpoint, trust=args.trust)
    arch = loaded.architecture
    info = dict(arch._asdict(), source=loaded.source, trainer=loaded.trainer, keys=len(loaded.state_dict),
                plans=sorted(loaded.plans) if isinstance(loaded.plans, dict) else None)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:<12} {value}")


def cmd_convert(args):
    from .checkpoints import load_checkpoint, save_safetensors

    loaded = load_checkpoint(args.checkpoint, trust=args.trust)
    path = save_safetensors(loaded, args.output)
    print(f"Wrote {path} ({loaded.architecture.network}, variant {loaded.architecture.variant}, "
          f"{loaded.architecture.in_channels} in, {loaded.architecture.num_classes} out)")
