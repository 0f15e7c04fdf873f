"""Gradient health per layer: bands from the catalogue's thresholds, hypotheses, and where it goes wrong.

Three sources feed the same report: a model built from an entrypoint and trained a few steps in
the worker (`analyze_model`), a pair of checkpoints (`core.checkpoints`), and the JSON lines the
in-training probe writes (`summarize_probe_stats`, read here without torch). Every number a layer
is judged by comes from `core.catalogue.THRESHOLDS`; nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core import safe_fs
from ml_debug_mcp.core.diagnosis.catalogue import THRESHOLDS, FailureId, failure_info
from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Fix, Hypothesis
from ml_debug_mcp.core.model.interpreter import InterpreterChoice
from ml_debug_mcp.core.model.sandbox import Policy, SandboxStatus

Band = Literal["overflow", "broken", "exploding", "large", "vanishing", "frozen", "healthy"]
BANDS: tuple[Band, ...] = ("overflow", "broken", "exploding", "large", "vanishing", "frozen", "healthy")
NonFinite = Literal["nan", "inf", "-inf"]
Source = Literal["model", "checkpoints", "probe_stats"]
BAND_FAILURE: dict[str, FailureId] = {"overflow": "nan_loss", "broken": "vanishing_gradients",
                                      "exploding": "exploding_gradients", "large": "exploding_gradients",
                                      "vanishing": "vanishing_gradients", "frozen": "vanishing_gradients"}
DEFAULT_TOP = 20
MAX_TOP = 200
MAX_HISTORY = 200
MAX_STATS_BYTES = 256 << 20
MAX_TRACKED_PARAMS = 20000
TREND_FACTOR = 2.0  # descriptive only: "rising" when the last value is more than twice the first
MEAN_REMOVING_NORMS = ("BatchNorm", "SyncBatchNorm", "InstanceNorm")
GRAD_NORM_VANISHING = float(THRESHOLDS["grad_norm_vanishing"].value)
DEFAULT_LOSS_OUTPUT = ("with a tuple/dict output the default loss uses only its 'loss' entry, else 'logits', else "
                       "the first tensor")
MISSING_GRAD = ("requires grad but got no gradient (grad is None). Three causes: forward never uses it (an unused "
                "nn.Parameter or layer); it only feeds an output the loss ignores ({loss_output}, so an auxiliary "
                "head gets nothing); or the graph is cut before it by detach()/no_grad")
MISSING_GRAD_FIXES = [
    Fix(action="Use every parameter in forward, or delete the unused ones (an nn.Parameter forward never touches "
               "gets no gradient)", expected_effect="Every trainable parameter gets a gradient"),
    Fix(action="Put every output the model returns into the loss (e.g. loss = main + w * aux), or pass a loss_fn "
               "that does", expected_effect="The auxiliary head gets a gradient"),
]
CANCELLED_BIAS = ("gradient ~0 by construction, and harmless: the next layer ({norm}) subtracts the per-channel mean, which cancels "
                  "this bias, so it never gets a gradient; bias=False saves the parameter")


def threshold(name: str) -> float:
    value = THRESHOLDS[name].value
    assert value is not None, name
    return value


def number(value: Any) -> tuple[float | None, NonFinite | None]:
    """A float from worker/probe JSON (non-finite values arrive as strings) -> (finite value | None, marker)."""
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return None, value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, None
    if math.isfinite(value):
        return float(value), None
    return None, "nan" if value != value else ("inf" if value > 0 else "-inf")


def finite(value: Any) -> float | None:
    return number(value)[0]


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


# ------------------------------------------------------------------------------------------------
# Result models


class LayerGradient(BaseModel):
    """One parameter tensor: its gradient and update measurements and the band they put it in."""

    name: str
    module: str | None = None
    module_type: str | None = None
    order: int | None = Field(None, description="Position of its module in the forward pass (0 = the model itself)")
    shape: list[int] | None = None
    band: Band
    reason: str = Field(description="Why this band, with the threshold it was compared against")
    grad_norm: float | None = Field(None, description="Gradient L2 norm (first step for a model run, last record for probe stats)")
    grad_norm_max: float | None = None
    grad_nonfinite: NonFinite | None = Field(None, description="Set when the gradient norm is NaN/Inf (grad_norm is then None)")
    nonfinite_count: int | None = Field(None, description="Non-finite gradient (or weight) elements")
    grad_missing: bool = Field(False, description="requires_grad but no gradient reached it (grad is None)")
    zero_fraction: float | None = None
    weight_norm: float | None = None
    update_ratio: float | None = Field(None, description="||dW||/||W|| per step (see update_ratio_source); None if ||W|| = 0")
    update_ratio_max: float | None = None
    update_ratio_source: Literal["measured", "estimated", "checkpoints", "probe"] | None = None
    trend: Literal["rising", "falling", "flat"] | None = None
    first_bad_step: float | None = Field(None, description="First step/record where it went to zero, NaN or exploded")


class GradientStep(BaseModel):
    step: float
    loss: float | None = None
    loss_nonfinite: NonFinite | None = None
    global_grad_norm: float | None = None
    global_grad_nonfinite: NonFinite | None = None
    global_update_ratio: float | None = None


class ShapeChange(BaseModel):
    name: str
    before: list[int]
    after: list[int]


class CheckpointMismatch(BaseModel):
    """Keys or shapes that differ between two checkpoints (listed up to a bound, counted in full)."""

    only_before: list[str] = Field(default_factory=list)
    only_after: list[str] = Field(default_factory=list)
    shape_changed: list[ShapeChange] = Field(default_factory=list)
    only_before_count: int = 0
    only_after_count: int = 0
    shape_changed_count: int = 0


class GradientReport(BaseModel):
    source: Source
    target: str = Field(description="The entrypoint, checkpoint pair or statistics file analysed")
    verdict: FailureId
    summary: str
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    first_bad_layer: str | None = Field(None, description="First layer in forward order where things go wrong")
    first_bad_step: float | None = None
    global_grad_norm: float | None = None
    global_grad_nonfinite: NonFinite | None = None
    band_counts: dict[str, int] = Field(default_factory=dict)
    layers: list[LayerGradient] = Field(default_factory=list, description="Worst first, at most `top`")
    layers_total: int = 0
    layers_omitted: int = Field(0, description="Layers not listed (the healthiest ones)")
    history: list[GradientStep] = Field(default_factory=list)
    history_thinned: bool = False
    mismatch: CheckpointMismatch | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    sandbox: SandboxStatus | None = Field(None, exclude=True)  # carried to GradientAnalysis.sandbox


class GradientAnalysis(BaseModel):
    """analyze_gradients' answer: one report per source given, and the worst verdict among them."""

    verdict: FailureId
    reports: list[GradientReport]
    interpreter: InterpreterChoice | None = Field(None, description="the Python the worker ran under, and why that one")
    sandbox: SandboxStatus | None = Field(None, description="the protections around the user code (none ran: null)")


