#!/usr/bin/env bash
# bench/gpu/run.sh -- build, test and benchmark lepton_kernels on a CUDA machine,
# and write a dated report: <out>/gpu-<YYYY-MM-DD>-<device>.md
#
# Usage: bench/gpu/run.sh [info] [build] [test] [bench]      (default: all four)
#
# Needs (no network): Python with numpy, numba, cupy, torch, pybind11,
# scikit-build-core, cmake and nvcc already installed. Steps:
#   info   nvidia-smi, versions
#   build  LEPTON_CUDA=ON pip install --no-build-isolation --no-deps . (CUDAARCHS
#          defaults to this card's compute capability to keep the build short;
#          set CUDAARCHS="80-real;86-real;89-real;90" for the shipped set)
#   test   pytest -m gpu tests  +  tests/test_cuda_sources.py
#   bench  lepton-kernels bench --backends native,cupy,numba --device cuda --json ...
# Each step's output goes to <out>/gpu-<date>-<device>-logs/<step>.log, and the
# report is rebuilt from every log there, so the steps may run in separate calls
# (e.g. "run.sh info build test" then "run.sh bench") and still give one report.
# Output directory: $OUT_DIR, else $OUT (the device runner collects it), else
# bench/results. Keeps going after a failing step; exits 1 if any step failed.
# Environment: PYTHON (default python3 or python), STEP_TIMEOUT seconds per step
# (default 1800), BENCH_ARGS extra arguments for the bench (e.g. "--quick").
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-$(command -v python3 || command -v python)}"
STEP_TIMEOUT="${STEP_TIMEOUT:-1800}"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(info build test bench)

DATE="$(date -u +%Y-%m-%d)"
GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"
DEVICE="$(printf '%s' "${GPU_NAME:-no-gpu}" | tr -cs 'A-Za-z0-9._' '-' | sed 's/^-*//; s/-*$//')"
OUT_BASE="${OUT_DIR:-${OUT:-$ROOT/bench/results}}"
LOGS="$OUT_BASE/gpu-$DATE-$DEVICE-logs"
REPORT="$OUT_BASE/gpu-$DATE-$DEVICE.md"
mkdir -p "$LOGS" || exit 2

FAILED=0

# run_step NAME CMD...: log to $LOGS/NAME.log, record the exit status, never abort.
run_step() {
  local name="$1"
  shift
  echo "== $name: $*" >&2
  local start end rc
  start=$(date +%s)
  { echo "\$ $*"; timeout "$STEP_TIMEOUT" "$@"; } >"$LOGS/$name.log" 2>&1
  rc=$?
  end=$(date +%s)
  echo "$rc $((end - start))" >"$LOGS/$name.status"
  if [ "$rc" -ne 0 ]; then
    FAILED=1
    echo "!! $name failed (exit $rc); see $LOGS/$name.log" >&2
    tail -n 25 "$LOGS/$name.log" >&2
  fi
  return 0
}

step_info() {
  run_step nvidia-smi nvidia-smi
  run_step versions "$PY" - <<'EOF'
import importlib, platform, subprocess, sys
print("python", sys.version.split()[0], platform.platform())
for mod in ("numpy", "numba", "cupy", "torch", "pybind11", "scikit_build_core"):
    try:
        print(mod, importlib.import_module(mod).__version__)
    except Exception as exc:
        print(mod, "unavailable:", exc)
try:
    print(subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1])
except Exception as exc:
    print("nvcc unavailable:", exc)
try:
    import torch
    print("torch.cuda", torch.version.cuda, torch.cuda.is_available())
except Exception:
    pass
EOF
}

step_build() {
  if [ -z "${CUDAARCHS:-}" ]; then
    local cc
    cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')"
    [ -n "$cc" ] && export CUDAARCHS="$cc"
  fi
  run_step build env LEPTON_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps --no-index -v .
  run_step backends "$PY" - <<'EOF'
import json
import lepton_kernels
from lepton_kernels import _backend
print("lepton_kernels", lepton_kernels.__version__, "from", lepton_kernels.__file__)
report = _backend.backends()
print(json.dumps(report, indent=2))
try:
    from lepton_kernels import _lepton_cuda as m
    print("devices:", [m.device_name(i) for i in range(m.device_count())],
          "runtime", m.runtime_version(), "driver", m.driver_version())
except Exception as exc:
    print("_lepton_cuda:", type(exc).__name__, exc)
missing = [name for name, status in report["cuda"].items() if status != "available"]
raise SystemExit(f"unavailable CUDA backends: {missing}" if missing else 0)
EOF
}

