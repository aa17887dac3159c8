"""Checks of the CUDA side that need no GPU: the shared kernel sources
(cuda/kernels/*.cuh) stay free of host headers and compile standalone with nvcc,
every kernel name the CuPy backend launches exists unmangled, and the CUDA
backends report "unavailable" (rather than raising) on a machine without a GPU.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted((ROOT / "cuda" / "kernels").glob("*.cuh"))
NVCC = shutil.which("nvcc")
HAVE_GPU_NODE = os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")

ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _expand_entries(text: str) -> set[str]:
    """Kernel names defined in a source, expanding the LK_*_DEFINE(SUFFIX, ...) macros
    that stamp out one extern "C" wrapper per dtype (NAME##SUFFIX[##_i32])."""
    code = _strip_comments(text)
    names = set(ENTRY.findall(code))
    defines = re.findall(r"#define\s+(LK_\w+_DEFINE)\((\w+)[^)]*\)((?:[^\n]*\\\n)*[^\n]*)", code)
    for macro, param, body in defines:
        templates = re.findall(r"void\s+(lk_\w+?)##" + param + r"(##_i32)?\s*\(", body)
        for suffix in re.findall(r"^" + re.escape(macro) + r"\((\w+)\s*,", code, flags=re.M):
            names |= {prefix + suffix + ("_i32" if i32 else "") for prefix, i32 in templates}
    return names


def test_kernel_sources_exist():
    assert {p.name for p in KERNELS} >= {"elementwise.cuh", "pool.cuh", "gemm.cuh", "conv.cuh", "optim.cuh",
                                         "loss.cuh"}


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_kernel_sources_include_no_host_headers(path):
    """NVRTC (CuPy) has no host headers: the shared sources include nothing from the host."""
    code = _strip_comments(path.read_text(encoding="utf-8"))
    includes = re.findall(r"^\s*#\s*include\s*([<\"][^>\"]+[>\"])", code, flags=re.M)
    local = {p.name for p in KERNELS}
    bad = [inc for inc in includes if inc.startswith("<") or inc.strip('"') not in local]
    assert not bad, f"{path.name} includes host headers {bad}; kernels must be self-contained"


def test_cupy_backend_kernel_names_exist():
    """Every kernel the CuPy backend may launch is defined in the sources."""
    names = set()
    for path in KERNELS:
        names |= _expand_entries(path.read_text(encoding="utf-8"))
    wanted = []
    for sfx in ("f32", "f64"):
        wanted += [f"lk_relu_{sfx}", f"lk_relu_backward_{sfx}", f"lk_bias_relu_backward_{sfx}"]
        for op in ("bias_relu", "bias_relu_backward_bias", "max_pool2d", "max_pool2d_backward",
                   "avg_pool2d", "avg_pool2d_backward"):
            wanted += [f"lk_{op}_{sfx}", f"lk_{op}_{sfx}_i32"]
        wanted.append(f"lk_bias_grad_{sfx}")
        for op in ("matmul", "linear", "linear_grad_x", "linear_grad_w", "conv2d", "conv2d_grad_w",
                   "conv2d_grad_x"):
            wanted += [f"lk_{op}_{sfx}", f"lk_{op}_s_{sfx}"]  # large and small tile
        wanted += [f"lk_sgd_step_{sfx}", f"lk_adam_step_{sfx}", f"lk_cross_entropy_{sfx}"]
    missing = sorted(set(wanted) - names)
    assert not missing, f"kernels missing from cuda/kernels: {missing}"


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_kernel_sources_compile_standalone_with_nvcc(path, tmp_path):
    """Each .cuh compiles on its own (as NVRTC sees it), and its kernels keep C names."""
    ptx = tmp_path / (path.stem + ".ptx")
    cmd = [NVCC, "-std=c++17", "-arch=sm_90", "-x", "cu", "-ptx", "-o", str(ptx), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    entries = set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx.read_text()))
    expected = _expand_entries(path.read_text(encoding="utf-8"))
    assert expected and expected <= entries, f"mangled or missing entries: {sorted(expected - entries)}"


