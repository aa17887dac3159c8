"""``lepton-kernels train`` and ``lepton-kernels eval``: the library's main job for a newcomer.

With no options, ``train`` fits the digits CNN on scikit-learn's bundled
handwritten digits (80/20 split, seed 0) and prints the test accuracy.
"""
from __future__ import annotations

import argparse
import json
import time

from . import distributed, io, models, optim, training
from .cli import CliError, register_command

# Per-model defaults: epochs, batch size, learning rate, optimizer.
DEFAULTS = {
    "digits-cnn": (25, 32, 2e-3, "adam"),
    "lenet5": (5, 64, 1e-3, "adam"),
    "cifar-cnn": (10, 64, 1e-3, "adam"),
    "linear": (1000, 512, 0.1, "adam"),  # full batch: converges to the least-squares fit
    "logistic": (100, 32, 1e-2, "adam"),
}
DEFAULT_DATASET = {"digits-cnn": "digits", "lenet5": None, "cifar-cnn": None, "linear": "diabetes",
                   "logistic": "breast-cancer"}


def _input_shape(text):
    try:
        return training.parse_input_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_data_options(p: argparse.ArgumentParser, recorded: bool = False) -> None:
    """--input-shape, --pixel-scale and --label-column, shared by train, eval and quantize."""
    default = "what train --save recorded in the model file, else " if recorded else ""
    p.add_argument("--input-shape", type=_input_shape, default=None, metavar="C,H,W",
                   help="csv:FILE: reshape each row's feature columns to C,H,W images (e.g. 1,28,28 for 784 "
                        "pixel columns); folder:DIR: resize the images to HxW, C=1 grey or 3 RGB "
                        f"(default: {default}none)")
    p.add_argument("--pixel-scale", type=float, default=None, metavar="S",
                   help="csv:FILE: divide the features by S (255 for 8-bit pixels) instead of standardizing "
                        f"them (default: {default}standardize)")
    p.add_argument("--label-column", type=training.parse_label_column, default=None, metavar="COLUMN",
                   help=f"csv:FILE: index or header name of the label column (default: {default}the last column)")


