"""Check: consecutive training steps with state carried between calls do not raise 'Trying to backward
through the graph a second time' (the CVFP missing-detach bug) or an in-place modification error.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import pytest
import torch

from ml_debug_mcp.core.record.templates.harness import build_case, step_loss, trainable

GRAPH_REUSE_ERRORS = ('backward through the graph a second time', 'modified by an inplace operation')
LEARNING_RATE = 0.01
STEPS = 25

# ---------------------------------------- body ----------------------------------------

def test_consecutive_steps_with_carried_state_do_not_reuse_the_graph():
    """STEPS training steps on one model: state it carries from one call to the next must be
    detached at the boundary, or the second backward walks the first step's freed graph."""
    case = build_case()
    optimizer = torch.optim.Adam([p for _, p in trainable(case.model)], lr=LEARNING_RATE)
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        try:
            loss = step_loss(case)
            loss.backward()
        except RuntimeError as exc:
            if any(marker in str(exc) for marker in GRAPH_REUSE_ERRORS):
                pytest.fail(f"step {step}: {exc}\nState carried across steps still holds a previous step's graph "
                            "(or a saved tensor was changed in place): detach it at the iteration boundary, "
                            "e.g. context = context.detach()")
            raise
        optimizer.step()
