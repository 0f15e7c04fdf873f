"""Run every benchmark in bench/ and print one table of ours, the baseline and the ratio: `python bench/run.py`.

    python bench/run.py [--quick] [--markdown]

Each script's own output streams through; the `@@row` lines they print (bench/summary.py) are
collected into the closing table, so one run gives every headline figure against a baseline
measured in the same run. `--markdown` prints that table for the README, with the date and machine.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from summary import MARKER

HERE = Path(__file__).resolve().parent


def run_script(script: Path, extra: list[str]) -> tuple[int, list[dict]]:
    rows = []
    with subprocess.Popen([sys.executable, str(script), *extra], stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if line.startswith(MARKER):
                rows.append(json.loads(line[len(MARKER):]))
            else:
                print(line, end="", flush=True)
    return proc.returncode, rows


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(rows: list[dict], markdown: bool) -> str:
    header = ("figure", "ours", "baseline", "ratio", "goal")
    body = [(r["figure"], f"{_num(r['ours'])} {r['unit']}", f"{_num(r['baseline'])} {r['unit']} ({r['baseline_name']})",
             "-" if r["ratio"] is None else f"{r['ratio']:.2f}x", r["goal"]) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) for cells in [header, *body])


def main() -> int:
    markdown = "--markdown" in sys.argv
    extra = [a for a in sys.argv[1:] if a != "--markdown"]
    failed, rows = [], []
    for script in sorted(HERE.glob("bench_*.py")) + sorted(HERE.glob("eval_*.py")):
        print(f"\n=== {script.name} {' '.join(extra)}", flush=True)
        code, found = run_script(script, extra)
        rows += found
        if code != 0:
            failed.append(script.name)
    when = datetime.date.today().isoformat()
    print(f"\n=== summary: {when}, {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
          f"{' (--quick)' if '--quick' in extra else ''}\n")
    print(table(rows, markdown))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
