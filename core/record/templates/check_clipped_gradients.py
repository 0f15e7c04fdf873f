"""Check: the raw gradient norm (before clipping) stays finite and under the exploding threshold at
every step.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

import math

import torch

from ml_debug_mcp.core.record.templates.harness import build_case, train_steps, trainable

LEARNING_RATE = 0.01
MAX_NORM = 1.0
RAW_NORM_LIMIT = 10.0
STEPS = 25

# ---------------------------------------- body ----------------------------------------

def test_raw_gradient_norm_stays_under_the_exploding_threshold():
    """STEPS steps trained as the fixed run trains (clip_grad_norm_ at MAX_NORM): the global norm
    measured before clipping stays finite and at most RAW_NORM_LIMIT at every step."""
    case = build_case()

    def clip_and_check(step: int, loss: float, model: torch.nn.Module) -> None:
        raw = float(torch.nn.utils.clip_grad_norm_([p for _, p in trainable(model)], MAX_NORM))
        assert math.isfinite(raw), f"the gradient norm is {raw} at step {step}: it overflowed before clipping"
        assert raw <= RAW_NORM_LIMIT, (f"the raw gradient norm reached {raw:.4g} at step {step} (limit "
                                       f"{RAW_NORM_LIMIT:g}): gradients explode, and clipping only hides it")
        assert math.isfinite(loss), f"loss is {loss} at step {step}"

    train_steps(case, STEPS, LEARNING_RATE, after_backward=clip_and_check)
