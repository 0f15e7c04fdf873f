"""TrainingProbe inside real training loops: what it writes, what it costs, and under torch.distributed."""

from __future__ import annotations

import json
import os
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mcp_harness import free_port
from ml_debug_mcp.core.model.gradients import summarize_probe_stats
from ml_debug_mcp.core.model.probe import TrainingProbe


class RecordOps(TorchDispatchMode):
    """Every aten op dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sampled_steps_use_fused_norms_and_no_item_and_unsampled_steps_dispatch_nothing(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = TrainingProbe(model, tmp_path, every=4)
    for step in range(8):
        opt.zero_grad()
        model(torch.randn(16, 8)).pow(2).mean().backward()
        with RecordOps() as probing:
            sampled = probe.step(opt)
        with RecordOps() as stepping:
            opt.step()
        assert sampled == (step % 4 == 0)
        if sampled:
            assert "aten._foreach_norm.Scalar" in probing.ops  # gradients and weights: fused norms on the device
            assert "aten._foreach_sub_.List" in stepping.ops  # the post-step hook measured the real update
        else:
            assert probing.ops == []  # not a single tensor op, so nothing that could sync
        assert not any("_local_scalar_dense" in op for op in probing.ops + stepping.ops)  # no .item()/float()
    probe.close()
    assert [r["step"] for r in _records(tmp_path / "grad_stats.jsonl")] == [0, 4]


def test_records_hold_true_norms_and_the_real_update_ratio(tmp_path: Path) -> None:
    model = _model()
    lr = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr)  # no momentum: dW = lr * grad exactly
    expected = []
    with TrainingProbe(model, tmp_path, every=3) as probe:
        for step in range(10):
            opt.zero_grad()
            loss = model(torch.randn(16, 8)).pow(2).mean()
            loss.backward()
            if step % 3 == 0:
                expected.append({n: (p.grad.norm().item(), p.detach().norm().item(), loss.item())
                                 for n, p in model.named_parameters()})
            probe.step(opt, loss=loss)
            opt.step()
    records = _records(tmp_path / "grad_stats.jsonl")
    assert [r["step"] for r in records] == [0, 3, 6, 9]
    assert records[0]["shapes"] == {"0.weight": [16, 8], "0.bias": [16], "2.weight": [4, 16], "2.bias": [4]}
    assert "shapes" not in records[1]
    for record, truth in zip(records, expected):
        for name, (grad, weight, _) in truth.items():
            got = record["params"][name]
            assert got["grad_norm"] == pytest.approx(grad, rel=1e-5)
            assert got["weight_norm"] == pytest.approx(weight, rel=1e-5)
            assert got["update_ratio"] == pytest.approx(lr * grad / weight, rel=1e-3)
            assert got["nonfinite"] == 0
        assert record["loss"] == pytest.approx(next(iter(truth.values()))[2], rel=1e-6)
        g = math.sqrt(sum(v[0] ** 2 for v in truth.values()))
        assert record["global"]["grad_norm"] == pytest.approx(g, rel=1e-5)
        assert record["grads"] == "local" and record["world_size"] == 1


def test_non_finite_gradients_are_counted_per_tensor(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 8)).sum().backward()
    model[0].weight.grad[0, :3] = torch.tensor([float("inf"), float("nan"), float("-inf")])
    with TrainingProbe(model, tmp_path, every=1) as probe:
        probe.step(opt)
        opt.step()
    params = _records(tmp_path / "grad_stats.jsonl")[0]["params"]
    assert params["0.weight"]["nonfinite"] == 3 and params["0.weight"]["grad_norm"] == "nan"
    assert params["2.weight"]["nonfinite"] == 0 and isinstance(params["2.weight"]["grad_norm"], float)


def test_a_skipped_optimizer_step_and_a_detached_layer_are_recorded_as_such(tmp_path: Path) -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.head = nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.encoder(x).detach())

    model = Detached()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    probe = TrainingProbe(model, tmp_path, every=1)
    model(torch.randn(4, 8)).sum().backward()
    probe.step(opt)  # sampled; then the optimizer step is skipped (as GradScaler does on inf)
    probe.step(opt)
    opt.step()
    probe.close()
    first, second = _records(tmp_path / "grad_stats.jsonl")
    assert first["skipped"] is True and first["params"]["head.weight"]["update_ratio"] is None
    assert "skipped" not in second and second["params"]["head.weight"]["update_ratio"] > 0
    assert first["missing_grad"] == ["encoder.weight", "encoder.bias"]
    report = summarize_probe_stats(tmp_path / "grad_stats.jsonl")
    assert report.verdict == "vanishing_gradients" and report.first_bad_layer == "encoder"


def test_the_stats_summary_finds_when_a_run_went_bad(tmp_path: Path) -> None:
    def train(folder: Path, lr: float, poison_at: int | None = None) -> Path:
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        x, y = torch.randn(64, 8), torch.randn(64, 4)
        with TrainingProbe(model, folder, every=5) as probe:
            for step in range(60):
                if step == poison_at:
                    with torch.no_grad():
                        model[2].weight[0, 0] = float("nan")
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                probe.step(opt, loss=loss)
                opt.step()
        return folder / "grad_stats.jsonl"

    healthy = summarize_probe_stats(train(tmp_path / "healthy", lr=0.05))
    assert healthy.verdict == "healthy" and healthy.settings["records"] == 12
    assert {layer.trend for layer in healthy.layers} <= {"falling", "flat"}

    poisoned = summarize_probe_stats(train(tmp_path / "nan", lr=0.05, poison_at=32))
    assert poisoned.verdict == "nan_loss" and poisoned.first_bad_step == 35  # the first sampled step after 32
    assert poisoned.hypotheses[0].evidence[0].text == "loss became NAN at step 35"
    assert all(layer.band == "overflow" and layer.first_bad_step == 35 for layer in poisoned.layers)
    assert all(layer.grad_norm is None and layer.grad_nonfinite == "nan" for layer in poisoned.layers)

    wild = summarize_probe_stats(train(tmp_path / "wild", lr=3.0))
    assert wild.verdict == "exploding_gradients" and wild.first_bad_step == 0
    assert {layer.name for layer in wild.layers if layer.band == "large"} == {"0.weight", "2.weight"}
    assert wild.first_bad_layer == "0"
    json.loads(wild.model_dump_json(), parse_constant=lambda c: pytest.fail(f"non-finite {c}"))


# ------------------------------------------------------------------------------------------------
# torch.distributed: a real gloo group of two processes

RANK_SCRIPT = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    from torch import nn
    from torch.distributed.fsdp import fully_shard
    from ml_debug_mcp.core.model.probe import TrainingProbe

    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def batch(r):
        return torch.randn(6, 8, generator=torch.Generator().manual_seed(100 + r))

    for kind, net in (("fsdp", None), ("ddp", None), ("manual", None)):
        net = model()
        if kind == "fsdp":
            fully_shard(net)
        elif kind == "ddp":
            net = nn.parallel.DistributedDataParallel(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        probe = TrainingProbe(net, f"{out}/{kind}", every=1, grads="sharded" if kind == "manual" else "auto")
        loss = net(batch(rank)).pow(2).mean()
        loss.backward()
        probe.step(opt, loss=loss)
        opt.step()
        probe.close()
    dist.destroy_process_group()
    # gloo's background threads can abort ("terminate called without an active exception") during
    # C++ static teardown, after all the work is done; leave without running it.
    sys.stdout.flush()
    import os
    os._exit(0)
""")


