"""Post-training quantization (lepton_kernels.quant): observers, weight quantization, the int8
layers against the reference ops, quantize_model on a trained digits CNN, int8 kept between
layers, save / load, and the errors."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import models, nn, optim, quant, reference, training
from lepton_kernels.autograd import Tensor, no_grad
from lepton_kernels.quant import modules as qmodules

EPS = np.float32(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------- observers
def test_minmax_observer_hand_computed():
    obs = quant.MinMaxObserver()
    assert obs(np.array([-1.0, 0.5], np.float32)) is not None
    obs.observe(np.array([[2.0, 3.0]], np.float32))
    assert obs.range() == (-1.0, 3.0)
    scale, zp = obs.calculate_qparams()
    assert scale.dtype == np.float32 and scale == np.float32(4.0 / 255.0)
    assert zp.dtype == np.uint8 and int(zp) == 64  # round(1 / (4/255)) = round(63.75)


@pytest.mark.parametrize("values,expected_scale,expected_zp", [
    ([0.5, 2.0], 2.0 / 255, 0),        # widened down to 0: ReLU outputs use the full range
    ([-3.0, -1.0], 3.0 / 255, 255),    # widened up to 0
    ([0.0, 0.0], float(EPS), 0),       # constant zero: scale stays > 0
    ([5.0, 5.0], 5.0 / 255, 0),
])
def test_range_includes_zero_and_scale_is_positive(values, expected_scale, expected_zp):
    obs = quant.MinMaxObserver()
    obs(np.array(values, np.float32))
    scale, zp = obs.calculate_qparams()
    assert scale == np.float32(expected_scale) and scale > 0
    assert int(zp) == expected_zp
    # 0.0 is exactly representable
    assert lk.dequantize(lk.quantize(np.zeros(1, np.float32), scale, zp, dtype=np.uint8), scale, zp)[0] == 0.0


def test_moving_average_observer_hand_computed():
    obs = quant.MovingAverageMinMaxObserver(averaging_constant=0.5)
    obs(np.array([0.0, 2.0], np.float32))  # first batch sets the range
    obs(np.array([-2.0, 4.0], np.float32))  # min = 0 + 0.5 * (-2 - 0), max = 2 + 0.5 * (4 - 2)
    assert obs.range() == (-1.0, 3.0)
    assert obs.calculate_qparams() == quant.affine_qparams(-1.0, 3.0)


def test_histogram_observer_clips_outliers():
    x = np.append(np.arange(10000, dtype=np.float32), np.float32(1e6))
    minmax, hist = quant.MinMaxObserver(), quant.HistogramObserver(bins=2048, percentile=99.9)
    minmax(x)
    hist(x)
    assert minmax.range()[1] == 1e6
    lo, hi = hist.range()
    width = 1e6 / 2048
    assert abs(lo - np.percentile(x, 0.1)) <= width  # two-sided clipping (0 is added back by the qparams)
    assert abs(hi - np.percentile(x, 99.9)) <= width, hi
    assert hist.calculate_qparams()[0] < minmax.calculate_qparams()[0] / 50


def test_histogram_observer_rebins_when_the_range_grows():
    hist = quant.HistogramObserver(bins=1000, percentile=100.0)
    hist(np.arange(1000, dtype=np.float32))
    hist(np.arange(1000, 2000, dtype=np.float32))
    assert hist.range() == (0.0, 1999.0)  # percentile 100: the exact observed min and max
    assert abs(hist.quantile(0.5) - 1000.0) <= 2 * 1999.0 / 1000


def test_observers_refuse_nan_and_empty_calibration():
    with pytest.raises(ValueError, match="finite"):
        quant.MinMaxObserver()(np.array([1.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="no data"):
        quant.HistogramObserver().calculate_qparams()
    with pytest.raises(ValueError, match="averaging_constant"):
        quant.MovingAverageMinMaxObserver(averaging_constant=0.0)


def test_weight_quantization_is_per_channel_symmetric_and_exact():
    w = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.1, 0.2, -0.05]], np.float32)
    q, scale = quant.quantize_weight(w)
    expected_scale = np.array([2.0 / 127, EPS, 0.2 / 127], np.float32)
    np.testing.assert_array_equal(scale, expected_scale)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, np.rint(w / scale[:, None]).astype(np.int8))
    assert q[0, 1] == -127 and q[2, 1] == 127 and not q[1].any()


def test_bias_quantization_matches_the_reference():
    rng = np.random.default_rng(0)
    bias = rng.standard_normal(7).astype(np.float32)
    w_scale = rng.uniform(1e-3, 1e-2, 7).astype(np.float32)
    np.testing.assert_array_equal(quant.quantize_bias(bias, 0.013, w_scale),
                                  reference.quantize_bias(bias, 0.013, w_scale))


# --------------------------------------------------------------------------- layers vs the reference
def _reference_forward(qmodel, x):
    """The quantized model's graph evaluated with lepton_kernels.reference ops."""
    data = np.asarray(x, np.float32)
    for layer in qmodel.layers:
        if isinstance(layer, qmodules.DeQuantStub):
            p = layer.qparams
            data = reference.dequantize(data, p.scale, p.zero_point).astype(np.float32)
        elif isinstance(layer, qmodules.QuantStub):
            data = reference.quantize(data, layer.qparams.scale, layer.qparams.zero_point, dtype=np.uint8)
        elif isinstance(layer, qmodules.QuantizedConv2d):
            i, o = layer.input_qparams, layer.output_qparams
            data = reference.qlinear_conv2d(data, i.scale, i.zero_point, layer.weight, layer.weight_scale, 0,
                                            o.scale, o.zero_point, layer.bias, *layer.geometry,
                                            activation=layer.activation)
        elif isinstance(layer, qmodules.QuantizedLinear):
            i, o = layer.input_qparams, layer.output_qparams
            data = reference.qlinear_matmul(data, i.scale, i.zero_point, layer.weight, layer.weight_scale, 0,
                                            o.scale, o.zero_point, bias=layer.bias, activation=layer.activation)
        elif isinstance(layer, qmodules.QuantizedMaxPool2d):
            data = reference.max_pool2d(data, *layer.args)
        elif isinstance(layer, qmodules.QuantizedFlatten):
            data = data.reshape(len(data), -1)
        else:
            raise AssertionError(f"unexpected layer {layer!r}")
    return data


