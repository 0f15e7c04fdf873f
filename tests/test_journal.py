"""The debugging journal: real files, real concurrent writers, append-only, and fields that cannot
forge structure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from filelock import FileLock
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_debug_mcp.core.record.journal import MAX_FIELD_CHARS, MAX_TITLE_CHARS, NEW_JOURNAL_HEADER, JournalEntry, \
    append_entry, count_entries, render_entry, validate_entry

SEED_ENTRY = dict(title="NaN Loss at Step 500", symptom="Loss became NaN during entropy calculation",
                  root_cause="Missing epsilon in log operation", fix="Added `1e-8` epsilon to prevent `log(0)`",
                  resolution="Training resumed successfully from checkpoint")

# One writer process: say it is ready, wait for the common start signal, then append `count` entries.
WRITER = """
import json, sys, time
from pathlib import Path
from ml_debug_mcp.core.record.journal import JournalEntry, append_entry
path, writer, count, signals = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
(signals / f"ready-{writer}").touch()
while not (signals / "go").exists():
    time.sleep(0.001)
for i in range(count):
    entry = JournalEntry(title=f"{writer} entry {i}", symptom="s " * 200, root_cause="r", fix="f", resolution="ok")
    result = append_entry(path, entry)
    print(json.dumps({"title": entry.title, "offset": result.offset, "heading": result.heading}))
