"""Fuzz target: ``lk.load`` on mutated model files (safetensors with a lepton_kernels header).

The input bytes are written to a file and loaded. Documented outcomes: a model or state dict,
or ``ValueError`` (``ModelFileError``). Anything else (RecursionError, MemoryError, another
exception, a crash) is a finding; so is a load that takes long or allocates far more than the
file (libFuzzer's -timeout and -rss_limit_mb in .ci/fuzz).

    python tests/fuzz/fuzz_load.py -max_total_time=30 tests/fuzz/corpus/fuzz_load
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzlib import fuzz_main, instrumented_import  # noqa: E402

lk = instrumented_import()

ALLOWED = (ValueError,)
_DIR = Path(tempfile.mkdtemp(prefix="lk-fuzz-load-"))


def check(data: bytes) -> None:
    path = _DIR / "model.safetensors"
    path.write_bytes(data)
    try:
        lk.load(path)
    except ALLOWED:
        pass


if __name__ == "__main__":
    fuzz_main(check)
