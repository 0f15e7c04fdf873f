"""The missing-detach carried-state loop (the CVFP bug report): a context vector is carried from one
step to the next without `.detach()`, so the second backward runs through the first step's freed graph
("Trying to backward through the graph a second time"). Fixed twin: the carried context is detached."""

import sys
from pathlib import Path

import torch
from torch import nn


class CarriedContext(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.update, self.head, self.context = nn.Linear(32, 16), nn.Linear(16, 4), None

    def forward(self, x):
        previous = self.context if self.context is not None else torch.zeros(x.shape[0], 16)
        context = torch.tanh(self.update(torch.cat([x, previous], dim=-1)))
        self.context = context.detach() if self.fixed else context  # the bug: the graph is carried along
        return self.head(context)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 16, generator=g), torch.arange(8) % 4


def buggy():
    return CarriedContext(False), _batch()


def fixed():
    return CarriedContext(True), _batch()


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit, teacher_data

    torch.manual_seed(0)
    x, y = teacher_data(2048)
    fit(CarriedContext(variant == "fixed"), batches(x, y, 8), log_path, lr=3e-3, steps=200)


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
