"""The op registry (lepton_kernels._registry) and what is generated from it: the public
names, the kernel interface every backend claims, test and bench grouping by family;
and the cached backend selection of _backend (per (device, op), LEPTON_BACKEND read at
import and again only when it changes, use_backend replacing the cache)."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest

import lepton_kernels as lk
from conftest import ops_in_family
from lepton_kernels import _backend, _registry, ops, reference

# The public names before the registry existed (lepton_kernels.__all__ and ops.__all__ were
# kept by hand): the registry must generate exactly these.
OPS_BEFORE = {
    "conv2d", "conv2d_backward", "linear", "linear_backward", "matmul", "quantize", "dequantize",
    "dynamic_quantize", "fake_quantize", "matmul_integer", "conv2d_integer", "qlinear_matmul", "qlinear_conv2d",
    "prepare_qlinear_matmul", "prepare_qlinear_conv2d", "PreparedQLinear", "cross_entropy",
    "cross_entropy_backward", "sgd_step", "adam_step", "multi_tensor_sgd_step", "multi_tensor_adam_step", "relu",
    "relu_backward", "bias_relu", "bias_relu_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward",
}
OPS_ADDED = {  # new ops add to the names; none is renamed or dropped
    "batch_norm", "batch_norm_backward", "relu6", "relu6_backward", "leaky_relu", "leaky_relu_backward", "sigmoid",
    "sigmoid_backward", "tanh", "tanh_backward", "silu", "silu_backward", "gelu", "gelu_backward", "hardswish",
    "hardswish_backward",
}
TOP_LEVEL_BEFORE = {
    "__version__", "backends", "use_backend", "set_num_threads", "get_num_threads", "max_num_threads", "autograd",
    "data", "models", "nn", "optim", "quant", "reference", "Tensor", "no_grad", "save", "load",
} | OPS_BEFORE
KERNELS_BEFORE = {
    "matmul", "linear", "linear_backward", "conv2d", "conv2d_backward", "sgd_step", "adam_step", "cross_entropy",
    "quantize", "dequantize", "dynamic_quantize", "matmul_integer", "conv2d_integer", "qlinear_matmul",
    "qlinear_conv2d", "relu", "relu_backward", "bias_relu", "bias_relu_backward", "max_pool2d",
    "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
}
KERNELS_ADDED = {"batch_norm_stats", "batch_norm_apply", "batch_norm_backward_reduce", "batch_norm_backward_apply",
                 "activation", "activation_backward"}


# ------------------------------------------------------------------ generated public names

def test_public_names_are_unchanged():
    assert set(ops.__all__) == OPS_BEFORE | OPS_ADDED
    assert len(ops.__all__) == len(OPS_BEFORE | OPS_ADDED)
    assert set(lk.__all__) == TOP_LEVEL_BEFORE | OPS_ADDED
    assert len(lk.__all__) == len(TOP_LEVEL_BEFORE | OPS_ADDED)


@pytest.mark.parametrize("spec", _registry.OPS, ids=lambda s: s.name)
def test_every_op_is_bound_once_from_its_module(spec):
    function = spec.function
    assert getattr(lk, spec.name) is function
    assert getattr(ops, spec.name) is function
    assert function.__module__ == f"lepton_kernels.ops.{spec.module}"
    assert inspect.getdoc(function), f"{spec.name} has no docstring"
    if spec.reference is not None:
        assert callable(spec.reference_function)
        assert spec.reference_function is getattr(reference, spec.reference)


def test_families_partition_the_ops():
    grouped = [name for family in _registry.FAMILIES for name in ops_in_family(family)]
    assert sorted(grouped) == sorted(_registry.public_names())
    assert ops_in_family("pool") == ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]
    with pytest.raises(ValueError, match="ops_in_family: family must be one of"):
        _registry.ops_in_family("pooling")


def test_bad_declarations_are_refused():
    with pytest.raises(ValueError, match="OpSpec 'x': family must be one of"):
        _registry.OpSpec("x", "pooling", "pool", None, ("relu",))
    with pytest.raises(ValueError, match=r"OpSpec 'x': unknown backends \['tpu/cpu'\]"):
        _registry.OpSpec("x", "pool", "pool", None, ("relu",), backends=("tpu/cpu",))


# ------------------------------------------------------------------ the kernel interface

def test_kernel_names_come_from_the_registry_and_are_documented():
    assert _backend.KERNEL_NAMES == _registry.kernel_names()
    assert set(_backend.KERNEL_NAMES) == KERNELS_BEFORE | KERNELS_ADDED
    for name in _backend.KERNEL_NAMES + _registry.optional_kernel_names():
        assert f"\n    {name}(" in _backend.__doc__, f"{name} is not described in _backend's docstring"


def _spec(key):
    name, device = key.split("/")
    return next(s for s in _backend._SPECS if (s.name, s.device) == (name, device))


def _module_path(module: str) -> pathlib.Path:
    found = importlib.util.find_spec(module)
    return pathlib.Path(found.origin)


def _top_level_names(path: pathlib.Path) -> set[str]:
    """Names a module defines or imports at its top level, read from its source: the check
    then covers backends this machine cannot import (CUDA ones without a GPU or CuPy)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def interface_mismatch(key: str, defined: set[str]) -> tuple[list[str], list[str]]:
    """(kernels ``key`` claims through the registry but lacks, kernels it has but does not claim)."""
    claimed = set(_registry.claimed_kernels(key))
    missing = sorted(claimed - defined)
    unclaimed = sorted((defined & set(_registry.kernel_names())) - claimed)
    return missing, unclaimed


