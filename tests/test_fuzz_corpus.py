"""Replays every committed fuzz corpus file (tests/fuzz/corpus/<target>/) through its target's
check function, without atheris: the seeds and every regression input found by fuzzing stay
covered by the normal suite (and by the sanitizer run, .ci/sanitize).

A check raises on a finding: an exception other than the target's documented ones, an input
modified by an op, a result that changes with the memory layout of an input.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
TARGETS = ("fuzz_binding", "fuzz_load", "fuzz_readers")
sys.path.insert(0, str(FUZZ_DIR))


def _corpus(target: str) -> list[Path]:
    return sorted((FUZZ_DIR / "corpus" / target).glob("*"))


def _target(name: str):
    return importlib.import_module(name)


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_has_a_seed_corpus(target):
    files = _corpus(target)
    assert len(files) >= 3, f"tests/fuzz/corpus/{target}: run python tests/fuzz/make_corpus.py"
    assert sum(p.stat().st_size for p in files) < 64 * 1024, "keep the committed corpus small"


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_without_findings(target):
    check = _target(target).check
    findings = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN/inf casts in the fuzzed values
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        for path in _corpus(target):
            try:
                check(path.read_bytes())
            except Exception as exc:  # noqa: BLE001 - every finding is listed
                findings.append(f"{path.name}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not findings, f"{len(findings)} corpus inputs fail:\n" + "\n".join(findings)


def test_seeds_reach_the_ops():
    """The binding seeds decode to calls that succeed (not only to early refusals): each valid case
    of mode 0 runs its op, so the fuzzer starts from inside the kernels."""
    fb = _target("fuzz_binding")
    ran = []
    original = fb._run_case

    def record(case, arrays):
        result = original(case, arrays)
        ran.append((case.name, result is not None))
        return result

    fb._run_case = record
    try:
        for path in _corpus("fuzz_binding"):
            if path.name.startswith("seed-layout-"):
                fb.check(path.read_bytes())
    finally:
        fb._run_case = original
    succeeded = {name for name, ok in ran if ok}
    assert succeeded == set(fb.CASE_NAMES), sorted(set(fb.CASE_NAMES) - succeeded)


def test_reader_seeds_are_read():
    """The reader seeds are valid files of each format: each reads without an error."""
    fr = _target("fuzz_readers")
    from fuzzlib import Bytes

    have_pillow = importlib.util.find_spec("PIL") is not None
    for path in _corpus("fuzz_readers"):
        if path.name.startswith("seed-folder") and not have_pillow:
            continue  # image folders need Pillow (the image extra)
        if path.name.startswith("seed-"):
            b = Bytes(path.read_bytes())
            result = fr._read(b, fr.READERS[b.below(len(fr.READERS))])
            assert result is not None, path.name