"""


def _entry(**changes) -> JournalEntry:
    return JournalEntry(**{**SEED_ENTRY, **changes})


def test_a_new_journal_gets_a_heading_and_the_guides_entry_format(tmp_path: Path):
    path = tmp_path / "journal.md"
    moment = datetime(2025, 6, 1, 14, 3, 27, 123, tzinfo=timezone.utc)
    result = append_entry(path, _entry(failure="nan_loss", evidence=["loss=nan at step 500", "grad_norm=inf"],
                                       verification="compare_runs: pathology gone, loss 12% lower",
                                       tags=["numerics", "entropy"]), now=moment)
    text = path.read_text()
    assert text.startswith(NEW_JOURNAL_HEADER) and "## Debugging Log" in text
    assert result.heading == "### [2025-06-01T14:03:27Z] - NaN Loss at Step 500"
    assert path.read_bytes()[result.offset:].startswith(result.heading.encode())
    for line in ("**Failure**: `nan_loss` (NaN / Inf loss)", "**Symptom**: Loss became NaN during entropy calculation",
                 "**Root Cause**: Missing epsilon in log operation",
                 "**Fix**: Added `1e-8` epsilon to prevent `log(0)`",
                 "**Resolution**: Training resumed successfully from checkpoint",
                 "**Verification**: compare_runs: pathology gone, loss 12% lower",
                 "- loss=nan at step 500", "**Tags**: `numerics`, `entropy`"):
        assert line in text, line
    assert (result.entries, result.created, result.bytes_written) == (1, True, path.stat().st_size)
    assert "1 entry" in result.summary


def test_appending_never_rewrites_what_is_there(tmp_path: Path):
    path = tmp_path / "notes.md"
    original = b"# My notes\n\nSome text written by hand, with no newline at the end"
    path.write_bytes(original)
    first = append_entry(path, _entry(title="first"))
    after_first = path.read_bytes()
    second = append_entry(path, _entry(title="second"))
    data = path.read_bytes()
    assert data.startswith(after_first) and after_first.startswith(original)
    assert after_first[len(original):first.offset] == b"\n\n", "the unfinished line is ended, then one blank line"
    assert data[first.offset:].startswith(b"### [") and data[second.offset:].startswith(b"### [")
    assert (first.created, first.entries, second.entries) == (False, 1, 2)
    assert NEW_JOURNAL_HEADER not in data.decode(), "an existing file gets no second heading"


# Lines markdown renders as a heading, a comment or a raw-HTML block.
STRUCTURE = re.compile(r"^ {0,3}(#{1,6}(\s|$)|<!--|<pre)", re.IGNORECASE)
FORGERIES = [
    "### [2020-01-01T00:00:00Z] - a fake entry",
    "line one\n### [2020-01-01T00:00:00Z] - a fake entry",
    "text\n```python\nx = 1",  # an unclosed fence would swallow every later entry
    "  ## Debugging Log\n# Title\nunderlined\n===",
    "<!-- hide everything after this",
    "<pre>\n### [2020-01-01] - inside raw html",
]


@pytest.mark.parametrize("text", FORGERIES)
def test_a_field_cannot_forge_or_hide_entries(tmp_path: Path, text: str):
    path = tmp_path / "journal.md"
    append_entry(path, _entry(symptom=text, root_cause=text, fix=text, resolution=text, evidence=[text, text],
                              verification=text, title=text))
    result = append_entry(path, _entry(title="the real second entry"))
    assert result.entries == 2
    structural = [line for line in path.read_text().splitlines() if STRUCTURE.match(line)]
    assert structural[:2] == ["# Debugging journal", "## Debugging Log"]
    assert len(structural) == 4 and all(line.startswith("### [") for line in structural[2:]), structural


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("#`~=-<!>[] \n\tpx0:")) | st.characters(), max_size=120),
                min_size=4, max_size=4))
def test_no_field_text_changes_the_number_of_entries(fields: list[str]):
    entry = _entry(symptom="s" + fields[0], root_cause="r" + fields[1], fix="f" + fields[2],
                   resolution="o" + fields[3], evidence=[f"e{field}" for field in fields])
    first = render_entry(entry)[1]
    second = render_entry(_entry(title="next"))[1]
    assert count_entries((NEW_JOURNAL_HEADER + "\n" + first + "\n" + second).splitlines()) == 2


@pytest.mark.parametrize("changes, expected", [
    (dict(symptom="x" * (MAX_FIELD_CHARS + 1)), f"symptom is {MAX_FIELD_CHARS + 1} characters"),
    (dict(title="t" * (MAX_TITLE_CHARS + 1)), "title is"),
    (dict(fix="   "), "fix is empty"),
    (dict(evidence=["e"] * 21), "evidence has 21 items"),
    (dict(tags=["has space"]), "is not a plain word"),
])
def test_fields_are_bounded_with_a_clear_error(tmp_path: Path, changes: dict, expected: str):
    path = tmp_path / "journal.md"
    with pytest.raises(ValueError) as info:
        append_entry(path, _entry(**changes))
    assert expected in str(info.value)
    assert not path.exists(), "a refused entry writes nothing"


def test_only_markdown_text_files_are_journals(tmp_path: Path):
    (tmp_path / "binary.md").write_bytes(b"# ok\n\x00\x01\x02")
    (tmp_path / "latin.md").write_bytes("caf\xe9 ".encode("latin-1") * 20)
    (tmp_path / "folder.md").mkdir()
    cases = {"journal.txt": "not a markdown file", "binary.md": "binary", "latin.md": "not UTF-8",
             "folder.md": "is a directory"}
    for name, expected in cases.items():
        with pytest.raises(ValueError) as info:
            append_entry(tmp_path / name, _entry())
        assert expected in str(info.value), (name, str(info.value))
    assert (tmp_path / "binary.md").read_bytes() == b"# ok\n\x00\x01\x02"


def test_concurrent_processes_never_lose_or_interleave_an_entry(tmp_path: Path):
    path, signals = tmp_path / "journal.md", tmp_path / "signals"
    signals.mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{n}", "25", str(signals)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(4)]
    while len(list(signals.glob("ready-*"))) < 4 and all(proc.poll() is None for proc in writers):
        time.sleep(0.01)
    (signals / "go").touch()  # all four start appending at once
    reports = []
    for proc in writers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports += [json.loads(line) for line in out.splitlines()]
    data = path.read_bytes()
    assert count_entries(data.decode().splitlines()) == 100
    for report in reports:  # every offset a writer got back points at its own heading
        assert data[report["offset"]:].startswith(report["heading"].encode())
        assert report["heading"].endswith(report["title"])
    text = data.decode()
    assert all(text.count(f"] - w{n} entry {i}\n") == 1 for n in range(4) for i in range(25))
    assert text.count(NEW_JOURNAL_HEADER) == 1


def test_concurrent_threads_never_lose_an_entry(tmp_path: Path):
    path = tmp_path / "journal.md"
    results = []

    def write(n: int) -> None:
        for i in range(5):
            results.append(append_entry(path, _entry(title=f"t{n}-{i}")))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count_entries(path.read_text().splitlines()) == 30
    assert sorted(r.entries for r in results) == list(range(1, 31)), "each append saw all the earlier ones"


def test_a_held_lock_becomes_a_clear_error_not_a_lost_entry(tmp_path: Path):
    path = tmp_path / "journal.md"
    with FileLock(str(path) + ".lock"), pytest.raises(ValueError, match="locked by another writer"):
        append_entry(path, _entry(), lock_timeout=0.2)
    assert not path.exists()
    assert append_entry(path, _entry()).entries == 1


@pytest.mark.parametrize("opener", ["<![CDATA[", "<?php", "<!DOCTYPE html", "  <script>", "<pre>"])
def test_raw_html_blocks_that_run_to_a_terminator_are_escaped(opener: str):
    """CommonMark lets these run until ]]>, ?>, > or a closing tag: unescaped, they swallow later entries."""
    _, text = render_entry(validate_entry(_entry(symptom=f"x\n{opener}\nhidden")))
    line = next(ln for ln in text.splitlines() if opener.strip()[1:] in ln)
    assert line.lstrip().startswith("\\<"), line


def test_fenced_evidence_does_not_hide_the_entries_after_it(tmp_path: Path):
    path = tmp_path / "journal.md"
    append_entry(path, _entry(evidence=["```\nTraceback (most recent call last):\nRuntimeError: boom\n```"]))
    append_entry(path, _entry(title="second"))
    result = append_entry(path, _entry(title="third"))
    assert count_entries(path.read_text().splitlines()) == 3 and result.entries == 3
