"""Short excerpts: what a senior engineer reads from the 3 to 30 metric lines people paste.

The curve detectors (`series_curves`) need a run's worth of points to tell a shape from noise. A
pasted excerpt has a handful, yet some judgements need no more: a loss that jumps and then sits at
its new level, one that never moves, one pinned at a signature value, one that falls step after
step. Confidence grows with the number of points and the size of the effect, and stays below the
0.8 bar until both are large. Signature values are read at any length:

- 87.3365 = -ln(float32's smallest normal): a softmax saturated to probability 0 for the true
  class, the trace of a diverged run in Caffe-style losses;
- ln(C) for a plausible class count or vocabulary: the model predicts uniformly, at chance;
- exactly 0, or one value repeated exactly: nothing is being learned, or nothing is computed.
"""

from __future__ import annotations

import math

import numpy as np
from ml_debug_mcp.core.diagnosis.detectors.series_common import (
    COMMON_CLASS_COUNTS,
    COMMON_VOCAB_SIZES,
    LIMITS,
    Curve,
    Limits,
    SeriesSet,
    evidence,
    fmt,
    hypothesis,
    median,
    trend,
)
from ml_debug_mcp.core.diagnosis.hypotheses import Hypothesis

SATURATED_SOFTMAX = -math.log(np.finfo(np.float32).tiny)  # 87.3365
MIN_POINTS = 3


def _scale(n: int) -> float:
    """How much n points can say: 3 points say a little, 10 or more as much as an excerpt can."""
    return min(1.0, max(0.0, (n - 2) / 8))


def _conf(base: float, n: int, effect: float, top: float = 0.85) -> float:
    return min(top, base + (top - base) * _scale(n) * min(1.0, max(0.0, effect)))


def _chance_level(value: float) -> int | None:
    """The class count or vocabulary whose ln(C) the value sits at (within 1%), if any."""
    for k in (*COMMON_CLASS_COUNTS, *COMMON_VOCAB_SIZES):
        if abs(value - math.log(k)) <= 0.01 * math.log(k):
            return k
    return None


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _exact_tail(values: np.ndarray) -> int:
    """How many values at the end equal the last one exactly (to its printed precision)."""
    k = 1
    while k < len(values) and _same(float(values[-k - 1]), float(values[-1])):
        k += 1
    return k