# ------------------------------------------------------------------------------------------------
# Bands


def judges_ratio(shape: list[int] | None) -> bool:
    """Update-ratio bands apply to weight matrices and kernels; a bias or scale can start at 0, which makes
    ||dW||/||W|| unbounded, so 1-D tensors are judged on their gradients only (their ratio is still reported)."""
    return shape is None or len(shape) >= 2


def band_for(*, grad_missing: bool = False, grad_norm: float | None = None, grad_nonfinite: str | None = None,
             ratio: float | None = None, module_ran: bool = True, judge_ratio: bool = True) -> tuple[Band, str]:
    """The band of one parameter from what was measured, with a reason naming the threshold."""
    if grad_nonfinite:
        return "overflow", f"gradient norm is {grad_nonfinite.upper()} (grad_norm_overflow: non-finite = overflow)"
    if grad_missing:
        if not module_ran:
            return "broken", "requires grad but got no gradient: its module never ran in forward"
        return "broken", MISSING_GRAD.format(loss_output=DEFAULT_LOSS_OUTPUT)
    if grad_norm is not None and grad_norm <= threshold("grad_norm_broken"):
        return "broken", "gradient norm is exactly 0 (grad_norm_broken): nothing flows back to it"
    if grad_norm is not None and grad_norm > threshold("grad_norm_exploding"):
        return "exploding", f"gradient norm {fmt(grad_norm)} > {threshold('grad_norm_exploding'):g} (grad_norm_exploding)"
    if grad_norm is not None and grad_norm < GRAD_NORM_VANISHING:
        return "vanishing", _vanishing_reason(grad_norm, ratio if judge_ratio else None)
    if not judge_ratio:
        return "healthy", "gradient present and finite (1-D parameter: update ratio reported, not judged)"
    if ratio is not None and ratio > threshold("update_ratio_unstable"):
        return "large", f"update ratio {fmt(ratio)} > {threshold('update_ratio_unstable'):g} (update_ratio_unstable)"
    if ratio is not None and ratio < threshold("update_ratio_frozen"):
        return "frozen", f"update ratio {fmt(ratio)} < {threshold('update_ratio_frozen'):g} (update_ratio_frozen)"
    target = threshold("update_ratio_target")
    return "healthy", (f"update ratio {fmt(ratio)} within [{threshold('update_ratio_frozen'):g}, "
                       f"{threshold('update_ratio_unstable'):g}] (target ~{target:g})" if ratio is not None
                       else "gradient present and finite")