def _reference_grads(ranks: list[int], average: bool) -> dict[str, float]:
    """Per-parameter gradient norms of one unsharded model over the ranks' batches."""
    net = _model()
    losses = [net(torch.randn(6, 8, generator=torch.Generator().manual_seed(100 + r))).pow(2).mean() for r in ranks]
    (sum(losses) / (len(ranks) if average else 1)).backward()
    return {n: p.grad.norm().item() for n, p in net.named_parameters()}


def test_under_distributed_rank_zero_writes_global_norms(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    # Loopback only (gloo otherwise picks an interface from the host name), and a fresh port when
    # another test grabbed the free one between free_port() and the rendezvous.
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    for _attempt in range(3):
        port = str(free_port())
        procs = [subprocess.Popen([sys.executable, str(script), str(r), port, str(tmp_path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env) for r in (0, 1)]
        outputs = [p.communicate(timeout=240)[0] for p in procs]
        if not any("address already in use" in out.lower() for out in outputs):
            break
    assert [p.returncode for p in procs] == [0, 0], outputs

    averaged = _reference_grads([0, 1], average=True)  # FSDP and DDP average the ranks' gradients
    for kind, layout in (("fsdp", "sharded"), ("ddp", "replicated")):
        records = _records(tmp_path / kind / "grad_stats.jsonl")
        assert len(records) == 1, kind  # rank 1 wrote nothing
        record = records[0]
        assert record["grads"] == layout and record["world_size"] == 2
        assert record["shapes"]["0.weight"] == [16, 8]  # global shapes, also for FSDP shards
        for name, norm in averaged.items():
            assert record["params"][name]["grad_norm"] == pytest.approx(norm, rel=1e-4), (kind, name)
            assert record["params"][name]["update_ratio"] > 0
        assert record["global"]["grad_norm"] == pytest.approx(math.sqrt(sum(v * v for v in averaged.values())),
                                                              rel=1e-4)

    # A plain module declared sharded: each rank's gradient is a disjoint piece, so rank 0 reports
    # sqrt(|g0|^2 + |g1|^2), which neither rank alone holds.
    record = _records(tmp_path / "manual" / "grad_stats.jsonl")[0]
    g0, g1 = _reference_grads([0], average=False), _reference_grads([1], average=False)
    for name in g0:
        assert record["params"][name]["grad_norm"] == pytest.approx(math.hypot(g0[name], g1[name]), rel=1e-4)
        assert record["params"][name]["grad_norm"] > max(g0[name], g1[name])
