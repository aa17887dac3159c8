"""`lepton-kernels train` / `eval`: the main job end to end on the built-in data sets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lepton_kernels import training
from lepton_kernels.cli import main

pytest.importorskip("sklearn")


def _train(tmp_path, *args):
    metrics = tmp_path / "metrics.json"
    status = main(["train", "--no-progress", "--metrics-json", str(metrics), *args])
    assert status == 0
    return json.loads(metrics.read_text())


def test_default_run_trains_the_digits_cnn_to_97_percent(tmp_path, capsys):
    metrics = _train(tmp_path)
    out = capsys.readouterr().out
    assert "digits-cnn on digits" in out and "test accuracy" in out
    assert metrics["test_accuracy"] >= 0.97, metrics
    assert metrics["train_seconds"] > 0 and metrics["samples_per_second"] > 0


def test_linear_regression_matches_the_closed_form(tmp_path):
    from sklearn.linear_model import LinearRegression

    metrics = _train(tmp_path, "--model", "linear", "--dataset", "diabetes")
    d = training.load_dataset("diabetes")
    closed_form = LinearRegression().fit(d.x_train, d.y_train).score(d.x_test, d.y_test)
    assert abs(metrics["test_r2"] - closed_form) <= 0.01, (metrics["test_r2"], closed_form)


def test_logistic_regression_close_to_sklearn(tmp_path):
    from sklearn.linear_model import LogisticRegression

    metrics = _train(tmp_path, "--model", "logistic", "--dataset", "breast-cancer")
    d = training.load_dataset("breast-cancer")
    reference = LogisticRegression(max_iter=5000).fit(d.x_train, d.y_train).score(d.x_test, d.y_test)
    assert metrics["test_accuracy"] >= reference - 0.01, (metrics["test_accuracy"], reference)


def test_save_then_eval_round_trip(tmp_path, capsys):
    model_file = tmp_path / "digits.lk"
    metrics = _train(tmp_path, "--epochs", "2", "--save", str(model_file))
    eval_metrics = tmp_path / "eval.json"
    assert main(["eval", str(model_file), "--dataset", "digits", "--metrics-json", str(eval_metrics)]) == 0
    assert json.loads(eval_metrics.read_text())["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    data = bytearray(model_file.read_bytes())
    data[-5] ^= 0x10  # flip a bit in the tensor data
    model_file.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["eval", str(model_file), "--dataset", "digits"]) == 2
    assert "checksum" in capsys.readouterr().err.lower()


def test_eval_and_quantize_use_the_split_the_model_was_trained_on(tmp_path):
    """train --save records its split seed; eval and quantize default to it, so the test
    samples are never ones the model was trained on (an explicit --seed still wins)."""
    model_file = tmp_path / "digits.lk"
    metrics = _train(tmp_path, "--epochs", "3", "--seed", "3", "--save", str(model_file))
    assert training.split_seed(model_file) == 3 and training.split_seed(model_file, 5) == 5
    eval_metrics, q_metrics = tmp_path / "eval.json", tmp_path / "q.json"
    assert main(["eval", str(model_file), "--dataset", "digits", "--metrics-json", str(eval_metrics)]) == 0
    assert json.loads(eval_metrics.read_text())["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert main(["quantize", str(model_file), "--dataset", "digits", "--out", str(tmp_path / "q.lk"),
                 "--calibration-batches", "2", "--bench-seconds", "0.01", "--metrics-json", str(q_metrics)]) == 0
    assert json.loads(q_metrics.read_text())["fp32_accuracy"] == pytest.approx(100 * metrics["test_accuracy"])
    assert training.split_seed(tmp_path / "q.lk") == 3  # the int8 file carries it on


@pytest.mark.parametrize("args,words", [
    (["--model", "linear", "--dataset", "digits"], "class labels"),
    (["--model", "lenet5", "--dataset", "digits"], "expects inputs of shape"),
    (["--model", "lenet5"], "--dataset"),
    (["--dataset", "mnist:/nonexistent"], "nonexistent"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--epochs", "0"], "--epochs"),
])
def test_bad_requests_exit_2_with_a_message(args, words, capsys):
    assert main(["train", "--no-progress", *args]) == 2
    assert words in capsys.readouterr().err


def test_training_is_reproducible_for_a_seed():
    d = training.load_dataset("breast-cancer")
    results = []
    for _ in range(2):
        model = training.build_model("logistic", d, seed=3)
        from lepton_kernels import optim

        training.fit(model, d, optim.SGD(model.parameters(), lr=0.1), 2, 32, seed=3, progress=False)
        results.append(training.predict(model, d.x_test))
    np.testing.assert_array_equal(results[0], results[1])