step_test() {
  run_step test-gpu "$PY" -m pytest -m gpu "$ROOT/tests" -rfEs -q -p no:cacheprovider \
    --junitxml="$LOGS/test-gpu.xml"
  run_step test-cuda-sources "$PY" -m pytest "$ROOT/tests/test_cuda_sources.py" -rfEs -q -p no:cacheprovider
}

step_bench() {
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
  run_step bench "$PY" -m lepton_kernels bench --backends native,cupy,numba --device cuda \
    --json "$LOGS/bench.json" --no-progress ${BENCH_ARGS:-}
  if [ -f "$LOGS/bench.status" ] && [ "$(cut -d' ' -f1 "$LOGS/bench.status")" != 0 ]; then
    echo "!! the bench CLI failed: the report keeps its output; build/test results are unaffected" >&2
  fi
}

for step in "${STEPS[@]}"; do
  case "$step" in
    info) step_info ;;
    build) step_build ;;
    # Tests and benchmarks run from a scratch directory so that the installed
    # package (with its compiled modules) is imported, not the source tree.
    test) cd "${TMPDIR:-/tmp}" && step_test; cd "$ROOT" ;;
    bench) cd "${TMPDIR:-/tmp}" && step_bench; cd "$ROOT" ;;
    *) echo "unknown step '$step' (info, build, test, bench)" >&2; FAILED=1 ;;
  esac
done

# ---------------------------------------------------------------- report
section() {  # section TITLE LOG [tail-lines]
  local title="$1" log="$LOGS/$2.log" lines="${3:-}"
  echo
  echo "## $title"
  echo
  if [ ! -f "$log" ]; then
    echo "_not run_"
    return
  fi
  echo '```'
  if [ -n "$lines" ]; then tail -n "$lines" "$log"; else cat "$log"; fi
  echo '```'
}

status_row() {
  local name="$1" st="$LOGS/$1.status"
  if [ -f "$st" ]; then
    read -r rc secs <"$st"
    if [ "$rc" = 0 ]; then echo "| $name | ok | ${secs}s |"; else echo "| $name | **FAILED (exit $rc)** | ${secs}s |"; fi
  else
    echo "| $name | not run | |"
  fi
}

{
  echo "# lepton_kernels on ${GPU_NAME:-an unknown GPU} -- $DATE"
  echo
  echo "- commit: \`$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- host: \`$(uname -srm)\`, $(nproc 2>/dev/null || echo '?') CPU threads"
  echo "- written by \`bench/gpu/run.sh\` at $(date -u +%H:%M:%SZ)"
  echo
  echo "| step | status | time |"
  echo "|---|---|---|"
  for name in nvidia-smi versions build backends test-gpu test-cuda-sources bench; do status_row "$name"; done
  section "nvidia-smi" nvidia-smi
  section "Versions" versions
  section "Backends" backends
  echo
  echo "## GPU tests (pytest -m gpu)"
  echo
  if [ -f "$LOGS/test-gpu.log" ]; then
    echo '```'
    # The summary block (failures, errors, skips) and the final count line.
    if grep -q "short test summary info" "$LOGS/test-gpu.log"; then
      awk '/short test summary info/{p=1} p' "$LOGS/test-gpu.log" | tail -n 200
    else
      tail -n 3 "$LOGS/test-gpu.log"
    fi
    echo '```'
  else
    echo "_not run_"
  fi
  section "Source checks (tests/test_cuda_sources.py)" test-cuda-sources 15
  section "Benchmarks (lepton-kernels bench --device cuda)" bench
  [ -f "$LOGS/bench.json" ] && printf '\nRaw timings: `%s`\n' "$(basename "$LOGS")/bench.json"
  if [ -f "$LOGS/build.status" ] && [ "$(cut -d' ' -f1 "$LOGS/build.status")" != 0 ]; then
    section "Build log (last 80 lines)" build 80
  fi
} >"$REPORT"

echo "report: $REPORT" >&2
exit "$FAILED"
