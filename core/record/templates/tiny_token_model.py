"""Stand-in model: token ids into an embedding, class labels out.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations


import torch

# ---------------------------------------- body ----------------------------------------

# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working: token ids into an embedding, class labels out.
# Replace load_factory() above with your own factory (or re-run create_smoke_test with
# entrypoint='path/to/file.py:factory').


class TinyTokenClassifier(torch.nn.Module):
    def __init__(self, vocab_size: int = 50, classes: int = 4) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, 16)
        self.head = torch.nn.Linear(16, classes)

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(dim=1))


def tiny_model_factory():
    return TinyTokenClassifier(), (torch.randint(0, 50, (8, 12)), torch.randint(0, 4, (8,)))