def _vanishing_reason(grad_norm: float, ratio: float | None) -> str:
    """A tiny gradient vanishes whatever the update ratio says: Adam divides by its own running scale."""
    reason = f"gradient norm {fmt(grad_norm)} < {GRAD_NORM_VANISHING:g} (vanishing)"
    if ratio is not None and ratio >= threshold("update_ratio_frozen"):
        reason += (f"; update ratio {fmt(ratio)} looks normal because Adam rescales the step, but the gradient "
                   f"signal is ~{grad_norm:.0e}")
    return reason


def _severity(layer: LayerGradient) -> tuple:
    return BANDS.index(layer.band), layer.order if layer.order is not None else 1 << 30, layer.name


def forward_sorted(layers: Iterable[LayerGradient]) -> list[LayerGradient]:
    return sorted(layers, key=lambda l: (l.order if l.order is not None else 1 << 30, l.name))


# ------------------------------------------------------------------------------------------------
# Hypotheses


def _hypothesis(failure: FailureId, confidence: float, evidence: list[Evidence], onset: float | None = None,
                prefer: tuple[str, ...] = ()) -> Hypothesis:
    """A hypothesis with the catalogue's causes and fixes, ordered by the first `prefer` word they mention."""
    info = failure_info(failure)

    def first(text: str) -> int:
        return next((i for i, word in enumerate(prefer) if word in text), len(prefer))

    return Hypothesis(failure=failure, confidence=confidence, evidence=evidence[:6], onset_step=onset,
                      root_causes=sorted(info.root_causes, key=first)[:4],
                      fixes=sorted(info.fixes, key=lambda f: first(f.action))[:4])


def _layer_evidence(layer: LayerGradient, metric: str, value: float | None, rule: str) -> Evidence:
    return Evidence(kind="metric", text=f"{layer.name} ({layer.module_type or 'parameter'}): {layer.reason}",
                    metric=metric, value=value, step=layer.first_bad_step, rule=rule)


def _rule(name: str) -> str:
    t = THRESHOLDS[name]
    return f"{t.measures} {t.comparison} {t.value:g} ({name})" if t.value is not None else f"{t.measures} {t.comparison} ({name})"


def build_hypotheses(layers: list[LayerGradient], *, steps: list[GradientStep], extra: dict[str, list[Evidence]],
                     onsets: dict[str, float | None]) -> list[Hypothesis]:
    """Turn bands and global signals into ranked hypotheses; `extra` adds source-specific evidence per failure."""
    ordered = forward_sorted(layers)
    by_band = {b: [l for l in ordered if l.band == b] for b in BANDS}
    out: list[Hypothesis] = []

    def onset(failure: str) -> float | None:
        if onsets.get(failure) is not None:
            return onsets[failure]
        steps_seen = [l.first_bad_step for l in layers if BAND_FAILURE.get(l.band) == failure
                      and l.first_bad_step is not None]
        return min(steps_seen, default=None)

    nan_ev = list(extra.get("nan_loss", []))
    bad_loss = next((s for s in steps if s.loss_nonfinite), None)
    if bad_loss:
        nan_ev.insert(0, Evidence(kind="metric", metric="loss", step=bad_loss.step, rule="loss non-finite",
                                  text=f"loss became {bad_loss.loss_nonfinite.upper()} at step {bad_loss.step:g}"))
    nan_ev += [_layer_evidence(l, "grad_norm", None, _rule("grad_norm_overflow")) for l in by_band["overflow"][:3]]
    if nan_ev:
        out.append(_hypothesis("nan_loss", 0.95 if bad_loss or extra.get("nan_loss") else 0.9, nan_ev,
                               bad_loss.step if bad_loss and onsets.get("nan_loss") is None else onset("nan_loss")))

    explode_ev = list(extra.get("exploding_gradients", []))
    explode_ev += [_layer_evidence(l, "grad_norm", l.grad_norm_max or l.grad_norm, _rule("grad_norm_exploding"))
                   for l in by_band["exploding"][:3]]
    explode_ev += [_layer_evidence(l, "update_ratio", l.update_ratio, _rule("update_ratio_unstable"))
                   for l in by_band["large"][:3]]
    if explode_ev:
        strong = bool(extra.get("exploding_gradients") or by_band["exploding"])
        out.append(_hypothesis("exploding_gradients", 0.85 if strong else 0.7, explode_ev,
                               onset("exploding_gradients"), ("clip", "learning rate", "LR")))

    vanish = _vanishing(ordered, by_band, extra.get("vanishing_gradients", []), onset("vanishing_gradients"))
    if vanish is not None:
        out.append(vanish)
    if not out:
        out.append(Hypothesis(failure="healthy", confidence=0.8, evidence=[Evidence(
            kind="summary", rule="all layers within the update-ratio and gradient-norm bands",
            text=f"all {len(layers)} parameter tensors are healthy: gradients finite and non-zero, update ratios "
                 f"between {threshold('update_ratio_frozen'):g} and {threshold('update_ratio_unstable'):g}")]))
    return sorted(out, key=lambda h: -h.confidence)


