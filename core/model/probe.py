"""TrainingProbe: per-layer gradient statistics written from inside a training loop, cheaply.

    from ml_debug_mcp import TrainingProbe

    probe = TrainingProbe(model, log_dir="runs/exp1", every=100)
    for batch in loader:
        loss = model(batch).loss
        loss.backward()
        probe.step(optimizer, loss=loss)   # after backward(), BEFORE optimizer.step()
        optimizer.step()
        optimizer.zero_grad()

Why before the step: the probe reads the gradients there, snapshots the weights, and registers a
one-shot optimizer post-step hook that measures the real update ||W_after - W_before|| / ||W_before||
once `optimizer.step()` has run. (With AMP, call `scaler.unscale_(optimizer)` first so the
gradients are true-scale; a step the scaler skips is written with `"skipped": true` and no ratio.)

Cost: on steps it does not sample, `step()` only counts (no tensor work, no host-device sync). On
sampled steps all norms are computed on the device with fused `torch._foreach_norm`, stacked, and
moved to the host as ONE tensor (a step whose gradients hold NaN/Inf pays one more, small transfer
to count them). Measuring real updates keeps a copy of the weights between the two halves of a
sampled step; `measure_updates=False` skips it and writes lr*||grad||/||W|| instead. Under torch.distributed only rank 0 writes. With sharded
parameters (FSDP, DTensor) each rank holds a piece, so the squared norms are all-reduced first and
rank 0 writes global norms; with replicated ones (DDP) rank 0's own values are already global and
the other ranks do nothing at all.

Output: `<log_dir>/grad_stats.jsonl`, one JSON object per sampled step, appended and flushed:
    {"v": 1, "step": 100, "time": ..., "world_size": 2, "grads": "sharded", "every": 100, "loss": 2.3,
     "global": {"grad_norm": 1.2, "weight_norm": 35.0, "update_ratio": 0.001},
     "params": {"fc.weight": {"grad_norm": 0.4, "weight_norm": 3.1, "update_ratio": 0.0012, "nonfinite": 0}},
     "missing_grad": ["encoder.weight"]}
The first record written by a probe also holds "shapes" ({name: [dims]}; global shapes under FSDP).
Non-finite numbers are written as the strings "nan", "inf", "-inf" (strict JSON). analyze_gradients
(stats_path=...) reads this file. This module imports only torch and the standard library, so it
can be copied into a project that does not install ml-debug-mcp.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Literal

import torch

FILE_NAME = "grad_stats.jsonl"
FORMAT_VERSION = 1
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
GradLayout = Literal["auto", "local", "replicated", "sharded"]


def clean_name(name: str) -> str:
    """Parameter names without the prefixes DDP, torch.compile and FSDP wrappers add."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP2); a plain tensor as is."""
    return t.to_local() if hasattr(t, "to_local") else t


