"""Metric-series detectors: every pathology a training log's curves can show, as hypotheses.

`detect_series(parsed)` runs the loss-curve detectors (`series_curves`) and the signal detectors
(`series_signals`) on each rank's series, then the short-excerpt judgements (`series_short`) for
what a handful of pasted points can show, checks ranks against each other, and adds a `healthy`
hypothesis only when a real loss curve shows progress. Thresholds: `series_common.LIMITS`.
"""

from __future__ import annotations

import math

import numpy as np
from ml_debug_mcp.core.diagnosis.detectors.series_common import (
    LIMITS,
    Limits,
    SeriesSet,
    evidence,
    fmt,
    hypothesis,
    median,
    window_size,
)
from ml_debug_mcp.core.diagnosis.detectors.series_curves import CURVE_DETECTORS
from ml_debug_mcp.core.diagnosis.detectors.series_short import SHORT_DETECTORS
from ml_debug_mcp.core.diagnosis.detectors.series_signals import SIGNAL_DETECTORS
from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Hypothesis
from ml_debug_mcp.core.logs.series import ParsedLog

DETECTORS = CURVE_DETECTORS + SIGNAL_DETECTORS


def series_sets(parsed: ParsedLog) -> list[SeriesSet]:
    """One SeriesSet per rank (un-ranked series form their own set), in rank order."""
    groups: dict[int | None, dict] = {}
    for s in parsed.series:
        groups.setdefault(s.rank, {})[s.name] = s
    order = sorted(groups, key=lambda r: -1 if r is None else r)
    return [SeriesSet(groups[r], rank=r) for r in order]


def detect_series(parsed: ParsedLog, limits: Limits = LIMITS) -> list[Hypothesis]:
    """All series hypotheses (duplicates across detectors or ranks are merged by the caller)."""
    found: list[Hypothesis] = []
    with np.errstate(all="ignore"):  # absurd values (1e300) may overflow in means and fits; comparisons cope
        for ss in series_sets(parsed):
            here: list[Hypothesis] = []
            for detector in DETECTORS:
                here += detector(ss, limits)
            healthy = assess_health(ss, limits)
            if healthy is not None:
                here.append(healthy)
            found += here + _short_excerpt(ss, here, limits)
    found += detect_rank_lag(parsed, limits)
    return found


def _short_excerpt(ss, here: list[Hypothesis], limits: Limits) -> list[Hypothesis]:
    """What the short-excerpt judgements add: failures the run-length detectors did not name, and a
    healthy reading only when nothing else fired."""
    known = {h.failure for h in here}
    added = [h for detector in SHORT_DETECTORS for h in detector(ss, limits) if h.failure not in known]
    if any(h.confidence >= 0.5 for h in here):
        added = [h for h in added if h.failure != "healthy"]
    if not here and not added:
        quiet = _no_alarm(ss)
        added += [quiet] if quiet is not None else []
    return added


NO_ALARM_CONFIDENCE = 0.55  # given only when no failure signal fired at all (right ~60% on the dev split)


def _no_alarm(ss) -> Hypothesis | None:
    """A tentative healthy reading: finite metric lines that no detector finds anything wrong with.

    This is what an engineer says of an excerpt that shows nothing alarming: not proof of health
    (nothing here shows progress), so it stays under the 0.5 veto of any failure signal."""
    curves = [(name, ss.curve(name)) for name in ("loss", "eval_loss", "accuracy", "eval_accuracy", "reward")]
    shown = [(name, c) for name, c in curves if c is not None and len(c) >= 3]
    if not shown or any(s.stats.nan_count or s.stats.inf_count for s in ss.series.values()):
        return None
    name, c = shown[0]
    text = (f"no failure signal in the {len(c)} {c.label} points shown ({fmt(float(c.values[0]))} -> "
            f"{fmt(float(c.values[-1]))}), all finite, and no error in the text: nothing here is alarming, though "
            "an excerpt this short cannot show the run's progress")
    return hypothesis("healthy", NO_ALARM_CONFIDENCE, [evidence(c, text, "no detector fired on >= 3 finite points",
                                                                value=float(c.values[-1]))])


FEW_RECORDS_CONFIDENCE = 0.3  # two records: nothing to judge a shape from, only the absence of alarm


