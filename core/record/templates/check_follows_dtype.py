"""Check: a forward pass under the model's own dtype and device works, and tensors made inside forward
follow the model to float64.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import torch

from ml_debug_mcp.core.record.templates.harness import build_case, model_device_dtype, prediction_of, to_model

# ---------------------------------------- body ----------------------------------------

def test_tensors_made_in_forward_follow_the_model_to_float64():
    """The whole model and batch in float64: a tensor created inside forward with a fixed dtype
    (torch.zeros(n) without dtype=x.dtype) breaks the matmul or leaves the output in float32."""
    case = build_case()
    case.model.double()
    with torch.no_grad():
        prediction = prediction_of(case, to_model(case.batch, model_device_dtype(case.model)[0],
                                                                torch.float64))
    if prediction.is_floating_point():
        assert prediction.dtype == torch.float64, (f"the model in float64 returned {prediction.dtype}: a cast or a "
                                                   "tensor made without dtype=x.dtype inside forward")
