"""Check: one forward and backward at the batch's size fits in a memory budget (peak CUDA memory, or
the rise in peak RSS on Linux).

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ml_debug_mcp.core.record.templates.harness import build_case, model_device_dtype, step_loss

MEMORY_BUDGET_MB = 2048.0

# ---------------------------------------- body ----------------------------------------

def test_forward_and_backward_fit_in_the_memory_budget():
    """One forward and backward at the batch's size: peak GPU memory (CUDA) or the rise in peak
    resident memory (Linux) stays within MEMORY_BUDGET_MB."""
    case = build_case()
    device, _ = model_device_dtype(case.model)

    def step() -> None:
        step_loss(case).backward()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        used_mb = torch.cuda.max_memory_allocated(device) / 2**20
        what = "peak CUDA memory"
    else:
        used_mb = peak_rss_rise_mb(step)
        what = "rise in peak resident memory"
    assert used_mb <= MEMORY_BUDGET_MB, (f"{what} of one step is {used_mb:.0f} MiB, over the {MEMORY_BUDGET_MB:g} MiB "
                                         "budget: smaller batch, gradient checkpointing or mixed precision")


def peak_rss_rise_mb(run: Callable[[], None]) -> float:
    """How far peak RSS rises while `run` runs (Linux: reset VmHWM through /proc/self/clear_refs)."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("no CUDA device and no /proc/self/status to read peak memory from (not Linux)")

    def field_kib(name: str) -> int:
        for line in status.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
        pytest.skip(f"/proc/self/status has no {name} line")

    before = field_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS counter ({exc}); run this check on a GPU or a full Linux kernel")
    run()
    return max(0, field_kib("VmHWM") - before) / 1024
