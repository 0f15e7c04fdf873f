"""The full load-and-abuse run: every attack of the abuse suite at its full budget, one table at the end.

    python bench/abuse.py            # full budget: races 20 s each, 16 sessions x 600 calls, 2,000 fuzzed
                                     # calls, every hostile factory against three tools (~10 min)
    python bench/abuse.py --bounded  # the budget CI runs (~1 min)

It runs the abuse tests themselves (tests/test_abuse.py, tests/test_path_races.py, tests/test_sandbox.py)
with ML_DEBUG_MCP_ABUSE=full, collects the rows each attack records (tests/abuse.py), and prints them:
attempts, bad outcomes, and what was measured. It exits non-zero when any test failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITE = ["tests/test_abuse.py", "tests/test_path_races.py", "tests/test_sandbox.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bounded", action="store_true", help="the CI budget instead of the full one")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "abuse.jsonl"
        env = {**os.environ, "ML_DEBUG_MCP_ABUSE_REPORT": str(report)}
        if not args.bounded:
            env["ML_DEBUG_MCP_ABUSE"] = "full"
        code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "3600",
                               *SUITE], cwd=REPO, env=env).returncode
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    print_table(rows, "full" if not args.bounded else "bounded", args.markdown)
    return code


def print_table(rows: list[dict], budget: str, markdown: bool) -> None:
    total_bad = sum(r["bad"] for r in rows)
    print(f"\nabuse run ({budget} budget): {len(rows)} attacks, {sum(r['attempts'] for r in rows):,} attempts, "
          f"{total_bad} bad outcomes")
    if markdown:
        print("\n| attack | attempts | bad outcomes | measured |\n|---|---:|---:|---|")
        for r in rows:
            print(f"| {r['attack']} | {r['attempts']:,} | {r['bad']} | {r['detail']} |")
        return
    width = max((len(r["attack"]) for r in rows), default=10)
    print(f"{'attack':<{width}}  {'attempts':>8}  {'bad':>4}  measured")
    for r in rows:
        print(f"{r['attack']:<{width}}  {r['attempts']:>8,}  {r['bad']:>4}  {r['detail']}")


if __name__ == "__main__":
    sys.exit(main())
