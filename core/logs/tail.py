"""The end of a (possibly huge, still growing) log: last lines, polling cursor, grep, errors.

Reads go backwards from the end in blocks, so the cost depends on how much is returned, not on
the file size. A cursor (opaque string) remembers the file identity (device, inode), the byte
offset reached and a fingerprint of the bytes just before it, so a later call returns exactly
the lines appended since, and says so when the file was truncated, rotated or rewritten.

Line numbering: every line carries `offset`, its byte offset in the file. `line_no` is the
1-based line number in the file when it is cheap to know (the lines start within the first
ABSOLUTE_LINE_LIMIT bytes, counted by a scan from the start); otherwise it is None, because
numbering lines of a large file means reading all of it.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections import OrderedDict
import re
import time
import zlib
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core import safe_fs
from ml_debug_mcp.core.logs.error_blocks import ErrorBlock, extract_errors
from ml_debug_mcp.core.logs.formats.common import ANSI_RE

if TYPE_CHECKING:
    from ml_debug_mcp.core.logs.series import ParsedLog

DEFAULT_LINES = 50
MAX_LINES = 1000
MAX_LINE_CHARS = 2000
MAX_OUTPUT_CHARS = 100_000
BLOCK = 64 << 10
LOOKBACK_BYTES = 8 << 20          # how far back a plain tail looks for line starts
GREP_LOOKBACK_BYTES = 64 << 20    # how far back a grep looks for matches
FORWARD_BYTES = 4 << 20           # how much one cursor poll reads
SCAN_MAX_BYTES = 256 << 10        # at most this much of the end is searched for errors and metrics
SCAN_MIN_BYTES = 32 << 10         # ... and at least this much when no lines are shown (grep, polls)
ERROR_SCAN_BYTES = 256 << 10      # errors are searched in at least this much of the end (classify relies on it)
FORMAT_SAMPLE_LINES = 60          # the format of the tail is voted on by its last lines
METRIC_LOOKBACK_LINES = 1000      # lines above the shown ones read for last metric values when those hold none
ABSOLUTE_LINE_LIMIT = 8 << 20
STILL_WRITING_SECONDS = 120.0
MAX_AROUND = 200
FINGERPRINT_BYTES = 64
_CURSOR_VERSION = 1

_RECORD_INDEX_STEP_FORMATS = frozenset({"hf_trainer"})
LOG_SUFFIXES = {".log", ".txt", ".out", ".err", ".stdout", ".stderr", ".jsonl", ".csv", ".tsv", ".json"}


class TailLine(BaseModel):
    offset: int = Field(description="Byte offset of the line's first byte in the file")
    line_no: int | None = Field(None, description="1-based line number in the file, when known")
    text: str
    cut: bool = Field(False, description=f"The line was longer than {MAX_LINE_CHARS} characters and was cut")
    rewritten: bool = Field(False, description="The line held carriage returns (a progress bar); only its last state is shown")
    match: bool | None = Field(None, description="With grep: True for a matching line, False for a context line")
    gap_before: bool = Field(False, description="With grep: lines were skipped between this line and the previous one")


class MetricValue(BaseModel):
    """The last value of one metric seen in the tail."""

    name: str
    rank: int | None = None
    step: float | None = None
    value: float | None = None
    nonfinite: Literal["nan", "inf", "-inf"] | None = None


class LogFileInfo(BaseModel):
    path: str
    name: str
    size: int
    mtime: float
    age_seconds: float
    kind: Literal["log", "metrics", "events"]


class TailResult(BaseModel):
    path: str
    status: Literal["ok", "empty", "binary", "directory", "missing", "unreadable"] = "ok"
    size: int = 0
    mtime: float | None = None
    age_seconds: float | None = Field(None, description="Seconds since the file was last modified")
    still_writing: bool = Field(False, description=f"Modified in the last {int(STILL_WRITING_SECONDS)} s")
    format: str = "unknown"
    lines: list[TailLine] = Field(default_factory=list)
    partial_line: TailLine | None = Field(None, description="A last line with no newline yet; the cursor stays before it")
    line_numbering: Literal["absolute", "offsets_only"] = "offsets_only"
    next_cursor: str | None = Field(None, description="Pass as `since` to get the lines appended after these")
    has_more: bool = Field(False, description="More complete lines follow the returned ones (poll again with next_cursor)")
    reset: Literal["truncated", "rotated", "rewritten"] | None = None
    reset_reason: str | None = None
    truncated: bool = Field(False, description="Output was cut to stay bounded; see `truncation`")
    truncation: list[str] = Field(default_factory=list)
    grep: str | None = None
    matches: int | None = None
    searched_bytes: int = 0
    metrics: list[MetricValue] = Field(default_factory=list)
    errors: list[ErrorBlock] = Field(default_factory=list)
    decode_errors: bool = Field(False, description="Some bytes were not UTF-8 and were replaced with U+FFFD (NUL "
                                "bytes with U+2400)")
    files: list[LogFileInfo] = Field(default_factory=list, description="For a directory: its log-like files, newest first")
    warnings: list[str] = Field(default_factory=list)


# --- cursor ------------------------------------------------------------------------------------

class _Cursor(BaseModel):
    dev: int
    ino: int
    offset: int
    crc: int
    midline: bool = False


def _encode_cursor(c: _Cursor) -> str:
    raw = json.dumps([_CURSOR_VERSION, c.dev, c.ino, c.offset, c.crc, int(c.midline)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> _Cursor:
    try:
        padded = token.strip() + "=" * (-len(token.strip()) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        version, dev, ino, offset, crc, midline = data
        if version != _CURSOR_VERSION or offset < 0:
            raise ValueError
        return _Cursor(dev=int(dev), ino=int(ino), offset=int(offset), crc=int(crc), midline=bool(midline))
    except Exception:
        raise ValueError("`since` is not a cursor returned by tail_log (it is the opaque `next_cursor` string); "
                         "omit it to read the last lines instead.") from None


def _fingerprint(fh, offset: int) -> int:
    start = max(0, offset - FINGERPRINT_BYTES)
    fh.seek(start)
    return zlib.crc32(fh.read(offset - start))


# --- helpers -----------------------------------------------------------------------------------

def _display(raw: bytes) -> tuple[str, bool, bool, bool]:
    """(text, cut, rewritten, decode_error) for one raw line."""
    bad = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text, bad = raw.decode("utf-8", "replace"), True
    text = text.rstrip("\r")
    if "\x00" in text:  # shown, not dropped: a visible mark where the log holds NUL bytes
        text, bad = text.replace("\x00", "\u2400"), True
    rewritten = False
    if "\r" in text or "\b" in text:
        segments = [s for s in text.replace("\b", "").split("\r") if s.strip()]
        text = segments[-1] if segments else ""
        rewritten = True
    if "\x1b" in text:
        text = ANSI_RE.sub("", text)
    cut = len(text) > MAX_LINE_CHARS
    if cut:
        text = text[:MAX_LINE_CHARS] + f" ...[cut {len(text) - MAX_LINE_CHARS} chars]"
    return text, cut, rewritten, bad


def _compile_grep(grep: str | None):
    if grep is None or grep == "":
        return None
    from ml_debug_mcp.core.user_regex import compile_user_regex

    return compile_user_regex(grep, "grep")


def _count_newlines(fh, end: int) -> int:
    fh.seek(0)
    count, left = 0, end
    while left > 0:
        chunk = fh.read(min(1 << 20, left))
        if not chunk:
            break
        count += chunk.count(b"\n")
        left -= len(chunk)
    return count


def _read_backward(fh, size: int, enough, max_bytes: int) -> tuple[int, bytes]:
    """Read blocks from the end until `enough(data, newlines)` or the start or `max_bytes`."""
    chunks: list[bytes] = []
    pos = size
    newlines = 0
    while pos > 0 and size - pos < max_bytes:
        step = min(BLOCK if size - pos < (1 << 20) else (1 << 20), pos, max_bytes - (size - pos))
        pos -= step
        fh.seek(pos)
        chunk = fh.read(step)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
        if enough(chunks, newlines):
            break
    return pos, b"".join(reversed(chunks))


def _split_complete(data: bytes, start: int) -> tuple[list[tuple[int, bytes]], tuple[int, bytes] | None]:
    """(complete lines with offsets, trailing partial line) of a chunk starting at `start`."""
    parts = data.split(b"\n")
    tail = parts.pop()
    lines = []
    offset = start
    for part in parts:
        lines.append((offset, part))
        offset += len(part) + 1
    return lines, ((offset, tail) if tail else None)


def _stat_info(st: os.stat_result, result: TailResult) -> None:
    result.size = st.st_size
    result.mtime = st.st_mtime
    result.age_seconds = max(0.0, time.time() - st.st_mtime)
    result.still_writing = result.age_seconds < STILL_WRITING_SECONDS


# --- directory listing -------------------------------------------------------------------------

def _log_kind(path: Path) -> Literal["log", "metrics", "events"] | None:
    name = path.name
    if "tfevents" in name:
        return "events"
    suffix = path.suffix.lower()
    if name in ("trainer_state.json", "wandb-history.jsonl", "metrics.csv") or suffix in (".jsonl", ".csv", ".tsv"):
        return "metrics"
    if suffix in (".log", ".out", ".err", ".stdout", ".stderr", ".txt") or name in ("nohup.out", "stdout", "stderr"):
        return "log"
    if suffix.startswith(".log") or re.search(r"\.log\.\d+$|\.out\.\d+$", name):
        return "log"  # rotated: train.log.1
    return None


def list_logs(directory: Path, max_depth: int = 3, limit: int = 200) -> list[LogFileInfo]:
    """Log-like files under `directory` (a few levels deep), newest first."""
    directory = Path(directory)
    found: list[LogFileInfo] = []
    now = time.time()
    seen = 0
    base_depth = len(directory.parts)
    for dirpath, dirnames, filenames in safe_fs.walk(directory):
        depth = len(Path(dirpath).parts) - base_depth
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in ("__pycache__", "node_modules"))
        if depth >= max_depth:
            dirnames[:] = []
        for name in filenames:
            seen += 1
            path = Path(dirpath) / name
            kind = _log_kind(path)
            if kind is None or (path.is_symlink() and safe_fs.confine(directory, path) is None):
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            if not S_ISREG(st.st_mode):  # a FIFO named train.log would block whoever opens it
                continue
            found.append(LogFileInfo(path=str(path), name=str(path.relative_to(directory)), size=st.st_size,
                                     mtime=st.st_mtime, age_seconds=max(0.0, now - st.st_mtime), kind=kind))
        if seen > 20000:
            break
    found.sort(key=lambda f: f.mtime, reverse=True)
    return found[:limit]


# --- main entry --------------------------------------------------------------------------------

def tail_file(path: Path, lines: int = DEFAULT_LINES, since: str | None = None, grep: str | None = None,
              around: int = 0, fmt: str | None = None, analyze: bool = True) -> TailResult:
    """The last `lines` lines of `path` (or, with `since`, the lines appended after that cursor).

    `grep` keeps matching lines (regex), `around` adds that many context lines on each side.
    `analyze` (default) also fills format, last metric values and errors from the tail region;
    without it the answer is the lines, cursor and file facts only.
    Raises ValueError only for caller errors: an invalid regex, a malformed cursor, an unknown
    format id.
    """
    from ml_debug_mcp.core.logs.metrics import FORMATS

    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"Unknown format '{fmt}'. Use one of: {', '.join(sorted(FORMATS))}, or omit it.")
    pattern = _compile_grep(grep)
    cursor = _decode_cursor(since) if since else None
    n = max(1, min(int(lines), MAX_LINES))
    around = max(0, min(int(around), MAX_AROUND))
    path = Path(path)
    result = TailResult(path=str(path), grep=grep or None)
    if int(lines) > MAX_LINES:
        result.truncation.append(f"lines capped at {MAX_LINES}")
        result.truncated = True
    try:
        if path.is_dir():
            result.status = "directory"
            result.files = list_logs(path)
            result.warnings.append(f"{path} is a directory; pass one of the {len(result.files)} log files listed "
                                   "in `files` (newest first)")
            return result
        if path.exists() and not path.is_file():
            result.status = "unreadable"
            result.warnings.append(f"{path} is not a regular file (a FIFO, socket or device); it is not read, "
                                   "because reading it could block")
            return result
        fh = safe_fs.open_read(path)
    except FileNotFoundError:
        result.status = "missing"
        result.warnings.append(f"{path} does not exist (yet?). Check the path, or whether the run has started.")
        return result
    except OSError as exc:
        result.status = "unreadable"
        result.warnings.append(f"cannot open {path}: {exc.strerror or exc}")
        return result
    with fh:
        st = os.fstat(fh.fileno())
        _stat_info(st, result)
        if cursor is not None:
            _tail_forward(fh, st, cursor, n, pattern, around, result)
        else:
            _tail_backward(fh, st, n, pattern, around, result)
        if result.status == "ok" and analyze:
            if result.lines and result.grep is None:
                region_start = result.lines[0].offset
            elif result.partial_line is not None and result.grep is None:
                region_start = result.partial_line.offset
            else:
                region_start = st.st_size - SCAN_MIN_BYTES
            region_start = max(0, region_start, st.st_size - SCAN_MAX_BYTES)
            _scan_cached(fh, st, region_start, fmt, path, result)
    if st.st_size == 0:
        result.status = "empty"
        result.warnings.append("empty file (0 bytes): nothing written yet")
    return result


def _binary_check(sample: bytes, result: TailResult) -> bool:
    from ml_debug_mcp.core.logs.metrics import is_binary

    if is_binary(sample):
        result.status = "binary"
        hint = " (a TensorBoard event file: use read_metrics)" if "tfevents" in result.path else ""
        result.warnings.append(f"binary file: it holds NUL/control bytes, not text lines{hint}")
        return True
    return False


def _tail_backward(fh, st: os.stat_result, n: int, pattern: re.Pattern[str] | None, around: int,
                   result: TailResult) -> None:
    size = st.st_size
    if size == 0:
        result.next_cursor = _encode_cursor(_Cursor(dev=st.st_dev, ino=st.st_ino, offset=0, crc=zlib.crc32(b"")))
        return
    if pattern is None:
        need = n + 1
        start, data = _read_backward(fh, size, lambda chunks, nl: nl >= need, LOOKBACK_BYTES)
    else:
        start, data = _grep_window(fh, size, n, pattern, around)
    result.searched_bytes = len(data)
    if _binary_check(data[-65536:], result):
        result.next_cursor = _encode_cursor(_Cursor(dev=st.st_dev, ino=st.st_ino, offset=size,
                                                    crc=_fingerprint(fh, size)))
        return
    first_cut = False
    if start > 0:
        nl = data.find(b"\n", 0, len(data) - 1)  # a final newline ends a line; it starts none
        if nl < 0:
            first_cut = True  # one line longer than the lookback: its start is out of reach
            result.truncated = True
            result.truncation.append(f"the last line is longer than {len(data)} bytes; its start was not read")
        else:
            data, start = data[nl + 1:], start + nl + 1
    if first_cut:
        complete, partial = ([], (start, data)) if not data.endswith(b"\n") else ([(start, data[:-1])], None)
    else:
        complete, partial = _split_complete(data, start)
        if pattern is None and start > 0 and len(complete) < n:
            result.truncated = True
            result.truncation.append(f"only {len(complete)} lines fit in the last {LOOKBACK_BYTES >> 20} MB: the "
                                     "line before them is longer, so it and earlier lines were not read")
    cursor_offset = partial[0] if partial else size
    result.next_cursor = _encode_cursor(_Cursor(dev=st.st_dev, ino=st.st_ino, offset=cursor_offset,
                                                crc=_fingerprint(fh, cursor_offset)))
    selected = _select(complete, n, pattern, around, result, keep="last")
    base_line = _line_base(fh, selected[0][0] if selected else cursor_offset, result)
    _emit(selected, partial, base_line, result, keep="last", complete=complete)
    if pattern is not None and start > 0 and (result.matches or 0) < n:
        result.warnings.append(f"searched the last {len(data)} bytes (limit {GREP_LOOKBACK_BYTES}); "
                               "earlier matches, if any, were not read")


def _grep_window(fh, size: int, n: int, pattern: re.Pattern[str], around: int) -> tuple[int, bytes]:
    """Grow a window backwards until it holds n matching lines (plus context) or hits the limit."""
    state = {"checked_upto": 0}

    def enough(chunks: list[bytes], _newlines: int) -> bool:
        total = sum(len(c) for c in chunks)
        if total < state["checked_upto"] * 2 and total < GREP_LOOKBACK_BYTES:
            return False  # re-scan only each time the window has doubled
        state["checked_upto"] = total
        data = b"".join(reversed(chunks))
        text = data.decode("utf-8", "replace")
        lines = text.split("\n")[1:]  # the first is probably cut
        hits = sum(1 for ln in lines if pattern.search(ln[:65536]))
        return hits >= n + 1 or (hits >= n and around == 0)

    return _read_backward(fh, size, enough, GREP_LOOKBACK_BYTES)


def _select(complete: list[tuple[int, bytes]], n: int, pattern: re.Pattern[str] | None, around: int,
            result: TailResult, keep: Literal["first", "last"]) -> list[tuple[int, bytes, bool | None, bool]]:
    """(offset, raw, match, gap_before) of the lines to show."""
    if pattern is None:
        chosen = complete[-n:] if keep == "last" else complete[:n]
        return [(off, raw, None, False) for off, raw in chosen]
    hits = [i for i, (_, raw) in enumerate(complete)
            if pattern.search(raw[:65536].decode("utf-8", "replace"))]
    result.matches = len(hits)
    hits = hits[-n:] if keep == "last" else hits[:n]
    wanted: dict[int, bool] = {}
    for i in hits:
        for j in range(max(0, i - around), min(len(complete), i + around + 1)):
            wanted.setdefault(j, False)
        wanted[i] = True
    out = []
    prev = None
    for j in sorted(wanted):
        off, raw = complete[j]
        out.append((off, raw, wanted[j], prev is not None and j != prev + 1))
        prev = j
    return out


def _line_base(fh, first_offset: int, result: TailResult) -> int | None:
    if first_offset > ABSOLUTE_LINE_LIMIT:
        return None
    result.line_numbering = "absolute"
    return _count_newlines(fh, first_offset) + 1


def _emit(selected: list[tuple[int, bytes, bool | None, bool]], partial: tuple[int, bytes] | None,
          base_line: int | None, result: TailResult, keep: Literal["first", "last"],
          complete: list[tuple[int, bytes]]) -> int:
    """Fill result.lines within MAX_OUTPUT_CHARS; returns how many selected lines were kept."""
    index_of = {off: i for i, (off, _) in enumerate(complete)} if base_line is not None else {}
    first_index = index_of.get(selected[0][0], 0) if selected else 0
    rendered: list[TailLine] = []
    for off, raw, match, gap in selected:
        text, cut, rewritten, bad = _display(raw)
        result.decode_errors = result.decode_errors or bad
        line_no = None
        if base_line is not None:
            line_no = base_line + index_of.get(off, first_index) - first_index
        rendered.append(TailLine(offset=off, line_no=line_no, text=text, cut=cut, rewritten=rewritten,
                                 match=match, gap_before=gap))
    total = sum(len(t.text) + 1 for t in rendered)
    dropped = 0
    if total > MAX_OUTPUT_CHARS:
        kept: list[TailLine] = []
        budget = MAX_OUTPUT_CHARS
        ordered = reversed(rendered) if keep == "last" else iter(rendered)
        for line in ordered:
            if budget - (len(line.text) + 1) < 0:
                break
            budget -= len(line.text) + 1
            kept.append(line)
        dropped = len(rendered) - len(kept)
        rendered = list(reversed(kept)) if keep == "last" else kept
        result.truncated = True
        which = "oldest" if keep == "last" else "last"
        result.truncation.append(f"output capped at {MAX_OUTPUT_CHARS} characters: the {which} {dropped} lines "
                                 "were left out")
    result.lines = rendered
    if partial is not None:
        off, raw = partial
        text, cut, rewritten, bad = _display(raw)
        result.decode_errors = result.decode_errors or bad
        line_no = None
        if base_line is not None and rendered and rendered[-1].line_no is not None:
            gap = sum(1 for o, _ in complete if o > rendered[-1].offset)
            line_no = rendered[-1].line_no + gap + 1
        result.partial_line = TailLine(offset=off, line_no=line_no, text=text, cut=cut, rewritten=rewritten)
    return len(rendered)


def _tail_forward(fh, st: os.stat_result, cursor: _Cursor, n: int, pattern: re.Pattern[str] | None, around: int,
                  result: TailResult) -> None:
    size = st.st_size
    start = cursor.offset
    midline = cursor.midline
    if (st.st_dev, st.st_ino) != (cursor.dev, cursor.ino):
        result.reset, start, midline = "rotated", 0, False
        result.reset_reason = ("the path now names a different file (new inode): the log was rotated or "
                               "recreated; reading the new file from its start")
    elif size < cursor.offset:
        result.reset, start, midline = "truncated", 0, False
        result.reset_reason = (f"the file shrank from at least {cursor.offset} to {size} bytes (truncated); "
                               "reading again from its start")
    elif _fingerprint(fh, cursor.offset) != cursor.crc:
        result.reset, start, midline = "rewritten", 0, False
        result.reset_reason = ("the bytes before the cursor changed (the file was truncated and rewritten, e.g. "
                               "copytruncate); reading again from its start")
    fh.seek(start)
    data = fh.read(min(FORWARD_BYTES, size - start))
    result.searched_bytes = len(data)
    if _binary_check(data[:65536], result):
        result.next_cursor = _encode_cursor(_Cursor(dev=st.st_dev, ino=st.st_ino, offset=size,
                                                    crc=_fingerprint(fh, size)))
        return
    if midline:  # the previous poll stopped inside an over-long line: skip to its end
        nl = data.find(b"\n")
        if nl < 0:
            end = start + len(data)
            result.next_cursor = _encode_cursor(_Cursor(dev=st.st_dev, ino=st.st_ino, offset=end,
                                                        crc=_fingerprint(fh, end), midline=True))
            result.has_more = end < size
            return
        data, start = data[nl + 1:], start + nl + 1
    complete, partial = _split_complete(data, start)
    reached_limit = start + len(data) < size
    new_midline = False
    if not complete and partial is not None and reached_limit:
        # A single line longer than one poll: show its head, continue after it next time.
        off, raw = partial
        complete, partial, new_midline = [(off, raw)], None, True
        result.truncated = True
        result.truncation.append(f"a line longer than {FORWARD_BYTES} bytes was cut")
    if partial is not None and reached_limit:
        partial = None  # not the end of the file: the rest of that line comes with the next poll
    selected = _select(complete, n, pattern, around, result, keep="first")
    base_line = _line_base(fh, selected[0][0] if selected else start, result)
    kept = _emit(selected, partial, base_line, result, keep="first", complete=complete)
    if pattern is None or kept < len(selected) or (result.matches or 0) > n:
        # Stop right after the last line shown; the rest comes with the next poll.
        shown = selected[:kept]
        end = (shown[-1][0] + len(shown[-1][1]) + 1) if shown else start
        more_lines = (len(complete) > len(shown)) if pattern is None else True
    else:
        # A grep poll that showed every match consumes every complete line it scanned.
        end = complete[-1][0] + len(complete[-1][1]) + 1 if complete else start
        more_lines = False
    if new_midline:
        end = start + len(data)
    result.has_more = more_lines or reached_limit or new_midline
    result.next_cursor = _encode_cursor(_Cursor(dev=st.st_dev, ino=st.st_ino, offset=end,
                                                crc=_fingerprint(fh, end), midline=new_midline))
    if result.partial_line is not None and result.has_more:
        result.partial_line = None


_SCAN_CACHE: OrderedDict[tuple, tuple] = OrderedDict()
_SCAN_CACHE_SIZE = 64
_SCAN_CACHE_LOCK = threading.Lock()


def _scan_cached(fh, st: os.stat_result, region_start: int, fmt: str | None, path: Path, result: TailResult) -> None:
    """`_scan_tail_region`, remembered per (device, inode, size, mtime, region): an agent polling a log that
    has not changed, or several agents watching one run, pay for the analysis once."""
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, region_start, fmt, str(path))
    with _SCAN_CACHE_LOCK:
        hit = _SCAN_CACHE.get(key)
        if hit is not None:
            _SCAN_CACHE.move_to_end(key)
    if hit is None:
        before = len(result.warnings)
        _scan_tail_region(fh, st.st_size, region_start, fmt, path, result)
        hit = (result.format, [m.model_copy(deep=True) for m in result.metrics], [e.model_copy(deep=True) for e in result.errors],
               result.warnings[before:])
        with _SCAN_CACHE_LOCK:
            _SCAN_CACHE[key] = hit
            while len(_SCAN_CACHE) > _SCAN_CACHE_SIZE:
                _SCAN_CACHE.popitem(last=False)
        return
    result.format = hit[0]
    result.metrics = [m.model_copy(deep=True) for m in hit[1]]
    result.errors = [e.model_copy(deep=True) for e in hit[2]]
    result.warnings += hit[3]


def _scan_tail_region(fh, size: int, region_start: int, fmt: str | None, path: Path, result: TailResult) -> None:
    """Errors (from the last ERROR_SCAN_BYTES, or the region if larger) and last metric values (region)."""
    if size == 0:
        result.format = fmt or "unknown"
        return
    start = max(0, min(region_start, size - ERROR_SCAN_BYTES))
    fh.seek(start)
    data = fh.read(size - start)
    if start > 0:
        nl = data.find(b"\n")
        data, start = (data[nl + 1:], start + nl + 1) if nl >= 0 else (b"", size)
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    offsets = []
    off = start
    for raw in raw_lines:
        offsets.append(off)
        off += len(raw) + 1
    texts = [raw.decode("utf-8", "replace") for raw in raw_lines]
    base = None
    numbering: Literal["file", "scan_window"] = "scan_window"
    if start <= ABSOLUTE_LINE_LIMIT:
        base = _count_newlines(fh, start) + 1
        numbering = "file"
    result.errors = extract_errors(texts, base or 1, numbering, offsets)
    first = next((i for i, o in enumerate(offsets) if o >= region_start), len(texts))
    # The shown lines first; when they hold no metric (a crash's traceback fills them), the lines above them.
    windows = [texts[first:]] + ([texts[max(0, first - METRIC_LOOKBACK_LINES):first]] if first > 0 else [])
    for region in windows:
        result.format, parsed = _region_metrics(fh, region, fmt, path)
        if parsed is not None and parsed.series:
            break
    else:
        return
    if region is not windows[0]:
        result.warnings.append(f"no metric in the lines shown: last values are from the {len(region)} lines before "
                               "them")
    # HF console lines carry no step: the parser counts records, which in a tail window is not the run's step.
    steps_known = result.format not in _RECORD_INDEX_STEP_FORMATS
    for s in parsed.series:
        st = s.stats
        kind = None
        if st.last_value is None and st.count:
            kind = s.nonfinite[-1].kind if s.nonfinite else "nan"
        result.metrics.append(MetricValue(name=s.name, rank=s.rank, step=st.last_step if steps_known else None,
                                          value=st.last_value,
                                          nonfinite=kind))


def _region_metrics(fh, region: list[str], fmt: str | None, path: Path) -> tuple[str, ParsedLog | None]:
    """(format, parsed metrics) of some lines of the file; None when the format carries no text metrics."""
    from ml_debug_mcp.core.logs.metrics import detect_text_format, parse_metrics_text

    header = None
    if fmt is None:
        fmt = _format_by_name(path) or detect_text_format(region[-FORMAT_SAMPLE_LINES:])
        if fmt in ("unknown", "keyvalue"):
            header = _csv_header(fh, region)
            if header is not None:
                fmt = "lightning_csv" if {"epoch", "step"} <= set(header.split(",")) else "csv"
    elif fmt in ("csv", "lightning_csv"):
        header = _csv_header(fh, region, check=False)
    if fmt in ("tensorboard", "binary", "hf_trainer_state", "unknown", "mlflow") or not region:
        return fmt, None
    if fmt in ("csv", "lightning_csv") and header is not None:
        region = [header] + [t for t in region if t != header]
    return fmt, parse_metrics_text("\n".join(region), fmt=fmt, max_points=16)


def _format_by_name(path: Path) -> str | None:
    if path.name == "trainer_state.json":
        return "hf_trainer_state"
    if "tfevents" in path.name:
        return "tensorboard"
    return None


def _csv_header(fh, region: list[str], check: bool = True) -> str | None:
    """The file's first line when it is a CSV/TSV header the tail rows fit, else None."""
    from ml_debug_mcp.core.logs.formats.tables import looks_like_csv

    fh.seek(0)
    header = fh.readline(65536).decode("utf-8", "replace").rstrip("\r\n")
    if not header:
        return None
    if not check:
        return header
    return header if looks_like_csv([header] + region[-20:]) else None
