"""Run user model code in a separate, limited process and bring back one JSON result.

User code can segfault, allocate without bound, loop forever or call sys.exit; none of that may
take the server down, so it runs in `worker_main.py`, started by path under the user's interpreter
(`python -E -B path/worker_main.py`: works with any Python that has torch, ml_debug_mcp installed or
not; -E rather than -I so torch installed with `pip --user` is still found; -B so no .pyc lands
in user folders). The worker gets:
its own session, an address-space limit (RLIMIT_AS, no core dumps), the sandbox of `sandbox.py`
(an allowlisted environment, its own cgroup so everything it starts is killed after the call, no
network, no root, writes only below the roots), no visible GPU (it must not take memory from the
training run it is debugging), and the task as JSON on stdin. It answers on its stdout
with marker-prefixed lines; the marker is random per run, so nothing user code prints can pose as
the result. Everything read back is bounded.

This module imports no torch: the server imports it.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ml_debug_mcp.core.model.sandbox import Confinement, Policy, environment
from ml_debug_mcp.core.paths import PathOutsideRoots, Roots

WORKER_MAIN = Path(__file__).with_name("worker_main.py")
CONTRACT_FILE = Path(__file__).with_name("contract.py")
MAX_RESULT_BYTES = 32 << 20
STDERR_TAIL_BYTES = 32 << 10
STRAY_STDOUT_LINES = 20
_FAULT_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+) in (\S+)', re.M)

Progress = Callable[[float, float | None, str | None], None]


class WorkerError(ValueError):
    """The worker could not produce a result; the message says what happened and what to do.

    A ValueError, so the tool layer reports it as a clear tool error. `kind` is machine-readable
    (timeout, crashed, memory, user_exit, entry_import, factory_raised, unsafe_pickle, ...).
    """

    def __init__(self, kind: str, message: str, detail: dict | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail or {}


@functools.cache
def contract_text() -> str:
    """FACTORY_CONTRACT from contract.py, read from its syntax tree: the server never imports torch for it."""
    tree = ast.parse(CONTRACT_FILE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FACTORY_CONTRACT" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("contract.py defines no FACTORY_CONTRACT")


# ------------------------------------------------------------------------------------------------
# Entrypoints


@dataclass(frozen=True)
class Entrypoint:
    """'path/to/file.py:factory' (is_file) or 'package.module:factory'; attr may be dotted."""

    raw: str
    target: str
    attr: str
    is_file: bool


def parse_entrypoint(raw: str) -> Entrypoint:
    text = (raw or "").strip()
    target, sep, attr = text.rpartition(":")
    example = "e.g. 'train.py:build_model' or 'mypkg.models:make_model'"
    if not sep or not target or not attr:
        raise ValueError(f"The entrypoint {raw!r} needs the form 'file.py:factory' or 'package.module:factory' "
                         f"({example}): the part after ':' names a function that builds the model.")
    if not all(part.isidentifier() for part in attr.split(".")):
        raise ValueError(f"The factory name {attr!r} in entrypoint {raw!r} is not a Python name ({example}).")
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    if not is_file and not all(part.isidentifier() for part in target.split(".")):
        raise ValueError(f"{target!r} in entrypoint {raw!r} is neither a .py file path nor a dotted module name "
                         f"({example}).")
    return Entrypoint(raw=text, target=target, attr=attr, is_file=is_file)


def locate_module(roots: Roots, dotted: str) -> tuple[Path, Path]:
    """(root, file) of a dotted module inside the roots; modules outside them are refused (sandbox)."""
    relative = Path(*dotted.split("."))
    for root in roots.paths:
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file() and roots.contains(candidate.resolve()):
                return root, candidate.resolve()
    raise ValueError(
        f"The module {dotted!r} is not inside the allowed roots ({', '.join(str(r) for r in roots.paths)}). "
        f"Entrypoints run project code only: pass its file instead ('path/to/{relative}.py:factory'), or for an "
        "installed library write a two-line factory file in the project that imports and builds the model.")


@dataclass(frozen=True)
class ResolvedEntry:
    """Where the worker finds the factory, the folder it runs in, and how to name it to the user."""

    task: dict
    cwd: Path
    label: str


def resolve_entrypoint(roots: Roots, raw: str) -> ResolvedEntry:
    """Parse and sandbox an entrypoint: its file (or module) must lie inside the roots."""
    entry = parse_entrypoint(raw)
    if not entry.is_file:
        root, file = locate_module(roots, entry.target)
        return ResolvedEntry({"module": entry.target, "file": str(file), "sys_path": str(root), "attr": entry.attr},
                             root, entry.raw)
    try:
        path = roots.resolve(entry.target)
    except PathOutsideRoots as exc:
        raise ValueError(str(exc)) from None
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"The entrypoint file {path} {state}. Relative paths start at {roots.primary}; pass "
                         f"'path/to/file.py:{entry.attr}'.")
    if path.suffix != ".py":
        raise ValueError(f"The entrypoint file {path} is not a .py file; pass the Python file that defines "
                         f"{entry.attr}().")
    root = next((r for r in roots.paths if path.is_relative_to(r)), roots.primary)
    return ResolvedEntry({"file": str(path), "root": str(root), "attr": entry.attr}, root,
                         f"{entry.target}:{entry.attr}")


# ------------------------------------------------------------------------------------------------
# Running the worker


def worker_environment(gpu: int | None = None) -> dict[str, str]:
    """The environment user code sees (sandbox.environment: an allowlist, GPUs hidden, threads bounded)."""
    return environment(gpu=gpu)


def _limit_resources(memory_mb: int, gpu: bool = False) -> Callable[[], None]:
    """preexec_fn: only async-signal-safe-ish C calls on an already imported module (no imports, no locks).

    With a GPU the address-space limit is left off: a CUDA context maps far more virtual memory than it uses.
    """
    wanted = memory_mb << 20 if not gpu else resource.RLIM_INFINITY
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = wanted if hard == resource.RLIM_INFINITY else hard if wanted == resource.RLIM_INFINITY else min(wanted, hard)

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


class _Reader:
    """Drains the worker's stdout (protocol lines) and stderr (a bounded tail) on two threads."""

    def __init__(self, proc: subprocess.Popen, marker: str, progress: Progress | None) -> None:
        self.marker = marker.encode()
        self.progress = progress
        self.result: bytes | None = None
        self.result_too_large = False
        self.phase = "starting the worker"
        self.stray: deque[str] = deque(maxlen=STRAY_STDOUT_LINES)
        self.stderr = bytearray()
        self.threads = [threading.Thread(target=self._stdout, args=(proc.stdout,), daemon=True),
                        threading.Thread(target=self._stderr, args=(proc.stderr,), daemon=True)]
        for t in self.threads:
            t.start()

    def _stdout(self, stream) -> None:
        while True:
            line = stream.readline(MAX_RESULT_BYTES + 1)
            if not line:
                return
            if not line.startswith(self.marker + b" "):
                self.stray.append(line[:300].decode(errors="replace").rstrip())
                continue
            kind, _, body = line[len(self.marker) + 1:].partition(b" ")
            if kind == b"result":
                if len(line) > MAX_RESULT_BYTES or not line.endswith(b"\n"):
                    self.result_too_large = True
                    while line and not line.endswith(b"\n"):
                        line = stream.readline(1 << 20)
                else:
                    self.result = body
            elif kind == b"progress":
                self._on_progress(body)

    def _on_progress(self, body: bytes) -> None:
        try:
            update = json.loads(body)
        except ValueError:
            return
        self.phase = str(update.get("message") or self.phase)
        if self.progress is not None:
            done, total = update.get("done"), update.get("total")
            self.progress(float(done) if isinstance(done, (int, float)) else 0.0,
                          float(total) if isinstance(total, (int, float)) else None, self.phase)

    def _stderr(self, stream) -> None:
        while True:
            chunk = stream.read1(1 << 16)
            if not chunk:
                return
            self.stderr += chunk
            if len(self.stderr) > 2 * STDERR_TAIL_BYTES:
                del self.stderr[:-STDERR_TAIL_BYTES]

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)

    def stderr_tail(self, lines: int = 12) -> str:
        text = bytes(self.stderr[-STDERR_TAIL_BYTES:]).decode(errors="replace")
        return "\n".join(text.rstrip().splitlines()[-lines:])


