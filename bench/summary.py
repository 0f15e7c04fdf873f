"""One row of `bench/run.py`'s closing table: a figure, ours, its baseline, the ratio and the goal.

Each benchmark prints its own detailed table, then one `@@row` line per headline figure; run.py
collects those lines from every script and prints them together, so one run gives one table.
"""

from __future__ import annotations

import json

MARKER = "@@row "


def row(figure: str, ours: float, baseline: float, unit: str, goal: str, *, baseline_name: str) -> None:
    """Print one headline figure; the ratio is ours / baseline (lower is better unless the goal says otherwise)."""
    print(MARKER + json.dumps({"figure": figure, "ours": ours, "baseline": baseline, "unit": unit, "goal": goal,
                               "baseline_name": baseline_name, "ratio": ours / baseline if baseline else None}),
          flush=True)
