"""Loss-curve detectors: NaN death, divergence, spikes, plateau, hockey stick, slow burn, overfitting.

Each reads the `loss` / `eval_loss` curves of one `SeriesSet` through robust statistics
(rolling medians, MAD) so minibatch noise does not trip them, and returns hypotheses whose
evidence names the window and threshold that fired.
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
    catalogue_cause,
    centered_median,
    evidence,
    fmt,
    hypothesis,
    mad,
    median,
    rolling_median,
    trend,
    window_size,
)
from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Hypothesis


def _persistently_nonfinite(ss: SeriesSet, name: str, limits: Limits) -> bool:
    s = ss.raw(name)
    if s is None:
        return False
    bad = s.stats.nan_count + s.stats.inf_count
    return bad > 0 and (s.stats.last_value is None or bad / max(s.stats.count, 1) >= limits.nonfinite_transient_share)


def _loss_curve(ss: SeriesSet, limits: Limits, min_factor: int = 1) -> Curve | None:
    """The training-loss curve when it is a convergence curve worth shape analysis.

    Not for RL runs (the loss is a policy surrogate) nor for a loss that went NaN for good: the
    finite part before a NaN death is the NaN detector's lead-in, not a curve shape of its own.
    """
    if ss.is_rl or _persistently_nonfinite(ss, "loss", limits):
        return None
    c = ss.curve("loss")
    if c is None or len(c) < limits.min_points * min_factor:
        return None
    return c


# ------------------------------------------------------------------------------------------------
# NaN / Inf


def _lead_in(ss: SeriesSet, onset: float) -> list[Evidence]:
    """What the loss, grad norm and lr did just before the first non-finite loss."""
    items: list[Evidence] = []
    loss = ss.curve("loss")
    if loss is not None:
        before = loss.values[loss.steps < onset]
        if len(before) >= 5:
            lo = float(before.min())
            last = float(before[-1])
            if last > 2 * lo and last - lo > 1e-12:
                items.append(evidence(loss, f"loss climbed from {fmt(lo)} to {fmt(last)} before turning "
                                            "non-finite: the run diverged first", "last finite value > 2x the minimum before onset",
                                      step=float(loss.steps[loss.steps < onset][-1]), value=last))
    grad = ss.curve("grad_norm")
    if grad is not None:
        g = grad.value_near(onset - 1e-9)
        if g is not None and g > LIMITS.grad_norm_exploding:
            items.append(evidence(grad, f"grad norm was {fmt(g)} just before the first non-finite loss (> "
                                        f"{LIMITS.grad_norm_exploding:g}: exploding)",
                                  f"grad_norm > {LIMITS.grad_norm_exploding:g}", step=onset, value=g))
    lr = ss.curve("lr")
    if lr is not None:
        value = lr.value_near(onset)
        if value is not None:
            items.append(evidence(lr, f"learning rate at the onset: {fmt(value)} (started at {fmt(float(lr.values[0]))})",
                                  "lr at the first non-finite step", step=onset, value=value))
    return items


def detect_nonfinite(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """NaN death at step N: loss, eval loss or gradient norm turned NaN/Inf (positions are exact)."""
    items: list[Evidence] = []
    confidence = 0.0
    onset: float | None = None
    lasting = True  # no series came back finite after a brief non-finite spell (fp16 skipped steps)
    for name, strong in (("loss", 0.95), ("eval_loss", 0.85), ("grad_norm", 0.85)):
        s = ss.raw(name)
        if s is None or not (s.stats.nan_count or s.stats.inf_count):
            continue
        st = s.stats
        bad = st.nan_count + st.inf_count
        first = st.first_nonfinite_step
        kind = s.nonfinite[0].kind if s.nonfinite else "nan"
        recovered = st.last_value is not None
        transient = recovered and bad / max(st.count, 1) < limits.nonfinite_transient_share
        lasting = lasting and not transient
        label = name if s.rank is None else f"{name} (rank {s.rank})"
        if transient:
            amp = ss.raw("loss_scale") is not None
            weight = 0.35 if name == "grad_norm" else 0.6
            text = (f"{label} was {kind} at {bad} of {st.count} points (first at step {fmt(first)}) and finite again "
                    "afterwards")
            if name == "grad_norm":
                text += ("; with mixed precision an occasional inf gradient is a skipped step, harmless while the "
                         "loss scale recovers" + (" (a loss_scale series is logged)" if amp else ""))
                weight = 0.25 if amp else weight
        else:
            weight = strong
            tail = "and stayed non-finite to the end" if not recovered else "and recurred"
            text = f"{label} became {kind} at step {fmt(first)} {tail} ({bad} of {st.count} points non-finite)"
            if name == "grad_norm":
                text += ": a numerical overflow in the backward pass (log(0), division by zero, fp16 range)"
        items.append(evidence(None, text, "first non-finite value in the series (exact, kept through downsampling)",
                              step=first, metric=name))
        confidence = max(confidence, weight)
        if first is not None and (onset is None or first < onset):
            onset = first
    if not items or onset is None:
        return []
    nonfinite = {e.metric for e in items}
    lead_in = _lead_in(ss, onset)
    items += lead_in
    diverged_first = any(e.metric in ("loss", "grad_norm") for e in lead_in)
    causes = catalogue_cause("nan_loss", "learning rate too high") if diverged_first else []
    loss = ss.raw("loss")
    if nonfinite == {"grad_norm"} and lasting and loss is not None and loss.stats.count:
        # The loss stayed finite and only the gradient norm overflowed: the gradients exploded, the loss is not NaN.
        return [hypothesis("exploding_gradients", confidence, items, onset)]
    return [hypothesis("nan_loss", confidence, items, onset, causes)]


# ------------------------------------------------------------------------------------------------
# Divergence


def _chance_levels(ss: SeriesSet) -> tuple[list[int], bool]:
    """Class counts whose ln(k) is a chance-level loss: the logged one, or the common ones (guessed)."""
    for name in ("num_classes", "vocab_size"):
        k = ss.last(name)
        if k is not None and k >= 2:
            return [round(k)], True
    return list(COMMON_CLASS_COUNTS + COMMON_VOCAB_SIZES), False


def detect_divergence(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Loss rising and staying up: the smoothed tail sits well above the running minimum.

    Judged with the usual window, then with a few points only: a blow-up in the last few percent of
    a run is still rising, so the usual window would call its minimum recent and see nothing.
    """
    s = ss.raw("loss")
    if s is None or s.stats.last_value is None:  # ends non-finite: the NaN detector tells that story
        return []
    c = _loss_curve(ss, limits, min_factor=2)
    if c is None:
        return []
    w = window_size(len(c), limits)
    for tail_w in (w, min(limits.window_min, max(3, w // 4))):
        found = _divergence(ss, c, w, tail_w, limits)
        if found:
            return found
    return []


def _divergence(ss: SeriesSet, c: Curve, w: int, tail_w: int, limits: Limits) -> list[Hypothesis]:
    """The minimum comes from the usual `w`-point smoothing; the rise is judged on the last `tail_w` points."""
    late = tail_w < w
    v = c.values
    n = len(v)
    sm = rolling_median(v, w)
    i_min = int(np.argmin(sm[w - 1:])) + w - 1
    min_s = float(sm[i_min])
    if i_min >= n - tail_w:  # the minimum is recent: nothing has risen yet
        return []
    head = median(v[:max(3, n // 100)])  # the very start: a fast early drop must count in full
    tail = median(v[-tail_w:])
    drop = max(head - min_s, 0.25 * abs(min_s), 1e-12)
    rise = tail - min_s
    ratio = rise / drop
    multiplied = min_s > 0 and tail >= limits.divergence_multiple * min_s and ratio >= 0.1
    # Across orders of magnitude (an exponential blow-up) levels and noise are judged in log space.
    geometric = min_s > 0 and tail >= 10 * min_s
    if geometric:
        recent = v[-tail_w:][v[-tail_w:] > 0]
        rise_seen, noise = math.log(tail / min_s), mad(np.log(recent)) if len(recent) else math.inf
    else:
        rise_seen, noise = rise, mad(v[-tail_w:])

    def level(share: float) -> float:
        return min_s * (tail / min_s) ** share if geometric else min_s + share * rise

    elevated = float(np.mean(v[-tail_w:] > level(0.25 if late else 0.5)))
    if (ratio < limits.divergence_rise and not multiplied) or rise_seen <= 3 * noise / math.sqrt(tail_w) or elevated < 0.8:
        return []
    crossing = np.nonzero(centered_median(v, tail_w)[i_min:] > level(0.05))[0]  # centred: no trailing lag
    onset = c.step_at(i_min + int(crossing[0])) if len(crossing) else c.step_at(n - 1)
    confidence = 0.6 + 0.3 * min(1.0, max(0.0, ratio - limits.divergence_rise) / 1.5)
    if multiplied:
        confidence = max(confidence, 0.7)
    if late:
        confidence = min(confidence, 0.75)  # only the last few points say so
    if tail >= head:
        confidence = max(confidence, 0.85)
    fell = head - min_s > 0.05 * abs(head)
    start = (f"fell to {fmt(min_s)} (step {fmt(c.step_at(i_min))}) then rose" if fell else
             f"never improved: it rose from {fmt(head)} at the start")
    text = (f"{c.label} {start} to {fmt(tail)} over the last {tail_w} points and stays there"
            + (f": {ratio:.1f}x the earlier drop" if fell else "")
            + (", above where it started" if tail >= head and fell else ""))
    halfway = "a quarter of the way" if late else "halfway"
    items = [evidence(c, text,
                      f"{w}-point rolling median; tail median - min > {limits.divergence_rise:g} x (start - min), or "
                      f"tail > {limits.divergence_multiple:g} x min; >= 80% of the last {tail_w} points above {halfway} "
                      f"from min to tail{' (geometric)' if geometric else ''}; onset where the smoothed loss passes "
                      "5% of that rise", step=onset, value=tail)]
    ks, known = _chance_levels(ss)
    for k in ks:
        chance = math.log(k)
        if abs(tail - chance) <= limits.chance_tolerance_known * chance and min_s < chance * (1 - limits.chance_learned_margin):
            items.append(evidence(c, f"the loss is back at chance level ln({k}) = {chance:.4g} after having learned "
                                     f"(minimum {fmt(min_s)}): the model lost what it learned"
                                     + ("" if known else f" ({k} classes guessed; the log does not give num_classes)"),
                                  f"|tail - ln k| <= {limits.chance_tolerance_known:g} x ln k", value=tail))
            break
    lr = ss.curve("lr")
    if lr is not None and len(lr) >= 2:
        at = lr.value_near(onset)
        first = float(lr.values[0])
        if at is not None and at > 1.5 * first:
            items.append(evidence(lr, f"the learning rate had risen from {fmt(first)} to {fmt(at)} by the onset "
                                      "(warm-up peak too high?)", "lr at onset > 1.5x first lr", step=onset, value=at))
    return [hypothesis("divergence", confidence, items, onset, catalogue_cause("divergence", "learning rate"))]


# ------------------------------------------------------------------------------------------------
# Spikes


def _spike_events(c: Curve, limits: Limits) -> list[dict]:
    v = c.values
    n = len(v)
    w = window_size(n, limits)
    if n < 2 * w + 2:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(v[:-1], w)  # windows[i] = v[i : i+w], judged at i+w
    med = np.median(windows, axis=1)
    spread = 1.4826 * np.median(np.abs(windows - med[:, None]), axis=1)
    smooth = centered_median(v, w)
    # A few-point window can look calm by chance; the curve's own relative noise bounds the spread from below.
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(np.abs(smooth) > 1e-12, v / smooth - 1.0, 0.0)
    noise = mad(relative[np.isfinite(relative)])
    spread = np.maximum(spread, np.maximum(max(noise, 1e-3) * np.abs(med), 1e-12))
    floor = limits.spike_min_range_share * float(smooth.max() - smooth.min())
    events = []
    i = w
    while i < n:
        m, sd = med[i - w], spread[i - w]
        jump = v[i] - m
        if jump / sd >= limits.spike_z and jump >= limits.spike_rel * abs(m) and jump >= floor:
            j = i
            while j + 1 < n and (v[j + 1] - m) / sd >= limits.spike_z / 2:
                j += 1
            if j - i + 1 > max(3, w // 2):  # elevated for half a window or more: a level shift, not a spike
                i = j + 1
                continue
            peak = float(v[i:j + 1].max())
            after = v[j + 1:j + 1 + w]
            if len(after) < max(3, w // 2):
                recovered = None
            else:
                recovered = median(after) <= m + limits.spike_recover * (peak - m)
            events.append({"start": i, "end": j, "base": float(m), "peak": peak, "z": float(jump / sd),
                           "recovered": recovered})
            i = j + 1
        else:
            i += 1
    return events


def detect_spikes(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Transient loss spikes that recover (loss_spike); ones that do not are left to divergence."""
    c = _loss_curve(ss, limits, min_factor=2)
    if c is None:
        return []
    events = _spike_events(c, limits)
    recovered = [e for e in events if e["recovered"]]
    pending = [e for e in events if e["recovered"] is None]
    if not recovered and not pending:
        return []
    w = window_size(len(c), limits)
    rule = (f"loss > trailing {w}-point median + {limits.spike_z:g} MAD and > {1 + limits.spike_rel:g}x that median; "
            f"recovered when the next {w} points' median falls back within {limits.spike_recover:g} of the jump")
    grad = ss.curve("grad_norm")
    items = []
    for e in (recovered + pending)[:5]:
        step = c.step_at(e["start"])
        state = "and recovered" if e["recovered"] else "at the end of the log (recovery not yet visible)"
        items.append(evidence(c, f"{c.label} spiked from ~{fmt(e['base'])} to {fmt(e['peak'])} at step {fmt(step)} "
                                 f"({e['z']:.0f} MAD) {state}", rule, step=step, value=e["peak"]))
        if grad is not None and len(grad) >= 5:
            g = grad.value_near(step)
            g_med = median(grad.values)
            if g is not None and g_med > 0 and g > 3 * g_med:
                items.append(evidence(grad, f"grad norm {fmt(g)} at the same step ({g / g_med:.0f}x its median)",
                                      "grad_norm at the spike step > 3x its median", step=step, value=g))
    if len(events) > 5:
        items.append(evidence(c, f"{len(events)} spikes in total", rule))
    confidence = {1: 0.6, 2: 0.7}.get(len(recovered), 0.8) if recovered else 0.45  # only an unfinished one: wait
    return [hypothesis("loss_spike", confidence, items, c.step_at((recovered + pending)[0]["start"]))]


# ------------------------------------------------------------------------------------------------
# Plateau, hockey stick, slow burn


def detect_plateau(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """The loss does not move: stuck at chance level ln(k), or no relative progress at all."""
    c = _loss_curve(ss, limits)
    if c is None:
        return []
    v = c.values
    n = len(v)
    w = window_size(n, limits)
    head, tail = median(v[:w]), median(v[-w:])
    min_s = float(np.min(centered_median(v, w)))
    second_half = median(v[n // 2:])
    third_quarter, last_quarter = median(v[n // 2:3 * n // 4]), median(v[3 * n // 4:])
    items: list[Evidence] = []
    confidence = 0.0
    ks, known = _chance_levels(ss)
    tolerance = limits.chance_tolerance_known if known else limits.chance_tolerance_guess
    if not known and n < limits.excerpt_points:
        ks = []  # a guessed class count proves nothing from a short window: any loss is near some ln(k)
    for k in ks:
        level = math.log(k)
        sits = all(abs(x - level) <= tolerance * level for x in (tail, second_half, third_quarter, last_quarter))
        # A guessed k proves little when the loss came down from far above ln k: a healthy run may converge there.
        started_there = known or head <= level * limits.chance_guess_start_ratio
        if sits and started_there and min_s >= level * (1 - limits.chance_learned_margin):
            source = "num_classes/vocab_size from the log" if known else (
                f"num_classes unknown: ln({k}) matched loosely among common class counts and vocabulary sizes")
            items.append(evidence(c, f"{c.label} sits at {fmt(tail)} = chance level ln({k}) = {level:.4g} for the "
                                     f"second half of the run ({source})",
                                  f"medians of the last {w}, the second half and each of its halves within {tolerance:g} x ln k",
                                  value=tail))
            confidence = 0.85 if known else 0.7
            break
    gain = (head - tail) / max(abs(head), 1e-12)
    never_dipped = min_s >= head * (1 - 2 * limits.plateau_improvement) if head > 0 else True
    # A short noisy window of a long run says nothing about progress; short excerpts are series_short's.
    enough = n >= limits.excerpt_points or (mad(v) <= limits.plateau_improvement / 2 * abs(median(v))
                                            and abs(trend(v)) < 0.5)
    if abs(gain) < limits.plateau_improvement and never_dipped and n >= 2 * w and enough:
        items.append(evidence(c, f"{c.label} went from {fmt(head)} to {fmt(tail)} over {n} points "
                                 f"({100 * gain:+.1f}% improvement): no progress",
                              f"median of first vs last {w} points: improvement < {100 * limits.plateau_improvement:g}%",
                              step=c.step_at(n - 1), value=tail))
        confidence = max(confidence, 0.65) + (0.1 if confidence else 0.0)
    if not items:
        return []
    lr = ss.curve("lr")
    if lr is not None and float(np.max(np.abs(lr.tail(w)))) == 0.0:
        items.append(evidence(lr, "the learning rate is 0: nothing can change", "max |lr| over the tail == 0", value=0.0))
        confidence += 0.1
    accuracy = ss.curve("accuracy")
    if accuracy is not None and known and len(ks) == 1:
        acc = median(accuracy.tail(w))
        chance = 1 / ks[0] * (100 if accuracy.values.max() > 1.5 else 1)
        if abs(acc - chance) <= 0.5 * chance:
            items.append(evidence(accuracy, f"accuracy {fmt(acc)} is at chance (1/{ks[0]})",
                                  "accuracy within 50% of 1/k", value=acc))
    causes = catalogue_cause("plateau", "shuffled") if any("chance level" in e.text for e in items) else []
    return [hypothesis("plateau", confidence, items, c.step_at(0), causes)]


def detect_hockey_stick(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Fast drop then flat: most of the drop in the first steps, nothing after, well above zero."""
    c = _loss_curve(ss, limits, min_factor=3)
    if c is None or len(c) < limits.excerpt_points:
        return []
    v = c.values
    n = len(v)
    w = window_size(n, limits)
    start = median(v[:max(3, n // 100)])
    if start <= 0:
        return []
    sm = centered_median(v, w)
    min_s = float(sm.min())
    drop = start - min_s
    tail = median(v[-w:])
    if drop < 0.2 * start or tail < limits.hockey_converged_level * start:
        return []
    knee = int(np.nonzero(sm <= min_s + 0.2 * drop)[0][0])
    if knee > limits.hockey_knee_fraction * n:
        return []
    settled = min(knee + w // 2, n - w)  # half a window on: the centred median reaches back into the drop
    after = median(v[settled:settled + w])
    gain_after = after - tail
    if not -5 * limits.hockey_flat_gain * drop < gain_after < limits.hockey_flat_gain * drop:
        return []  # still improving (a normal curve) or climbing again (divergence)
    items = [evidence(c, f"{c.label} fell from {fmt(start)} to {fmt(after)} by step {fmt(c.step_at(knee))} "
                         f"({100 * knee / n:.0f}% of the run), then stayed flat at ~{fmt(tail)} for the remaining "
                         f"{n - knee} points (improved {fmt(gain_after)}, {100 * gain_after / drop:.1f}% of the drop)",
                      f"{w}-point centred median: 80% of the drop within {100 * limits.hockey_knee_fraction:g}% of the "
                      f"run, < {100 * limits.hockey_flat_gain:g}% of it afterwards, floor > "
                      f"{limits.hockey_converged_level:g} x start", step=c.step_at(knee), value=tail)]
    return [hypothesis("hockey_stick", 0.6, items, c.step_at(knee), catalogue_cause("hockey_stick", "learning rate"))]


def detect_slow_burn(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Near-linear slow decrease: each third of the run improves about as much as the first."""
    c = _loss_curve(ss, limits, min_factor=3)
    if c is None or len(c) < limits.excerpt_points:
        return []
    v = c.values
    n = len(v)
    w = window_size(n, limits)
    a, b, z = median(v[: n // 3]), median(v[n // 3: 2 * n // 3]), median(v[2 * n // 3:])
    d1, d2 = a - b, b - z
    if d1 <= 0 or d2 <= 0 or d2 / d1 < limits.slow_deceleration:
        return []
    sm = centered_median(v, w)
    x = c.steps
    slope, intercept = np.polyfit(x, sm, 1)
    resid = sm - (slope * x + intercept)
    total = float(np.sum((sm - sm.mean()) ** 2))
    r2 = 1 - float(np.sum(resid ** 2)) / total if total > 0 else 0.0
    start = median(v[:w])
    gain = (start - median(v[-w:])) / max(abs(start), 1e-12)
    noise = mad(v - sm)
    if r2 < limits.slow_r2 or gain >= limits.slow_max_gain or d2 <= 3 * noise / math.sqrt(n / 3):
        return []
    items = [evidence(c, f"{c.label} decreases almost linearly (R^2 {r2:.2f} of a straight line) by {fmt(abs(slope))} "
                         f"per step; the last third improved {d2 / d1:.0%} as much as the first third and only "
                         f"{100 * gain:.0f}% of the starting loss is gone: still far from converged",
                      f"{w}-point centred median; R^2 >= {limits.slow_r2:g}, third-to-third drop ratio >= "
                      f"{limits.slow_deceleration:g}, total improvement < {100 * limits.slow_max_gain:g}%",
                      value=gain)]
    confidence = 0.6
    ratio = ss.curve("update_ratio")
    if ratio is not None:
        r = median(ratio.tail(w))
        if r < limits.update_ratio_target / 2:
            items.append(evidence(ratio, f"weight-update ratio {fmt(r)} is below the ~{limits.update_ratio_target:g} "
                                         "target: each step moves the weights too little",
                                  f"median of last {w} < {limits.update_ratio_target / 2:g}", value=r))
            confidence += 0.1
    lr = ss.curve("lr")
    if lr is not None:
        items.append(evidence(lr, f"learning rate {fmt(float(lr.values[-1]))} at the end of the log",
                              "last lr value", value=float(lr.values[-1])))
    return [hypothesis("slow_convergence", confidence, items, None, catalogue_cause("slow_convergence", "learning rate"))]


# ------------------------------------------------------------------------------------------------
# Overfitting


def _percent_scale(c: Curve) -> float:
    return 100.0 if float(np.max(c.values)) > 1.5 else 1.0


def _eval_stuck(ev: Curve, tr: Curve, limits: Limits) -> list[Evidence]:
    """The train loss falls, the eval loss does not move: the model memorises what it trains on."""
    e_first, e_last, e_min = float(ev.values[0]), float(ev.values[-1]), float(ev.values.min())
    t_first, t_last = float(tr.values[0]), float(tr.values[-1])
    if e_first <= 0 or t_first <= 0:
        return []
    flat = abs(e_last - e_first) / e_first < limits.plateau_improvement and e_min >= (1 - 2 * limits.plateau_improvement) * e_first
    falling = (t_first - t_last) / t_first >= 0.15
    if not (flat and falling):
        return []
    return [evidence(ev, f"the train loss fell {fmt(t_first)} -> {fmt(t_last)} while the eval loss stayed at "
                         f"{fmt(e_first)} -> {fmt(e_last)} over {len(ev)} evaluations: what is learned does not "
                         "carry to held-out data", f"train loss -15% or more, eval loss within "
                         f"{100 * limits.plateau_improvement:g}% of its start", value=e_last)]


def detect_overfitting(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Eval loss turning up while the train loss keeps falling; train/eval accuracy gap over 5%."""
    items: list[Evidence] = []
    confidence = 0.0
    onset = None
    if _persistently_nonfinite(ss, "loss", limits) or _persistently_nonfinite(ss, "eval_loss", limits):
        return []
    ev, tr = ss.curve("eval_loss"), ss.curve("loss")
    if ev is not None and len(ev) >= 4 and not ss.is_rl:
        sm = centered_median(ev.values, 3 if len(ev) >= 6 else 1)
        i_min = int(np.argmin(sm))
        min_v = float(sm[i_min])
        if i_min <= len(ev) - 3:
            tail = median(ev.tail(min(3, len(ev) - i_min - 1)))
            rise = (tail - min_v) / max(abs(min_v), 1e-12)
            if rise >= limits.overfit_eval_rise:
                onset = ev.step_at(i_min)
                text = (f"eval loss bottomed at {fmt(min_v)} (step {fmt(onset)}) and rose {100 * rise:.0f}% to "
                        f"{fmt(tail)}")
                confidence = 0.5
                if tr is None:  # a rising eval loss alone cannot tell overfitting from divergence
                    text += " (no train loss is logged to tell overfitting from divergence)"
                    confidence = 0.35
                else:
                    at = tr.values[tr.steps <= onset]
                    later = tr.values[tr.steps > onset]
                    k = max(3, window_size(len(tr), limits) // 2)
                    if len(at) >= 1 and len(later) >= 3:
                        train_then, train_now = median(at[-k:]), median(later[-k:])
                        if train_now > (1 + limits.overfit_eval_rise) * train_then:
                            return []  # both rising: divergence, not overfitting
                        if train_now < train_then:
                            text += f" while the train loss kept falling ({fmt(train_then)} -> {fmt(train_now)})"
                            confidence = 0.8 if train_now < 0.98 * train_then else 0.65
                            if train_now < 0.2 * tail:
                                confidence += 0.1
                        else:
                            text += " with the train loss flat"
                            confidence = 0.4
                items.append(evidence(ev, text, f"3-point centred median of eval loss; tail > (1 + "
                                                f"{limits.overfit_eval_rise:g}) x minimum", step=onset, value=tail))
    if not items and ev is not None and tr is not None and len(ev) >= 4 and len(tr) >= 4 and not ss.is_rl:
        items += _eval_stuck(ev, tr, limits)
        confidence = 0.55 if items else confidence
    acc, eacc = ss.curve("accuracy"), ss.curve("eval_accuracy")
    if acc is not None and eacc is not None and len(acc) >= 3:
        scale = _percent_scale(acc)
        w = window_size(len(acc), limits)
        gap = (median(acc.tail(w)) - median(eacc.tail(min(3, len(eacc))))) / scale
        if gap > limits.overfit_gap:
            items.append(evidence(acc, f"train accuracy exceeds eval accuracy by {100 * gap:.1f} points "
                                       f"(> {100 * limits.overfit_gap:g}, the success criterion)",
                                  f"median of last {w} train accuracies - median of last 3 eval accuracies > "
                                  f"{limits.overfit_gap:g}", value=gap))
            gap_conf = 0.7 if gap > 3 * limits.overfit_gap else 0.55
            confidence = max(confidence, gap_conf) + (0.05 if confidence else 0.0)
    if not items:
        return []
    return [hypothesis("overfitting", confidence, items, onset)]


CURVE_DETECTORS = (detect_nonfinite, detect_divergence, detect_spikes, detect_plateau, detect_hockey_stick,
                   detect_slow_burn, detect_overfitting)
