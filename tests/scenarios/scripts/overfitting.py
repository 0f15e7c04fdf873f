"""Overfitting on a tiny set: 64 noisy examples and a wide MLP trained for many epochs, so the eval loss
turns up while the training loss goes to 0. Fixed twin: 2048 examples and dropout."""

import sys
from pathlib import Path

import torch
from torch import nn


def model(fixed: bool) -> nn.Module:
    return nn.Sequential(nn.Linear(16, 256), nn.ReLU(), *([nn.Dropout(0.3)] if fixed else []), nn.Linear(256, 4))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 16, generator=g), torch.arange(8) % 4


def buggy():
    return model(False), _batch()


def fixed():
    return model(True), _batch()


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit, teacher_data

    torch.manual_seed(0)
    n = 2048 if variant == "fixed" else 64
    x, y = teacher_data(n + 512, noise=3.0)
    held_out = x[n:], y[n:]
    fit(model(variant == "fixed"), batches(x[:n], y[:n], 32), log_path, lr=3e-3, steps=600, every=10, eval_batch=held_out)


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
