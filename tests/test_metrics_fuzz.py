"""Property tests: parsers, tail and error extraction never raise and stay bounded and JSON-clean.

Arbitrary bytes/text are mixed with fragments of real log lines so that the generators reach
the parsers' interesting paths, not only their "no metric here" exits.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_debug_mcp.core.logs.error_blocks import MAX_BLOCKS, extract_errors_text
from ml_debug_mcp.core.logs.metrics import FORMATS, INTERNAL_ERROR, parse_metrics, parse_metrics_text
from ml_debug_mcp.core.logs.series import SeriesBuilder
from ml_debug_mcp.core.logs.tail import MAX_LINE_CHARS, MAX_OUTPUT_CHARS, tail_file

FRAGMENTS = [
    "step 12 | loss 2.31 | lr 1e-4 | grad_norm nan", "iter 7: loss inf, time 45.20ms, mfu 12.34%",
    "{'loss': 2.5, 'grad_norm': 'nan', 'learning_rate': 5e-05, 'epoch': 0.1}", '{"step": 3, "loss": -Infinity}',
    "epoch,step,train_loss_step,val_loss", "0,9,2.1,", "Epoch 3/10", "10/10 [====] - 2s 20ms/step - loss: 0.1234",
    " iteration       10/    1000 | lm loss: 1.0E+01 | grad norm: 3.874 |", "[rank3]:", "[default0]:",
    "| INFO | train_inner | epoch 001:    100 / 500 loss=9.1, num_updates=100", "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>', "RuntimeError: CUDA out of memory.", "Killed", "\r", "\b", "\x1b[1m",
    "1700000000000 0.5 3", "validation loss at iteration 20 | lm loss value: 6.9E+00 |", "NaN", "-inf", "1e999",
]

texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=40)), max_size=40).map("\n".join)
blobs = st.lists(st.one_of(st.sampled_from(FRAGMENTS).map(str.encode), st.binary(max_size=60)), max_size=40).map(b"\n".join)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_json_clean(model) -> None:
    """No NaN/Inf anywhere in the dumped answer (the tool layer returns it as JSON)."""
    def walk(value):
        if isinstance(value, float):
            assert math.isfinite(value), value
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
    walk(model.model_dump())
    json.loads(model.model_dump_json())


@SETTINGS
@given(text=texts, fmt=st.sampled_from([None, *FORMATS]))
def test_parse_text_never_raises(text, fmt):
    parsed = parse_metrics_text(text, fmt=fmt, max_points=20)
    assert parsed.format in FORMATS
    assert not any(INTERNAL_ERROR in w for w in parsed.warnings), parsed.warnings
    for s in parsed.series:
        assert len(s.steps) == len(s.values) <= 21
        assert s.stats.count >= s.stats.finite_count
    assert_json_clean(parsed)


@SETTINGS
@given(data=blobs, fmt=st.sampled_from([None, *FORMATS]), name=st.sampled_from(["train.log", "metrics.csv",
                                                                                "trainer_state.json", "x.jsonl"]))
def test_parse_file_never_raises(data, fmt, name):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        parsed = parse_metrics(path, fmt=fmt, max_points=20)
        assert parsed.format in FORMATS
        assert not any(INTERNAL_ERROR in w for w in parsed.warnings), parsed.warnings
        assert_json_clean(parsed)


@SETTINGS
@given(data=blobs, more=blobs, lines=st.integers(-5, 2000), grep=st.sampled_from([None, "loss", "^\\[", "Error|Killed"]),
       around=st.integers(-2, 5))
def test_tail_never_raises_and_stays_bounded(data, more, lines, grep, around):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.log"
        path.write_bytes(data)
        result = tail_file(path, lines=lines, grep=grep, around=around)
        assert len(result.lines) <= max(1, min(lines, 1000)) * (1 + 2 * max(0, around))
        assert all(len(ln.text) <= MAX_LINE_CHARS + 40 for ln in result.lines)
        assert sum(len(ln.text) + 1 for ln in result.lines) <= MAX_OUTPUT_CHARS
        assert_json_clean(result)
        with open(path, "ab") as fh:
            fh.write(more)
        polled = tail_file(path, since=result.next_cursor, lines=lines, grep=grep)
        assert_json_clean(polled)


@SETTINGS
@given(data=blobs, more=blobs, page=st.integers(1, 50))
def test_cursor_yields_exactly_the_appended_lines(data, more, page):
    """Whatever the bytes, following the cursor returns each appended complete line once."""
    from ml_debug_mcp.core.logs.tail import _display

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.log"
        path.write_bytes(data)
        first = tail_file(path, lines=page, analyze=False)
        if first.status != "ok" and first.status != "empty":
            return
        with open(path, "ab") as fh:
            fh.write(more)
        full = data + more
        start = data.rfind(b"\n") + 1  # the cursor stays before a partial last line
        expected = [_display(raw)[0] for raw in full[start:].split(b"\n")[:-1]]
        seen, cursor = [], first.next_cursor
        for _ in range(len(expected) + 2):
            polled = tail_file(path, since=cursor, lines=page, analyze=False)
            if polled.status == "binary":
                return
            seen += [ln.text for ln in polled.lines]
            cursor = polled.next_cursor
            if not polled.has_more:
                break
        assert seen == expected


@SETTINGS
@given(text=texts)
def test_error_extraction_never_raises(text):
    blocks = extract_errors_text(text)
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        assert 1 <= block.first_line <= block.last_line


finite_or_not = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                          st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]))


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.lists(finite_or_not, max_size=300), min_size=1, max_size=6),
       max_points=st.sampled_from([10, 13, 60, 2000]))
def test_add_many_equals_point_by_point(chunks, max_points):
    one, bulk = SeriesBuilder("x", max_points=max_points), SeriesBuilder("x", max_points=max_points)
    step = 0
    for chunk in chunks:
        steps = [float(step + i) for i in range(len(chunk))]
        step += len(chunk)
        for s, v in zip(steps, chunk):
            one.add(s, v)
        bulk.add_many(steps, chunk)
    a, b = one.build().model_dump(), bulk.build().model_dump()
    mean_a, mean_b = a["stats"].pop("mean"), b["stats"].pop("mean")
    assert (mean_a is None) == (mean_b is None)
    if mean_a is not None and math.isfinite(mean_a):
        assert math.isclose(mean_a, mean_b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, abs(mean_a)))
    assert a == b



@settings(max_examples=150, deadline=None)
@given(values=st.lists(finite_or_not, min_size=1, max_size=3000), max_points=st.sampled_from([10, 11, 13, 60]),
       bulk=st.booleans())
def test_downsampling_keeps_ends_within_budget(values, max_points, bulk):
    builder = SeriesBuilder("x", max_points=max_points)
    steps = [float(i) for i in range(len(values))]
    if bulk:
        builder.add_many(steps, values)
    else:
        for s, v in zip(steps, values):
            builder.add(s, v)
    built = builder.build()
    assert len(built.steps) <= max_points
    assert built.steps[0] == 0 and built.steps[-1] == len(values) - 1
    for i, kept in ((0, built.values[0]), (-1, built.values[-1])):
        assert kept == (values[i] if math.isfinite(values[i]) else None)
