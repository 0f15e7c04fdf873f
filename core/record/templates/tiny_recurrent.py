"""Stand-in model: a context vector carried between calls, detached at the boundary.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import torch

# ---------------------------------------- body ----------------------------------------

# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working: a context vector carried from one call to the
# next (the CVFP pattern), detached at the boundary. Replace load_factory() above with your own
# factory (or re-run create_smoke_test with entrypoint='path/to/file.py:factory').


class TinyContextModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.update = torch.nn.Linear(16 + 16, 16)
        self.head = torch.nn.Linear(16, 4)
        self.context = None

    def forward(self, x):
        previous = self.context if self.context is not None else torch.zeros(x.shape[0], 16)
        context = torch.tanh(self.update(torch.cat([x, previous], dim=-1)))
        self.context = context.detach()  # the fix: without it the next backward walks this step's freed graph
        return self.head(context)


def tiny_model_factory():
    return TinyContextModel(), (torch.randn(8, 16), torch.randint(0, 4, (8,)))
