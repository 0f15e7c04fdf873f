"""watch_run's judgement replayed on every tiny training run, and what one poll costs.

    python bench/eval_watch.py [--quick]

Each run of tests/training_runs.py is written to a JSON-lines log record by record, and the watch
reads the file every `--every` records (the real `Reader` and alarm rule), as it would poll a job
that writes at that pace. Printed per run: the first alarm (failure, at which record, of how many),
or quiet; then healthy false alarms, detections of the early warnings watch_run is for, and how early
they came (share of the run still to go). Poll cost: one poll (parse + every detector) against
parsing alone (`parse_metrics`, the baseline) on the same file, at two sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import training_runs as tr  # noqa: E402
from ml_debug_mcp.core.diagnosis.watch import Reader, alarms_of  # noqa: E402
from ml_debug_mcp.core.logs.metrics import parse_metrics  # noqa: E402

EARLY_WARNINGS = {"rl_entropy_collapse": "mode_collapse", "rl_kl_inactive": "mode_collapse",
                  "rl_gibberish": "mode_collapse", "clipped_every_step": "exploding_gradients",
                  "rank_collapse": "rank_collapse"}


def replay(name: str, folder: Path, every: int) -> tuple[str | None, int, int]:
    """(first alarm's failure or None, record it fired at, run length) for one run polled every `every` records."""
    records = tr.run(name).records
    log = folder / f"{name}.jsonl"
    log.write_text("")
    reader = Reader(log)
    with log.open("a") as fh:
        for i, record in enumerate(records, 1):
            fh.write(json.dumps(record) + "\n")
            if i % every and i != len(records):
                continue
            fh.flush()
            snap = reader.read()
            alarms = alarms_of(snap.diagnosis, (), snap.first_step, snap.records)
            if alarms:
                return alarms[0].failure, i, len(records)
    return None, len(records), len(records)


def poll_cost(folder: Path, lines: int, repeats: int) -> tuple[float, float]:
    """(median ms of one watch poll, median ms of parse_metrics alone) on a log of `lines` records."""
    records = tr.run("healthy").records
    log = folder / f"cost_{lines}.jsonl"
    with log.open("w") as fh:
        for i in range(lines):
            fh.write(json.dumps({**records[i % len(records)], "step": i + 1}) + "\n")

    def median_ms(call) -> float:
        call()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    return median_ms(lambda: Reader(log).read()), median_ms(lambda: parse_metrics(log))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--every", type=int, default=5, help="records between two polls")
    args = p.parse_args()
    names = sorted(tr.RUNS)
    healthy = [n for n in names if tr.run(n).failure == "healthy"]
    false_alarms, detected, lead = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{'run':28} {'label':22} watch (poll every {args.every} records)")
        for name in names:
            failure, at, length = replay(name, folder, args.every)
            verdict = f"{failure} at record {at}/{length}" if failure else f"quiet ({length} records)"
            print(f"{name:28} {tr.run(name).failure:22} {verdict}")
            if name in healthy and failure:
                false_alarms.append(name)
            if name in EARLY_WARNINGS and failure == EARLY_WARNINGS[name]:
                detected.append(name)
                lead.append(1 - at / length)
        print(f"\nhealthy runs with an alarm: {len(false_alarms)}/{len(healthy)} {false_alarms or ''}")
        print(f"early warnings caught: {len(detected)}/{len(EARLY_WARNINGS)}; share of the run still to go when "
              f"they fired: median {statistics.median(lead) if lead else 0:.0%}, min {min(lead) if lead else 0:.0%}")
        sizes = (300, 5000) if args.quick else (300, 20000)
        for lines in sizes:
            poll, parse = poll_cost(folder, lines, repeats=3 if args.quick else 7)
            print(f"one poll on {lines} records: {poll:.1f} ms, parsing alone {parse:.1f} ms ({poll / parse:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