def _json_number(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "nan" if x != x else ("inf" if x > 0 else "-inf")


class TrainingProbe:
    """Samples gradient and update statistics every `every` calls of `step()`; see the module docstring."""

    def __init__(self, model: torch.nn.Module, log_dir: str | os.PathLike[str], every: int = 100, *,
                 grads: GradLayout = "auto", measure_updates: bool = True, file_name: str = FILE_NAME) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        named = [(clean_name(n), p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.every = every
        self.measure_updates = measure_updates
        self.calls = 0
        self.rank, self.world_size = _rank_and_world()
        self.layout = _layout(model, self.params, grads, self.world_size)
        self.writes = self.rank == 0
        self.active = self.writes or self.layout == "sharded"  # replicated non-zero ranks: a pure no-op
        self.path = Path(log_dir) / file_name
        self._file = None
        self._pending: dict | None = None
        self._snapshot: list[torch.Tensor] | None = None  # CPU: reused, see _take_snapshot

    # --------------------------------------------------------------------------------------------

    def step(self, optimizer: torch.optim.Optimizer | None = None, loss: torch.Tensor | None = None,
             step: int | None = None) -> bool:
        """Call after backward() and before optimizer.step(). Returns True when this step is sampled."""
        index = self.calls if step is None else step
        self.calls += 1
        if self._pending is not None:
            self._finish(None, skipped=True)  # the optimizer step after the last sample never ran
        if not self.active or index % self.every:
            return False
        self._sample(optimizer, loss, index)
        return True

    def close(self) -> None:
        if self._pending is not None:
            self._finish(None, skipped=True)
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TrainingProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------

    def _sample(self, optimizer, loss, index: int) -> None:
        present = [i for i, p in enumerate(self.params) if p.grad is not None]  # host-side check, no sync
        grads = [_local(self.params[i].grad) for i in present]
        weights = [_local(p.detach()) for p in self.params]
        device = weights[0].device if weights else torch.device("cpu")
        grad_norms = torch.zeros(len(self.params), device=device, dtype=torch.float32)
        if grads:
            index_t = torch.tensor(present, device=device)
            grad_norms.index_copy_(0, index_t, torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)))
        weight_norms = torch.stack(torch._foreach_norm(weights, 2, dtype=torch.float32)) if weights else grad_norms
        loss_t = (loss.detach().float().reshape(1).to(device) if loss is not None
                  else torch.zeros(1, device=device, dtype=torch.float32))
        pending = {"step": index, "present": set(present), "grad": grad_norms, "grads": dict(zip(present, grads)),
                   "weight": weight_norms, "loss": loss_t, "has_loss": loss is not None,
                   "lrs": _learning_rates(optimizer, self.params)}
        if self.measure_updates and optimizer is not None and weights:
            pending["snapshot"] = self._take_snapshot(weights)
            pending["hook"] = optimizer.register_step_post_hook(self._after_step)
            self._pending = pending
        else:
            self._pending = pending
            self._finish(None)

    def _take_snapshot(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """The weights before the step, in one foreach copy. On the CPU the buffers are kept between sampled
        steps: a fresh allocation of the model's size costs page faults worth ~8 copies. On a GPU the caching
        allocator already makes allocation cheap, and a buffer kept for good would hold the model's size."""
        keep = weights[0].device.type == "cpu"
        buffers = self._snapshot if keep else None
        if buffers is None or len(buffers) != len(weights) or any(
                b.shape != w.shape or b.dtype != w.dtype for b, w in zip(buffers, weights)):
            buffers = [torch.empty_like(w) for w in weights]
        torch._foreach_copy_(buffers, weights)
        self._snapshot = buffers if keep else None
        return buffers

    def _after_step(self, optimizer, args, kwargs) -> None:
        pending = self._pending
        if pending is None or "snapshot" not in pending:
            return
        snapshot = pending["snapshot"]
        torch._foreach_sub_(snapshot, [_local(p.detach()) for p in self.params])  # in place: W_before - W_after
        self._finish(torch.stack(torch._foreach_norm(snapshot, 2, dtype=torch.float32)))

    def _finish(self, delta_norms: torch.Tensor | None, skipped: bool = False) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if "hook" in pending:
            pending["hook"].remove()
        n = len(self.params)
        deltas = delta_norms if delta_norms is not None else torch.zeros_like(pending["weight"])
        squares = torch.stack([pending["grad"], pending["weight"], deltas]).square()
        packed = torch.cat([squares.reshape(-1), pending["loss"]])
        self._all_reduce(packed)  # sharded: sums of squares over ranks, and the sum of the losses
        host = packed.cpu().tolist()  # the one device-to-host transfer of a sampled step
        g2, w2, d2, loss = host[:n], host[n:2 * n], host[2 * n:3 * n], host[3 * n]
        if self.layout == "sharded":
            loss /= self.world_size
        counts = self._nonfinite_counts(pending, [i for i in sorted(pending["present"]) if not math.isfinite(g2[i])])
        if self.writes:
            self._write(pending, g2, w2, d2 if delta_norms is not None else None, counts,
                        loss if pending["has_loss"] else None, skipped)

    def _all_reduce(self, tensor: torch.Tensor) -> None:
        if self.layout == "sharded":
            import torch.distributed as dist

            dist.all_reduce(tensor)

    def _nonfinite_counts(self, pending: dict, bad: list[int]) -> dict[int, int]:
        """NaN/Inf element counts, only for the tensors whose norm is already known to be non-finite.

        Counting every tensor on every sampled step would cost more than all the norms together; a
        finite norm already proves the count is 0, so only a broken step pays for a second transfer.
        """
        if not bad:
            return {}
        counts = torch.stack([(~torch.isfinite(pending["grads"][i])).sum() for i in bad]).float()
        self._all_reduce(counts)
        return dict(zip(bad, (int(c) for c in counts.cpu().tolist())))

    def _write(self, pending: dict, g2: list[float], w2: list[float], d2: list[float] | None, counts: dict[int, int],
               loss: float | None, skipped: bool) -> None:
        params, missing = {}, []
        for i, name in enumerate(self.names):
            if i not in pending["present"]:
                missing.append(name)
                continue
            grad, weight = math.sqrt(g2[i]), math.sqrt(w2[i])
            if d2 is not None:
                ratio = math.sqrt(d2[i]) / weight if weight > 0 else None
            elif skipped:
                ratio = None  # the step never ran: nothing moved, and an estimate would pretend it did
            else:
                lr = pending["lrs"][i]  # updates not measured: lr * ||grad|| / ||W||, as plain SGD would move
                ratio = lr * grad / weight if lr is not None and weight > 0 else None
            params[name] = {"grad_norm": _json_number(grad), "weight_norm": _json_number(weight),
                            "update_ratio": _json_number(ratio) if ratio is not None else None,
                            "nonfinite": counts.get(i, 0)}
        total_w = math.sqrt(sum(w2))
        record = {"v": FORMAT_VERSION, "step": pending["step"], "time": round(time.time(), 3),
                  "world_size": self.world_size, "grads": self.layout, "every": self.every,
                  "loss": _json_number(loss) if loss is not None else None,
                  "global": {"grad_norm": _json_number(math.sqrt(sum(g2[i] for i in pending["present"]))),
                             "weight_norm": _json_number(total_w),
                             "update_ratio": _json_number(math.sqrt(sum(d2)) / total_w)
                             if d2 is not None and total_w > 0 else None},
                  "params": params, "missing_grad": missing}
        if skipped:
            record["skipped"] = True
        if self._file is None:
            record["shapes"] = {name: list(p.shape) for name, p in zip(self.names, self.params)}  # once per file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _layout(model: torch.nn.Module, params: list[torch.Tensor], requested: GradLayout, world_size: int) -> str:
    """local (one process), replicated (DDP: every rank has the full gradient) or sharded (FSDP/DTensor)."""
    if requested != "auto":
        return requested
    if world_size == 1:
        return "local"
    sharded = any(hasattr(p, "to_local") for p in params) or any(
        type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())
    return "sharded" if sharded else "replicated"


def _learning_rates(optimizer, params: list[torch.Tensor]) -> list[float | None]:
    """Each parameter's lr from its param group (for the estimated ratio when updates are not measured)."""
    if optimizer is None:
        return [None] * len(params)
    by_id = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]
             if isinstance(g.get("lr"), (int, float))}
    return [by_id.get(id(p)) for p in params]
