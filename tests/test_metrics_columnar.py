"""The columnar engine (polars) reads every generated log exactly as the pure-Python bulk path does.

Logs are made of repeated metric lines of the template formats (so templates are learned and
applied from the second block on), with NaN/Inf spellings, tokens `float()` and polars read
differently ('1_000', long mantissas), rank prefixes, CRLF endings and odd lines in between.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_debug_mcp.core.logs.formats import columnar
from ml_debug_mcp.core.logs.formats.bulk import parse_text_blocks
from ml_debug_mcp.core.logs.formats.common import Collector
from ml_debug_mcp.core.logs.metrics import parse_metrics_text

pytest.importorskip("polars")

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = ["1e-4", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-0", "0", "1_000", ".5", "5.", "+3", "1E+5",
          "1e999", "1e-400", "0x10", "abc", "1" * 45, "0." + "3" * 38, "3.14159265358979323846264338327950288",
          "2.2250738585072014e-308", "4.9e-324", "00012", "-.5e-3", "1.5.2", "--1"]
values = st.one_of(st.sampled_from(TOKENS), st.floats(allow_nan=True).map(repr),
                   st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.4f}"),
                   st.integers(-10**20, 10**20).map(str))
steps = st.one_of(st.integers(0, 10**6).map(str), st.sampled_from(["1e3", "2.5", "7.", "-3", "nan"]))
prefixes = st.sampled_from(["", "", "[rank0]:", "[rank1]:", "[default3]: ", "[rank12]: "])
ODD = ["", " ", "Traceback (most recent call last):", "INFO loaded shard 00012 from /data/x.bin", "\r",
       "loss", "step", "iter 3: loss", "{'loss': 2.5}", "WARNING lr 0.1 is large", "épοch 1 loss 2", "\t\x00"]


@st.composite
def metric_line(draw, fmt: str) -> str:
    step, a, b, c = draw(steps), draw(values), draw(values), draw(values)
    if fmt == "nanogpt":
        body = f"iter {step}: loss {a}, time {b}ms, mfu {c}%"
    elif fmt == "keyvalue":
        body = draw(st.sampled_from([f"step {step} | loss {a} | lr {b} | grad_norm {c}",
                                     f"step={step} loss={a} lr={b}", f"step {step}: train loss {a}, val loss {b}"]))
    else:
        body = draw(st.sampled_from([f'{{"step": {step}, "loss": {a}, "lr": {b}}}', f'{{"_step": {step}, "acc": {c}}}']))
    return draw(prefixes) + body


def log_text(fmt: str):
    line = st.one_of(metric_line(fmt), metric_line(fmt), metric_line(fmt), st.sampled_from(ODD),
                     st.text(max_size=30))
    return st.tuples(st.lists(line, min_size=1, max_size=60), st.sampled_from(["\n", "\r\n"]), st.booleans())


def read(data: bytes, fmt: str, engine: str | None, block_lines: int):
    """parse_text_blocks over blocks of `block_lines` lines (templates apply from the second block)."""
    columnar.ENGINE = engine
    try:
        collector = Collector(max_points=50)
        lines = data.split(b"\n")
        blocks, offset = [], 0
        for i in range(0, len(lines), block_lines):
            chunk = b"\n".join(lines[i:i + block_lines])
            if i + block_lines < len(lines):
                chunk += b"\n"
            if chunk:
                blocks.append((offset, chunk))
            offset += len(chunk)
        parse_text_blocks(blocks, fmt, collector)
        parsed = collector.result(fmt)
    finally:
        columnar.ENGINE = "polars"
    return (parsed.records, parsed.lines_scanned, parsed.unparsed_lines, parsed.warnings,
            [(s.name, s.rank, [repr(x) for x in s.steps], [repr(v) for v in s.values], s.stats.model_dump_json())
             for s in parsed.series])


@SETTINGS
@given(fmt=st.sampled_from(["nanogpt", "keyvalue", "jsonl"]), log=st.data(), repeat=st.integers(3, 12),
       block_lines=st.integers(5, 80))
def test_engine_reads_like_python(fmt, log, repeat, block_lines):
    lines, newline, final_newline = log.draw(log_text(fmt))
    text = newline.join(lines * repeat) + (newline if final_newline else "")
    data = text.encode("utf-8", "replace")
    assert read(data, fmt, "polars", block_lines) == read(data, fmt, None, block_lines)


@SETTINGS
@given(rows=st.lists(st.tuples(st.integers(0, 10**6), values, values), min_size=1, max_size=40))
def test_engine_leaves_csv_alone(rows):
    text = "step,loss,lr\n" + "".join(f"{s},{a},{b}\n" for s, a, b in rows)
    columnar.ENGINE = None
    try:
        python = parse_metrics_text(text)
    finally:
        columnar.ENGINE = "polars"
    assert parse_metrics_text(text).model_dump_json() == python.model_dump_json()


def test_engine_is_used_and_agrees_on_a_big_log():
    lines = [f"[rank{i % 2}]:iter {i}: loss {1 + (i % 97) / 7:.4f}, time {40 + i % 9}.5ms, mfu nan%" for i in range(60_000)]
    data = ("\n".join(lines) + "\n").encode()
    calls = []
    original = columnar.apply_templates

    def spy(*args):
        calls.append(1)
        return original(*args)

    columnar.apply_templates = spy
    try:
        fast = read(data, "nanogpt", "polars", 20_000)
    finally:
        columnar.apply_templates = original
    assert calls and fast == read(data, "nanogpt", None, 20_000)
    assert fast[0] == 60_000
