"""The bulk path for big text logs: learn each frequent metric-line shape, then read it in bulk.

Per-line Python work is what makes a multi-GB log slow, and in a training log most metric lines
share a handful of shapes ("iter N: loss X, time Yms, mfu Z%"). When the line-by-line parser
accepts a line, its shape becomes a candidate template: literal text (digits in it generalised,
spaces made elastic) with one capture group per value. A template seen twice, and proven to give
exactly the parser's record for its exemplar, is then applied to whole blocks with one
`re.split`; the captured columns become numpy arrays fed to `Collector.add_columns`, ordered by
byte offset. Everything a template does not match falls through to the line parser, so the
result is the same as reading line by line — only records with an explicit step qualify, since
step-less records get running indices that depend on the line-by-line order. With polars
installed (the `fast` extra) the templates run in columnar.py instead, with the same result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ml_debug_mcp.core.logs.formats.common import (MAX_LINE_BYTES, Collector, is_ignored_key, is_step_key, metric_name,
                                             strip_rank_prefix, to_float)
from ml_debug_mcp.core.logs.formats import columnar
from ml_debug_mcp.core.logs.formats.registry import LINE_PARSERS
from ml_debug_mcp.core.logs.formats.text import LineParser, extract_pair_spans, last_segment

TEMPLATE_FORMATS = frozenset({"keyvalue", "nanogpt", "megatron", "jsonl", "wandb", "fairseq"})
MAX_TEMPLATES = 6
ADOPT_AFTER = 2
LEARN_PER_BLOCK = 50

_VALUE_GROUP = rb"([-+\w.]+)"
# A step must be a plain number: "step nan" lines go to the line parser (which numbers them).
_STEP_GROUP = rb"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
# A template starts with the newline before its line, so `re` can jump between candidates by
# literal-prefix search; the rank prefix, when the exemplar had one, is part of the shape.
_RANKED = rb"\n(\[(?:rank|default)(\d{1,5})\]: ?"
_UNRANKED = rb"\n(()"
# The same groups for Rust's regex (one line at a time: anchored, ASCII classes, no whole-line group).
_RUST_RANKED = r"\[(?:rank|default)([0-9]{1,5})\]: ?"
_RUST_VALUE_GROUP = r"([-+0-9A-Za-z_.]+)"
_RUST_STEP_GROUP = r"([-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
_RUST_META = frozenset("\\.+*?()|[]{}^$#&-~")
_ELASTIC_RE = re.compile(r"( +)|(?<![A-Za-z_\d.])(\d+)(?![A-Za-z_\d])")
_ANCHOR_RE = re.compile(r"[^\d ]{3,}")


def _literal(text: str) -> tuple[bytes, str]:
    """Escaped literal text; runs of spaces match any run, stand-alone digit runs any digits.

    Returned twice: for `re` on bytes, and for the Rust regex of the columnar engine (ASCII
    classes spelt out, since Rust's \\d and \\w are Unicode).
    """
    out, rust = [], []
    pos = 0
    for m in _ELASTIC_RE.finditer(text):
        out.append(re.escape(text[pos:m.start()].encode("utf-8", "replace")))
        rust.append(rust_escape(text[pos:m.start()]))
        out.append(rb" +" if m.group(1) else rb"\d+")
        rust.append(" +" if m.group(1) else "[0-9]+")
        pos = m.end()
    out.append(re.escape(text[pos:].encode("utf-8", "replace")))
    rust.append(rust_escape(text[pos:]))
    return b"".join(out), "".join(rust)


def rust_escape(text: str) -> str:
    """`text` as a literal in a Rust regex (its meta characters; everything else stands for itself)."""
    return "".join("\\" + c if c in _RUST_META else c for c in text)


@dataclass
class Template:
    pattern: bytes
    regex: re.Pattern[bytes]
    rust: str  # the same shape for one line, anchored, for the columnar engine (see columnar.py)
    names: list[str | None]  # canonical metric per value group; None: not a metric (step, skipped)
    step_group: int
    anchor: bytes
    hits: int = 0


def build_template(text: str, ranked: bool = False) -> tuple[bytes, list[str | None], int, bytes, str] | None:
    """(pattern, names, step group, anchor, Rust pattern) for one metric line (rank prefix removed), or None."""
    if "\r" in text or "\x1b" in text or "\b" in text:
        return None
    pairs = extract_pair_spans(text)
    if not pairs:
        return None
    pieces = [_RANKED if ranked else _UNRANKED]
    rust = ["^" + (_RUST_RANKED if ranked else "")]
    names: list[str | None] = []
    literals: list[str] = []
    step_group = None
    seen: set[str] = set()
    seen_raw: set[str] = set()
    pos = 0
    for i, (key, _value, start, end) in enumerate(pairs):
        if start < pos:
            return None
        literals.append(text[pos:start])
        lit, rust_lit = _literal(text[pos:start])
        pieces.append(lit)
        rust.append(rust_lit)
        pos = end
        name = None
        if is_step_key(key) and step_group is None:
            step_group = i
            pieces.append(_STEP_GROUP)
            rust.append(_RUST_STEP_GROUP)
        else:
            pieces.append(_VALUE_GROUP)
            rust.append(_RUST_VALUE_GROUP)
        if not is_step_key(key) and not is_ignored_key(key) and key not in seen_raw:
            candidate = metric_name(key)
            if candidate and candidate not in seen:
                name = candidate
                seen.add(candidate)
        seen_raw.add(key)
        names.append(name)
    literals.append(text[pos:])
    lit, rust_lit = _literal(text[pos:])
    pieces.append(lit)
    rust.append(rust_lit + "\r?$")
    pieces.append(rb")(?=\r?\n)")
    if step_group is None or not seen:
        return None
    anchors = [m.group(0) for lit in literals for m in _ANCHOR_RE.finditer(lit)]
    anchor = max(anchors, key=len).encode("utf-8", "replace") if anchors else b""
    return b"".join(pieces), names, step_group, anchor, "".join(rust)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _validate(template: Template, raw_line: bytes, record: tuple[dict[str, float], float | None, int | None]) -> bool:
    """The template must read its exemplar exactly as the line parser did."""
    m = template.regex.match(b"\n" + raw_line + b"\n")
    if not m or m.end() != len(raw_line) + 1:
        return False
    values, step, _ = record
    groups = m.groups()[2:]
    got_step = to_float(groups[template.step_group])
    if step is None or got_step is None or not _same(got_step, step):
        return False
    expected: dict[str, float] = {}
    for raw, value in values.items():
        expected.setdefault(metric_name(raw), value)
    got: dict[str, float] = {}
    for name, group in zip(template.names, groups):
        if name is None:
            continue
        value = to_float(group)
        if value is None:
            return False
        got[name] = value
    return got.keys() == expected.keys() and all(_same(got[k], expected[k]) for k in got)


class TemplateLearner:
    def __init__(self) -> None:
        self.templates: list[Template] = []
        self._counts: dict[bytes, int] = {}
        self._known: set[bytes] = set()
        self._budget = LEARN_PER_BLOCK

    def new_block(self) -> None:
        self._budget = LEARN_PER_BLOCK

    def wants_more(self) -> bool:
        return len(self.templates) < MAX_TEMPLATES and self._budget > 0

    def observe(self, raw_line: bytes, text: str,
                record: tuple[dict[str, float], float | None, int | None] | None) -> None:
        self._budget -= 1
        if record is None:
            return
        built = build_template(text, ranked=raw_line.startswith(b"["))
        if built is None:
            return
        pattern, names, step_group, anchor, rust = built
        if pattern in self._known:
            return
        count = self._counts.get(pattern, 0) + 1
        self._counts[pattern] = count
        if count < ADOPT_AFTER:
            if len(self._counts) > 10_000:
                self._counts.clear()
            return
        self._known.add(pattern)
        try:
            regex = re.compile(pattern)
        except re.error:
            return
        template = Template(pattern, regex, rust, names, step_group, anchor)
        if _validate(template, raw_line, record):
            self.templates.append(template)


def _floats(column: list) -> tuple[np.ndarray, np.ndarray | None]:
    """Column of byte tokens -> float64 array, plus a validity mask when some token is not a number."""
    try:
        return np.fromiter(map(float, column), dtype=np.float64, count=len(column)), None
    except (ValueError, TypeError):
        parsed = [to_float(token) for token in column]
        ok = np.fromiter((p is not None for p in parsed), dtype=bool, count=len(parsed))
        values = np.fromiter((math.nan if p is None else p for p in parsed), dtype=np.float64, count=len(parsed))
        return values, ok


def add_column(collector: Collector, name: str, groups: list[tuple[int | None, np.ndarray | None]],
               keep: np.ndarray | None, ok: np.ndarray | None, orders: np.ndarray, steps: np.ndarray,
               values: np.ndarray) -> None:
    """One template column to the collector, per rank, without the rows whose step or value is no number."""
    mask = keep if ok is None else (ok if keep is None else ok & keep)
    for rank, rank_mask in groups:
        m = mask if rank_mask is None else (rank_mask if mask is None else rank_mask & mask)
        if m is None:
            collector.add_columns(name, rank, orders, steps, values)
        else:
            collector.add_columns(name, rank, orders[m], steps[m], values[m])


def apply_template(template: Template, pieces: list[tuple[int, bytes]],
                   collector: Collector) -> list[tuple[int, bytes]]:
    """Take every line of `template`'s shape out of `pieces`; return what is left, with offsets."""
    remaining: list[tuple[int, bytes]] = []
    stride = 3 + len(template.names)  # segment, whole line, rank, values
    for base, text in pieces:
        if template.anchor and template.anchor not in text:
            remaining.append((base, text))
            continue
        parts = template.regex.split(text)
        if len(parts) == 1:
            remaining.append((base, text))
            continue
        segments = parts[0::stride]
        wholes = parts[1::stride]
        k = len(wholes)
        seg_len = np.fromiter(map(len, segments), dtype=np.int64, count=k + 1)
        whole_len = np.fromiter(map(len, wholes), dtype=np.int64, count=k)
        seg_cum = np.cumsum(seg_len)
        whole_cum = np.concatenate(([0], np.cumsum(whole_len)))
        starts = (base + seg_cum[:k] + whole_cum[:k]).astype(np.float64)
        seg_starts = base + np.concatenate(([0], seg_cum[:-1])) + whole_cum
        for j, segment in enumerate(segments):
            if segment:
                remaining.append((int(seg_starts[j]), segment))
        steps, step_ok = _floats(parts[2 + 1 + template.step_group::stride])
        keep = step_ok if step_ok is not None else None
        rank_col = parts[2::stride]
        if rank_col.count(b"") + rank_col.count(None) == k:
            groups: list[tuple[int | None, np.ndarray | None]] = [(None, None)]
        else:
            ranks = np.fromiter((int(r) if r else -1 for r in rank_col), dtype=np.int64, count=k)
            groups = [(None if r < 0 else int(r), ranks == r) for r in np.unique(ranks).tolist()]
        collector.records += k if keep is None else int(keep.sum())
        template.hits += k
        for i, name in enumerate(template.names):
            if name is None:
                continue
            values, ok = _floats(parts[3 + i::stride])
            add_column(collector, name, groups, keep, ok, starts, steps, values)
    return remaining


def _feed_piece(piece: bytes, base: int, parser: LineParser, collector: Collector,
                learner: TemplateLearner | None) -> None:
    pos = base
    for raw in piece.split(b"\n"):
        start = pos
        pos += len(raw) + 1
        if not raw or raw.isspace():
            continue
        if len(raw) > MAX_LINE_BYTES:
            collector.warn(f"skipped a line longer than {MAX_LINE_BYTES} bytes")
            collector.unparsed += 1
            continue
        line = raw.decode("utf-8", "replace")
        rank, text = strip_rank_prefix(line)
        if "\r" in text or "\b" in text:
            text = last_segment(text)
        if not text or text.isspace():
            continue
        collector.position = float(start)
        if parser.feed(text, rank):
            if learner is not None and learner.wants_more():
                learner.observe(raw.rstrip(b"\r"), text, collector.last_record)
        else:
            collector.unparsed += 1


def parse_text_blocks(blocks: Iterable[tuple[int, bytes]], fmt: str, collector: Collector,
                      bulk: bool = True) -> None:
    """Parse (offset, bytes) blocks of a text log in format `fmt`, bulk where shapes repeat.

    `bulk=False` reads line by line only: for small texts, learning templates costs more than
    it saves.
    """
    parser = LINE_PARSERS[fmt](collector)
    learner = TemplateLearner() if bulk and fmt in TEMPLATE_FORMATS else None
    for offset, block in blocks:
        collector.lines += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        pieces = None
        if learner is not None:
            learner.new_block()
            if learner.templates and columnar.available():
                pieces = columnar.apply_templates(learner.templates, offset, block, collector)
            if pieces is None:
                pieces = [(offset - 1, b"\n" + block)]  # the newline before the first line, see _RANKED
                for template in learner.templates:
                    pieces = apply_template(template, pieces, collector)
                    if not pieces:
                        break
            learner.templates.sort(key=lambda t: -t.hits)
        else:
            pieces = [(offset - 1, b"\n" + block)]
        prefilter = parser.prefilter
        for base, piece in pieces:
            if prefilter is not None and prefilter.search(piece) is None:
                collector.unparsed += sum(1 for line in piece.split(b"\n") if line and not line.isspace())
                continue
            _feed_piece(piece, base, parser, collector, learner)
        collector.flush()
    parser.finish()
    collector.flush()
