"""Stand-in model: an encoder whose outputs are the representations.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import torch

# ---------------------------------------- body ----------------------------------------

# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working: an encoder whose outputs are the
# representations. Replace load_factory() above with your own factory (or re-run
# create_smoke_test with entrypoint='path/to/file.py:factory').


def tiny_model_factory():
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    return model, torch.randn(64, 16)