@pytest.mark.parametrize("key", _registry.BACKEND_KEYS)
def test_backend_source_defines_exactly_the_kernels_it_claims(key):
    missing, unclaimed = interface_mismatch(key, _top_level_names(_module_path(_spec(key).module)))
    assert not missing, f"backend {key} claims ops whose kernels it lacks: {missing}"
    assert not unclaimed, f"backend {key} defines kernels no registry entry gives it: {unclaimed}"


@pytest.mark.parametrize("key", _registry.BACKEND_KEYS)
def test_loaded_backend_defines_exactly_the_kernels_it_claims(key):
    module = _backend._load(_spec(key))
    if module is None:
        pytest.skip(_backend.unavailable_reason(*key.split("/")))
    defined = {name for name in _registry.kernel_names() if callable(getattr(module, name, None))}
    missing, unclaimed = interface_mismatch(key, defined)
    assert not missing, f"backend {key} claims ops whose kernels it lacks: {missing}"
    assert not unclaimed, f"backend {key} defines kernels no registry entry gives it: {unclaimed}"


def test_the_interface_check_catches_a_missing_and_an_unclaimed_kernel():
    full = set(_registry.claimed_kernels(_registry.NATIVE_CPU))
    assert interface_mismatch(_registry.NATIVE_CPU, full) == ([], [])
    assert interface_mismatch(_registry.NATIVE_CPU, full - {"avg_pool2d"}) == (["avg_pool2d"], [])
    assert interface_mismatch(_registry.NUMBA_CUDA, full) == (
        [], sorted(["conv2d_integer", "matmul_integer", "qlinear_conv2d", "qlinear_matmul", *KERNELS_ADDED]))


# ------------------------------------------------------------------ bench grouping

def test_bench_selects_cases_by_registry_family():
    from lepton_kernels.bench import registry as bench

    quant = {c.name for c in bench.select_cases(["quant"])}
    assert quant and quant == {c.name for c in bench.select_cases(["int8"])}
    for case in bench.select_cases(["pool"]):
        assert _registry.family_of(case.op) == "pool"
    with pytest.raises(LookupError, match="families: .*int8, .*quant"):  # both names are listed as known
        bench.select_cases(["no-such-op"])


# ------------------------------------------------------------------ cached selection

class _CountingLock:
    def __init__(self, lock):
        self.lock, self.acquired = lock, 0

    def __enter__(self):
        self.acquired += 1
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


def test_a_cached_lookup_neither_parses_the_environment_nor_locks(monkeypatch):
    monkeypatch.delenv("LEPTON_BACKEND", raising=False)
    first = _backend.get_backend("cpu", "relu")
    parsed = []
    real_parse = _backend._parse_environment
    monkeypatch.setattr(_backend, "_parse_environment", lambda raw: parsed.append(raw) or real_parse(raw))
    lock = _CountingLock(_backend._lock)
    monkeypatch.setattr(_backend, "_lock", lock)
    for _ in range(100):
        assert _backend.get_backend("cpu", "relu") is first
    assert parsed == [] and lock.acquired == 0
    monkeypatch.setenv("LEPTON_BACKEND", "reference")  # a change is noticed on the next call, parsed once
    for _ in range(3):
        assert _backend.get_backend("cpu", "relu").__name__ == "lepton_kernels._reference_backend"
    assert len(parsed) == 1


