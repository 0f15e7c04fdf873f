"""What every metric-series detector shares: the named thresholds, robust statistics and builders.

The seeds' numbers (grad-norm topology, update-ratio bands, entropy and clamp fractions,
effective-rank floors, the 5% overfitting gap) come from `core.catalogue.THRESHOLDS`, so the
catalogue resource and the detectors can never disagree; the window sizes and noise multipliers
that only the series detectors need live in `LIMITS` below. Every evidence item quotes the
window and threshold it used, so an agent can check the call by reading the same series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from ml_debug_mcp.core.diagnosis.catalogue import THRESHOLDS, failure_info
from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Hypothesis
from ml_debug_mcp.core.logs.series import MetricSeries


def _seed(name: str) -> float:
    value = THRESHOLDS[name].value
    assert value is not None, name
    return float(value)


@dataclass(frozen=True)
class Limits:
    """Every number the series detectors compare against, by name (seed values first)."""

    # --- from the seeds, via core.catalogue.THRESHOLDS
    grad_norm_exploding: float = field(default_factory=lambda: _seed("grad_norm_exploding"))
    grad_norm_broken: float = field(default_factory=lambda: _seed("grad_norm_broken"))
    update_ratio_target: float = field(default_factory=lambda: _seed("update_ratio_target"))
    update_ratio_frozen: float = field(default_factory=lambda: _seed("update_ratio_frozen"))
    update_ratio_unstable: float = field(default_factory=lambda: _seed("update_ratio_unstable"))
    entropy_gibberish_fraction: float = field(default_factory=lambda: _seed("entropy_gibberish_fraction"))
    clamp_boundary_fraction: float = field(default_factory=lambda: _seed("clamp_boundary_fraction"))
    overfit_gap: float = field(default_factory=lambda: _seed("overfit_gap"))
    effective_rank_collapsed: float = field(default_factory=lambda: _seed("effective_rank_collapsed_fraction"))
    effective_rank_low: float = field(default_factory=lambda: _seed("effective_rank_low_fraction"))
    # --- windows and noise handling (series side only)
    min_points: int = 8  # fewer finite points than this: curve-shape detectors stay silent
    excerpt_points: int = 30  # under this, run-shape claims (no progress, slow burn, hockey stick) are left to
    # series_short: a pasted window of a long run shows noise, not the run's shape
    window_fraction: float = 0.1  # rolling-median window = this share of the points...
    window_min: int = 5  # ...clamped to [window_min, window_max]
    window_max: int = 100
    zero_eps: float = 1e-12  # |grad norm| at or below this counts as exactly zero
    near_zero_fraction: float = 0.9  # share of the tail that must be zero (grad norm) or frozen (update ratio)
    # --- non-finite values
    nonfinite_transient_share: float = 0.05  # non-finite points under this share that later recover: transient
    # --- divergence
    divergence_rise: float = 0.5  # tail above the smoothed minimum by this share of the earlier drop
    divergence_multiple: float = 2.0  # ...or the tail at this multiple of the minimum (a jump after a long descent)
    # --- spikes
    spike_z: float = 8.0  # robust z-score (MAD units) of a spike against the trailing window
    spike_rel: float = 0.5  # ...and at least this relative jump above the trailing median
    spike_recover: float = 0.25  # recovered: next window's median within this share of the jump
    spike_min_range_share: float = 0.05  # jumps under this share of the curve's range are floor noise
    # --- plateau / chance level
    plateau_improvement: float = 0.03  # relative head-to-tail improvement under this is no progress
    chance_tolerance_known: float = 0.05  # |tail - ln k| / ln k with k known
    chance_tolerance_guess: float = 0.02  # the same with k guessed from common class counts
    chance_learned_margin: float = 0.1  # a smoothed minimum this far below ln k means it had learned
    chance_guess_start_ratio: float = 1.5  # with k guessed, the run must start within this factor of ln k
    # --- hockey stick / slow burn
    hockey_knee_fraction: float = 0.12  # 80% of the drop done within this share of the run
    hockey_flat_gain: float = 0.05  # improvement after the knee under this share of the drop
    hockey_converged_level: float = 0.1  # tail under this share of the start: converged, not stuck
    slow_r2: float = 0.9  # linear fit of the smoothed curve at least this good
    slow_deceleration: float = 0.6  # last-third drop at least this share of the first-third drop
    slow_max_gain: float = 0.6  # total relative improvement under this: still far from done
    # --- overfitting
    overfit_eval_rise: float = 0.1  # eval loss above its minimum by this share
    # --- gradients
    layer_ratio_vanishing: float = 1e-3  # weakest / strongest per-layer gradient norm
    grad_norm_tiny: float = float(THRESHOLDS["grad_norm_vanishing"].value)  # as good as no gradient
    grad_spike_share: float = 0.05  # share of steps above the exploding threshold for "repeated"
    clip_pinned_share: float = 0.9  # share of the tail at the clip value (x clamp_boundary_fraction): every step clipped
    # --- RL / generation
    entropy_collapse_fraction: float = 0.25  # entropy tail under this share of its start
    advantage_zero: float = 1e-3  # advantage std under this: no learning signal left
    reward_high: float = 0.5  # mean reward above this while advantages vanish: KL-only steps
    reward_collapse_fraction: float = 0.5  # reward tail under this share of its best
    kl_zero: float = 1e-8  # |KL| under this for the whole tail: the KL term does nothing
    # --- throughput
    throughput_drop: float = 0.6  # late throughput under this share of early throughput
    step_time_rise: float = 1.5  # late step time over this multiple of early step time
    stall_multiple: float = 3.0  # a step this many times the median step time is a stall
    stall_share: float = 0.05  # ...and this share of steps stalling is a pattern
    data_time_share: float = 0.4  # data loading this share of the step time: the loader is the bottleneck
    # --- distributed
    rank_lag_fraction: float = 0.1  # a rank whose last step trails the others by this share of the run
    # --- healthy
    healthy_min_points: int = 10
    healthy_min_improvement: float = 0.05


LIMITS = Limits()

# Chance level ln(k) for the class counts and vocabularies seen most often, checked when the log
# does not say how many classes there are.
COMMON_CLASS_COUNTS = (2, 3, 4, 5, 10, 100, 1000)
COMMON_VOCAB_SIZES = (32000, 32768, 50257, 50304, 128256, 151936)


# ------------------------------------------------------------------------------------------------
# Robust statistics


def window_size(n: int, limits: Limits = LIMITS) -> int:
    return int(min(limits.window_max, max(limits.window_min, round(n * limits.window_fraction))))


def rolling_median(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing rolling median; the first w-1 points use the expanding window so lengths match."""
    n = len(x)
    if n == 0:
        return x.copy()
    w = max(1, min(w, n))
    out = np.empty(n)
    for i in range(min(w - 1, n)):
        out[i] = np.median(x[: i + 1])
    if n >= w:
        out[w - 1:] = np.median(np.lib.stride_tricks.sliding_window_view(x, w), axis=1)
    return out


