"""Check: two steps under DistributedDataParallel (one gloo process) succeed and every parameter is
used, so the reducer never waits for a gradient that does not come.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ml_debug_mcp.core.record.templates.harness import build_case, step_loss, trainable

DDP_FLAG = '--ddp-steps'
DDP_TIMEOUT = 120
LEARNING_RATE = 0.01

# ---------------------------------------- body ----------------------------------------

def test_two_steps_under_ddp_with_one_process():
    """DistributedDataParallel with a single gloo process: a parameter the forward pass does not use
    makes the second step fail here, and makes multi-rank runs hang or fail in the reducer. It runs in
    a child process, so the process group never leaks into the rest of the session and a hang
    becomes a timeout."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    try:
        child = subprocess.run([sys.executable, __file__, DDP_FLAG], capture_output=True, text=True,
                               timeout=DDP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"two DDP steps did not finish in {DDP_TIMEOUT} s: a collective is waiting for a gradient or "
                    "a rank that never comes")
    assert child.returncode == 0, f"two DDP steps failed:\n{child.stderr[-4000:]}"


def ddp_steps() -> None:
    """What the child process runs: two DDP steps, then every parameter must have its gradient."""
    import datetime

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    case = build_case()
    # An in-memory store: no file or port to share with anything else.
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=DDP_TIMEOUT))
    try:
        wrapped = DistributedDataParallel(case.model)
        optimizer = torch.optim.Adam([p for _, p in trainable(case.model)], lr=LEARNING_RATE)
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            step_loss(case._replace(model=wrapped)).backward()
            optimizer.step()
    finally:
        dist.destroy_process_group()
    unused = [n for n, p in trainable(case.model) if p.grad is None]
    assert not unused, f"parameters unused in forward (DDP waits for their gradients): {', '.join(unused[:8])}"
