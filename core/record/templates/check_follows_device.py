"""Check: a forward pass under the model's own device and dtype works, and tensors made inside forward
follow the model to another device (CUDA, or the meta device without a GPU).

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import pytest
import torch

from ml_debug_mcp.core.record.templates.harness import build_case, model_device_dtype, prediction_of, to_model

DEVICE_ERRORS = ('is not on the expected device', 'Expected all tensors to be on the same device')

# ---------------------------------------- body ----------------------------------------

def test_tensors_made_in_forward_follow_the_model_to_another_device():
    """The model and batch moved to CUDA (or, without a GPU, to the meta device): a tensor created
    inside forward without device=x.device, or a plain tensor attribute, stays behind and the
    forward pass fails with a device mismatch."""
    case = build_case()
    target = "cuda" if torch.cuda.is_available() else "meta"
    dtype = model_device_dtype(case.model)[1]
    case.model.to(target)
    try:
        with torch.no_grad():
            prediction = prediction_of(case, to_model(case.batch, target, dtype))
    except (RuntimeError, NotImplementedError) as exc:
        if target == "meta" and not any(marker in str(exc) for marker in DEVICE_ERRORS):
            pytest.skip(f"the model cannot run on the meta device ({type(exc).__name__}: {str(exc)[:200]}); "
                        "this check needs a GPU")
        raise
    assert prediction.device.type == target, f"the output stayed on {prediction.device}"