def mad(x: np.ndarray) -> float:
    """Median absolute deviation scaled to a normal standard deviation (0 for constant input)."""
    if len(x) == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def trend(x: np.ndarray) -> float:
    """Spearman rank correlation of the values with their order: -1 falling every step, +1 rising, ~0 flat noise."""
    n = len(x)
    if n < 3 or float(np.ptp(x)) == 0.0:
        return 0.0
    ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)
    order = np.arange(n, dtype=float)
    return float(np.corrcoef(order, ranks)[0, 1])


def median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else math.nan


def clean(value: float | None) -> float | None:
    """JSON-safe float: None for NaN/Inf, rounded to 6 significant digits for readable evidence."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


# ------------------------------------------------------------------------------------------------
# Series views


@dataclass
class Curve:
    """The finite points of one series as arrays, with the helpers every detector needs."""

    name: str
    series: MetricSeries
    steps: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, series: MetricSeries) -> Curve:
        steps, values = series.finite_arrays()
        return cls(series.name, series, np.asarray(steps, dtype=float), np.asarray(values, dtype=float))

    def __len__(self) -> int:
        return len(self.values)

    def head(self, k: int) -> np.ndarray:
        return self.values[:k]

    def tail(self, k: int) -> np.ndarray:
        return self.values[-k:]

    def step_at(self, index: int) -> float:
        return float(self.steps[index])

    def value_near(self, step: float) -> float | None:
        """The value at the last point at or before `step` (None before the first point)."""
        idx = int(np.searchsorted(self.steps, step, side="right")) - 1
        return float(self.values[idx]) if idx >= 0 else None

    @property
    def label(self) -> str:
        rank = self.series.rank
        return self.name if rank is None else f"{self.name} (rank {rank})"


def evidence(curve: Curve | None, text: str, rule: str, *, step: float | None = None,
             value: float | None = None, metric: str | None = None) -> Evidence:
    return Evidence(kind="metric", text=text, rule=rule, step=clean(step), value=clean(value),
                    metric=metric or (curve.name if curve is not None else None))


def hypothesis(failure: str, confidence: float, items: list[Evidence], onset: float | None = None,
               causes: list[str] | None = None) -> Hypothesis:
    """A series hypothesis; `causes` are the root causes this run's evidence points at (listed first)."""
    return Hypothesis(failure=failure, confidence=round(min(0.99, max(0.0, confidence)), 3), evidence=items,
                      onset_step=clean(onset), root_causes=list(causes or []))


def centered_median(x: np.ndarray, w: int) -> np.ndarray:
    """Centred rolling median (shrinking windows at the ends): locates a drop without trailing lag."""
    n = len(x)
    if n == 0:
        return x.copy()
    w = max(1, min(w, n))
    half = w // 2
    padded = np.concatenate([np.full(half, np.nan), x, np.full(w - 1 - half, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, w)
    return np.nanmedian(windows, axis=1)


# Metrics whose presence marks a reinforcement-learning / generation run, where "loss" is a policy
# surrogate rather than a convergence curve, so loss-shape detectors do not apply. Not "kl": VAEs and
# distillation log a KL term next to a loss that must still converge.
RL_METRICS = ("reward", "advantage_std", "advantage_mean")


@dataclass
class SeriesSet:
    """The series of one rank (or of an un-ranked log) by canonical name."""

    series: dict[str, MetricSeries]
    rank: int | None = None
    _curves: dict[str, Curve | None] = field(default_factory=dict, repr=False)

    def raw(self, name: str) -> MetricSeries | None:
        return self.series.get(name)

    def curve(self, name: str) -> Curve | None:
        """Finite points of `name`, or None when the series is missing or has no finite point."""
        if name not in self._curves:
            s = self.series.get(name)
            c = Curve.of(s) if s is not None else None
            self._curves[name] = c if c is not None and len(c) else None
        return self._curves[name]

    def last(self, name: str) -> float | None:
        s = self.series.get(name)
        return s.stats.last_value if s is not None else None

    def names_with_prefix(self, prefix: str) -> list[str]:
        return sorted(n for n in self.series if n.startswith(prefix))

    @property
    def is_rl(self) -> bool:
        return any(name in self.series for name in RL_METRICS)


def catalogue_cause(failure: str, keyword: str) -> list[str]:
    """The catalogue's root cause for `failure` that mentions `keyword`, to list first when this run's
    evidence points at it (the wording stays in one place)."""
    return [c for c in failure_info(failure).root_causes if keyword.lower() in c.lower()][:1]
