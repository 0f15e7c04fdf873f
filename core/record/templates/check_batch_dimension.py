"""Check: a forward pass returns the input's batch dimension, for the full batch and for a batch of
one.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

from typing import Any

import torch

from ml_debug_mcp.core.model.contract import tensors
from ml_debug_mcp.core.record.templates.harness import build_case, prediction_of

EXPECTED_OUTPUT_SHAPE = None

# ---------------------------------------- body ----------------------------------------

def test_forward_keeps_the_batch_dimension():
    """The output's first dimension is the input's batch size, for the full batch and for a batch
    of one (a hard-coded batch size in view/reshape breaks the second). In eval mode: BatchNorm
    cannot normalise one sample in training mode, and shapes do not depend on the mode."""
    case = build_case()
    case.model.eval()
    full = batch_size(case.batch)
    for size in dict.fromkeys((full, 1)):
        with torch.no_grad():
            prediction = prediction_of(case, slice_batch(case.batch, size))
        assert prediction.shape[0] == size, (f"input batch of {size} gave an output of shape "
                                             f"{tuple(prediction.shape)}")
        if EXPECTED_OUTPUT_SHAPE is not None:
            expected = tuple(size if dim is None else dim for dim in EXPECTED_OUTPUT_SHAPE)
            assert tuple(prediction.shape) == expected, f"output shape {tuple(prediction.shape)} != {expected}"


def batch_size(batch: Any) -> int:
    return int(tensors(batch)[0].shape[0])


def slice_batch(batch: Any, size: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[:size]
    if isinstance(batch, dict):
        return {k: slice_batch(v, size) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(slice_batch(v, size) for v in batch)
    return batch