@pytest.fixture(scope="module")
def lenet_int8():
    rng = np.random.default_rng(1)
    model = models.LeNet5(seed=1)
    calibration = [rng.random((32, 1, 28, 28), dtype=np.float32) for _ in range(3)]
    return model, quant.quantize_model(model, calibration), rng.random((9, 1, 28, 28), dtype=np.float32)


def test_quantized_layers_equal_the_reference_composition(lenet_int8):
    model, qmodel, x = lenet_int8
    out = qmodel(x)
    assert isinstance(out, Tensor) and out.dtype == np.float32 and out.shape == (9, 10)
    np.testing.assert_array_equal(out.data, _reference_forward(qmodel, x))
    with no_grad():
        fp32 = model(Tensor(x)).data
    # random weights: the int8 logits still track the float ones to a few quantization steps
    assert np.abs(out.data - fp32).max() <= 8 * qmodel.layers[-1].qparams.py_scale


def test_conv_and_linear_layer_parameters(lenet_int8):
    model, qmodel, _ = lenet_int8
    conv, linear = qmodel.layers[1], qmodel.layers[6]
    assert isinstance(conv, quant.QuantizedConv2d) and isinstance(linear, quant.QuantizedLinear)
    q, scale = quant.quantize_weight(model[0].weight)
    np.testing.assert_array_equal(conv.weight, q)
    np.testing.assert_array_equal(conv.weight_scale, scale)
    np.testing.assert_array_equal(conv.bias, reference.quantize_bias(model[0].bias.data, conv.input_qparams.scale,
                                                                     scale))
    assert conv.geometry == (1, 2, 1, 1) and conv.activation == "relu"
    # linear weights are stored pre-transposed (in, out) C-contiguous, as qlinear_matmul takes them
    q, scale = quant.quantize_weight(model[7].weight)
    assert linear.weight.shape == (400, 120) and linear.weight.flags.c_contiguous
    np.testing.assert_array_equal(linear.weight, q.T)
    assert linear.input_qparams.scale == qmodel.layers[3].output_qparams.scale  # through the pool and flatten
    assert qmodel.layers[-2].activation is None  # the last Linear has no ReLU


# --------------------------------------------------------------------------- the digits CNN
@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    d = training.load_dataset("digits", seed=0)
    model = training.build_model("digits-cnn", d, seed=0)
    opt = optim.Adam(model.parameters(), lr=2e-3)
    schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=15)
    training.fit(model, d, opt, 15, 32, seed=0, progress=False, on_epoch_end=schedule.step)
    _, accuracy = training.metric(d.task, training.predict(model, d.x_test), d.y_test)
    assert accuracy >= 0.95
    batches = [d.x_train[i:i + 256] for i in range(0, len(d.x_train), 256)]
    return d, model, accuracy, batches