def detect_short_loss(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Judgements on a short loss curve (3-30 points); signature values at any length."""
    c = ss.curve("loss")
    if c is None or ss.is_rl:
        return []
    if len(c) < MIN_POINTS:
        return _saturated(c)
    found = _signatures(c, ss)
    if found or len(c) >= limits.excerpt_points:  # longer curves are the curve detectors' to judge
        return found
    return _shape(c, ss)


PROGRESS_SERIES = ("epoch", "step", "global_step", "iteration", "num_updates", "consumed_samples", "tokens", "time")


def _duplicated_records(c: Curve, ss: SeriesSet, k: int) -> bool:
    """Whether the last k points are one record printed k times (several hosts or ranks echoing one line):
    the steps repeat, or a progress counter logged with them (epoch, global step...) stands still."""
    steps = c.steps[-k:]
    if len(set(steps.tolist())) < k:
        return True
    for name in PROGRESS_SERIES:
        counter = ss.curve(name)
        if counter is None:
            continue
        at = counter.values[np.isin(counter.steps, steps)]
        if len(at) >= 2 and all(_same(float(x), float(at[0])) for x in at):
            return True
    return False


def _saturated(c: Curve) -> list[Hypothesis]:
    """A loss at 87.3365 says divergence even once: no healthy run sits at -ln(float32's smallest normal)."""
    v = c.values
    saturated = np.abs(v - SATURATED_SOFTMAX) <= 0.002
    if not len(v) or not saturated[-1]:
        return []
    k = int(saturated.sum())
    first = c.step_at(int(np.argmax(saturated)))
    text = (f"{c.label} sits at {fmt(float(v[-1]))} = -ln(float32's smallest normal) from step {fmt(first)}: the "
            "softmax gives the true class probability 0, the mark of a run that diverged")
    return [hypothesis("divergence", 0.65 + 0.05 * min(k - 1, 3), [
        evidence(c, text, "loss within 0.002 of 87.3365 (saturated softmax)", step=first, value=float(v[-1]))],
        first)]


def _signatures(c: Curve, ss: SeriesSet) -> list[Hypothesis]:
    v = c.values
    n = len(v)
    saturated = _saturated(c)
    if saturated:
        return saturated
    k = _exact_tail(v)
    if k >= MIN_POINTS and _duplicated_records(c, ss, k):
        return []
    if k >= MIN_POINTS and _same(float(v[-1]), 0.0):
        first = c.step_at(n - k)
        return [hypothesis("vanishing_gradients", _conf(0.5, k, 1.0, 0.75), [evidence(
            c, f"{c.label} is exactly 0 for the last {k} points (from step {fmt(first)}): the loss carries no "
               "signal, so no gradient reaches the model (all labels masked, a detached or constant output, "
               "a saturated discriminator)", "loss == 0 exactly at >= 3 consecutive points", step=first, value=0.0)],
            first)]
    if k >= MIN_POINTS:
        first = c.step_at(n - k)
        chance = _chance_level(float(v[-1]))
        reason = (f" = ln({chance}): the model predicts uniformly, at chance" if chance else
                  ": the weights no longer move, or the same batch and model are evaluated again")
        return [hypothesis("plateau", _conf(0.55, k + 2, 1.0), [evidence(
            c, f"{c.label} repeats exactly {fmt(float(v[-1]))} for the last {k} points (from step {fmt(first)}){reason}",
            "the same value at >= 3 consecutive points", step=first, value=float(v[-1]))], first)]
    return []


def _shape(c: Curve, ss: SeriesSet) -> list[Hypothesis]:
    v = c.values
    n = len(v)
    first, last, low = float(v[0]), float(v[-1]), float(v.min())
    diffs = np.diff(v)
    down_share = float(np.mean(diffs < 0))
    up_share = float(np.mean(diffs > 0))
    scale = max(abs(first), 1e-12)
    # A jump that the loss never comes back from: divergence read from a handful of points.
    before = np.array([median(v[:i]) for i in range(1, n)])
    jumps = v[1:] / np.maximum(before, 1e-12)
    i = int(np.argmax(jumps)) + 1
    if low > 0 and jumps[i - 1] >= 2.0 and n - i >= 2:
        after = v[i:]
        level = median(v[:i])
        if float(after.min()) >= 1.5 * level:
            effect = math.log(float(median(after)) / level) / math.log(10)
            return [hypothesis("divergence", _conf(0.5, n, 0.5 + effect), [evidence(
                c, f"{c.label} jumped from {fmt(level)} to {fmt(float(v[i]))} at step {fmt(c.step_at(i))} and stayed "
                   f"up ({fmt(float(after.min()))}-{fmt(float(after.max()))}) for the {len(after)} points shown",
                "a >= 2x jump over the median before it, every later point >= 1.5x that median",
                step=c.step_at(i), value=float(median(after)))], c.step_at(i))]
        # ...or a single point that the loss comes back from: a spike.
        if len(after) >= 2 and float(median(after[1:])) <= 1.5 * level and jumps[i - 1] >= 3.0:
            return [hypothesis("loss_spike", _conf(0.45, n, jumps[i - 1] / 10), [evidence(
                c, f"{c.label} spiked from {fmt(level)} to {fmt(float(v[i]))} at step {fmt(c.step_at(i))}, then came "
                   f"back to {fmt(float(after[-1]))}", "a >= 3x jump that returns within 1.5x the level before",
                step=c.step_at(i), value=float(v[i]))], c.step_at(i))]
    # Rising from where it started, most steps up: the excerpt shows a divergence in progress.
    rise = (last - low) / max(abs(low), 1e-12)
    if up_share >= 0.6 and rise >= 0.3 and int(np.argmin(v)) <= n // 2:
        return [hypothesis("divergence", _conf(0.4, n, rise), [evidence(
            c, f"{c.label} rose from {fmt(low)} to {fmt(last)} over the {n} points shown ({100 * up_share:.0f}% of the "
               "steps up)", ">= 60% of steps up and the end >= 1.3x the minimum", value=last)])]
    gain = (first - last) / scale
    stalled = _not_learning(c, ss, gain)
    if stalled:
        return stalled
    chance = _chance_level(last)
    spread = float(np.ptp(v)) / max(abs(median(v)), 1e-12)
    flat = abs(trend(v)) < 0.5 and not _duplicated_records(c, ss, n)
    if chance is not None and abs(gain) < 0.02 and spread < 0.02 and flat:
        return [hypothesis("plateau", _conf(0.45, n, 1.0, 0.75), [evidence(
            c, f"{c.label} stays at {fmt(last)} = ln({chance}) over the {n} points shown: the model predicts "
               "uniformly, at chance", "loss within 1% of ln(C) for a common class count, < 2% change",
            value=last)])]
    if n >= 4 and spread < 0.005 and flat:
        return [hypothesis("plateau", _conf(0.35, n, 0.8, 0.65), [evidence(
            c, f"{c.label} does not move: {fmt(float(v.min()))}-{fmt(float(v.max()))} over the {n} points shown",
            "range under 0.5% of the level at >= 4 points", value=last)])]
    settled = _settled_suffix(v)
    if settled >= max(MIN_POINTS, n // 2) and settled < n and float(v[n - settled - 1]) > 1.5 * float(median(v[-settled:])):
        level = float(median(v[-settled:]))
        return [hypothesis("plateau", _conf(0.4, settled, 1.0, 0.7), [evidence(
            c, f"{c.label} fell to {fmt(level)} by step {fmt(c.step_at(n - settled))} and sits there for the last "
               f"{settled} points shown (within 1%): it stopped learning after the first drop",
            "the last >= 3 points (and >= half of them) within 1% of their median, after a >= 1.5x drop",
            step=c.step_at(n - settled), value=level)], c.step_at(n - settled))]
    if gain >= 0.03 and down_share >= 0.5:
        healthy = [evidence(c, f"{c.label} falls from {fmt(first)} to {fmt(last)} ({100 * gain:.0f}%) over the {n} "
                               "points shown, all finite", "a >= 3% drop, most steps down", value=last)]
        return [hypothesis("healthy", _conf(0.55, n, gain * 4, 0.8), healthy)]
    return []


def _settled_suffix(v: np.ndarray, tolerance: float = 0.01) -> int:
    """How many of the last points lie within `tolerance` of their own median."""
    k = 0
    for size in range(2, len(v) + 1):
        tail = v[-size:]
        level = abs(float(median(tail)))
        if level == 0 or float(np.ptp(tail)) > tolerance * level:
            break
        k = size
    return k


def _not_learning(c: Curve, ss: SeriesSet, gain: float) -> list[Hypothesis]:
    """A loss that does not fall with the learning rate at exactly 0: the optimiser makes no updates. (A flat
    excerpt alone says little: late in a healthy run the loss is flat too, and a pasted excerpt often has no
    step numbers to tell the start of training from its end.)"""
    n = len(c)
    if gain >= LIMITS.plateau_improvement:
        return []
    lr = ss.curve("lr")
    if lr is not None and len(lr) >= MIN_POINTS and not np.any(lr.values):
        return [hypothesis("plateau", _conf(0.55, n, 1.0, 0.8), [evidence(
            c, f"{c.label} does not fall ({fmt(float(c.values[0]))} -> {fmt(float(c.values[-1]))}) while the learning "
               f"rate is exactly 0 at all {len(lr)} points shown: the optimiser makes no updates (a schedule at 0, "
               "a warm-up that never starts, an lr left unset)", "lr == 0 at every point and < 3% loss change",
            value=float(c.values[-1]))], causes=["learning rate is 0: check the scheduler and the optimiser's lr"])]
    return []


HUGE_GRAD_NORM = 1e3  # 100x the exploding bar: even at the first steps of a large model, not a healthy norm


def detect_short_grad_norm(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """One or two pasted lines with a gradient norm in the thousands or beyond: exploding gradients.
    (From 3 points up `detect_grad_norm` judges the curve.)"""
    g = ss.curve("grad_norm")
    if g is None or len(g) >= MIN_POINTS or not len(g):
        return []
    i = int(np.argmax(g.values))
    peak = float(g.values[i])
    if peak < HUGE_GRAD_NORM:
        return []
    confidence = 0.6 if peak < 1e5 else 0.7
    return [hypothesis("exploding_gradients", confidence, [evidence(
        g, f"{g.label} reaches {fmt(peak)} at step {fmt(g.step_at(i))}: {peak / limits.grad_norm_exploding:,.0f}x the "
           f"{limits.grad_norm_exploding:g} above which gradients are exploding", f"grad_norm >= {HUGE_GRAD_NORM:g}",
        step=g.step_at(i), value=peak)], g.step_at(i))]


SHORT_DETECTORS = (detect_short_loss, detect_short_grad_norm)
