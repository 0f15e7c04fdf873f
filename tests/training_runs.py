"""Tiny real PyTorch training runs that reproduce each training pathology, and log writers.

Every run is a genuine CPU training loop with a fixed seed (a second or two each), so the
detectors are tested on curves that real optimisers produce rather than on hand-drawn ones.
A run yields plain records (`{"step": 10, "loss": 0.7, ...}`); `write_log` renders them in the
formats trainers print (HF Trainer dict lines, JSON lines, CSV, nanoGPT lines, key=value).

`run(name)` is memoised per process, so a test session trains each run at most once however
many test modules ask for it.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

FORMATS = ("hf", "jsonl", "csv", "nanogpt", "kv")


# When set (by tests/live_training.py), every record a run logs is also handed to it as it is logged, so a
# background process can write the run's log live while it trains.
RECORD_SINK: list[Callable[[dict], None]] = []


class _Records(list):
    def append(self, record: dict) -> None:
        super().append(record)
        for sink in RECORD_SINK:
            sink(record)


@dataclass
class TrainingRun:
    """A finished run: what it reproduces and the metric records it logged."""

    name: str
    failure: str  # expected failure id (core/diagnosis/catalogue.py)
    description: str
    records: list[dict[str, float]] = field(default_factory=_Records)

    def values(self, metric: str) -> list[float]:
        return [r[metric] for r in self.records if metric in r]


# --------------------------------------------------------------------------------------------
# Helpers shared by the runs


def _teacher_task(n: int, dim: int = 16, classes: int = 4, seed: int = 0, noise: float = 0.0):
    """Inputs labelled by a fixed random linear teacher: learnable, with a known chance level."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, classes, generator=g)
    x = torch.randn(n, dim, generator=g)
    logits = x @ w + noise * torch.randn(n, classes, generator=g)
    return x, logits.argmax(dim=1)


def _mlp(dim: int, hidden: int, out: int, depth: int = 2, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = dim
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


def _grad_norm(params: Iterable[torch.Tensor]) -> float:
    grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.cat(grads).norm())


def _weights_snapshot(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def _update_ratio(before: torch.Tensor, model: nn.Module) -> float:
    """||W_after - W_before|| / ||W_before||: the weight-update ratio of the debugging guide."""
    after = _weights_snapshot(model)
    return float((after - before).norm() / before.norm().clamp_min(1e-12))


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).float().mean())


def _classifier_run(name: str, failure: str, description: str, *, steps: int, lr: float,
                    optimizer: str = "adam", n_train: int = 4096, n_eval: int = 1024, dim: int = 16,
                    classes: int = 4, hidden: int = 64, depth: int = 2, batch: int = 64,
                    act: type[nn.Module] = nn.ReLU, eval_every: int = 25, seed: int = 0, warmup: int = 0,
                    label_noise: float = 0.0, shuffle_labels: bool = False,
                    corrupt_steps: frozenset[int] = frozenset(), detach_output: bool = False,
                    stale_optimizer: bool = False, log_num_classes: bool = False,
                    layer_grad_norms: bool = False) -> TrainingRun:
    """One supervised classification loop; the keyword switches inject each pathology."""
    torch.manual_seed(seed)
    x, y = _teacher_task(n_train + n_eval, dim, classes, seed=seed + 1, noise=label_noise)
    if shuffle_labels:
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 2))]
    x_tr, y_tr, x_ev, y_ev = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    model = _mlp(dim, hidden, classes, depth, act)
    params = list(_mlp(dim, hidden, classes, depth, act).parameters()) if stale_optimizer else list(model.parameters())
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr))
    loss_fn = nn.CrossEntropyLoss()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    g = torch.Generator().manual_seed(seed + 3)
    out = TrainingRun(name, failure, description)
    for step in range(1, steps + 1):
        step_lr = lr * min(1.0, step / warmup) if warmup else lr
        for group in opt.param_groups:
            group["lr"] = step_lr
        idx = torch.randint(0, n_train, (batch,), generator=g)
        xb, yb = x_tr[idx], y_tr[idx]
        if step in corrupt_steps:
            xb = xb * 40.0  # one corrupted batch (e.g. unnormalised images slipping through)
        logits = model(xb)
        if detach_output:
            logits = logits.detach().requires_grad_(True)  # the bug: graph cut before the loss
        loss = loss_fn(logits, yb)
        opt.zero_grad()
        model.zero_grad()
        loss.backward()
        before = _weights_snapshot(model)
        rec: dict[str, float] = {"step": step, "loss": loss.item(), "grad_norm": _grad_norm(model.parameters()),
                                 "lr": step_lr, "accuracy": _accuracy(logits.detach(), yb)}
        if layer_grad_norms:
            rec["grad_norm/first_layer"] = float(linears[0].weight.grad.norm())
            rec["grad_norm/last_layer"] = float(linears[-1].weight.grad.norm())
        if stale_optimizer:
            for p in params:  # the stale copy gets gradients of the same size, so Adam steps it
                p.grad = torch.randn_like(p) * 0.01
        opt.step()
        rec["update_ratio"] = _update_ratio(before, model)
        if log_num_classes and step == 1:
            rec["num_classes"] = classes
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                ev_logits = model(x_ev)
                rec["eval_loss"] = float(loss_fn(ev_logits, y_ev))
                rec["eval_accuracy"] = _accuracy(ev_logits, y_ev)
        out.records.append(rec)
    return out


