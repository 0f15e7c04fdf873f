"""Check: the effective rank (exp of the entropy of the normalised singular values) of a batch of
outputs stays above a floor, before and after a few training steps.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import pytest
import torch

from ml_debug_mcp.core.model.contract import Case
from ml_debug_mcp.core.record.templates.harness import build_case, prediction_of, train_steps

LEARNING_RATE = 0.01
RANK_FLOOR_FRACTION = 0.1
STEPS = 25

# ---------------------------------------- body ----------------------------------------

def effective_rank(representations: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values): 1 for identical rows, up to min(N, D)."""
    flat = representations.detach().float().reshape(representations.shape[0], -1)
    singular = torch.linalg.svdvals(flat)
    total = float(singular.sum())
    if total == 0.0:
        return 0.0
    p = singular / total
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))


def rank_floor(representations: torch.Tensor) -> float:
    n, d = representations.shape[0], representations[0].numel()
    return max(2.0, RANK_FLOOR_FRACTION * min(n, d))


def representations_of(case: Case) -> torch.Tensor:
    with torch.no_grad():
        out = prediction_of(case)
    if out.shape[0] < 3:
        pytest.fail(f"a batch of {out.shape[0]} is too small to measure diversity; use 16 or more samples")
    return out


def test_representations_are_diverse():
    """The outputs for a batch of different inputs span more than a couple of directions."""
    case = build_case()
    reps = representations_of(case)
    rank = effective_rank(reps)
    assert rank >= rank_floor(reps), (f"effective rank {rank:.2f} of {tuple(reps.shape)} outputs is below "
                                      f"{rank_floor(reps):.2f}: the representations have collapsed")


def test_representations_stay_diverse_after_training():
    """STEPS steps of the model's own objective (loss_fn from the factory) keep the effective rank
    above the floor: a convergence-only objective collapses it."""
    case = build_case()
    train_steps(case, STEPS, LEARNING_RATE)
    reps = representations_of(case)
    rank = effective_rank(reps)
    assert rank >= rank_floor(reps), (f"after {STEPS} steps the effective rank is {rank:.2f}, below "
                                      f"{rank_floor(reps):.2f}: the objective collapses the representations; add or "
                                      "re-weight a diversity term")
