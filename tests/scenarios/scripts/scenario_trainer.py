"""The common trainer the scenario scripts share: a plain loop that logs one key-value line per step.

Its lines read `step 10 | loss 1.2345 | lr 0.001 | grad_norm 0.51 | ...` (the key-value form nanoGPT-style
loops print). A crash is logged the way `logger.exception` would: the traceback lands in the log and
the run stops, which is what the server sees of a crashed job.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn


def teacher_data(n: int, dim: int = 16, classes: int = 4, seed: int = 0, noise: float = 0.0):
    """Inputs labelled by a fixed random linear teacher: learnable, with a known chance level."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, classes, generator=g)
    x = torch.randn(n, dim, generator=g)
    return x, (x @ w + noise * torch.randn(n, classes, generator=g)).argmax(dim=1)


def batches(x: torch.Tensor, y: torch.Tensor, size: int, seed: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches forever, the last one of each epoch smaller when `size` does not divide n."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), size):
            idx = order[i:i + size]
            yield x[idx], y[idx]


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def grad_norm(params: Iterable[torch.Tensor]) -> float:
    grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def fit(model: nn.Module, data: Iterable[Any], log_path: Path, *, lr: float, steps: int,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None, every: int = 2, clip: float | None = None,
        eval_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
        layer_norms: dict[str, nn.Module] | None = None, timing: bool = False,
        prepare: Callable[[Any], Any] | None = None) -> None:
    """Adam on `data` for `steps` steps, one log line every `every` steps; a crash ends the log with its traceback."""
    torch.set_num_threads(1)  # the suite trains two scripts at once on small machines: no oversubscribed cores
    loss_fn = loss_fn or nn.functional.cross_entropy
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"training {type(model).__name__}: {sum(p.numel() for p in model.parameters())} parameters, "
                  f"lr {lr:g}, {steps} steps\n")
        source = iter(data)
        try:
            for step in range(1, steps + 1):
                started = time.perf_counter()
                x, y = next(source)
                if prepare is not None:
                    x, y = prepare((x, y))
                fetched = time.perf_counter()
                model.train()
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                norm = grad_norm(model.parameters())
                per_layer = {name: grad_norm(m.parameters()) for name, m in (layer_norms or {}).items()}
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                ended = time.perf_counter()
                if step % every and step != 1:
                    continue
                fields = {"loss": float(loss.detach()), "lr": lr, "grad_norm": norm}
                fields.update({f"grad_norm_{name}": v for name, v in per_layer.items()})
                if eval_batch is not None:
                    model.eval()
                    with torch.no_grad():
                        fields["eval_loss"] = float(loss_fn(model(eval_batch[0]), eval_batch[1]))
                if timing:
                    fields["data_time"] = fetched - started
                    fields["step_time"] = ended - started
                log.write(" | ".join([f"step {step}"] + [f"{k} {_fmt(v)}" for k, v in fields.items()]) + "\n")
                log.flush()
        except Exception:
            log.write(f"Error at step {step}:\n{traceback.format_exc()}")
            return
        log.write("training finished\n")


def main(make: Callable[[bool], nn.Module], lr: float = 3e-3) -> None:
    """`python script.py buggy|fixed LOG`: train make(fixed) on teacher data for 200 steps."""
    import sys

    torch.manual_seed(0)
    x, y = teacher_data(2048)
    fit(make(sys.argv[1] == "fixed"), batches(x, y, 32), Path(sys.argv[2]), lr=lr, steps=200)
