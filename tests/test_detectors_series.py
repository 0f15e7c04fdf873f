"""Metric-series detectors on real tiny training runs: each fires on its pathology, none on healthy runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import training_runs as tr
from hypothesis import example, given, settings
from hypothesis import strategies as st
from ml_debug_mcp.core.diagnosis.detectors.series_checks import detect_series
from ml_debug_mcp.core.diagnosis.detectors.series_common import LIMITS, centered_median, mad, rolling_median
from ml_debug_mcp.core.diagnosis.hypotheses import Hypothesis
from ml_debug_mcp.core.logs.series import ParsedLog, SeriesBuilder

HEALTHY_RUNS = ["healthy", "healthy_sgd", "healthy_s20", "healthy_s21", "rl_healthy", "rank_healthy"]

# (run, failure it reproduces, confidence floor)
PATHOLOGIES = [
    ("lr_too_high_nan", "nan_loss", 0.9),
    ("lr_too_high_early_nan", "nan_loss", 0.9),
    ("lr_too_high_divergence", "divergence", 0.6),
    ("loss_spike", "loss_spike", 0.55),
    ("hockey_stick", "hockey_stick", 0.55),
    ("lr_too_low", "slow_convergence", 0.55),
    ("shuffled_labels", "plateau", 0.8),
    ("shuffled_labels_unknown_k", "plateau", 0.6),
    ("overfitting", "overfitting", 0.8),
    ("detached_graph", "vanishing_gradients", 0.85),
    ("frozen_weights", "vanishing_gradients", 0.8),
    ("deep_sigmoid", "vanishing_gradients", 0.7),
    ("exploding_rnn", "exploding_gradients", 0.7),
    ("rl_entropy_collapse", "mode_collapse", 0.7),
    ("rl_gibberish", "mode_collapse", 0.7),
    ("rl_kl_inactive", "mode_collapse", 0.7),
    ("rank_collapse", "rank_collapse", 0.8),
    ("slow_throughput", "slow_throughput", 0.6),
]


def hypotheses_for(parsed: ParsedLog, failure: str) -> list[Hypothesis]:
    return [h for h in detect_series(parsed) if h.failure == failure]


def strongest(parsed: ParsedLog, failure: str) -> Hypothesis | None:
    found = hypotheses_for(parsed, failure)
    return max(found, key=lambda h: h.confidence) if found else None


def alarms(parsed: ParsedLog, floor: float = 0.5) -> list[tuple[str, float]]:
    return [(h.failure, h.confidence) for h in detect_series(parsed) if h.failure != "healthy" and h.confidence >= floor]


def series_log(columns: dict[str, list[float]], steps: list[float] | None = None, rank: int | None = None,
               max_points: int = 2000) -> ParsedLog:
    """A ParsedLog from plain columns (NaN allowed), built the way every parser builds one."""
    n = len(next(iter(columns.values())))
    steps = steps or [float(i + 1) for i in range(n)]
    out = []
    for name, values in columns.items():
        b = SeriesBuilder(name, rank=rank, max_points=max_points)
        for s, v in zip(steps, values):
            b.add(s, float(v))
        out.append(b.build())
    return ParsedLog(format="test", series=out, records=n)


def decay(n: int, start: float = 2.0, floor: float = 0.3, tau: float | None = None, noise: float = 0.03,
          seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (floor + (start - floor) * np.exp(-t / (tau or n / 5))) * np.exp(noise * rng.standard_normal(n))


# ------------------------------------------------------------------------------------------------
# Every detector: fires on its pathology, quiet on healthy runs


@pytest.mark.parametrize("run_name,failure,floor", PATHOLOGIES)
def test_detector_fires_on_its_pathology(run_name: str, failure: str, floor: float) -> None:
    h = strongest(tr.to_parsed(tr.run(run_name)), failure)
    assert h is not None, f"{failure} not detected on {run_name}"
    assert h.confidence >= floor
    assert h.evidence and all(e.rule for e in h.evidence), "every evidence item names the rule that fired"
    json.dumps(h.model_dump(), allow_nan=False)  # JSON-clean: no NaN/Inf anywhere


@pytest.mark.parametrize("run_name", HEALTHY_RUNS)
def test_healthy_runs_raise_no_alarm_and_are_called_healthy(run_name: str) -> None:
    parsed = tr.to_parsed(tr.run(run_name))
    assert alarms(parsed) == []
    healthy = strongest(parsed, "healthy")
    assert healthy is not None and healthy.confidence >= 0.6


@pytest.mark.parametrize("run_name,failure", [(r, f) for r, f, _ in PATHOLOGIES])
def test_each_pathology_detector_is_quiet_on_every_healthy_run(run_name: str, failure: str) -> None:
    for healthy in HEALTHY_RUNS:
        h = strongest(tr.to_parsed(tr.run(healthy)), failure)
        assert h is None or h.confidence < 0.5, f"{failure} fired on healthy run {healthy}: {h}"


# ------------------------------------------------------------------------------------------------
# NaN death


def test_nan_onset_is_the_exact_first_nonfinite_step_even_when_downsampled() -> None:
    run = tr.run("lr_too_high_nan")
    first_bad = next(r["step"] for r in run.records if not math.isfinite(r["loss"]))
    for max_points in (2000, 30):
        h = strongest(tr.to_parsed(run, max_points=max_points), "nan_loss")
        assert h is not None and h.onset_step == first_bad
        assert h.confidence >= 0.95


def test_nan_death_reports_the_divergent_lead_in_and_lr() -> None:
    h = strongest(tr.to_parsed(tr.run("lr_too_high_nan")), "nan_loss")
    texts = " ".join(e.text for e in h.evidence)
    assert "climbed" in texts and "learning rate at the onset" in texts
    assert any("learning rate too high" in c for c in h.root_causes)


def test_nan_death_does_not_also_report_curve_shapes() -> None:
    found = {h.failure for h in detect_series(tr.to_parsed(tr.run("lr_too_high_nan")))}
    assert not found & {"plateau", "hockey_stick", "slow_convergence", "loss_spike", "overfitting", "divergence"}


def test_isolated_amp_overflow_in_grad_norm_is_only_a_weak_signal() -> None:
    n = 300
    loss = decay(n)
    grad = np.full(n, 0.9)
    grad[[50, 170]] = np.inf  # two skipped fp16 steps
    parsed = series_log({"loss": list(loss), "grad_norm": list(grad), "loss_scale": [65536.0] * n})
    h = strongest(parsed, "nan_loss")
    assert h is not None and h.confidence < 0.5
    assert alarms(parsed) == []


def test_nan_from_the_first_step_still_gives_an_onset() -> None:
    parsed = series_log({"loss": [math.nan] * 20})
    h = strongest(parsed, "nan_loss")
    assert h is not None and h.onset_step == 1.0 and h.confidence >= 0.9


# ------------------------------------------------------------------------------------------------
# Divergence vs spikes


def test_divergence_onset_follows_the_minimum_and_cites_the_warmup_peak() -> None:
    h = strongest(tr.to_parsed(tr.run("lr_too_high_divergence")), "divergence")
    run = tr.run("lr_too_high_divergence")
    best_step = min(run.records, key=lambda r: r["loss"])["step"]
    assert h.onset_step is not None and h.onset_step >= best_step - 30
    assert any("learning rate had risen" in e.text for e in h.evidence)
    assert any("chance level" in e.text for e in h.evidence)


def test_a_blow_up_in_the_last_steps_is_divergence_and_a_flat_noisy_end_is_not() -> None:
    loss = decay(400, noise=0.02)
    loss[380:] = loss[379] + np.linspace(0.5, 10.0, 20)  # the last 5% climb 100x: still rising, no plateau yet
    h = strongest(series_log({"loss": list(loss)}), "divergence")
    assert h is not None and h.confidence >= 0.8 and 379 <= h.onset_step <= 386
    assert "over the last 5 points" in h.evidence[0].text
    quiet = decay(400, noise=0.15)  # noisy floor: a 5-point tail often sits 2x over some 5-point minimum
    assert strongest(series_log({"loss": list(quiet)}), "divergence") is None


def test_an_exponential_blow_up_from_the_first_step_is_divergence_judged_in_log_space() -> None:
    rng = np.random.default_rng(3)
    loss = 600.0 * np.exp(np.minimum(np.arange(80), 40) * 1.0) * np.exp(rng.standard_normal(80))  # lr=8: 1e2 -> 1e20
    h = strongest(series_log({"loss": list(loss), "grad_norm": list(loss ** 0.5)}), "divergence")
    assert h is not None and "never improved" in h.evidence[0].text and "geometric" in h.evidence[0].rule


def test_a_kl_term_does_not_make_a_run_rl_so_the_loss_curve_is_still_judged() -> None:
    loss = decay(300, noise=0.02)
    loss[150:] = loss[149] + np.linspace(0.0, 6.0, 150)
    columns = {"loss": list(loss), "kl": list(np.full(300, 0.3))}  # a VAE / distillation KL term
    assert strongest(series_log(columns), "divergence") is not None
    columns["reward"] = list(np.linspace(0.1, 0.9, 300))  # with a reward it is RL: the loss is a surrogate
    assert strongest(series_log(columns), "divergence") is None


def test_a_recovering_spike_is_not_divergence() -> None:
    parsed = tr.to_parsed(tr.run("loss_spike"))
    assert strongest(parsed, "divergence") is None
    spike = strongest(parsed, "loss_spike")
    assert spike.onset_step == 150.0
    assert any("grad norm" in e.text for e in spike.evidence), "the grad-norm spike at the same step is cited"


def test_a_jump_that_stays_up_is_divergence_not_a_spike() -> None:
    loss = decay(400, noise=0.02)
    loss[250:] *= 3.0  # a level shift that never recovers
    parsed = series_log({"loss": list(loss)})
    assert strongest(parsed, "divergence") is not None
    spike = strongest(parsed, "loss_spike")
    assert spike is None or spike.confidence < 0.5


def test_spikes_inside_the_converged_noise_floor_are_ignored() -> None:
    loss = decay(500, start=1.0, floor=1e-4, tau=20, noise=0.05)
    loss[[300, 420]] *= 6  # big relative jumps, tiny against the curve's range
    assert strongest(series_log({"loss": list(loss)}), "loss_spike") is None


# ------------------------------------------------------------------------------------------------
# Plateau, hockey stick, slow burn


def test_plateau_says_whether_the_class_count_was_known_or_guessed() -> None:
    known = strongest(tr.to_parsed(tr.run("shuffled_labels")), "plateau")
    guessed = strongest(tr.to_parsed(tr.run("shuffled_labels_unknown_k")), "plateau")
    assert any("ln(10)" in e.text and "from the log" in e.text for e in known.evidence)
    assert any("ln(4)" in e.text and "unknown" in e.text for e in guessed.evidence)
    assert known.confidence > guessed.confidence


def test_plateau_at_ln_vocab_size() -> None:
    rng = np.random.default_rng(1)
    level = math.log(32000)
    parsed = series_log({"loss": list(level * np.exp(0.005 * rng.standard_normal(300))), "vocab_size": [32000.0] * 300})
    h = strongest(parsed, "plateau")
    assert h is not None and h.confidence >= 0.8 and any("ln(32000)" in e.text for e in h.evidence)


def test_returning_to_chance_after_learning_is_divergence_not_plateau() -> None:
    parsed = tr.to_parsed(tr.run("lr_too_high_divergence"))
    assert strongest(parsed, "plateau") is None


def test_hockey_stick_needs_an_early_knee_and_a_flat_floor() -> None:
    h = strongest(tr.to_parsed(tr.run("hockey_stick")), "hockey_stick")
    assert h.onset_step <= 0.12 * 300
    # A curve that reaches the same floor gradually is not a hockey stick.
    assert strongest(series_log({"loss": list(decay(300, tau=80))}), "hockey_stick") is None


def test_converged_to_zero_is_not_a_hockey_stick() -> None:
    assert strongest(series_log({"loss": list(decay(300, start=1.0, floor=1e-3, tau=5))}), "hockey_stick") is None


def test_slow_burn_cites_the_low_update_ratio_when_logged() -> None:
    rng = np.random.default_rng(3)
    loss = np.linspace(2.3, 2.0, 400) * np.exp(0.01 * rng.standard_normal(400))
    parsed = series_log({"loss": list(loss), "update_ratio": [2e-5] * 400})
    h = strongest(parsed, "slow_convergence")
    assert h is not None and any("update ratio" in e.text for e in h.evidence)
    assert h.confidence > strongest(series_log({"loss": list(loss)}), "slow_convergence").confidence


# ------------------------------------------------------------------------------------------------
# Overfitting


def test_overfitting_onset_is_the_eval_minimum() -> None:
    run = tr.run("overfitting")
    h = strongest(tr.to_parsed(run), "overfitting")
    evals = [(r["step"], r["eval_loss"]) for r in run.records if "eval_loss" in r]
    best = min(evals, key=lambda p: p[1])[0]
    assert abs(h.onset_step - best) <= 10
    assert any("accuracy" in e.text for e in h.evidence), "the train/eval accuracy gap (> 5%) is evidence too"


def test_a_rising_eval_loss_without_a_train_loss_is_no_alarm() -> None:
    ev = list(np.linspace(1.0, 2.0, 20))  # eval loss only, rising from its first value
    h = strongest(series_log({"eval_loss": ev}), "overfitting")
    assert h is None or (h.confidence < 0.5 and "no train loss" in h.evidence[0].text)


def test_accuracy_gap_alone_is_moderate_evidence() -> None:
    n = 200
    acc = list(np.linspace(0.5, 0.95, n))
    eacc = [math.nan] * n
    for i in range(19, n, 20):
        eacc[i] = 0.80
    parsed = series_log({"loss": list(decay(n)), "accuracy": acc, "eval_accuracy": eacc})
    h = strongest(parsed, "overfitting")
    assert h is not None and 0.5 <= h.confidence < 0.8
    eacc_close = [v if math.isnan(v) else 0.93 for v in eacc]
    assert strongest(series_log({"loss": list(decay(n)), "accuracy": acc, "eval_accuracy": eacc_close}),
                     "overfitting") is None


# ------------------------------------------------------------------------------------------------
# Gradients and updates


def test_zero_grad_norm_is_a_broken_graph() -> None:
    h = hypotheses_for(tr.to_parsed(tr.run("detached_graph")), "vanishing_gradients")
    assert any("exactly 0" in e.text for x in h for e in x.evidence)
    assert any("detach" in c for x in h for c in x.root_causes)


def test_frozen_weights_show_in_the_update_ratio_while_gradients_flow() -> None:
    parsed = tr.to_parsed(tr.run("frozen_weights"))
    h = strongest(parsed, "vanishing_gradients")
    assert any("update ratio" in e.text for e in h.evidence)
    assert not any("exactly 0" in e.text for e in h.evidence)


def test_per_layer_norms_locate_the_vanishing_layer() -> None:
    h = strongest(tr.to_parsed(tr.run("deep_sigmoid")), "vanishing_gradients")
    assert any(e.metric == "grad_norm_first_layer" for e in h.evidence)


def test_update_ratio_above_a_tenth_is_unstable() -> None:
    parsed = series_log({"loss": list(decay(100)), "update_ratio": [0.3] * 100})
    h = strongest(parsed, "exploding_gradients")
    assert h is not None and any("rewrites" in e.text for e in h.evidence)


def test_grad_norm_under_ten_is_not_exploding_even_with_noise() -> None:
    rng = np.random.default_rng(4)
    grad = 3.0 * np.exp(0.4 * rng.standard_normal(1000))
    assert strongest(series_log({"loss": list(decay(1000)), "grad_norm": list(np.minimum(grad, 9.5))}),
                     "exploding_gradients") is None


# ------------------------------------------------------------------------------------------------
# RL / generation early warnings and representation collapse


def test_zero_advantages_at_high_reward_is_flagged_as_kl_only_training() -> None:
    h = strongest(tr.to_parsed(tr.run("rl_entropy_collapse")), "mode_collapse")
    assert any("KL-only" in e.text for e in h.evidence)
    assert any("entropy collapsed" in e.text for e in h.evidence)


def test_gibberish_entropy_against_log_vocab() -> None:
    h = strongest(tr.to_parsed(tr.run("rl_gibberish")), "mode_collapse")
    assert any("gibberish" in e.text for e in h.evidence)


def test_kl_stuck_at_zero_while_the_policy_moves() -> None:
    h = strongest(tr.to_parsed(tr.run("rl_kl_inactive")), "mode_collapse")
    assert any("KL stays at 0" in e.text for e in h.evidence)
    healthy = strongest(tr.to_parsed(tr.run("rl_healthy")), "mode_collapse")
    assert healthy is None


def test_norm_at_its_clamp_is_an_early_warning_below_the_alarm_level() -> None:
    n = 100
    v = [0.99] * n
    parsed = series_log({"v_norm": v, "v_norm_max": [1.0] * n, "reward": list(np.linspace(0.2, 0.6, n))})
    h = strongest(parsed, "mode_collapse")
    assert h is not None and h.confidence < 0.5 and "clamp" in h.evidence[0].text
    below = series_log({"v_norm": [0.5] * n, "v_norm_max": [1.0] * n, "reward": list(np.linspace(0.2, 0.6, n))})
    assert strongest(below, "mode_collapse") is None


def test_grad_norm_pinned_at_the_clip_value_on_a_run_clipping_every_step() -> None:
    h = strongest(tr.to_parsed(tr.run("clipped_every_step")), "exploding_gradients")
    assert h is not None and h.confidence >= 0.5
    pinned = next(e for e in h.evidence if "clip value" in e.text)
    assert "0.5" in pinned.text and "100%" in pinned.text and h.onset_step == 1
    healthy = strongest(tr.to_parsed(tr.run("clipped_healthy")), "exploding_gradients")
    assert healthy is None  # clipped early on only, then well under its clip value
    assert "healthy" in {h.failure for h in detect_series(tr.to_parsed(tr.run("clipped_healthy")))}


def test_rank_collapse_mentions_the_good_looking_loss() -> None:
    h = strongest(tr.to_parsed(tr.run("rank_collapse")), "rank_collapse")
    assert any("convergence looks great" in e.text for e in h.evidence)
    assert strongest(tr.to_parsed(tr.run("rank_healthy")), "rank_collapse") is None


def test_absolute_effective_rank_uses_the_fall_from_its_start() -> None:
    steps = [float(s) for s in range(10, 310, 10)]
    erank = [680 * math.exp(-s / 60) + 12 for s in steps]
    parsed = series_log({"effective_rank": erank}, steps=steps)
    h = strongest(parsed, "rank_collapse")
    assert h is not None and "absolute" in h.evidence[0].text


# ------------------------------------------------------------------------------------------------
# Throughput and ranks


def test_a_cumulative_clock_is_differenced_before_judging_step_time() -> None:
    rng = np.random.default_rng(5)
    steady = np.cumsum(0.3 * np.exp(0.05 * rng.standard_normal(400)))
    assert strongest(series_log({"step_time": list(steady)}), "slow_throughput") is None
    slower = np.cumsum(np.where(np.arange(400) < 200, 0.3, 0.9))
    h = strongest(series_log({"step_time": list(slower)}), "slow_throughput")
    assert h is not None and "cumulative" in h.evidence[0].text


def test_periodic_stalls_are_reported() -> None:
    t = np.full(300, 100.0)
    t[::10] = 900.0  # every 10th step waits on a sync point
    h = strongest(series_log({"step_time": list(t)}), "slow_throughput")
    assert h is not None and any("stall" in e.text for e in h.evidence)


def test_a_rank_that_stops_logging_is_a_distributed_hang() -> None:
    loss = list(decay(400))
    full = series_log({"loss": loss}, rank=0)
    short = series_log({"loss": loss[:150]}, rank=1)
    parsed = ParsedLog(format="test", series=full.series + short.series)
    h = strongest(parsed, "distributed_hang")
    assert h is not None and "rank 1" in h.evidence[0].text and h.onset_step == 150.0
    even = ParsedLog(format="test", series=full.series + series_log({"loss": loss}, rank=1).series)
    assert strongest(even, "distributed_hang") is None


# ------------------------------------------------------------------------------------------------
# Little evidence, noise robustness, helpers


def test_two_points_give_no_verdict_and_three_only_a_tentative_one() -> None:
    # Issue 9: a pasted excerpt is judged from 3 points up, with a confidence that says how little 3 points show.
    assert detect_series(series_log({"loss": [2.0, 1.5]})) == []
    assert detect_series(ParsedLog(format="unknown")) == []
    found = detect_series(series_log({"loss": [2.0, 1.5, 1.2]}))
    assert [h.failure for h in found] == ["healthy"] and found[0].confidence < 0.6  # tentative: far under 0.8


def test_an_excerpt_that_drops_once_and_then_sits_is_a_plateau() -> None:
    # Caffe's log in a forum post: 87.34 at iteration 0, then 8.26, 8.256, 8.25, 8.251 every 1000 iterations.
    stuck = strongest(series_log({"loss": [87.34, 8.265, 8.256, 8.251, 8.25]}), "plateau")
    assert stuck is not None and 0.4 <= stuck.confidence < 0.8 and "sits there for the last 4" in stuck.evidence[0].text
    falling = series_log({"loss": [87.34, 8.27, 6.1, 4.9, 4.2]})  # still learning after the drop
    assert strongest(falling, "plateau") is None and strongest(falling, "healthy") is not None


def test_a_flat_loss_is_not_called_healthy() -> None:
    parsed = series_log({"loss": [1.0 + 0.001 * (i % 3) for i in range(100)]})
    assert strongest(parsed, "healthy") is None


@settings(max_examples=30, deadline=None)
@given(n=st.integers(40, 3000), noise=st.floats(0.0, 0.15), floor_ratio=st.floats(0.05, 0.5),
       tau_fraction=st.floats(0.15, 0.33), seed=st.integers(0, 10_000))
@example(n=40, noise=0.0, floor_ratio=0.3359375, tau_fraction=0.1875, seed=0)  # slides through ln 2: not a plateau
@example(n=40, noise=0.0, floor_ratio=0.33984375, tau_fraction=0.15625, seed=0)  # converges near ln 2 from 2.0
@example(n=40, noise=0.1484375, floor_ratio=0.25, tau_fraction=0.25, seed=8311)  # a 2.9-sigma point, calm window
def test_noisy_healthy_decays_never_raise_an_alarm(n: int, noise: float, floor_ratio: float, tau_fraction: float,
                                                   seed: int) -> None:
    loss = decay(n, start=2.0, floor=2.0 * floor_ratio, tau=n * tau_fraction, noise=noise, seed=seed)
    parsed = series_log({"loss": list(loss)})
    assert alarms(parsed) == [], f"false alarm on a healthy decay (n={n}, noise={noise:.3f})"


@settings(max_examples=30, deadline=None)
@given(n=st.integers(20, 3000), where=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_any_nan_is_found_at_its_exact_step(n: int, where: float, seed: int) -> None:
    loss = decay(n, seed=seed)
    k = min(n - 1, int(where * n))
    loss[k:] = np.nan
    h = strongest(series_log({"loss": list(loss)}), "nan_loss")
    assert h is not None and h.onset_step == float(k + 1)


_ODD_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -0.0, 1e-300]))


@settings(max_examples=60, deadline=None)
@given(columns=st.dictionaries(
    st.sampled_from(["loss", "eval_loss", "grad_norm", "lr", "accuracy", "eval_accuracy", "update_ratio", "entropy",
                     "reward", "advantage_std", "kl", "vocab_size", "num_classes", "effective_rank", "step_time",
                     "throughput", "v_norm", "v_norm_max", "grad_norm_layer0"]),
    st.lists(_ODD_VALUES, min_size=0, max_size=60), min_size=1, max_size=6))
@example(columns={"grad_norm": [0.0, 0.0, 0.0, 0.0, 1.0], "loss": [0.0] * 15 + [1.0]})  # a zero median grad norm
@example(columns={"loss": [], "effective_rank": [1e-300] * 3})  # a constant rank: its onset is its first point
def test_any_values_give_json_clean_hypotheses_and_never_raise(columns: dict[str, list[float]]) -> None:
    series = []
    for name, values in columns.items():
        b = SeriesBuilder(name)
        for i, v in enumerate(values):
            b.add(float(i), v)
        series.append(b.build())
    for h in detect_series(ParsedLog(format="fuzz", series=series)):
        json.dumps(h.model_dump(), allow_nan=False)
        assert 0.0 <= h.confidence <= 1.0


def test_robust_helpers_match_brute_force() -> None:
    x = np.random.default_rng(6).standard_normal(57)
    w = 7
    brute = [np.median(x[max(0, i - w + 1): i + 1]) for i in range(len(x))]
    assert np.allclose(rolling_median(x, w), brute)
    half = w // 2
    brute_c = [np.median(x[max(0, i - half): i - half + w]) for i in range(len(x))]
    assert np.allclose(centered_median(x, w), brute_c)
    assert mad(np.full(10, 3.0)) == 0.0
    assert LIMITS.grad_norm_exploding == 10.0 and LIMITS.update_ratio_frozen == 1e-5
