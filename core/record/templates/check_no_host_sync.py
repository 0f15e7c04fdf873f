"""Check: the forward, loss and backward make no host sync (.item(), .tolist(), .cpu(),
bool(tensor)...), checked by wrapping those Tensor methods, and under
torch.cuda.set_sync_debug_mode('error') on a GPU.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ml_debug_mcp.core.record.templates.harness import build_case, model_device_dtype, step_loss, to_model

SYNC_METHODS = ('item', 'tolist', 'numpy', 'cpu', '__bool__', '__float__', '__int__')

# ---------------------------------------- body ----------------------------------------

def test_training_step_makes_no_host_sync():
    """Forward, loss and backward call no .item()/.tolist()/.numpy()/.cpu() and take no Python bool
    or float of a tensor: on a GPU each one stalls the step until the device catches up."""
    case = build_case()
    with host_syncs_recorded() as syncs:
        step_loss(case).backward()
    assert not syncs, "host syncs in the step:\n" + "\n".join(f"  {site} ({name})" for site, name in syncs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; the Tensor-method check above covers the CPU")
def test_training_step_runs_under_cuda_sync_debug_mode_error():
    """On a GPU, torch.cuda.set_sync_debug_mode('error') turns every synchronising call into an error."""
    case = build_case()
    dtype = model_device_dtype(case.model)[1]
    case.model.to("cuda")
    batch = to_model(case.batch, "cuda", dtype)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step_loss(case, batch).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@contextlib.contextmanager
def host_syncs_recorded():
    """Wrap the Tensor methods that copy to the host; record the first call site outside torch."""
    torch_dir = str(Path(torch.__file__).resolve().parent)
    syncs: list[tuple[str, str]] = []
    saved = {name: torch.Tensor.__dict__.get(name) for name in SYNC_METHODS}

    def recording(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self, *args, **kwargs):
            frame = sys._getframe(1)
            while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(torch_dir):
                frame = frame.f_back
            site = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
            if (site, name) not in syncs:
                syncs.append((site, name))
            return original(self, *args, **kwargs)
        return wrapper

    for name in SYNC_METHODS:
        setattr(torch.Tensor, name, recording(name, getattr(torch.Tensor, name)))
    try:
        yield syncs
    finally:
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)
