"""NaN from log(0): a count feature goes through torch.log, and the first batch holding a zero count
turns the loss to NaN. Fixed twin: torch.log1p."""

import sys
from pathlib import Path

import torch
from torch import nn


class CountModel(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        counts = x[:, :1]
        scaled = torch.log1p(counts) if self.fixed else torch.log(counts)  # the bug: log(0) = -inf
        return self.net(torch.cat([scaled, x[:, 1:]], dim=1))


def data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    x[:, 0] = torch.poisson(torch.full((n,), 7.0), generator=g)  # a count: zero about once in a thousand rows
    w = torch.randn(16, 4, generator=g)
    return x, (x @ w).argmax(dim=1)


def _case(fixed: bool):
    x, y = data(8, seed=1)
    x[0, 0] = 0.0  # the edge case a regression test must hold: a zero count
    return CountModel(fixed), (x, y)


def buggy():
    return _case(False)


def fixed():
    return _case(True)


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit

    torch.manual_seed(0)
    x, y = data(4096)
    fit(CountModel(variant == "fixed"), batches(x, y, 32), log_path, lr=3e-3, steps=200)


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