# --------------------------------------------------------------------------------------------
# The runs


def healthy() -> TrainingRun:
    return _classifier_run("healthy", "healthy", "MLP on a learnable teacher task, Adam lr 3e-3, plenty of data",
                           steps=300, lr=3e-3, label_noise=0.5)


def healthy_sgd() -> TrainingRun:
    return _classifier_run("healthy_sgd", "healthy", "Same task with SGD lr 0.1: slower but steady",
                           steps=300, lr=0.1, optimizer="sgd", seed=5, label_noise=0.5)


def lr_too_high_nan() -> TrainingRun:
    return _classifier_run("lr_too_high_nan", "nan_loss",
                           "SGD warming up to lr 20: the loss climbs, overflows and turns NaN",
                           steps=200, lr=20.0, warmup=100, optimizer="sgd", seed=2, label_noise=0.5)


def lr_too_high_divergence() -> TrainingRun:
    return _classifier_run("lr_too_high_divergence", "divergence",
                           "Adam warming up to lr 0.5: learns, then the loss climbs back to chance and stays",
                           steps=250, lr=0.5, warmup=100, seed=2, hidden=128, depth=3, label_noise=0.5)


def lr_too_high_early_nan() -> TrainingRun:
    return _classifier_run("lr_too_high_early_nan", "nan_loss",
                           "SGD warming up to lr 40 in 10 steps: NaN within the first twenty steps",
                           steps=60, lr=40.0, warmup=10, optimizer="sgd", seed=2, label_noise=0.5)


def healthy_variant(seed: int, optimizer: str = "adam", lr: float = 3e-3, hidden: int = 64) -> TrainingRun:
    return _classifier_run(f"healthy_s{seed}", "healthy", f"healthy {optimizer} run, seed {seed}",
                           steps=250, lr=lr, optimizer=optimizer, seed=seed, hidden=hidden, label_noise=0.5)


def lr_too_low() -> TrainingRun:
    return _classifier_run("lr_too_low", "slow_convergence", "SGD lr 5e-3: a slow, near-linear burn",
                           steps=300, lr=5e-3, optimizer="sgd", seed=3)


def hockey_stick() -> TrainingRun:
    return _classifier_run("hockey_stick", "hockey_stick",
                           "Adam lr 0.05: the loss drops at once, then bounces on a flat floor",
                           steps=300, lr=0.05, seed=4, label_noise=0.5)


