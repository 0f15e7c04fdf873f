"""Draw the sealed test split of the real-world corpus (run once, before any tuning).

    python tests/eval/realworld/split.py raw/*.jsonl   # writes dev.jsonl, test.jsonl, test.sha256

Excerpts from one source thread stay together (a thread's failing log and its fixed re-run must
not sit on both sides). Within each label, threads are ordered by sha256(SEED + thread) and the
first 35% (at least one) go to the test split: a seeded random draw that gives the same answer
whatever the input order, so re-running it on dev + test reproduces the split exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

SEED = "ml-debug-mcp/realworld/2026-12-04"
TEST_SHARE = 0.35
HERE = Path(__file__).resolve().parent
LABELS = {"nan_loss", "divergence", "loss_spike", "exploding_gradients", "vanishing_gradients", "plateau",
          "slow_convergence", "hockey_stick", "overfitting", "oom", "shape_mismatch", "graph_reuse",
          "device_mismatch", "dtype_mismatch", "cuda_assert", "distributed_hang", "slow_throughput",
          "mode_collapse", "rank_collapse", "healthy"}
KEYS = ("id", "label", "accept", "framework", "source_url", "paste_style", "text", "notes")


def thread_of(url: str) -> str:
    return url.split("#")[0].rstrip("/").lower()


def load(paths: list[Path]) -> list[dict]:
    cases, seen_text, seen_id = [], set(), set()
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            case = json.loads(line)
            where = f"{path.name}:{n}"
            missing = [k for k in ("id", "label", "source_url", "text", "framework") if not case.get(k)]
            if missing or case["label"] not in LABELS or not set(case.get("accept") or []) <= LABELS:
                raise SystemExit(f"{where}: bad case (missing {missing} or unknown label)")
            if case["id"] in seen_id or case["text"].strip() in seen_text:
                print(f"skipped duplicate {case['id']} ({where})", file=sys.stderr)
                continue
            seen_id.add(case["id"])
            seen_text.add(case["text"].strip())
            cases.append({k: case.get(k, [] if k == "accept" else "") for k in KEYS})
    return cases


def split(cases: list[dict]) -> tuple[list[dict], list[dict]]:
    threads: dict[str, list[dict]] = defaultdict(list)
    for case in cases:
        threads[thread_of(case["source_url"])].append(case)
    by_label: dict[str, list[str]] = defaultdict(list)
    for thread, members in threads.items():
        counts = Counter(c["label"] for c in members)
        label = min(counts, key=lambda name: (-counts[name], name))  # ties broken by name: order-free
        by_label[label].append(thread)
    test_threads = set()
    for label, names in by_label.items():
        names.sort(key=lambda t: hashlib.sha256(f"{SEED}/{t}".encode()).hexdigest())
        test_threads |= set(names[:max(1, math.ceil(TEST_SHARE * len(names)))])
    dev = [c for c in cases if thread_of(c["source_url"]) not in test_threads]
    test = [c for c in cases if thread_of(c["source_url"]) in test_threads]
    return sorted(dev, key=lambda c: c["id"]), sorted(test, key=lambda c: c["id"])


def write(path: Path, cases: list[dict]) -> None:
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")


def main(argv: list[str]) -> int:
    dev, test = split(load([Path(a) for a in argv]))
    write(HERE / "dev.jsonl", dev)
    write(HERE / "test.jsonl", test)
    digest = hashlib.sha256((HERE / "test.jsonl").read_bytes()).hexdigest()
    (HERE / "test.sha256").write_text(f"{digest}  test.jsonl\n")
    for name, part in (("dev", dev), ("test", test)):
        print(name, len(part), dict(sorted(Counter(c["label"] for c in part).items())))
    print("frameworks:", len({c["framework"].lower() for c in dev + test}), " test sha256:", digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
