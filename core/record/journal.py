"""The debugging journal: dated markdown entries, appended under a file lock, never rewritten.

The entry format follows the debugging guide's "## Debugging Log / ### [DATE] - title /
**Symptom** / **Root Cause** / **Fix** / **Resolution**", one paragraph per field so it renders
as written. Several agents may write to one journal at once: the append happens under a
`flock` on the sidecar `<journal>.lock` (what filelock takes too), in a single `O_APPEND` write, so no entry
is lost or interleaved. Field text is neutralised where markdown would turn it into structure
(a line starting with `### ` inside a field must not look like a new entry).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from ml_debug_mcp.core import safe_fs
from ml_debug_mcp.core.diagnosis.catalogue import FailureId, failure_info

MARKDOWN_SUFFIXES = (".md", ".markdown")
NEW_JOURNAL_HEADER = "# Debugging journal\n\n## Debugging Log\n"
LOCK_TIMEOUT_SECONDS = 30.0
BINARY_SNIFF_BYTES = 8192

MAX_TITLE_CHARS = 200
MAX_FIELD_CHARS = 4000
MAX_EVIDENCE_ITEMS = 20
MAX_EVIDENCE_CHARS = 1000
MAX_TAGS = 12
MAX_TAG_CHARS = 40

_ENTRY_HEADING = re.compile(r"^### \[[^\]\n]+\] - ")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Lines markdown would read as structure: ATX headings, setext underlines, HTML comment openers.
_ATX_HEADING = re.compile(r"^( {0,3})(#{1,6})(?=[ \t]|$)")
_SETEXT_UNDERLINE = re.compile(r"^( {0,3})(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# CommonMark raw-HTML blocks that run until a terminator rather than a blank line: <pre>, <script>,
# <style>, <textarea>, <!-- -->, <? ?>, <!DOCTYPE ...> and <![CDATA[ ]]>. Unescaped, they swallow later entries.
_HTML_BLOCK = re.compile(r"^( {0,3})<(?=(?:pre|script|style|textarea)\b|[!?])", re.IGNORECASE)


class JournalEntry(BaseModel):
    """What one debugging session learned, in the guide's fields."""

    title: str
    symptom: str
    root_cause: str
    fix: str
    resolution: str
    evidence: list[str] = Field(default_factory=list)
    failure: FailureId | None = None
    verification: str | None = None
    tags: list[str] = Field(default_factory=list)


class JournalWriteResult(BaseModel):
    path: str = Field(description="Absolute path of the journal file")
    heading: str = Field(description="The entry's heading line, e.g. '### [2025-06-01T14:03:27Z] - NaN loss at step 500'")
    offset: int = Field(description="Byte offset in the file where the entry's heading starts")
    bytes_written: int
    entries: int = Field(description="Journal entries ('### [date] - title' headings) in the file after this append")
    created: bool = Field(description="True when this call created the journal file")
    summary: str


# ------------------------------------------------------------------------------------------------
# Validation and rendering


