"""Check: the loss decreases on a fixed batch over a few dozen steps (a model that cannot fit one batch
is broken), stays finite and never spikes.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

import math

from ml_debug_mcp.core.record.templates.harness import build_case, train_steps

LEARNING_RATE = 0.01
REQUIRED_FRACTION = 0.5
SPIKE_FACTOR = 3.0
STEPS = 25

# ---------------------------------------- body ----------------------------------------

def test_loss_decreases_on_a_fixed_batch_and_stays_finite():
    """STEPS Adam steps on one fixed batch: a model that cannot fit one batch is broken. The loss
    must fall to REQUIRED_FRACTION of where it started, stay finite, and never rise above
    SPIKE_FACTOR times its starting value."""
    case = build_case()
    losses = train_steps(case, STEPS, LEARNING_RATE)
    bad = [(i, v) for i, v in enumerate(losses) if not math.isfinite(v)]
    assert not bad, f"loss became {bad[0][1]} at step {bad[0][0]}"
    first, best_late = losses[0], min(losses[-5:])
    worst = max(range(len(losses)), key=losses.__getitem__)
    assert losses[worst] <= SPIKE_FACTOR * max(first, 1e-12), (
        f"loss spiked to {losses[worst]:.4g} at step {worst} from {first:.4g}: learning rate too high or no clipping")
    if first > 1e-8:
        assert best_late <= REQUIRED_FRACTION * first, (
            f"loss went from {first:.4g} to {best_late:.4g} in {STEPS} steps on one fixed batch (needed "
            f"<= {REQUIRED_FRACTION:g}x): gradients not reaching the weights, a loss that cannot reach its "
            "target, or a learning rate far too low")
