"""A shape bug: the head's in_features (32) does not match the hidden layer's output (64), so the first
forward raises "mat1 and mat2 shapes cannot be multiplied". Fixed twin: in_features=64."""

import torch
from torch import nn


def model(fixed: bool):
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64 if fixed else 32, 4))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 16, generator=g), torch.arange(8) % 4


def buggy():
    return model(False), _batch()


def fixed():
    return model(True), _batch()


if __name__ == "__main__":
    from scenario_trainer import main

    main(model)
