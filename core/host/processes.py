"""Training-process discovery with psutil: the `ps aux | grep train` step, made structured.

Finds the training jobs on this host (launchers such as torchrun/deepspeed/accelerate, python
scripts or modules with "train" in their name, or what the caller names by pid or regex), with
their state, CPU, RSS, age, user, a bounded command line and their children (the ranks, with
RANK/LOCAL_RANK read from their environment when the OS lets us). Every per-process field that
cannot be read becomes `None` plus a reason in `unavailable`: other users' processes hide their
environment, zombies hide their command line, and a process may exit while we look at it.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil
from pydantic import BaseModel, Field

from ml_debug_mcp.core.paths import Roots

MAX_PROCESSES = 50
"""Top-level training processes listed before the rest are only counted (`omitted`)."""
MAX_CHILDREN = 32
"""Children listed per training process; a node with 8 ranks x 8 dataloader workers has 72."""
COMMAND_CHARS = 300
"""Command lines are cut to this many characters: enough to see the script and main flags."""
MAX_PATTERN_CHARS = 200

ProcessRole = Literal["launcher", "rank", "subprocess", "process"]

# Launchers recognised by executable or script basename, then by `python -m <module>`.
_LAUNCHER_EXECUTABLES = {
    "torchrun": "torchrun launcher",
    "deepspeed": "deepspeed launcher",
}
_LAUNCHER_SUBCOMMANDS = {  # executables that only launch training with a given first argument
    ("accelerate", "launch"): "accelerate launch",
    ("lightning", "run"): "lightning run",
}
_LAUNCHER_MODULES = {
    "torch.distributed.run": "torchrun launcher (python -m torch.distributed.run)",
    "torch.distributed.launch": "torch.distributed.launch launcher",
    "deepspeed.launcher.runner": "deepspeed launcher",
    "deepspeed.launcher.launch": "deepspeed per-node launcher",
    "accelerate.commands.launch": "accelerate launch",
    "accelerate.commands.accelerate_cli": "accelerate launch",
}
_TRAINING_WORD = re.compile(r"train|finetune|fine_tune", re.IGNORECASE)
_PYTHON_EXECUTABLE = re.compile(r"^(python|pypy)(\d+(\.\d+)*)?[a-z]?$")
_PYTHON_OPTIONS_WITH_VALUE = {"-W", "-X", "-Q", "--check-hash-based-pycs"}
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


class WindowStats(BaseModel):
    """Min/mean/max of a quantity sampled over a short window: one instant lies."""

    min: float
    mean: float
    max: float
    samples: int

    @classmethod
    def from_values(cls, values: list[float]) -> "WindowStats | None":
        if not values:
            return None
        return cls(min=round(min(values), 1), mean=round(sum(values) / len(values), 1),
                   max=round(max(values), 1), samples=len(values))


class ProcessInfo(BaseModel):
    """One process as `ps` would show it, with rank and GPU use when known."""

    pid: int
    ppid: int | None = None
    name: str | None = None
    state: str | None = Field(None, description="psutil status: running, sleeping, disk-sleep, zombie, stopped, ...")
    role: ProcessRole = "process"
    user: str | None = None
    command: str | None = None
    command_truncated: bool = False
    rss_bytes: int | None = None
    age_seconds: float | None = None
    cpu_percent_lifetime: float | None = Field(None, description="CPU time / age; 100 = one core busy")
    cpu_percent_window: WindowStats | None = Field(None, description="CPU% over the sampling window (samples >= 2)")
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    gpus: list[int] = Field(default_factory=list, description="NVML indices of the GPUs this process holds a context on")
    gpu_memory_bytes: int | None = None
    unavailable: dict[str, str] = Field(default_factory=dict)


class TrainingProcess(ProcessInfo):
    """A training job's top process with its descendants (ranks and their helpers)."""

    match_reason: str
    children: list[ProcessInfo] = Field(default_factory=list)
    children_omitted: int = 0
    job_gpus: list[int] = Field(default_factory=list, description="GPUs used by this process or any child")


class MissingProcess(BaseModel):
    pid: int
    message: str


class ProcessIdentity(BaseModel):
    """Who a pid is (for NVML's process lists); `visible` is False when psutil cannot see it."""

    pid: int
    visible: bool
    ppid: int | None = None
    name: str | None = None
    state: str | None = None
    user: str | None = None
    command: str | None = None
    command_truncated: bool = False
    reason: str | None = None