def detached_graph() -> TrainingRun:
    return _classifier_run("detached_graph", "vanishing_gradients",
                           "logits detached before the loss: every parameter gradient is exactly 0",
                           steps=200, lr=1e-3, seed=6, detach_output=True)


def frozen_weights() -> TrainingRun:
    return _classifier_run("frozen_weights", "vanishing_gradients",
                           "optimizer built over a stale copy of the model: gradients flow, weights never move",
                           steps=200, lr=1e-3, seed=7, stale_optimizer=True)


def shuffled_labels() -> TrainingRun:
    return _classifier_run("shuffled_labels", "plateau",
                           "labels shuffled: nothing to learn, the loss sits at ln(num_classes)",
                           steps=300, lr=1e-3, seed=8, classes=10, hidden=16, n_train=20000,
                           shuffle_labels=True, log_num_classes=True)


def shuffled_labels_unknown_k() -> TrainingRun:
    return _classifier_run("shuffled_labels_unknown_k", "plateau",
                           "4 classes, labels shuffled, num_classes not logged: the loss sits at ln(4)",
                           steps=250, lr=1e-3, seed=19, classes=4, hidden=16, n_train=20000, shuffle_labels=True)


def deep_sigmoid() -> TrainingRun:
    return _classifier_run("deep_sigmoid", "vanishing_gradients",
                           "20-layer sigmoid MLP with SGD: the first layers receive almost no gradient",
                           steps=200, lr=0.05, optimizer="sgd", seed=9, depth=20, hidden=32,
                           act=nn.Sigmoid, layer_grad_norms=True)


def loss_spike() -> TrainingRun:
    return _classifier_run("loss_spike", "loss_spike",
                           "healthy run hit by one corrupted batch at step 150: a spike that recovers",
                           steps=300, lr=3e-3, seed=10, label_noise=0.5, corrupt_steps=frozenset({150}))


def overfitting(seed: int = 11, examples: int = 48) -> TrainingRun:
    """A wide MLP memorising a few dozen noisy examples: train loss falls to ~0, eval loss turns up."""
    torch.manual_seed(seed)
    x, y = _teacher_task(examples + 1024, 16, 4, seed=seed + 1, noise=2.0)
    x_tr, y_tr, x_ev, y_ev = x[:examples], y[:examples], x[examples:], y[examples:]
    model = _mlp(16, 512, 4, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    out = TrainingRun("overfitting", "overfitting", f"512-wide MLP on {examples} noisy examples, full batch")
    for step in range(1, 301):
        logits = model(x_tr)
        loss = loss_fn(logits, y_tr)
        opt.zero_grad()
        loss.backward()
        rec = {"step": step, "loss": loss.item(), "grad_norm": _grad_norm(model.parameters()), "lr": 1e-3,
               "accuracy": _accuracy(logits.detach(), y_tr)}
        opt.step()
        if step % 10 == 0:
            with torch.no_grad():
                ev = model(x_ev)
                rec["eval_loss"] = float(loss_fn(ev, y_ev))
                rec["eval_accuracy"] = _accuracy(ev, y_ev)
        out.records.append(rec)
    return out


def exploding_rnn(seed: int = 13, radius: float = 2.0) -> TrainingRun:
    """An unclipped tanh RNN on 200-step sequences with recurrent spectral radius > 1: gradient cliffs."""
    torch.manual_seed(seed)
    rnn = nn.RNN(4, 32, nonlinearity="tanh", batch_first=True)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(32, 32))
        rnn.weight_hh_l0.copy_(radius * q)
    head = nn.Linear(32, 1)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.05)
    g = torch.Generator().manual_seed(seed + 1)
    out = TrainingRun("exploding_rnn", "exploding_gradients",
                      f"unclipped tanh RNN, seq len 200, recurrent spectral radius {radius}, SGD lr 0.05")
    for step in range(1, 151):
        x = torch.randn(16, 200, 4, generator=g)
        target = x[:, :, 0].sum(dim=1, keepdim=True) * 0.1
        h, _ = rnn(x)
        loss = nn.functional.mse_loss(head(h[:, -1]), target)
        opt.zero_grad()
        loss.backward()
        gn = _grad_norm(params)
        out.records.append({"step": step, "loss": loss.item(), "grad_norm": gn, "lr": 0.05})
        opt.step()
    return out