def _vanishing(ordered: list[LayerGradient], by_band: dict[str, list[LayerGradient]],
               extra: list[Evidence], onset: float | None) -> Hypothesis | None:
    broken, frozen = by_band["broken"], by_band["vanishing"] + by_band["frozen"]
    moving = by_band["healthy"] + by_band["large"] + by_band["exploding"]
    if not (broken or frozen or extra):
        return None
    evidence = list(extra)
    profile = _depth_profile(ordered)
    if profile is not None and not broken:
        evidence.append(profile)
    evidence += [_layer_evidence(l, "grad_norm", l.grad_norm, _rule("grad_norm_broken")) for l in broken[:3]]
    evidence += [_layer_evidence(l, "grad_norm", l.grad_norm, f"gradient norm < {GRAD_NORM_VANISHING:g}")
                 for l in by_band["vanishing"][:3]]
    evidence += [_layer_evidence(l, "update_ratio", l.update_ratio, _rule("update_ratio_frozen"))
                 for l in by_band["frozen"][:3]]
    if extra or broken:
        confidence = 0.9
    elif moving and _early(frozen, moving):
        confidence = 0.8  # the classic pattern: early layers starve while late layers still learn
    elif moving:
        confidence = 0.65
    else:
        confidence = 0.7
        evidence.append(Evidence(kind="summary", rule=_rule("update_ratio_frozen"), text=(
            "every layer is below the frozen threshold: the learning rate is far too small, or gradients vanish "
            "everywhere")))
    prefer = ("detach", "requires_grad", "frozen") if extra or broken else ("ReLU", "saturating", "residual")
    hypothesis = _hypothesis("vanishing_gradients", confidence, evidence, onset, prefer)
    if any(l.grad_missing for l in broken):
        hypothesis.fixes = hypothesis.fixes[:1] + MISSING_GRAD_FIXES + hypothesis.fixes[1:2]
    return hypothesis


def _early(frozen: list[LayerGradient], moving: list[LayerGradient]) -> bool:
    """Weights against weights: a layer's own bias moving must not hide that its weight starves."""
    frozen, moving = ([l for l in ls if judges_ratio(l.shape)] for ls in (frozen, moving))
    first_frozen = min((l.order for l in frozen if l.order is not None), default=None)
    first_moving = min((l.order for l in moving if l.order is not None), default=None)
    return first_frozen is not None and first_moving is not None and first_frozen < first_moving


def _depth_profile(ordered: list[LayerGradient]) -> Evidence | None:
    """First vs last weight matrix in forward order: how much gradient survives the trip back."""
    weights = [l for l in ordered if l.shape and len(l.shape) >= 2 and l.grad_norm is not None and l.order is not None]
    if len(weights) < 3:
        return None
    first, last = weights[0], weights[-1]
    if not last.grad_norm or first.grad_norm is None or first.grad_norm >= last.grad_norm:
        return None
    factor = last.grad_norm / first.grad_norm if first.grad_norm > 0 else math.inf
    times = f"{factor:.2g} times" if math.isfinite(factor) else "infinitely"
    return Evidence(kind="metric", metric="grad_norm", value=first.grad_norm, rule="first vs last weight in forward order",
                    text=f"gradient norm of the first layer {first.name} is {fmt(first.grad_norm)}, of the last layer "
                         f"{last.name} {fmt(last.grad_norm)}: {times} smaller at the input end")


def first_bad_layer(layers: list[LayerGradient], top: Hypothesis | None, origin: str | None = None) -> str | None:
    """The first layer, in forward order, in a band that supports the leading hypothesis."""
    if top is None or top.failure == "healthy":
        return None
    if top.failure == "nan_loss" and origin:
        return origin
    bands = {b for b, f in BAND_FAILURE.items() if f == top.failure}
    hit = next((l for l in forward_sorted(layers) if l.band in bands), None)
    return (hit.module or hit.name) if hit else None


