"""classify_failure on the labelled evaluation set: accuracy report plus cost against parsing.

    python bench/eval_classify.py [--split test|dev|regression] [--quick] [--json] [--root tests/eval]

Prints, for the split (default: the sealed real-world test split), top-1 accuracy from log_path and
from error_text, per-class precision/recall, the healthy false-alarm rate, calibration (ECE and
accuracy per confidence band), the confusion matrix and every miss, and the same figures for a
keyword-grep baseline (core.diagnosis.evaluate). Then, for each regression-set log case, it times
`classify_path` against `parse_metrics` of the same file in the same run (the parse is the
baseline, since classify must parse first): what diagnosis adds on top of reading the log.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from ml_debug_mcp.core.diagnosis.classify import classify_path
from ml_debug_mcp.core.diagnosis.evaluate import evaluate_split, format_split_report, load_cases
from ml_debug_mcp.core.logs.metrics import parse_metrics
from summary import row  # noqa: E402  (bench/ is on sys.path when a script runs)

ROOT = Path(__file__).resolve().parent.parent / "tests" / "eval"


def _best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cost_ratios(root: Path, repeat: int) -> list[tuple[str, float, float]]:
    """(case id, classify seconds, parse seconds) for every case with a log file."""
    rows = []
    for case in load_cases(root):
        if not case.log:
            continue
        path = case.resolve(case.log)
        parse_metrics(path)  # warm caches and lazy imports outside the timing
        classify_path(path)
        fmt = case.format
        parse = _best_of(lambda p=path, f=fmt: parse_metrics(p, fmt=f), repeat)
        full = _best_of(lambda p=path, f=fmt: classify_path(p, fmt=f), repeat)
        rows.append((case.id, full, parse))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--quick", action="store_true", help="time each log once instead of best of 5")
    ap.add_argument("--json", action="store_true", help="print the full report as JSON")
    ap.add_argument("--split", choices=("test", "dev", "regression"), default="test")
    args = ap.parse_args()
    report = evaluate_split(args.root, args.split)
    if args.json:
        print(json.dumps(report.model_dump(), indent=1))
        return 0
    print(format_split_report(report))
    if len(report.reports) == 3:
        log, _, base = report.reports
        row(f"classify_failure top-1, {args.split} split", log.top1_accuracy, base.top1_accuracy, "",
            ">= 0.9, +25 points (higher is better)", baseline_name="keyword grep")
    rows = cost_ratios(args.root, 1 if args.quick else 5)
    if rows:
        ratios = [full / max(parse, 1e-9) for _, full, parse in rows]
        slowest = max(rows, key=lambda r: r[1])
        print(f"\nclassify_path / parse_metrics on {len(rows)} logs: median ratio {statistics.median(ratios):.2f}x, "
              f"max {max(ratios):.2f}x; slowest classify {1000 * slowest[1]:.0f} ms ({slowest[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