def _policy_run(name: str, failure: str, description: str, *, entropy_coef: float, kl_coef: float,
                lr: float, steps: int = 200, vocab: int = 64, seed: int = 15, good_tokens: int = 4,
                ref_tracks_policy: bool = False) -> TrainingRun:
    """REINFORCE on a bag-of-tokens policy: reward 1 for the 4 'correct' tokens, group-normalised advantages."""
    torch.manual_seed(seed)
    logits = torch.zeros(vocab, requires_grad=True)
    ref = torch.zeros(vocab)
    opt = torch.optim.Adam([logits], lr=lr)
    good = torch.arange(good_tokens)
    g = torch.Generator().manual_seed(seed + 1)
    out = TrainingRun(name, failure, description)
    for step in range(1, steps + 1):
        logp = torch.log_softmax(logits, dim=0)
        probs = logp.exp()
        tokens = torch.multinomial(probs.detach(), 32, replacement=True, generator=g)
        reward = torch.isin(tokens, good).float()
        adv = reward - reward.mean()
        adv_std = float(adv.std())
        if adv_std > 1e-6:
            adv = adv / adv_std
        entropy = -(probs * logp).sum()
        if ref_tracks_policy:  # the bug: the reference model is updated along with the policy
            ref = logits.detach().clone()
        kl = (probs * (logp - torch.log_softmax(ref, dim=0))).sum()
        loss = -(adv * logp[tokens]).mean() - entropy_coef * entropy + kl_coef * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.records.append({"step": step, "loss": loss.item(), "reward": float(reward.mean()),
                            "entropy": entropy.item(), "kl": kl.item(), "advantage_mean": float(adv.mean()),
                            "advantage_std": adv_std, "vocab_size": vocab, "lr": lr})
    return out


def rl_entropy_collapse() -> TrainingRun:
    return _policy_run("rl_entropy_collapse", "mode_collapse",
                       "no entropy bonus, no KL: the policy collapses onto one token, advantages vanish",
                       entropy_coef=0.0, kl_coef=0.0, lr=0.1)


def rl_kl_inactive() -> TrainingRun:
    return _policy_run("rl_kl_inactive", "mode_collapse",
                       "reference model tracks the policy: KL is always 0, the policy collapses onto 2 tokens",
                       entropy_coef=0.0, kl_coef=0.1, lr=0.1, good_tokens=2, ref_tracks_policy=True, seed=21)


def rl_gibberish() -> TrainingRun:
    return _policy_run("rl_gibberish", "mode_collapse",
                       "entropy bonus far too large: the policy stays uniform (gibberish)",
                       entropy_coef=5.0, kl_coef=0.0, lr=0.05)


def rl_healthy() -> TrainingRun:
    return _policy_run("rl_healthy", "healthy", "modest entropy bonus and a KL anchor: reward rises, entropy eases",
                       entropy_coef=0.02, kl_coef=0.05, lr=0.02, steps=150)