def assemble(source: Source, target: str, layers: list[LayerGradient], *, top: int, steps: list[GradientStep],
             extra: dict[str, list[Evidence]] | None = None, onsets: dict[str, float | None] | None = None,
             origin: str | None = None, **fields: Any) -> GradientReport:
    """Rank, bound and summarise: the one place a report is put together for every source."""
    hypotheses = build_hypotheses(layers, steps=steps, extra=extra or {}, onsets=onsets or {})
    lead = hypotheses[0] if hypotheses else None
    ranked = sorted(layers, key=_severity)
    counts = {b: sum(1 for l in layers if l.band == b) for b in BANDS}
    thinned, history = thin(steps, MAX_HISTORY)
    last_global = next((s for s in reversed(steps) if s.global_grad_norm is not None or s.global_grad_nonfinite), None)
    report = GradientReport(
        source=source, target=target, verdict=lead.failure if lead else "healthy", summary="",
        hypotheses=hypotheses, first_bad_layer=first_bad_layer(layers, lead, origin),
        first_bad_step=lead.onset_step if lead else None,
        global_grad_norm=last_global.global_grad_norm if last_global else None,
        global_grad_nonfinite=last_global.global_grad_nonfinite if last_global else None,
        band_counts={b: n for b, n in counts.items() if n}, layers=ranked[:top], layers_total=len(layers),
        layers_omitted=max(0, len(layers) - top), history=history, history_thinned=thinned, **fields)
    report.summary = one_line(report)
    return report


def one_line(report: GradientReport) -> str:
    worst = [l.name for l in report.layers if l.band != "healthy"][:3]
    counts = ", ".join(f"{n} {b}" for b, n in report.band_counts.items())
    kind = next((l.module_type for l in report.layers if l.module == report.first_bad_layer and l.module_type), None)
    where = (f"; first bad layer {report.first_bad_layer}{f' ({kind})' if kind else ''}"
             if report.first_bad_layer else "")
    worst_text = f"; worst: {', '.join(worst)}" if worst else ""
    return f"{report.verdict}: {report.layers_total} parameter tensors ({counts}){where}{worst_text}"


def thin(items: list, limit: int) -> tuple[bool, list]:
    if len(items) <= limit:
        return False, list(items)
    stride = math.ceil(len(items) / limit)
    kept = items[::stride]
    if kept[-1] is not items[-1]:
        kept.append(items[-1])
    return True, kept


def overall_verdict(reports: list[GradientReport]) -> FailureId:
    best = max((h for r in reports for h in r.hypotheses[:1] if h.failure != "healthy"),
               key=lambda h: h.confidence, default=None)
    return best.failure if best else "healthy"


# ------------------------------------------------------------------------------------------------
# Source 1: a model from an entrypoint, run in the worker


def gradient_task(entry: dict, *, input_shapes: list[list[int]] | None, dtypes: list[str | None] | None, steps: int,
                  lr: float, optimizer: str, loss: str, device: str = "cpu") -> dict:
    return {"op": "gradients", "entry": entry, "input_shapes": input_shapes, "dtypes": dtypes, "steps": steps,
            "lr": lr, "optimizer": optimizer, "loss": loss, "device": device}


def analyze_model(task: dict, *, python: str, timeout: float, memory_mb: int, cwd: Path, target: str,
                  top: int = DEFAULT_TOP, progress: Callable[..., None] | None = None,
                  policy: Policy | None = None) -> GradientReport:
    """Build the model in the worker, train `steps` steps there, and judge every parameter."""
    from ml_debug_mcp.core.model.worker import run_worker

    raw = run_worker(task, python, timeout, memory_mb, cwd, progress=progress, policy=policy)
    report = report_from_worker(raw, task, target=target, top=top)
    report.sandbox = SandboxStatus(**raw["sandbox"])
    return report


