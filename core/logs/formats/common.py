"""Pieces every log-format parser shares: number tokens, rank prefixes, step keys, the collector.

A parser turns lines (or rows, or events) into records `{raw_name: value}` with an optional
explicit step and rank; `Collector` maps the names to canonical ones and feeds one bounded
`SeriesBuilder` per (name, rank). Keeping that in one place means every format gets the same
step rule, the same NaN/Inf handling and the same memory bound.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

from ml_debug_mcp.core import safe_fs
from ml_debug_mcp.core.logs.series import (CANONICAL_METRICS, MetricSeries, ParsedLog, SeriesBuilder, is_objective_name,
                                      canonical_metric_name)

# A number as trainers print it, including the NaN/Inf spellings of Python, C, JSON and numpy.
NUMBER_PATTERN = (r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
                  r"|[-+]?(?:[Nn]a[Nn]|NAN|[Ii]nf(?:inity)?|INF(?:INITY)?)")
NUMBER_RE = re.compile(rf"^(?:{NUMBER_PATTERN})$")

# torchrun's per-rank line prefixes: "[rank3]:" (torch >= 2.2 with --tee/--log-line-prefix) and
# "[default3]:" (older elastic agents, `--tee 3`); the text after the prefix is the trainer's own.
# torch 2.x writes "[rank3]: Traceback ...": that one separator space is part of the prefix, but no
# more, so indented traceback frame lines ("[rank3]:   File ...") keep their indentation.
RANK_PREFIX_RE = re.compile(r"^\[(?:rank|default)(\d{1,5})\]: ?")

# Colour codes (Keras 3, rich, loguru) would otherwise glue themselves to keys and values.
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

# Names that say "which step" rather than "what was measured" (compared after normalising).
STEP_KEYS = frozenset({"step", "steps", "iter", "iteration", "global_step", "num_updates", "_step",
                       "train_global_step", "trainer_global_step", "it", "update_step", "train_step",
                       "trainer/global_step", "train/global_step", "optimizer_step", "n_iter", "iter_num"})

# Bookkeeping columns that are not metrics and would only clutter the series list.
IGNORED_KEYS = frozenset({"runtime", "_runtime", "_timestamp", "timestamp", "time_stamp", "wall_time", "walltime",
                          "created_time", "datetime", "date", "rank", "local_rank", "global_rank",
                          "world_size", "total_flos", "_wandb", "pid", "eta"})

MAX_KEY_CHARS = 64
READ_BLOCK = 4 << 20
# A "line" longer than this is not a log line (a base64 blob, a minified dump): it is skipped
# rather than held in memory while we look for its end.
MAX_LINE_BYTES = 1 << 20


def to_float(token: object) -> float | None:
    """Parse a printed number (str/bytes/int/float) or return None; NaN/Inf spellings are numbers."""
    if isinstance(token, bool):
        return None
    if isinstance(token, (int, float)):
        return float(token)
    if isinstance(token, bytes):
        token = token.decode("ascii", "replace")
    if not isinstance(token, str):
        return None
    text = token.strip().strip("'\"")
    if not text or len(text) > 40:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    low = text.lower()
    if low in ("nan", "-nan", "+nan"):
        return math.nan
    if low.lstrip("+-") in ("inf", "infinity"):
        return -math.inf if low.startswith("-") else math.inf
    return None


@lru_cache(maxsize=4096)
def normalized_key(raw: str) -> str:
    return re.sub(r"[^0-9a-z/]+", "_", raw.strip().lower()).strip("_")


@lru_cache(maxsize=4096)
def is_step_key(raw: str) -> bool:
    return normalized_key(raw) in STEP_KEYS


@lru_cache(maxsize=4096)
def is_ignored_key(raw: str) -> bool:
    return normalized_key(raw) in IGNORED_KEYS


@lru_cache(maxsize=8192)
def metric_name(raw: str) -> str:
    """Canonical name for a raw key, cached because the same few keys repeat on every line."""
    return canonical_metric_name(raw[:MAX_KEY_CHARS])


@lru_cache(maxsize=8192)
def is_known_metric(raw: str) -> bool:
    """True when the key maps onto a metric the detectors read (loss, lr, grad_norm, ...), or names an
    objective the diagnosis reads as the loss (NLL, perplexity, a loss by another name)."""
    name = metric_name(raw)
    return (name in CANONICAL_METRICS and name != "epoch") or is_objective_name(raw)


def strip_rank_prefix(line: str) -> tuple[int | None, str]:
    """(rank, the trainer's own text) of a torchrun-prefixed line; (None, line) when unprefixed."""
    if line.startswith("["):
        m = RANK_PREFIX_RE.match(line)
        if m:
            return int(m.group(1)), line[m.end():]
    return None, line


class _Pending:
    """Points waiting to be folded into one series: per-record lists plus whole numpy columns."""

    __slots__ = ("orders", "steps", "values", "chunks", "size")

    def __init__(self) -> None:
        self.orders: list[float] = []
        self.steps: list[float] = []
        self.values: list[float] = []
        self.chunks: list[tuple] = []
        self.size = 0


class Collector:
    """Folds records into bounded per-(name, rank) series and keeps the bookkeeping counts.

    Points are buffered and folded in batches (`SeriesBuilder.add_many`), each tagged with an
    order key (`position`, normally the byte offset of its line) so that records found by the
    bulk path and by the line-by-line path land in file order. When a record has no explicit
    step, its step is the running number of step-less records seen for that rank.
    """

    FLUSH_POINTS = 1 << 18

    def __init__(self, max_points: int = 2000, max_series: int = 400,
                 progress: Callable[[float, float | None, str | None], None] | None = None) -> None:
        self.progress = progress  # (bytes read, total bytes, message): long parses report to the client
        self.max_points = max(10, int(max_points))
        self.max_series = max_series
        self.builders: dict[tuple[str, int | None], SeriesBuilder] = {}
        self.records = 0
        self.lines = 0
        self.unparsed = 0
        self.bytes = 0
        self.warnings: list[str] = []
        self.position = 0.0
        self.last_record: tuple[dict[str, float], float | None, int | None] | None = None
        self._record_index: dict[int | None, int] = {}
        self._dropped_series = 0
        self._pending: dict[tuple[str, int | None], _Pending] = {}
        self._pending_points = 0
        self._chunk_points = 0
        self._sequence = 0

    def _slot(self, key: tuple[str, int | None]) -> _Pending | None:
        pending = self._pending.get(key)
        if pending is None:
            if key not in self.builders:
                if len(self.builders) >= self.max_series:
                    self._dropped_series += 1
                    return None
                self.builders[key] = SeriesBuilder(key[0], key[1], self.max_points)
            pending = self._pending[key] = _Pending()
        return pending

    def add(self, values: dict[str, float], step: float | None = None, rank: int | None = None,
            names_are_canonical: bool = False) -> bool:
        """Add one record; returns False when it held no metric at all."""
        if not values:
            return False
        if step is None or not math.isfinite(step):
            index = self._record_index.get(rank, 0)
            self._record_index[rank] = index + 1
            x = float(index)
        else:
            x = float(step)
        self._sequence += 1
        order = self.position + self._sequence * 1e-9  # keeps records of one line in order
        seen: set[str] = set()
        for raw, value in values.items():
            name = raw if names_are_canonical else metric_name(raw)
            if not name or name in seen:
                continue  # two spellings of one metric in a record: the first wins
            seen.add(name)
            pending = self._slot((name, rank))
            if pending is None:
                continue
            pending.orders.append(order)
            pending.steps.append(x)
            pending.values.append(value)
            pending.size += 1
        self.records += 1
        self._pending_points += len(seen)
        self.last_record = (values, step, rank)
        if self._pending_points >= self.FLUSH_POINTS and not self._chunk_points:
            # Only when no bulk column waits: those may come later in the file than this record.
            self.flush()
        return True

    def add_columns(self, name: str, rank: int | None, orders, steps, values) -> None:
        """Add a whole column of one series (numpy arrays, already in file order)."""
        pending = self._slot((name, rank))
        if pending is None or len(values) == 0:
            return
        pending.chunks.append((orders, steps, values))
        pending.size += len(values)
        self._pending_points += len(values)
        self._chunk_points += len(values)

    def flush(self) -> None:
        """Fold every buffered point into its builder, in order-key order."""
        import numpy as np

        for key, pending in self._pending.items():
            if not pending.size:
                continue
            parts = list(pending.chunks)
            if pending.values:
                parts.append((np.asarray(pending.orders, dtype=np.float64), np.asarray(pending.steps, dtype=np.float64),
                              np.asarray(pending.values, dtype=np.float64)))
            if len(parts) == 1:
                orders, steps, values = parts[0]
            else:
                orders = np.concatenate([p[0] for p in parts])
                steps = np.concatenate([p[1] for p in parts])
                values = np.concatenate([p[2] for p in parts])
            if orders.size > 1 and not bool(np.all(orders[1:] >= orders[:-1])):
                order = np.argsort(orders, kind="stable")
                steps, values = steps[order], values[order]
            self.builders[key].add_many(steps, values)
        self._pending.clear()
        self._pending_points = 0
        self._chunk_points = 0

    def warn(self, message: str) -> None:
        if message not in self.warnings and len(self.warnings) < 50:
            self.warnings.append(message)

    def result(self, fmt: str, path: str | None = None) -> ParsedLog:
        self.flush()
        if self._dropped_series:
            self.warn(f"more than {self.max_series} distinct metrics; {self._dropped_series} further "
                      "metrics were dropped")
        series: list[MetricSeries] = [b.build() for b in self.builders.values()]
        series.sort(key=lambda s: (s.name, -1 if s.rank is None else s.rank))
        return ParsedLog(path=path, format=fmt, series=series, records=self.records,
                         lines_scanned=self.lines, bytes_scanned=self.bytes,
                         unparsed_lines=self.unparsed, warnings=list(self.warnings))


def iter_file_blocks(path: Path, collector: Collector, first_block: int = 64 << 10,
                     block_size: int = READ_BLOCK, max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) blocks of a file that end at a newline (the last may not), bounded memory.

    A line longer than `max_line` is skipped with a warning instead of being held in memory
    while its end is searched for. The first block is small so parsers can learn the line
    shapes of a file cheaply before the large blocks arrive.
    """
    try:
        fh = safe_fs.open_read(path)
    except OSError as exc:
        collector.warn(f"cannot open {path.name}: {exc.strerror or exc}")
        return
    with fh:
        total = os.fstat(fh.fileno()).st_size
        carry = b""
        carry_offset = 0
        offset = 0
        skipping = False
        size = first_block
        while True:
            try:
                block = fh.read(size)
            except OSError as exc:
                collector.warn(f"read error in {path.name}: {exc.strerror or exc}")
                break
            size = block_size
            if not block:
                break
            collector.bytes += len(block)
            block_offset = offset
            offset += len(block)
            if collector.progress is not None:
                collector.progress(offset, total, f"parsed {offset >> 20} of {total >> 20} MiB of {path.name}")
            if skipping:
                nl = block.find(b"\n")
                if nl < 0:
                    continue
                block, block_offset, skipping = block[nl + 1:], block_offset + nl + 1, False
                carry = b""
            cut = block.rfind(b"\n")
            if cut < 0:
                if not carry:
                    carry_offset = block_offset
                carry += block
                if len(carry) > max_line:
                    collector.warn(f"skipped a line longer than {max_line} bytes")
                    carry, skipping = b"", True
                continue
            head = block[:cut + 1]
            if carry:
                head, start = carry + head, carry_offset
            else:
                start = block_offset
            carry, carry_offset = block[cut + 1:], block_offset + cut + 1
            yield start, head
        if carry and not skipping:
            yield carry_offset, carry


def iter_file_lines(path: Path, collector: Collector, max_line: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Decoded lines of a file in bounded memory (see `iter_file_blocks`).

    Bytes are split on b"\\n" before decoding, so a multi-byte character is never cut, and
    undecodable bytes become U+FFFD instead of an error.
    """
    for _, block in iter_file_blocks(path, collector, max_line=max_line):
        lines = block.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for raw in lines:
            if len(raw) > max_line:
                collector.warn(f"skipped a line longer than {max_line} bytes")
                continue
            yield raw.decode("utf-8", "replace")
