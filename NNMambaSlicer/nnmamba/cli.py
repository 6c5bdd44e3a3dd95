"""The ``nnmamba`` command.

Exit codes: 0 success; 1 unexpected failure; 2 bad input or usage; 3 a file refused as unsafe to unpickle;
4 the requested device or back end is not available; 130 cancelled (Ctrl-C), nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
import threading
import time

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_UNSAFE, EXIT_UNAVAILABLE, EXIT_CANCELLED = 0, 1, 2, 3, 4, 130


def main(argv=None):
    """Run the command; every failure is one line on stderr and an exit code, Ctrl-C at any moment (also while
    torch is being imported) is exit 130 with one line and nothing written."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        previous = _ignore_ctrl_c()   # a second Ctrl-C while the message is written must not add a traceback
        try:
            return _fail("cancelled; no output was written.", EXIT_CANCELLED)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def _run(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    from .progress import Cancelled
    from .runtime import retain_freed_memory

    retain_freed_memory()  # faster network passes; the server too keeps its peak memory until it stops

    try:
        return args.handler(args) or EXIT_OK
    except (ValueError, FileNotFoundError) as error:     # CheckpointError is a ValueError
        return _fail(error, EXIT_UNSAFE if _is_unsafe(error) else EXIT_BAD_INPUT)
    except OSError as error:          # a folder that cannot be written, a full disk: say which file and why
        return _fail(_os_error_text(error), EXIT_BAD_INPUT)
    except RuntimeError as error:
        return _fail(error, EXIT_UNAVAILABLE)
    except Cancelled:
        return _fail("cancelled; no output was written.", EXIT_CANCELLED)
    except Exception as error:        # a bug: one line, the traceback only when asked for
        if os.environ.get("NNMAMBA_DEBUG"):
            raise
        return _fail(f"unexpected {type(error).__name__}: {error} (this is a bug; NNMAMBA_DEBUG=1 shows the "
                     "traceback for a report)", EXIT_FAILURE)


def _is_unsafe(error):
    """An UnsafeCheckpointError, told without importing torch (a command that never loaded a checkpoint, e.g.
    one refused for its output path, must not pay seconds for it)."""
    checkpoints = sys.modules.get("nnmamba.checkpoints")
    return checkpoints is not None and isinstance(error, checkpoints.UnsafeCheckpointError)


def _ignore_ctrl_c():
    """Ignore Ctrl-C (main thread only); the handler it replaced, or None."""
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    return None


def _os_error_text(error):
    where = f" {error.filename}" if error.filename else ""
    return f"cannot write or read{where}: {error.strerror or error}"


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

    _models_commands(sub)
    _serve_command(sub)
    from .cli_predict import register_predict

    predict = register_predict(sub, _device_option)
    predict.set_defaults(handler=lambda args: predict.print_help() or EXIT_BAD_INPUT)
    from .cli_demo import register_demo, register_train

    register_demo(sub, _device_option)
    register_train(sub)
    _train_nnunetv2_command(sub)
    _document(parser)
    return parser


CT = "Resources/SampleData/NNMambaDemoAbdomenCT.nrrd"
FETUS = "Resources/SampleData/NNMambaDemoFetalBrain.nrrd"
BRAIN = "Resources/SampleData/NNMambaDemoBrainAtrophy.nrrd"

# (what it does, examples) of every command, shown by its --help; the examples run from the repository root with
# the bundled demo models (the official checkpoints' examples need the authors' files).
HELP = {
    "": ("nnMamba networks (3D CNN + Mamba state-space layers) for segmentation, landmarks and classification: "
         "inspect and convert official checkpoints, manage model packages, predict, serve 3D Slicer, train.",
         "nnmamba demo\nnnmamba predict segment --model demo-abdomen-ct --input {ct} --output ct.seg.nrrd"),
    "info": ("Print the Python, torch and CUDA versions, the device that --device picks and the selective-scan "
             "back end that will run, with the reason for the choice.", "nnmamba info\nnnmamba info --json"),
    "check": ("Run every nnMamba network (segmentation in both variants, the classifier) once on a random volume "
              "and time a second pass: shapes and speed only (untrained weights).",
              "nnmamba check --size 32 --channels 8 --device cpu"),
    "inspect": ("Load an official checkpoint safely (no code runs while unpickling) and print which network it "
                "holds: class, variant, input and output channels, width, nnU-Net plans keys. A file that is not a "
                "checkpoint (an HTML page from a failed download, a text or JSON file) is named as such.",
                "nnmamba inspect model_final_checkpoint.model        # an official nnU-Net v1 checkpoint"),
    "convert": ("Convert an official checkpoint to a safetensors file with the architecture in its header "
                "(loads safely; --trust only for files from a source you trust).",
                "nnmamba convert model_final_checkpoint.model weights.safetensors"),
    "models": ("Model packages (a folder or zip with model.json and weights.safetensors): list the installed and "
               "bundled ones, import official checkpoints, verify a package.",
               "nnmamba models list\nnnmamba models verify demo-abdomen-ct"),
    "models list": ("List installed and bundled model packages, and catalog models not yet imported (with where to "
                    "get them).", "nnmamba models list\nnnmamba models list --json"),
    "models import": ("Turn an official checkpoint (.model with its .model.pkl, .pth, .safetensors), an nnU-Net "
                      "v1 result folder or an nnU-Net v2 one (an nnMamba trainer's: its folds as nnU-Net's "
                      "ensemble, or --fold) into a model package in the user models folder.",
                      "nnmamba models import model_final_checkpoint.model --preset amos-ct"),
    "models verify": ("Check a package: model.json against the schema and the cross-field rules, the weights' "
                      "sha256; --load also builds the network and loads the weights strictly.",
                      "nnmamba models verify demo-abdomen-ct --load"),
    "models presets": ("List the import presets: the task metadata (labels, spacing, normalisation) that an "
                       "official checkpoint lacks.", "nnmamba models presets"),
    "serve": ("Run the HTTP backend that 3D Slicer (or `nnmamba predict --server`) sends work to: bearer token, "
              "upload once and click by coordinates, a job queue with progress and cancel. Needs the server extra "
              "(pip install -e \".[server]\" in the checkout).",
              "nnmamba serve\nnnmamba serve --port 8765 --device cuda"),
    "predict": ("Run a model package on an image file (NIfTI, NRRD, MHA or a DICOM folder) and write the result as "
                "a file 3D Slicer opens as it is. --server URL runs it on an nnmamba server instead. With "
                "--input-dir (or --inputs LIST.csv) and --output-dir it runs a whole cohort: one result per case "
                "and a manifest, results.csv, with the measurements; --resume goes on after a stop, --ray "
                "[ADDRESS] spreads the cases over a Ray cluster.",
                "nnmamba predict segment --model demo-abdomen-ct --input {ct} --output ct.seg.nrrd"),
    "predict segment": ("Label every voxel. The output's extension picks the format: .seg.nrrd (a Slicer "
                        "segmentation with names, colours and terminology), or a plain label map .nii.gz, .nii, "
                        ".nrrd, .mha.",
                        "nnmamba predict segment --model demo-abdomen-ct --input {ct} --output ct.seg.nrrd\n"
                        "nnmamba predict segment --model demo-abdomen-ct --input {ct} --output ct-labels.nii.gz\n"
                        "nnmamba predict segment --model demo-abdomen-ct --input-dir scans --output-dir results "
                        "--resume"),
    "predict click": ("Segment the one structure under the given point(s) (LPS mm, or RAS with --ras), looking "
                      "only at windows around them. Same output formats as 'segment'.",
                      "nnmamba predict click --model demo-abdomen-ct --input {ct} --point -40 -50 -224 "
                      "--output liver.seg.nrrd"),
    "predict landmarks": ("Find the model's landmarks and measure the lines between them; writes a Slicer "
                          "markups file (.mrk.json) and, with --csv, a table.",
                          "nnmamba predict landmarks --model demo-fetal-landmarks --input {fetus} "
                          "--output fetus.mrk.json --csv fetus.csv"),
    "predict classify": ("Class probabilities and the decision by the model's rule; writes JSON and, with --csv, "
                         "a table.", "nnmamba predict classify --model demo-brain-atrophy --input {brain} "
                         "--output brain.json --csv brain.csv"),
    "demo": ("Run the three bundled demo models on the three sample volumes and write what 3D Slicer opens "
             "(.seg.nrrd, .mrk.json, classification .json), a PNG preview of each and a summary scored against "
             "the phantoms' ground truth. About 10 s on two CPU cores. Ctrl-C removes what it wrote.",
             "nnmamba demo\nnnmamba demo --out /tmp/demo --device cpu"),
    "train": ("Train a model package: retrain a demo model from its recipe, write phantoms as a dataset folder, "
              "or train the network of a model.json on a dataset folder of your own.",
              "nnmamba train phantoms landmarks my-data --train 8\n"
              "nnmamba train demo classification --out my-demo-atrophy"),
    "train demo": ("Retrain a bundled demo model from its recipe (nnmamba/demo/recipes.py): the same seed and "
                   "torch thread count give the same weights. 15-30 minutes on two CPU cores.",
                   "nnmamba train demo classification --out my-demo-atrophy"),
    "train dataset": ("Train the network a model.json describes on a dataset folder (dataset.json + images; see "
                      "`nnmamba train phantoms` for the format).",
                      "nnmamba train dataset my-data --model-json Resources/Models/demo-fetal-landmarks/model.json "
                      "--out my-model --steps 1000"),
    "train nnunetv2": ("Train nnMamba with nnU-Net v2: nnU-Net's own training run (after nnUNetv2_plan_and_preprocess"
                       ") with an nnMamba trainer, found through nnUNet_extTrainer; nothing is written into "
                       "site-packages. Needs pip install 'nnmamba[nnunet]' and nnU-Net's nnUNet_raw, "
                       "nnUNet_preprocessed and nnUNet_results variables. Import the result with `nnmamba models "
                       "import`.",
                       "nnmamba train nnunetv2 Dataset001_Abdomen 3d_fullres 0 --device cuda\n"
                       "nnmamba train nnunetv2 1 3d_fullres all --trainer nnMambaTrainer_250epochs --num-gpus 2"),
    "train phantoms": ("Write seeded phantoms as a dataset folder: the format `train dataset` reads, to copy for "
                       "data of your own.", "nnmamba train phantoms landmarks my-data --train 8"),
}


def _document(parser, path=""):
    """Give every command its description and examples (from HELP), recursively."""
    description, examples = HELP[path]
    examples = examples.format(ct=CT, fetus=FETUS, brain=BRAIN)
    parser.description = textwrap.fill(description, 100)   # the raw formatter keeps the examples' lines as they are
    parser.epilog = "example" + ("s" if "\n" in examples else "") + ":\n" + \
        "\n".join(f"  {line}" for line in examples.splitlines())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _document(child, f"{path} {name}".strip())


def _train_nnunetv2_command(sub):
    import argparse

    train = sub.choices["train"]
    kinds = next(action for action in train._actions if isinstance(action, argparse._SubParsersAction))
    command = kinds.add_parser("nnunetv2", help="train nnMamba on an nnU-Net v2 dataset with nnU-Net's own training")
    command.add_argument("dataset", help="nnU-Net dataset name or id (e.g. Dataset001_Abdomen or 1)")
    command.add_argument("configuration", help="nnU-Net configuration, e.g. 3d_fullres")
    command.add_argument("fold", help="fold number (0-4) or 'all'")
    command.add_argument("--trainer", default="nnMambaTrainer",
                         help="nnMambaTrainer (default; nnU-Net's 1000 epochs), nnMambaTrainer_250epochs, "
                              "nnMambaTrainer_smoke (minutes on a CPU, to test the setup)")
    command.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    command.add_argument("--device", default="cuda", choices=("cuda", "cpu", "mps"))
    command.add_argument("--num-gpus", type=int, default=1, help="GPUs for nnU-Net's DDP training (cuda only)")
    command.add_argument("--continue", dest="continue_training", action="store_true",
                         help="continue from the fold's latest checkpoint")
    command.add_argument("--npz", action="store_true", help="save validation probabilities (for ensembling)")
    command.set_defaults(handler=cmd_train_nnunetv2)


def cmd_train_nnunetv2(args):
    from .nnunetv2.training import run

    run(args.dataset, args.configuration, args.fold, trainer=args.trainer, plans=args.plans, device=args.device,
        num_gpus=args.num_gpus, continue_training=args.continue_training, npz=args.npz)


def _models_commands(sub):
    models = sub.add_parser("models", help="list, import and verify model packages")
    models.set_defaults(handler=lambda args: models.print_help() or EXIT_BAD_INPUT)
    commands = models.add_subparsers(title="models commands")

    listing = commands.add_parser("list", help="installed model packages and catalog models not yet imported")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_models_list)

    imp = commands.add_parser("import", help="turn an official checkpoint or nnU-Net result folder into a package")
    imp.add_argument("source", help="checkpoint file (.model, .pth, .safetensors) or nnU-Net v1/v2 result folder")
    imp.add_argument("--preset", help="task metadata to apply (see `nnmamba models presets`)")
    imp.add_argument("--catalog", metavar="ID", help="catalog id of the model (sets the preset; checks the sha256)")
    imp.add_argument("--out", metavar="DIR", help="models folder to write <id>/ into (default: the user models "
                     "folder, $NNMAMBA_MODELS_DIR or ~/.nnmamba/models)")
    imp.add_argument("--plans", metavar="FILE", help="nnU-Net plans .pkl (default: plans.pkl of the result folder "
                     "or the <checkpoint>.pkl next to the checkpoint)")
    imp.add_argument("--id", dest="model_id", help="id of the new package (default: from the preset or catalog)")
    imp.add_argument("--fold", help="result folders: 'all' or a fold number (default: v1 all, else the lowest fold; "
                                    "v2 the ensemble of its folds, as nnU-Net predicts)")
    imp.add_argument("--checkpoint", help="result folders: checkpoint name (default: model_final_checkpoint)")
    imp.add_argument("--spacing", nargs=3, type=float, metavar=("I", "J", "K"), help="target spacing in mm")
    imp.add_argument("--patch-size", nargs=3, type=int, metavar=("I", "J", "K"), help="patch size (multiples of 16)")
    imp.add_argument("--ct-constants", nargs=4, type=float, metavar=("LOW", "HIGH", "MEAN", "STD"),
                     help="CT normalisation: clip range and z-score constants of the training set")
    imp.add_argument("--force", action="store_true", help="replace an existing package with the same id")
    _trust_option(imp)
    imp.set_defaults(handler=cmd_models_import)

    verify = commands.add_parser("verify", help="check a package: model.json schema and rules, weights sha256")
    verify.add_argument("package", help="package folder, .zip or installed model id")
    verify.add_argument("--load", action="store_true", help="also build the network and load the weights strictly")
    verify.set_defaults(handler=cmd_models_verify)

    presets = commands.add_parser("presets", help="the import presets")
    presets.set_defaults(handler=cmd_models_presets)