def test_conv_source_includes_only_gemm_and_leaves_out_its_entries():
    """conv.cuh pulls the GEMM core from gemm.cuh (CuPy adds -I<kernel dir>); with
    LK_GEMM_NO_ENTRIES (cuda/conv.cu, the CuPy conv module) the dense entry points are
    not compiled twice."""
    conv = _strip_comments((ROOT / "cuda" / "kernels" / "conv.cuh").read_text(encoding="utf-8"))
    assert re.findall(r'^\s*#\s*include\s*(\S+)', conv, flags=re.M) == ['"gemm.cuh"']
    gemm = (ROOT / "cuda" / "kernels" / "gemm.cuh").read_text(encoding="utf-8")
    assert "#ifndef LK_GEMM_NO_ENTRIES" in gemm
    assert "#define LK_GEMM_NO_ENTRIES" in (ROOT / "cuda" / "conv.cu").read_text(encoding="utf-8")
    from lepton_kernels import cupy_backend

    assert "-DLK_GEMM_NO_ENTRIES" in cupy_backend._EXTRA_OPTIONS["conv.cuh"]


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
def test_conv_source_without_gemm_entries_compiles(tmp_path):
    src = ROOT / "cuda" / "kernels" / "conv.cuh"
    ptx = tmp_path / "conv_only.ptx"
    cmd = [NVCC, "-std=c++17", "-arch=sm_90", "-DLK_GEMM_NO_ENTRIES", "-I", str(src.parent), "-x", "cu",
           "-ptx", "-o", str(ptx), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    entries = set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx.read_text()))
    assert entries == _expand_entries(src.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- backends without a GPU

def test_native_cuda_backend_reports_instead_of_raising():
    from lepton_kernels import _native_cuda

    reason = _native_cuda.unavailable_reason()
    assert reason is None or isinstance(reason, str)
    if _native_cuda._cu is None:
        assert "not built" in reason
    elif not HAVE_GPU_NODE:
        assert reason is not None and "no CUDA device" in reason


def test_cupy_backend_reports_instead_of_raising():
    from lepton_kernels import cupy_backend

    reason = cupy_backend.unavailable_reason()
    assert reason is None or isinstance(reason, str)
    if not HAVE_GPU_NODE:
        assert reason is not None
    assert (cupy_backend.kernel_dir() / "pool.cuh").is_file()


def test_registry_lists_cuda_backends_without_raising():
    from lepton_kernels import _backend

    report = _backend.backends()
    assert set(report["cuda"]) == {"native", "cupy", "numba"}
    if not HAVE_GPU_NODE:
        assert report["cuda"]["native"].startswith("unavailable")
        assert report["cuda"]["cupy"].startswith("unavailable")


def _lepton_cuda():
    try:
        from lepton_kernels import _lepton_cuda
    except ImportError:
        pytest.skip("_lepton_cuda not built")
    return _lepton_cuda


def test_lepton_cuda_imports_and_queries_without_gpu():
    m = _lepton_cuda()
    count = m.device_count()
    assert isinstance(count, int) and count >= 0
    assert m.runtime_version() > 0
    assert m.driver_version() >= 0
    if not HAVE_GPU_NODE:
        assert count == 0
        assert m.driver_version() == 0
    for i in range(count):
        assert m.device_name(i)
    with pytest.raises(ValueError, match="device_name"):
        m.device_name(count)


def test_lepton_cuda_validates_before_touching_the_device():
    """Bad arguments raise ValueError naming the op, on any machine; nothing launches."""
    m = _lepton_cuda()
    with pytest.raises(ValueError, match="relu: x_ptr is a null pointer"):
        m.relu(0, 0, 10, 0)
    with pytest.raises(ValueError, match="dtype_code"):
        m.relu(8, 8, 10, 2)
    with pytest.raises(ValueError, match="count must be >= 0"):
        m.relu(8, 8, -1, 0)
    with pytest.raises(ValueError, match="bias_ptr"):
        m.bias_relu(8, 0, 8, 2, 3, 4, 0)
    geom = dict(n=1, c=1, h=4, w=4, out_h=2, out_w=2, kernel_h=2, kernel_w=2, stride_h=2, stride_w=2,
                pad_top=0, pad_bottom=0, pad_left=0, pad_right=0, dilation_h=1, dilation_w=1)
    with pytest.raises(ValueError, match="kernel_h must be >= 1"):
        m.max_pool2d(8, 8, 0, **{**geom, "kernel_h": 0}, dtype_code=0)
    with pytest.raises(ValueError, match="pad_left must be >= 0"):
        m.max_pool2d(8, 8, 0, **{**geom, "pad_left": -1}, dtype_code=0)
    with pytest.raises(ValueError, match="out_h = 3 does not match"):
        m.max_pool2d(8, 8, 0, **{**geom, "out_h": 3}, dtype_code=0)
    sizes = dict(n=1, c=1, h=4, w=4, out_h=2, out_w=2)  # max_pool2d_backward takes no geometry
    with pytest.raises(ValueError, match="max_pool2d_backward: indices_ptr"):
        m.max_pool2d_backward(8, 0, 8, **sizes, dtype_code=1)
    with pytest.raises(ValueError, match="max_pool2d_backward: grad_in_ptr"):
        m.max_pool2d_backward(8, 8, 0, **sizes, dtype_code=1)
    with pytest.raises(ValueError, match="max_pool2d_backward: h must be >= 0"):
        m.max_pool2d_backward(8, 8, 8, **{**sizes, "h": -1}, dtype_code=1)
    with pytest.raises(ValueError, match="max_pool2d_backward: a size is >= 2"):
        m.max_pool2d_backward(8, 8, 8, **{**sizes, "out_w": 1 << 31}, dtype_code=1)
    with pytest.raises(ValueError, match="max_pool2d_backward: sizes overflow"):
        m.max_pool2d_backward(8, 8, 8, **{**sizes, "n": 1 << 40, "c": 1 << 40}, dtype_code=1)
    with pytest.raises(ValueError, match="max_pool2d_backward: dtype_code"):
        m.max_pool2d_backward(8, 8, 8, **sizes, dtype_code=3)
    with pytest.raises(TypeError):  # the geometry arguments are gone
        m.max_pool2d_backward(8, 8, 8, **geom, dtype_code=1)
    with pytest.raises(ValueError, match="overflow"):
        m.bias_relu(8, 8, 8, 1 << 40, 1 << 40, 1, 0)
    avg = {k: v for k, v in geom.items() if not k.startswith("dilation")}
    with pytest.raises(ValueError, match="divisor_override"):
        m.avg_pool2d(8, 8, **avg, count_include_pad=True, divisor_override=-1, dtype_code=0)
    # Nothing to compute: returns without touching the device, even without a GPU.
    m.relu(0, 0, 0, 0)
    m.max_pool2d(0, 0, 0, **{**geom, "n": 0}, dtype_code=0)
    # Sizes no pooling geometry could produce are fine: the indices carry the geometry.
    m.max_pool2d_backward(0, 0, 0, n=0, c=3, h=4, w=4, out_h=9, out_w=1, dtype_code=0)
    m.max_pool2d_backward(0, 0, 0, n=2, c=3, h=0, w=4, out_h=0, out_w=5, dtype_code=1)


@pytest.mark.skipif(HAVE_GPU_NODE, reason="checks the no-GPU error path")
def test_lepton_cuda_launch_without_gpu_is_a_runtime_error():
    m = _lepton_cuda()
    with pytest.raises(RuntimeError, match="^relu: "):
        m.relu(16, 16, 4, 0)
    # No geometry check stands in the way: the launch itself is what fails here.
    with pytest.raises(RuntimeError, match="^max_pool2d_backward: "):
        m.max_pool2d_backward(16, 16, 16, n=1, c=2, h=4, w=4, out_h=9, out_w=1, dtype_code=0)


def test_cupy_gemm_plan_mirrors_the_launchers():
    """cupy_backend picks the same tile and grid as cuda/launch.h's gemm_plan."""
    m = _lepton_cuda()
    from lepton_kernels import cupy_backend as cb

    sizes = [1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4096, 65535 * 64 + 1, 10**7]
    for rows in sizes:
        for cols in sizes:
            for groups in (1, 3, 32, 70000):
                for code in (0, 1):
                    native = m.gemm_plan(rows, cols, groups, code)
                    assert native[4] == cb._GEMM_THREADS
                    assert tuple(native[:4]) == cb._gemm_plan(rows, cols, groups, code == 1), (rows, cols, groups, code)
    assert m.GEMM_MAX_DIM == cb._GEMM_MAX_DIM


CONV_GEOM = dict(n=2, c_in=4, h=8, w=8, c_out=6, kernel_h=3, kernel_w=3, out_h=6, out_w=6, stride_h=1,
                 stride_w=1, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0, dilation_h=1, dilation_w=1,
                 groups=2)


def test_lepton_cuda_validates_gemm_and_conv_arguments():
    m = _lepton_cuda()
    with pytest.raises(ValueError, match="matmul: a_ptr is a null pointer"):
        m.matmul(0, 8, 8, 2, 3, 4, 0)
    with pytest.raises(ValueError, match="matmul: m = .* exceeds the GEMM limit"):
        m.matmul(8, 8, 8, 1 << 31, 3, 4, 0)
    with pytest.raises(ValueError, match="linear: k must be >= 0"):
        m.linear(8, 8, 0, 8, 2, -1, 4, False, 0)
    with pytest.raises(ValueError, match="linear: dtype_code"):
        m.linear(8, 8, 0, 8, 2, 3, 4, True, 5)
    with pytest.raises(ValueError, match="linear_backward: w_ptr"):  # grad_x needs w
        m.linear_backward(8, 8, 0, 0, 8, 0, 0, 2, 3, 4, 0)
    with pytest.raises(ValueError, match="linear_backward: x_ptr"):  # grad_w needs x
        m.linear_backward(8, 0, 8, 0, 0, 8, 0, 2, 3, 4, 0)
    g = CONV_GEOM
    for bad, msg in [(dict(groups=3), "groups = 3 must divide"), (dict(out_h=7), "out_h = 7 does not match"),
                     (dict(out_w=5), "out_w = 5 does not match"), (dict(kernel_w=11), "the dilated kernel .* is larger than the padded"),
                     (dict(stride_h=0), "stride_h must be >= 1"), (dict(pad_right=-1), "pad_right must be >= 0"),
                     (dict(dilation_w=0), "dilation_w must be >= 1"), (dict(groups=0), "groups must be >= 1"),
                     (dict(h=1 << 30), "a size.* is >= 2\\^30")]:
        with pytest.raises(ValueError, match="^conv2d: " + msg):
            m.conv2d(8, 8, 0, 8, **{**g, **bad}, relu=False, dtype_code=0)
        with pytest.raises(ValueError, match="conv2d_backward: " + msg):
            m.conv2d_backward(8, 8, 8, 0, 8, 8, 8, **{**g, **bad}, dtype_code=1)
    with pytest.raises(ValueError, match="conv2d: x_ptr is a null pointer"):
        m.conv2d(0, 8, 0, 8, **g, relu=False, dtype_code=0)
    with pytest.raises(ValueError, match="conv2d_backward: grad_out_ptr"):
        m.conv2d_backward(0, 8, 8, 0, 8, 0, 0, **g, dtype_code=0)
    with pytest.raises(ValueError, match="conv2d_backward: w_ptr"):  # grad_x needs the weights
        m.conv2d_backward(8, 8, 0, 0, 8, 0, 0, **g, dtype_code=0)
    with pytest.raises(ValueError, match="exceeds the GEMM limit"):
        m.conv2d(8, 8, 0, 8, **{**g, "n": 1 << 20, "h": 1 << 10, "w": 1 << 10, "out_h": 1 << 10,
                                "out_w": 1 << 10, "kernel_h": 1, "kernel_w": 1}, relu=False, dtype_code=0)
    # Nothing to compute: returns without touching the device, even without a GPU.
    m.matmul(0, 0, 0, 0, 5, 7, 0)
    m.linear(0, 0, 0, 0, 3, 0, 0, True, 1)
    m.conv2d(0, 0, 0, 0, **{**g, "n": 0}, relu=True, dtype_code=0)
    m.conv2d_backward(0, 0, 0, 0, 0, 0, 0, **g, dtype_code=0)  # no gradient asked for
    m.linear_backward(0, 0, 0, 0, 0, 0, 0, 4, 5, 6, 1)


def test_lepton_cuda_validates_optimizer_and_loss_arguments():
    """Every pointer table, count and hyper-parameter is checked before the first launch."""
    m = _lepton_cuda()
    sgd = dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False,
               first_step=False)
    with pytest.raises(ValueError, match="sgd_step: grad_ptrs\\[1\\] is a null pointer"):
        m.sgd_step([8, 8], [8, 0], None, [4, 4], 0, **sgd)
    with pytest.raises(ValueError, match="sgd_step: the lists must have equal lengths"):
        m.sgd_step([8, 8], [8], None, [4, 4], 0, **sgd)
    with pytest.raises(ValueError, match="sgd_step: buf_ptrs are required"):
        m.sgd_step([8], [8], None, [4], 0, **{**sgd, "momentum": 0.9})
    with pytest.raises(ValueError, match="sgd_step: counts\\[0\\] must be >= 0"):
        m.sgd_step([8], [8], None, [-1], 0, **sgd)
    with pytest.raises(ValueError, match="sgd_step: lr must not be NaN"):
        m.sgd_step([8], [8], None, [4], 0, **{**sgd, "lr": float("nan")})
    with pytest.raises(ValueError, match="sgd_step: nesterov"):
        m.sgd_step([8], [8], [8], [4], 0, **{**sgd, "nesterov": True})
    with pytest.raises(ValueError, match="sgd_step: dtype_code"):
        m.sgd_step([8], [8], None, [4], 2, **sgd)
    adam = dict(step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False, amsgrad=False,
                maximize=False)
    with pytest.raises(ValueError, match="adam_step: step must be >= 1"):
        m.adam_step([8], [8], [8], [8], None, [4], 0, **{**adam, "step": 0})
    with pytest.raises(ValueError, match="adam_step: beta2 must be in"):
        m.adam_step([8], [8], [8], [8], None, [4], 0, **{**adam, "beta2": 1.0})
    with pytest.raises(ValueError, match="adam_step: amsgrad=True needs"):
        m.adam_step([8], [8], [8], [8], None, [4], 0, **{**adam, "amsgrad": True})
    with pytest.raises(ValueError, match="adam_step: exp_avg_sq_ptrs\\[0\\] is a null pointer"):
        m.adam_step([8], [8], [8], [0], None, [4], 1, **adam)
    with pytest.raises(ValueError, match="cross_entropy: logits_ptr is a null pointer"):
        m.cross_entropy(0, 8, 0, 8, 0, 2, 3, -100, 0.0, 0)
    with pytest.raises(ValueError, match="cross_entropy: label_smoothing"):
        m.cross_entropy(8, 8, 0, 8, 0, 2, 3, -100, 1.5, 0)
    with pytest.raises(ValueError, match="cross_entropy: sizes overflow"):
        m.cross_entropy(8, 8, 0, 8, 0, 1 << 40, 1 << 40, -100, 0.0, 0)
    # Nothing to compute: returns without touching the device, even without a GPU.
    m.sgd_step([], [], None, [], 0, **sgd)
    m.sgd_step([0, 8], [0, 8], None, [0, 0], 1, **sgd)
    m.adam_step([0], [0], [0], [0], None, [0], 0, **adam)
    m.cross_entropy(0, 0, 0, 0, 0, 0, 5, -100, 0.0, 1)


