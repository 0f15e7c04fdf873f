"""Regenerate the log side of the evaluation set: `python tests/eval/generate_log_cases.py`.

Two sources, both deterministic:
- the tiny real PyTorch runs of tests/training_runs.py, written in several log formats;
- seeded synthetic curves for what tiny runs cannot show cheaply (thousands of steps, several
  ranks, a cumulative clock, a clamped norm) and logs that end in a crash.
Writes tests/eval/logs/*.log and tests/eval/logs/cases.json (format: tests/eval/README.md).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import training_runs as tr  # noqa: E402  (found through the sys.path entry above)

OUT = HERE / "logs"

# (case id, training run, format, label, accept, notes)
REAL_CASES = [
    ("healthy_hf", "healthy", "hf", "healthy", [], "Adam 3e-3 on a learnable task"),
    ("healthy_csv", "healthy", "csv", "healthy", [], "same run as CSV"),
    ("healthy_sgd_nanogpt", "healthy_sgd", "nanogpt", "healthy", [], "SGD 0.1, nanoGPT lines"),
    ("healthy_s20_kv", "healthy_s20", "kv", "healthy", [], "another seed, key=value lines"),
    ("healthy_s21_jsonl", "healthy_s21", "jsonl", "healthy", [], "wide SGD run"),
    ("rl_healthy_jsonl", "rl_healthy", "jsonl", "healthy", [], "policy run with entropy bonus and KL anchor"),
    ("rank_healthy_csv", "rank_healthy", "csv", "healthy", [], "fixed-point loss balanced by a diversity term"),
    ("nan_warmup_jsonl", "lr_too_high_nan", "jsonl", "nan_loss", [], "SGD warm-up to lr 20: NaN at step ~104"),
    ("nan_warmup_hf", "lr_too_high_nan", "hf", "nan_loss", [], "same, HF dict lines with nan"),
    ("nan_early_csv", "lr_too_high_early_nan", "csv", "nan_loss", [], "lr 40 in 10 steps: NaN at step ~25"),
    ("nan_warmup_kv", "lr_too_high_nan", "kv", "nan_loss", [], "key=value lines with 'loss=nan'"),
    ("divergence_csv", "lr_too_high_divergence", "csv", "divergence", [], "Adam warm-up to 0.5: back to chance"),
    ("divergence_nanogpt", "lr_too_high_divergence", "nanogpt", "divergence", [], "same, nanoGPT lines"),
    ("slow_burn_hf", "lr_too_low", "hf", "slow_convergence", [], "SGD 5e-3: linear slow decrease"),
    ("slow_burn_kv", "lr_too_low", "kv", "slow_convergence", [], "same, key=value"),
    ("hockey_jsonl", "hockey_stick", "jsonl", "hockey_stick", [], "Adam 0.05: instant drop, flat floor"),
    ("hockey_csv", "hockey_stick", "csv", "hockey_stick", [], "same, CSV"),
    ("detached_kv", "detached_graph", "kv", "vanishing_gradients", [], "logits detached: grad norm 0"),
    ("frozen_hf", "frozen_weights", "hf", "vanishing_gradients", [], "optimizer on a stale copy: update ratio 0"),
    ("deep_sigmoid_jsonl", "deep_sigmoid", "jsonl", "vanishing_gradients", [],
     "20 sigmoid layers: first-layer grad ~1e-16 of the last"),
    ("shuffled_csv", "shuffled_labels", "csv", "plateau", [], "shuffled labels, num_classes logged"),
    ("shuffled_unknown_k_hf", "shuffled_labels_unknown_k", "hf", "plateau", [], "ln(4) guessed"),
    ("spike_hf", "loss_spike", "hf", "loss_spike", [], "one corrupted batch at step 150"),
    ("spike_nanogpt", "loss_spike", "nanogpt", "loss_spike", [], "same, nanoGPT lines"),
    ("overfit_jsonl", "overfitting", "jsonl", "overfitting", [], "512-wide MLP on 48 examples"),
    ("overfit_hf", "overfitting", "hf", "overfitting", [], "same, HF lines"),
    ("exploding_rnn_csv", "exploding_rnn", "csv", "exploding_gradients", [], "tanh RNN, radius 2, seq 200"),
    ("exploding_rnn_kv", "exploding_rnn", "kv", "exploding_gradients", [], "same, key=value"),
    ("entropy_collapse_jsonl", "rl_entropy_collapse", "jsonl", "mode_collapse", [], "entropy falls, advantages 0"),
    ("gibberish_hf", "rl_gibberish", "hf", "mode_collapse", [], "entropy > 0.9 ln(vocab)"),
    ("kl_inactive_csv", "rl_kl_inactive", "csv", "mode_collapse", [], "reference tracks the policy: KL 0"),
    ("rank_collapse_csv", "rank_collapse", "csv", "rank_collapse", [], "fixed-point loss only: erank 7%"),
    ("throughput_nanogpt", "slow_throughput", "nanogpt", "slow_throughput", [], "step time x2.2 and stalls"),
]

# Held-out runs: the same generators with seeds and settings the detectors were never tuned on.
# Labels come from how each run was built (checked against the raw records in `_check_label`),
# never from what classify says about it.
C = tr._classifier_run
HOLDOUT_CASES = [
    ("ho_healthy_adam_1e3", lambda: C("h1", "healthy", "", steps=300, lr=1e-3, seed=41, label_noise=0.5), "csv", "healthy"),
    ("ho_healthy_adam_1e2", lambda: C("h2", "healthy", "", steps=300, lr=1e-2, seed=42, label_noise=0.5), "hf", "healthy"),
    ("ho_healthy_sgd", lambda: C("h3", "healthy", "", steps=300, lr=0.2, optimizer="sgd", seed=43, label_noise=0.5),
     "kv", "healthy"),
    ("ho_healthy_deep_relu", lambda: C("h4", "healthy", "", steps=300, lr=2e-3, depth=4, seed=44, label_noise=0.5),
     "nanogpt", "healthy"),
    ("ho_rank_healthy", lambda: tr.rank_collapse(0.5, seed=57), "jsonl", "healthy"),
    ("ho_nan", lambda: C("n", "nan_loss", "", steps=150, lr=30.0, warmup=60, optimizer="sgd", seed=45, label_noise=0.5),
     "jsonl", "nan_loss"),
    ("ho_divergence", lambda: C("d", "divergence", "", steps=250, lr=0.8, warmup=100, seed=46, hidden=128, depth=3,
                                label_noise=0.5), "hf", "divergence"),
    ("ho_slow", lambda: C("s", "slow_convergence", "", steps=300, lr=3e-3, optimizer="sgd", seed=47), "csv",
     "slow_convergence"),
    ("ho_hockey", lambda: C("k", "hockey_stick", "", steps=300, lr=0.08, seed=48, label_noise=0.5), "kv", "hockey_stick"),
    ("ho_detached", lambda: C("x", "vanishing_gradients", "", steps=200, lr=1e-3, seed=49, detach_output=True), "hf",
     "vanishing_gradients"),
    ("ho_frozen", lambda: C("f", "vanishing_gradients", "", steps=200, lr=1e-3, seed=50, stale_optimizer=True), "csv",
     "vanishing_gradients"),
    ("ho_deep_sigmoid", lambda: C("g", "vanishing_gradients", "", steps=200, lr=0.05, optimizer="sgd", seed=58, depth=16,
                                  hidden=32, act=tr.nn.Sigmoid, layer_grad_norms=True), "jsonl", "vanishing_gradients"),
    ("ho_shuffled_3", lambda: C("p", "plateau", "", steps=250, lr=1e-3, seed=51, classes=3, hidden=16, n_train=20000,
                                shuffle_labels=True), "nanogpt", "plateau"),
    ("ho_spike", lambda: C("sp", "loss_spike", "", steps=300, lr=3e-3, seed=52, label_noise=0.5,
                           corrupt_steps=frozenset({100})), "jsonl", "loss_spike"),
    ("ho_overfit", lambda: tr.overfitting(seed=53, examples=64), "csv", "overfitting"),
    ("ho_rnn", lambda: tr.exploding_rnn(seed=54, radius=2.2), "hf", "exploding_gradients"),
    ("ho_rl_collapse", lambda: tr._policy_run("r", "mode_collapse", "", entropy_coef=0.0, kl_coef=0.0, lr=0.15, seed=55,
                                              good_tokens=2), "csv", "mode_collapse"),
    ("ho_rank_collapse", lambda: tr.rank_collapse(seed=56), "kv", "rank_collapse"),
]


def _check_label(case_id: str, run: tr.TrainingRun, label: str) -> None:
    """Ground truth from the raw records: a run labelled anything but nan_loss must stay finite."""
    finite = all(math.isfinite(v) for r in run.records for v in r.values())
    if (label == "nan_loss") == finite:
        raise SystemExit(f"{case_id}: labelled {label} but the run is {'finite' if finite else 'non-finite'}")


# ------------------------------------------------------------------------------------------------
# Synthetic curves (seeded)


def _decay(n: int, start: float, floor: float, tau: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n)
    clean = floor + (start - floor) * np.exp(-t / tau)
    return clean * np.exp(noise * rng.standard_normal(n))


def _records(**columns: np.ndarray | list) -> list[dict]:
    n = len(next(iter(columns.values())))
    out = []
    for i in range(n):
        rec: dict = {"step": i + 1}
        for k, col in columns.items():
            v = col[i]
            if v is not None and not (isinstance(v, float) and math.isnan(v) and k != "loss"):
                rec[k] = float(v)
        out.append(rec)
    return out


def synth_healthy(seed: int, n: int, noise: float) -> list[dict]:
    rng = np.random.default_rng(seed)
    loss = _decay(n, 2.5, 0.4, n / 5, noise, rng)
    lr = 3e-4 * np.minimum(1, (np.arange(n) + 1) / (n / 20)) * (0.5 + 0.5 * np.cos(np.pi * np.arange(n) / n))
    grad = 1.2 * np.exp(0.2 * rng.standard_normal(n))
    return _records(loss=loss, lr=lr, grad_norm=grad)


def synth_healthy_eval(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 600
    recs = _records(loss=_decay(n, 1.9, 0.5, 150, 0.05, rng), accuracy=np.clip(0.9 - 0.6 * np.exp(-np.arange(n) / 150)
                                                                                 + 0.02 * rng.standard_normal(n), 0, 1))
    ev = _decay(n, 1.95, 0.55, 150, 0.01, rng)
    for r in recs:
        if r["step"] % 50 == 0:
            r["eval_loss"] = float(ev[r["step"] - 1])
            r["eval_accuracy"] = max(0.0, r["accuracy"] - 0.02)
    return recs


def synth_divergence_late(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 800
    loss = _decay(n, 3.0, 1.0, 100, 0.04, rng)
    t = np.arange(n)
    loss = loss * np.where(t > 560, np.exp((t - 560) / 120), 1.0)
    return _records(loss=loss, lr=np.full(n, 6e-4))


def synth_nan_at(seed: int, n: int, at: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    loss = _decay(n, 2.2, 0.8, n / 6, 0.04, rng)
    loss[at - 15:at] *= np.geomspace(1, 50, 15)
    loss[at:] = np.nan
    grad = 0.8 * np.exp(0.2 * rng.standard_normal(n))
    grad[at - 15:at] *= np.geomspace(1, 1e4, 15)
    grad[at:] = np.nan
    return [{"step": i + 1, "loss": float(loss[i]), "grad_norm": float(grad[i])} for i in range(n)]


def synth_flat(seed: int, n: int, level: float, noise: float, extra: dict | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    recs = _records(loss=level * np.exp(noise * rng.standard_normal(n)), lr=np.full(n, 1e-3))
    if extra:
        recs[0].update(extra)
    return recs


def synth_spikes(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 1000
    loss = _decay(n, 2.0, 0.6, 200, 0.03, rng)
    for at in (300, 520, 810):
        loss[at] *= 4.0
        loss[at + 1] *= 2.0
    return _records(loss=loss)


def synth_overfit(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 400
    recs = _records(loss=_decay(n, 1.2, 0.02, 60, 0.05, rng))
    for r in recs:
        if r["step"] % 20 == 0:
            t = r["step"]
            r["eval_loss"] = float(0.9 + 0.6 * (t / n - 0.25) ** 2 * 8 * (t > 100) + 0.3 * math.exp(-t / 40))
    return recs


def synth_hockey(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 1000
    loss = _decay(n, 2.3, 0.9, 8, 0.12, rng)
    return _records(loss=loss, lr=np.full(n, 0.1))


def synth_slow_burn(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 500
    loss = np.linspace(2.30, 1.95, n) * np.exp(0.01 * rng.standard_normal(n))
    return _records(loss=loss, lr=np.full(n, 1e-6), update_ratio=np.full(n, 2e-5))


def synth_zero_grad(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 300
    return _records(loss=3.2 * np.exp(0.03 * rng.standard_normal(n)), grad_norm=np.zeros(n), lr=np.full(n, 1e-3))


def synth_exploding(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 400
    grad = np.geomspace(0.8, 800, n) * np.exp(0.3 * rng.standard_normal(n))
    loss = _decay(n, 2.0, 1.2, 80, 0.08, rng) * (1 + 0.2 * (grad > 50) * rng.random(n))
    return _records(loss=loss, grad_norm=grad)


def synth_cumulative_clock(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 400
    per_step = np.where(np.arange(n) < 200, 0.25, 0.8) * np.exp(0.05 * rng.standard_normal(n))
    return _records(loss=_decay(n, 2.0, 0.7, 100, 0.04, rng), train_wall=np.cumsum(per_step))


def synth_vnorm_clamp(seed: int) -> list[dict]:
    """The research-debug story: the LoRA v-vector pins at its clamp, then the reward collapses."""
    rng = np.random.default_rng(seed)
    n = 200
    t = np.arange(n)
    v = np.minimum(1.0, np.linspace(0.3, 1.2, n)) * (1 - 0.005 * rng.random(n))
    entropy = np.linspace(3.0, 2.6, n) + 0.02 * rng.standard_normal(n)
    reward = np.where(t < 120, 0.3 + 0.004 * t, 0.78 * np.exp(-(t - 120) / 20)) + 0.02 * rng.standard_normal(n)
    return _records(loss=_decay(n, 1.0, 0.5, 50, 0.05, rng), v_norm=v, v_norm_max=np.full(n, 1.0), entropy=entropy,
                    reward=reward, kl=0.01 + 0.001 * rng.random(n))


def synth_rank_abs(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = 300
    recs = _records(loss=_decay(n, 1.0, 0.01, 40, 0.05, rng))
    for r in recs:
        if r["step"] % 10 == 0:
            r["eff_rank"] = float(680 * math.exp(-r["step"] / 60) + 12)
    return recs


def synth_rank_lag_lines(seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = []
    for step in range(1, 401):
        for rank in range(4):
            if rank == 2 and step > 150:
                continue
            loss = 2.0 * math.exp(-step / 120) + 0.5 + 0.03 * rng.standard_normal()
            lines.append(f"[rank{rank}]: step {step} | loss {loss:.4f} | lr 0.0003 | step_time {0.31 + 0.01 * rng.random():.3f}")
    return lines


OOM_TRACEBACK = """Traceback (most recent call last):
  File "/home/user/project/train.py", line 141, in <module>
    main()
  File "/home/user/project/train.py", line 118, in main
    loss.backward()
  File "/opt/conda/lib/python3.11/site-packages/torch/_tensor.py", line 581, in backward
    torch.autograd.backward(
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 23.64 GiB of which 612.44 MiB is free. Including non-PyTorch memory, this process has 23.03 GiB memory in use. Of the allocated memory 21.87 GiB is allocated by PyTorch, and 702.15 MiB is reserved by PyTorch but unallocated.
"""

NCCL_TIMEOUT = ("[rank1]:[E1123 10:42:17.123456 ProcessGroupNCCL.cpp:616] [Rank 1] Watchdog caught collective operation "
                "timeout: WorkNCCL(SeqNum=4121, OpType=ALLREDUCE, NumelIn=1048576, NumelOut=1048576, Timeout(ms)=600000) "
                "ran for 600081 milliseconds before timing out.")

SHAPE_TRACEBACK = """Epoch 1/10
Traceback (most recent call last):
  File "train.py", line 52, in <module>
    out = model(x)
  File "/opt/conda/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1751, in _call_impl
    return forward_call(*args, **kwargs)
  File "train.py", line 31, in forward
    return self.fc(x.flatten(1))
RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x3136 and 784x10)
"""


def _write_lines(name: str, lines: list[str]) -> str:
    path = OUT / name
    path.write_text("\n".join(lines) + "\n")
    return name


def _write_records(name: str, records: list[dict], fmt: str) -> str:
    tr.write_log(tr.TrainingRun(name, "", "", records), OUT / name, fmt)
    return name


def synthetic_cases() -> list[dict]:
    cases = []

    def add(case_id: str, log: str, label: str, notes: str, accept: list[str] | None = None) -> None:
        cases.append({"id": f"logs/{case_id}", "label": label, "accept": accept or [], "log": log,
                      "source": "synthetic", "notes": notes})

    add("synth_healthy_long_kv", _write_records("synth_healthy_long.kv.log", synth_healthy(1, 3000, 0.08), "kv"),
        "healthy", "3000 noisy steps: the parser downsamples to min/max buckets")
    add("synth_healthy_short_kv", _write_records("synth_healthy_short.kv.log", synth_healthy(2, 60, 0.05), "kv"),
        "healthy", "only 60 steps")
    add("synth_healthy_noisy_csv", _write_records("synth_healthy_noisy.csv", synth_healthy(3, 1500, 0.2), "csv"),
        "healthy", "very noisy minibatch losses (20% log-normal noise)")
    add("synth_healthy_eval_hf", _write_records("synth_healthy_eval.hf.log", synth_healthy_eval(4), "hf"),
        "healthy", "train/eval tracking each other, accuracy gap 2%")
    add("synth_divergence_late_csv", _write_records("synth_divergence_late.csv", synth_divergence_late(5), "csv"),
        "divergence", "fine for 70% of the run, then climbs past its start")
    add("synth_nan_nanogpt", _write_records("synth_nan.nanogpt.log", synth_nan_at(6, 900, 640), "nanogpt"),
        "nan_loss", "NaN death at step 640 after a short climb")
    add("synth_nan_hf", _write_records("synth_nan.hf.log", synth_nan_at(7, 400, 90), "hf"),
        "nan_loss", "NaN death at step 90")
    add("synth_chance_binary_jsonl", _write_records("synth_chance_binary.jsonl", synth_flat(8, 400, math.log(2), 0.03),
                                                     "jsonl"), "plateau", "flat at ln(2), class count not logged")
    add("synth_chance_vocab_kv", _write_records("synth_chance_vocab.kv.log",
                                                synth_flat(9, 300, math.log(50257), 0.01, {"vocab_size": 50257}), "kv"),
        "plateau", "LM loss stuck at ln(vocab_size)")
    add("synth_flat_csv", _write_records("synth_flat.csv", synth_flat(10, 500, 3.7, 0.05), "csv"),
        "plateau", "no progress at all, not at a chance level")
    add("synth_spikes_jsonl", _write_records("synth_spikes.jsonl", synth_spikes(11), "jsonl"),
        "loss_spike", "three spikes that recover")
    add("synth_overfit_csv", _write_records("synth_overfit.csv", synth_overfit(12), "csv"),
        "overfitting", "eval loss U-shaped while train goes to 0.02")
    add("synth_hockey_hf", _write_records("synth_hockey.hf.log", synth_hockey(13), "hf"),
        "hockey_stick", "drop within 3% of the run, then a noisy flat floor")
    add("synth_slow_burn_jsonl", _write_records("synth_slow_burn.jsonl", synth_slow_burn(14), "jsonl"),
        "slow_convergence", "straight line down, lr 1e-6, update ratio 2e-5")
    add("synth_zero_grad_csv", _write_records("synth_zero_grad.csv", synth_zero_grad(15), "csv"),
        "vanishing_gradients", "grad_norm exactly 0 every step")
    add("synth_exploding_kv", _write_records("synth_exploding.kv.log", synth_exploding(16), "kv"),
        "exploding_gradients", "grad norm climbing from 1 to 800")
    add("synth_cumulative_clock_csv", _write_records("synth_cumulative_clock.csv", synth_cumulative_clock(17), "csv"),
        "slow_throughput", "a cumulative train_wall clock whose per-step rate triples halfway")
    add("synth_vnorm_clamp_jsonl", _write_records("synth_vnorm_clamp.jsonl", synth_vnorm_clamp(18), "jsonl"),
        "mode_collapse", "v_norm pinned at its clamp, then reward collapse (research-debug GRPO story)")
    add("synth_rank_abs_csv", _write_records("synth_rank_abs.csv", synth_rank_abs(19), "csv"),
        "rank_collapse", "absolute effective rank 692 -> 20 while the loss converges")
    add("synth_rank_lag_log", _write_lines("synth_rank_lag.log", synth_rank_lag_lines(20)),
        "distributed_hang", "rank 2 stops logging at step 150 of 400")
    healthy_then_oom = tr.run("healthy")
    lines = tr._hf_lines(healthy_then_oom.records[:120]) + OOM_TRACEBACK.splitlines()
    add("healthy_then_oom_log", _write_lines("healthy_then_oom.log", lines), "oom",
        "a healthy curve that ends in a CUDA OOM traceback")
    lines = synth_rank_lag_lines(21)[:300] + [NCCL_TIMEOUT]
    add("nccl_timeout_log", _write_lines("nccl_timeout.log", lines), "distributed_hang",
        "4-rank log ending in an NCCL watchdog timeout")
    add("shape_crash_log", _write_lines("shape_crash.log", SHAPE_TRACEBACK.splitlines()), "shape_mismatch",
        "crash before the first metric line")
    return cases


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        if old.is_file():
            old.unlink()
    cases = []
    for case_id, run_name, fmt, label, accept, notes in REAL_CASES:
        ext = {"jsonl": "jsonl", "csv": "csv"}.get(fmt, "log")
        name = f"{case_id}.{ext}" if ext != "log" else f"{case_id}.log"
        tr.write_log(tr.run(run_name), OUT / name, fmt)
        cases.append({"id": f"logs/{case_id}", "label": label, "accept": accept, "log": name,
                      "source": f"training_run:{run_name}", "notes": notes})
    for case_id, make, fmt, label in HOLDOUT_CASES:
        run = make()
        _check_label(case_id, run, label)
        name = f"{case_id}.{ {'jsonl': 'jsonl', 'csv': 'csv'}.get(fmt, 'log') }"
        tr.write_log(run, OUT / name, fmt)
        cases.append({"id": f"logs/{case_id}", "label": label, "accept": [], "log": name, "source": "holdout",
                      "notes": "held-out seed/settings, not used for tuning"})
    cases += synthetic_cases()
    (OUT / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(cases)} cases, {size / 1024:.0f} kB, to {OUT}")


if __name__ == "__main__":
    main()
