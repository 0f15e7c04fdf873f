"""A data-loader bottleneck: each batch is decoded in the training process with a slow per-sample
Python transform, so data time is most of every step. Fixed twin: the transform is done once, up front."""

import sys
import time
from pathlib import Path

import torch
from torch import nn


def model() -> nn.Module:
    # Wide enough that a step takes milliseconds: scheduler jitter on a busy machine stays well
    # below the 3x a stall detector looks for, as it does in real training.
    return nn.Sequential(nn.Linear(16, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 4))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 16, generator=g), torch.arange(8) % 4


def buggy():
    return model(), _batch()


def fixed():
    return model(), _batch()


def slow_decode(batch):
    x, y = batch
    time.sleep(0.04 * len(x) / 256)  # the bug: decoding a batch on the training thread, sample by sample
    return x, y


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit, teacher_data

    torch.manual_seed(0)
    x, y = teacher_data(2048)
    fit(model(), batches(x, y, 256), log_path, lr=1e-3, steps=120, timing=True,
        prepare=None if variant == "fixed" else slow_decode)


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
