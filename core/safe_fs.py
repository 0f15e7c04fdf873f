"""Opening files without check-then-use races: every read and write of a user path goes through here.

`Roots.resolve` (and `confine` for files found inside a folder) turn a path into its real, symlink-free
form and check it; a symlink swapped in after that check must not be followed. So the real path is
opened one component at a time, each with O_NOFOLLOW relative to the folder opened before it: a link
that appeared meanwhile fails closed (ELOOP/ENOTDIR) instead of leading elsewhere. The opened
descriptor's own path (/proc/self/fd) must still be the path asked for, which catches a folder that was
renamed away mid-walk. Files must be regular (fstat, after a non-blocking open), so a FIFO or device
swapped in cannot hang a thread. Writes create names relative to a verified folder descriptor.
Pure and MCP-free.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
LOCK_POLL_SECONDS = 0.05


class PathChanged(PermissionError):
    """A path changed between its check and its use (a symlink or folder swapped in): refused, not followed."""

    def __init__(self, path: str | os.PathLike[str], detail: str) -> None:
        self.path = os.fspath(path)
        super().__init__(errno.EACCES, f"{detail}, so it is not followed; pass the file's real path "
                         "(without links that change), or try again once it stops changing", self.path)


class NotRegularFile(OSError):
    """A FIFO, socket or device where a file was expected: opening or reading it could block."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(errno.EINVAL, "not a regular file (a FIFO, socket or device); it is not read, because "
                         "reading it could block; pass a regular file", os.fspath(path))


def confine(base: Path, candidate: Path) -> Path | None:
    """`candidate` with symlinks resolved, if that lies inside the (already real) folder `base`, else None.

    For files core finds inside a folder the caller named: open the returned real path, never the
    candidate itself, so a link swapped after this check is not followed.
    """
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):  # a symlink loop, a vanished file
        return None
    return real if real.is_relative_to(base) else None


def fd_path(fd: int) -> str:
    """A path naming the open descriptor itself, for libraries that only take paths (sqlite, readers)."""
    return f"/proc/self/fd/{fd}"


def _real_parts(path: str | os.PathLike[str]) -> tuple[str, ...]:
    p = Path(path)
    if not p.is_absolute() or any(part in (".", "..") for part in p.parts) or os.path.normpath(p) != str(p):
        raise ValueError(f"{p} is not a real absolute path; resolve it inside the roots first")
    return p.parts[1:]


def _step(dir_fd: int, name: str, flags: int, shown: Path, mode: int = 0o644) -> int:
    """Open `name` inside `dir_fd` without following a link there; say so when one was found."""
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and _is_link(dir_fd, name):
            raise PathChanged(shown, f"{shown} became a symbolic link after it was checked") from None
        if exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise NotRegularFile(shown) from None
        raise


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _verify(fd: int, expected: Path) -> None:
    """The descriptor must still be at `expected`: a folder renamed away mid-walk leaves it elsewhere."""
    actual = os.readlink(fd_path(fd))
    if actual != str(expected):
        raise PathChanged(expected, f"{expected} moved to {actual} while it was being opened")


def open_dir(path: str | os.PathLike[str]) -> int:
    """A descriptor for the real folder `path`, opened component by component without following links."""
    path = Path(path)
    fd = os.open("/", _DIR_FLAGS)
    try:
        walked = Path("/")
        for part in _real_parts(path):
            walked = walked / part
            nxt = _step(fd, part, _DIR_FLAGS, walked)
            os.close(fd)
            fd = nxt
        _verify(fd, path)
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def opened_dir(path: str | os.PathLike[str]) -> Iterator[int]:
    fd = open_dir(path)
    try:
        yield fd
    finally:
        os.close(fd)


def walk(top: str | os.PathLike[str]) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk of the real folder `top` through descriptors (os.fwalk): a link swapped in for `top` or a
    folder below it is not followed. Prune the name lists in place as with os.walk."""
    top = Path(top)
    fd = open_dir(top)
    try:
        for rel, dirnames, filenames, _ in os.fwalk(".", dir_fd=fd):
            yield Path(os.path.normpath(top / rel)), dirnames, filenames
    finally:
        os.close(fd)


def _checked_file(fd: int, path: Path) -> int:
    """Refuse anything but a regular file, then make the descriptor blocking again for plain reads."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(path)
        _verify(fd, path)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_fd(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """A descriptor for the regular file at the real path `path` (see the module doc); `flags` may add
    O_WRONLY/O_APPEND/O_CREAT/O_EXCL, applied relative to the verified parent folder."""
    path = Path(path)
    _real_parts(path)
    with opened_dir(path.parent) as parent:
        return _checked_file(_step(parent, path.name, flags | _FILE_FLAGS, path, mode), path)


def open_read(path: str | os.PathLike[str]) -> BinaryIO:
    """open(path, "rb"), without following a link swapped in after the check, and only for regular files."""
    return os.fdopen(open_fd(path), "rb")


def read_bytes(path: str | os.PathLike[str], limit: int = -1) -> bytes:
    with open_read(path) as fh:
        return fh.read(limit)


def read_text(path: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "replace") -> str:
    return read_bytes(path).decode(encoding, errors)


def file_size(path: str | os.PathLike[str]) -> int:
    """The size of the regular file at `path`, through the same safe open (stat would follow a link)."""
    fd = open_fd(path)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


@contextlib.contextmanager
def as_fd_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A /proc/self/fd path for the safely opened file, valid inside the block: path-only libraries
    read the verified descriptor instead of resolving the user's path again."""
    fd = open_fd(path)
    try:
        yield fd_path(fd)
    finally:
        os.close(fd)


def make_dir(path: str | os.PathLike[str]) -> None:
    """mkdir inside the verified parent folder (not through a link swapped in for it)."""
    path = Path(path)
    with opened_dir(path.parent) as parent:
        os.mkdir(path.name, 0o755, dir_fd=parent)


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], timeout: float) -> Iterator[None]:
    """An exclusive flock on the lock file `path`, created inside its verified folder. Raises TimeoutError.

    flock is what filelock uses on POSIX, so other writers locking the same file still exclude us.
    """
    fd = open_fd(path, os.O_RDWR | os.O_CREAT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} is locked by another writer") from None
                time.sleep(LOCK_POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: str | os.PathLike[str], data: bytes, *, overwrite: bool, mode: int = 0o644) -> int:
    """Write `data` to `path` through a temp file in the same verified folder, then rename it into place.

    Without `overwrite` the last step is a hard link, which fails if the name appeared meanwhile, so an
    existing file is never replaced (FileExistsError).
    """
    path = Path(path)
    with opened_dir(path.parent) as parent:
        tmp = f".{path.stem}.{secrets.token_hex(6)}.tmp"
        fd = _step(parent, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, path.parent / tmp,
                   mode)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                os.fchmod(fh.fileno(), mode)  # not the umask's
                fh.flush()
                os.fsync(fh.fileno())
            if overwrite:
                os.rename(tmp, path.name, src_dir_fd=parent, dst_dir_fd=parent)
            else:
                os.link(tmp, path.name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=parent)
    return len(data)