def run_worker(task: dict, python: str, timeout: float, memory_mb: int, cwd: Path,
               progress: Progress | None = None, policy: Policy | None = None) -> dict:
    """Run one task (see worker_main) in a fresh sandboxed process and return its result dict, with the
    sandbox's status under "sandbox"; see _run. Without a policy user code may write only below `cwd`."""
    gpu = gpu_index(task.get("device"))
    return _run(task, python, timeout, memory_mb, cwd, progress, gpu, policy or Policy(roots=(str(cwd),)))


def gpu_index(device: str | None) -> int | None:
    """'cuda:1' -> 1, 'cuda' -> 0, 'cpu'/None -> None; ValueError for anything else."""
    text = (device or "cpu").strip().lower()
    if text == "cpu":
        return None
    match = re.fullmatch(r"cuda(?::(\d{1,2}))?", text)
    if not match:
        raise ValueError(f"device={device!r}: use 'cpu' (the default) or a named GPU such as 'cuda:0' or 'cuda:1'.")
    return int(match.group(1) or 0)


def _run(task: dict, python: str, timeout: float, memory_mb: int, cwd: Path, progress: Progress | None,
         gpu: int | None, policy: Policy) -> dict:
    """Run one task (see worker_main) in a fresh limited process and return its result dict.

    Raises WorkerError, with what happened and what to do, for every way the worker can fail:
    timeout, signal (segfault, OOM kill), memory limit, sys.exit, an exception in user code, a bad
    entrypoint or factory, an unsafe checkpoint, or an interpreter that cannot start or lacks torch.
    """
    marker = "@@ml-debug-mcp:" + secrets.token_hex(12)
    payload = json.dumps({**task, "marker": marker}).encode()
    entry = task.get("entry") or {}
    sandbox = Confinement(policy, cwd=cwd, gpu=gpu, readable=tuple(entry[k] for k in ("file", "sys_path") if k in entry))
    try:
        proc = subprocess.Popen([python, "-E", "-B", str(WORKER_MAIN)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=str(cwd), close_fds=True, **sandbox.popen_kwargs(),
                                preexec_fn=_limit_resources(memory_mb, gpu is not None))
    except OSError as exc:
        sandbox.finish(None)
        raise WorkerError("interpreter", f"Cannot start the worker interpreter {python!r} ({exc}). Set --python "
                                         "(ML_DEBUG_MCP_PYTHON) to the Python your training uses (it needs torch).") from None
    finally:
        sandbox.started()
    reader = _Reader(proc, marker, progress)
    timed_out = False
    try:
        threading.Thread(target=_feed, args=(proc, payload), daemon=True).start()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        status = sandbox.finish(proc)  # kills everything user code left running, setsid'd or daemonised
        reader.join(5)
    if timed_out:
        raise WorkerError("timeout", f"The worker did not finish within {timeout:g} s (it was {reader.phase}) and "
                                     "was killed with everything it started. If the code is stuck in a loop or "
                                     "waiting for input, fix that; if it is just slow, use smaller input_shapes or "
                                     "fewer steps, or raise --worker-timeout.", {"phase": reader.phase})
    if reader.result_too_large:
        raise WorkerError("result_too_large", f"The worker's result exceeded {MAX_RESULT_BYTES >> 20} MB; the model "
                                              "is too large to report in full.")
    if reader.result is not None:
        try:
            reply = json.loads(reader.result)
        except ValueError as exc:
            raise WorkerError("protocol", f"The worker sent an unreadable result ({exc}).") from None
        if reply.get("ok"):
            return {**reply["result"], "sandbox": status.model_dump()}
        raise explain_failure(reply.get("error") or {}, python=python, memory_mb=memory_mb, task=task)
    raise _explain_exit(proc.returncode, reader, memory_mb)


def _feed(proc: subprocess.Popen, payload: bytes) -> None:
    try:
        proc.stdin.write(payload)
        proc.stdin.close()
    except OSError:  # the worker died before reading its task; the exit status says why
        pass


def _explain_exit(code: int, reader: _Reader, memory_mb: int) -> WorkerError:
    where = f" while {reader.phase}"
    frame = _last_fault_frame(reader.stderr_tail(40))
    at = f" Last Python frame: {frame}." if frame else ""
    tail = "\n".join(line for line in reader.stderr_tail(40).splitlines()
                     if not _FAULT_FRAME.match(line) and "Fatal Python error" not in line
                     and not line.startswith(("Current thread", "Thread 0x", "Extension modules"))
                     and line.strip())
    tail = "\n".join(tail.splitlines()[-6:])
    stderr = f" Its stderr ended with:\n{tail}" if tail else ""
    if code < 0:
        sig = -code
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGSEGV:
            text = (f"The worker crashed with a segmentation fault (SIGSEGV){where}: native code (a C/C++/CUDA "
                    f"extension, or a library bug) touched invalid memory.{at} The server is unaffected; run the "
                    "factory under `python -X faulthandler` to see the full native stack.")
        elif sig == signal.SIGKILL:
            text = (f"The worker was killed (SIGKILL){where}, most likely by the kernel's out-of-memory killer: the "
                    f"host ran out of memory. Use smaller input_shapes or a smaller model.{at}")
        elif sig == signal.SIGABRT:
            text = (f"The worker aborted (SIGABRT){where}: native code hit a fatal error, often a failed allocation "
                    f"under the {memory_mb} MiB memory limit (raise --worker-memory-mb) or a failed assertion.{at}")
        else:
            text = f"The worker died from {name}{where}.{at}"
        return WorkerError("crashed", text + stderr, {"signal": name, "phase": reader.phase})
    return WorkerError("exited", f"The worker exited with code {code}{where} without reporting a result (user code "
                                 f"may have called os._exit, or the interpreter could not run the worker).{stderr}",
                       {"exit_code": code, "phase": reader.phase})


def _last_fault_frame(stderr: str) -> str | None:
    """faulthandler prints the crashing thread's Python stack, most recent call first."""
    frames = [m for m in _FAULT_FRAME.finditer(stderr) if not m.group(1).endswith("worker_main.py")]
    return f'{frames[0].group(1)}:{frames[0].group(2)} in {frames[0].group(3)}' if frames else None


# ------------------------------------------------------------------------------------------------
# Worker-reported failures -> specific messages


def _frame_text(error: dict) -> str:
    frame = error.get("user_frame")
    if not frame:
        return ""
    code = f": {frame['code']}" if frame.get("code") else ""
    return f" (at {frame['file']}:{frame['line']} in {frame['function']}{code})"


def _cause(error: dict) -> str:
    return f"{error.get('exc_type', 'Error')}: {error.get('message', '')}".strip()


def explain_failure(error: dict, *, python: str, memory_mb: int, task: dict) -> WorkerError:
    """One sentence of what happened (with the user's frame) and one of what to do, per failure kind."""
    kind, phase = error.get("kind", "internal"), error.get("phase", "running")
    entry = task.get("entry") or {}
    where = entry.get("file") or entry.get("module") or "the entrypoint"
    factory = f"{where}:{entry.get('attr', '?')}"
    frame = _frame_text(error)
    messages = {
        "no_torch": f"The worker interpreter ({error.get('python') or python}) cannot import torch ({_cause(error)}). "
                    "Set --python (ML_DEBUG_MCP_PYTHON) to the interpreter your training uses.",
        "entry_missing": f"The entrypoint file {error.get('file')} does not exist (any more).",
        "entry_shadowed": f"The module name {error.get('module')!r} imports {error.get('loaded')}, not the project's "
                          f"{error.get('expected')} (another module of that name comes first, e.g. the standard "
                          "library). Pass the file instead ('path/to/file.py:factory') or rename the module.",
        "entry_import": f"Importing {where} failed with {_cause(error)}{frame}. Fix that error; the file is imported "
                        "as a module, so its `if __name__ == '__main__':` block does not run.",
        "entry_attribute": _attribute_message(error, where),
        "factory_raised": f"The factory {factory} raised {_cause(error)}{frame}. It is called with no arguments and "
                          "must build the model (and optionally a batch and loss_fn).",
        "factory_result": f"The factory {factory} does not fit the contract: {error.get('message', '')}",
        "factory_contract": f"The factory {factory} cannot be called: {error.get('message', '')}",
        "meta_value": f"The factory {factory} read a tensor's value ({_cause(error)}){frame} while check_shapes built "
                      "it on the meta device, where tensors have shapes but no values (so a 7B model costs no "
                      "memory). Move that read (.item(), .tolist(), bool(t), printing a tensor) out of the model's "
                      "construction, or pass meta=false to build real weights (needs the memory).",
        "meta_unsupported": f"The forward pass cannot run on the meta device ({error.get('reason')}{error.get('where')}) "
                            f"and real weights would need {error.get('needed_mb')} MiB, above the "
                            f"{error.get('budget_mb')} MiB allowed for the fallback. Move value reads (.item(), "
                            "data-dependent shapes) out of forward, or trace a smaller configuration.",
        "no_cuda": f"device={error.get('device')!r} was requested, but the worker sees no CUDA GPU on this host "
                   "(no driver, or no such index). Leave device='cpu' (the default), or run the server on the GPU "
                   "host and name a GPU it has (gpu_status lists them).",
        "device_failed": f"Moving the model and batch to the GPU raised {_cause(error)}{frame}.",
        "step_failed": f"The {error.get('phase', 'step')} raised {_cause(error)}{frame}. If that is a shape error, "
                       "call check_shapes with the same entrypoint to see which layer disagrees; if the loss was "
                       "called the wrong way, rename loss_fn's parameters (model, batch) or (output, target), or "
                       "pass loss='mse', 'cross_entropy' or 'sum'.",
        "no_inputs": f"The factory {factory} returned only the model, so there is no batch to run: pass "
                     "input_shapes (one shape per forward argument, batch dimension included), or make the factory "
                     "return (model, batch).",
        "no_trainable": "The model has no parameter with requires_grad=True, so there are no gradients to analyse "
                        f"({error.get('params', 0)} parameters, all frozen).",
        "user_exit": f"User code called sys.exit({error.get('exit_code')}) while {phase}{frame}. Move that call "
                     "under `if __name__ == '__main__':` or out of the factory.",
        "memory": f"The worker ran out of memory while {phase} (limit {memory_mb} MiB): {_cause(error)}{frame}. Use "
                  "smaller input_shapes or a smaller model, or raise --worker-memory-mb.",
        "backward_failed": f"The backward pass raised {_cause(error)}{frame}.",
        "optimizer_failed": f"The optimizer step raised {_cause(error)}{frame}.",
        "unsafe_pickle": f"Refusing to load {error.get('file')}: it is not a plain weights file "
                         f"(it needs {error.get('global_name') or 'an arbitrary Python object'}), and unpickling "
                         "arbitrary objects can run code, so checkpoints are only read with "
                         "torch.load(weights_only=True). Save model.state_dict() instead, or convert it to "
                         "safetensors.",
        "checkpoint_unreadable": f"Could not read the checkpoint while {phase}: {_cause(error)}. Pass a safetensors "
                                 "file or a torch.save() file of a state_dict.",
        "checkpoint_empty": f"{error.get('file')} holds no tensors (top-level keys: "
                            f"{', '.join(error.get('top_keys') or []) or 'none'}).",
        "missing_package": f"The worker interpreter lacks the {error.get('package')} package needed while {phase}; "
                           f"install it there (pip install {error.get('package')}).",
    }
    text = messages.get(kind) or f"The worker failed while {phase}: {_cause(error)}{frame}."
    return WorkerError(kind, text, {k: v for k, v in error.items() if k != "traceback"})


def _attribute_message(error: dict, where: str) -> str:
    attr = error.get("attribute")
    if error.get("not_callable"):
        return f"{where}: {attr} is a {error['not_callable']}, not a function; name a factory that builds the model."
    available = error.get("available") or []
    listed = f" Functions and classes it defines: {', '.join(available)}." if available else ""
    return f"{where} has no attribute {attr!r}.{listed}"