def test_use_backend_replaces_the_cache_and_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("LEPTON_BACKEND", "nonsense")
    try:
        lk.use_backend("reference")  # a forced backend wins over the variable, bad or not
        assert _backend.get_backend("cpu", "relu").__name__ == "lepton_kernels._reference_backend"
        assert _backend.forced_backend() == "reference"
        lk.use_backend("numba")
        assert _backend.get_backend("cpu", "relu").__name__ == "lepton_kernels.numba_backend"
    finally:
        lk.use_backend(None)
    with pytest.raises(ValueError, match="LEPTON_BACKEND must be one of"):
        _backend.get_backend("cpu", "relu")
    monkeypatch.delenv("LEPTON_BACKEND")
    assert _backend.forced_backend() is None


def test_errors_are_not_cached():
    lk.use_backend("cupy")  # exists only for CUDA arrays
    try:
        for _ in range(2):
            with pytest.raises(RuntimeError, match="relu: backend 'cupy'"):
                lk.relu(np.ones(3, np.float32))
        assert ("cpu", "relu") not in _backend._selection.chosen
    finally:
        lk.use_backend(None)
    np.testing.assert_array_equal(lk.relu(np.array([-1.0, 2.0], np.float32)), [0.0, 2.0])


def test_environment_is_read_at_import():
    code = ("import numpy as np, lepton_kernels as lk\n"
            "from lepton_kernels import _backend\n"
            "assert _backend._selection.forced == 'reference', _backend._selection.forced\n"
            "assert _backend.get_backend('cpu', 'relu').__name__ == 'lepton_kernels._reference_backend'\n"
            "print(lk.relu(np.array([-1.0, 2.0], np.float32)).tolist())\n")
    env = dict(os.environ, LEPTON_BACKEND=" Reference ")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0.0, 2.0]"


def test_selection_is_thread_safe_while_use_backend_changes():
    x = np.array([-1.0, 2.0], np.float32)
    allowed = {"lepton_kernels._native_cpu", "lepton_kernels.numba_backend", "lepton_kernels._reference_backend"}
    lk.relu(x)
    for name in ("numba", "reference"):  # import (and compile) every backend before the race
        lk.use_backend(name)
        lk.relu(x)
    lk.use_backend(None)
    stop, seen, errors = threading.Event(), set(), []

    def call():
        while not stop.is_set():
            try:
                seen.add(_backend.get_backend("cpu", "relu").__name__)
                np.testing.assert_array_equal(lk.relu(x), [0.0, 2.0])
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(300):
            lk.use_backend((None, "numba", "reference", "native")[i % 4])
    finally:
        stop.set()
        for t in threads:
            t.join()
        lk.use_backend(None)
    assert not errors, errors[:3]
    assert seen <= allowed
    assert _backend.get_backend("cpu", "relu").__name__ == "lepton_kernels._native_cpu"


# ------------------------------------------------------------------ the trimmed call path keeps its checks

def test_device_check_names_every_argument():
    from lepton_kernels.ops import _arrays as arr

    cpu, cuda = arr.ArrayKind("cpu", arr.identity), arr.ArrayKind("cuda", arr.identity)
    assert arr.check_same_device("op", {"x": cpu}) == "cpu"
    assert arr.check_same_device("op", {"x": cuda, "w": cuda, "b": cuda}) == "cuda"
    with pytest.raises(ValueError, match="op: all arrays must be on one device, got x on cpu, w on cuda"):
        arr.check_same_device("op", {"x": cpu, "w": cuda})
    with pytest.raises(ValueError, match="got x on cpu, w on cpu, b on cuda"):
        arr.check_same_device("op", {"x": cpu, "w": cpu, "b": cuda})


def test_cross_entropy_target_range_with_and_without_ignored_rows():
    logits = np.zeros((3, 4), np.float32)
    assert np.isclose(float(lk.cross_entropy(logits, np.array([0, 3, 1]))), np.log(4))
    assert np.isclose(float(lk.cross_entropy(logits, np.array([0, -100, 1]))), np.log(4))
    assert np.isclose(float(lk.cross_entropy(logits, np.array([0, 7, 1]), ignore_index=7)), np.log(4))
    for bad in ([0, 4, 1], [-1, 0, 1], [0, -100, 4]):
        with pytest.raises(ValueError, match=r"cross_entropy: target values must lie in \[0, 4\)"):
            lk.cross_entropy(logits, np.array(bad))


