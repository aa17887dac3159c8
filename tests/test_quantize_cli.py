"""`lepton-kernels quantize`: calibrate, convert, save and compare float32 with int8 end to end."""
from __future__ import annotations

import json

import pytest

from lepton_kernels import models, quant
from lepton_kernels.cli import main

pytest.importorskip("sklearn")

KEYS = ("fp32_accuracy", "int8_accuracy", "fp32_samples_per_second", "int8_samples_per_second",
        "fp32_model_bytes", "int8_model_bytes")


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("quantize") / "digits.lk"
    metrics = path.with_suffix(".json")
    assert main(["train", "--no-progress", "--epochs", "15", "--save", str(path),
                 "--metrics-json", str(metrics)]) == 0
    return path, json.loads(metrics.read_text())["test_accuracy"]


def _quantize(model_file, out, *extra):
    metrics = out.with_suffix(".json")
    status = main(["quantize", str(model_file), "--dataset", "digits", "--out", str(out), "--metrics-json",
                   str(metrics), "--bench-seconds", "0.02", *extra])
    return status, (json.loads(metrics.read_text()) if status == 0 else None)


def test_quantize_end_to_end(digits_model, tmp_path, capsys):
    model_file, train_accuracy = digits_model
    out = tmp_path / "digits-int8.lk"
    status, metrics = _quantize(model_file, out)
    assert status == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "samples/s (batch 256)" in text and f"saved {out}" in text
    assert set(KEYS) <= set(metrics)
    # percent, the same number `train` measured on the same split
    assert metrics["fp32_accuracy"] == pytest.approx(100 * train_accuracy)
    assert abs(metrics["int8_accuracy"] - metrics["fp32_accuracy"]) <= 1.0, metrics
    assert metrics["fp32_model_bytes"] == model_file.stat().st_size
    assert metrics["int8_model_bytes"] == out.stat().st_size < 0.35 * metrics["fp32_model_bytes"]
    assert metrics["fp32_samples_per_second"] > 0 and metrics["int8_samples_per_second"] > 0
    assert metrics["calibration_samples"] == 1437 and metrics["observer"] == "minmax"
    assert isinstance(models.load_model(out), quant.QuantizedModel)
    # `eval` reads the int8 file and finds the accuracy quantize reported
    eval_json = tmp_path / "eval.json"
    assert main(["eval", str(out), "--dataset", "digits", "--metrics-json", str(eval_json)]) == 0
    assert 100 * json.loads(eval_json.read_text())["test_accuracy"] == pytest.approx(metrics["int8_accuracy"])


def test_observer_and_calibration_size_options(digits_model, tmp_path):
    model_file, _ = digits_model
    status, metrics = _quantize(model_file, tmp_path / "h.lk", "--observer", "histogram",
                                "--calibration-batches", "2", "--batch-size", "64")
    assert status == 0
    assert metrics["observer"] == "histogram" and metrics["calibration_samples"] == 128
    assert metrics["batch_size"] == 64
    assert abs(metrics["int8_accuracy"] - metrics["fp32_accuracy"]) <= 1.5, metrics


@pytest.mark.parametrize("args,words", [
    (["--dataset", "breast-cancer"], "does not fit"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--dataset", "digits", "--calibration-batches", "0"], "--calibration-batches"),
    (["--dataset", "digits", "--batch-size", "-3"], "--batch-size"),
])
def test_bad_requests_exit_2(digits_model, tmp_path, capsys, args, words):
    model_file, _ = digits_model
    out = tmp_path / "never.lk"
    assert main(["quantize", str(model_file), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_file_and_already_quantized_model(digits_model, tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "nope.lk"), "--dataset", "digits", "--out", str(tmp_path / "x.lk")]) == 2
    assert "not found" in capsys.readouterr().err
    model_file, _ = digits_model
    out = tmp_path / "q.lk"
    assert _quantize(model_file, out)[0] == 0
    capsys.readouterr()
    assert main(["quantize", str(out), "--dataset", "digits", "--out", str(tmp_path / "qq.lk")]) == 2
    assert "already a quantized model" in capsys.readouterr().err


def test_unknown_observer_is_a_usage_error(digits_model, tmp_path, capsys):
    model_file, _ = digits_model
    assert main(["quantize", str(model_file), "--dataset", "digits", "--out", str(tmp_path / "x.lk"),
                 "--observer", "median"]) == 2
    assert "median" in capsys.readouterr().err
