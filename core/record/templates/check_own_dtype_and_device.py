"""Check: a forward pass under the model's own dtype and device works, and tensors made inside forward
follow the model to float64.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import torch

from ml_debug_mcp.core.record.templates.harness import build_case, model_device_dtype, prediction_of, to_model

# ---------------------------------------- body ----------------------------------------

def test_forward_under_the_models_own_dtype_and_device():
    """Inputs moved to the model's device and floating dtype: the forward pass runs and the
    output follows the model."""
    case = build_case()
    device, dtype = model_device_dtype(case.model)
    stray = [n for n, t in list(case.model.named_parameters()) + list(case.model.named_buffers()) if t.device != device]
    assert not stray, f"parameters or buffers on another device than {device}: {', '.join(stray[:5])}"
    with torch.no_grad():
        prediction = prediction_of(case, to_model(case.batch, device, dtype))
    assert prediction.device == device, f"the output is on {prediction.device}, the model on {device}"
    if prediction.is_floating_point():
        assert prediction.dtype == dtype, f"the output is {prediction.dtype}, the model {dtype}"
