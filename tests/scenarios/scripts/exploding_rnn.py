"""An exploding RNN: a ReLU recurrence with a recurrent weight scaled to 1.5 over
40 steps and no gradient clipping, so gradient norms grow by orders of magnitude. Fixed twin: a GRU
and clip_grad_norm_(1.0)."""

import sys
from pathlib import Path

import torch
from torch import nn


class Recurrent(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.cell = nn.GRU(8, 32, batch_first=True) if fixed else nn.RNN(8, 32, nonlinearity="relu", batch_first=True)
        if not fixed:
            with torch.no_grad():
                self.cell.weight_hh_l0.copy_(1.5 * torch.eye(32))  # the bug: a recurrence that amplifies
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        out, _ = self.cell(x)
        return self.head(out[:, -1])


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 40, 8, generator=g), torch.arange(8) % 4


def buggy():
    return Recurrent(False), _batch()


def fixed():
    return Recurrent(True), _batch()


def train(variant: str, log_path: Path) -> None:
    from scenario_trainer import batches, fit

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 40, 8, generator=g)
    y = (x[:, :, 0].sum(dim=1) > 0).long() + 2 * (x[:, :, 1].sum(dim=1) > 0).long()
    fixed_run = variant == "fixed"
    fit(Recurrent(fixed_run), batches(x, y, 32), log_path, lr=1e-3, steps=150, clip=1.0 if fixed_run else None)


if __name__ == "__main__":
    train(sys.argv[1], Path(sys.argv[2]))