def report_from_worker(raw: dict, task: dict, *, target: str, top: int = DEFAULT_TOP) -> GradientReport:
    """The worker's measurements -> a report (split out so tests can feed in-process worker output)."""
    steps_taken = int(task.get("steps", 1))
    lr = float(task.get("lr", 1e-3))
    layers = [_model_layer(item, lr, measured=steps_taken >= 1) for item in raw["layers"]]
    _forgive_cancelled_biases(layers, _next_module_types(raw))
    history = [_step(s) for s in raw.get("history", [])]
    extra: dict[str, list[Evidence]] = {}
    onsets: dict[str, float | None] = {}
    if raw.get("broken_graph"):
        extra["vanishing_gradients"] = [Evidence(kind="summary", rule="loss.requires_grad is False",
                                                 text=raw["broken_graph"] + " (a detach/no_grad/.item() on the whole "
                                                      "output, or every parameter frozen)")]
    origin = raw.get("nonfinite_module")
    if origin:
        extra["nan_loss"] = [_origin_evidence(origin)]
        onsets["nan_loss"] = origin["step"]
    over = [s for s in history if s.global_grad_norm is not None and s.global_grad_norm > threshold("grad_norm_exploding")]
    if over:
        extra["exploding_gradients"] = [Evidence(
            kind="metric", metric="global_grad_norm", step=over[0].step, value=over[0].global_grad_norm,
            rule=_rule("grad_norm_exploding"),
            text=f"global gradient norm {fmt(over[0].global_grad_norm)} at step {over[0].step:g}")]
        onsets["exploding_gradients"] = over[0].step
    warnings = []
    if raw.get("frozen_params"):
        warnings.append(f"{raw['frozen_params']} parameters have requires_grad=False and were not analysed "
                        f"(e.g. {', '.join(raw.get('frozen_param_names', [])[:5])}).")
    if steps_taken == 0:
        warnings.append("steps=0: update ratios are estimated as lr*||grad||/||W|| (plain SGD); pass steps>=1 to "
                        "measure the real ||dW||/||W|| of the chosen optimizer.")
    settings = {k: task.get(k) for k in ("steps", "lr", "optimizer", "loss", "input_shapes", "dtypes")}
    settings["inputs"] = raw.get("input_source")
    settings.update(device=raw.get("device", "cpu"), loss_form=raw.get("loss_form"), param_dtype=raw.get("param_dtype"))
    if raw.get("param_dtype") in ("float16", "bfloat16"):
        warnings.append(f"The model trains in {raw['param_dtype']}; norms and ratios were accumulated in float32.")
    return assemble("model", target, layers, top=top, steps=history, extra=extra, onsets=onsets,
                    origin=origin["module"] if origin else None, settings=settings, warnings=warnings)


def _next_module_types(raw: dict) -> dict[str, str]:
    order, types = raw.get("module_order", []), raw.get("module_types", {})
    return {a: types.get(b, "") for a, b in zip(order, order[1:])}


def _forgive_cancelled_biases(layers: list[LayerGradient], next_type: dict[str, str]) -> None:
    """A bias feeding a BatchNorm gets a zero gradient by construction: not a broken graph."""
    for layer in layers:
        norm = next_type.get(layer.module or "", "")
        if (layer.band in ("broken", "frozen", "healthy") and layer.name.rpartition(".")[2] == "bias"
                and not layer.grad_missing
                and norm.startswith(MEAN_REMOVING_NORMS)):
            layer.band, layer.reason = "healthy", CANCELLED_BIAS.format(norm=norm)


def _origin_evidence(origin: dict) -> Evidence:
    name = f"{origin['module']} ({origin['type']})" if origin["module"] else f"the model itself ({origin['type']})"
    if origin.get("where") == "input":
        text = (f"NaN/Inf first appears in the input of {name} at step {origin['step']}: it was produced before that "
                "module ran, by the input batch (if it is the model itself) or by code in its parent's forward "
                "(e.g. log/sqrt/division between layers)")
    else:
        text = f"NaN/Inf first appears in the output of {name} at step {origin['step']}: that module produces it"
    return Evidence(kind="metric", step=origin["step"], rule="first module input/output with a non-finite value",
                    text=text)


def _step(item: dict) -> GradientStep:
    loss, loss_bad = number(item.get("loss"))
    norm, norm_bad = number(item.get("global_grad_norm"))
    return GradientStep(step=item["step"], loss=loss, loss_nonfinite=loss_bad, global_grad_norm=norm,
                        global_grad_nonfinite=norm_bad, global_update_ratio=finite(item.get("global_update_ratio")))


def _model_layer(item: dict, lr: float, *, measured: bool) -> LayerGradient:
    grad, grad_bad = number(item.get("grad_norm"))
    overflow = grad_bad or ("non-finite" if item.get("nonfinite_step") is not None else None)
    weight = finite(item.get("weight_norm"))
    if measured:
        ratio, source = finite(item.get("update_ratio")), "measured"
    else:
        ratio = lr * grad / weight if grad is not None and weight else None
        source = "estimated"
    grad_max = finite(item.get("grad_norm_max"))
    band, reason = band_for(grad_missing=bool(item.get("grad_missing")), grad_norm=grad_max if grad_max is not None
                            else grad, grad_nonfinite=overflow, ratio=ratio, module_ran=item.get("order") is not None,
                            judge_ratio=judges_ratio(item.get("shape")))
    first_bad = item.get("nonfinite_step")
    if band == "overflow" and first_bad is not None:
        reason = f"gradient became non-finite at step {first_bad} (grad_norm_overflow)"
    return LayerGradient(
        name=item["name"], module=item.get("module"), module_type=item.get("module_type"), order=item.get("order"),
        shape=item.get("shape"), band=band, reason=reason, grad_norm=grad, grad_norm_max=grad_max,
        grad_nonfinite=grad_bad, nonfinite_count=item.get("nonfinite_count") or None,
        grad_missing=bool(item.get("grad_missing")), zero_fraction=finite(item.get("zero_fraction")),
        weight_norm=weight, update_ratio=ratio, update_ratio_max=finite(item.get("update_ratio_max")) if measured else None,
        update_ratio_source=source if ratio is not None else None, first_bad_step=first_bad)