@pytest.mark.parametrize("observer", ["minmax", "moving_average", "histogram"])
def test_quantized_digits_cnn_keeps_its_accuracy(digits, observer):
    d, model, fp32, batches = digits
    qmodel = quant.quantize_model(model, batches, observer=observer)
    _, int8 = training.metric(d.task, training.predict(qmodel, d.x_test), d.y_test)
    assert abs(int8 - fp32) <= 0.01, (observer, fp32, int8)  # 1 point = 3.6 of 360 test images
    # and the predictions agree image by image almost everywhere
    agree = (training.predict(qmodel, d.x_test).argmax(1) == training.predict(model, d.x_test).argmax(1)).mean()
    assert agree >= 0.98


def test_activations_stay_int8_between_layers(digits, monkeypatch):
    d, model, _, batches = digits
    qmodel = quant.quantize_model(model, batches)
    kinds = [type(layer).__name__ for layer in qmodel.layers]
    assert kinds == ["QuantStub", "QuantizedConv2d", "QuantizedConv2d", "QuantizedMaxPool2d", "QuantizedFlatten",
                     "QuantizedLinear", "QuantizedLinear", "DeQuantStub"]
    assert [layer.activation for layer in qmodel.layers if hasattr(layer, "activation")] == ["relu"] * 3 + [None]
    calls = {"quantize": 0, "dequantize": 0}
    for name in calls:
        original = getattr(lk.ops, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(lk.ops, name, counted)
    trace = []
    out = qmodel(d.x_test[:16], trace=trace)
    assert calls == {"quantize": 1, "dequantize": 1}  # in once, out once: no round trip in between
    assert [a.dtype for _, a in trace[:-1]] == [np.dtype(np.uint8)] * (len(trace) - 1)
    assert trace[-1][1].dtype == np.float32 and out.data is trace[-1][1]
    # consecutive layers share the scale / zero point of the value between them
    for before, after in zip(qmodel.layers[1:], qmodel.layers[2:]):
        if hasattr(before, "output_qparams") and hasattr(after, "input_qparams"):
            assert before.output_qparams.scale == after.input_qparams.scale


def test_quantize_model_leaves_the_float_model_alone(digits):
    d, model, _, batches = digits
    before = {k: v.copy() for k, v in model.state_dict().items()}
    model.train()
    quant.quantize_model(model, batches[:1])
    assert model.training and all(m.training for m in model.children())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    model.eval()


def test_save_load_round_trip_is_exact(digits, tmp_path):
    d, model, _, batches = digits
    qmodel = quant.quantize_model(model, batches, observer="histogram")
    path = lk.save(qmodel, tmp_path / "digits-int8.lk")
    loaded = lk.load(path)
    assert isinstance(loaded, quant.QuantizedModel)
    assert loaded.config() == qmodel.config()
    state, info = lk.io.load(path)
    assert info["architecture"]["class"] == "QuantizedModel"
    assert state["1.weight"].dtype == np.int8 and state["1.weight_scale"].dtype == np.float32
    assert state["1.bias"].dtype == np.int32 and state["0.zero_point"].dtype == np.uint8
    for key, value in qmodel.state_dict().items():
        np.testing.assert_array_equal(state[key], value)
        assert state[key].dtype == value.dtype
    np.testing.assert_array_equal(loaded(d.x_test).data, qmodel(d.x_test).data)
    assert (tmp_path / "digits-int8.lk").stat().st_size < 0.35 * sum(v.nbytes for v in model.state_dict().values())


def test_load_refuses_unknown_layers_and_mismatched_tensors(digits, tmp_path):
    _, model, _, batches = digits
    qmodel = quant.quantize_model(model, batches[:1])
    config = qmodel.config()
    config["layers"][1]["class"] = "os.system"
    lk.io.save(qmodel.state_dict(), tmp_path / "bad.lk", architecture=config)
    with pytest.raises(ValueError, match="unknown class"):
        lk.load(tmp_path / "bad.lk")
    state = dict(qmodel.state_dict())
    state["1.weight"] = state["1.weight"].astype(np.float32)
    lk.io.save(state, tmp_path / "bad2.lk", architecture=qmodel.config())
    with pytest.raises(ValueError, match="int8"):
        lk.load(tmp_path / "bad2.lk")
    state = dict(qmodel.state_dict())
    state["1.weight_scale"] = -state["1.weight_scale"]
    lk.io.save(state, tmp_path / "bad3.lk", architecture=qmodel.config())
    with pytest.raises(ValueError, match="> 0"):
        lk.load(tmp_path / "bad3.lk")


def test_quantized_model_is_inference_only(lenet_int8):
    _, qmodel, x = lenet_int8
    with pytest.raises(RuntimeError, match="inference-only"):
        qmodel.train()
    with pytest.raises(RuntimeError, match="inference-only"):
        qmodel(x).backward(np.ones((9, 10), np.float32))
    assert qmodel.eval() is qmodel and qmodel.parameters() == []


# --------------------------------------------------------------------------- other layers, other models
def test_layers_without_int8_kernel_run_in_float_between_stubs(tmp_path):
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, rng=rng), nn.ReLU(), nn.AvgPool2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5, rng=rng))
    calibration = [rng.random((16, 3, 8, 8), dtype=np.float32) for _ in range(2)]
    qmodel = quant.quantize_model(model, calibration)
    kinds = [type(layer).__name__ for layer in qmodel.layers]
    assert kinds == ["QuantStub", "QuantizedConv2d", "DeQuantStub", "FloatLayer", "FloatLayer", "FloatLayer",
                     "QuantStub", "QuantizedLinear", "DeQuantStub"]
    x = rng.random((4, 3, 8, 8), dtype=np.float32)
    with no_grad():
        fp32 = model(Tensor(x)).data
    out = qmodel(x).data
    assert np.abs(out - fp32).max() <= 0.05 * np.abs(fp32).max()
    loaded = lk.load(lk.save(qmodel, tmp_path / "mixed.lk"))
    np.testing.assert_array_equal(loaded(x).data, out)


