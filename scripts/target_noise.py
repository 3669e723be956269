"""How noisy is the 4-step target? Verdicts of ``scripts/reflow_report.py`` across noise draws.

The target compares a student's eval on a few dozen backbones with the teacher's on the same noise; the
teacher's own values move between noise draws. Given the ``report.json`` of several reports that differ
only in ``--seed`` (the noise draw), this prints

* for every ordered pair of draws ``(i, j)``: does the teacher's ``--ref-steps`` eval on draw ``i`` meet
  the target set by the teacher on draw ``j`` (the same sampler against itself, on other noise)?
* for every model of the reports and every draw: its verdict and missed metrics (4 steps, uniform grid).

A target that the teacher misses against itself on other noise cannot separate a student from the
teacher at that sample size.

    python scripts/target_noise.py outputs/s17/seed0 outputs/s17/seed1 outputs/s17/seed2 outputs/s17/seed3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path


def _report_module():
    """``scripts/reflow_report.py`` (its target rule), loaded from beside this file."""
    path = Path(__file__).resolve().parent / "reflow_report.py"
    spec = importlib.util.spec_from_file_location("reflow_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def misses(report, metrics: dict, teacher: dict) -> list[str]:
    """The metrics of ``metrics`` outside the target set by the teacher eval ``teacher``."""
    return [
        f"{k} {metrics[k]:.3f} vs {teacher[k]:.3f}"
        for k in report.missed_keys(metrics, teacher, report.TARGET_KEYS)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("reports", type=Path, nargs="+", help="report folders (report.json), one per draw")
    args = parser.parse_args()
    report = _report_module()
    draws = {}
    for folder in args.reports:
        path = folder / "report.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no report.json (run scripts/reflow_report.py --out {folder} first)")
        data = json.loads(path.read_text())
        if not data.get("teacher_ref"):
            raise SystemExit(f"{path}: the report has no teacher eval (made with --no-eval)")
        draws[f"seed {data['args']['seed']}"] = data
    print("## The teacher against itself on other noise\n")
    count = 0
    for i, di in draws.items():
        for j, dj in draws.items():
            if i != j:
                miss = misses(report, di["teacher_ref"], dj["teacher_ref"])
                count += not miss
                print(
                    f"- teacher on {i} vs target of {j}: "
                    + ("MET" if not miss else "MISSED " + "; ".join(miss))
                )
    pairs = len(draws) * (len(draws) - 1)
    print(f"\nmet in {count} of {pairs} ordered pairs\n\n## Models at 4 steps (uniform grid)\n")
    labels = [
        r["model"] for r in next(iter(draws.values()))["rows"] if r["steps"] == 4 and r["model"] != "teacher"
    ]
    for label in dict.fromkeys(labels):
        verdicts = []
        met = measured = 0
        for name, data in draws.items():
            row = next(
                (r for r in data["rows"] if (r["model"], r["steps"], r["grid"]) == (label, 4, "uniform")),
                None,
            )
            if row is None:
                verdicts.append(f"{name}: -")
                continue
            miss = misses(report, row, data["teacher_ref"])
            measured += 1
            met += not miss
            verdicts.append(f"{name}: " + ("MET" if not miss else "MISSED " + "; ".join(miss)))
        print(f"- {label}: met on {met} of {measured} draws | " + " | ".join(verdicts))


if __name__ == "__main__":
    main()
