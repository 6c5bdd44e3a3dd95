"""``nnmamba demo`` (the bundled demo models on the sample volumes) and ``nnmamba train`` (the demo recipes, or a
model.json on a dataset folder of your own)."""

from __future__ import annotations

from pathlib import Path

EXIT_BAD_INPUT = 2   # as nnmamba.cli (which imports this module)


def register_demo(sub, device_option):
    demo = sub.add_parser("demo", help="run the three demo models on the sample volumes and write Slicer files, "
                          "PNG previews and a summary")
    demo.add_argument("--out", type=Path, default=Path("nnmamba-demo"), help="output folder (default: ./nnmamba-demo)")
    device_option(demo)
    demo.set_defaults(handler=cmd_demo)


def register_train(sub):
    train = sub.add_parser("train", help="train a model package (demo recipes, or your own data)")
    kinds = train.add_subparsers(title="what to train")
    train.set_defaults(handler=lambda args: train.print_help() or EXIT_BAD_INPUT)

    demo = kinds.add_parser("demo", help="retrain a bundled demo model from its recipe (bit for bit, same seed "
                            "and thread count)")
    demo.add_argument("task", choices=("segmentation", "landmarks", "classification"))
    demo.add_argument("--out", type=Path, required=True, help="the model package folder to write")
    _common(demo)
    demo.set_defaults(handler=cmd_train_demo)

    dataset = kinds.add_parser("dataset", help="train the network a model.json describes on a dataset folder")
    dataset.add_argument("folder", type=Path, help="a folder with dataset.json (see `nnmamba train phantoms`)")
    dataset.add_argument("--model-json", type=Path, required=True,
                         help="model.json to train (no weights entry needed); see the demo models for examples")
    dataset.add_argument("--out", type=Path, required=True, help="the model package folder to write")
    dataset.add_argument("--steps", type=int, default=1000)
    dataset.add_argument("--batch-size", type=int, default=2)
    dataset.add_argument("--lr", type=float, default=1e-3)
    dataset.add_argument("--seed", type=int, default=0)
    dataset.add_argument("--schedule", choices=("constant", "poly"), default="poly")
    dataset.add_argument("--sigma", type=float, default=2.0, help="landmark heatmap width in network voxels")
    _common(dataset)
    dataset.set_defaults(handler=cmd_train_dataset)

    phantoms = kinds.add_parser("phantoms", help="write seeded phantoms as a dataset folder (the format example)")
    phantoms.add_argument("task", choices=("segmentation", "landmarks", "classification"))
    phantoms.add_argument("folder", type=Path)
    phantoms.add_argument("--train", type=int, default=8, help="training cases (seeds 0..N-1)")
    phantoms.add_argument("--validation", type=int, default=2, help="validation cases (seeds 1000..)")
    phantoms.set_defaults(handler=cmd_train_phantoms)


def _common(parser):
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_demo(args):
    from .demo.showcase import run_demo

    run_demo(args.out, device=args.device)


def cmd_train_demo(args):
    from .demo.recipes import run_recipe

    package = run_recipe(args.task, args.out, progress=not args.quiet, overwrite=args.overwrite)
    print(f"{package.root}: {package.meta['card'].splitlines()[-1]}")


def cmd_train_dataset(args):
    from .demo.datasets import read_dataset
    from .demo.training import train
    from .formats.atomic import read_json

    meta = read_json(args.model_json)
    dataset = read_dataset(args.folder, classes=(meta.get("outputs") or {}).get("classes"))
    if dataset.task != meta.get("task"):
        raise ValueError(f"{args.folder} holds {dataset.task} data but {args.model_json} is a {meta.get('task')!r} "
                         "model.")

    def case(index):
        return dataset.cases[index]

    case.__name__ = f"dataset {args.folder.resolve().name} ({len(dataset.train)} training, "\
                    f"{len(dataset.validation)} validation cases)"
    package = train(meta, args.out, dataset.train, dataset.validation, args.steps, args.batch_size, args.lr,
                    args.seed, progress=not args.quiet, overwrite=args.overwrite, phantom=case, sigma=args.sigma,
                    schedule=args.schedule)
    print(f"{package.root}: {package.meta['card'].splitlines()[-2]}")


def cmd_train_phantoms(args):
    from .demo.datasets import write_phantom_dataset

    if args.train < 1 or args.validation < 1:
        raise ValueError("--train and --validation must be at least 1.")
    folder = write_phantom_dataset(args.folder, args.task, range(args.train), range(1000, 1000 + args.validation))
    print(f"{folder}: {args.train} training and {args.validation} validation {args.task} phantoms")