@pytest.mark.skipif(HAVE_GPU_NODE, reason="checks the no-GPU error path")
def test_lepton_cuda_optimizer_launch_without_gpu_is_a_runtime_error():
    m = _lepton_cuda()
    with pytest.raises(RuntimeError, match="^sgd_step: "):
        m.sgd_step([16], [16], None, [4], 0, 0.1, 0.0, 0.0, 0.0, False, False, False)
    with pytest.raises(RuntimeError, match="^adam_step: "):
        m.adam_step([16], [16], [16], [16], None, [4], 1, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False, False, False)
    with pytest.raises(RuntimeError, match="^cross_entropy: "):
        m.cross_entropy(16, 16, 0, 16, 0, 2, 3, -100, 0.0, 0)


@pytest.mark.skipif(HAVE_GPU_NODE, reason="checks the no-GPU error path")
def test_lepton_cuda_gemm_and_conv_launch_without_gpu_is_a_runtime_error():
    m = _lepton_cuda()
    with pytest.raises(RuntimeError, match="^matmul: "):
        m.matmul(16, 16, 16, 2, 3, 4, 0)
    with pytest.raises(RuntimeError, match="^conv2d: "):
        m.conv2d(16, 16, 0, 16, **CONV_GEOM, relu=True, dtype_code=0)
    with pytest.raises(RuntimeError, match="^conv2d_backward: "):
        m.conv2d_backward(16, 16, 16, 0, 16, 16, 16, **CONV_GEOM, dtype_code=1)
    with pytest.raises(RuntimeError, match="^linear_backward: "):
        m.linear_backward(16, 16, 16, 16, 0, 0, 16, 2, 3, 4, 0)


