"""Metric series: canonical names, a bounded streaming builder, and the parsed-log container.

Every parser feeds `SeriesBuilder`s and every detector reads `MetricSeries`, so this module is
the contract between log parsing and diagnosis. Memory stays bounded whatever the log size:
points are folded into a fixed number of buckets that keep each bucket's extremes and its first
non-finite value, so a downsampled curve still shows its spikes and where NaN/Inf appeared.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, Field

# Canonical metric names the detectors know, with the spellings trainers use for them.
# Keys of the inner sets are compared after `_normalize` (lowercase, separators -> "_").
_ALIASES: dict[str, set[str]] = {
    "loss": {"loss", "train_loss", "training_loss", "train_loss_step", "loss_step", "lm_loss",
             "train_lm_loss", "loss_train", "train_loss_epoch", "total_loss", "train_total_loss",
             "batch_loss", "avg_loss", "running_loss", "train_avg_loss", "trn_loss", "mean_loss"},
    "eval_loss": {"eval_loss", "val_loss", "valid_loss", "validation_loss", "dev_loss", "val_loss_epoch",
                  "loss_val", "loss_valid", "loss_validation", "eval_lm_loss", "val_lm_loss",
                  "validation_lm_loss", "valid_lm_loss", "val_loss_step", "test_loss"},
    "lr": {"lr", "learning_rate", "train_learning_rate", "lr_adam", "lr_adamw", "lr_sgd", "learningrate",
           "current_lr", "lr_0", "lr_group0", "lr_pg0"},
    "grad_norm": {"grad_norm", "gradient_norm", "gnorm", "train_grad_norm", "grad_norm_total", "gradnorm",
                  "global_grad_norm", "total_grad_norm", "grad_l2_norm", "grad_norm_2_0_norm_total"},
    "accuracy": {"acc", "accuracy", "train_acc", "train_accuracy", "acc_train", "top1", "train_top1"},
    "eval_accuracy": {"val_acc", "val_accuracy", "eval_accuracy", "eval_acc", "valid_acc",
                      "validation_accuracy", "val_top1", "test_acc", "test_accuracy"},
    "epoch": {"epoch", "epochs", "train_epoch"},
    "throughput": {"throughput", "tokens_per_second", "tokens_per_sec", "tok_s", "tokens_s",
                   "samples_per_second", "train_samples_per_second", "train_steps_per_second",
                   "samples_per_sec", "it_s", "its", "wps", "ups", "samples_s", "tflops",
                   "train_tokens_per_second", "examples_per_sec", "fps", "frames_per_second"},
    "step_time": {"step_time", "time", "time_ms", "iter_time", "iteration_time", "batch_time", "dt",
                  "elapsed_time_per_iteration_ms", "train_wall", "time_per_step"},
    "entropy": {"entropy", "policy_entropy", "token_entropy", "mean_entropy", "entropy_avg"},
    "reward": {"reward", "mean_reward", "rewards", "reward_mean", "avg_reward", "episode_reward",
               "rewards_mean", "train_reward", "ep_rew_mean", "eprewmean", "mean_100_episode_reward",
               "episode_reward_mean"},
    "kl": {"kl", "kl_loss", "kl_div", "kl_divergence", "approx_kl", "objective_kl", "kl_penalty"},
    "advantage_std": {"advantage_std", "advantages_std", "adv_std", "std_advantage"},
    "advantage_mean": {"advantage_mean", "advantages_mean", "adv_mean", "mean_advantage", "advantages"},
    "v_norm": {"v_norm", "vnorm", "vector_norm"},
    "v_norm_max": {"v_norm_max", "max_norm", "clamp_max_norm", "v_max_norm"},
    "effective_rank": {"effective_rank", "eff_rank", "erank", "effective_rank_ratio", "rank_ratio"},
    "grad_clip": {"max_grad_norm", "grad_clip", "clip_value", "gradient_clip_val", "grad_clip_norm", "clip_norm",
                  "clip_grad_norm", "max_grad_norm_clip"},
    "update_ratio": {"update_ratio", "weight_update_ratio", "update_to_weight", "update_weight_ratio"},
    "loss_scale": {"loss_scale", "scale", "grad_scale", "loss_scaler"},
    "memory": {"memory", "mem", "max_memory_allocated", "gpu_mem", "mem_gb", "memory_gb", "max_mem"},
    "num_classes": {"num_classes", "n_classes"},
    "vocab_size": {"vocab_size", "vocab"},
}
_NORMALIZE_RE = re.compile(r"[^0-9a-z]+")
_LOOKUP = {alias: canon for canon, aliases in _ALIASES.items() for alias in aliases}
# Prefix/suffix conventions: "train/loss", "loss/train", "val/loss", "eval/accuracy"...
_SPLIT_PREFIXES = {"train": "", "training": "", "trn": "", "val": "eval_", "valid": "eval_",
                   "validation": "eval_", "eval": "eval_", "dev": "eval_", "test": "eval_"}

CANONICAL_METRICS = frozenset(_ALIASES)

# A training objective under another name, in order of preference: a loss by another name (MXNet's
# `MultiLogisticLoss`, mmdet's parts), the negative log-likelihood, then perplexity (exp of it: same
# shape, other scale). RL and GAN parts (policy, value, discriminator...) do not fall like an
# objective: never stand-ins. Matched against normalised names.
OBJECTIVE_PATTERNS = (
    re.compile(r"^(?!(?:eval|val|valid|test|policy|value|vf|pg|actor|critic|entropy|d|g|disc|dis|gen|aux|reg)_)"
               r"[a-z0-9_]*loss$"),
    re.compile(r"^(?:nll|ce|xent|cross_entropy)(?:_loss)?$"),
    re.compile(r"^(?:ppl|perp|perplexity|train_ppl|train_perplexity)$"))


def is_objective_name(raw: str) -> bool:
    """A name that can stand in for the training loss (see OBJECTIVE_PATTERNS)."""
    norm = _normalize(raw)
    return any(p.search(norm) for p in OBJECTIVE_PATTERNS)


def _normalize(raw: str) -> str:
    return _NORMALIZE_RE.sub("_", raw.strip().lower()).strip("_")


def canonical_metric_name(raw: str) -> str:
    """Map a trainer's metric name to the canonical one the detectors read.

    Unknown names are returned normalised (lowercase, separators as "_") so they still form
    series of their own, just without a detector attached.
    """
    norm = _normalize(raw)
    if norm in _LOOKUP:
        return _LOOKUP[norm]
    parts = [p for p in re.split(r"[/.]", raw.strip().lower()) if p]
    if len(parts) == 2:
        for split, other in ((parts[0], parts[1]), (parts[1], parts[0])):
            if split in _SPLIT_PREFIXES:
                candidate = _LOOKUP.get(_normalize(other))
                if candidate is not None and candidate in {"loss", "accuracy"}:
                    prefixed = _SPLIT_PREFIXES[split] + candidate
                    return prefixed if prefixed in CANONICAL_METRICS else candidate
                if candidate is not None:
                    return candidate
    return norm


class NonFinite(BaseModel):
    """Where a series held NaN or an infinity (kept exactly, even when the series is downsampled)."""

    step: float
    kind: Literal["nan", "inf", "-inf"]


class SeriesStats(BaseModel):
    """Exact summary over every point seen, not just the kept ones."""

    count: int = 0
    finite_count: int = 0
    nan_count: int = 0
    inf_count: int = 0
    first_step: float | None = None
    last_step: float | None = None
    first_value: float | None = None
    last_value: float | None = None
    min: float | None = None
    min_step: float | None = None
    max: float | None = None
    max_step: float | None = None
    mean: float | None = None
    first_nonfinite_step: float | None = None


class MetricSeries(BaseModel):
    """One metric against step. `values[i]` is None where the value was NaN or infinite."""

    name: str
    rank: int | None = None
    steps: list[float]
    values: list[float | None]
    nonfinite: list[NonFinite] = Field(default_factory=list)
    stats: SeriesStats
    downsampled: bool = False

    @property
    def key(self) -> str:
        return series_key(self.name, self.rank)

    def finite_arrays(self) -> tuple[list[float], list[float]]:
        """Steps and values with the non-finite points dropped, for curve detectors."""
        pairs = [(s, v) for s, v in zip(self.steps, self.values) if v is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def series_key(name: str, rank: int | None) -> str:
    return name if rank is None else f"{name}@rank{rank}"


def _nonfinite_kind(value: float) -> Literal["nan", "inf", "-inf"] | None:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return None


_KIND_NAMES: dict[int, Literal["nan", "inf", "-inf"]] = {1: "nan", 2: "inf", 3: "-inf"}
_KIND_CODES = {"nan": 1, "inf": 2, "-inf": 3}


class _Bucket:
    __slots__ = ("n", "total", "finite_n", "lo", "hi", "first_bad", "raw")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.finite_n = 0
        self.lo: tuple[float, float] | None = None  # (step, value)
        self.hi: tuple[float, float] | None = None
        self.first_bad: tuple[float, str] | None = None  # (step, kind)
        self.raw: list[tuple[float, float]] | None = []  # exact points while the bucket is small

    def add(self, step: float, value: float, kind: str | None) -> None:
        self.n += 1
        if self.raw is not None:
            self.raw.append((step, value))
            if len(self.raw) > 2:
                self.raw = None
        if kind is not None:
            if self.first_bad is None:
                self.first_bad = (step, kind)
            return
        self.finite_n += 1
        self.total += value
        if self.lo is None or value < self.lo[1]:
            self.lo = (step, value)
        if self.hi is None or value > self.hi[1]:
            self.hi = (step, value)

    def merge(self, other: _Bucket) -> None:
        self.n += other.n
        self.total += other.total
        self.finite_n += other.finite_n
        if other.lo is not None and (self.lo is None or other.lo[1] < self.lo[1]):
            self.lo = other.lo
        if other.hi is not None and (self.hi is None or other.hi[1] > self.hi[1]):
            self.hi = other.hi
        if self.first_bad is None:
            self.first_bad = other.first_bad
        if self.raw is not None and other.raw is not None and len(self.raw) + len(other.raw) <= 2:
            self.raw = self.raw + other.raw
        else:
            self.raw = None

    def add_slice(self, steps, values, codes) -> None:
        """Add consecutive points (numpy slices; codes 0 finite, 1 nan, 2 inf, 3 -inf) at once."""
        import numpy as np

        count = len(values)
        self.n += count
        if self.raw is not None:
            if len(self.raw) + count > 2:
                self.raw = None
            else:
                self.raw.extend(zip(steps.tolist(), values.tolist()))
        finite = codes == 0
        if self.first_bad is None and not finite.all():
            i = int(np.argmax(~finite))
            self.first_bad = (float(steps[i]), _KIND_NAMES[int(codes[i])])
        fv = values[finite]
        if fv.size:
            fs = steps[finite]
            self.finite_n += int(fv.size)
            self.total += float(fv.sum())
            i = int(np.argmin(fv))
            if self.lo is None or fv[i] < self.lo[1]:
                self.lo = (float(fs[i]), float(fv[i]))
            i = int(np.argmax(fv))
            if self.hi is None or fv[i] > self.hi[1]:
                self.hi = (float(fs[i]), float(fv[i]))

    def points(self, pinned: tuple[tuple[float, float], ...] = ()) -> list[tuple[float, float]]:
        """The kept points in step order; `pinned` points (the series' first/last) are kept too."""
        if self.raw is not None:
            return list(self.raw)
        kept = [p for p in (self.lo, self.hi) if p is not None] + list(pinned)
        if self.first_bad is not None:
            kept.append((self.first_bad[0], math.nan if self.first_bad[1] == "nan" else
                         (math.inf if self.first_bad[1] == "inf" else -math.inf)))
        unique = {_point_key(p): p for p in kept}
        return sorted(unique.values(), key=lambda p: p[0])


def _point_key(point: tuple[float, float]) -> tuple[float, float | str]:
    """Dedup key of a point: NaN never equals itself, so non-finite values compare by spelling."""
    step, value = point
    return step, value if math.isfinite(value) else repr(value)


class SeriesBuilder:
    """Accumulates one series point by point in O(max_points) memory.

    Points are grouped into buckets of `width` consecutive points; when there are too many
    buckets, neighbours are merged pairwise and `width` doubles. Each bucket later yields at
    most three points (its minimum, its maximum, its first non-finite value), so extremes and
    NaN/Inf positions survive any amount of downsampling. The series' first and last points are
    always kept on top of that (an agent reads the end of a curve first), so the budget is
    3 points per bucket plus 2.
    """

    def __init__(self, name: str, rank: int | None = None, max_points: int = 2000,
                 max_nonfinite: int = 200) -> None:
        self.name = name
        self.rank = rank
        self._max_buckets = max(2, (max_points - 2) // 3)
        self._max_nonfinite = max_nonfinite
        self._width = 1
        self._buckets: list[_Bucket] = []
        self._nonfinite: list[NonFinite] = []
        self._last_bad_kind: str | None = None
        self.stats = SeriesStats()
        self._sum = 0.0
        self._first: tuple[float, float] | None = None  # (step, value) as added, NaN/Inf included
        self._last: tuple[float, float] | None = None

    def add(self, step: float, value: float) -> None:
        kind = _nonfinite_kind(value)
        self._note_ends(step, value, step, value)
        st = self.stats
        st.count += 1
        if st.first_step is None:
            st.first_step, st.first_value = step, (None if kind else value)
        st.last_step, st.last_value = step, (None if kind else value)
        if kind is None:
            st.finite_count += 1
            self._sum += value
            if st.min is None or value < st.min:
                st.min, st.min_step = value, step
            if st.max is None or value > st.max:
                st.max, st.max_step = value, step
            self._last_bad_kind = None
        else:
            if kind == "nan":
                st.nan_count += 1
            else:
                st.inf_count += 1
            if st.first_nonfinite_step is None:
                st.first_nonfinite_step = step
            # Record the start of each non-finite run, not every point of a long NaN tail.
            if kind != self._last_bad_kind and len(self._nonfinite) < self._max_nonfinite:
                self._nonfinite.append(NonFinite(step=step, kind=kind))
            self._last_bad_kind = kind
        if not self._buckets or self._buckets[-1].n >= self._width:
            self._buckets.append(_Bucket())
            if len(self._buckets) > self._max_buckets:
                self._compact()
        self._buckets[-1].add(step, value, kind)

    def add_many(self, steps, values) -> None:
        """Add points in order with numpy: the same series and stats as `add` on each point.

        Parsers of large logs call this with whole columns; per-point `add` would dominate
        their run time. (The running sum may differ from one-by-one addition in the last bits.)
        """
        import numpy as np

        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        n = min(s.size, v.size)
        if n == 0:
            return
        if n < 16:
            for step, value in zip(s[:n].tolist(), v[:n].tolist()):
                self.add(step, value)
            return
        s, v = s[:n], v[:n]
        self._note_ends(float(s[0]), float(v[0]), float(s[-1]), float(v[-1]))
        finite = np.isfinite(v)
        is_nan = np.isnan(v)
        codes = np.where(finite, 0, np.where(is_nan, 1, np.where(v > 0, 2, 3))).astype(np.int8)
        st = self.stats
        st.count += n
        if st.first_step is None:
            st.first_step, st.first_value = float(s[0]), (float(v[0]) if finite[0] else None)
        st.last_step, st.last_value = float(s[-1]), (float(v[-1]) if finite[-1] else None)
        fv = v[finite]
        if fv.size:
            fs = s[finite]
            st.finite_count += int(fv.size)
            self._sum += float(fv.sum())
            i = int(np.argmin(fv))
            if st.min is None or fv[i] < st.min:
                st.min, st.min_step = float(fv[i]), float(fs[i])
            i = int(np.argmax(fv))
            if st.max is None or fv[i] > st.max:
                st.max, st.max_step = float(fv[i]), float(fs[i])
        bad = ~finite
        n_bad = int(bad.sum())
        if n_bad:
            n_nan = int(is_nan.sum())
            st.nan_count += n_nan
            st.inf_count += n_bad - n_nan
            if st.first_nonfinite_step is None:
                st.first_nonfinite_step = float(s[int(np.argmax(bad))])
            previous = np.empty(n, dtype=np.int8)
            previous[0] = _KIND_CODES.get(self._last_bad_kind, 0)
            previous[1:] = codes[:-1]
            room = self._max_nonfinite - len(self._nonfinite)
            if room > 0:
                for i in np.flatnonzero(bad & (codes != previous))[:room].tolist():
                    self._nonfinite.append(NonFinite(step=float(s[i]), kind=_KIND_NAMES[int(codes[i])]))
        self._last_bad_kind = None if finite[-1] else _KIND_NAMES[int(codes[-1])]
        i = 0
        while i < n:
            if not self._buckets or self._buckets[-1].n >= self._width:
                self._buckets.append(_Bucket())
                if len(self._buckets) > self._max_buckets:
                    self._compact()
            bucket = self._buckets[-1]
            take = min(self._width - bucket.n, n - i)
            if take <= 4:
                for j in range(i, i + take):
                    code = int(codes[j])
                    bucket.add(float(s[j]), float(v[j]), _KIND_NAMES[code] if code else None)
            else:
                bucket.add_slice(s[i:i + take], v[i:i + take], codes[i:i + take])
            i += take

    def _note_ends(self, first_step: float, first_value: float, last_step: float, last_value: float) -> None:
        """Remember the series' first and last points: `build` keeps them whatever the downsampling."""
        if self._first is None:
            self._first = (first_step, first_value)
        self._last = (last_step, last_value)

    def _compact(self) -> None:
        merged: list[_Bucket] = []
        for i in range(0, len(self._buckets), 2):
            b = self._buckets[i]
            if i + 1 < len(self._buckets):
                b.merge(self._buckets[i + 1])
            merged.append(b)
        self._buckets = merged
        self._width *= 2

    def build(self) -> MetricSeries:
        steps: list[float] = []
        values: list[float | None] = []
        last = len(self._buckets) - 1
        for i, bucket in enumerate(self._buckets):
            pinned = ((self._first,) if i == 0 else ()) + ((self._last,) if i == last else ())
            for step, value in bucket.points(pinned):
                steps.append(step)
                values.append(value if math.isfinite(value) else None)
        stats = self.stats.model_copy()
        stats.mean = self._sum / stats.finite_count if stats.finite_count else None
        return MetricSeries(name=self.name, rank=self.rank, steps=steps, values=values,
                            nonfinite=list(self._nonfinite), stats=stats, downsampled=self._width > 1)


class ParsedLog(BaseModel):
    """Everything a parser extracted from one log: the series plus how much it read."""

    path: str | None = None
    format: str
    series: list[MetricSeries] = Field(default_factory=list)
    records: int = 0
    lines_scanned: int = 0
    bytes_scanned: int = 0
    unparsed_lines: int = 0
    warnings: list[str] = Field(default_factory=list)

    def get(self, name: str, rank: int | None = None) -> MetricSeries | None:
        """The series `name` for `rank`; with rank None, the un-ranked series or else rank 0's."""
        fallback = None
        for s in self.series:
            if s.name != name:
                continue
            if s.rank == rank:
                return s
            if rank is None and s.rank == 0:
                fallback = s
        return fallback

    @property
    def names(self) -> list[str]:
        return sorted({s.name for s in self.series})

    @property
    def ranks(self) -> list[int]:
        return sorted({s.rank for s in self.series if s.rank is not None})


def _restarts(steps: list[float]) -> list[int]:
    """Indices where the step count starts again from (near) the beginning: a new run appended to the log."""
    first = steps[0] if steps else 0.0
    return [i for i in range(1, len(steps))
            if steps[i] < steps[i - 1] and steps[i] - first <= 0.1 * (steps[i - 1] - first)]


def last_run(parsed: ParsedLog, anchor: str = "loss") -> tuple[ParsedLog, int]:
    """(the log's last run only, how many runs it holds), told apart by the `anchor` series' step restarts.

    A paste or a log file that holds several runs one after another (a restart, a second experiment
    appended) would otherwise read as one curve with a cliff at each restart.
    """
    main = next((s for s in parsed.series if s.name == anchor), None)
    if main is None or not _restarts(main.steps):
        return parsed, 1
    runs = len(_restarts(main.steps)) + 1
    kept = []
    for s in parsed.series:
        cuts = _restarts(s.steps)
        if not cuts:
            kept.append(s)
            continue
        builder = SeriesBuilder(s.name, rank=s.rank)
        for step, value in zip(s.steps[cuts[-1]:], s.values[cuts[-1]:]):
            builder.add(step, math.nan if value is None else value)
        kept.append(builder.build())
    return parsed.model_copy(update={"series": kept}), runs
