"""Check: every parameter that requires grad gets a non-None, non-zero gradient after one backward, and
none is vanishingly small next to the largest.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


from ml_debug_mcp.core.record.templates.harness import build_case, step_loss, trainable

ALLOWED_WITHOUT_GRAD = set()
SMALLEST_RATIO = 1e-07

# ---------------------------------------- body ----------------------------------------

def test_every_trainable_parameter_gets_a_nonzero_gradient():
    """One backward: a parameter with no gradient or an all-zero one is cut off from the loss
    (detach, no_grad, .item(), requires_grad=False upstream, or unused)."""
    case = build_case()
    named = [(n, p) for n, p in trainable(case.model) if n not in ALLOWED_WITHOUT_GRAD]
    assert named, "the model has no trainable parameters"
    loss = step_loss(case)
    assert loss.requires_grad, ("the loss does not require grad: the graph is cut between the model and the loss "
                                "(detach/no_grad/.item()/.numpy())")
    loss.backward()
    missing = [n for n, p in named if p.grad is None]
    zero = [n for n, p in named if p.grad is not None and p.numel() and float(p.grad.detach().abs().max()) == 0.0]
    assert not missing, f"no gradient reached: {', '.join(missing[:8])}"
    assert not zero, f"the gradient is exactly zero for: {', '.join(zero[:8])}"


def test_no_gradient_is_vanishingly_small_next_to_the_largest():
    """The smallest per-parameter gradient norm is at least SMALLEST_RATIO of the largest."""
    case = build_case()
    step_loss(case).backward()
    norms = {n: float(p.grad.detach().float().norm()) for n, p in trainable(case.model)
             if p.grad is not None and n not in ALLOWED_WITHOUT_GRAD}
    assert norms, "no parameter received a gradient"
    largest = max(norms.values())
    tiny = sorted((n for n, v in norms.items() if v < SMALLEST_RATIO * largest), key=norms.get)
    assert not tiny, (f"gradients vanish in {', '.join(tiny[:5])} (norm {norms[tiny[0]]:.3g} against a largest of "
                      f"{largest:.3g}): saturating activations, missing normalisation or residuals")