# ---------------------------------------------------------------- int8 (kernels/quant.cuh)

QUANT_KERNELS = ["lk_quantize_s8", "lk_quantize_u8", "lk_dequantize_s8", "lk_dequantize_u8", "lk_dequantize_s32",
                 "lk_minmax_f32", "lk_dynamic_qparams", "lk_matmul_integer", "lk_conv2d_integer",
                 "lk_qlinear_matmul_s8", "lk_qlinear_matmul_u8", "lk_qlinear_conv2d_s8", "lk_qlinear_conv2d_u8"]


def _define(text: str, name: str) -> int:
    return int(re.search(r"#define\s+" + name + r"\s+(\d+)", text).group(1))


def _constexpr(text: str, name: str) -> int:
    return int(re.search(r"constexpr\s+\w+\s+" + name + r"\s*=\s*(\d+)", text).group(1))


def test_quant_source_kernels_and_launch_constants():
    """Every int8 kernel the CUDA backends launch is in quant.cuh (which includes nothing), CuPy
    compiles that file, and the launch shape constants agree across quant.cuh, launch_quant.h
    and cupy_backend."""
    src = (ROOT / "cuda" / "kernels" / "quant.cuh").read_text(encoding="utf-8")
    assert not re.findall(r"^\s*#\s*include", _strip_comments(src), flags=re.M)
    missing = sorted(set(QUANT_KERNELS) - _expand_entries(src))
    assert not missing, f"kernels missing from quant.cuh: {missing}"
    from lepton_kernels import cupy_backend as cb

    assert "quant.cuh" in cb._SOURCES
    launch = (ROOT / "cuda" / "launch_quant.h").read_text(encoding="utf-8")
    assert _define(src, "LK_QUANT_THREADS") == _constexpr(launch, "kQuantThreads") == cb._QUANT_THREADS
    assert _define(src, "LK_QGEMM_BM") == _define(src, "LK_QGEMM_BN") == _constexpr(launch, "kQgemmTile") \
        == cb._QGEMM_TILE
    assert _constexpr(launch, "kMinmaxBlocks") == cb._MINMAX_BLOCKS
    assert _define(src, "LK_QUANT_THREADS") == 256  # block_minmax's tree and the 64x64 tile assume it


