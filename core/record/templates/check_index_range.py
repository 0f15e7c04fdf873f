"""Check: class labels and token ids are within the model's output and embedding sizes, checked on the
CPU where an out-of-range index is a readable error.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ml_debug_mcp.core.model.contract import split_batch, tensors
from ml_debug_mcp.core.record.templates.harness import build_case, model_device_dtype, prediction_of, step_loss, to_model

IGNORE_INDEX = -100

# ---------------------------------------- body ----------------------------------------

def test_labels_and_token_ids_are_in_range_on_cpu():
    """On the CPU an index out of range is a plain IndexError with the real line, instead of an
    asynchronous device-side assert: class labels must be < the number of outputs, token ids <
    the embedding size."""
    case = build_case()
    case.model.to("cpu")
    batch = to_model(case.batch, "cpu", model_device_dtype(case.model)[1])
    args, kwargs, target = split_batch(batch)
    embedding = next((m for m in case.model.modules() if isinstance(m, torch.nn.Embedding)), None)
    if embedding is not None:
        for ids in integer_tensors([*args, *kwargs.values()]):
            assert int(ids.min()) >= 0 and int(ids.max()) < embedding.num_embeddings, (
                f"token ids span [{int(ids.min())}, {int(ids.max())}] but the embedding has "
                f"{embedding.num_embeddings} rows: resize it after adding tokens")
    prediction = prediction_of(case, batch)
    if target is not None and not target.is_floating_point():
        valid = target[target != IGNORE_INDEX]
        if valid.numel():
            assert int(valid.min()) >= 0 and int(valid.max()) < prediction.shape[-1], (
                f"labels span [{int(valid.min())}, {int(valid.max())}] but the model has {prediction.shape[-1]} "
                f"outputs: labels must be 0..{prediction.shape[-1] - 1} (ignore_index={IGNORE_INDEX} for padding)")
    step_loss(case, batch)  # the loss's own index checks, with a readable error


def test_the_largest_token_id_is_accepted():
    """Token id num_embeddings - 1, the boundary, goes through the model."""
    case = build_case()
    embedding = next((m for m in case.model.modules() if isinstance(m, torch.nn.Embedding)), None)
    args, kwargs, _ = split_batch(case.batch)
    if embedding is None or kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor) \
            or args[0].is_floating_point():
        pytest.skip("the model's input is not one tensor of token ids into an embedding")
    with torch.no_grad():
        case.model(torch.full_like(args[0], embedding.num_embeddings - 1))


def integer_tensors(values: list[Any]) -> list[torch.Tensor]:
    return [v for v in tensors(values) if not v.is_floating_point() and v.dtype != torch.bool]