def _clean(text: str) -> str:
    """Normalise newlines and drop control characters that have no place in a markdown file."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def _bounded(name: str, text: str | None, limit: int, *, required: bool) -> str:
    cleaned = _clean(text or "")
    if required and not cleaned:
        raise ValueError(f"{name} is empty; write_journal needs a symptom, root_cause, fix and resolution.")
    if len(cleaned) > limit:
        raise ValueError(f"{name} is {len(cleaned)} characters, over the {limit}-character limit. Summarise it, and "
                         "keep long logs or tracebacks in a file that the entry refers to by path.")
    return cleaned


def validate_entry(entry: JournalEntry) -> JournalEntry:
    """The entry with every field cleaned and within its cap, or ValueError naming the field and the limit."""
    title = " ".join(_clean(entry.title).split())
    if not title:
        raise ValueError("title is empty; give the entry a one-line title such as 'NaN loss at step 500'.")
    if len(title) > MAX_TITLE_CHARS:
        raise ValueError(f"title is {len(title)} characters, over the {MAX_TITLE_CHARS}-character limit; keep it to "
                         "one line such as 'NaN loss at step 500' and put details in symptom.")
    if len(entry.evidence) > MAX_EVIDENCE_ITEMS:
        raise ValueError(f"evidence has {len(entry.evidence)} items, over the limit of {MAX_EVIDENCE_ITEMS}; keep the "
                         "observations that decided the diagnosis.")
    if len(entry.tags) > MAX_TAGS:
        raise ValueError(f"tags has {len(entry.tags)} items, over the limit of {MAX_TAGS}.")
    for tag in entry.tags:
        if len(tag) > MAX_TAG_CHARS or not _TAG.match(tag):
            raise ValueError(f"tag {tag[:60]!r} is not a plain word: use letters, digits, '_', '.', '+' or '-', "
                             f"starting with a letter or digit, at most {MAX_TAG_CHARS} characters.")
    evidence = [_bounded(f"evidence[{i}]", item, MAX_EVIDENCE_CHARS, required=False)
                for i, item in enumerate(entry.evidence)]
    return JournalEntry(
        title=title,
        symptom=_bounded("symptom", entry.symptom, MAX_FIELD_CHARS, required=True),
        root_cause=_bounded("root_cause", entry.root_cause, MAX_FIELD_CHARS, required=True),
        fix=_bounded("fix", entry.fix, MAX_FIELD_CHARS, required=True),
        resolution=_bounded("resolution", entry.resolution, MAX_FIELD_CHARS, required=True),
        evidence=[item for item in evidence if item],
        failure=entry.failure,
        verification=_bounded("verification", entry.verification, MAX_FIELD_CHARS, required=False) or None,
        tags=list(dict.fromkeys(entry.tags)),
    )


def _closes(line: str, fence: str) -> bool:
    """A closing fence: the opener's character, at least as many, nothing else on the line."""
    stripped = line.strip()
    return stripped.startswith(fence) and not stripped.strip(fence[0]) and len(line) - len(line.lstrip(" ")) <= 3


def _inline(text: str) -> str:
    return text.replace("<!--", "&lt;!--")


def neutralise_markdown(text: str) -> str:
    """Field text that cannot create headings, swallow later entries in a code fence or hide them.

    Heading-like lines and raw-HTML block openers get a backslash (`\\### x` renders as the
    literal text), an unclosed code fence is closed, and `<!--` is escaped. Lines inside a fenced
    block are left alone: they are code, and the entry counter skips fenced lines too. The text
    must start at the beginning of a line in the output, so that this view of its structure is
    the renderer's.
    """
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        if fence is not None:
            if _closes(line, fence):
                fence = None
            out.append(line)
            continue
        opener = _FENCE.match(line)
        if opener:
            fence = opener.group(1)
            out.append(line)
            continue
        line = _ATX_HEADING.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", line, count=1)
        line = _SETEXT_UNDERLINE.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", line, count=1)
        line = _HTML_BLOCK.sub(lambda m: f"{m.group(1)}\\<", line, count=1)
        out.append(_inline(line))
    if fence is not None:
        out.append(fence)
    return "\n".join(out)


def _field(label: str, text: str) -> str:
    """One paragraph per field; a multi-line field starts on its own line so its structure is what it seems."""
    if "\n" not in text:
        return f"**{label}**: {_inline(text)}\n"
    return f"**{label}**:\n\n{neutralise_markdown(text)}\n"


def _bullet(text: str) -> str:
    lines = neutralise_markdown(text).split("\n")
    if _FENCE.match(lines[0]):  # a fence opened on the bullet's own line hides from line-based readers
        lines = ["(code)"] + lines
    first, *rest = lines
    return "\n".join([f"- {first}"] + [f"  {line}" if line else "" for line in rest]) + "\n"


def utc_timestamp(now: datetime | None = None) -> str:
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def render_entry(entry: JournalEntry, now: datetime | None = None) -> tuple[str, str]:
    """(heading line, whole entry text) for an already validated entry; fields are separate paragraphs."""
    heading = f"### [{utc_timestamp(now)}] - {_inline(entry.title)}"
    parts = [heading + "\n"]
    if entry.failure is not None:
        parts.append(f"**Failure**: `{entry.failure}` ({failure_info(entry.failure).title})\n")
    parts += [_field("Symptom", entry.symptom), _field("Root Cause", entry.root_cause), _field("Fix", entry.fix),
              _field("Resolution", entry.resolution)]
    if entry.verification:
        parts.append(_field("Verification", entry.verification))
    if entry.evidence:
        parts.append("**Evidence**:\n\n" + "".join(_bullet(item) for item in entry.evidence))
    if entry.tags:
        parts.append("**Tags**: " + ", ".join(f"`{tag}`" for tag in entry.tags) + "\n")
    return heading, "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# The file