def _nvrtc_wheel_libraries() -> list[Path]:
    """libnvrtc shipped by the nvidia-cuda-nvrtc wheel (the test extra installs it): its lib folder
    is nvidia/cu13/lib (CUDA 13 wheels) or nvidia/cuda_nvrtc/lib (CUDA 12) under site-packages."""
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for root in map(Path, getattr(nvidia, "__path__", [])):
        for lib in ("cu13/lib", "cuda_nvrtc/lib"):
            found += sorted((root / lib).glob("libnvrtc.so*"))
    return [p for p in found if "builtins" not in p.name]


def _preload_nvrtc_wheel():
    """Loads the wheel's libnvrtc globally, so cuda.bindings' dlopen("libnvrtc.so.N") finds it even
    where its own search (cuda-pathfinder, LD_LIBRARY_PATH) does not look in site-packages."""
    import ctypes

    for lib in _nvrtc_wheel_libraries():
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            return
        except OSError:
            continue


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except Exception as exc:  # cuda-bindings not installed
        pytest.skip(f"cuda.bindings.nvrtc not importable ({type(exc).__name__}: {exc})")
    _preload_nvrtc_wheel()
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # libnvrtc itself missing
        pytest.skip(f"libnvrtc not loadable ({type(exc).__name__}: {exc})")
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        pytest.skip(f"nvrtcVersion failed: {err}")
    return nvrtc


def test_nvrtc_wheel_is_found_when_installed():
    """Where the nvidia-cuda-nvrtc wheel is installed (the test extra), the NVRTC compile tests must
    run, not skip: the loader finds the wheel's libnvrtc."""
    if not _nvrtc_wheel_libraries():
        pytest.skip("the nvidia-cuda-nvrtc wheel is not installed")
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    _preload_nvrtc_wheel()
    err, major, _ = nvrtc.nvrtcVersion()  # raises (fails) where _nvrtc() would skip
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS and major >= 12


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_kernel_sources_compile_with_nvrtc(path):
    """The very compiler CuPy uses (NVRTC, no host headers, the backend's options) accepts each
    source; skipped where libnvrtc is not installed (it is a runtime library, no GPU needed)."""
    nvrtc = _nvrtc()
    from lepton_kernels import cupy_backend as cb

    err, prog = nvrtc.nvrtcCreateProgram(path.read_text(encoding="utf-8").encode(), path.name.encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    try:
        options = [o.encode() for o in cb._OPTIONS + (f"-I{path.parent}",) + cb._EXTRA_OPTIONS.get(path.name, ())]
        options.append(b"--gpu-architecture=compute_80")
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        # NVRTC writes into the buffer, so it must be a mutable one: `b" " * 1` (an empty log
        # is one NUL) is CPython's shared one-byte object, and writing into it turned every
        # later b" " in the test process into b"\x00".
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = bytearray(size)
        nvrtc.nvrtcGetProgramLog(prog, log)
        assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
        _, size = nvrtc.nvrtcGetPTXSize(prog)
        ptx = bytearray(size)
        nvrtc.nvrtcGetPTX(prog, ptx)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    entries = set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx.decode(errors="replace")))
    assert _expand_entries(path.read_text(encoding="utf-8")) <= entries


def test_cupy_qgemm_grid_mirrors_the_launchers():
    m = _lepton_cuda()
    from lepton_kernels import cupy_backend as cb

    sizes = [1, 2, 63, 64, 65, 127, 128, 129, 1000, 65535 * 64 + 1, 10**7]
    for rows in sizes:
        for cols in sizes:
            for groups in (1, 3, 70000):
                native = m.qgemm_plan(rows, cols, groups)
                assert native[3] == cb._QUANT_THREADS
                assert tuple(native[:3]) == cb._qgemm_grid(rows, cols, groups), (rows, cols, groups)


INT8_GEOM = dict(CONV_GEOM)


