"""A healthy run: a small MLP on teacher-labelled data at a sensible learning rate. No fixed twin needed."""

import sys
from pathlib import Path

import torch
from torch import nn


def model():
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit, teacher_data

    torch.manual_seed(0)
    x, y = teacher_data(2048)
    fit(model(), batches(x, y, 32), log_path, lr=3e-3, steps=200)


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
