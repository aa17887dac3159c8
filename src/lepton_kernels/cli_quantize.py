"""``lepton-kernels quantize``: post-training int8 quantization of a saved model.

Calibrates on batches of the training split, converts with
:func:`lepton_kernels.quant.quantize_model`, saves the int8 model, reloads it and reports
float32 vs int8 test accuracy (percent, same split and metric as ``eval``), model file
sizes and inference throughput at ``--batch-size``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from . import data, io, models, training
from .autograd import Tensor, no_grad
from .cli import CliError, register_command
from .cli_train import _dataset, add_data_options, recorded_data_options
from .quant import QuantizedModel, quantize_model

OBSERVER_NAMES = ("minmax", "moving_average", "histogram")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a float model file written by `train --save` or lepton_kernels.save")
    p.add_argument("--dataset", required=True,
                   help="digits | breast-cancer | mnist:DIR | cifar10:DIR | csv:FILE | folder:DIR")
    add_data_options(p, recorded=True)
    p.add_argument("--calibration-batches", type=int, default=8, metavar="N",
                   help="training batches the activation ranges are measured on (default 8)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="calibration and throughput batch size (default 256)")
    p.add_argument("--observer", choices=OBSERVER_NAMES, default="minmax",
                   help="activation range estimator (default minmax; histogram clips at the 99.99th percentile)")
    p.add_argument("--seed", type=int, default=None,
                   help="split seed (default: the one train --save recorded in the file, else 0)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the int8 model (safetensors)")
    p.add_argument("--metrics-json", metavar="FILE", help="write the comparison as JSON")
    p.add_argument("--bench-seconds", type=float, default=0.5, metavar="S",
                   help="least time spent timing the two models' throughput (default 0.5)")


def _load_float_model(path):
    try:
        model = models.load_model(path)
    except ValueError as exc:  # missing, damaged or foreign file
        raise CliError(str(exc)) from None
    if isinstance(model, dict):
        raise CliError(f"{path} holds tensors but no known model architecture")
    if isinstance(model, QuantizedModel):
        raise CliError(f"{path} is already a quantized model")
    return model


def _calibration_batches(dataset, batch_size, count, seed):
    loader = data.DataLoader(dataset.x_train, batch_size=batch_size, shuffle=True, seed=seed)
    batches = []
    for batch in loader:
        if len(batches) == count:
            break
        batches.append(batch)
    return batches


def samples_per_second(model_list, x, batch_size, min_seconds=0.5, max_rounds=500):
    """Inference throughput of each model on one batch of ``batch_size`` samples (``x`` tiled to
    fill it): median of timed calls after two warm-up calls each. The models take turns call by
    call, so a busy machine slows them alike and the ratio stays fair."""
    batch = x[np.arange(batch_size) % len(x)]
    inputs = [Tensor(np.ascontiguousarray(training._inputs(model, batch))) for model in model_list]
    times = [[] for _ in model_list]
    with no_grad():
        for model, xb in zip(model_list, inputs):
            model(xb)
            model(xb)
        start = time.perf_counter()
        while len(times[0]) < 5 or (time.perf_counter() - start < min_seconds and len(times[0]) < max_rounds):
            for model, xb, samples in zip(model_list, inputs, times):
                t0 = time.perf_counter()
                model(xb)
                samples.append(time.perf_counter() - t0)
    return [batch_size / statistics.median(t) for t in times]


def _evaluate(model, dataset, what):
    try:
        outputs = training.predict(model, dataset.x_test)
    except ValueError as exc:
        raise CliError(f"the {what} model does not fit dataset {dataset.name}: {exc}") from None
    return training.metric(dataset.task, outputs, dataset.y_test)


def _table(name, fp32, int8, sizes, rates):
    shown = (lambda v: f"{100 * v:.2f}%") if name == "test_accuracy" else (lambda v: f"{v:.4f}")
    label = "test accuracy" if name == "test_accuracy" else "test R^2"
    rows = [("", "float32", "int8", ""),
            (label, shown(fp32), shown(int8), f"{100 * (int8 - fp32):+.2f} points" if name == "test_accuracy"
             else f"{int8 - fp32:+.4f}"),
            ("model file bytes", f"{sizes[0]:,}", f"{sizes[1]:,}", f"{sizes[0] / sizes[1]:.2f}x smaller"
             if sizes[1] <= sizes[0] else f"{sizes[1] / sizes[0]:.2f}x larger (scales, zero points)"),
            (f"samples/s (batch {rates[2]})", f"{rates[0]:,.0f}", f"{rates[1]:,.0f}", f"{rates[1] / rates[0]:.2f}x")]
    return "\n".join(f"  {a:<22} {b:>12} {c:>12}   {d}" for a, b, c, d in rows)


def _run(args: argparse.Namespace) -> int:
    if args.calibration_batches < 1 or args.batch_size < 1:
        raise CliError("--calibration-batches and --batch-size must be >= 1")
    if not args.bench_seconds >= 0:
        raise CliError("--bench-seconds must be >= 0")
    model = _load_float_model(args.file)
    fp32_bytes = os.path.getsize(args.file)
    try:
        seed = training.split_seed(args.file, args.seed)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    options = recorded_data_options(args)
    dataset = _dataset(args.dataset, seed, options)
    metric_name, fp32_value = _evaluate(model, dataset, "float32")
    batches = _calibration_batches(dataset, args.batch_size, args.calibration_batches, seed)
    try:
        qmodel = quantize_model(model, batches, observer=args.observer)
    except ValueError as exc:
        raise CliError(f"quantization failed: {exc}") from None
    samples = sum(len(b) for b in batches)
    try:
        io.save(qmodel, args.out, metadata={"dataset": dataset.name, "observer": args.observer,
                                            "calibration_samples": str(samples),
                                            training.SPLIT_SEED_KEY: str(seed),
                                            **training.data_metadata(options)})
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc}") from None
    qmodel = _reload(args.out)  # measure what was saved
    _, int8_value = _evaluate(qmodel, dataset, "int8")
    fp32_rate, int8_rate = samples_per_second([model, qmodel], dataset.x_test, args.batch_size,
                                              args.bench_seconds)
    int8_bytes = os.path.getsize(args.out)

    print(f"quantized {type(model).__name__} ({args.file}) on {dataset.name}: {samples} calibration samples "
          f"({len(batches)} batches, {args.observer} observer), {len(dataset.x_test)} test samples")
    print(_table(metric_name, fp32_value, int8_value, (fp32_bytes, int8_bytes),
                 (fp32_rate, int8_rate, args.batch_size)))
    print(f"saved {args.out}")
    if args.metrics_json:
        key = "accuracy" if metric_name == "test_accuracy" else "r2"
        scale = 100.0 if key == "accuracy" else 1.0  # accuracy in percent
        metrics = {f"fp32_{key}": scale * fp32_value, f"int8_{key}": scale * int8_value,
                   "fp32_samples_per_second": fp32_rate, "int8_samples_per_second": int8_rate,
                   "speedup": int8_rate / fp32_rate, "fp32_model_bytes": fp32_bytes, "int8_model_bytes": int8_bytes,
                   "batch_size": args.batch_size, "calibration_batches": len(batches),
                   "calibration_samples": samples, "observer": args.observer, "model": type(model).__name__,
                   "dataset": dataset.name, "test_samples": len(dataset.x_test)}
        with open(args.metrics_json, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


def _reload(path):
    try:
        return models.load_model(path)
    except ValueError as exc:
        raise CliError(f"reloading {path}: {exc}") from None


register_command("quantize", "post-training int8 quantization of a saved model, compared with float32",
                 _configure, _run)