def test_lepton_cuda_validates_int8_arguments():
    """Type codes, zero-point ranges, null pointers and the GEMM / conv limits raise ValueError
    naming the op before anything is launched; empty work returns without a device."""
    m = _lepton_cuda()
    with pytest.raises(ValueError, match="quantize: q_dtype must be 0 \\(int8\\), 1 \\(uint8\\), got 2"):
        m.quantize(8, 8, 8, 8, 1, 1, 4, 2)
    with pytest.raises(ValueError, match="quantize: scale_ptr is a null pointer for 3"):
        m.quantize(8, 0, 8, 8, 2, 3, 4, 0)
    with pytest.raises(ValueError, match="dequantize: q_dtype"):
        m.dequantize(8, 8, 8, 8, 1, 1, 4, 3)
    with pytest.raises(ValueError, match="dequantize: sizes overflow"):
        m.dequantize(8, 8, 8, 8, 1 << 40, 1 << 40, 1, 2)
    with pytest.raises(ValueError, match="dynamic_quantize: q_ptr is a null pointer"):
        m.dynamic_quantize(8, 0, 5)
    with pytest.raises(ValueError, match="matmul_integer: a_zero_point must lie in \\[0, 255\\], got 256"):
        m.matmul_integer(8, 8, 0, 8, 2, 3, 4, 256, 1, 0)
    with pytest.raises(ValueError, match="matmul_integer: a_zero_point must lie in \\[-128, 127\\]"):
        m.matmul_integer(8, 8, 0, 8, 2, 3, 4, 128, 0, 0)
    with pytest.raises(ValueError, match="matmul_integer: b_dtype"):
        m.matmul_integer(8, 8, 0, 8, 2, 3, 4, 0, 0, 2)
    with pytest.raises(ValueError, match="matmul_integer: k = .* exceeds the GEMM limit"):
        m.matmul_integer(8, 8, 0, 8, 2, 1 << 31, 4, 0, 0, 0)
    with pytest.raises(ValueError, match="qlinear_matmul: y_zero_point must lie in \\[-128, 127\\], got 200"):
        m.qlinear_matmul(8, 8, 0, 0, 8, 8, 2, 3, 4, 0, 200, False, 1, 0, 0)
    with pytest.raises(ValueError, match="qlinear_matmul: multiplier_ptr is a null pointer"):
        m.qlinear_matmul(8, 8, 0, 0, 0, 8, 2, 3, 4, 0, 0, True, 1, 0, 1)
    with pytest.raises(ValueError, match="qlinear_matmul: out_dtype"):
        m.qlinear_matmul(8, 8, 0, 0, 8, 8, 2, 3, 4, 0, 0, True, 1, 0, 2)
    g = INT8_GEOM
    with pytest.raises(ValueError, match="^conv2d_integer: groups = 3 must divide"):
        m.conv2d_integer(8, 8, 0, 8, **{**g, "groups": 3}, x_zero_point=0, x_dtype=1, w_dtype=0)
    with pytest.raises(ValueError, match="^conv2d_integer: x_zero_point must lie in \\[0, 255\\], got -1"):
        m.conv2d_integer(8, 8, 0, 8, **g, x_zero_point=-1, x_dtype=1, w_dtype=0)
    with pytest.raises(ValueError, match="^qlinear_conv2d: out_h = 7 does not match"):
        m.qlinear_conv2d(8, 8, 0, 0, 8, 8, **{**g, "out_h": 7}, x_zero_point=0, y_zero_point=0, relu=False,
                         x_dtype=0, w_dtype=0, out_dtype=0)
    with pytest.raises(ValueError, match="^qlinear_conv2d: multiplier_ptr"):
        m.qlinear_conv2d(8, 8, 0, 0, 0, 8, **g, x_zero_point=0, y_zero_point=0, relu=False, x_dtype=0, w_dtype=0,
                         out_dtype=0)
    # Nothing to compute: returns without touching the device, even without a GPU.
    m.quantize(0, 0, 0, 0, 0, 3, 4, 1)
    m.dequantize(0, 0, 0, 0, 2, 0, 4, 2)
    assert m.dynamic_quantize(0, 0, 0) == (0.0, 0)
    m.matmul_integer(0, 0, 0, 0, 0, 5, 7, 3, 1, 0)
    m.qlinear_matmul(0, 0, 0, 0, 0, 0, 3, 5, 0, 0, 0, True, 1, 1, 1)
    m.conv2d_integer(0, 0, 0, 0, **{**g, "n": 0}, x_zero_point=0, x_dtype=0, w_dtype=1)


@pytest.mark.skipif(HAVE_GPU_NODE, reason="checks the no-GPU error path")
def test_lepton_cuda_int8_launch_without_gpu_is_a_runtime_error():
    m = _lepton_cuda()
    with pytest.raises(RuntimeError, match="^quantize: "):
        m.quantize(16, 16, 16, 16, 1, 1, 4, 0)
    with pytest.raises(RuntimeError, match="^dynamic_quantize: "):
        m.dynamic_quantize(16, 16, 4)
    with pytest.raises(RuntimeError, match="^matmul_integer: "):
        m.matmul_integer(16, 16, 0, 16, 2, 3, 4, 0, 1, 0)
    with pytest.raises(RuntimeError, match="^qlinear_conv2d: "):
        m.qlinear_conv2d(16, 16, 0, 0, 16, 16, **INT8_GEOM, x_zero_point=0, y_zero_point=0, relu=True, x_dtype=1,
                         w_dtype=0, out_dtype=1)


# ---------------------------------------------------------------- int8 / uint8 max_pool2d (forward only)

INT8_POOL_KERNELS = ["lk_max_pool2d_u8", "lk_max_pool2d_u8_i32", "lk_max_pool2d_s8", "lk_max_pool2d_s8_i32"]


def test_int8_max_pool_kernels_exist_forward_only_and_are_launched():
    """pool.cuh stamps the four int8 max-pool kernels and no int8 backward / average pooling;
    cuda/pool.cu launches all four; cupy_backend names them for uint8 / int8 max_pool2d only."""
    src = (ROOT / "cuda" / "kernels" / "pool.cuh").read_text(encoding="utf-8")
    names = _expand_entries(src)
    assert set(INT8_POOL_KERNELS) <= names
    assert not [n for n in names if re.search(r"_(u8|s8)(_i32)?$", n) and n not in INT8_POOL_KERNELS]
    launcher = _strip_comments((ROOT / "cuda" / "pool.cu").read_text(encoding="utf-8"))
    assert all(re.search(r"\b" + k + r"\b", launcher) for k in INT8_POOL_KERNELS)
    from lepton_kernels import cupy_backend as cb
    from lepton_kernels._backend import PoolParams

    p = PoolParams(2, 2, 2, 2, 0, 0, 0, 0)
    assert cb._pool_name("max_pool2d", "u1", 1, 2, 4, 4, 2, 2, p) == "lk_max_pool2d_u8_i32"
    assert cb._pool_name("max_pool2d", "i1", 1, 2, 4, 4, 2, 2, p) == "lk_max_pool2d_s8_i32"
    assert cb._pool_name("max_pool2d", "i1", 1, 2, 1 << 31, 4, 1 << 30, 2, p) == "lk_max_pool2d_s8"
    assert cb._pool_name("max_pool2d", "f4", 1, 2, 4, 4, 2, 2, p) == "lk_max_pool2d_f32_i32"
    assert cb._pool_name("max_pool2d", "f8", 1, 2, 4, 4, 2, 2, p) == "lk_max_pool2d_f64_i32"
    for op in ("avg_pool2d", "avg_pool2d_backward", "max_pool2d_backward"):
        for t in ("u1", "i1"):
            with pytest.raises(TypeError):
                cb._pool_name(op, t, 1, 2, 4, 4, 2, 2, p)