@dataclass
class Discovery:
    """Discovered processes plus the live psutil handles a CPU sampler needs."""

    processes: list[TrainingProcess]
    omitted: int
    scanned: int
    missing: MissingProcess | None
    handles: dict[int, psutil.Process] = field(default_factory=dict)


def training_match(cmdline: list[str]) -> str | None:
    """Why this command line looks like a training job, or None.

    Only launchers and python interpreters qualify, so `tail -f train.log` or `vim train.py`
    do not; the python arguments are walked like the interpreter does to find the script or
    `-m` module.
    """
    if not cmdline:
        return None
    executable = os.path.basename(cmdline[0])
    launcher = _launcher_reason(executable, cmdline[1:])
    if launcher:
        return launcher
    if not _PYTHON_EXECUTABLE.match(executable):
        return None
    args = cmdline[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m" and i + 1 < len(args):
            return _module_reason(args[i + 1])
        if arg.startswith("-m") and len(arg) > 2:
            return _module_reason(arg[2:])
        if arg == "-c":
            return None  # inline code (multiprocessing helpers, one-liners): nothing to judge by
        if arg in _PYTHON_OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return _script_reason(arg, args[i + 1:])
    return None


def _launcher_reason(executable: str, rest: list[str]) -> str | None:
    if executable in _LAUNCHER_EXECUTABLES:
        return _LAUNCHER_EXECUTABLES[executable]
    first = rest[0] if rest else ""
    return _LAUNCHER_SUBCOMMANDS.get((executable, first))


def _module_reason(module: str) -> str | None:
    if module in _LAUNCHER_MODULES:
        return _LAUNCHER_MODULES[module]
    if module.split(".")[0] == "lightning":
        return f"lightning module '{module}'"
    if _TRAINING_WORD.search(module):
        return f"python -m {module} (training module)"
    return None


def _script_reason(script: str, rest: list[str]) -> str | None:
    base = os.path.basename(script)
    stem = base[:-3] if base.endswith(".py") else base
    launcher = _launcher_reason(stem, rest)
    if launcher:
        return launcher
    if _TRAINING_WORD.search(stem):
        return f"script '{base}' has 'train' in its name"
    if rest and rest[0] == "fit":
        return f"'{base} fit' (LightningCLI)"
    return None


def is_launcher_reason(reason: str) -> bool:
    return "launch" in reason or reason.startswith("lightning run")


def compile_name_pattern(name_pattern: str | None):
    """Validate the caller's regex; a bad one is a caller error worth a clear message."""
    if name_pattern is None:
        return None
    if not name_pattern.strip():
        raise ValueError("name_pattern is empty; pass a regular expression such as 'train|finetune', or omit it.")
    if len(name_pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"name_pattern is {len(name_pattern)} characters; keep it under {MAX_PATTERN_CHARS}.")
    from ml_debug_mcp.core.user_regex import compile_user_regex

    return compile_user_regex(name_pattern, "name_pattern")


def discover_training_processes(
    pid: int | None = None,
    name_pattern: str | None = None,
    *,
    limit: int = MAX_PROCESSES,
    command_chars: int = COMMAND_CHARS,
) -> Discovery:
    """Find training jobs: the given pid and regex matches, or the heuristic when neither is given.

    The server's own process and its ancestors are never auto-discovered (their command line
    may well say "train"). A process whose ancestor also matched is listed under that ancestor,
    so a torchrun job shows once with its ranks as children.
    """
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
        raise ValueError(f"pid must be a positive integer process id, got {pid!r}.")
    pattern = compile_name_pattern(name_pattern)
    excluded = _self_and_ancestors()

    reasons: dict[int, str] = {}
    scanned = 0
    found: dict[int, psutil.Process] = {}
    # One pass reading only what every process needs (its parent, its command line): the name is read
    # only where a pattern meets an empty command line (kernel threads), the age only for the matches.
    parent_of = _parent_map()
    attrs = ["cmdline"] if parent_of is not None else ["ppid", "cmdline"]
    parent_of = parent_of or {}
    for proc in psutil.process_iter(attrs):
        scanned += 1
        info = proc.info
        this = proc.pid
        if "ppid" in info:
            parent_of[this] = info["ppid"] or 0
        if this in excluded or this == pid:
            continue
        cmdline = info["cmdline"] or []
        if pattern is not None:
            text = " ".join(cmdline) or _name_or_empty(proc)
            if pattern.search(text):
                reasons[this] = f"command line matches name_pattern {pattern.pattern!r}"
                found[this] = proc
        elif pid is None:
            reason = training_match(cmdline)
            if reason:
                reasons[this] = reason
                found[this] = proc
    created = {p: _created_or_zero(proc) for p, proc in found.items()}

    missing = None
    if pid is not None:
        if psutil.pid_exists(pid):
            reasons[pid] = "pid given by the caller"
            parent_of.setdefault(pid, _ppid_or_zero(pid))
        else:
            missing = MissingProcess(pid=pid, message=f"process {pid} is not running: it exited or never existed")

    tops = [p for p in reasons if p == pid or not _has_matched_ancestor(p, reasons, parent_of)]
    tops.sort(key=lambda p: (p != pid, -created.get(p, 0.0)))  # the caller's pid first, then newest
    listed, omitted = tops[:limit], max(0, len(tops) - limit)

    children_of: dict[int, list[int]] = {}
    for child, parent in parent_of.items():
        children_of.setdefault(parent, []).append(child)
    handles: dict[int, psutil.Process] = {}
    processes = []
    for top in listed:
        described = _describe_training_process(top, reasons[top], children_of, command_chars, handles)
        if described is not None:
            processes.append(described)
        elif top == pid:
            missing = MissingProcess(pid=pid, message=f"process {pid} is not running: it exited while being inspected")
    return Discovery(processes=processes, omitted=omitted, scanned=scanned, missing=missing, handles=handles)


def _self_and_ancestors() -> set[int]:
    me = psutil.Process()
    pids = {me.pid}
    try:
        pids.update(p.pid for p in me.parents())
    except psutil.Error:
        pass
    return pids


def _parent_map() -> dict[int, int] | None:
    """{pid: ppid} of every process from psutil's own helper for `children()`, where the platform has it.

    It reads one stat file per process; `ppid` through process_iter costs a second one for psutil's
    pid-reuse check, a third of the pass. None: read ppid in the pass instead.
    """
    helper = getattr(getattr(psutil, "_psplatform", None), "ppid_map", None)
    if helper is None:
        return None
    try:
        return dict(helper())
    except Exception:  # an internal helper may change between psutil versions: fall back, never fail
        return None


def _name_or_empty(proc: psutil.Process) -> str:
    try:
        return proc.name() or ""
    except psutil.Error:
        return ""


def _created_or_zero(proc: psutil.Process) -> float:
    try:
        return proc.create_time()
    except psutil.Error:
        return 0.0


def _ppid_or_zero(pid: int) -> int:
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return 0


def _has_matched_ancestor(pid: int, matched: dict[int, str], parent_of: dict[int, int]) -> bool:
    seen = {pid}
    current = parent_of.get(pid, 0)
    while current and current not in seen:
        if current in matched:
            return True
        seen.add(current)
        current = parent_of.get(current, 0)
    return False


def _describe_training_process(
    pid: int, reason: str, children_of: dict[int, list[int]], command_chars: int,
    handles: dict[int, psutil.Process],
) -> TrainingProcess | None:
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return None
    base = _describe(proc, command_chars)
    role: ProcessRole = "launcher" if is_launcher_reason(reason) else base.role
    top = TrainingProcess(**base.model_dump(exclude={"role"}), role=role, match_reason=reason)
    handles[pid] = proc
    descendants = _descendants(pid, children_of)
    envs = {pid: (top.rank, top.local_rank)}
    children = []
    for child_pid in descendants:
        if len(children) == MAX_CHILDREN:
            top.children_omitted += 1
            continue
        try:
            child = psutil.Process(child_pid)
        except psutil.Error:
            continue  # exited since the scan
        info = _describe(child, command_chars)
        envs[info.pid] = (info.rank, info.local_rank)
        info.role = _child_role(info, envs)
        children.append(info)
        handles[child_pid] = child
    top.children = children
    return top


def _descendants(pid: int, children_of: dict[int, list[int]]) -> list[int]:
    """Every descendant from the scan's parent map, parents before their children.

    psutil's `children(recursive=True)` rescans all of /proc per call; the scan already has it.
    """
    found, frontier = [], [pid]
    seen = {pid}
    while frontier:
        next_frontier = []
        for parent in frontier:
            for child in sorted(children_of.get(parent, ())):
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    next_frontier.append(child)
        frontier = next_frontier
    return found


def _child_role(info: ProcessInfo, envs: dict[int, tuple[int | None, int | None]]) -> ProcessRole:
    """A rank is a process with RANK/LOCAL_RANK that its parent does not share.

    Dataloader workers inherit their rank's environment, so the same variables alone would
    call every helper a rank.
    """
    own = (info.rank, info.local_rank)
    if own == (None, None):
        return "subprocess"
    return "subprocess" if envs.get(info.ppid or 0) == own else "rank"


def _describe(proc: psutil.Process, command_chars: int) -> ProcessInfo:
    """Read every field separately so one refusal (AccessDenied, ZombieProcess) loses only it."""
    info = ProcessInfo(pid=proc.pid)
    unavailable = info.unavailable
    with proc.oneshot():
        info.ppid = _read(proc.ppid, "ppid", unavailable)
        info.name = _read(proc.name, "name", unavailable)
        info.state = _read(proc.status, "state", unavailable)
        info.user = _read(proc.username, "user", unavailable)
        cmdline = _read(proc.cmdline, "command", unavailable)
        if cmdline is not None:
            info.command, info.command_truncated = bound_command(cmdline, command_chars)
        memory = _read(proc.memory_info, "rss_bytes", unavailable)
        info.rss_bytes = memory.rss if memory is not None else None
        created = _read(proc.create_time, "age_seconds", unavailable)
        cpu = _read(proc.cpu_times, "cpu_percent_lifetime", unavailable)
    if created is not None:
        info.age_seconds = round(max(0.0, time.time() - created), 1)
        if cpu is not None:
            info.cpu_percent_lifetime = round(100.0 * (cpu.user + cpu.system) / max(info.age_seconds, 0.01), 1)
    env = _read(proc.environ, "rank", unavailable)
    if env is not None:
        info.rank, info.local_rank, info.world_size = (_int_or_none(env.get(name)) for name in _RANK_VARIABLES)
    else:
        unavailable["local_rank"] = unavailable["world_size"] = unavailable["rank"]
    return info


def identify_process(pid: int, command_chars: int = COMMAND_CHARS) -> ProcessIdentity:
    """Name a pid NVML reported; NVML gives host pids, so inside a container it may be invisible."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return ProcessIdentity(pid=pid, visible=False, reason=(
            "no such process in this PID namespace: it exited, or NVML reports host pids and this "
            "server runs in a container (run it with --pid=host to see them)"))
    except psutil.Error as exc:
        return ProcessIdentity(pid=pid, visible=False, reason=_psutil_reason(exc))
    unavailable: dict[str, str] = {}
    identity = ProcessIdentity(pid=pid, visible=True)
    with proc.oneshot():
        identity.ppid = _read(proc.ppid, "ppid", unavailable)
        identity.name = _read(proc.name, "name", unavailable)
        identity.state = _read(proc.status, "state", unavailable)
        identity.user = _read(proc.username, "user", unavailable)
        cmdline = _read(proc.cmdline, "command", unavailable)
    if cmdline is not None:
        identity.command, identity.command_truncated = bound_command(cmdline, command_chars)
    if unavailable:
        identity.reason = "; ".join(f"{k}: {v}" for k, v in unavailable.items())
    return identity


_SECRET_WORD = re.compile(r"token|passw|secret|api[_-]?key|access[_-]?key|auth|credential|private[_-]?key",
                          re.IGNORECASE)


def redact_command(cmdline: list[str]) -> list[str]:
    """Hide the values of secret-looking options (`--hf-token=x`, `--password x`, `API_KEY=x`).

    Other users' command lines are shown to an agent, and through it to a model: a token typed on
    a command line must not travel with them.
    """
    shown: list[str] = []
    hide_next = False
    for arg in cmdline:
        if hide_next:
            shown.append("***")
            hide_next = False
            continue
        key, sep, _value = arg.partition("=")
        if sep and _SECRET_WORD.search(key):
            shown.append(f"{key}=***")
        elif arg.startswith("-") and _SECRET_WORD.search(arg):
            shown.append(arg)
            hide_next = True
        else:
            shown.append(arg)
    return shown


def bound_command(cmdline: list[str], limit: int = COMMAND_CHARS) -> tuple[str, bool]:
    text = " ".join(redact_command(cmdline))
    if len(text) <= limit:
        return text, False
    return text[: max(0, limit - 1)] + "…", True


def _read(method, field_name: str, unavailable: dict[str, str]):
    try:
        return method()
    except psutil.Error as exc:
        unavailable[field_name] = _psutil_reason(exc)
        return None


def _psutil_reason(exc: psutil.Error) -> str:
    if isinstance(exc, psutil.ZombieProcess):
        return "the process is a zombie: it exited and only its exit status remains until the parent reaps it"
    if isinstance(exc, psutil.NoSuchProcess):
        return "the process exited while being inspected"
    if isinstance(exc, psutil.AccessDenied):
        return "permission denied: another user's process (run the server as that user or root to read it)"
    return f"{type(exc).__name__}: {exc}"


def _int_or_none(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


class CpuSampler:
    """CPU% of the discovered processes over the sampling window.

    psutil's `cpu_percent(None)` measures since the previous call on the same Process object,
    so the handles from discovery are primed once and then read at every sample.
    """

    def __init__(self, handles: dict[int, psutil.Process]) -> None:
        self._handles = dict(handles)
        self._values: dict[int, list[float]] = {pid: [] for pid in self._handles}
        for pid, proc in list(self._handles.items()):
            try:
                proc.cpu_percent(None)
            except psutil.Error:
                del self._handles[pid]

    def sample(self) -> None:
        for pid, proc in list(self._handles.items()):
            try:
                self._values[pid].append(proc.cpu_percent(None))
            except psutil.Error:
                del self._handles[pid]  # exited mid-window: keep what was measured

    def windows(self) -> dict[int, WindowStats]:
        stats = {pid: WindowStats.from_values(values) for pid, values in self._values.items()}
        return {pid: s for pid, s in stats.items() if s is not None}

    def apply(self, processes: list[TrainingProcess]) -> None:
        """Write each process's window into its model (top processes and children)."""
        windows = self.windows()
        for top in processes:
            for info in [top, *top.children]:
                info.cpu_percent_window = windows.get(info.pid)


def training_interpreters(roots: Roots, limit: int = 8) -> list[tuple[str, str]]:
    """(python, why) of running training processes working inside the roots, newest first.

    The path is the one the process was started with (its venv's `bin/python`), not /proc's
    resolved binary, which would lose the venv and its torch.
    """
    found = discover_training_processes(limit=limit)
    out: list[tuple[str, str]] = []
    for p in found.processes:
        proc = found.handles.get(p.pid)
        try:
            cmdline, cwd = proc.cmdline(), proc.cwd()
            python = _started_python(proc, cmdline, cwd)
        except (psutil.Error, AttributeError):
            continue
        if python is None or python in (x for x, _ in out):
            continue
        scripts = [Path(cwd, a) for a in cmdline[1:] if a.endswith(".py")]
        if any(roots.contains(Path(x).resolve()) for x in [cwd, *scripts]):
            out.append((python, f"running training process {p.pid} ({p.match_reason})"))
    return out


def _started_python(proc: psutil.Process, cmdline: list[str], cwd: str) -> str | None:
    first = cmdline[0] if cmdline else ""
    if _PYTHON_EXECUTABLE.match(os.path.basename(first)):
        if os.path.isabs(first) or os.sep in first:
            return os.path.join(cwd, first)
        try:
            path = proc.environ().get("PATH")
        except psutil.Error:
            path = None
        return shutil.which(first, path=path)
    try:
        env = proc.environ()
    except psutil.Error:
        env = {}
    for prefix in (env.get("VIRTUAL_ENV"), env.get("CONDA_PREFIX")):
        if prefix and os.path.isfile(os.path.join(prefix, "bin", "python")):
            return os.path.join(prefix, "bin", "python")
    exe = proc.exe()
    return exe if _PYTHON_EXECUTABLE.match(os.path.basename(exe)) else None
