"""Logs written by real (tiny) PyTorch training runs, parsed back.

A small MLP learns a synthetic regression task on the CPU for a few hundred steps and logs the
way training scripts do: `logging` key/value lines, JSON lines and TensorBoard scalars. The
parsed series must equal what was logged, and show the loss going down; a second run with an
absurd learning rate must show its divergence to NaN/Inf at the step it happened.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from ml_debug_mcp.core.logs.metrics import parse_metrics
from ml_debug_mcp.core.logs.tail import tail_file

# Importing torch and training takes a few seconds, more on a loaded machine.
pytestmark = pytest.mark.slow


def train(log_dir: Path, steps: int, lr: float, seed: int = 0) -> list[dict]:
    """Train a 2-layer MLP, logging every step in three formats; returns the logged records."""
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(seed)
    x = torch.randn(512, 8)
    y = (x @ torch.randn(8, 1)).tanh() + 0.05 * torch.randn(512, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))

    logger = logging.getLogger(f"train-{log_dir.name}")
    logger.propagate = False
    handler = logging.FileHandler(log_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(filename)s:%(lineno)d %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info("starting: %d samples, model with %d parameters", len(x),
                sum(p.numel() for p in model.parameters()))
    records = []
    with SummaryWriter(str(log_dir / "tb")) as writer, open(log_dir / "metrics.jsonl", "w") as jsonl:
        for step in range(steps):
            idx = torch.randint(0, len(x), (64,))
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
            opt.step()
            sched.step()
            record = {"step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"], "grad_norm": grad_norm}
            records.append(record)
            logger.info("step %d | loss %.6f | lr %.3e | grad_norm %.4f", step, record["loss"], record["lr"], grad_norm)
            jsonl.write(json.dumps(record) + "\n")
            writer.add_scalar("train/loss", record["loss"], step)
            writer.add_scalar("train/grad_norm", grad_norm, step)
    logger.removeHandler(handler)
    handler.close()
    return records


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("healthy")
    return log_dir, train(log_dir, steps=200, lr=0.05)


def test_text_log_of_a_real_run(healthy_run):
    log_dir, records = healthy_run
    parsed = parse_metrics(log_dir / "train.log")
    assert parsed.format == "keyvalue"
    loss = parsed.get("loss")
    assert loss.steps == [float(r["step"]) for r in records]
    assert loss.values == [float(f"{r['loss']:.6f}") for r in records]
    assert parsed.get("lr").values == [float(f"{r['lr']:.3e}") for r in records]
    assert parsed.get("grad_norm").stats.count == len(records)
    first, last = loss.values[:20], loss.values[-20:]
    assert sum(last) / 20 < 0.5 * sum(first) / 20  # it learned
    assert parsed.unparsed_lines == 1  # the "starting:" line


def test_jsonl_and_tensorboard_of_the_same_run_agree(healthy_run):
    log_dir, records = healthy_run
    from_json = parse_metrics(log_dir / "metrics.jsonl").get("loss")
    assert from_json.values == [r["loss"] for r in records]
    from_tb = parse_metrics(log_dir / "tb").get("loss")
    assert from_tb.steps == from_json.steps
    assert from_tb.values == pytest.approx(from_json.values, rel=1e-6)  # TensorBoard stores float32


def test_tail_of_a_real_run_reports_the_last_values(healthy_run):
    log_dir, records = healthy_run
    result = tail_file(log_dir / "train.log", lines=5)
    assert [ln.text.endswith(f"grad_norm {r['grad_norm']:.4f}") for ln, r in zip(result.lines, records[-5:])] == [True] * 5
    last = {m.name: m for m in result.metrics}
    assert last["loss"].step == records[-1]["step"]
    assert last["loss"].value == float(f"{records[-1]['loss']:.6f}")
    assert result.errors == []


def test_diverging_run_shows_where_it_blew_up(tmp_path):
    records = train(tmp_path, steps=120, lr=50.0, seed=1)
    blown = next(r["step"] for r in records if not math.isfinite(r["loss"]))
    parsed = parse_metrics(tmp_path / "train.log")
    loss = parsed.get("loss")
    assert loss.stats.first_nonfinite_step == blown
    assert loss.stats.nan_count + loss.stats.inf_count == sum(not math.isfinite(r["loss"]) for r in records)
    assert loss.nonfinite[0].step == blown
    assert parse_metrics(tmp_path / "tb").get("loss").stats.first_nonfinite_step == blown
