"""Fuzz target: the public ops and the compiled module ``_lepton_cpu`` called directly.

Three modes, chosen by the first byte:
  0  a valid small call of a public op (tests/fuzz/lk_cases.py) with one input replaced by the
     same values in another layout (negative / stride-0 / strided / misaligned / Fortran /
     read-only): it must raise ValueError/TypeError or give the contiguous call's result, and
     never modify an input it does not own;
  1  the same valid call with one input replaced by a random array (dtype, shape, layout, values);
  2  a public op with random geometry (kernel, stride, padding, dilation, groups, ceil_mode);
  3  a function of _lepton_cpu with random arguments of the types its signature names.
Documented outcomes: ValueError or TypeError. Anything else (another exception, a crash under
the sanitizers, a changed input) is a finding.

    python tests/fuzz/fuzz_binding.py -max_total_time=30 tests/fuzz/corpus/fuzz_binding
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402

from fuzzlib import (INTERESTING_FLOATS, Bytes, fuzz_main, geometry_int, instrumented_import, layout,  # noqa: E402
                     random_array, small_int)

lk = instrumented_import()
import lk_cases  # noqa: E402
from lepton_kernels import _lepton_cpu  # noqa: E402

ALLOWED = (ValueError, TypeError)
CASES = lk_cases.build_cases(seed=7)
CASE_NAMES = sorted(CASES)

# Functions of the compiled module that change global state, time the machine or take no arrays.
NOT_FUZZED = {"set_num_threads", "set_isa", "set_igemm_path", "measure_copy_gbs", "measure_fma_gflops",
              "measure_vnni_gops", "cpu_features", "detected_isa", "isa", "has_vnni", "igemm_path",
              "openmp_version", "parallel_region_threads", "get_num_threads", "PackedIntB"}
BINDINGS = sorted(n for n in dir(_lepton_cpu) if not n.startswith("_") and n not in NOT_FUZZED)
_ARG = re.compile(r"(\w+): ([\w.|\s\[\]]+?)(?: = [^,)]+)?(?:,|\)\s*->)")


def _argument_kinds(fn) -> list[str]:
    """'array', 'int', 'float', 'bool', 'packed' per parameter, from pybind11's signature line."""
    line = (fn.__doc__ or "").split("\n")[0]
    kinds = []
    for _, type_text in _ARG.findall(line):
        if "PackedIntB" in type_text:
            kinds.append("packed")
        elif "SupportsInt" in type_text:
            kinds.append("int")
        elif "SupportsFloat" in type_text:
            kinds.append("float")
        elif type_text.strip() == "bool":
            kinds.append("bool")
        else:
            kinds.append("array")
    return kinds


def _same_outputs(got: tuple, want: tuple) -> bool:
    if len(got) != len(want):
        return False
    return all(g.shape == w.shape and np.allclose(g, w, rtol=1e-5, atol=1e-6, equal_nan=True)
               for g, w in zip(got, want))


def _run_case(case, arrays):
    originals = {k: np.array(v, copy=True) for k, v in arrays.items() if k not in case.inplace}
    try:
        result = case(arrays)
    except ALLOWED:
        result = None
    for k, before in originals.items():
        if not np.array_equal(before, arrays[k], equal_nan=True):
            raise AssertionError(f"{case.name}: input {k!r} was modified")
    return result


def _layout_mode(b: Bytes) -> None:
    case = CASES[b.pick(CASE_NAMES)]
    arrays = case.fresh_arrays()
    name = b.pick(sorted(arrays))
    if name in case.inplace:
        return  # in-place targets must be contiguous and writable; refusing them is tested elsewhere
    arrays[name] = layout(b, arrays[name])
    want = case({k: np.array(v, copy=True, order="C") for k, v in arrays.items()})  # the same values, contiguous
    got = _run_case(case, arrays)
    if got is not None and not _same_outputs(got, want):
        raise AssertionError(f"{case.name}: a {arrays[name].strides}-strided {name!r} changes the result")


def _random_input_mode(b: Bytes) -> None:
    case = CASES[b.pick(CASE_NAMES)]
    arrays = case.fresh_arrays()
    arrays[b.pick(sorted(arrays))] = random_array(b)
    _run_case(case, arrays)


def _geometry_mode(b: Bytes) -> None:
    x = np.asarray(random_array(b), np.float32) if b.flag() else np.ones((1, 2, 5, 6), np.float32)
    g = (lambda: geometry_int(b))
    geo = dict(stride=g(), padding=g(), dilation=g() or 1)
    op = b.below(5)
    calls = {
        0: lambda: lk.conv2d(x, np.ones((2, 2, 2, 2), np.float32), groups=g() or 1, **geo),
        1: lambda: lk.max_pool2d(x, g(), ceil_mode=b.flag(), return_indices=b.flag(), **geo),
        2: lambda: lk.avg_pool2d(x, g(), stride=geo["stride"], padding=geo["padding"],
                                 ceil_mode=b.flag(), count_include_pad=b.flag()),
        3: lambda: lk.avg_pool2d_backward(x, (1, 2, g(), g()), g(), **_no_dil(geo)),
        4: lambda: lk.cross_entropy(np.ones((3, 4), np.float32), np.array([0, 1, small_int(b)]),
                                    ignore_index=small_int(b), label_smoothing=b.pick(INTERESTING_FLOATS)),
    }
    before = x.copy()
    try:
        calls[op]()
    except ALLOWED:
        pass
    except (MemoryError, RuntimeError) as exc:
        # Absurd geometry can ask for an output of exabytes: refused at once by NumPy's allocator
        # or the kernel's ("<op>: out of memory") is an honest answer (scratch memory out of
        # proportion to input and output is what -rss_limit_mb catches).
        if isinstance(exc, RuntimeError) and not str(exc).endswith("out of memory"):
            raise
    if not np.array_equal(before, x, equal_nan=True):
        raise AssertionError("geometry call modified its input")


def _no_dil(geo):
    return {k: v for k, v in geo.items() if k != "dilation"}


def _binding_arg(b: Bytes, kind: str):
    if kind == "int":
        return small_int(b)
    if kind == "float":
        return b.pick(INTERESTING_FLOATS)
    if kind == "bool":
        return b.flag()
    if kind == "packed":
        a = random_array(b, 2)
        try:
            return _lepton_cpu.pack_matmul_integer_b(a, random_array(b, 1))
        except ALLOWED:
            return None
    return None if b.below(8) == 0 else random_array(b)


def _binding_mode(b: Bytes) -> None:
    fn = getattr(_lepton_cpu, b.pick(BINDINGS))
    args = [_binding_arg(b, kind) for kind in _argument_kinds(fn)]
    try:
        fn(*args)
    except ALLOWED:
        pass


MODES = (_layout_mode, _random_input_mode, _geometry_mode, _binding_mode)


def check(data: bytes) -> None:
    b = Bytes(data)
    MODES[b.below(len(MODES))](b)


if __name__ == "__main__":
    fuzz_main(check)