def _clipped_run(name: str, failure: str, description: str, *, target_scale: float, lr: float, clip: float,
                 steps: int = 150, seed: int = 17) -> TrainingRun:
    """Regression under clip_grad_norm_: targets far from the init keep the norm above the clip on every step."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 16, generator=g)
    y = target_scale * (x @ torch.randn(16, 1, generator=g))
    model = _mlp(16, 32, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    out = TrainingRun(name, failure, description)
    for step in range(1, steps + 1):
        loss = nn.functional.mse_loss(model(x), y)  # full batch: the curve shows the clipping, not batch noise
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)  # the norm before clipping, as HF logs it
        opt.step()
        out.records.append({"step": step, "loss": loss.item(), "grad_norm": float(norm), "max_grad_norm": clip,
                            "lr": lr})
    return out


def clipped_every_step() -> TrainingRun:
    return _clipped_run("clipped_every_step", "exploding_gradients",
                        "clip 0.5 against a grad norm of ~4: every step is clipped, the loss falls linearly",
                        target_scale=1.0, lr=0.01, clip=0.5)


def clipped_healthy() -> TrainingRun:
    return _clipped_run("clipped_healthy", "healthy", "clip 5.0 above a grad norm that falls under 1",
                        target_scale=1.0, lr=0.05, clip=5.0)


def _effective_rank_ratio(z: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) / dim (Roy & Vetterli's effective rank)."""
    s = torch.linalg.svdvals(z)
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return float(torch.exp(entropy)) / z.shape[1]


def rank_collapse(diversity_weight: float = 0.0, seed: int = 16) -> TrainingRun:
    """An encoder trained towards a fixed point: the loss converges beautifully, the representations collapse."""
    torch.manual_seed(seed)
    enc = _mlp(32, 64, 32, depth=2)
    target = torch.randn(32)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    probe = torch.randn(256, 32, generator=torch.Generator().manual_seed(seed + 1))
    g = torch.Generator().manual_seed(seed + 2)
    failure = "rank_collapse" if diversity_weight < 0.5 else "healthy"
    out = TrainingRun(f"rank_collapse_w{diversity_weight:g}", failure,
                      f"fixed-point loss with diversity weight {diversity_weight}")
    for step in range(1, 301):
        x = torch.randn(64, 32, generator=g)
        z = enc(x)
        fixed_point = ((z - target) ** 2).mean()
        diversity = -((z - z.mean(0)) ** 2).mean().clamp_max(4.0)
        loss = (1 - diversity_weight) * fixed_point + diversity_weight * diversity
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec = {"step": step, "loss": loss.item()}
        if step % 10 == 0 or step == 1:
            with torch.no_grad():
                rec["effective_rank"] = _effective_rank_ratio(enc(probe))
        out.records.append(rec)
    return out


def slow_throughput() -> TrainingRun:
    """A healthy run whose step time doubles at step 150 and stalls every 10th step after (simulated clock).

    Timing comes from a deterministic cost model, not the wall clock, so the log is reproducible.
    """
    run = healthy()
    out = TrainingRun("slow_throughput", "slow_throughput", "healthy curve, data loader starves from step 150")
    for rec in run.records:
        step = int(rec["step"])
        step_time = 50.0 + (step % 7)  # ms
        if step >= 150:
            step_time *= 2.2
            if step % 10 == 0:
                step_time *= 4
        out.records.append({**rec, "step_time": step_time, "throughput": 64 * 1000.0 / step_time})
    return out


RUNS: dict[str, Callable[[], TrainingRun]] = {
    "healthy": healthy,
    "healthy_sgd": healthy_sgd,
    "lr_too_high_nan": lr_too_high_nan,
    "lr_too_high_divergence": lr_too_high_divergence,
    "lr_too_high_early_nan": lr_too_high_early_nan,
    "healthy_s20": functools.partial(healthy_variant, 20),
    "healthy_s21": functools.partial(healthy_variant, 21, "sgd", 0.2, 128),
    "shuffled_labels_unknown_k": shuffled_labels_unknown_k,
    "rl_kl_inactive": rl_kl_inactive,
    "lr_too_low": lr_too_low,
    "hockey_stick": hockey_stick,
    "detached_graph": detached_graph,
    "frozen_weights": frozen_weights,
    "shuffled_labels": shuffled_labels,
    "deep_sigmoid": deep_sigmoid,
    "loss_spike": loss_spike,
    "overfitting": overfitting,
    "exploding_rnn": exploding_rnn,
    "rl_entropy_collapse": rl_entropy_collapse,
    "rl_gibberish": rl_gibberish,
    "rl_healthy": rl_healthy,
    "rank_collapse": rank_collapse,
    "rank_healthy": functools.partial(rank_collapse, diversity_weight=0.5),
    "slow_throughput": slow_throughput,
    "clipped_every_step": clipped_every_step,
    "clipped_healthy": clipped_healthy,
}


