"""compare_runs: did the fix work? The failed run against the re-run, on three criteria.

1. The pathology classify found in the run before is gone from the run after.
2. The target metric improved by at least `fix_improvement` (10%), compared at the horizon both
   runs reached so a longer re-run does not win by length alone.
3. The run after stayed free of the pathology for `stability_steps` (100) steps or
   `stability_failure_multiple` (10) times the step where the old run failed, whichever is
   larger (the research-debug verification criteria, as written in the catalogue's THRESHOLDS).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from ml_debug_mcp.core.diagnosis.catalogue import THRESHOLDS
from ml_debug_mcp.core.diagnosis.hypotheses import Diagnosis, Evidence, Hypothesis, confidence_text
from ml_debug_mcp.core.logs.series import MetricSeries, ParsedLog, canonical_metric_name
from ml_debug_mcp.core.logs.sources import TrackerSource
from pydantic import BaseModel, Field

Verdict = Literal["fixed", "improved_but_unverified", "not_fixed", "regressed"]

PATHOLOGY_FLOOR = 0.5  # a hypothesis this confident counts as a pathology of the run
NEW_PATHOLOGY_FLOOR = 0.6  # ...and this confident for a pathology the old run did not have
HIGHER_IS_BETTER = frozenset({"accuracy", "eval_accuracy", "reward", "throughput", "effective_rank"})
TAIL_POINTS = 10  # the metric's level is the median of this many last points before the horizon


# Failures that stop the run: an error, not a curve shape.
CRASHES = frozenset({"oom", "shape_mismatch", "graph_reuse", "device_mismatch", "dtype_mismatch", "cuda_assert",
                     "distributed_hang"})

# The metric a fix of each failure should move, when the run logs it; anything else is judged on the loss.
TARGET_METRICS = {"overfitting": ("eval_loss",), "mode_collapse": ("reward",), "rank_collapse": ("effective_rank",),
                  "slow_throughput": ("throughput", "step_time")}


def target_metric(failure: str | None, logged: set[str] | None = None) -> str:
    """Regularising an overfit model raises its train loss on purpose: judge it on eval loss, and so on.
    A failure's metrics are in order of preference (a loader fix shows as step time when no throughput is logged)."""
    for wanted in TARGET_METRICS.get(failure or "", ()):
        if logged is None or wanted in logged:
            return wanted
    return "loss"


class Comparison(BaseModel):
    """The verdict on a fix, with the evidence for each criterion."""

    verdict: Verdict
    summary: str
    metric: str
    lower_is_better: bool
    before_value: float | None = Field(None, description="Metric level (median of the last points) at the common horizon")
    after_value: float | None = None
    horizon_step: float | None = Field(None, description="The last step both runs reached; values are compared there")
    improvement: float | None = Field(None, description="Relative improvement (0.25 = 25% better); None when undefined")
    improvement_note: str | None = None
    required_improvement: float
    pathologies_before: list[str] = Field(default_factory=list)
    resolved: list[str] = Field(default_factory=list)
    persisting: list[str] = Field(default_factory=list)
    new: list[str] = Field(default_factory=list)
    failure_step: float | None = Field(None, description="Where the old run's pathology began")
    stable_steps: float | None = Field(None, description="Steps the new run ran without the old (or a new) pathology")
    required_stable_steps: float
    evidence: list[Evidence] = Field(default_factory=list)


def _pathologies(diagnosis: Diagnosis, floor: float) -> dict[str, Hypothesis]:
    return {h.failure: h for h in diagnosis.hypotheses if h.failure != "healthy" and h.confidence >= floor}


def _level(series: MetricSeries | None, horizon: float | None) -> tuple[float | None, str | None]:
    """Median of the last finite points at or before `horizon`; a note when there is none."""
    if series is None:
        return None, "not logged"
    pairs = [(s, v) for s, v in zip(series.steps, series.values)
             if v is not None and (horizon is None or s <= horizon)]
    if not pairs:
        return None, "no finite value"
    tail = sorted(v for _, v in pairs[-TAIL_POINTS:])
    mid = len(tail) // 2
    value = tail[mid] if len(tail) % 2 else (tail[mid - 1] + tail[mid]) / 2
    return value, None


def _last_finite_step(series: MetricSeries | None) -> float | None:
    if series is None:
        return None
    steps = [s for s, v in zip(series.steps, series.values) if v is not None]
    return steps[-1] if steps else None


def _span(parsed: ParsedLog) -> tuple[float | None, float | None]:
    firsts = [s.stats.first_step for s in parsed.series if s.stats.first_step is not None]
    lasts = [s.stats.last_step for s in parsed.series if s.stats.last_step is not None]
    return (min(firsts) if firsts else None), (max(lasts) if lasts else None)