class _FakeDeviceArray:
    """Carries a __cuda_array_interface__ only: the pointer is never dereferenced here."""

    def __init__(self, shape, typestr, ptr=4096):
        self.shape = shape
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False),
                                         "strides": None, "version": 3}


def test_cupy_backend_max_pool2d_dispatches_on_dtype(monkeypatch):
    """Which kernel the CuPy backend launches, with its launch replaced by a recorder (no GPU)."""
    from lepton_kernels import cupy_backend as cb
    from lepton_kernels._backend import PoolParams

    launched = []
    monkeypatch.setattr(cb, "_launch", lambda source, name, grid, block, args: launched.append((source, name, args)))
    p = PoolParams(2, 2, 2, 2, 0, 0, 0, 0)
    for t, name in (("|u1", "lk_max_pool2d_u8_i32"), ("|i1", "lk_max_pool2d_s8_i32"),
                    ("<f4", "lk_max_pool2d_f32_i32"), ("<f8", "lk_max_pool2d_f64_i32")):
        launched.clear()
        x, out = _FakeDeviceArray((1, 2, 4, 4), t, 1024), _FakeDeviceArray((1, 2, 2, 2), t, 2048)
        cb.max_pool2d(x, out, None, p)
        cb.max_pool2d(x, out, _FakeDeviceArray((1, 2, 2, 2), "<i8", 4096), p)
        assert [(s, n) for s, n, _ in launched] == [("pool.cuh", name)] * 2
        assert [int(a) for a in launched[0][2][:3]] == [1024, 2048, 0]
        assert [int(a) for a in launched[1][2][:3]] == [1024, 2048, 4096]
    with pytest.raises(TypeError, match="max_pool2d: out must have x's dtype"):
        cb.max_pool2d(_FakeDeviceArray((1, 2, 4, 4), "|u1"), _FakeDeviceArray((1, 2, 2, 2), "|i1"), None, p)
    for call in (lambda: cb.avg_pool2d(_FakeDeviceArray((1, 2, 4, 4), "|u1"), _FakeDeviceArray((1, 2, 2, 2), "|u1"), p),
                 lambda: cb.relu(_FakeDeviceArray((4,), "|i1"), _FakeDeviceArray((4,), "|i1"))):
        with pytest.raises(TypeError):
            call()


def test_native_cuda_max_pool2d_dispatches_on_dtype():
    """_native_cuda sends uint8 / int8 to max_pool2d_int8 and floats to max_pool2d: a geometry the
    binding rejects (before any launch, on any machine) names the entry point that was reached."""
    m = _lepton_cuda()  # skips when not built
    from lepton_kernels import _native_cuda as nc
    from lepton_kernels._backend import PoolParams

    assert nc._cu is m
    p = PoolParams(2, 2, 2, 2, 0, 0, 0, 0)
    bad_out = (1, 2, 3, 2)  # out_h 3 cannot come from this geometry
    for t, entry in (("|u1", "max_pool2d_int8"), ("|i1", "max_pool2d_int8"), ("<f4", "max_pool2d"),
                     ("<f8", "max_pool2d")):
        with pytest.raises(ValueError, match=f"^{entry}: out_h = 3 does not match"):
            nc.max_pool2d(_FakeDeviceArray((1, 2, 4, 4), t), _FakeDeviceArray(bad_out, t), None, p)
        # Nothing to compute (batch 0): returns through the same entry point without a device.
        nc.max_pool2d(_FakeDeviceArray((0, 2, 4, 4), t), _FakeDeviceArray((0, 2, 2, 2), t),
                      _FakeDeviceArray((0, 2, 2, 2), "<i8"), p)
    with pytest.raises(TypeError):
        nc.max_pool2d(_FakeDeviceArray((1, 2, 4, 4), "|u1"), _FakeDeviceArray((1, 2, 2, 2), "|i1"), None, p)
    with pytest.raises(TypeError):
        nc.max_pool2d(_FakeDeviceArray((1, 2, 4, 4), "|u1"), _FakeDeviceArray((1, 2, 2, 2), "<f4"), None, p)
    with pytest.raises(TypeError):
        nc.max_pool2d(_FakeDeviceArray((1, 2, 4, 4), "<f4"), _FakeDeviceArray((1, 2, 2, 2), "|u1"), None, p)
    for call in (lambda: nc.avg_pool2d(_FakeDeviceArray((1, 2, 4, 4), "|u1"), _FakeDeviceArray((1, 2, 2, 2), "|u1"), p),
                 lambda: nc.max_pool2d_backward(_FakeDeviceArray((1, 2, 2, 2), "|i1"),
                                                _FakeDeviceArray((1, 2, 2, 2), "<i8"),
                                                _FakeDeviceArray((1, 2, 4, 4), "|i1"), p),
                 lambda: nc.relu(_FakeDeviceArray((4,), "|u1"), _FakeDeviceArray((4,), "|u1"))):
        with pytest.raises(TypeError):
            call()