def test_lone_relu_runs_on_the_quantized_values():
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Linear(6, 4, rng=rng), nn.Dropout(0.5), nn.ReLU(), nn.Linear(4, 3, rng=rng))
    calibration = [rng.standard_normal((32, 6)).astype(np.float32)]
    qmodel = quant.quantize_model(model, calibration)
    relu = qmodel.layers[2]
    assert isinstance(relu, quant.QuantizedReLU)
    q = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(relu(q), np.maximum(q, qmodel.layers[1].output_qparams.zero_point))


def test_logistic_regression_flattens_its_input_like_training_does():
    pytest.importorskip("sklearn")
    d = training.load_dataset("digits", seed=0)
    model = models.LogisticRegression(64, 10, seed=0)
    qmodel = quant.quantize_model(model, [d.x_train[:512]])
    fp32 = training.predict(model, d.x_test)
    int8 = training.predict(qmodel, d.x_test)  # images (N, 1, 8, 8) in: flattened by the quantized model
    assert int8.shape == fp32.shape == (len(d.x_test), 10)
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.95


def test_large_bias_with_tiny_weights_does_not_saturate():
    layer = nn.Linear(4, 2, rng=np.random.default_rng(0))
    layer.weight.data[...] = np.array([[1e-7, -1e-7, 0, 0], [0, 0, 0, 0]], np.float32)
    layer.bias.data[...] = np.array([50.0, -20.0], np.float32)
    qmodel = quant.quantize_model(nn.Sequential(layer), [np.ones((8, 4), np.float32)])
    linear = qmodel.layers[1]
    assert np.all(np.abs(linear.bias.astype(np.int64)) < 2**31 - 1)
    out = qmodel(np.ones((2, 4), np.float32)).data
    np.testing.assert_allclose(out, [[50.0, -20.0]] * 2, atol=linear.output_qparams.py_scale)


@pytest.mark.parametrize("batches,exc,words", [
    ([], ValueError, "empty"),
    ([np.full((2, 1, 8, 8), np.nan, np.float32)], ValueError, "finite"),
    (["not an array"], TypeError, "array"),
])
def test_bad_calibration_input(batches, exc, words):
    with pytest.raises(exc, match=words):
        quant.quantize_model(models.DigitsCNN(seed=0), batches)


def test_bad_model_and_observer():
    with pytest.raises(TypeError, match="Sequential"):
        quant.quantize_model(nn.Linear(3, 2), [np.ones((1, 3), np.float32)])
    with pytest.raises(ValueError, match="unknown observer"):
        quant.quantize_model(models.DigitsCNN(seed=0), [np.ones((1, 1, 8, 8), np.float32)], observer="median")
