"""Check: a few training steps at a high-but-plausible learning rate keep the loss and every gradient
finite, and the log(0) edge case p = [0, 1] stays finite with the epsilon.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

import math

import torch

from ml_debug_mcp.core.record.templates.harness import build_case, train_steps, trainable

EPSILON = 1e-08
LEARNING_RATE = 0.01
STEPS = 25

# ---------------------------------------- body ----------------------------------------

def test_epsilon_keeps_the_entropy_edge_case_finite():
    """p = [0, 1] is the edge case: 0 * log(0) is NaN without the epsilon, finite with it."""
    p = torch.tensor([0.0, 1.0], requires_grad=True)
    assert torch.isnan(-torch.sum(p * torch.log(p))), "the edge case no longer reproduces log(0)"
    entropy = -torch.sum(p * torch.log(p + EPSILON))
    entropy.backward()
    assert torch.isfinite(entropy), "entropy with the epsilon should be finite"
    assert torch.isfinite(p.grad).all(), "its gradient should be finite too"


def test_training_at_a_high_learning_rate_keeps_loss_and_gradients_finite():
    """A few Adam steps at LEARNING_RATE: every loss and every gradient must stay finite."""
    case = build_case()

    def check(step: int, loss: float, model: torch.nn.Module) -> None:
        assert math.isfinite(loss), (f"loss is {loss} at step {step}: look for log/div/sqrt without an epsilon, "
                                     "or localise it with torch.autograd.set_detect_anomaly(True)")
        bad = [name for name, p in trainable(model) if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients at step {step} in: {', '.join(bad[:5])}"

    train_steps(case, STEPS, LEARNING_RATE, after_backward=check)
