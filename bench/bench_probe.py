"""Per-step cost of TrainingProbe.step against torch.nn.utils.clip_grad_norm_, same model, same run.

    python bench/bench_probe.py [--quick]

clip_grad_norm_ is the yardstick because most training loops already call it every step: it
computes one fused norm over all gradients and scales them. The probe is timed on the two kinds of
step it has: an unsampled step (it only counts) and a sampled step (gradient and weight norms,
non-finite counts, a weight snapshot, and after optimizer.step() the real update norms, then one
host transfer and one JSON line). Gradients stay fixed between repetitions (no forward/backward in
the timed region), the optimizer is plain SGD with lr=0 so the weights do not drift, and each
variant's optimizer.step() time is subtracted. Figures are medians of interleaved repetitions;
the ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from ml_debug_mcp.core.model.probe import TrainingProbe
from summary import row  # noqa: E402  (bench/ is on sys.path when a script runs)


def make_model(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def timed(fn: Callable[[], None], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench(width: int, depth: int, rounds: int, repeats: int) -> dict[str, float]:
    model = make_model(width, depth)
    params = [p for p in model.parameters()]
    model(torch.randn(32, width)).square().mean().backward()
    grads = [p.grad.clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.0)

    def restore_grads() -> None:
        for p, g in zip(params, grads):
            p.grad.copy_(g)

    with tempfile.TemporaryDirectory() as tmp:
        sampled = TrainingProbe(model, tmp, every=1)
        estimated = TrainingProbe(model, tmp, every=1, measure_updates=False, file_name="estimated.jsonl")
        unsampled = TrainingProbe(model, tmp, every=1 << 40)
        unsampled.step(opt)  # consume its sampled step 0; every later call is an unsampled one
        opt.step()

        def clip() -> None:
            torch.nn.utils.clip_grad_norm_(params, max_norm=1e9)

        def probe_sampled() -> None:
            sampled.step(opt)
            opt.step()

        def probe_estimated() -> None:
            estimated.step(opt)
            opt.step()

        def probe_unsampled() -> None:
            unsampled.step(opt)

        results: dict[str, list[float]] = {"optimizer_step": [], "clip_grad_norm_": [], "probe_sampled": [],
                                           "probe_estimated": [], "probe_unsampled": []}
        for _ in range(rounds):
            restore_grads()
            results["optimizer_step"].append(timed(opt.step, repeats))
            results["clip_grad_norm_"].append(timed(clip, repeats))
            restore_grads()
            results["probe_sampled"].append(timed(probe_sampled, repeats))
            results["probe_estimated"].append(timed(probe_estimated, repeats))
            results["probe_unsampled"].append(timed(probe_unsampled, repeats))
        for probe in (sampled, estimated, unsampled):
            probe.close()
    med = {k: statistics.median(v) for k, v in results.items()}
    for key in ("probe_sampled", "probe_estimated"):
        med[key] = max(med[key] - med["optimizer_step"], 0.0)
    med["params"] = float(sum(p.numel() for p in params))
    med["tensors"] = float(len(params))
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models, fewer repetitions")
    args = parser.parse_args()
    configs = [(256, 4), (1024, 8)] if args.quick else [(256, 4), (1024, 8), (2048, 12)]
    rounds, repeats = (3, 10) if args.quick else (5, 30)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; medians of {rounds} rounds x {repeats}")
    print(f"{'model':>24} {'clip_grad_norm_':>15} {'unsampled':>10} {'sampled':>9} {'sampled, no snapshot':>21}")
    for width, depth in configs:
        r = bench(width, depth, rounds, repeats)
        clip = r["clip_grad_norm_"]
        label = f"{r['params'] / 1e6:.1f}M params, {int(r['tensors'])} tensors"
        print(f"{label:>24} {clip * 1e6:>13.0f}us {r['probe_unsampled'] / clip:>9.4f}x {r['probe_sampled'] / clip:>8.2f}x "
              f"{r['probe_estimated'] / clip:>20.2f}x")
        row(f"probe sampled step, {label}", r["probe_sampled"] * 1e6, clip * 1e6, "us", "<= 1.2x",
            baseline_name="clip_grad_norm_")
    print("Columns after clip_grad_norm_ are probe time / clip_grad_norm_ time. 'no snapshot' is "
          "measure_updates=False.\nSampled steps happen every `every` steps (default 100): amortised cost per "
          "step = sampled/every.")


if __name__ == "__main__":
    main()
