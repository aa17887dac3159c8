"""Before/after table of two ``lepton-kernels bench --json`` runs (e.g. two builds on one machine).

For every case of the first run: each run's lepton median and its baseline's (torch,
else numpy) median from the same run, and the change of lepton's speed-up over that
baseline (after / before): a ratio measured within each run, so a machine that is
faster or slower in one of the runs does not show up as a change.

Run: ``python bench/compare_runs.py BEFORE.json AFTER.json [--impl native]``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics


def _medians(path, impl):
    """{case: (lepton median s, baseline median s or None, baseline name)}"""
    results = json.load(open(path))["results"]
    lepton = {r["case"]: statistics.median(r["times_s"]) for r in results if r["impl"] == impl and r["times_s"]}
    baselines = {}
    for r in results:
        if r["kind"] != "lepton" and r["times_s"] and r["impl"] in ("torch", "numpy"):
            baselines.setdefault(r["case"], (r["impl"], statistics.median(r["times_s"])))
    return {case: (t, *(baselines.get(case, (None, None))[::-1])) for case, t in lepton.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--impl", default="native")
    args = parser.parse_args(argv)
    before, after = _medians(args.before, args.impl), _medians(args.after, args.impl)
    print(f"{'case':44s} {'before ms':>10s} {'base ms':>9s} {'after ms':>9s} {'base ms':>9s} "
          f"{'x base before':>13s} {'x base after':>12s} {'change':>7s}")
    changes = []
    for case, (t0, b0, name) in before.items():
        if case not in after:
            continue
        t1, b1, _ = after[case]
        row = f"{case:44s} {t0 * 1e3:10.3f} {(b0 or math.nan) * 1e3:9.3f} {t1 * 1e3:9.3f} {(b1 or math.nan) * 1e3:9.3f}"
        if b0 and b1:
            change = (b1 / t1) / (b0 / t0)
            changes.append(change)
            row += f" {b0 / t0:13.2f} {b1 / t1:12.2f} {change:7.2f}"
        print(row)
    if changes:
        print(f"geomean change of the speed-up over the same-run baseline: "
              f"{math.exp(statistics.fmean(math.log(c) for c in changes)):.3f} over {len(changes)} cases "
              f"(min {min(changes):.2f}, max {max(changes):.2f})")


if __name__ == "__main__":
    main()
