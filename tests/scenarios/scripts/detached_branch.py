"""A detached branch: the auxiliary encoder's features are `.detach()`ed before the head, so that
sub-module never gets a gradient (it stays at its initialisation). Fixed twin: no detach."""

import sys
from pathlib import Path

import torch
from torch import nn


class TwoBranch(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.trunk = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
        self.aux = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
        self.head = nn.Linear(64, 4)

    def forward(self, x):
        aux = self.aux(x)
        return self.head(torch.cat([self.trunk(x), aux if self.fixed else aux.detach()], dim=1))  # the bug


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 16, generator=g), torch.arange(8) % 4


def buggy():
    return TwoBranch(False), _batch()


def fixed():
    return TwoBranch(True), _batch()


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit, teacher_data

    torch.manual_seed(0)
    model = TwoBranch(variant == "fixed")
    x, y = teacher_data(2048)
    fit(model, batches(x, y, 32), log_path, lr=3e-3, steps=200,
        layer_norms={"trunk": model.trunk, "aux": model.aux, "head": model.head})


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
