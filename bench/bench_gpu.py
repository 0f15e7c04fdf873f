"""Latency of host_status() against a bare psutil pass, same run, same host.

    python bench/bench_gpu.py [--quick]

Starts 100 real sleeping processes (96 `sleep`, 4 python `train.py` that discovery lists), then
times, as medians over repeats: a bare `psutil.process_iter()` pass (the baseline), a pass that
reads every command line (what discovery must do), and host_status() with 1 and 8 simulated GPUs
(tests/fake_nvml.py at the NVML import boundary), with and without sampling (samples=10,
interval=0), and against the real pynvml (which, without a driver, measures the failure path).
Ratios are against the bare pass (psutil caches its Process objects, so that pass is nearly free)
and against the command-line pass (the floor for any discovery), so they hold across machines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from ml_debug_mcp.core.host.nvml import NVML_MODULE_ENV  # noqa: E402
from ml_debug_mcp.core.host.snapshot import host_status  # noqa: E402
from summary import row  # noqa: E402  (bench/ is on sys.path when a script runs)

SLEEPING_SCRIPT = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"


def median_ms(call, repeats: int) -> float:
    call()  # warm caches (imports, psutil's process table) outside the measurement
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def spawn_host_processes(folder: Path, total: int = 100, trainers: int = 4) -> list[subprocess.Popen]:
    script = folder / "train.py"
    script.write_text(SLEEPING_SCRIPT)
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
             for _ in range(trainers)]
    for proc in procs:
        proc.stdout.readline()
    procs += [subprocess.Popen(["sleep", "600"]) for _ in range(total - trainers)]
    return procs


def use_fake_nvml(gpus: int, trainer_pids: list[int]):
    import fake_nvml

    os.environ[NVML_MODULE_ENV] = "fake_nvml"
    fake_nvml.configure(gpus=gpus, processes=[(i % gpus, pid, 2**30) for i, pid in enumerate(trainer_pids)])
    return fake_nvml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    repeats = 5 if parser.parse_args().quick else 25

    with tempfile.TemporaryDirectory() as folder:
        procs = spawn_host_processes(Path(folder))
        trainer_pids = [p.pid for p in procs[:4]]
        try:
            rows: list[tuple[str, float]] = []
            baseline = median_ms(lambda: list(psutil.process_iter()), repeats)
            rows.append(("baseline: bare psutil.process_iter() pass", baseline))
            rows.append(("psutil.process_iter(['name','cmdline']) pass",
                         median_ms(lambda: list(psutil.process_iter(["name", "cmdline"])), repeats)))
            os.environ.pop(NVML_MODULE_ENV, None)
            rows.append(("host_status(), real pynvml (no driver here)", median_ms(host_status, repeats)))
            for gpus in (1, 8):
                use_fake_nvml(gpus, trainer_pids)
                rows.append((f"host_status(), {gpus} fake GPU{'s' if gpus > 1 else ''}", median_ms(host_status, repeats)))
            one = rows[-1][1]
            sampled = median_ms(lambda: host_status(samples=10, interval=0.0), repeats)
            rows.append(("host_status(samples=10, interval=0), 8 fake GPUs", sampled))
            found = len(host_status().processes)
            on_host = len(psutil.pids())
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
                if proc.stdout:
                    proc.stdout.close()

    print(f"{on_host} processes on the host during the run ({found} training jobs found); "
          f"median of {repeats} calls")
    cmdline_pass = rows[1][1]
    print(f"{'case':<52} {'ms':>8} {'x bare':>8} {'x cmdline':>10}")
    for name, ms in rows:
        print(f"{name:<52} {ms:>8.2f} {ms / baseline:>8.1f} {ms / cmdline_pass:>10.2f}")
    print(f"sampling overhead, samples=10 / samples=1 (8 GPUs): {sampled / one:.2f}x")
    row("gpu_status (host_status, 8 GPUs)", rows[4][1], cmdline_pass, "ms", "<= 1.2x",
        baseline_name="process_iter(['name','cmdline'])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