def few_records_reading(parsed: ParsedLog) -> Hypothesis | None:
    """What an engineer says of two pasted records with finite values and nothing else: nothing alarming
    here, and too little to judge. Only for when no detector, error rule or text rule fired at all; a
    single record is no evidence either way."""
    shown = [parsed.get(name) for name in ("loss", "eval_loss", "accuracy", "eval_accuracy", "reward")]
    shown = [s for s in shown if s is not None and s.stats.count >= 2]
    if not shown or any(s.stats.nan_count or s.stats.inf_count for s in parsed.series):
        return None
    s = shown[0]
    values = [v for v in s.values if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    text = (f"the {len(values)} {s.name} records shown ({fmt(values[0])} -> {fmt(values[-1])}) and every other "
            "value are finite, and no error is in the text: nothing alarming, but too few records to judge the run")
    return hypothesis("healthy", FEW_RECORDS_CONFIDENCE, [Evidence(
        kind="metric", text=text, rule="finite values in 2 records, no detector or error rule fired",
        metric=s.name, value=values[-1])])


def detect_rank_lag(parsed: ParsedLog, limits: Limits = LIMITS) -> list[Hypothesis]:
    """A rank whose log stops well before the others': it hung or died, and the rest will wait for it."""
    last: dict[int, float] = {}
    first: dict[int, float] = {}
    for s in parsed.series:
        if s.rank is None or s.stats.last_step is None or s.stats.first_step is None:
            continue
        last[s.rank] = max(last.get(s.rank, -math.inf), s.stats.last_step)
        first[s.rank] = min(first.get(s.rank, math.inf), s.stats.first_step)
    if len(last) < 2:
        return []
    leader = max(last, key=last.get)
    span = last[leader] - min(first.values())
    if span <= 0:
        return []
    lagging = {r: s for r, s in last.items() if last[leader] - s > limits.rank_lag_fraction * span}
    if not lagging:
        return []
    items = [evidence(None, f"rank {r} stopped logging at step {fmt(s)} while rank {leader} reached step "
                            f"{fmt(last[leader])}: it hung or died, and the other ranks will block in the next collective",
                      f"last step trails the leading rank by > {limits.rank_lag_fraction:g} x the logged span",
                      step=s) for r, s in sorted(lagging.items())]
    return [hypothesis("distributed_hang", 0.7, items, min(lagging.values()))]


def assess_health(ss: SeriesSet, limits: Limits = LIMITS) -> Hypothesis | None:
    """A healthy claim, only from positive evidence: a finite loss (or reward) curve that improves."""
    if ss.is_rl:
        return _rl_health(ss, limits)
    loss = ss.raw("loss")
    c = ss.curve("loss")
    if loss is None or c is None or len(c) < limits.healthy_min_points or loss.stats.nan_count or loss.stats.inf_count:
        return None
    w = window_size(len(c), limits)
    head, tail = median(c.head(w)), median(c.tail(w))
    gain = (head - tail) / max(abs(head), 1e-12)
    if gain < limits.healthy_min_improvement:
        return None
    items: list[Evidence] = [evidence(c, f"{c.label} decreased from {fmt(head)} to {fmt(tail)} "
                                         f"({100 * gain:.0f}%) over {len(c)} points, all finite",
                                      f"median of first vs last {w} points improves >= "
                                      f"{100 * limits.healthy_min_improvement:g}%", value=tail)]
    confidence = 0.6 + (0.05 if len(c) >= 50 else 0.0)
    ev = ss.curve("eval_loss")
    if ev is not None and len(ev) >= 2 and float(ev.values[-1]) <= (1 + limits.overfit_eval_rise) * float(ev.values.min()):
        items.append(evidence(ev, f"eval loss {fmt(float(ev.values[0]))} -> {fmt(float(ev.values[-1]))}, tracking the "
                                  "train loss", "eval loss ends within the overfitting threshold of its minimum",
                              value=float(ev.values[-1])))
        confidence += 0.1
    g = ss.curve("grad_norm")
    if g is not None and len(g) >= 3:
        gm = median(g.values)
        if 0 < gm <= limits.grad_norm_exploding:
            items.append(evidence(g, f"grad norm bounded and non-zero (median {fmt(gm)})",
                                  f"0 < median grad_norm <= {limits.grad_norm_exploding:g}", value=gm))
            confidence += 0.1
    return hypothesis("healthy", min(confidence, 0.9), items)


def _rl_health(ss: SeriesSet, limits: Limits) -> Hypothesis | None:
    reward = ss.curve("reward")
    if reward is None or len(reward) < limits.healthy_min_points:
        return None
    w = window_size(len(reward), limits)
    head, tail = median(reward.head(w)), median(reward.tail(w))
    if tail <= head:
        return None
    adv = ss.curve("advantage_std")
    if adv is not None and median(adv.tail(w)) < limits.advantage_zero:
        return None
    entropy = ss.curve("entropy")
    if entropy is not None and len(entropy) >= 3:
        e_head, e_tail = median(entropy.head(w)), median(entropy.tail(w))
        vocab = ss.last("vocab_size")
        if e_tail < limits.entropy_collapse_fraction * e_head or (
                vocab is not None and vocab >= 2 and e_tail > limits.entropy_gibberish_fraction * math.log(vocab)):
            return None
    items = [evidence(reward, f"reward {fmt(head)} -> {fmt(tail)} over {len(reward)} steps",
                      f"median of last {w} >= median of first {w}", value=tail)]
    confidence = 0.6
    if entropy is not None and len(entropy) >= 3:
        items.append(evidence(entropy, f"entropy {fmt(e_head)} -> {fmt(e_tail)}: neither collapsed nor near-uniform",
                              "entropy between the collapse and gibberish thresholds", value=e_tail))
        confidence += 0.1
    if adv is not None and len(adv):
        items.append(evidence(adv, f"advantage std {fmt(float(np.median(adv.values)))}: the reward still separates samples",
                              "median advantage_std", value=float(np.median(adv.values))))
        confidence += 0.05
    return hypothesis("healthy", confidence, items)
