"""Find the errors in log text and cut each one out whole.

A Python traceback runs from "Traceback (most recent call last):" through its frames to the
exception line and that message's continuation (CUDA errors print several lines), and chained
tracebacks ("During handling of the above exception..." / "The above exception was the direct
cause...") stay one block whose exception is the last raised. Lines outside tracebacks that are
errors on their own (CUDA/NCCL messages, the kernel OOM killer, `Killed`, exit codes, torchrun's
ChildFailedError summary) become blocks too. torchrun's `[rankN]:` prefixes are followed, so
interleaved ranks do not cut each other's tracebacks.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core.logs.formats.common import ANSI_RE, strip_rank_prefix

ErrorKind = Literal["python_traceback", "cuda_oom", "cuda_error", "nccl_timeout", "nccl_error",
                    "oom_killed", "torchrun_child_failed", "exit_code", "signal"]

MAX_BLOCK_LINES = 60
MAX_BLOCK_CHARS = 8000
MAX_BLOCKS = 20
MAX_MESSAGE_CHARS = 500
_CONTINUATION_LIMIT = 40


class ErrorBlock(BaseModel):
    """One error, whole: its kind, where it is, the exception and the text (bounded)."""

    kind: ErrorKind
    first_line: int = Field(description="1-based line number of the block's first line (see `numbering`)")
    last_line: int
    exception_type: str | None = None
    message: str = ""
    text: str
    rank: int | None = None
    repeats: int = Field(1, description="How many identical blocks (same kind, type, message) were folded into this one")
    text_truncated: bool = False
    numbering: Literal["file", "text", "scan_window"] = Field(
        "text", description="file: line numbers in the file; text: in the text given; scan_window: in the region a tail scanned")
    first_offset: int | None = Field(None, description="Byte offset of the first line in the file, when known")


# --- patterns ----------------------------------------------------------------------------------
_TRACEBACK_HEAD = "Traceback (most recent call last):"
_CHAIN_MARKERS = ("During handling of the above exception, another exception occurred:",
                  "The above exception was the direct cause of the following exception:")
_EXC_LINE_RE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
_LOG_RECORD_RE = re.compile(r"^(?:\[?\d{4}-\d{2}-\d{2}[ T]\d|\[?[IWEF]\d{4} |\d+/\d+ |\{'|iter \d|step \d|Epoch \d)")

_LINE_RULES: list[tuple[ErrorKind, re.Pattern[str]]] = [
    ("cuda_oom", re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|"
                            r"out of memory on device|HIP out of memory|MPS backend out of memory", re.I)),
    ("nccl_timeout", re.compile(r"Watchdog caught collective operation timeout|collective operation timeout|"
                                r"NCCL (?:communicator|watchdog).{0,80}time[d ]?out|ran for \d+ milliseconds before timing out|"
                                r"DistStoreError: .*[Tt]imed? ?out|Socket Timeout")),
    ("nccl_error", re.compile(r"NCCL error|ncclInternalError|ncclUnhandledCudaError|ncclSystemError|"
                              r"ncclInvalidUsage|ncclRemoteError|NCCL WARN|DistBackendError|"
                              r"ProcessGroupNCCL.*(?:error|abort)", re.I)),
    ("cuda_error", re.compile(r"device-side assert triggered|CUDA error|CUBLAS_STATUS_\w+|CUDNN_STATUS_\w+|"
                              r"cuDNN error|illegal memory access|unspecified launch failure|"
                              r"Assertion `.*` failed|CUDA driver version is insufficient|no CUDA-capable device")),
    ("oom_killed", re.compile(r"^\s*Killed\s*$|Out of memory: Kill(?:ed)? process|oom-kill|oom_reaper|"
                              r"Killed process \d+|Memory cgroup out of memory")),
    ("signal", re.compile(r"Segmentation fault|Bus error|Aborted \(core dumped\)|core dumped|"
                          r"[Ss]ignal \d+ \(SIG[A-Z]+\) received|died with <Signals\.SIG[A-Z]+|"
                          r"terminated by signal|SIGSEGV|SIGKILL|SIGABRT|Fatal Python error")),
    ("exit_code", re.compile(r"exit(?:ed)? (?:with )?(?:code|status)[: =]*-?\d+|exitcode\s*:\s*-?\d+|"
                             r"returned non-zero exit status -?\d+|Process finished with exit code -?[1-9]\d*|"
                             r"failed with (?:exit )?code -?\d+|exit status -?[1-9]\d*", re.I)),
]
_ZERO_EXIT_RE = re.compile(r"(?:code|status|exitcode)\s*[: =]*\s*0\b(?!\.)", re.I)
# Lowercase words at least one of which every rule needs: a cheap literal search finds the few
# lines worth testing against the rules (most log lines hold no error at all).
_RULE_KEYWORDS = ("memory", "cublas", "cudnn", "cuda", "watchdog", "timeout", "timing out", "timed out",
                  "time out", "nccl", "distbackend", "assert", "launch failure", "kill", "oom", "fault",
                  "bus error", "abort", "dumped", "signal", "sig", "fatal python", "exit", "status", "failed with")


def _kind_of_text(text: str) -> ErrorKind | None:
    for kind, pattern in _LINE_RULES:
        if pattern.search(text):
            if kind == "exit_code" and _ZERO_EXIT_RE.search(text):
                continue
            return kind
    return None


def _is_frame_line(text: str) -> bool:
    return text[:1] in (" ", "\t", "|", "+") or text.startswith("[Previous line repeated")


def _bounded_text(lines: list[str]) -> tuple[str, bool]:
    """Keep the head and the end of a long block: the end is where the exception is."""
    truncated = False
    if len(lines) > MAX_BLOCK_LINES:
        head, tail = lines[:15], lines[-(MAX_BLOCK_LINES - 16):]
        lines = head + [f"... [{len(lines) - len(head) - len(tail)} lines omitted] ..."] + tail
        truncated = True
    lines = [ln if len(ln) <= 1000 else ln[:1000] + " ...[line cut]" for ln in lines]
    text = "\n".join(lines)
    if len(text) > MAX_BLOCK_CHARS:
        text = text[:2000] + "\n... [cut] ...\n" + text[-(MAX_BLOCK_CHARS - 2100):]
        truncated = True
    return text, truncated


def _parse_exception_line(text: str) -> tuple[str | None, str]:
    m = _EXC_LINE_RE.match(text.strip())
    if m and (":" in text or m.group(1)[:1].isupper()):
        return m.group(1), (m.group(2) or "").strip()
    return None, text.strip()


class _Stream:
    """The lines of one rank (or the unprefixed lines), with their positions in the input."""

    def __init__(self, rank: int | None) -> None:
        self.rank = rank
        self.texts: list[str] = []
        self.positions: list[int] = []


def _split_streams(lines: Sequence[str]) -> list[_Stream]:
    streams: dict[int | None, _Stream] = {}
    for i, raw in enumerate(lines):
        rank, text = strip_rank_prefix(raw)
        if "\x1b" in text:
            text = ANSI_RE.sub("", text)
        text = text.rstrip("\r\n")
        if "\r" in text:
            text = text.rsplit("\r", 1)[-1] or text
        stream = streams.get(rank)
        if stream is None:
            stream = streams[rank] = _Stream(rank)
        stream.texts.append(text)
        stream.positions.append(i)
    return list(streams.values())


def _next_nonblank(texts: list[str], i: int, window: int = 3) -> str:
    for j in range(i, min(len(texts), i + window)):
        if texts[j].strip():
            return texts[j].strip()
    return ""


def _scan_traceback(texts: list[str], start: int) -> tuple[int, str | None, str]:
    """From a Traceback header: (index just after the block, exception type, message).

    Chained tracebacks continue the block; the exception reported is the last one raised.
    """
    n = len(texts)
    i = start + 1
    exc_type: str | None = None
    message = ""
    while True:
        while i < n and (_is_frame_line(texts[i]) or (not texts[i].strip() and i + 1 < n
                                                       and _is_frame_line(texts[i + 1]))):
            i += 1
        if i >= n:
            return i, exc_type, message  # cut before its exception line (the window ended)
        exc_type, message = _parse_exception_line(texts[i])
        i += 1
        child_failed = bool(exc_type and exc_type.endswith("ChildFailedError"))
        limit = _CONTINUATION_LIMIT if child_failed else 12
        rules = 0
        extra = 0
        chained = False
        while i < n and extra < limit:
            t = texts[i]
            stripped = t.strip()
            if t.startswith(_TRACEBACK_HEAD) or _LOG_RECORD_RE.match(t):
                break
            if stripped in _CHAIN_MARKERS:
                j = i + 1
                while j < n and not texts[j].strip():
                    j += 1
                if j < n and texts[j].startswith(_TRACEBACK_HEAD):
                    i, chained = j + 1, True
                else:
                    i = j
                break
            if not stripped:
                if _next_nonblank(texts, i + 1) in _CHAIN_MARKERS:
                    i += 1
                    continue
                break
            if child_failed and stripped.startswith("=") and set(stripped) == {"="}:
                rules += 1
                if rules == 2:  # the summary is framed by two "=====" rules
                    i += 1
                    break
            i += 1
            extra += 1
        if not chained:
            return i, exc_type, message


def _classify_traceback(exc_type: str | None, message: str, body: str) -> ErrorKind:
    if exc_type and exc_type.endswith("ChildFailedError"):
        return "torchrun_child_failed"
    kind = _kind_of_text(f"{exc_type or ''}: {message}") or _kind_of_text(body[-3000:])
    if kind in ("cuda_oom", "cuda_error", "nccl_timeout", "nccl_error"):
        return kind
    return "python_traceback"


def extract_errors(lines: Sequence[str], first_line_no: int = 1,
                   numbering: Literal["file", "text", "scan_window"] = "text",
                   offsets: Sequence[int] | None = None) -> list[ErrorBlock]:
    """Every error in `lines`, in order of appearance, at most MAX_BLOCKS (the latest kept).

    `first_line_no` is the number of lines[0] in the caller's numbering; `offsets`, when given,
    are the byte offsets of the lines in their file.
    """
    blocks: list[tuple[int, ErrorBlock]] = []
    if not _may_hold_errors(lines):
        return []
    for stream in _split_streams(lines):
        texts, pos = stream.texts, stream.positions
        candidates = _candidate_lines(texts)
        i = 0
        n = len(texts)
        while i < n:
            text = texts[i]
            if text.startswith(_TRACEBACK_HEAD) or (text.lstrip().startswith(_TRACEBACK_HEAD)
                                                     and len(text) - len(text.lstrip()) < 40):
                end, exc_type, message = _scan_traceback(texts, i)
                body_lines = texts[i:end]
                while body_lines and not body_lines[-1].strip():
                    body_lines.pop()
                    end -= 1
                body, cut = _bounded_text(body_lines)
                kind = _classify_traceback(exc_type, message, body)
                if kind == "torchrun_child_failed":
                    message = _child_failed_message(body_lines) or message
                blocks.append((pos[i], _block(kind, pos[i], pos[max(i, end - 1)], exc_type, message, body, cut,
                                              stream.rank, first_line_no, numbering, offsets)))
                i = max(end, i + 1)
                continue
            kind = _kind_of_text(text) if i in candidates else None
            if kind is not None:
                exc_type, message = _parse_exception_line(text)
                if exc_type and " " in exc_type:
                    exc_type = None
                body, cut = _bounded_text([text])
                blocks.append((pos[i], _block(kind, pos[i], pos[i], exc_type, message or text.strip(), body, cut,
                                              stream.rank, first_line_no, numbering, offsets)))
            i += 1
    blocks.sort(key=lambda item: item[0])
    return _fold_repeats([b for _, b in blocks])[-MAX_BLOCKS:]


@functools.cache
def _keyword_finder() -> Any:
    """The traceback head and every rule keyword as one RE2 automaton: one linear pass, not one per word."""
    import re2

    words = [_TRACEBACK_HEAD.lower(), *_RULE_KEYWORDS]
    return re2.compile("(?i)" + "|".join(re.escape(word) for word in words))


def _may_hold_errors(lines: Sequence[str]) -> bool:
    """One pass over everything: most tails of healthy logs hold no error word at all."""
    return _keyword_finder().search("\n".join(lines)) is not None


def _candidate_lines(texts: list[str]) -> set[int]:
    """Indexes of lines holding a rule keyword (keywords never span lines, so each such line has a match)."""
    hits = [m.start() for m in _keyword_finder().finditer("\n".join(texts))]
    if not hits:
        return set()
    starts = [0]
    for text in texts[:-1]:
        starts.append(starts[-1] + len(text) + 1)
    return {bisect.bisect_right(starts, h) - 1 for h in hits}


def _block(kind: ErrorKind, first: int, last: int, exc_type: str | None, message: str, text: str, cut: bool,
           rank: int | None, base: int, numbering: Literal["file", "text", "scan_window"],
           offsets: Sequence[int] | None) -> ErrorBlock:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + " ..."
    return ErrorBlock(kind=kind, first_line=base + first, last_line=base + last, exception_type=exc_type,
                      message=message, text=text, rank=rank, text_truncated=cut, numbering=numbering,
                      first_offset=offsets[first] if offsets is not None and first < len(offsets) else None)


def _fold_repeats(blocks: list[ErrorBlock]) -> list[ErrorBlock]:
    """Eight ranks printing the same NCCL timeout are one finding seen eight times."""
    out: list[ErrorBlock] = []
    index: dict[tuple[str, str | None, str], ErrorBlock] = {}
    for block in blocks:
        key = (block.kind, block.exception_type, re.sub(r"\d+", "#", block.message)[:200])
        seen = index.get(key)
        if seen is not None:
            seen.repeats += 1
            continue
        index[key] = block
        out.append(block)
    return out


_CHILD_FIELD_RE = re.compile(r"^\s*(rank|exitcode|traceback)\s*:\s*(.+)$")


def _child_failed_message(lines: list[str]) -> str:
    """The torchrun summary's root cause in one line: rank, exit code, signal."""
    fields: dict[str, str] = {}
    for line in lines:
        m = _CHILD_FIELD_RE.match(line)
        if m and m.group(1) not in fields:
            fields[m.group(1)] = m.group(2).strip()
    failed = next((ln.strip() for ln in lines if ln.strip().endswith("FAILED")), "")
    parts = [failed] + [f"{k}: {v}" for k, v in fields.items()]
    return "; ".join(p for p in parts if p)


def extract_errors_text(text: str) -> list[ErrorBlock]:
    """`extract_errors` over a string (pasted output, `error_text`); line numbers count from 1."""
    return extract_errors(text.splitlines(), 1, "text")
