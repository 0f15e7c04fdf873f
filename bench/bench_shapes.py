"""check_shapes against torchinfo.summary: wall time and peak RSS to trace ~350M and ~1.5B transformers.

    python bench/bench_shapes.py [--quick]      (--quick: the 350M model only)

Both sides run in fresh processes under the same 4 GiB address-space cap (the worker's default), on
the same models (tests/fixtures/models/big.py: GPT-2-medium-shaped, 24 blocks d=1024, 406M
parameters with an untied head; GPT-2-XL-shaped, 48 blocks d=1600, 1.64B) and the same batch
[1, 128] of token ids. check_shapes' figures are its worker's: wall time from spawn to result
(torch import, building on the meta device, three traces: the batch, batch+1, sequence-1) and the
worker's peak RSS. torchinfo's are its process's: wall time from start (torch import, building
real weights, one summary with depth 3) and peak RSS, or where it stopped. A process that only
imports torch gives the floor under both (most of check_shapes' RSS is torch itself).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from summary import row  # noqa: E402  (bench/ is on sys.path when a script runs)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models" / "big.py"
CAP_MB = 4096
CASES = (("gpt2_medium", "~350M"), ("gpt2_xl", "~1.5B"))


def ours(model: str) -> dict:
    from ml_debug_mcp.core.model.shapes import check_model_shapes, shape_task

    task = shape_task({"file": str(MODELS), "attr": model}, None, None)
    start = time.perf_counter()
    report = check_model_shapes(task, python=sys.executable, timeout=600, memory_mb=CAP_MB, cwd=MODELS.parent,
                                target=model)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"ok": report.status == "ok", "seconds": seconds, "peak_mb": peak, "params": report.total_params,
            "rows": len(report.table)}


def torchinfo_side(model: str, started: float) -> dict:
    limit = CAP_MB << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        import importlib.util

        import torchinfo

        spec = importlib.util.spec_from_file_location("big", MODELS)
        big = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(big)
        net, ids = getattr(big, model)()
        stats = torchinfo.summary(net, input_data=ids, depth=3, verbose=0)
        ok, error, params = True, None, int(stats.total_params)
    except (MemoryError, RuntimeError) as exc:
        ok, error, params = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}", None
    return {"ok": ok, "error": error, "seconds": time.perf_counter() - started,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "params": params}


def baseline() -> dict:
    """A process that only imports torch: the floor under both sides' figures."""
    import torch  # noqa: F401

    return {"ok": True, "seconds": time.perf_counter() - STARTED,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(side: str, model: str) -> dict:
    """One side on one model in a fresh process (peak RSS is per process)."""
    proc = subprocess.run([sys.executable, __file__, "--one", side, model], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:  # killed (e.g. by the kernel) before it could report
        return {"ok": False, "error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}",
                "seconds": None, "peak_mb": None}
    return json.loads(lines[-1])


def fmt(value, unit: str) -> str:
    return "-" if value is None else f"{value:,.1f} {unit}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("SIDE", "MODEL"))
    args = parser.parse_args()
    if args.one:
        side, model = args.one
        result = ours(model) if side == "ours" else baseline() if side == "baseline" else torchinfo_side(model, STARTED)
        print(json.dumps(result))
        return 0
    cases = CASES[:1] if args.quick else CASES
    if importlib.util.find_spec("torchinfo") is None:
        print('torchinfo is not installed, so there is no baseline: pip install -e ".[bench]"', file=sys.stderr)
        return 2
    floor = measure("baseline", "-")
    print(f"{'model':<14} {'tool':<19} {'wall':>10} {'peak RSS':>12}  result")
    print(f"{'-':<14} {'import torch only':<19} {fmt(floor['seconds'], 's'):>10} {fmt(floor['peak_mb'], 'MiB'):>12}")
    failed = False
    for model, size in cases:
        mine, theirs = measure("ours", model), measure("torchinfo", model)
        failed |= not mine["ok"]
        for name, r in (("check_shapes", mine), ("torchinfo.summary", theirs)):
            status = "ok" if r["ok"] else f"FAILED ({r.get('error')})"
            print(f"{model:<14} {name:<19} {fmt(r['seconds'], 's'):>10} {fmt(r['peak_mb'], 'MiB'):>12}  {status}")
        if mine["ok"] and theirs["ok"]:
            row(f"check_shapes peak RSS, {size}", mine["peak_mb"], theirs["peak_mb"], "MiB", "<= 0.1x",
                baseline_name="torchinfo.summary")
            row(f"check_shapes wall time, {size}", mine["seconds"], theirs["seconds"], "s", "< 1x",
                baseline_name="torchinfo.summary")
            above = (theirs["peak_mb"] - floor["peak_mb"]) / max(1.0, mine["peak_mb"] - floor["peak_mb"])
            print(f"  {size}: check_shapes uses {theirs['peak_mb'] / mine['peak_mb']:.1f}x less peak memory "
                  f"({above:.0f}x less above the import-torch floor) and is "
                  f"{theirs['seconds'] / mine['seconds']:.1f}x faster than torchinfo.summary")
        elif mine["ok"]:
            print(f"  {size}: torchinfo.summary could not trace it under the {CAP_MB} MiB cap; check_shapes did in "
                  f"{mine['seconds']:.1f} s and {mine['peak_mb']:.0f} MiB")
    return 1 if failed else 0


STARTED = time.perf_counter()

if __name__ == "__main__":
    sys.exit(main())