def compare_runs(before: ParsedLog, after: ParsedLog, metric: str | None = None,
                 diagnoses: tuple[Diagnosis, Diagnosis] | None = None) -> Comparison:
    """Judge the re-run `after` against the failed run `before` on `metric` (a trainer or canonical name;
    by default the one the old run's main failure calls for, see `target_metric`).

    `diagnoses` are the two runs' full classifications (errors included) when the caller has them;
    otherwise only the metric series are classified.
    """
    from ml_debug_mcp.core.diagnosis.classify import classify

    need_gain = float(THRESHOLDS["fix_improvement"].value)
    min_steps = float(THRESHOLDS["stability_steps"].value)
    multiple = float(THRESHOLDS["stability_failure_multiple"].value)

    dx_before, dx_after = diagnoses or (classify(before), classify(after))
    old = _pathologies(dx_before, PATHOLOGY_FLOOR)
    if metric is None:
        main = next((h.failure for h in dx_before.hypotheses if h.failure in old), None)
        metric = target_metric(main, set(before.names) & set(after.names))
    name = canonical_metric_name(metric)
    lower_is_better = name not in HIGHER_IS_BETTER
    now = _pathologies(dx_after, PATHOLOGY_FLOOR)
    resolved = [f for f in old if f not in now]
    persisting = [f for f in old if f in now]
    new = [f for f, h in now.items() if f not in old and h.confidence >= NEW_PATHOLOGY_FLOOR]
    evidence: list[Evidence] = []
    for f in old:
        h = old[f]
        state = "persists" if f in now else "is gone"
        evidence.append(Evidence(kind="summary", text=f"{f} ({confidence_text(h.confidence)} before) {state} in the new run"
                                 + (f" ({confidence_text(now[f].confidence)}): {now[f].evidence[0].text}" if f in now and now[f].evidence else ""),
                                 rule=f"classify both runs; a pathology is a hypothesis >= {PATHOLOGY_FLOOR}"))
    for f in new:
        h = now[f]
        evidence.append(Evidence(kind="summary", text=f"new in the re-run: {f} ({confidence_text(h.confidence)})"
                                 + (f": {h.evidence[0].text}" if h.evidence else ""),
                                 rule=f"hypothesis >= {NEW_PATHOLOGY_FLOOR} absent from the old run"))

    # 2. the metric, at the horizon both runs reached
    s_before, s_after = before.get(name), after.get(name)
    end_before, end_after = _last_finite_step(s_before), _last_finite_step(s_after)
    horizon = min(end_before, end_after) if end_before is not None and end_after is not None else None
    v_before, why_before = _level(s_before, horizon)
    v_after, why_after = _level(s_after, horizon)
    before_died = s_before is not None and s_before.stats.last_value is None and s_before.stats.count > 0
    after_died = s_after is not None and s_after.stats.last_value is None and s_after.stats.count > 0
    improvement: float | None = None
    note: str | None = None
    if v_before is not None and v_after is not None and not before_died:
        scale = max(abs(v_before), 1e-12)
        improvement = (v_before - v_after) / scale if lower_is_better else (v_after - v_before) / scale
        evidence.append(Evidence(kind="metric", metric=name, step=horizon, value=round(improvement, 6),
                                 text=f"{name} at step {horizon:g}: {v_before:.4g} before, {v_after:.4g} after "
                                      f"({100 * improvement:+.1f}%, {'lower' if lower_is_better else 'higher'} is better)",
                                 rule=f"median of the last {TAIL_POINTS} finite points up to the common horizon; "
                                      f"improvement >= {need_gain:g} required"))
    elif not before_died:
        available = ", ".join(sorted(set(before.names) | set(after.names))) or "none"
        note = (f"{name} cannot be compared: before {why_before or 'ok'}, after {why_after or 'ok'} "
                f"(metrics logged: {available})")
    if before_died and not after_died and s_after is not None and s_after.stats.last_value is not None:
        note = (f"the old run's {name} ended non-finite (from step {s_before.stats.first_nonfinite_step:g}); the new "
                "run's stays finite to the end")
        evidence.append(Evidence(kind="metric", metric=name, step=s_before.stats.first_nonfinite_step, text=note,
                                 rule="last value of each series finite or not"))
    gain_ok = (improvement is not None and improvement >= need_gain) or (before_died and not after_died
                                                                         and s_after is not None)
    if after_died:
        new = list(dict.fromkeys(new + ([] if "nan_loss" in old else ["nan_loss"])))

    # 3. stability
    headline = next((h for h in dx_before.hypotheses if h.failure in old), None)  # ranked: the main failure first
    first_before, _ = _span(before)
    failure_step = headline.onset_step if headline is not None else None
    relative_failure = failure_step - first_before if failure_step is not None and first_before is not None else None
    required = max(min_steps, multiple * relative_failure) if relative_failure is not None else min_steps
    first_after, last_after = _span(after)
    stable_steps: float | None = None
    if first_after is not None and last_after is not None:
        bad_onsets = [now[f].onset_step for f in persisting + new if f in now and now[f].onset_step is not None]
        stable_until = min(bad_onsets) if bad_onsets else last_after
        stable_steps = max(0.0, stable_until - first_after)
        evidence.append(Evidence(kind="summary", step=stable_until, value=stable_steps,
                                 text=f"the new run ran {stable_steps:g} steps without the pathology (needs "
                                      f"{required:g}: max({min_steps:g}, {multiple:g} x the old failure step"
                                      + (f" {relative_failure:g}" if relative_failure is not None else ", unknown") + "))",
                                 rule="stability_steps / stability_failure_multiple from the catalogue thresholds"))
    stable_ok = stable_steps is not None and stable_steps >= required
    if headline is not None and headline.failure in CRASHES and headline.failure not in persisting:
        # A crash fix is judged by getting past the crash, not by a better loss (a smaller batch may even raise it).
        _, last_before = _span(before)
        ran_past = last_after is not None and (last_before is None or last_after > last_before)
        where = f"at step {last_before:g}" if last_before is not None else "before logging any metric"
        evidence.append(Evidence(kind="summary", step=last_after, text=(
            f"the old run stopped {where} ({headline.failure}); the new run "
            + (f"reached step {last_after:g} without it" if ran_past else "did not get further")),
            rule="a crash is fixed when the re-run gets past the point where the old run stopped"))
        gain_ok = gain_ok or ran_past
    if first_after is None:  # nothing to read: no claim about what is gone
        resolved, persisting = [], []

    verdict = _verdict(old, resolved, persisting, new, improvement, need_gain, gain_ok, stable_ok, stable_steps)
    comparison = Comparison(
        verdict=verdict, summary="", metric=name, lower_is_better=lower_is_better,
        before_value=_json_float(v_before), after_value=_json_float(v_after), horizon_step=horizon,
        improvement=_json_float(round(improvement, 6) if improvement is not None else None), improvement_note=note,
        required_improvement=need_gain, pathologies_before=list(old), resolved=resolved, persisting=persisting,
        new=new, failure_step=failure_step, stable_steps=stable_steps, required_stable_steps=required,
        evidence=evidence)
    comparison.summary = _summary(comparison, gain_ok, stable_ok)
    return comparison