def _serve_command(sub):
    serve = sub.add_parser("serve", help="run the HTTP backend (Slicer on another machine, a shared GPU)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                       "only; any other address is reachable from the network, over plain HTTP)")
    serve.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    serve.add_argument("--token", help="the bearer token clients must send (visible in the process list: prefer "
                       "$NNMAMBA_SERVER_TOKEN; default: that, else a random one written to the token file)")
    serve.add_argument("--token-file", help="where a generated token is written, readable by you only (default "
                       "~/.nnmamba/server-token)")
    _device_option(serve)
    serve.add_argument("--models-dir", help="model packages folder (default: $NNMAMBA_MODELS_DIR or "
                       "~/.nnmamba/models); bundled models are served too")
    serve.add_argument("--session-ttl", type=float, default=3600.0, help="seconds an unused upload is kept "
                       "(default 3600)")
    serve.add_argument("--max-upload-mb", type=float, default=2048.0, help="largest upload in MB (default 2048)")
    serve.add_argument("--max-voxels", type=_voxel_count, default=600_000_000,
                       help="most voxels (channels x K x J x I) in one volume (default 600e6)")
    serve.add_argument("--model-memory-gb", type=float, default=8.0, help="memory for loaded models; the least "
                       "recently used are unloaded beyond it (default 8)")
    serve.add_argument("--max-session-memory-gb", type=float, default=8.0, help="memory for all uploaded volumes "
                       "together (float32); beyond it idle ones are evicted, else uploads get 507 (default 8)")
    serve.add_argument("--max-network-voxels", type=_voxel_count, help="most voxels of the grid a model sees after "
                       "resampling (default: --max-voxels); larger jobs and clicks get 413")
    serve.add_argument("--max-tiles", type=_voxel_count, default=4096, help="most sliding-window tiles of one job "
                       "(default 4096)")
    serve.add_argument("--max-queued-jobs", type=_voxel_count, default=64, help="jobs that may wait (default 64)")
    serve.add_argument("--click-wait", type=float, default=300.0, help="seconds a click waits for a busy device "
                       "before 503 (default 300)")
    serve.add_argument("--max-waiting-clicks", type=_voxel_count, default=16, help="clicks that may wait for a "
                       "busy device; more get 503 at once (default 16)")
    serve.add_argument("--upload-timeout", type=float, default=30.0, help="seconds an upload may send nothing "
                       "before it is dropped (default 30)")
    serve.add_argument("--parent-pid", type=int, metavar="PID", help="stop when process PID has ended (a program "
                       "that starts a private server passes its own pid, so a crash of it leaves nothing running)")
    serve.set_defaults(handler=cmd_serve)