# ------------------------------------------------------------------------------------------------
# Source 3: the JSON lines TrainingProbe writes (read here, streaming and bounded; no torch)


class _Track:
    """Running aggregates of one parameter over the probe records (no per-record storage)."""

    __slots__ = ("order", "judge_ratio", "first", "last", "peak", "ratio", "weight", "nonfinite", "last_nonfinite",
                 "missing", "events", "records")

    def __init__(self, order: int, shape: list[int] | None) -> None:
        self.order = order  # first appearance in the file = definition order of named_parameters()
        self.judge_ratio = judges_ratio(shape)
        self.first = self.last = self.peak = self.ratio = self.weight = None
        self.nonfinite = self.last_nonfinite = None
        self.missing = False
        self.events: dict[str, float] = {}
        self.records = 0

    def add(self, step: float, entry: dict | None) -> None:
        self.records += 1
        if entry is None:
            self.missing = True
            self.events.setdefault("broken", step)
            return
        grad, bad = number(entry.get("grad_norm"))
        self.missing, self.last_nonfinite = False, bad
        self.ratio, self.weight = finite(entry.get("update_ratio")), finite(entry.get("weight_norm"))
        count = entry.get("nonfinite") or 0
        if bad or count:
            self.events.setdefault("overflow", step)
            self.nonfinite = max(self.nonfinite or 0, int(count))
            return
        if grad is None:
            return
        self.first = grad if self.first is None else self.first
        self.last = grad
        self.peak = grad if self.peak is None else max(self.peak, grad)
        if grad <= threshold("grad_norm_broken"):
            self.events.setdefault("broken", step)
        elif grad < GRAD_NORM_VANISHING:
            self.events.setdefault("vanishing", step)
        elif grad > threshold("grad_norm_exploding"):
            self.events.setdefault("exploding", step)
        if self.judge_ratio and self.ratio is not None:
            if self.ratio > threshold("update_ratio_unstable"):
                self.events.setdefault("large", step)
            elif self.ratio < threshold("update_ratio_frozen"):
                self.events.setdefault("frozen", step)

    def trend(self) -> Literal["rising", "falling", "flat"] | None:
        if self.first is None or self.last is None or self.records < 2:
            return None
        if self.last > TREND_FACTOR * self.first or (self.first == 0 and self.last > 0):
            return "rising"
        return "falling" if self.last * TREND_FACTOR < self.first else "flat"


def _well_formed(record: Any) -> bool:
    """The shape TrainingProbe writes; anything else is counted as a bad line, not trusted."""
    if not isinstance(record, dict) or not isinstance(record.get("params"), dict):
        return False
    if not all(isinstance(v, dict) for v in record["params"].values()):
        return False
    if not isinstance(record.get("global") or {}, dict) or not isinstance(record.get("shapes") or {}, dict):
        return False
    missing = record.get("missing_grad") or []
    return isinstance(missing, list) and all(isinstance(m, str) for m in missing)


