"""Detectors on the signals beside the loss: gradient norms, update ratios, RL/generation health,
effective rank and throughput.

These carry the seeds' physiology checks (grad norm 0 / > 10 / NaN, update ratio bands) and the
research-debug early warnings (entropy vs log(vocab), zero advantages at high reward, a norm
pinned at its clamp, an inactive KL term).
"""

from __future__ import annotations

import math
import re

import numpy as np
from ml_debug_mcp.core.diagnosis.detectors.series_common import (
    LIMITS,
    Curve,
    Limits,
    SeriesSet,
    catalogue_cause,
    centered_median,
    evidence,
    fmt,
    hypothesis,
    median,
    window_size,
)
from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Hypothesis

# ------------------------------------------------------------------------------------------------
# Gradients and updates


def detect_grad_norm(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Gradient-norm topology: exactly 0 is a broken graph, above 10 is exploding."""
    g = ss.curve("grad_norm")
    if g is None or len(g) < 3:
        return []
    out: list[Hypothesis] = []
    w = window_size(len(g), limits)
    tail = g.tail(w)
    zero_share = float(np.mean(np.abs(tail - limits.grad_norm_broken) <= limits.zero_eps))
    if zero_share >= limits.near_zero_fraction:
        out.append(hypothesis("vanishing_gradients", 0.9, [evidence(
            g, f"{g.label} is exactly 0 on {100 * zero_share:.0f}% of the last {len(tail)} points: no gradient "
               "reaches the parameters (broken graph: .detach(), requires_grad=False, non-differentiable op)",
            f"|grad_norm| <= {limits.zero_eps:g} on >= {100 * limits.near_zero_fraction:g}% of the last {w} points",
            step=g.step_at(len(g) - 1), value=float(median(tail)))], causes=catalogue_cause("vanishing_gradients", "detach")))
    elif median(tail) < limits.grad_norm_tiny:
        out.append(hypothesis("vanishing_gradients", 0.6, [evidence(
            g, f"{g.label} median {fmt(median(tail))} over the last {len(tail)} points: almost no gradient",
            f"median of last {w} < {limits.grad_norm_tiny:g}", value=median(tail))]))
    limit = limits.grad_norm_exploding
    med_all = median(g.values)
    high = g.values > limit
    share = float(np.mean(high))
    peak_i = int(np.argmax(g.values))
    peak = float(g.values[peak_i])
    items: list[Evidence] = []
    confidence = 0.0
    if median(tail) > limit:
        rising = median(tail) > 2 * median(g.values[:w])
        items.append(evidence(g, f"{g.label} median {fmt(median(tail))} over the last {len(tail)} points (> {limit:g})"
                                 + (", and rising" if rising else ""),
                              f"median of last {w} > {limit:g}", step=g.step_at(len(g) - 1), value=median(tail)))
        confidence = 0.85 if rising else 0.8
    elif share >= limits.grad_spike_share and peak > 10 * max(med_all, 1e-12):
        items.append(evidence(g, f"{g.label} above {limit:g} on {int(high.sum())} of {len(g)} steps, peaking at "
                                 f"{fmt(peak)} (step {fmt(g.step_at(peak_i))}) against a median of {fmt(med_all)}",
                              f">= {100 * limits.grad_spike_share:g}% of steps > {limit:g} and max > 10x median",
                              step=g.step_at(peak_i), value=peak))
        # 0.75 at the 10x floor, 0.8 at 100x, 0.85 from 1000x: the size of the blow-up is the evidence
        confidence = min(0.85, 0.7 + 0.05 * float(np.log10(peak / max(med_all, 1e-12))))
    elif peak > limit and peak > 100 * max(med_all, 1e-12):
        items.append(evidence(g, f"{g.label} spiked to {fmt(peak)} at step {fmt(g.step_at(peak_i))} "
                                 f"({peak / max(med_all, 1e-12):.0f}x its median)",
                              f"max > {limit:g} and > 100x median", step=g.step_at(peak_i), value=peak))
        confidence = 0.5
    if items:
        first = int(np.nonzero(high)[0][0]) if high.any() else peak_i
        out.append(hypothesis("exploding_gradients", confidence, items, g.step_at(first)))
    out += _layer_ratio(ss, limits) + _clip_pinned(ss, limits)
    return out


def _clip_pinned(ss: SeriesSet, limits: Limits) -> list[Hypothesis]:
    """The grad norm at its clip value on nearly every step: clipping has become the optimiser.

    clip_grad_norm_ returns the norm before clipping (what HF logs as grad_norm); a loop that logs the norm
    after clipping shows it equal to the clip value. Both sit at >= clamp_boundary_fraction x the clip."""
    g, cap = ss.curve("grad_norm"), ss.curve("grad_clip")
    if g is None or cap is None or len(g) < limits.excerpt_points or float(cap.values[-1]) <= 0:
        return []  # "every step" needs a run behind it: a fresh init clips its first few steps too
    bound = float(cap.values[-1])
    w = window_size(len(g), limits)
    pinned = g.values >= limits.clamp_boundary_fraction * bound
    share = float(np.mean(pinned[-w:]))
    if share < limits.clip_pinned_share:
        return []
    onset = next((g.step_at(i) for i in range(len(g)) if pinned[i:].all()), g.step_at(len(g) - w))
    return [hypothesis("exploding_gradients", 0.55, [evidence(
        g, f"{g.label} at or above its clip value {fmt(bound)} on {100 * share:.0f}% of the last {w} steps "
           f"(median {fmt(median(g.tail(w)))}): every step is clipped, so the step size is lr x clip / norm and the "
           "gradient only gives a direction; the lr is too high or the loss scale is off",
        f"grad_norm >= {limits.clamp_boundary_fraction:g} x grad_clip on >= {100 * limits.clip_pinned_share:g}% "
        f"of last {w}", step=g.step_at(len(g) - 1), value=float(median(g.tail(w))))], onset,
        causes=catalogue_cause("exploding_gradients", "learning rate"))]


def _layer_ratio(ss: SeriesSet, limits: Limits) -> list[Hypothesis]:
    """Per-layer norms logged as grad_norm/<layer>: the weakest layer far below the strongest."""
    tails = {}
    for name in ss.names_with_prefix("grad_norm_"):
        c = ss.curve(name)
        if c is not None and len(c) >= 3:
            tails[name] = median(c.tail(window_size(len(c), limits)))
    if len(tails) < 2:
        return []
    weakest = min(tails, key=tails.get)
    strongest = max(tails, key=tails.get)
    ratio = tails[weakest] / max(tails[strongest], 1e-30)
    if tails[strongest] <= 0 or ratio >= limits.layer_ratio_vanishing:
        return []
    return [hypothesis("vanishing_gradients", 0.8, [evidence(
        None, f"{weakest} ({fmt(tails[weakest])}) is {fmt(ratio)} of {strongest} ({fmt(tails[strongest])}): the "
              "gradient dies on its way back through the network",
        f"median of each per-layer tail; weakest / strongest < {limits.layer_ratio_vanishing:g}",
        value=ratio, metric=weakest)], causes=catalogue_cause("vanishing_gradients", "saturating"))]


def detect_update_ratio(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Weight-update ratio bands: ~1e-3 healthy, < 1e-5 frozen, > 1e-1 unstable."""
    u = ss.curve("update_ratio")
    if u is None or len(u) < 3:
        return []
    w = window_size(len(u), limits)
    tail = u.tail(w)
    m = median(tail)
    if float(np.mean(tail < limits.update_ratio_frozen)) >= limits.near_zero_fraction:
        return [hypothesis("vanishing_gradients", 0.85, [evidence(
            u, f"weight-update ratio median {fmt(m)} over the last {len(tail)} points (target ~"
               f"{limits.update_ratio_target:g}): the weights are frozen (optimizer not stepping these parameters, "
               "lr 0, or no gradient)",
            f"< {limits.update_ratio_frozen:g} on >= {100 * limits.near_zero_fraction:g}% of the last {w} points",
            step=u.step_at(len(u) - 1), value=m)], causes=catalogue_cause("vanishing_gradients", "optimizer"))]
    if m > limits.update_ratio_unstable:
        return [hypothesis("exploding_gradients", 0.6, [evidence(
            u, f"weight-update ratio median {fmt(m)} over the last {len(tail)} points: each step rewrites more than a "
               "tenth of the weights (unstable; clip gradients, lower the lr or raise the batch size)",
            f"median of last {w} > {limits.update_ratio_unstable:g}", step=u.step_at(len(u) - 1), value=m)])]
    return []


# ------------------------------------------------------------------------------------------------
# RL / generation


Signal = tuple[Evidence, float, float | None]  # evidence, confidence, onset step (None: a cause, not the collapse)


def _first_step(curve: Curve, condition: np.ndarray) -> float | None:
    hits = np.nonzero(condition)[0]
    return curve.step_at(int(hits[0])) if len(hits) else None


def _entropy_signals(ss: SeriesSet, limits: Limits) -> list[Signal]:
    """Entropy above 0.9 ln(vocab) is gibberish; entropy fallen to a quarter of its start is collapse."""
    entropy = ss.curve("entropy")
    if entropy is None or len(entropy) < 3:
        return []
    out: list[Signal] = []
    w = window_size(len(entropy), limits)
    tail, head = median(entropy.tail(w)), median(entropy.head(w))
    last = entropy.step_at(len(entropy) - 1)
    vocab = ss.last("vocab_size")
    if vocab is not None and vocab >= 2:
        ceiling = limits.entropy_gibberish_fraction * math.log(vocab)
        if tail > ceiling:
            out.append((evidence(entropy, f"entropy {fmt(tail)} > {limits.entropy_gibberish_fraction:g} x ln({int(vocab)}) "
                                          f"= {ceiling:.4g}: the output is near-uniform over the vocabulary (gibberish)",
                                 f"median of last {w} > {limits.entropy_gibberish_fraction:g} x log(vocab_size)",
                                 step=last, value=tail), 0.8, _first_step(entropy, entropy.values > ceiling)))
    if head > 0 and tail < limits.entropy_collapse_fraction * head and len(entropy) >= limits.min_points:
        floor = limits.entropy_collapse_fraction * head
        out.append((evidence(entropy, f"entropy collapsed from {fmt(head)} to {fmt(tail)} ({100 * tail / head:.0f}% of "
                                      "its start): the distribution is narrowing onto a few outputs (mode collapse)",
                             f"median of last {w} < {limits.entropy_collapse_fraction:g} x median of first {w}",
                             step=last, value=tail), 0.7, _first_step(entropy, entropy.values < floor)))
    return out


def _zero_advantages(ss: SeriesSet, limits: Limits) -> list[Signal]:
    """All advantages ~0 while mean reward is high: no reward signal left, only KL trains (KL-only steps)."""
    adv_std, reward = ss.curve("advantage_std"), ss.curve("reward")
    if adv_std is None or reward is None or len(adv_std) < 3:
        return []
    w = window_size(len(adv_std), limits)
    zero_share = float(np.mean(np.abs(adv_std.tail(w)) < limits.advantage_zero))
    mean_reward = float(np.mean(reward.tail(window_size(len(reward), limits))))
    if zero_share < 0.8 or mean_reward <= limits.reward_high:
        return []
    onset = _first_step(adv_std, np.abs(adv_std.values) < limits.advantage_zero)
    return [(evidence(adv_std, f"advantages are all ~0 (std < {limits.advantage_zero:g} on {100 * zero_share:.0f}% of "
                               f"the last {w} steps) while mean reward is {mean_reward:.2f}: no reward signal left, "
                               "only the KL term trains the model (KL-only steps)",
                      f"advantage_std < {limits.advantage_zero:g} on >= 80% of last {w} and mean reward > "
                      f"{limits.reward_high:g}", step=onset, value=mean_reward), 0.75, onset)]


def _reward_collapse(ss: SeriesSet, limits: Limits) -> list[Signal]:
    reward = ss.curve("reward")
    if reward is None or len(reward) < limits.min_points:
        return []
    w = window_size(len(reward), limits)
    sm = centered_median(reward.values, w)
    best_i = int(np.argmax(sm))
    best, tail = float(sm[best_i]), median(reward.tail(w))
    if best <= 0 or best_i >= len(reward) - w or tail >= limits.reward_collapse_fraction * best:
        return []
    onset = _first_step(reward, (np.arange(len(sm)) > best_i) & (sm < limits.reward_collapse_fraction * best))
    return [(evidence(reward, f"reward fell from its best {fmt(best)} (step {fmt(reward.step_at(best_i))}) to "
                              f"{fmt(tail)}: reward collapse",
                      f"{w}-point centred median; tail < {limits.reward_collapse_fraction:g} x best",
                      step=reward.step_at(best_i), value=tail), 0.7, onset)]


def _kl_inactive(ss: SeriesSet, limits: Limits) -> list[Signal]:
    kl = ss.curve("kl")
    if kl is None or len(kl) < limits.min_points:
        return []
    w = window_size(len(kl), limits)
    if float(np.max(np.abs(kl.tail(w)))) >= limits.kl_zero or not _policy_moving(ss, limits):
        return []
    return [(evidence(kl, f"KL stays at 0 over the last {w} steps while the policy changes: the KL term is inactive "
                          "(reference model updated with the policy, or coefficient 0)",
                      f"max |kl| over last {w} < {limits.kl_zero:g} while entropy or reward moves",
                      step=kl.step_at(len(kl) - 1), value=0.0), 0.5, None)]


def detect_policy_health(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """The research-debug early warnings and collapses, as one mode_collapse hypothesis.

    Each agreeing signal adds a little confidence; the onset is the earliest collapse signal
    (an inactive KL term or a clamped norm is a cause and does not date it).
    """
    signals = (_entropy_signals(ss, limits) + _zero_advantages(ss, limits) + _reward_collapse(ss, limits)
               + _kl_inactive(ss, limits) + _clamp_warning(ss, limits))
    if not signals:
        return []
    confidence = max(conf for _, conf, _ in signals) + 0.05 * (len(signals) - 1)
    onsets = [onset for _, _, onset in signals if onset is not None]
    return [hypothesis("mode_collapse", min(0.95, confidence), [e for e, _, _ in signals],
                       min(onsets) if onsets else None)]


def _policy_moving(ss: SeriesSet, limits: Limits) -> bool:
    for name in ("entropy", "reward"):
        c = ss.curve(name)
        if c is not None and len(c) >= limits.min_points:
            w = window_size(len(c), limits)
            head, tail = median(c.head(w)), median(c.tail(w))
            if abs(head - tail) > 0.1 * max(abs(head), 1e-12):
                return True
    return False


def _clamp_warning(ss: SeriesSet, limits: Limits) -> list[Signal]:
    """A norm pinned at its clamp (v_norm >= 0.95 max_norm): an early warning, below the alarm level alone."""
    v, cap = ss.curve("v_norm"), ss.curve("v_norm_max")
    if v is None or cap is None or len(v) < 3 or float(cap.values[-1]) <= 0:
        return []
    bound = float(cap.values[-1])
    w = window_size(len(v), limits)
    share = float(np.mean(v.tail(w) >= limits.clamp_boundary_fraction * bound))
    if share < 0.5:
        return []
    return [(evidence(v, f"v_norm at >= {limits.clamp_boundary_fraction:g} x its clamp {fmt(bound)} on "
                         f"{100 * share:.0f}% of the last {w} steps: the optimiser is fighting the constraint",
                      f"v_norm >= {limits.clamp_boundary_fraction:g} x max_norm on >= 50% of last {w}",
                      step=v.step_at(len(v) - 1), value=float(v.values[-1])), 0.45, None)]


# ------------------------------------------------------------------------------------------------
# Representations


def detect_rank_collapse(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Effective rank as a fraction of the dimension under 0.1, or fallen to under a quarter of its start."""
    r = ss.curve("effective_rank")
    if r is None or len(r) < 3:
        return []
    k = max(1, min(3, len(r) // 4))
    head, tail = median(r.head(k)), median(r.tail(k))
    is_fraction = float(np.max(r.values)) <= 1.0
    items: list[Evidence] = []
    confidence = 0.0
    if is_fraction and tail < limits.effective_rank_collapsed:
        items.append(evidence(r, f"effective rank is {100 * tail:.1f}% of the dimension (started at "
                                 f"{100 * head:.1f}%): the representations collapsed onto a few directions",
                              f"median of last {k} < {limits.effective_rank_collapsed:g} x dim",
                              step=r.step_at(len(r) - 1), value=tail))
        confidence = 0.85
    elif head > 0 and tail < 0.25 * head:
        unit = "of the dimension" if is_fraction else "(absolute)"
        items.append(evidence(r, f"effective rank fell from {fmt(head)} to {fmt(tail)} {unit}: "
                                 f"{100 * tail / head:.0f}% of its start",
                              f"median of last {k} < 0.25 x median of first {k}", step=r.step_at(len(r) - 1),
                              value=tail))
        confidence = 0.7 if (not is_fraction or tail < limits.effective_rank_low) else 0.5
    if not items:
        return []
    loss = ss.curve("loss")
    if loss is not None and len(loss) >= limits.min_points:
        w = window_size(len(loss), limits)
        lh, lt = median(loss.head(w)), median(loss.tail(w))
        if lt < lh:
            items.append(evidence(loss, f"meanwhile the loss improved {fmt(lh)} -> {fmt(lt)}: convergence looks "
                                        "great while diversity is gone",
                                  f"median of first vs last {w} loss points", value=lt))
    onset_i = int(np.nonzero(r.values <= max(limits.effective_rank_low * head, tail))[0][0]) if head > 0 else 0
    return [hypothesis("rank_collapse", confidence, items, r.step_at(onset_i))]


# ------------------------------------------------------------------------------------------------
# Throughput


def _per_step_time(c: Curve) -> tuple[np.ndarray, bool]:
    """Step times; a cumulative clock (never decreasing, growing with the step) is differenced first."""
    v = c.values
    if len(v) >= 5 and float(np.mean(np.diff(v) >= 0)) >= 0.98 and v[-1] > 5 * max(v[0], 1e-12):
        steps = np.diff(c.steps)
        return np.diff(v) / np.where(steps > 0, steps, 1), True
    return v, False


def detect_throughput(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """Throughput dropping, step time jumping, or frequent stalls (sync points, a starving data loader)."""
    items: list[Evidence] = []
    confidence = 0.0
    for name, slower_when in (("step_time", "higher"), ("throughput", "lower")):
        c = ss.curve(name)
        if c is None or len(c) < limits.min_points:
            continue
        values, cumulative = _per_step_time(c) if name == "step_time" else (c.values, False)
        n = len(values)
        skip = max(1, n // 20)  # warm-up steps (compilation, cache fill) are not representative
        body = values[skip:]
        q = max(2, len(body) // 4)
        early, late = median(body[:q]), median(body[-q:])
        if early <= 0 or late <= 0:
            continue
        note = " (differenced from a cumulative clock)" if cumulative else ""
        if slower_when == "higher" and late > limits.step_time_rise * early:
            items.append(evidence(c, f"step time rose from {fmt(early)} to {fmt(late)} ({late / early:.1f}x){note}",
                                  f"median of last quarter > {limits.step_time_rise:g} x median of first quarter "
                                  "(first 5% skipped as warm-up)", value=late))
            confidence = max(confidence, 0.7)
        if slower_when == "lower" and late < limits.throughput_drop * early:
            items.append(evidence(c, f"throughput fell from {fmt(early)} to {fmt(late)} ({100 * late / early:.0f}% of "
                                     "its early rate)",
                                  f"median of last quarter < {limits.throughput_drop:g} x median of first quarter "
                                  "(first 5% skipped as warm-up)", value=late))
            confidence = max(confidence, 0.7)
        typical = median(body)
        stalls = body > limits.stall_multiple * typical if slower_when == "higher" else body < typical / limits.stall_multiple
        share = float(np.mean(stalls))
        # Stalls are the exception: when a third of the steps "stall", the times are two kinds of line, not stalls.
        if share >= limits.stall_share and int(stalls.sum()) >= 2 and share <= 0.3:
            items.append(evidence(c, f"{int(stalls.sum())} of {len(body)} steps ({100 * share:.0f}%) stall at "
                                     f"{limits.stall_multiple:g}x the typical {name.replace('_', ' ')}{note}: periodic "
                                     "sync points or data-loader waits",
                                  f"{name} beyond {limits.stall_multiple:g}x its median on >= "
                                  f"{100 * limits.stall_share:g}% of steps", value=share))
            confidence = max(confidence, 0.6)
    stopped = ss.curve("throughput")
    if stopped is not None and float(stopped.values[-1]) == 0.0 and len(ss.series) > 1:
        items.append(evidence(stopped, f"throughput reads exactly 0 at step {fmt(stopped.step_at(len(stopped) - 1))}: "
                                       "no samples were processed in that interval (a stalled loader, environment or "
                                       "collective)", "throughput == 0 at the last point", value=0.0))
        confidence = max(confidence, 0.65)
    data_bound = _data_loading_share(ss, limits)
    if data_bound is not None:
        items.append(data_bound[0])
        confidence = max(confidence, data_bound[1])
    if not items:
        return []
    if len(items) > 1:
        confidence = min(0.9, confidence + 0.05 * (len(items) - 1))
    return [hypothesis("slow_throughput", confidence, items, None,
                       catalogue_cause("slow_throughput", "data loading") if data_bound else None)]


def _data_loading_share(ss: SeriesSet, limits: Limits) -> tuple[Evidence, float] | None:
    """Data time against step time (mmcv, detectron2, timm print both): the step mostly waits for the loader."""
    data, step = ss.curve("data_time"), ss.curve("step_time")
    if data is None or step is None or len(data) < 4 or len(step) < 4:
        return None  # the first logging intervals also wait for the workers to start: a trend needs a few more
    d, s = median(data.values[1:]), median(step.values[1:])  # the first step also waits for workers to start
    if s <= 0 or d <= 0:
        return None
    share = d / s
    if share < limits.data_time_share:
        return None
    text = (f"data loading takes {fmt(d)} of each {fmt(s)} step ({100 * share:.0f}%): the model waits for the "
            "data loader")
    return (evidence(data, text, f"median data_time / median step_time >= {limits.data_time_share:g}", value=share),
            # at 80% of the step in the loader the accelerator idles four fifths of the time: no doubt left
            min(0.9, 0.55 + 0.75 * (share - limits.data_time_share)))


_DISCRIMINATOR = re.compile(r"^(?:d|disc|discriminator|netd)_?loss|^loss_?(?:d|disc|discriminator)$", re.I)
_GENERATOR = re.compile(r"^(?:g|gen|generator|netg)_?loss|^loss_?(?:g|gen|generator)$", re.I)
GAN_SATURATED = 1e-3  # one player's loss under this while the other's is large: it has won outright


def detect_gan_balance(ss: SeriesSet, limits: Limits = LIMITS) -> list[Hypothesis]:
    """A GAN whose discriminator (or generator) wins outright: its loss ~0, the other's large. The losing
    side gets saturated, vanishing gradients, and the generator often collapses to a few outputs."""
    d = next((ss.curve(n) for n in ss.series if _DISCRIMINATOR.match(n)), None)
    g = next((ss.curve(n) for n in ss.series if _GENERATOR.match(n)), None)
    if d is None or g is None or min(len(d), len(g)) < 2:
        return []
    for winner, loser in ((d, g), (g, d)):
        won, lost = median(winner.tail(5)), median(loser.tail(5))
        if abs(won) <= GAN_SATURATED and lost >= 1.0:
            side = "discriminator" if winner is d else "generator"
            text = (f"{winner.label} is {fmt(won)} while {loser.label} is {fmt(lost)}: the {side} wins outright, so "
                    "the other network's gradients saturate and vanish")
            n = min(len(d), len(g))
            return [hypothesis("vanishing_gradients", min(0.8, 0.55 + 0.05 * n), [evidence(
                winner, text, f"median of the last 5: one loss <= {GAN_SATURATED:g}, the other >= 1", value=won)])]
    return []


SIGNAL_DETECTORS = (detect_grad_norm, detect_update_ratio, detect_policy_health, detect_rank_collapse,
                    detect_throughput, detect_gan_balance)
