"""Check-then-use races on paths (issue 10): a thread swaps a link between the roots check and the open.

Each race runs the real tool through the in-memory MCP client for a few seconds while a background thread
atomically exchanges (renameat2 RENAME_EXCHANGE) an inside file or folder with a symlink to an outside one,
so every call sees one or the other at any instant. Nothing outside may be read or written, no call may
hang, and enough calls must succeed that "everything errors" cannot pass. The module's own rules
(links inside the roots, `..`, FIFOs and devices) are unit-tested at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from abuse import BUDGET, record
from mcp import Client

from ml_debug_mcp.core import safe_fs
from ml_debug_mcp.core.paths import PathOutsideRoots, Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

SECRET = "TOPSECRET-7f3a91"
INSIDE = "INSIDE-OK-2c4e"
RACE_SECONDS = BUDGET.race_seconds  # 2.5 s in CI; `python bench/abuse.py` runs each race for longer
CALL_TIMEOUT = 20.0
_LIBC = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (renameat2 RENAME_EXCHANGE): there is never a moment with neither."""
    if _LIBC.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@contextlib.contextmanager
def swapping(a: Path, b: Path) -> Iterator[None]:
    """Exchange `a` and `b` as fast as possible on a thread until the block ends, leaving `a` as it was."""
    stop = threading.Event()
    swaps = [0]

    def flip() -> None:
        while not stop.is_set():
            exchange(a, b)
            swaps[0] += 1

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if swaps[0] % 2:
            exchange(a, b)
    assert swaps[0] > 100, "the swapping thread barely ran"


