"""core.tail on real files: last lines, cursors across appends/truncation/rotation, grep, bounds."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ml_debug_mcp.core.logs import tail as tail_mod
from ml_debug_mcp.core.logs.tail import MAX_LINE_CHARS, MAX_LINES, list_logs, tail_file

LOGS = Path(__file__).parent / "fixtures" / "logs"


def write_lines(path: Path, lines: list[str], mode: str = "w") -> None:
    with open(path, mode) as fh:
        fh.write("".join(line + "\n" for line in lines))


def numbered(n: int, start: int = 0) -> list[str]:
    return [f"step {i} | loss {1.0 / (i + 1):.6f} | lr 1.00e-04" for i in range(start, start + n)]


def poll_all(path: Path, cursor: str, lines: int = 50) -> tuple[list[str], str]:
    """Follow the cursor until nothing more is pending; return every line seen."""
    seen: list[str] = []
    while True:
        result = tail_file(path, lines=lines, since=cursor)
        seen += [ln.text for ln in result.lines]
        cursor = result.next_cursor
        if not result.has_more:
            return seen, cursor


def test_last_lines_offsets_and_line_numbers(tmp_path):
    path = tmp_path / "train.log"
    lines = numbered(20000)
    write_lines(path, lines)
    data = path.read_bytes()
    result = tail_file(path, lines=7)
    assert [ln.text for ln in result.lines] == lines[-7:]
    assert result.line_numbering == "absolute"
    assert [ln.line_no for ln in result.lines] == list(range(19994, 20001))
    for ln in result.lines:
        assert data[ln.offset:].startswith(ln.text.encode())
    assert result.partial_line is None and not result.has_more
    assert result.size == len(data) and result.status == "ok"


def test_default_and_capped_line_counts(tmp_path):
    path = tmp_path / "train.log"
    write_lines(path, numbered(3000))
    assert len(tail_file(path).lines) == 50
    capped = tail_file(path, lines=5000)
    assert len(capped.lines) == MAX_LINES and capped.truncated
    assert any("capped" in note for note in capped.truncation)


def test_line_numbers_unknown_far_into_a_large_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tail_mod, "ABSOLUTE_LINE_LIMIT", 1000)
    path = tmp_path / "train.log"
    write_lines(path, numbered(500))
    result = tail_file(path, lines=3)
    assert result.line_numbering == "offsets_only"
    assert all(ln.line_no is None for ln in result.lines)
    assert all(ln.offset > 1000 for ln in result.lines)


def test_cursor_returns_exactly_the_appended_lines(tmp_path):
    path = tmp_path / "train.log"
    write_lines(path, numbered(100))
    first = tail_file(path, lines=10)
    write_lines(path, numbered(3, start=100), mode="a")
    polled = tail_file(path, since=first.next_cursor)
    assert [ln.text for ln in polled.lines] == numbered(3, start=100)
    assert polled.reset is None and not polled.has_more
    again = tail_file(path, since=polled.next_cursor)
    assert again.lines == [] and not again.has_more


def test_cursor_pages_through_a_large_append(tmp_path):
    path = tmp_path / "train.log"
    write_lines(path, numbered(10))
    cursor = tail_file(path).next_cursor
    appended = numbered(2345, start=10)
    write_lines(path, appended, mode="a")
    first = tail_file(path, since=cursor, lines=100)
    assert len(first.lines) == 100 and first.has_more
    seen, _ = poll_all(path, cursor, lines=100)
    assert seen == appended


def test_partial_last_line_is_held_back(tmp_path):
    path = tmp_path / "train.log"
    with open(path, "w") as fh:
        fh.write("step 1 | loss 2.0\nstep 2 | loss 1.9\nstep 3 | lo")
    result = tail_file(path)
    assert [ln.text for ln in result.lines] == ["step 1 | loss 2.0", "step 2 | loss 1.9"]
    assert result.partial_line is not None and result.partial_line.text == "step 3 | lo"
    with open(path, "a") as fh:
        fh.write("ss 1.8\nstep 4 | loss 1.7\n")
    polled = tail_file(path, since=result.next_cursor)
    assert [ln.text for ln in polled.lines] == ["step 3 | loss 1.8", "step 4 | loss 1.7"]
    assert polled.partial_line is None


def test_truncation_restarts_from_the_start(tmp_path):
    path = tmp_path / "train.log"
    write_lines(path, numbered(100))
    cursor = tail_file(path).next_cursor
    write_lines(path, ["restarted run", "step 0 | loss 9.0"])
    result = tail_file(path, since=cursor)
    assert result.reset == "truncated" and "shrank" in result.reset_reason
    assert [ln.text for ln in result.lines] == ["restarted run", "step 0 | loss 9.0"]


def test_rotation_is_detected_by_inode(tmp_path):
    path = tmp_path / "train.log"
    write_lines(path, numbered(100))
    cursor = tail_file(path).next_cursor
    os.rename(path, tmp_path / "train.log.1")
    write_lines(path, ["new file line 1", "new file line 2"] + numbered(200))
    result = tail_file(path, since=cursor)
    assert result.reset == "rotated" and "inode" in result.reset_reason
    assert result.lines[0].text == "new file line 1"


def test_rewrite_in_place_past_the_old_offset(tmp_path):
    path = tmp_path / "train.log"
    write_lines(path, numbered(50))
    cursor = tail_file(path).next_cursor
    with open(path, "r+") as fh:  # copytruncate-style: same inode, new content, longer than before
        fh.seek(0)
        fh.write("".join(f"other run line {i:06d} with different text\n" for i in range(200)))
    result = tail_file(path, since=cursor)
    assert result.reset == "rewritten"
    assert result.lines[0].text.startswith("other run line 000000")


def test_grep_with_context_extracts_a_whole_traceback(tmp_path):
    path = tmp_path / "train.log"
    traceback = (LOGS / "errors" / "chained_traceback.log").read_text().splitlines()[2:]
    write_lines(path, numbered(3000) + traceback + numbered(5, start=3000))
    result = tail_file(path, grep=r"^RuntimeError", around=20, lines=1)
    texts = [ln.text for ln in result.lines]
    assert texts[texts.index("Traceback (most recent call last):")] and texts.count("Traceback (most recent call last):") == 2
    assert "RuntimeError: could not load shard-0042" in texts
    assert [ln.match for ln in result.lines].count(True) == 1
    assert result.matches == 1
    numbers = [ln.line_no for ln in result.lines]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # one contiguous block


def test_grep_keeps_latest_matches_and_marks_gaps(tmp_path):
    path = tmp_path / "train.log"
    lines = [f"step {i} | loss 1.0" if i % 100 else f"EVAL step {i} | val loss 2.0" for i in range(5000)]
    write_lines(path, lines)
    result = tail_file(path, grep="EVAL", lines=3, around=1)
    matches = [ln.text for ln in result.lines if ln.match]
    assert matches == ["EVAL step 4700 | val loss 2.0", "EVAL step 4800 | val loss 2.0", "EVAL step 4900 | val loss 2.0"]
    assert sum(ln.gap_before for ln in result.lines) == 2
    assert len(result.lines) == 9


def test_grep_on_a_cursor_poll(tmp_path):
    path = tmp_path / "train.log"
    write_lines(path, numbered(10))
    cursor = tail_file(path).next_cursor
    write_lines(path, ["noise", "WARNING: loss spike", "noise", "WARNING: grad overflow"], mode="a")
    result = tail_file(path, since=cursor, grep="WARNING")
    assert [ln.text for ln in result.lines] == ["WARNING: loss spike", "WARNING: grad overflow"]
    assert tail_file(path, since=result.next_cursor).lines == []


def test_invalid_grep_and_cursor_are_caller_errors(tmp_path):
    path = tmp_path / "train.log"
    write_lines(path, numbered(5))
    with pytest.raises(ValueError, match="not a valid regular expression"):
        tail_file(path, grep="loss[")
    with pytest.raises(ValueError, match="not a cursor"):
        tail_file(path, since="garbage!")
    with pytest.raises(ValueError, match="Unknown format"):
        tail_file(path, fmt="nope")


def test_long_lines_are_cut_and_output_is_bounded(tmp_path):
    path = tmp_path / "wide.log"
    write_lines(path, [f"{i:05d} " + "x" * 5000 for i in range(400)])
    result = tail_file(path, lines=400)
    assert all(ln.cut for ln in result.lines)
    assert all(len(ln.text) < MAX_LINE_CHARS + 40 for ln in result.lines)
    assert sum(len(ln.text) for ln in result.lines) <= tail_mod.MAX_OUTPUT_CHARS
    assert result.truncated and result.lines[-1].text.startswith("00399 ")
    assert len(result.lines) < 400


def test_huge_last_line_does_not_read_unbounded(tmp_path, monkeypatch):
    monkeypatch.setattr(tail_mod, "LOOKBACK_BYTES", 1 << 20)
    path = tmp_path / "blob.log"
    with open(path, "wb") as fh:
        fh.write(b"step 1 | loss 2.0\n")
        fh.write(b"y" * (3 << 20) + b"\n")
    result = tail_file(path, lines=5)
    assert result.searched_bytes <= 1 << 20
    assert result.truncated and any("start was not read" in n for n in result.truncation)
    assert len(result.lines) == 1 and result.lines[0].cut


def test_carriage_return_progress_shows_last_state(tmp_path):
    path = tmp_path / "tqdm.log"
    path.write_bytes(b" 10%|#  | 1/10\r 50%|#####  | 5/10\r100%|##########| 10/10\nstep 10 | loss 0.5\n")
    result = tail_file(path)
    assert result.lines[0].text == "100%|##########| 10/10" and result.lines[0].rewritten


def test_a_few_nul_bytes_do_not_hide_the_log_and_real_binaries_stay_binary(tmp_path):
    import random

    import torch

    log = tmp_path / "train.log"
    lines = [f"step {i} | loss {2.0 - i / 1000:.4f}" for i in range(1000)]
    lines[995] = "sample text: '<pad>\x00\x00'"  # a padded sample printed into the log
    log.write_text("\n".join(lines) + "\nTraceback (most recent call last):\n  File \"t.py\", line 1, in <module>\n"
                   "RuntimeError: CUDA error: device-side assert triggered\n")
    result = tail_file(log, lines=10)
    assert result.status == "ok" and result.decode_errors
    assert "sample text: '<pad>\u2400\u2400'" in [line.text for line in result.lines]
    assert [e.kind for e in result.errors] == ["cuda_error"] and result.metrics
    noise = tmp_path / "noise.bin"
    noise.write_bytes(random.Random(0).randbytes(100_000))  # few NULs, mostly invalid UTF-8
    checkpoint = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(64, 64)}, checkpoint)
    assert tail_file(noise).status == "binary" and tail_file(checkpoint).status == "binary"


def test_when_a_traceback_fills_the_shown_lines_the_last_metrics_come_from_above_it(tmp_path):
    log = tmp_path / "train.log"
    frames = "".join(f'  File "/lib/m{i}.py", line {i}, in f{i}\n    x = f(x)\n' for i in range(40))
    log.write_text("".join(f"step {i} | loss {3.0 - i / 100:.4f} | lr 1e-4\n" for i in range(200))
                   + "Traceback (most recent call last):\n" + frames + "RuntimeError: CUDA error: device-side assert "
                   "triggered\n")
    result = tail_file(log, lines=50)
    assert all(not line.text.startswith("step") for line in result.lines)
    assert result.format == "keyvalue" and {(m.name, m.step, m.value) for m in result.metrics} >= {("loss", 199.0, 1.01)}
    assert any("no metric in the lines shown" in w for w in result.warnings)
    assert [e.kind for e in result.errors] == ["cuda_error"]


def test_a_fifo_named_like_a_log_is_not_listed_nor_read_as_the_newest_log(tmp_path):
    from ml_debug_mcp.core.logs.metrics import parse_metrics

    (tmp_path / "a.log").write_text("step 1 | loss 2.0\nstep 2 | loss 1.5\n")
    os.utime(tmp_path / "a.log", (1_600_000_000, 1_600_000_000))
    os.mkfifo(tmp_path / "live.log")  # newer than a.log, and opening it would block
    assert [f.name for f in list_logs(tmp_path)] == ["a.log"]
    parsed = parse_metrics(tmp_path)
    assert parsed.get("loss") is not None and parsed.get("loss").stats.last_value == 1.5


def test_a_line_longer_than_the_lookback_is_reported_not_silently_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(tail_mod, "LOOKBACK_BYTES", 1 << 20)
    log = tmp_path / "huge.log"
    log.write_text("first\n" + "x" * (2 << 20) + "\nlast\n")
    result = tail_file(log, lines=3)
    assert [line.text for line in result.lines] == ["last"]
    assert result.truncated and "were not read" in result.truncation[-1]


def test_binary_empty_missing_and_directory(tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 50)
    result = tail_file(binary)
    assert result.status == "binary" and result.lines == [] and "binary file" in result.warnings[0]

    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    result = tail_file(empty)
    assert result.status == "empty" and result.lines == []
    write_lines(empty, ["first line"])
    assert [ln.text for ln in tail_file(empty, since=result.next_cursor).lines] == ["first line"]

    missing = tail_file(tmp_path / "nope.log")
    assert missing.status == "missing" and "does not exist" in missing.warnings[0]

    (tmp_path / "old.out").write_text("x\n")
    os.utime(tmp_path / "old.out", (1_000_000, 1_000_000))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "rank0.log").write_text("y\n")
    (tmp_path / "readme.md").write_text("z\n")
    listing = tail_file(tmp_path)
    assert listing.status == "directory"
    names = [f.name for f in listing.files]
    assert names[-1] == "old.out" and "sub/rank0.log" in names and "readme.md" not in names
    assert names == [f.name for f in list_logs(tmp_path)]
    assert all(f.size >= 0 and f.age_seconds >= 0 for f in listing.files)


def test_non_utf8_bytes_are_replaced(tmp_path):
    path = tmp_path / "latin1.log"
    path.write_bytes(b"step 1 | loss 2.0 caf\xe9\n")
    result = tail_file(path)
    assert result.decode_errors and "\ufffd" in result.lines[0].text


def test_file_facts_and_still_writing(tmp_path):
    path = tmp_path / "train.log"
    write_lines(path, numbered(3))
    assert tail_file(path).still_writing
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    stale = tail_file(path)
    assert not stale.still_writing and stale.age_seconds > 3000


def test_last_metric_values_per_rank_and_format():
    result = tail_file(LOGS / "torchrun_ranks.log", lines=6)
    assert result.format == "keyvalue"
    by_key = {(m.name, m.rank): m for m in result.metrics}
    assert by_key[("loss", 0)].value == pytest.approx(3 * 2.718281828 ** (-180 / 80), rel=1e-3)
    assert by_key[("loss", 1)].value is None and by_key[("loss", 1)].nonfinite == "nan"
    assert by_key[("grad_norm", 1)].nonfinite == "inf"
    assert by_key[("loss", 0)].step == 180.0


def test_errors_in_the_tail_are_extracted_whole(tmp_path):
    path = tmp_path / "train.log"
    oom = (LOGS / "errors" / "cuda_oom.log").read_text().splitlines()
    write_lines(path, numbered(500) + oom)
    result = tail_file(path, lines=3)  # only the end of the traceback is shown...
    assert len(result.errors) == 1
    error = result.errors[0]  # ...but the error comes back whole
    assert error.kind == "cuda_oom" and error.exception_type == "torch.OutOfMemoryError"
    assert error.text.startswith("Traceback (most recent call last):")
    assert error.numbering == "file" and error.first_line == 502 and error.last_line == 512
    assert path.read_bytes()[error.first_offset:].startswith(b"Traceback")


def test_csv_tail_uses_the_header_line(tmp_path):
    path = tmp_path / "metrics.csv"
    write_lines(path, ["step,train_loss,val_loss"] + [f"{i},{1 / (i + 1):.5f}," for i in range(3000)])
    result = tail_file(path, lines=5)
    assert result.format in ("csv", "lightning_csv")
    loss = next(m for m in result.metrics if m.name == "loss")
    assert loss.step == 2999.0 and loss.value == float(f"{1 / 3000:.5f}")


def test_polling_while_the_file_is_being_written(tmp_path):
    """A writer appends (sometimes mid-line) while the reader polls: nothing lost, nothing twice."""
    path = tmp_path / "live.log"
    path.write_text("")
    expected = numbered(3000)
    done = threading.Event()

    def writer() -> None:
        with open(path, "a") as fh:
            for i, line in enumerate(expected):
                if i % 7 == 0:  # split some lines across two writes
                    fh.write(line[:5])
                    fh.flush()
                    fh.write(line[5:] + "\n")
                else:
                    fh.write(line + "\n")
                if i % 100 == 0:
                    fh.flush()
                    time.sleep(0.001)
        done.set()

    cursor = tail_file(path).next_cursor
    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[str] = []
    deadline = time.time() + 60
    while time.time() < deadline:
        finished = done.is_set()
        result = tail_file(path, since=cursor, lines=200)
        assert result.reset is None
        seen += [ln.text for ln in result.lines]
        cursor = result.next_cursor
        if finished and not result.has_more:
            break
    thread.join()
    assert seen == expected


def test_errors_are_searched_well_before_the_shown_lines(tmp_path):
    """classify_failure asks for one line and relies on errors from the last 256 KB."""
    path = tmp_path / "train.log"
    crash = (LOGS / "errors" / "chained_traceback.log").read_text().splitlines()[2:]
    after = [f"wandb: uploading artifact chunk {i:05d} of run abc123 ({i * 7 % 1000} KiB)" for i in range(2000)]
    write_lines(path, numbered(1000) + crash + after)
    assert path.stat().st_size - path.read_bytes().index(b"Traceback") > 100_000
    result = tail_file(path, lines=1)
    assert [e.exception_type for e in result.errors] == ["RuntimeError"]


def test_fifo_is_not_opened(tmp_path):
    from ml_debug_mcp.core.logs.metrics import detect_format, parse_metrics

    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    result = tail_file(fifo)  # opening a FIFO for reading would block until a writer appears
    assert result.status == "unreadable" and "not a regular file" in result.warnings[0]
    assert detect_format(fifo) == "unknown"
    assert any("not a regular file" in w for w in parse_metrics(fifo).warnings)


def test_unknown_format_is_said_and_still_tailed(tmp_path):
    path = tmp_path / "notes.txt"
    write_lines(path, ["just some prose", "nothing numeric here", "the end"])
    result = tail_file(path, lines=2)
    assert result.format == "unknown" and result.metrics == []
    assert [ln.text for ln in result.lines] == ["nothing numeric here", "the end"]


def test_the_analysis_is_reused_only_while_the_file_is_unchanged(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(f"step {i} | loss {3.0 - i / 100:.3f}\n" for i in range(50)))
    first = tail_file(log, lines=20)
    again = tail_file(log, lines=20)
    assert [m.model_dump() for m in again.metrics] == [m.model_dump() for m in first.metrics]
    again.metrics[0].value = -1.0  # a caller editing its answer does not edit the remembered one
    assert tail_file(log, lines=20).metrics[0].value != -1.0
    with log.open("a") as fh:
        fh.write("step 50 | loss nan\nTraceback (most recent call last):\nRuntimeError: CUDA error: device-side assert triggered\n")
    changed = tail_file(log, lines=20)
    loss = next(m for m in changed.metrics if m.name == "loss")
    assert loss.nonfinite == "nan" and loss.step == 50
    assert changed.errors and not first.errors
