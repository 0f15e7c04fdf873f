"""Metric series from a training log, whatever wrote it: the entry points of the parsing library.

`parse_metrics(path)` sniffs the format from the first KBs (or takes `fmt`), streams the whole
file in bounded memory and returns a `ParsedLog` of downsampled series with exact stats.
Unreadable, binary or unknown input gives a `ParsedLog` with warnings, never an exception;
only an unknown `fmt` id (a caller error) raises.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from ml_debug_mcp.core.logs.formats.common import Collector, iter_file_blocks, iter_file_lines, strip_rank_prefix
from ml_debug_mcp.core.logs.formats.bulk import parse_text_blocks
from ml_debug_mcp.core.logs.formats.stores import (looks_like_event_file, looks_like_trainer_state, parse_tensorboard,
                                            parse_trainer_state, read_mlflow_run, resolve_run_dir,
                                            trainer_state_records)
from ml_debug_mcp.core.logs.formats.tables import (is_lightning_header, looks_like_csv, looks_like_mlflow_metric,
                                             parse_csv_lines, parse_mlflow_metric_lines)
from ml_debug_mcp.core.logs.formats.registry import FORMATS, LINE_PARSERS, classify_line, table_rows
from ml_debug_mcp.core.logs.formats.text import last_segment
from ml_debug_mcp.core.logs.normalize import looks_decorated, normalize_text
from ml_debug_mcp.core import safe_fs
from ml_debug_mcp.core.logs.series import ParsedLog

SNIFF_BYTES = 64 << 10
INTERNAL_ERROR = "internal parser error"
BULK_MIN_BYTES = 1 << 20  # below this, template learning costs more than it saves
SNIFF_LINES = 400


def _read_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    return safe_fs.read_bytes(path, size)


def is_binary(head: bytes) -> bool:
    """Mostly NUL or control bytes: not a text log.

    A share, not any NUL: a log line that prints a padded sample (`'<pad>\\x00'`) or a few NULs left by a
    crash must not hide the text (and the traceback) around it.
    """
    if not head:
        return False
    window = head[:4096]
    odd = sum(1 for b in window if b < 32 and b not in (9, 10, 12, 13, 27, 8))  # NUL and other control bytes
    odd += window.decode("utf-8", "replace").count("\ufffd")  # bytes that are no UTF-8 at all
    return odd > len(window) * 0.1 or head.count(b"\x00") > len(head) * 0.1


def detect_text_format(lines: Iterable[str], name: str = "") -> str:
    """The dominant format among sample lines (text content only, no file-system clues)."""
    sample = []
    for line in lines:
        sample.append(line)
        if len(sample) >= SNIFF_LINES:
            break
    if not sample:
        return "unknown"
    stripped = [strip_rank_prefix(ln)[1] for ln in sample]
    if looks_like_mlflow_metric(stripped):
        return "mlflow"
    if looks_like_csv(stripped):
        first = next(ln for ln in stripped if ln.strip())
        if name == "metrics.csv" or is_lightning_header(first):
            return "lightning_csv"
        return "csv"
    votes: Counter[str] = Counter()
    for line in stripped:
        fmt = classify_line(last_segment(line))
        if fmt:
            votes[fmt] += 1
    rows = table_rows(stripped)
    if rows >= 2 and rows >= sum(votes.values()):
        return "table"
    if not votes:
        return "unknown"
    # Specific formats win over generic key/value lines when they are a real share of the sample.
    specific = [(n, f) for f, n in votes.items() if f != "keyvalue"]
    if specific:
        n, fmt = max(specific)
        if n * 3 >= votes.get("keyvalue", 0):
            return fmt
    return votes.most_common(1)[0][0]


def detect_format(path: Path) -> str:
    """Format id (a key of FORMATS) of a log file or run directory, from its content."""
    path = Path(path)
    try:
        if path.is_dir():
            found = resolve_run_dir(path)
            return found[0] if found else "unknown"
        if path.name == "trainer_state.json":
            return "hf_trainer_state"
        if "tfevents" in path.name:
            return "tensorboard"
        if not path.is_file():
            return "unknown"
        head = _read_head(path)
    except OSError:
        return "unknown"
    if looks_like_event_file(head):
        return "tensorboard"
    if is_binary(head):
        return "binary"
    if looks_like_trainer_state(head):
        return "hf_trainer_state"
    text = head.decode("utf-8", "replace")
    lines = text.split("\n")
    if len(head) == SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one is probably cut
    fmt = detect_text_format(lines, path.name)
    if fmt == "jsonl" and path.name == "wandb-history.jsonl":
        return "wandb"
    return fmt


def _check_fmt(fmt: str | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"Unknown format '{fmt}'. Use one of: {', '.join(sorted(FORMATS))}, "
                         "or leave it empty to auto-detect.")


def parse_lines(lines: Iterable[str], fmt: str, collector: Collector, name: str = "") -> None:
    """Feed text lines to the parser for `fmt` (a text format id)."""
    if fmt in ("csv", "lightning_csv"):
        parse_csv_lines(lines, collector, lightning=fmt == "lightning_csv")
        return
    if fmt == "mlflow":
        parse_mlflow_metric_lines(lines, name or "value", collector)
        return
    parser_cls = LINE_PARSERS.get(fmt)
    if parser_cls is None:  # unknown/binary: count lines, nothing to extract
        for _ in lines:
            collector.lines += 1
        return
    parser = parser_cls(collector)
    feed = parser.feed
    for raw in lines:
        collector.lines += 1
        rank, line = strip_rank_prefix(raw)
        if "\r" in line or "\b" in line:
            line = last_segment(line)
        if not line or line.isspace():
            continue
        if not feed(line, rank):
            collector.unparsed += 1
    parser.finish()


def parse_metrics_text(text: str, fmt: str | None = None, max_points: int = 2000) -> ParsedLog:
    """Parse metrics from log text already in memory (pasted output, a tail window).

    A small decorated text (a paste: markdown, quotes, logger prefixes) is also read cleaned
    (`normalize_text`), and the reading with more records wins.
    """
    _check_fmt(fmt)
    if text is None:
        text = ""
    parsed = _parse_text(text, fmt, max_points)
    if fmt is None and len(text) <= BULK_MIN_BYTES and looks_decorated(text):
        cleaned = _parse_text(normalize_text(text), None, max_points)
        if cleaned.records > parsed.records:
            cleaned.bytes_scanned = parsed.bytes_scanned
            return cleaned
    return parsed


def _parse_text(text: str, fmt: str | None, max_points: int) -> ParsedLog:
    collector = Collector(max_points)
    collector.bytes = len(text.encode("utf-8", "replace"))
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if fmt is None:
        stripped = text.lstrip()
        if stripped.startswith("{") and '"log_history"' in stripped[:SNIFF_BYTES]:
            fmt = "hf_trainer_state"
        else:
            fmt = detect_text_format(lines)
    try:
        if fmt == "hf_trainer_state":
            trainer_state_records(text, collector)
        elif fmt in ("tensorboard", "binary"):
            collector.warn(f"format '{fmt}' needs a file path, not text")
        elif fmt in LINE_PARSERS:
            data = text.encode("utf-8", "replace")
            parse_text_blocks([(0, data)], fmt, collector, bulk=len(data) > BULK_MIN_BYTES)
        else:
            parse_lines(lines, fmt, collector)
    except Exception as exc:  # see parse_metrics
        collector.warn(f"{INTERNAL_ERROR} ({type(exc).__name__}: {exc}); the series are partial")
    if fmt == "unknown":
        collector.warn("no known metric format recognised in this text")
    return collector.result(fmt)


def parse_metrics(path: Path, fmt: str | None = None, max_points: int = 2000,
                  progress: Callable[[float, float | None, str | None], None] | None = None) -> ParsedLog:
    """Parse every metric of a log file or run directory into bounded series with exact stats.

    `progress(bytes_read, total_bytes, message)`, when given, is called after every block read.
    `fmt` overrides detection (a key of FORMATS). A directory is recognised as a run directory
    (HF output dir, Lightning version dir, MLflow run, W&B run, TensorBoard logdir); otherwise
    its newest log-like file is read.
    """
    _check_fmt(fmt)
    path = Path(path)
    collector = Collector(max_points, progress=progress)
    target = path
    if not path.exists():
        collector.warn(f"{path} does not exist")
        return collector.result("unknown", str(path))
    if path.is_dir():
        found = resolve_run_dir(path)
        if found is not None:
            dir_fmt, target, notes = found
            for note in notes:
                collector.warn(note)
            fmt = fmt or dir_fmt
        elif fmt != "tensorboard":
            from ml_debug_mcp.core.logs.tail import list_logs

            logs = [info for info in list_logs(path) if info.kind == "log"]
            if not logs:
                collector.warn(f"{path} is a directory with no recognised run layout and no log files")
                return collector.result("unknown", str(path))
            target = Path(logs[0].path)
            collector.warn(f"{path} is a directory; read its newest log file {target.name}")
    if not target.is_dir() and not target.is_file():
        collector.warn(f"{target} is not a regular file (a FIFO, socket or device); it is not read")
        return collector.result("unknown", str(target))
    if target != path:  # found inside the folder: read its real path, checked to stay inside
        real = safe_fs.confine(path, target)
        if real is None:
            collector.warn(f"skipped {target.name}: it is a link that leads outside {path}")
            return collector.result(fmt or "unknown", str(path))
        target = real
    pasted = None
    if fmt is None:
        fmt = detect_format(target)
        if fmt in LINE_PARSERS or fmt == "unknown":
            pasted = _read_pasted(target)
    if pasted is not None:  # a small decorated file: read as a paste (see parse_metrics_text)
        parsed = parse_metrics_text(pasted, max_points=max_points)
        parsed.path = str(target)
        return parsed
    try:
        _parse_target(target, fmt, collector)
    except OSError as exc:
        collector.warn(f"read error: {exc.strerror or exc}")
    except Exception as exc:  # a parser bug must not take the tool down; say so, keep what was read
        collector.warn(f"{INTERNAL_ERROR} ({type(exc).__name__}: {exc}); the series are partial")
    return collector.result(fmt, str(target))


def _read_pasted(target: Path) -> str | None:
    """The text of a small file that carries paste decoration (markdown, quotes, logger prefixes), else None."""
    try:
        with safe_fs.open_read(target) as fh:
            if os.fstat(fh.fileno()).st_size > BULK_MIN_BYTES:
                return None
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    return text if looks_decorated(text) else None


def _parse_target(target: Path, fmt: str, collector: Collector) -> None:
    if fmt == "tensorboard":
        parse_tensorboard(target, collector)
    elif fmt == "hf_trainer_state":
        parse_trainer_state(target, collector)
    elif fmt == "mlflow" and target.is_dir():
        read_mlflow_run(target, collector)
    elif fmt == "binary":
        collector.bytes = target.stat().st_size
        collector.warn("binary file: it holds NUL/control bytes, not text log lines")
    elif target.is_dir():
        collector.warn(f"format '{fmt}' needs a file; {target.name} is a directory")
    else:
        if target.stat().st_size == 0:
            collector.warn("empty file (0 bytes)")
        name = target.name
        if fmt == "mlflow":  # a key logged as "train/loss" lives at metrics/train/loss
            for ancestor in target.parents:
                if ancestor.name == "metrics":
                    name = target.relative_to(ancestor).as_posix()
                    break
        if fmt in LINE_PARSERS:
            parse_text_blocks(iter_file_blocks(target, collector), fmt, collector)
        else:
            parse_lines(iter_file_lines(target, collector), fmt, collector, name=name)
        if fmt == "unknown":
            collector.warn("no known metric format recognised; the file was scanned but no series extracted")
