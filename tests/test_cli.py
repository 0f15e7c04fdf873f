"""The human command line: the same analyses as the tools, printed for a person."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mcp_harness import console_script


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([console_script(), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_tail_metrics_and_classify_print_the_tool_summaries(tmp_path: Path):
    log = tmp_path / "train.log"
    log.write_text("".join(f"step {i} | loss {2.5 - i / 100:.3f} | lr 1e-3\n" for i in range(80))
                   + "step 80 | loss nan | lr 1e-3\n")
    tail = run("tail", str(log), "-n", "3")
    assert tail.returncode == 0 and "step 80 | loss nan" in tail.stdout and "next_cursor=" in tail.stdout
    metrics = run("metrics", str(log), "--json")
    loss = next(s for s in json.loads(metrics.stdout)["series"] if s["name"] == "loss")
    assert loss["stats"]["count"] == 81 and loss["stats"]["first_nonfinite_step"] == 80
    classify = run("classify", str(log))
    assert classify.returncode == 0 and "nan_loss" in classify.stdout.splitlines()[0]


def test_gpu_on_a_cpu_host_still_answers():
    result = run("gpu", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["nvml"]["available"] in (True, False)


def test_missing_file_is_a_one_line_error():
    result = run("tail", "/no/such/train.log")
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
