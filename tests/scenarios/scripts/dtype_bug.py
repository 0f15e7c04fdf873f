"""A dtype bug: features are standardised with float64 statistics (numpy-style), so a float64 tensor
meets the float32 Linear ("mat1 and mat2 must have the same dtype"). Fixed twin: statistics in the
input's dtype."""

import sys
from pathlib import Path

import torch
from torch import nn


class Standardised(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))

    def forward(self, x):
        std = x.std(dim=0, keepdim=True)
        std = std if self.fixed else std.double()  # the bug: float64 statistics promote the batch
        return self.net((x - x.mean(dim=0, keepdim=True)) / (std + 1e-6))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 16, generator=g), torch.arange(8) % 4


def buggy():
    return Standardised(False), _batch()


def fixed():
    return Standardised(True), _batch()


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit, teacher_data

    torch.manual_seed(0)
    x, y = teacher_data(2048)
    fit(Standardised(variant == "fixed"), batches(x, y, 32), log_path, lr=3e-3, steps=200)


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
