"""Whole-file metric extraction: core.metrics.parse_metrics against `grep -c loss`, same files.

    python bench/bench_metrics.py [--quick]

Two kinds of log, each at two sizes (256 MiB and 1 GiB; --quick: 32 MiB and 128 MiB), written
into a temp dir and deleted afterwards:
- realistic: the two-rank torchrun log of bench_tail.py (metric lines, eval lines, INFO and
  WARNING lines, tqdm progress rewritten with carriage returns);
- dense: nothing but nanoGPT `iter N: loss ...` lines, the worst case for a parser.
Each parse runs in a fresh subprocess that reports its wall time and peak RSS
(ru_maxrss); the peak of a subprocess that only imports the library and parses a tiny file is
subtracted, so "peak MiB" is what the parse itself held. Throughput is MB/s of file; the ratio is
against `grep -c loss` on the same file in the same run (median of 3, page cache warm).
Each file is parsed with the columnar engine (polars) and with the pure-Python fallback, each
--repeats times (median shown). Goals: 30% of grep's throughput, and the same peak memory at both sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tail import MiB, dense_chunk, realistic_chunk, write_log  # noqa: E402
from summary import row  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
from ml_debug_mcp.core.logs.formats import columnar
from ml_debug_mcp.core.logs.metrics import parse_metrics
path = Path(sys.argv[1])
if sys.argv[2] == "python":
    columnar.ENGINE = None
started = time.perf_counter()
parsed = parse_metrics(path)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "records": parsed.records, "series": len(parsed.series), "format": parsed.format}))
"""


# "polars": the columnar engine (the `fast` extra); "python": the pure-Python fallback.
ENGINES = ("polars", "python")


def run_child(path: Path, engine: str = "polars") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), engine], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def grep_seconds(path: Path, repeats: int = 3) -> float:
    # Output goes to a pipe: with stdout on /dev/null GNU grep stops at the first match.
    subprocess.run(["grep", "-c", "loss", str(path)], capture_output=True)  # warm the page cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(["grep", "-c", "loss", str(path)], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB and 128 MiB instead of 256 MiB and 1 GiB")
    parser.add_argument("--repeats", type=int, default=3, help="parses per engine and file; the median is shown")
    args = parser.parse_args()
    sizes = [32 * MiB, 128 * MiB] if args.quick else [256 * MiB, 1024 * MiB]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
        tiny = Path(tmp) / "tiny.log"
        tiny.write_text("step 1 | loss 2.0\n")
        baseline_kib = run_child(tiny)["maxrss_kib"]
        for kind, chunk in (("realistic", realistic_chunk()), ("dense", dense_chunk())):
            for size in sizes:
                path = Path(tmp) / f"{kind}_{size // MiB}.log"
                write_log(path, size, chunk)
                real_size = path.stat().st_size
                grep_s = grep_seconds(path)
                for engine in ENGINES:
                    runs = [run_child(path, engine) for _ in range(args.repeats)]
                    child = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
                    rows.append((kind, engine, real_size, child["seconds"], grep_s,
                                 (child["maxrss_kib"] - baseline_kib) / 1024, child["records"], child["format"]))
                path.unlink()
    print(f"{'log':>10} {'engine':>7} {'size':>8} {'parse s':>8} {'MB/s':>7} {'grep MB/s':>10} {'ratio':>6} {'peak MiB':>9} "
          f"{'records':>10} format")
    for kind, engine, size, secs, grep_s, peak, records, fmt in rows:
        mbs, grep_mbs = size / secs / 1e6, size / grep_s / 1e6
        print(f"{kind:>10} {engine:>7} {size / MiB:>6.0f}Mi {secs:>8.2f} {mbs:>7.1f} {grep_mbs:>10.0f} {mbs / grep_mbs:>6.1%} "
              f"{peak:>9.1f} {records:>10} {fmt}")
        row(f"whole-log parsing, {kind} {size / MiB:.0f} MiB", mbs, grep_mbs, "MB/s", ">= 0.3x (higher is better)",
            baseline_name="grep -c")
    return 0


if __name__ == "__main__":
    sys.exit(main())