def summarize_probe_stats(path: Path, *, top: int = DEFAULT_TOP,
                          progress: Callable[..., None] | None = None) -> GradientReport:
    """Per-layer last/max/trend and the first step each layer went to zero, NaN or exploded."""
    warnings: list[str] = []
    tracks: dict[str, _Track] = {}
    steps: list[GradientStep] = []
    meta: dict[str, Any] = {}
    shapes: dict[str, list[int]] = {}
    bad_lines = records = 0
    with safe_fs.open_read(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_STATS_BYTES:
            handle.seek(size - MAX_STATS_BYTES)
            handle.readline()
            warnings.append(f"{path.name} is {size >> 20} MB: only its last {MAX_STATS_BYTES >> 20} MB were read, so "
                            "first-event steps may be later than the real ones.")
        for line in handle:
            try:
                record = json.loads(line)
                step = float(record["step"])
                params = record["params"]
            except (ValueError, KeyError, TypeError):
                bad_lines += 1
                continue
            if not _well_formed(record):
                bad_lines += 1
                continue
            records += 1
            meta = {k: record.get(k) for k in ("world_size", "grads", "every") if k in record}
            shapes.update(record.get("shapes") or {})
            _add_record(tracks, step, params, record.get("missing_grad") or [], warnings, shapes)
            g = record.get("global") or {}
            loss, loss_bad = number(record.get("loss"))
            norm, norm_bad = number(g.get("grad_norm"))
            steps.append(GradientStep(step=step, loss=loss, loss_nonfinite=loss_bad, global_grad_norm=norm,
                                      global_grad_nonfinite=norm_bad, global_update_ratio=finite(g.get("update_ratio"))))
            if len(steps) >= 4 * MAX_HISTORY:
                steps = thin(steps, 2 * MAX_HISTORY)[1]
            if progress is not None and records % 200 == 0:
                progress(handle.tell(), size, f"read {records} probe records")
    if not records:
        raise ValueError(f"{path} holds no probe records ({bad_lines} unreadable lines): expected the JSON lines "
                         "TrainingProbe (ml_debug_mcp.core.model.probe) writes, one object with 'step' and 'params' per line.")
    if bad_lines:
        warnings.append(f"{bad_lines} lines were not probe records and were skipped.")
    layers = [_probe_layer(name, t, shapes.get(name)) for name, t in tracks.items()]
    extra, onsets = _probe_global_signals(steps)
    return assemble("probe_stats", str(path), layers, top=top, steps=steps, extra=extra, onsets=onsets,
                    settings={"records": records, **meta}, warnings=warnings)


def _add_record(tracks: dict[str, _Track], step: float, params: dict, missing: list, warnings: list[str],
                shapes: dict[str, list[int]]) -> None:
    for name, entry in list(params.items()) + [(m, None) for m in missing]:
        track = tracks.get(name)
        if track is None:
            if len(tracks) >= MAX_TRACKED_PARAMS:
                if not any("tracked" in w for w in warnings):
                    warnings.append(f"more than {MAX_TRACKED_PARAMS} parameters: the rest are not tracked")
                continue
            track = tracks[name] = _Track(len(tracks), shapes.get(name))
        track.add(step, entry if isinstance(entry, dict) else None)


def _probe_layer(name: str, t: _Track, shape: list[int] | None) -> LayerGradient:
    band, reason = band_for(grad_missing=t.missing, grad_norm=t.last, grad_nonfinite=t.last_nonfinite, ratio=t.ratio,
                            judge_ratio=judges_ratio(shape))
    first_bad = t.events.get(band, min(t.events.values())) if t.events else None
    if band == "healthy" and t.events:
        what, when = min(t.events.items(), key=lambda kv: kv[1])
        reason += f"; it was {what} at step {when:g} earlier"
    elif t.events.get(band) is not None:
        reason += f" since step {t.events[band]:g}"
    module = name.rpartition(".")[0]
    return LayerGradient(name=name, module=module or None, order=t.order, shape=shape, band=band, reason=reason,
                         grad_norm=None if t.last_nonfinite else t.last,
                         grad_norm_max=t.peak, grad_nonfinite=t.last_nonfinite, nonfinite_count=t.nonfinite,
                         grad_missing=t.missing, weight_norm=t.weight, update_ratio=t.ratio,
                         update_ratio_source="probe" if t.ratio is not None else None, trend=t.trend(),
                         first_bad_step=first_bad)


def _probe_global_signals(steps: list[GradientStep]) -> tuple[dict[str, list[Evidence]], dict[str, float | None]]:
    """The global gradient norm over time: first NaN/Inf, first value above the exploding threshold, first 0."""
    exploding, broken = threshold("grad_norm_exploding"), threshold("grad_norm_broken")
    bad = next((s for s in steps if s.global_grad_nonfinite), None)
    over = next((s for s in steps if s.global_grad_norm is not None and s.global_grad_norm > exploding), None)
    zero = next((s for s in steps if s.global_grad_norm is not None and s.global_grad_norm <= broken), None)
    extra: dict[str, list[Evidence]] = {}
    onsets: dict[str, float | None] = {}
    if bad:
        extra["nan_loss"] = [Evidence(
            kind="metric", metric="global_grad_norm", step=bad.step, rule=_rule("grad_norm_overflow"),
            text=f"global gradient norm became {bad.global_grad_nonfinite.upper()} at step {bad.step:g}")]
        onsets["nan_loss"] = bad.step
    if over:
        extra["exploding_gradients"] = [Evidence(
            kind="metric", metric="global_grad_norm", step=over.step, value=over.global_grad_norm,
            rule=_rule("grad_norm_exploding"), text=f"global gradient norm {fmt(over.global_grad_norm)} at step {over.step:g}")]
        onsets["exploding_gradients"] = over.step
    if zero:
        extra["vanishing_gradients"] = [Evidence(
            kind="metric", metric="global_grad_norm", step=zero.step, value=0.0, rule=_rule("grad_norm_broken"),
            text=f"global gradient norm is exactly 0 at step {zero.step:g}: the graph is broken")]
    return extra, onsets
