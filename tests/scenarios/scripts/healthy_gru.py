"""A healthy recurrent run: a GRU on a sequence-sum task, SGD with momentum and clipping."""

import sys
from pathlib import Path

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru, self.head = nn.GRU(4, 32, batch_first=True), nn.Linear(32, 2)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


def healthy():
    g = torch.Generator().manual_seed(1)
    return Net(), (torch.randn(8, 12, 4, generator=g), torch.arange(8) % 2)


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 12, 4, generator=g)
    y = (x[:, :, 0].sum(dim=1) > 0).long()
    fit(Net(), batches(x, y, 32), log_path, lr=3e-3, steps=300, every=5, clip=1.0)


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