def count_entries(lines: Iterable[str]) -> int:
    """Entry headings outside fenced code blocks (a fenced example of an entry is not an entry)."""
    count = 0
    fence: str | None = None
    for line in lines:
        opener = _FENCE.match(line)
        if fence is not None:
            if _closes(line, fence):
                fence = None
        elif opener:
            fence = opener.group(1)
        elif _ENTRY_HEADING.match(line):
            count += 1
    return count


def check_journal_target(path: Path) -> None:
    """Refuse what is not a markdown journal: wrong suffix, a directory, a special or binary file."""
    if path.suffix.lower() not in MARKDOWN_SUFFIXES:
        raise ValueError(f"{path.name} is not a markdown file: write_journal appends to a .md journal. "
                         f"Use a path such as journal.md or docs/debugging.md.")
    if not path.exists():
        return
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass a journal file inside it, e.g. {path / 'journal.md'}.")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file; write_journal only appends to markdown files.")
    with safe_fs.open_read(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(BINARY_SNIFF_BYTES)
        fh.seek(max(0, size - BINARY_SNIFF_BYTES))
        tail = fh.read(BINARY_SNIFF_BYTES)
    for chunk in (head, tail):
        if b"\x00" in chunk:
            raise ValueError(f"{path} contains NUL bytes, so it is binary, not a markdown journal; pick another path.")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte character cut by the sniff window is fine
            raise ValueError(f"{path} is not UTF-8 text, so it is not a markdown journal; pick another path.") from None


def _separator(fd: int, size: int) -> str:
    """What goes between the existing content and the new entry: end its last line, then one blank line."""
    if size == 0:
        return ""
    last = os.pread(fd, 2, max(0, size - 2))
    if not last.endswith(b"\n"):
        return "\n\n"
    return "" if last == b"\n\n" or size == 1 else "\n"


def _count_file_entries(fd: int) -> int:
    with open(os.dup(fd), "r", encoding="utf-8", errors="replace", newline="") as fh:
        fh.seek(0)
        return count_entries(line.rstrip("\r\n") for line in fh)


def _open_journal(path: Path) -> tuple[int, bool]:
    """(descriptor for appending and reading, whether it was created), inside the verified folder."""
    try:
        return safe_fs.open_fd(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL), True
    except FileExistsError:
        return safe_fs.open_fd(path, os.O_RDWR | os.O_APPEND), False


def append_entry(path: Path, entry: JournalEntry, *, now: datetime | None = None,
                 lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> JournalWriteResult:
    """Append `entry` to the journal at `path` (already inside the roots), creating it with a heading.

    Existing bytes are never rewritten: the file is opened for appending, and the only thing added
    before the entry is a newline when the last line lacks one. Raises ValueError for invalid
    fields, a non-markdown or binary target, or a lock held longer than `lock_timeout`.
    """
    entry = validate_entry(entry)
    check_journal_target(path)
    heading, text = render_entry(entry, now)
    lock_path = path.with_name(path.name + ".lock")
    try:
        with safe_fs.locked(lock_path, lock_timeout):
            fd, created = _open_journal(path)
            try:
                size = os.fstat(fd).st_size
                prefix = NEW_JOURNAL_HEADER + "\n" if size == 0 else _separator(fd, size)
                payload = (prefix + text).encode("utf-8")
                _write_all(fd, payload)
                os.fsync(fd)
                entries = _count_file_entries(fd)
            finally:
                os.close(fd)
    except TimeoutError:
        raise ValueError(f"The journal {path} stayed locked by another writer for {lock_timeout:g} s "
                         f"({lock_path.name}); try again in a moment.") from None
    offset = size + len(prefix.encode("utf-8"))
    where = "new journal" if created else "journal"
    count = f"{entries} entry" if entries == 1 else f"{entries} entries"
    summary = f"Appended '{entry.title}' to the {where} {path} at byte {offset}; it now holds {count}."
    return JournalWriteResult(path=str(path), heading=heading, offset=offset, bytes_written=len(payload),
                              entries=entries, created=created, summary=summary)


def _write_all(fd: int, payload: bytes) -> None:
    """One write() for the whole entry (O_APPEND keeps it whole); loop only if the kernel writes less."""
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]