def test_pool_geometry_ints_keep_their_checks():
    x = np.zeros((1, 1, 4, 4), np.float32)
    assert lk.max_pool2d(x, 2).shape == (1, 1, 2, 2)
    assert lk.max_pool2d(x, np.int64(2)).shape == (1, 1, 2, 2)
    with pytest.raises(TypeError, match="max_pool2d: kernel_size must be an int or a pair of ints, got True"):
        lk.max_pool2d(x, True)
    with pytest.raises(ValueError, match="max_pool2d: stride must fit a signed 64-bit integer"):
        lk.max_pool2d(x, 2, stride=2 ** 63)


def test_torch_tensors_come_back_as_torch_tensors_sharing_nothing_with_the_input():
    torch = pytest.importorskip("torch")
    t = torch.tensor([[-1.0, 2.0]], dtype=torch.float32)
    for _ in range(2):  # the second call takes the cached DLPack kind
        y = lk.relu(t)
        assert type(y) is torch.Tensor and y.tolist() == [[0.0, 2.0]]
        assert y.data_ptr() != t.data_ptr()
    with pytest.raises(TypeError, match="relu: x must be an array"):
        lk.relu([1.0, 2.0])


def test_remembered_geometry_keeps_every_error():
    from lepton_kernels.ops import _arrays as arr, conv, pool

    x = np.zeros((1, 2, 6, 6), np.float32)
    w = np.zeros((2, 2, 3, 3), np.float32)
    for _ in range(2):  # the second round finds the geometries remembered
        # (return_indices and out= take the general path, the one that remembers geometries)
        assert lk.max_pool2d(x, 2, ceil_mode=True, return_indices=True)[0].shape == (1, 2, 3, 3)
        assert lk.conv2d(x, w, groups=1, out=np.empty((1, 2, 4, 4), np.float32)).shape == (1, 2, 4, 4)
        # values equal to the remembered ones as dict keys, refused all the same
        with pytest.raises(TypeError, match="max_pool2d: ceil_mode must be a bool, got 1"):
            lk.max_pool2d(x, 2, ceil_mode=1)
        with pytest.raises(TypeError, match="max_pool2d: kernel_size must be an int or a pair of ints, got 2.0"):
            lk.max_pool2d(x, 2.0, ceil_mode=True)
        with pytest.raises(ValueError, match="conv2d: groups must be a positive int, got True"):
            lk.conv2d(x, w, groups=True)
        with pytest.raises(ValueError, match="conv2d: kernel .* larger than the padded input"):
            lk.conv2d(x[:, :, :2, :2], w)
    # the batch is part of the key: a geometry remembered for one sample is checked again for a
    # (stride-0) batch whose output int64 cannot count
    assert lk.max_pool2d(x, 1, padding=750).shape == (1, 2, 1506, 1506)
    huge = np.broadcast_to(x, (1 << 41, 2, 6, 6))
    with pytest.raises(ValueError, match="max_pool2d: stride and padding give an output .* more than int64"):
        lk.max_pool2d(huge, 1, padding=750)
    assert 0 < len(pool._geometries) <= arr._REMEMBERED_KEPT and 0 < len(conv._geometries)
    memo = {}
    for i in range(arr._REMEMBERED_KEPT + 5):
        arr.remembered(memo, i, lambda: i)
    assert len(memo) <= arr._REMEMBERED_KEPT


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # all rows ignored: 0 / 0
def test_cross_entropy_mean_divisor_with_and_without_ignored_rows():
    logits = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [3.0, 1.0, 0.0]], np.float32)
    for target, ignore in (([0, 1, 2], -100), ([0, 1, 2], 1), ([0, 2, 2], 1), ([0, 7, 2], 7), ([7, 7, 7], 7)):
        t = np.array(target)
        want = float(reference.cross_entropy(logits, t, ignore_index=ignore))
        got = float(lk.cross_entropy(logits, t, ignore_index=ignore))
        assert np.isclose(got, want, rtol=1e-6, equal_nan=True), (target, ignore, got, want)
        w = np.array([0.5, 2.0, 1.0], np.float32)
        want = float(reference.cross_entropy(logits, t, weight=w, ignore_index=ignore))
        assert np.isclose(float(lk.cross_entropy(logits, t, weight=w, ignore_index=ignore)), want, rtol=1e-6,
                          equal_nan=True)
