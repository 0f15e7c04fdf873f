"""Pasted text as the trainer printed it: decoration added by people, renderers and loggers removed.

A log pasted into an issue or a chat arrives wrapped in markdown (fences, backticks, bold, `>`
quotes), HTML (entities, `<br>`, `<code>`), ANSI colours, carriage-return progress bars, and logger,
timestamp and rank prefixes. Rules and parsers written for the trainer's own text miss it, so
everything downstream reads `normalize_text` first. Each transform works on one line and keeps
the line count, so line numbers in evidence still point at the user's text; `flatten` then joins
wrapped lines (same length, newlines turned to spaces) for phrases a wrap may have split.
"""

from __future__ import annotations

import html
import re

from ml_debug_mcp.core.logs.formats.common import ANSI_RE, strip_rank_prefix

MAX_LINE_CHARS = 20_000  # a longer line is cut: no rule needs more, and regexes stay linear in practice

_FENCE = re.compile(r"^\s*(?:```|~~~)[\w+-]*\s*$")
_QUOTE = re.compile(r"^(?:\s{0,3}>)+ ?")
_HTML_TAG = re.compile(r"</?(?:br|code|pre|p|b|i|em|strong|details|summary|div|span|tt|kbd|samp|sub|sup)\b[^>]*>",
                       re.I)
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_EDGE_CODE = re.compile(r"^(\s*)`+|`+\s*$")  # `a whole line as inline code`; backticks inside are the trainer's
_TIMESTAMP = (r"\d{4}[-/]\d{2}[-/]\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
              r"|\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}(?:[.,]\d+)?"
              r"|\d{2}:\d{2}:\d{2}(?:[.,]\d+)?")
_LEVEL = r"(?:DEBUG|INFO|WARN(?:ING)?|ERROR|CRITICAL|FATAL|TRACE|NOTICE)"
# One prefix at a time, repeated: "[2024-01-02 10:00:00,123] [INFO] [trainer.py:42] ", "2024-01-02 ... - INFO - ",
# glog's "I0102 10:00:00.123456 1234 solver.cpp:228] ", Python logging's "INFO:root:" and loguru's "| INFO     | ".
_PREFIXES = re.compile("|".join((
    rf"\[(?:{_TIMESTAMP})\]\s*",
    rf"(?:{_TIMESTAMP})\s*(?:[-|:]\s*)?",
    r"[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+[\w./-]+:\d+\]\s*",
    rf"\[\s*{_LEVEL}\s*(?:[|:][^\]]*)?\]\s*:?\s*",
    rf"{_LEVEL}:[\w.<>-]+:\s*",
    rf"\|?\s*{_LEVEL}\s*[|:-]\s+",
    r"\[[\w.-]+\.py:\d+(?::[\w<>]+)?\]\s*[:-]?\s*",
    r"\[\d+,\d+\]<(?:stdout|stderr)>:\s*",
)))


def clean_line(line: str) -> str:
    """One line without markdown, HTML, ANSI, progress-bar redraws, or logger/timestamp/rank prefixes."""
    if len(line) > MAX_LINE_CHARS:
        line = line[:MAX_LINE_CHARS]
    if "\r" in line:  # a progress bar redrawn in place: the last drawing is what the screen showed
        segments = [s for s in line.split("\r") if s.strip()]
        line = segments[-1] if segments else ""
    if "\x1b" in line:
        line = ANSI_RE.sub("", line)
    if _FENCE.match(line):
        return ""
    if ">" in line[:8]:
        line = _QUOTE.sub("", line)
    if "<" in line:
        line = _HTML_TAG.sub(" ", line)
    if "&" in line:
        line = html.unescape(line)
    if "**" in line:
        line = _BOLD.sub(r"\1", line)
    if "`" in line:
        line = _EDGE_CODE.sub(r"\1", line)
    line = _strip_prefixes(line)
    return line.rstrip()


def _strip_prefixes(line: str) -> str:
    """Logger, timestamp and rank prefixes, repeatedly (they stack), keeping the indentation."""
    body = line.lstrip()
    indent = line[: len(line) - len(body)]
    for _ in range(6):
        _, unranked = strip_rank_prefix(body)
        m = _PREFIXES.match(unranked)
        stripped = unranked[m.end():] if m and m.end() else unranked
        if stripped == body:
            break
        body = stripped
    return indent + body if body else ""


def normalize_text(text: str) -> str:
    """`clean_line` on every line; the line count is unchanged."""
    return "\n".join(clean_line(line) for line in text.split("\n"))


def flatten(text: str) -> str:
    """The same text with newlines as spaces: offsets are unchanged, and a phrase split by a wrap reads whole."""
    return text.replace("\n", " ")


def looks_decorated(text: str) -> bool:
    """Whether `normalize_text` would change anything worth a second parse (cheap, on a sample)."""
    sample = text[:65536]
    return bool(re.search(r"```|~~~|^\s{0,3}>|&(?:gt|lt|amp|quot|#\d+);|\*\*|`|\r|\x1b|<br|"
                          rf"^\s*(?:\[?{_TIMESTAMP}|[IWEF]\d{{4}} \d|\[?{_LEVEL}\b)", sample, re.M))
