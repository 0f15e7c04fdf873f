"""Stand-in model: a tiny classifier, used when no entrypoint is given.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import torch

# ---------------------------------------- body ----------------------------------------

# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working. Replace load_factory() above with your own
# factory (or re-run create_smoke_test with entrypoint='path/to/file.py:factory').


def tiny_model_factory():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    inputs = torch.randn(8, 16)
    labels = torch.randint(0, 4, (8,))
    return model, (inputs, labels)
