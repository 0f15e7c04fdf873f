"""Confine this process before it runs user code: the child half of `sandbox.py`.

Standard library only and loaded by path, because it runs first thing in the inspection worker and
in the smoke-test child, under the user's interpreter (which need not have ml_debug_mcp or pydantic).
It must run while the process is still single-threaded (unshare(CLONE_NEWUSER) requires it).
Every step is probed and may fail: confine() never raises, it reports what it achieved and why not,
on a pipe the server reads, then closes that pipe so user code cannot forge the report.

Steps, in the order they must happen:
1. join the call's cgroup (so every descendant, setsid'd or daemonised, can be killed with it);
2. leave the host's network (a fresh network namespace: only its own loopback) and, as root, drop to
   nobody, or, when nobody cannot read the project, keep uid 0 in a user namespace of its own;
3. Landlock: writes only below the roots, the call's temp dir and a few devices; no signals to
   processes outside (the server).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import platform
import signal
import socket
import struct
import sys

SPEC_VARIABLE = "ML_DEBUG_MCP_SANDBOX"
NOBODY = 65534
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 38, 36
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
# landlock_create_ruleset, landlock_add_rule, landlock_restrict_self: one number on every Linux architecture
LANDLOCK_SYSCALLS = (444, 445, 446) if platform.machine() in ("x86_64", "aarch64", "riscv64", "s390x", "ppc64le") \
    else None
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
WRITE_FILE, TRUNCATE = 1 << 1, 1 << 14
DIRECTORY_WRITES = sum(1 << bit for bit in (4, 5, 6, 7, 8, 9, 10, 11, 12))  # remove/make dir, file, node, link
REFER = 1 << 13
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _done(active: bool, detail: str) -> dict:
    return {"active": active, "detail": detail}


def _failed(what: str) -> str:
    code = ctypes.get_errno()
    return f"{what} was refused ({errno.errorcode.get(code, code)}: {os.strerror(code)})"


def confine(spec: dict) -> dict:
    """Apply every protection the kernel allows; report each as {active, detail} on spec['status_fd']."""
    status: dict = {"kill_tree": _attempt(_join_cgroup, spec.get("cgroup"))}
    if _libc is None:
        status["no_network"] = status["dropped_privileges"] = status["landlock"] = _done(False, "not Linux")
    else:
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans stay below the worker, where the server looks
        both = _attempt(_drop_and_isolate, spec)
        status["dropped_privileges"], status["no_network"] = both if isinstance(both, tuple) else (both, both)
        status["landlock"] = _attempt(_landlock, spec)
    fd = spec.get("status_fd")
    if fd is not None:
        try:
            os.write(fd, json.dumps(status).encode())
        finally:
            os.close(fd)
    return status


def kill_descendants() -> None:
    """SIGKILL everything below this process before it exits. It is a subreaper, so orphans (daemons) were
    re-parented to it; with a cgroup the server kills them anyway, without one this is what reaches them."""
    parents = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    below, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - below
        below |= frontier
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _attempt(step, *args):
    """One step; an unexpected failure (an odd container, a bug) is reported, and the next step still runs."""
    try:
        return step(*args)
    except Exception as exc:  # noqa: BLE001
        return _done(False, f"{step.__name__.strip('_')} failed: {exc!r}")


def confine_from_environment() -> dict:
    """confine() with the spec the server put in the environment (removed from it first)."""
    raw = os.environ.pop(SPEC_VARIABLE, None)
    return confine(json.loads(raw)) if raw else {}


# ------------------------------------------------------------------------------------------------


def _join_cgroup(path: str | None) -> dict:
    if not path:
        return _done(False, "no cgroup for this call")  # the server says why
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    except OSError as exc:
        return _done(False, f"joining the call's cgroup failed ({exc.strerror}): the process group and what is "
                            "still below the worker (their subreaper) are killed")
    return _done(True, "own cgroup: every descendant is killed after the call, setsid'd or daemonised")


def _drop_and_isolate(spec: dict) -> tuple[dict, dict]:
    """(dropped_privileges, no_network). As root the network goes first: nobody could not unshare it."""
    if os.geteuid() != 0:
        return (_done(True, f"already unprivileged (uid {os.geteuid()})"),
                _isolate_network(CLONE_NEWUSER | CLONE_NEWNET, os.geteuid(), os.getegid()))
    os.setgroups([])
    blocked = _unreadable_as_nobody([*spec.get("readable", []), sys.executable, *sys.path])
    if blocked is None:
        network = _isolate_network(CLONE_NEWNET)
        os.chown(spec["tmpdir"], NOBODY, NOBODY)
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        return _done(True, "runs as nobody (65534), not root"), network
    network = _isolate_network(CLONE_NEWUSER | CLONE_NEWNET, 0, 0)
    kept = ("kept uid 0 without any capability outside its own user namespace" if network["active"]
            else "kept uid 0 with root's capabilities")
    return _done(False, f"the server runs as root and nobody (65534) cannot read {blocked}, so the worker {kept}; "
                        "make the project readable by others (chmod o+rX) to run it as nobody"), network


def _unreadable_as_nobody(paths: list[str]) -> str | None:
    """The first existing path nobody could not read (checked with nobody's effective ids), else None."""
    existing = [p for p in dict.fromkeys(paths) if p and os.path.exists(p)]
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        for path in existing:
            mode = os.R_OK | (os.X_OK if os.path.isdir(path) else 0)
            if not os.access(path, mode, effective_ids=True):
                return path
        return None
    finally:
        os.seteuid(0)
        os.setegid(0)


def _isolate_network(flags: int, uid: int | None = None, gid: int | None = None) -> dict:
    """A new network namespace (with a user namespace when unprivileged), its loopback up."""
    if _libc.unshare(flags) != 0:
        return _done(False, _failed("unshare(CLONE_NEW" + ("USER|CLONE_NEW" if flags & CLONE_NEWUSER else "")
                                    + "NET)") + ": the kernel or container forbids new namespaces")
    if flags & CLONE_NEWUSER:
        for name, text in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            request = struct.pack("16sh22x", b"lo", 0)
            flags_now = struct.unpack("16sh22x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags_now | IFF_UP))
    except OSError:
        pass  # no loopback either: multi-process smoke tests cannot rendezvous, nothing else changes
    return _done(True, "own network namespace: no route to the host's network or its loopback")


def _landlock(spec: dict) -> dict:
    if LANDLOCK_SYSCALLS is None:
        return _done(False, f"Landlock's system calls are unknown on {platform.machine()}")
    create, add_rule, restrict = LANDLOCK_SYSCALLS
    _libc.syscall.restype = ctypes.c_long
    abi = _libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    if abi < 1:
        return _done(False, _failed("Landlock") + ": the kernel lacks it or it is disabled")
    writes = WRITE_FILE | DIRECTORY_WRITES | (REFER if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(writes, 0, SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET if abi >= 6 else 0)
    ruleset = _libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        return _done(False, _failed("landlock_create_ruleset"))
    try:
        allowed = [p for p in _writable(spec) if os.path.exists(p)]
        for path in allowed:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rights = writes if os.path.isdir(path) else writes & (WRITE_FILE | TRUNCATE)
                rule = _PathBeneath(rights, fd)
                if _libc.syscall(add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    return _done(False, _failed(f"a Landlock rule for {path}"))
            finally:
                os.close(fd)
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if _libc.syscall(restrict, ruleset, 0) != 0:
            return _done(False, _failed("landlock_restrict_self"))
    finally:
        os.close(ruleset)
    scoped = ", no signals to processes outside it" if abi >= 6 else ""
    return _done(True, f"Landlock ABI {abi}: writes only below the roots and the call's temp dir{scoped}")


def _writable(spec: dict) -> list[str]:
    """The roots, the call's temp dir, /dev/null and /dev/shm (multiprocessing), and the GPUs when one is used."""
    devices = ["/dev/null", "/dev/shm"]
    if spec.get("gpu"):
        devices += [os.path.join("/dev", name) for name in sorted(os.listdir("/dev")) if name.startswith("nvidia")]
    return [*spec.get("writable", []), spec["tmpdir"], *devices]