@functools.cache
def run(name: str) -> TrainingRun:
    """Train run `name` once per process (torch on one thread keeps it deterministic and cheap)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return RUNS[name]()
    finally:
        torch.set_num_threads(threads)


def to_parsed(training_run: TrainingRun | list[dict], max_points: int = 2000, rank: int | None = None):
    """The run's records as a ParsedLog built straight from SeriesBuilder (no log parser involved)."""
    from ml_debug_mcp.core.logs.series import ParsedLog, SeriesBuilder, canonical_metric_name

    records = training_run.records if isinstance(training_run, TrainingRun) else training_run
    builders: dict[str, SeriesBuilder] = {}
    for r in records:
        for key, value in r.items():
            if key == "step":
                continue
            name = canonical_metric_name(key)
            builders.setdefault(name, SeriesBuilder(name, rank=rank, max_points=max_points)).add(float(r["step"]),
                                                                                                   float(value))
    return ParsedLog(format="records", series=[b.build() for b in builders.values()], records=len(records))


# --------------------------------------------------------------------------------------------
# Log writers


def _rounded(record: dict) -> dict:
    """Five significant digits, as trainers usually print (keeps the committed logs small)."""
    return {k: (float(f"{v:.5g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()}


def _num(v: float) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _hf_lines(records: list[dict]) -> list[str]:
    """HF Trainer prints python dicts; eval metrics come on their own line with an eval_ prefix."""
    lines = []
    total = records[-1]["step"] if records else 1
    for r in records:
        epoch = round(3.0 * r["step"] / total, 4)
        train = {("learning_rate" if k == "lr" else ("train_accuracy" if k == "accuracy" else k)): v
                 for k, v in r.items() if k not in {"step", "eval_loss", "eval_accuracy"}}
        lines.append(repr({**train, "epoch": epoch}))
        if "eval_loss" in r:
            lines.append(repr({k: v for k, v in r.items() if k.startswith("eval_")} | {"epoch": epoch}))
    return lines


def _jsonl_lines(records: list[dict]) -> list[str]:
    return [json.dumps(r) for r in records]


def _nanogpt_lines(records: list[dict]) -> list[str]:
    """nanoGPT: `iter N: loss X, time Yms` every step, `step N: train loss X, val loss Y` at eval."""
    lines = []
    for r in records:
        extras = "".join(f", {k} {_num(v)}" for k, v in r.items() if k not in {"step", "loss", "eval_loss",
                                                                                 "eval_accuracy", "step_time"})
        time_part = f", time {r['step_time']:.2f}ms" if "step_time" in r else ""
        lines.append(f"iter {int(r['step'])}: loss {_num(r['loss'])}{time_part}{extras}")
        if "eval_loss" in r:
            lines.append(f"step {int(r['step'])}: train loss {_num(r['loss'])}, val loss {_num(r['eval_loss'])}")
    return lines


def _kv_lines(records: list[dict]) -> list[str]:
    return [" ".join(f"{k}={_num(v)}" for k, v in r.items()) for r in records]


def write_log(training_run: TrainingRun, path: Path, fmt: str) -> Path:
    """Write the run's records to `path` in one of FORMATS; returns the path."""
    records = [_rounded(r) for r in training_run.records]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        keys: list[str] = []
        for r in records:
            keys += [k for k in r if k not in keys]
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            for r in records:
                writer.writerow({k: _num(v) for k, v in r.items()})
        return path
    render = {"hf": _hf_lines, "jsonl": _jsonl_lines, "nanogpt": _nanogpt_lines, "kv": _kv_lines}[fmt]
    path.write_text("\n".join(render(records)) + "\n")
    return path