@dataclass
class Tally:
    attempts: int = 0
    ok: int = 0
    leaks: int = 0

    def report(self, name: str) -> None:
        print(f"{name}: {self.attempts} attempts, {self.ok} succeeded, {self.leaks} leaks", file=sys.stderr)

    def check(self, name: str) -> None:
        self.report(name)
        record(f"path race: {name}", self.attempts, self.leaks, f"{self.ok} succeeded with the inside file")
        assert self.leaks == 0
        assert self.attempts >= 20
        assert self.ok >= max(10, self.attempts // 50), "too few calls succeeded for the race to mean anything"


def _answer(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content) + json.dumps(result.structured_content)


async def _race(call, seconds: float = RACE_SECONDS) -> Tally:
    """Call `call()` repeatedly for `seconds`; it returns (text of the answer, whether it succeeded)."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with anyio.fail_after(CALL_TIMEOUT):
            text, ok = await call()
        tally.attempts += 1
        tally.leaks += SECRET in text
        tally.ok += ok and INSIDE in text
    return tally


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, outside


def _client(root: Path) -> Client:
    return Client(create_server(Config(roots=Roots.from_strings([str(root)]))))


def _file_swap(root: Path, outside: Path, name: str, inside_text: str, secret_text: str) -> tuple[Path, Path]:
    """`root/name` a real file, `root/.swap` a link to an outside file of the same name."""
    (root / name).write_text(inside_text)
    (outside / name).write_text(secret_text)
    (root / ".swap").symlink_to(outside / name)
    return root / name, root / ".swap"


def _dir_swap(root: Path, outside: Path, name: str) -> tuple[Path, Path]:
    """`root/name` a real folder, `root/.dswap` a link to an outside folder."""
    (root / name).mkdir()
    (root / ".dswap").symlink_to(outside)
    return root / name, root / ".dswap"


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


# --- reads -------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_tail_log_file_swap_never_reads_outside(place):
    root, outside = place
    a, b = _file_swap(root, outside, "train.log", f"step 1 | loss 2.0 {INSIDE}\n" * 5,
                      f"step 1 | loss 9.0 {SECRET}\n" * 5)
    async with _client(root) as client:
        async def call():
            result = await client.call_tool("tail_log", {"path": "train.log", "lines": 3})
            return _answer(result), not result.is_error
        with swapping(a, b):
            tally = await _race(call)
    tally.check("tail_log file swap")


@pytest.mark.anyio
async def test_read_metrics_file_swap_never_reads_outside(place):
    root, outside = place
    a, b = _file_swap(root, outside, "run.log", "".join(f"step {i} | loss 2.{i}\n" for i in range(20)),
                      "".join(f"step {i} | loss 777.{i}\n" for i in range(20)))
    async with _client(root) as client:
        async def call():  # the answer is series, not lines: the outside file shows as its loss values
            result = await client.call_tool("read_metrics", {"path": "run.log"})
            text = _answer(result)
            return text.replace("777.", SECRET), not result.is_error and "2.19" in text
        with swapping(a, b):
            tally = await _race(lambda: _mark_inside(call))
    tally.check("read_metrics file swap")


async def _mark_inside(call):
    """For answers that do not quote the file (series, a write's summary): success stands for the inside file."""
    text, ok = await call()
    return text + (INSIDE if ok else ""), ok


@pytest.mark.anyio
async def test_file_resource_directory_swap_never_reads_outside(place):
    root, outside = place
    a, b = _dir_swap(root, outside, "logs")
    (a / "train.log").write_text(f"{INSIDE}\n" * 3)
    (outside / "train.log").write_text(f"{SECRET}\n" * 3)
    async with _client(root) as client:
        async def call():
            try:
                content = await client.read_resource(f"file://{a / 'train.log'}")
            except Exception as exc:  # a refused read is an MCP error
                return str(exc), False
            return content.contents[0].text, True
        with swapping(a, b):
            tally = await _race(call)
    tally.check("file:// resource directory swap")


@pytest.mark.anyio
async def test_tail_log_directory_swap_never_lists_outside(place):
    root, outside = place
    a, b = _dir_swap(root, outside, "runs")
    (a / f"{INSIDE}.log").write_text("step 1 | loss 2.0\n")
    (outside / f"{SECRET}.log").write_text("step 1 | loss 9.0\n")
    async with _client(root) as client:
        async def call():
            result = await client.call_tool("tail_log", {"path": "runs"})
            return _answer(result), not result.is_error
        with swapping(a, b):
            tally = await _race(call)
    tally.check("tail_log directory swap (listing)")


# --- writes ------------------------------------------------------------------------------------

def _journal_args(path: str, n: int) -> dict:
    return {"path": path, "title": f"{INSIDE} {n}", "symptom": "s", "root_cause": "r", "fix": "f",
            "resolution": "ok"}


@pytest.mark.anyio
async def test_write_journal_file_swap_never_appends_outside(place):
    root, outside = place
    a, b = _file_swap(root, outside, "journal.md", "# Debugging journal\n", f"# {SECRET}\n")
    before = _tree(outside)
    async with _client(root) as client:
        n = [0]

        async def call():
            n[0] += 1
            result = await client.call_tool("write_journal", _journal_args("journal.md", n[0]))
            return _answer(result), not result.is_error and "Appended" in _answer(result)
        with swapping(a, b):
            tally = await _race(lambda: _mark_inside(call))
    tally.check("write_journal file swap")
    assert _tree(outside) == before, "the outside file was written to"
    assert (root / "journal.md").read_text().count(f"] - {INSIDE} ") == tally.ok


@pytest.mark.anyio
async def test_write_journal_and_smoke_test_directory_swap_create_nothing_outside(place):
    root, outside = place
    a, b = _dir_swap(root, outside, "notes")
    async with _client(root) as client:
        n = [0]

        async def call():
            n[0] += 1
            if n[0] % 2:
                result = await client.call_tool("write_journal", _journal_args("notes/journal.md", n[0]))
            else:
                result = await client.call_tool("create_smoke_test", {
                    "path": f"notes/test_swap_{n[0]}.py", "failure": "nan_loss", "run": False})
            return _answer(result), not result.is_error
        with swapping(a, b):
            tally = await _race(lambda: _mark_inside(call), seconds=RACE_SECONDS + 1)
    tally.check("write_journal + create_smoke_test directory swap")
    assert _tree(outside) == {}, f"created outside the roots: {sorted(_tree(outside))}"
    assert len(list(a.glob("test_swap_*.py"))) + (a / "journal.md").read_text().count(f"] - {INSIDE} ") == tally.ok


# --- FIFOs -------------------------------------------------------------------------------------

def _threads_in_our_code() -> list[str]:
    """Threads (other than this one) whose stack is inside ml_debug_mcp: a call that never came back."""
    stuck = []
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        while frame is not None:
            if "ml_debug_mcp" in frame.f_code.co_filename and "tests" not in frame.f_code.co_filename:
                stuck.append(f"{ident}: {frame.f_code.co_filename}:{frame.f_lineno}")
                break
            frame = frame.f_back
    return stuck


@pytest.mark.anyio
async def test_fifo_swapped_in_is_refused_and_no_thread_hangs(place):
    root, outside = place
    (root / "pipe.log").write_text(f"step 1 | loss 2.0 {INSIDE}\n")
    (root / "journal.md").write_text("# Debugging journal\n")
    os.mkfifo(root / ".fifo")
    os.mkfifo(root / ".jfifo")
    refused = [0]
    async with _client(root) as client:
        n = [0]

        async def call():
            n[0] += 1
            kind = n[0] % 4
            if kind == 3:
                result = await client.call_tool("write_journal", _journal_args("journal.md", n[0]))
            elif kind == 2:
                try:
                    content = await client.read_resource(f"file://{root / 'pipe.log'}")
                    return content.contents[0].text, True
                except Exception as exc:
                    refused[0] += "not a regular file" in str(exc)
                    return str(exc), False
            else:
                result = await client.call_tool("tail_log" if kind else "read_metrics", {"path": "pipe.log"})
            text = _answer(result)
            refused[0] += "not a regular file" in text
            ok = not result.is_error and "not a regular file" not in text
            return text + (INSIDE if ok and kind in (0, 3) else ""), ok
        for n[0] in range(4):  # warm the worker threads up: a hung call would have to add one
            await call()
        baseline = threading.active_count()
        with swapping(root / "pipe.log", root / ".fifo"), swapping(root / "journal.md", root / ".jfifo"):
            tally = await _race(call)
    tally.check("FIFO swap")
    assert refused[0] > 0, "no call met the FIFO"
    assert _threads_in_our_code() == []
    assert threading.active_count() <= baseline


# --- the module's rules ------------------------------------------------------------------------

def test_a_link_inside_the_roots_still_works(place):
    root, _ = place
    (root / "real").mkdir()
    (root / "real" / "train.log").write_text("hello\n")
    (root / "alias").symlink_to(root / "real")
    (root / "latest.log").symlink_to(root / "alias" / "train.log")
    resolved = Roots.from_strings([str(root)]).resolve("latest.log")
    assert safe_fs.read_bytes(resolved) == b"hello\n"
    assert safe_fs.confine(root, root / "latest.log") == root / "real" / "train.log"


def test_dot_dot_and_links_out_are_refused(place):
    root, outside = place
    (outside / "secret").write_text(SECRET)
    (root / "out").symlink_to(outside)
    roots = Roots.from_strings([str(root)])
    with pytest.raises(PathOutsideRoots):
        roots.resolve("../outside/secret")
    with pytest.raises(PathOutsideRoots):
        roots.resolve("out/secret")
    with pytest.raises(ValueError, match="real absolute path"):
        safe_fs.open_read(root / ".." / "outside" / "secret")
    assert safe_fs.confine(root, root / "out" / "secret") is None


def test_a_link_met_while_opening_is_refused_not_followed(place):
    root, outside = place
    (outside / "secret").write_text(SECRET)
    (root / "out").symlink_to(outside)
    (root / "log").symlink_to(outside / "secret")
    for path in (root / "out" / "secret", root / "log"):
        with pytest.raises(safe_fs.PathChanged, match="symbolic link"):
            safe_fs.open_read(path)
    with pytest.raises(safe_fs.PathChanged):
        safe_fs.write_atomic(root / "out" / "new.py", b"x", overwrite=False)
    with pytest.raises(safe_fs.PathChanged):
        safe_fs.open_fd(root / "log", os.O_WRONLY | os.O_APPEND)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == SECRET


def _returns_quickly(fn) -> BaseException | None:
    """Run fn on a thread; fail if it is still running after 5 s (it would be blocked on the open)."""
    box: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            box[0] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the open blocked"
    return box[0]


def test_fifos_and_devices_are_refused_without_blocking(place):
    root, _ = place
    os.mkfifo(root / "pipe.log")
    (root / "zero.log").symlink_to("/dev/zero")
    for fn in (lambda: safe_fs.open_read(root / "pipe.log"),
               lambda: safe_fs.open_fd(root / "pipe.log", os.O_WRONLY | os.O_APPEND),
               lambda: safe_fs.read_bytes(Path("/dev/zero"), 10),
               lambda: safe_fs.read_bytes((root / "zero.log").resolve(), 10)):
        exc = _returns_quickly(fn)
        assert isinstance(exc, safe_fs.NotRegularFile), exc
        assert "not a regular file" in str(exc)
    with pytest.raises(PathOutsideRoots):
        Roots.from_strings([str(root)]).resolve("zero.log")


def test_atomic_write_never_replaces_without_overwrite_and_lock_times_out(place):
    root, _ = place
    safe_fs.write_atomic(root / "t.py", b"one", overwrite=False)
    with pytest.raises(FileExistsError):
        safe_fs.write_atomic(root / "t.py", b"two", overwrite=False)
    safe_fs.write_atomic(root / "t.py", b"three", overwrite=True)
    assert (root / "t.py").read_bytes() == b"three"
    assert oct((root / "t.py").stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in root.iterdir()) == ["t.py"]  # no temp file left
    with safe_fs.locked(root / "j.lock", 1):
        with pytest.raises(TimeoutError):
            with safe_fs.locked(root / "j.lock", 0.1):
                pass
