"""Stand-in model: a classifier with an entropy bonus written with its epsilon.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import torch

EPSILON = 1e-08

# ---------------------------------------- body ----------------------------------------

# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working: a classifier whose loss has an entropy bonus,
# written with the epsilon that keeps log(0) out of it. Replace load_factory() above with your
# own factory (or re-run create_smoke_test with entrypoint='path/to/file.py:factory').


def entropy_regularised_loss(logits, labels):
    p = torch.softmax(logits, dim=-1)
    entropy = -(p * torch.log(p + EPSILON)).sum(dim=-1).mean()
    return torch.nn.functional.cross_entropy(logits, labels) - 0.01 * entropy


def tiny_model_factory():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    return model, (torch.randn(8, 16), torch.randint(0, 4, (8,))), entropy_regularised_loss
