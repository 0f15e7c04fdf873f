"""A dtype bug: features are standardised with float64 statistics (numpy-style), so a float64 tensor
meets the float32 Linear ("mat1 and mat2 must have the same dtype"). Fixed twin: statistics in the
input's dtype."""

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


if __name__ == "__main__":
    from scenario_trainer import main

    main(Standardised)