def _json_float(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _verdict(old: dict, resolved: list[str], persisting: list[str], new: list[str], improvement: float | None,
             need_gain: float, gain_ok: bool, stable_ok: bool, stable_steps: float | None) -> Verdict:
    if stable_steps is None:
        return "not_fixed"  # the new run logged nothing usable: no evidence the fix worked
    if persisting:
        return "not_fixed"
    if new or (improvement is not None and improvement <= -need_gain):
        return "regressed"
    if gain_ok and stable_ok:
        return "fixed"
    if resolved or (improvement is not None and improvement > 0) or gain_ok:
        return "improved_but_unverified"
    return "not_fixed"


def _summary(c: Comparison, gain_ok: bool, stable_ok: bool) -> str:
    if c.stable_steps is None:
        return ("Not fixed: the re-run's log holds no metric series, so nothing shows the fix worked; pass the "
                "re-run's training log (or its run directory) as after_path.")
    parts = []
    if c.pathologies_before:
        if c.resolved:
            parts.append(f"gone: {', '.join(c.resolved)}")
        if c.persisting:
            parts.append(f"still there: {', '.join(c.persisting)}")
    else:
        parts.append("the old run showed no pathology, so only the metric is compared")
    if c.new:
        parts.append(f"new in the re-run: {', '.join(c.new)}")
    if c.improvement is not None:
        meets = c.improvement >= c.required_improvement
        bar = f"{'meets' if meets else 'short of'} the {100 * c.required_improvement:g}% bar"
        if gain_ok and not meets:
            bar += ", not needed: the re-run got past the old run's crash"
        parts.append(f"{c.metric} {100 * c.improvement:+.1f}% at step {c.horizon_step:g} ({bar})")
    elif c.improvement_note:
        parts.append(c.improvement_note)
    if c.stable_steps is not None:
        parts.append(f"stable for {c.stable_steps:g} of the {c.required_stable_steps:g} steps required"
                     + ("" if stable_ok else ": run longer to verify"))
    head = {"fixed": "Fixed", "improved_but_unverified": "Improved but not yet verified",
            "not_fixed": "Not fixed", "regressed": "Regressed"}[c.verdict]
    return f"{head}: " + "; ".join(parts) + "."


def compare_paths(before: Path | TrackerSource, after: Path | TrackerSource, metric: str | None = None,
                  fmt: str | None = None) -> Comparison:
    """compare_runs on two log files (already resolved inside the roots), their errors included: an OOM or a
    shape error that is still there after the fix shows up in the log, not in the metrics."""
    from ml_debug_mcp.core.diagnosis.classify import classify_evidence, read_log_evidence, source_label

    runs = [read_log_evidence(p if isinstance(p, TrackerSource) else Path(p), fmt) for p in (before, after)]
    diagnoses = tuple(classify_evidence(run, source_label(p)) for run, p in zip(runs, (before, after)))
    return compare_runs(runs[0].parsed, runs[1].parsed, metric=metric, diagnoses=diagnoses)