def _voxel_count(text):
    try:
        count = int(float(text))
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 600e6)") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return count


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


def cmd_serve(args):
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        return _fail(f"the server needs FastAPI and uvicorn ({error}): pip install -e '.[server]' in the nnmamba "
                     "checkout", EXIT_UNAVAILABLE)
    from .server.main import serve

    return serve(args)


def cmd_models_list(args):
    from .modelpkg import list_models

    rows = []
    for row in list_models():
        entry = {"id": row.id, "version": row.version, "task": row.task, "name": row.name if row.installed or
                 row.source == "catalog" else None, "status": "not installed" if row.source == "catalog" else
                 row.source, "where": row.where}
        if row.preset:
            entry["preset"] = row.preset
        if row.problem:
            entry["problem"] = row.problem
        rows.append(entry)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("No models installed and no catalog found.")
        return
    table = [{"id": "ID", "version": "VERSION", "task": "TASK", "status": "STATUS", "where": "WHERE"}] + rows
    columns = ("id", "version", "task", "status")
    widths = [max(len(str(row[key] or "-")) for row in table) for key in columns]
    for row in table:
        print("  ".join([str(row[key] or "-").ljust(width) for key, width in zip(columns, widths)] + [row["where"]]))
    if any(row["status"] == "not installed" for row in rows):
        print("\nNot installed: download the files by hand, then `nnmamba models import FILE_OR_FOLDER --catalog ID`.")
    for row in rows:
        if row["status"] == "invalid":
            print(f"\n{row['problem']}", file=sys.stderr)


def cmd_models_import(args):
    from .importers import import_source

    overrides = {"spacing": args.spacing, "patch_size": args.patch_size, "ct_constants": args.ct_constants}
    package = import_source(args.source, preset=args.preset, catalog_id=args.catalog, out_dir=args.out,
                            plans=args.plans, trust=args.trust, model_id=args.model_id, fold=args.fold,
                            checkpoint=args.checkpoint, overwrite=args.force,
                            **{key: value for key, value in overrides.items() if value is not None})
    net = package.network
    print(f"Imported {package.id} {package.version} ({package.task}; {net['class']} {net['variant']}, "
          f"{net['in_channels']} in, {net['out_channels']} out) to {package.root}")
    for note in package.provenance.get("notes", []):
        print(f"note: {note}")


def cmd_models_verify(args):
    from .modelpkg import resolve_model

    package = resolve_model(args.package, verify=True)
    checks = "schema and rules valid, weights sha256 matches"
    if args.load:
        package.build_model()
        checks += ", weights load strictly"
    print(f"OK {package.id} {package.version} ({package.task}) at {package.root}: {checks}")


def cmd_models_presets(args):
    from .presets import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:<22} {preset.title}: needs {preset.expectation()}")
