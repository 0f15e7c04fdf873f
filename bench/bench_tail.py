"""Tail of a big log: core.tail.tail_file against GNU `tail -n 200`, same files, same run.

    python bench/bench_tail.py [--quick]

Writes realistic torchrun-style training logs (two ranks of key/value metric lines, eval lines,
INFO/WARNING lines, tqdm progress rewritten with carriage returns) of 1 GiB and 4 GiB (--quick:
64 MiB and 256 MiB) into a temp dir, deleted afterwards. For each size it reports the median
time of `tail_file(path, lines=200)` (a full answer: lines, cursor, format, errors and last
metric values of the tail region) and of `tail -n 200 path` run as a subprocess, and their ratio.
The goal is a ratio within 2x and the same time at both sizes: the read starts from the end, so
its cost must not grow with the file.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ml_debug_mcp.core.logs.tail import _SCAN_CACHE, tail_file
from summary import row  # noqa: E402  (bench/ is on sys.path when a script runs)

MiB = 1 << 20


def realistic_chunk(seed: int = 0, target_bytes: int = 4 * MiB) -> bytes:
    """Lines as a two-rank torchrun job prints them; steps keep increasing inside the chunk."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    step = 0
    i = 0
    while size < target_bytes:
        i += 1
        ts = f"2024-05-01 12:{(i // 60) % 60:02d}:{i % 60:02d},{i % 1000:03d}"
        r = rng.random()
        if r < 0.62:
            step += 1
            for rank in (0, 1):
                line = (f"[rank{rank}]:{ts} INFO train.py:212 step {step} | loss {2.0 + rng.random():.4f} | "
                        f"lr 3.00e-04 | grad_norm {rng.random() * 2:.3f} | tok/s {50000 + rng.randrange(5000)}")
                out.append(line)
                size += len(line) + 1
            continue
        if r < 0.65:
            line = f"[rank0]:step {step}: train loss {2.1 + rng.random():.4f}, val loss {2.2 + rng.random():.4f}"
        elif r < 0.80:
            line = (f"[rank{rng.randrange(2)}]:{ts} INFO data.py:45 loaded shard {rng.randrange(10000):05d} "
                    f"({rng.randrange(100000)} samples) from /data/tokens/part-{rng.randrange(1000):04d}.bin")
        elif r < 0.90:
            done = rng.randrange(1, 10000)
            bar = "".join(f"\r {p}%|{'█' * (p // 10)}{' ' * (10 - p // 10)}| {done + p}/10000 [12:34<15:21,  5.97it/s]"
                          for p in range(10, 60, 10))
            line = f"[rank0]:{bar}"
        elif r < 0.97:
            line = (f"[rank1]:{ts} WARNING torch/distributed/distributed_c10d.py:1234 UserWarning: "
                    "barrier() using device ids is deprecated")
        else:
            line = f"[rank0]:{ts} INFO checkpoint.py:88 Saving checkpoint to /ckpt/step_{step:07d}.pt (1.2 GB)"
        out.append(line)
        size += len(line) + 1
    return ("\n".join(out) + "\n").encode()


def dense_chunk(seed: int = 0, target_bytes: int = 4 * MiB) -> bytes:
    """The worst case for a parser: nothing but nanoGPT metric lines."""
    rng = random.Random(seed)
    out = []
    size = 0
    it = 0
    while size < target_bytes:
        line = f"iter {it}: loss {1.0 + 3 * rng.random():.4f}, time {40 + 10 * rng.random():.2f}ms, mfu {12 + rng.random():.2f}%"
        out.append(line)
        size += len(line) + 1
        it += 1
    return ("\n".join(out) + "\n").encode()


def write_log(path: Path, size: int, chunk: bytes) -> None:
    with open(path, "wb") as fh:
        written = 0
        while written < size:
            fh.write(chunk)
            written += len(chunk)


def median_ms(call, repeats: int) -> float:
    call()  # warm the page cache and imports outside the measurement
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB and 256 MiB instead of 1 GiB and 4 GiB")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    sizes = [64 * MiB, 256 * MiB] if args.quick else [1024 * MiB, 4096 * MiB]
    tail_bin = shutil.which("tail")
    if tail_bin is None:
        print("GNU tail not found; cannot measure the baseline", file=sys.stderr)
        return 1
    chunk = realistic_chunk()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_tail_") as tmp:
        for size in sizes:
            path = Path(tmp) / f"train_{size // MiB}MiB.log"
            write_log(path, size, chunk)
            theirs = median_ms(lambda: subprocess.run([tail_bin, "-n", "200", str(path)], stdout=subprocess.DEVNULL,
                                                      check=True), args.repeats)
            bare = median_ms(lambda: tail_file(path, lines=200, analyze=False), args.repeats)
            full = median_ms(lambda: (_SCAN_CACHE.clear(), tail_file(path, lines=200)), args.repeats)  # cold
            cached = median_ms(lambda: tail_file(path, lines=200), args.repeats)  # the same file polled again
            result = tail_file(path, lines=200)
            rows.append((path.stat().st_size, theirs, bare, full, len(result.lines), len(result.metrics), result.format,
                         cached))
            path.unlink()
    print("bare = lines + cursor + file facts; full = also format, last metric values, errors (the default), "
          "analysed cold; polled again = the same call on the unchanged file (the analysis is cached per "
          "device, inode, size and mtime)")
    print(f"{'file':>10} {'tail -n ms':>11} {'bare ms':>8} {'ratio':>6} {'full ms':>8} {'ratio':>6} {'lines':>6} "
          f"{'metrics':>8} format")
    for size, theirs, bare, full, n_lines, n_metrics, fmt, cached in rows:
        print(f"{size / MiB:>7.0f}MiB {theirs:>11.2f} {bare:>8.2f} {bare / theirs:>6.2f} {full:>8.2f} {full / theirs:>6.2f} "
              f"{n_lines:>6} {n_metrics:>8} {fmt}   polled again unchanged: {cached:.2f} ms ({cached / theirs:.2f}x)")
    for size, theirs, _, full, *_, cached in rows:
        row(f"analysed tail of 200 lines, {size / MiB:.0f} MiB", full, theirs, "ms", "<= 2x", baseline_name="tail -n 200")
        row(f"analysed tail, same file polled again, {size / MiB:.0f} MiB", cached, theirs, "ms", "<= 2x",
            baseline_name="tail -n 200")
    if len(rows) == 2:
        print(f"size x{rows[1][0] / rows[0][0]:.0f} -> bare time x{rows[1][2] / rows[0][2]:.2f}, "
              f"full time x{rows[1][3] / rows[0][3]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