def test_lepton_cuda_validates_max_pool2d_int8_arguments():
    m = _lepton_cuda()
    geom = dict(n=1, c=1, h=4, w=4, out_h=2, out_w=2, kernel_h=2, kernel_w=2, stride_h=2, stride_w=2,
                pad_top=0, pad_bottom=0, pad_left=0, pad_right=0, dilation_h=1, dilation_w=1)
    with pytest.raises(ValueError, match="^max_pool2d_int8: x_dtype must be 0 \\(int8\\), 1 \\(uint8\\), got 2"):
        m.max_pool2d_int8(8, 8, 0, **geom, x_dtype=2)
    with pytest.raises(ValueError, match="^max_pool2d_int8: kernel_h must be >= 1"):
        m.max_pool2d_int8(8, 8, 0, **{**geom, "kernel_h": 0}, x_dtype=1)
    with pytest.raises(ValueError, match="^max_pool2d_int8: pad_left must be >= 0"):
        m.max_pool2d_int8(8, 8, 0, **{**geom, "pad_left": -1}, x_dtype=0)
    with pytest.raises(ValueError, match="^max_pool2d_int8: dilation_w must be >= 1"):
        m.max_pool2d_int8(8, 8, 0, **{**geom, "dilation_w": 0}, x_dtype=0)
    with pytest.raises(ValueError, match="^max_pool2d_int8: out_w = 3 does not match"):
        m.max_pool2d_int8(8, 8, 0, **{**geom, "out_w": 3}, x_dtype=1)
    with pytest.raises(ValueError, match="^max_pool2d_int8: a size, kernel"):
        m.max_pool2d_int8(8, 8, 0, **{**geom, "h": 1 << 31}, x_dtype=1)
    with pytest.raises(ValueError, match="^max_pool2d_int8: sizes overflow"):
        m.max_pool2d_int8(8, 8, 0, **{**geom, "n": 1 << 40, "c": 1 << 40}, x_dtype=1)
    with pytest.raises(ValueError, match="^max_pool2d_int8: x_ptr is a null pointer"):
        m.max_pool2d_int8(0, 8, 0, **geom, x_dtype=1)
    with pytest.raises(ValueError, match="^max_pool2d_int8: out_ptr is a null pointer"):
        m.max_pool2d_int8(8, 0, 0, **geom, x_dtype=0)
    with pytest.raises(ValueError, match="^max_pool2d: dtype_code"):  # the float entry point stays float-only
        m.max_pool2d(8, 8, 0, **geom, dtype_code=2)
    # Nothing to compute: returns without touching the device, even without a GPU.
    m.max_pool2d_int8(0, 0, 0, **{**geom, "n": 0}, x_dtype=0)
    m.max_pool2d_int8(0, 0, 0, **{**geom, "c": 0}, x_dtype=1)


@pytest.mark.skipif(HAVE_GPU_NODE, reason="checks the no-GPU error path")
def test_lepton_cuda_max_pool2d_int8_launch_without_gpu_is_a_runtime_error():
    m = _lepton_cuda()
    geom = dict(n=1, c=1, h=4, w=4, out_h=2, out_w=2, kernel_h=2, kernel_w=2, stride_h=2, stride_w=2,
                pad_top=0, pad_bottom=0, pad_left=0, pad_right=0, dilation_h=1, dilation_w=1)
    for code in (0, 1):
        with pytest.raises(RuntimeError, match="^max_pool2d_int8: "):
            m.max_pool2d_int8(16, 16, 0, **geom, x_dtype=code)


# ---------------------------------------------------------------- ptxas resources (sm_90)

def _ptxas_report():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ptxas_report", ROOT / "bench" / "gpu" / "ptxas_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_hot_kernels_do_not_spill_on_sm90(path):
    """ptxas -v for sm_90 (bench/gpu/ptxas_report.py): no hot kernel spills registers to local
    memory, and each kernel is listed in the committed table bench/results/ptxas-sm90.txt."""
    pr = _ptxas_report()
    rows = pr.parse(pr.compile_source(path, "sm_90", NVCC), path.name)
    assert rows, f"no entry functions reported for {path.name}"
    spills = [f"{r['kernel']}: {r['spill_stores']} B stores, {r['spill_loads']} B loads"
              for r in rows if pr.HOT.match(r["kernel"]) and (r["spill_stores"] or r["spill_loads"])]
    assert not spills, "register spills in hot kernels (sm_90):\n" + "\n".join(spills)
    table = (ROOT / "bench" / "results" / "ptxas-sm90.txt").read_text()
    listed = {line.split()[0] for line in table.splitlines() if line and not line.startswith(("#", "kernel "))}
    missing = sorted({r["kernel"] for r in rows} - listed)
    assert not missing, f"run python bench/gpu/ptxas_report.py: {missing} not in bench/results/ptxas-sm90.txt"


def test_ptxas_report_parses_spills():
    """The parser reads ptxas' lines (a spilling kernel is caught, not read as zero)."""
    pr = _ptxas_report()
    text = ("ptxas info    : Compiling entry function 'lk_matmul_f32' for 'sm_90'\n"
            "ptxas info    : Function properties for lk_matmul_f32\n"
            "    24 bytes stack frame, 16 bytes spill stores, 20 bytes spill loads\n"
            "ptxas info    : Used 255 registers, used 1 barriers, 16896 bytes smem, 400 bytes cmem[0]\n")
    (row,) = pr.parse(text, "gemm.cuh")
    assert row == dict(kernel="lk_matmul_f32", source="gemm.cuh", registers=255, stack=24, spill_stores=16,
                       spill_loads=20, smem=16896, barriers=1)
    assert pr.HOT.match("lk_matmul_f32") and pr.HOT.match("lk_qlinear_conv2d_u8")


def test_nvrtc_compiles_leave_the_interpreters_shared_bytes_intact():
    # Runs after the NVRTC compile tests in this file: a library writing into an immutable
    # bytes buffer (the bug above) corrupts CPython's cached one-byte objects for the process.
    assert b" " * 3 == bytes([32, 32, 32]) and b"\x00" == bytes([0])
