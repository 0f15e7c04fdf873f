"""Real update ratios from two checkpoints: ||W1 - W0|| / ||W0|| per tensor, frozen and exploding tensors.

The files are opened in the worker (torch stays out of the server, and a huge or hostile file
hits the worker's memory limit and timeout, not the server): safetensors through `safetensors`,
anything else only through `torch.load(weights_only=True)`, never an unrestricted pickle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ml_debug_mcp.core.diagnosis.hypotheses import Evidence
from ml_debug_mcp.core.model.gradients import (CANCELLED_BIAS, DEFAULT_TOP, CheckpointMismatch, GradientReport, LayerGradient, ShapeChange,
                                         assemble, band_for, finite, fmt, judges_ratio)
from ml_debug_mcp.core.model.sandbox import Policy, SandboxStatus
from ml_debug_mcp.core.model.worker import run_worker

RUNNING_STATISTICS = ("running_mean", "running_var")
OPTIMIZER_KEY = re.compile(r"(opt|optim|optimizer)s?(_state(_dict)?s?)?", re.IGNORECASE)
UNCHANGED = ("bitwise identical in both checkpoints: it did not move at all. It may be frozen on purpose "
             "(requires_grad=False) or missing from the optimizer's param groups; only if neither, its gradient vanished")


def compare_checkpoints(before: Path, after: Path, *, steps_between: int | None, python: str, timeout: float,
                        memory_mb: int, cwd: Path, top: int = DEFAULT_TOP,
                        progress: Callable[..., None] | None = None, policy: Policy | None = None) -> GradientReport:
    task = {"op": "checkpoints", "before": str(before), "after": str(after)}
    raw = run_worker(task, python, timeout, memory_mb, cwd, progress=progress, policy=policy)
    report = report_from_checkpoints(raw, before, after, steps_between=steps_between, top=top)
    report.sandbox = SandboxStatus(**raw["sandbox"])
    return report


def report_from_checkpoints(raw: dict, before: Path, after: Path, *, steps_between: int | None,
                            top: int = DEFAULT_TOP) -> GradientReport:
    raw, optimizer_tensors = _without_optimizer_state(raw)
    mismatch = _mismatch(raw)
    if not raw["tensors"]:
        raise ValueError(f"{before.name} and {after.name} have no floating-point tensor in common with the same "
                         f"shape to compare ({raw['keys_before']} vs {raw['keys_after']} keys; "
                         f"{_mismatch_text(mismatch)}). Pass two checkpoints of the same model.")
    per_step = steps_between or 1
    judged = [t for t in raw["tensors"] if t["name"].rpartition(".")[2] not in RUNNING_STATISTICS]
    layers = [_layer(t, per_step) for t in judged]
    _forgive_cancelled_biases(layers, {t["name"] for t in raw["tensors"]})
    warnings = list(dict.fromkeys(raw.get("notes", [])))  # both files usually say the same
    if optimizer_tensors:
        warnings.append(f"{optimizer_tensors} optimizer-state tensors (under an 'opt'/'optim'/'optimizer' key) were "
                        "not analysed: only the model's parameters are.")
    if len(judged) < len(raw["tensors"]):
        warnings.append(f"{len(raw['tensors']) - len(judged)} normalisation statistics (running_mean/running_var) "
                        "were not judged: they are running averages, not optimizer updates.")
    if mismatch is not None:
        warnings.append(f"The checkpoints differ in keys or shapes: {_mismatch_text(mismatch)}. Only the "
                        f"{len(layers)} tensors present in both with the same shape were compared.")
    if raw.get("skipped_non_float"):
        warnings.append(f"{raw['skipped_non_float']} integer/bool tensors (counters, masks) were not compared.")
    if steps_between is None:
        warnings.append("steps_between not given: the whole change between the checkpoints is judged as one step, "
                        "so 'large' may just mean many steps apart; pass steps_between to get per-step ratios.")
    extra: dict[str, list[Evidence]] = {}
    unchanged = [l for l in layers if l.band == "frozen" and l.update_ratio == 0]
    if unchanged and len(unchanged) == len(layers):
        extra["vanishing_gradients"] = [Evidence(
            kind="summary", rule="||W1 - W0|| == 0 for every tensor",
            text="no tensor changed at all between the two checkpoints: the same state saved twice, an optimizer "
                 "without the model's parameters, or a zero learning rate")]
    settings = {"steps_between": steps_between, "keys_before": raw["keys_before"], "keys_after": raw["keys_after"]}
    report = assemble("checkpoints", f"{before} -> {after}", layers, top=top, steps=[], extra=extra,
                      mismatch=mismatch, settings=settings, warnings=warnings)
    if unchanged:
        _requires_grad_fix_first(report)
    return report


def _without_optimizer_state(raw: dict) -> tuple[dict, int]:
    """Optimizer moments are not parameters: drop tensors under an optimizer key the worker did not skip."""
    kept = [t for t in raw["tensors"] if not OPTIMIZER_KEY.fullmatch(t["name"].partition(".")[0])]
    return {**raw, "tensors": kept}, len(raw["tensors"]) - len(kept)


def _requires_grad_fix_first(report: GradientReport) -> None:
    """A tensor that did not move at all is frozen or outside the optimizer before it is a vanishing gradient."""
    for hypothesis in report.hypotheses:
        if hypothesis.failure == "vanishing_gradients":
            hypothesis.fixes.sort(key=lambda fix: "requires_grad" not in fix.action)


def _layer(t: dict, per_step: int) -> LayerGradient:
    weight, delta = finite(t.get("weight_norm")), finite(t.get("delta_norm"))
    ratio = delta / weight / per_step if weight and delta is not None else None
    module = t["name"].rpartition(".")[0] or None
    if t.get("nonfinite_after"):
        band, reason = "overflow", (f"{t['nonfinite_after']} NaN/Inf values in the later checkpoint "
                                    "(grad_norm_overflow: non-finite = overflow)")
    elif t.get("identical"):
        band, reason = "frozen", UNCHANGED
        ratio = 0.0
        if not judges_ratio(t.get("shape")):
            band, reason = "healthy", reason + " (1-D parameter: reported, not judged)"
    else:
        band, reason = band_for(ratio=ratio, judge_ratio=judges_ratio(t.get("shape")))
        if band == "healthy" and ratio is None:
            reason = f"weight norm is 0 in the earlier checkpoint; it moved by {fmt(delta)}"
    if band == "large" and ratio is not None and ratio > 1:
        reason += ": the tensor changed by more than its own size per step, an exploding update"
    return LayerGradient(name=t["name"], module=module, shape=t.get("shape"), band=band, reason=reason,
                         weight_norm=weight, update_ratio=ratio, update_ratio_source="checkpoints",
                         nonfinite_count=t.get("nonfinite_after") or None)


def _forgive_cancelled_biases(layers: list[LayerGradient], names: set[str]) -> None:
    """A frozen bias whose next sibling module has BatchNorm statistics was cancelled by it, not starved."""
    for layer in layers:
        module, _, leaf = layer.name.rpartition(".")
        if layer.band in ("frozen", "healthy") and leaf == "bias" and _followed_by_batchnorm(module, names):
            layer.band, layer.reason = "healthy", CANCELLED_BIAS.format(norm="a BatchNorm")


def _followed_by_batchnorm(module: str, names: set[str]) -> bool:
    parent, _, last = module.rpartition(".")
    prefix = f"{parent}." if parent else ""
    siblings = [last.replace("conv", "bn"), last.replace("conv", "norm")]
    if last.isdigit():
        siblings.append(str(int(last) + 1))
    return any(f"{prefix}{s}.running_mean" in names for s in siblings if s != last)


def _mismatch(raw: dict) -> CheckpointMismatch | None:
    if not (raw.get("only_before_count") or raw.get("only_after_count") or raw.get("shape_changed_count")):
        return None
    return CheckpointMismatch(only_before=raw.get("only_before", []), only_after=raw.get("only_after", []),
                              shape_changed=[ShapeChange(**c) for c in raw.get("shape_changed", [])],
                              only_before_count=raw.get("only_before_count", 0),
                              only_after_count=raw.get("only_after_count", 0),
                              shape_changed_count=raw.get("shape_changed_count", 0))


def _mismatch_text(m: CheckpointMismatch | None) -> str:
    if m is None:
        return "no key or shape differences"
    parts = []
    if m.only_before_count:
        parts.append(f"{m.only_before_count} keys only in the first ({', '.join(m.only_before[:3])})")
    if m.only_after_count:
        parts.append(f"{m.only_after_count} keys only in the second ({', '.join(m.only_after[:3])})")
    if m.shape_changed_count:
        c = m.shape_changed[0]
        parts.append(f"{m.shape_changed_count} shapes changed (e.g. {c.name}: {c.before} -> {c.after})")
    return "; ".join(parts)
