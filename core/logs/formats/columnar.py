"""The columnar engine of the bulk path: learned line templates applied by polars, a block at a time.

`bulk.apply_template` runs a template with `re.split` over a block and turns the captured
bytes into floats one `float()` call at a time; this module does the same work in Rust: the
block is split into lines, each template's anchored pattern is run with
`Series.str.extract_groups` on the lines still unmatched (two slices in two threads: polars
releases the GIL), and value columns are cast to float64 in one go. What no template matches
goes back, as runs of consecutive lines, to the line parser, so the result is the one of the
pure-Python path (tests/test_metrics_columnar.py checks it on generated logs).

Exactness: a token is cast by polars only when it is a plain decimal number (`_PLAIN`), which
polars parses correctly rounded like `float()`; anything else ('nan', 'inf', '1_000', words) goes
through `float()` itself, and a column with a token `float()` refuses is read with `to_float`'s
rules, as `bulk._floats` does. A block that is not valid UTF-8 is left to the Python path.

Why polars (measured on the 4 MiB dense nanoGPT chunk of bench_tail, one core, medians of 3):
`re.split` with the template 43 MB/s; polars `extract_groups` 57 MB/s with the whole-line
and rank groups, 102 MB/s without them, about 190 MB/s on two threads; pyarrow's RE2
`extract_regex` 59 MB/s with the same groups. pyarrow would also be 156 MB installed, polars is
a 54 MB wheel (181 MB installed), so it is the optional `fast` extra, not a base dependency
(the base install is about 100 MB and must stay under 150 MB).

Whole files (bench_metrics --quick, 2 shared cores, grep -c at 0.5-1.5 GB/s): 15-38 MB/s with the
engine against 11-26 MB/s without, 2-4% of grep: far from the 30% goal. The template regexes now
cost little; what is left is Python work per record and per series (Collector.flush,
SeriesBuilder.add_many) and the line parser on lines no template takes. Peak RSS is flat in file
size (~60 MiB over the import with polars, ~40-50 MiB without).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ml_debug_mcp.core.logs.formats.common import Collector

pl = None  # polars, imported on first use: it takes a while and most parses are small
ENGINE = "polars"  # None forces the pure-Python path (tests, bench)
THREADS = max(1, min(4, os.cpu_count() or 1))
MIN_LINES_PER_THREAD = 20_000
_PLAIN = r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"
_MAX_TOKEN = 40  # to_float's limit
_pool: ThreadPoolExecutor | None = None
_missing = False


def available() -> bool:
    """Whether the engine is on and polars importable (the optional `fast` extra)."""
    global pl, _missing
    if ENGINE is None or _missing:
        return False
    if pl is None:
        try:
            import polars
        except ImportError:
            _missing = True
            return False
        pl = polars
    return True


def _extract(lines, pattern: str):
    """`extract_groups` over `lines`, in parallel slices when there are enough of them."""
    global _pool
    n = len(lines)
    parts = min(THREADS, n // MIN_LINES_PER_THREAD)
    if parts < 2:
        return lines.str.extract_groups(pattern).struct.unnest()
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="columnar")
    bounds = [n * i // parts for i in range(parts + 1)]
    slices = [lines.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]
    frames = list(_pool.map(lambda s: s.str.extract_groups(pattern).struct.unnest(), slices))
    return pl.concat(frames, rechunk=False)


def _floats(column) -> tuple[np.ndarray, np.ndarray | None]:
    """A column of tokens -> float64 array (+ validity mask), exactly as `bulk._floats` reads them."""
    values = column.cast(pl.Float64, strict=False).to_numpy().copy()
    odd = np.flatnonzero(~column.str.contains(_PLAIN).to_numpy())
    if odd.size == 0:
        return values, None
    failed = []
    for i, token in zip(odd.tolist(), column.gather(odd).to_list()):
        try:
            values[i] = float(token)
        except ValueError:
            failed.append(i)
    if not failed:
        return values, None
    ok = column.str.len_bytes().to_numpy() <= _MAX_TOKEN  # to_float refuses longer tokens
    ok[failed] = False
    values[~ok] = np.nan
    return values, ok


def apply_templates(templates: list, offset: int, block: bytes,
                    collector: Collector) -> list[tuple[int, bytes]] | None:
    """Read every line of `block` that a template matches; the rest as (offset, bytes) pieces.

    None when the block is not valid UTF-8 (the Python path then reads it).
    """
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = pl.Series([text]).str.split("\n").explode()
    lengths = lines.str.len_bytes().to_numpy().astype(np.int64)
    starts = np.empty(len(lengths) + 1, dtype=np.int64)
    starts[0] = 0
    np.cumsum(lengths + 1, out=starts[1:])
    # Lines that can match: all but the last piece (empty after a final newline, else a line
    # without one, which the Python path's `(?=\r?\n)` does not match either).
    count = len(lengths) - 1
    unmatched = np.ones(count, dtype=bool)
    for template in templates:
        if template.anchor and template.anchor not in block:
            continue
        # As in `re.split` over the pieces left by earlier templates: a line right before one they
        # took has lost its newline to that match, so `(?=\r?\n)` fails and the line parser reads it.
        eligible = unmatched.copy()
        eligible[:-1] &= unmatched[1:]
        index = np.flatnonzero(eligible)
        if index.size == 0:
            break
        frame = _extract(lines.gather(index) if index.size < count else lines.slice(0, count), template.rust)
        first = frame.to_series(frame.width - len(template.names))
        hit = first.is_not_null().to_numpy()
        k = int(hit.sum())
        if k == 0:
            continue
        frame = frame.filter(first.is_not_null())
        rows = index[hit]
        unmatched[rows] = False
        _add(template, frame, (offset + starts[rows] - 1).astype(np.float64), collector)
    return _pieces(unmatched, starts, offset, block)


def _add(template, frame, orders: np.ndarray, collector: Collector) -> None:
    """Feed one template's matches to the collector, in the order `bulk.apply_template` does."""
    from ml_debug_mcp.core.logs.formats.bulk import add_column  # bulk imports this module

    k = frame.height
    skip = frame.width - len(template.names)  # 1 for the rank group of a ranked template
    steps, keep = _floats(frame.to_series(skip + template.step_group))
    if skip:
        ranks = frame.to_series(0).cast(pl.Int64).to_numpy()
        groups = [(int(r), ranks == r) for r in np.unique(ranks).tolist()]
    else:
        groups = [(None, None)]
    collector.records += k if keep is None else int(keep.sum())
    template.hits += k
    for i, name in enumerate(template.names):
        if name is None:
            continue
        values, ok = _floats(frame.to_series(skip + i))
        add_column(collector, name, groups, keep, ok, orders, steps, values)


def _pieces(unmatched: np.ndarray, starts: np.ndarray, offset: int, block: bytes) -> list[tuple[int, bytes]]:
    """Runs of consecutive unmatched lines as (file offset, bytes), the last partial line included."""
    flags = np.concatenate(([False], unmatched, [True], [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(flags))
    out = []
    for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist()):
        lo, hi = int(starts[a]), int(starts[b]) if b < len(starts) else len(block)
        if lo < len(block):
            out.append((offset + lo, block[lo:hi]))
    return out