def data_options(args) -> dict:
    """The data options of the command line, as load_dataset keywords."""
    return {name: getattr(args, name) for name in training.DATA_OPTIONS}


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=training.MODEL_NAMES, default="digits-cnn")
    p.add_argument("--dataset", default=None,
                   help="digits | diabetes | breast-cancer | mnist:DIR | cifar10:DIR | csv:FILE | folder:DIR "
                        "(default: the model's usual dataset)")
    add_data_options(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--save", metavar="FILE", help="write the trained model (safetensors)")
    p.add_argument("--metrics-json", metavar="FILE", help="write the final metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _optimizer(name, params, lr):
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9)
    return (optim.AdamW if name == "adamw" else optim.Adam)(params, lr=lr)


def _dataset(spec, seed, options=None):
    try:
        return training.load_dataset(spec, seed, **(options or {}))
    except (OSError, ValueError, ImportError) as exc:
        raise CliError(str(exc)) from None


def recorded_data_options(args) -> dict:
    """The data options for eval/quantize: those given, else those train recorded in the model file."""
    try:
        return training.data_options(args.file, data_options(args))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _run_train(args: argparse.Namespace) -> int:
    """Under ``mpiexec -n N`` every rank runs this: ranks check they agree, then train data-parallel."""
    if distributed.world_size() > 1:
        shown = {k: v for k, v in vars(args).items() if not callable(v)}  # the handler's repr differs per rank
        try:
            distributed.check_same(shown, what="command-line arguments")
        except distributed.MismatchError as exc:
            raise CliError(str(exc)) from None
    with distributed.abort_on_error():  # one rank's failure ends the job instead of a timeout on the others
        return _train(args, distributed.world_size(), distributed.rank() == 0)


def _parallel(model):
    try:
        return distributed.DistributedDataParallel(model)
    except distributed.MismatchError as exc:
        raise CliError(str(exc)) from exc


def _train(args: argparse.Namespace, world: int, lead: bool) -> int:
    epochs, batch, lr, opt_name = DEFAULTS[args.model]
    epochs = args.epochs if args.epochs is not None else epochs
    batch = args.batch_size if args.batch_size is not None else batch
    lr = args.lr if args.lr is not None else lr
    opt_name = args.optimizer or opt_name
    if epochs < 1 or batch < 1 or lr <= 0:
        raise CliError("--epochs and --batch-size must be >= 1 and --lr > 0")
    if batch % world:
        raise CliError(f"--batch-size is the global batch: with {world} processes it must be divisible by {world}; "
                       f"got {batch}")
    if world > 1 and args.device != "cpu":
        raise CliError(f"training with {world} processes runs on --device cpu; got --device {args.device}")
    spec = args.dataset or DEFAULT_DATASET[args.model]
    if spec is None:
        raise CliError(f"--model {args.model} needs --dataset (mnist:DIR for lenet5, cifar10:DIR for cifar-cnn)")
    dataset = _dataset(spec, args.seed, data_options(args))
    try:
        model = training.build_model(args.model, dataset, seed=args.seed)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.device == "cuda":
        model.to("cuda")
    optimizer = _optimizer(opt_name, model.parameters(), lr)
    schedule = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if lead:
        print(f"training {args.model} on {dataset.name}: {len(dataset.x_train)} train / {len(dataset.x_test)} "
              f"test samples, {epochs} epochs, batch {batch}, {opt_name} lr {lr:g}, device {args.device}"
              + (f", {world} processes" if world > 1 else ""))
    net = _parallel(model) if world > 1 else model
    seconds, rate = training.fit(net, dataset, optimizer, epochs, batch, seed=args.seed, device=args.device,
                                 progress=lead and not args.no_progress, on_epoch_end=schedule.step)
    if not lead:  # the replicas are equal: rank 0 alone evaluates, saves and reports
        return 0
    outputs = training.predict(model, dataset.x_test, device=args.device)
    name, value = training.metric(dataset.task, outputs, dataset.y_test)
    label = "test accuracy" if name == "test_accuracy" else "test R^2"
    shown = f"{100 * value:.2f}%" if name == "test_accuracy" else f"{value:.4f}"
    print(f"{label}: {shown}  (trained in {seconds:.1f} s, {rate:,.0f} samples/s)")
    if args.save:
        model.to("cpu")
        io.save(model, args.save, metadata={"dataset": dataset.name, name: f"{value:.6f}",
                                            training.SPLIT_SEED_KEY: str(args.seed),
                                            **training.data_metadata(data_options(args))})
        print(f"saved {args.save}")
    if args.metrics_json:
        metrics = {name: value, "train_seconds": seconds, "samples_per_second": rate, "model": args.model,
                   "dataset": dataset.name, "epochs": epochs, "world_size": world}
        with open(args.metrics_json, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


def _configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a model file written by train --save or lepton_kernels.save")
    p.add_argument("--dataset", required=True, help="digits | diabetes | breast-cancer | mnist:DIR | ...")
    add_data_options(p, recorded=True)
    p.add_argument("--seed", type=int, default=None,
                   help="split seed (default: the one train --save recorded in the file, else 0)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--metrics-json", metavar="FILE")


def _run_eval(args: argparse.Namespace) -> int:
    try:
        model = models.load_model(args.file)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if isinstance(model, dict):
        raise CliError(f"{args.file} holds tensors but no known model architecture")
    try:
        seed = training.split_seed(args.file, args.seed)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    dataset = _dataset(args.dataset, seed, recorded_data_options(args))
    if args.device == "cuda":
        model.to("cuda")
    start = time.perf_counter()
    try:
        outputs = training.predict(model, dataset.x_test, device=args.device)
    except ValueError as exc:
        raise CliError(f"the model does not fit dataset {dataset.name}: {exc}") from None
    seconds = time.perf_counter() - start
    name, value = training.metric(dataset.task, outputs, dataset.y_test)
    print(f"{type(model).__name__} on {dataset.name} ({len(dataset.x_test)} test samples): {name} = {value:.4f} "
          f"({len(dataset.x_test) / max(seconds, 1e-9):,.0f} samples/s)")
    if args.metrics_json:
        with open(args.metrics_json, "w") as f:
            json.dump({name: value, "samples_per_second": len(dataset.x_test) / max(seconds, 1e-9)}, f, indent=2)
    return 0


register_command("train", "train a model on built-in or local data", _configure_train, _run_train)
register_command("eval", "evaluate a saved model on a dataset", _configure_eval, _run_eval)
