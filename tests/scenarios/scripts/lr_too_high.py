"""Learning rate far too high: Adam at lr=1.0 throws a small MLP off its loss surface. Fixed twin: lr=3e-3."""

import sys
from pathlib import Path

import torch
from torch import nn

LEARNING_RATE = {"buggy": 1.0, "fixed": 3e-3}


def model():
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def _batch():
    from_teacher = torch.Generator().manual_seed(1)
    x = torch.randn(8, 16, generator=from_teacher)
    return x, torch.arange(8) % 4


def buggy():
    return model(), _batch()


def fixed():
    return model(), _batch()


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit, teacher_data

    torch.manual_seed(0)
    x, y = teacher_data(2048)
    fit(model(), batches(x, y, 32), log_path, lr=LEARNING_RATE[variant], steps=200)


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
