"""The attacks of the abuse suite, sized by one budget, and the table they report to.

CI runs every attack at the bounded budget (tests/test_abuse.py, tests/test_path_races.py,
tests/test_sandbox.py). `python bench/abuse.py` runs the same tests at the full budget and prints one
table of attempts and bad outcomes from the rows each attack records here.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass

FULL = os.environ.get("ML_DEBUG_MCP_ABUSE") == "full"
REPORT = os.environ.get("ML_DEBUG_MCP_ABUSE_REPORT")


@dataclass(frozen=True)
class Budget:
    race_seconds: float  # each check-then-use race
    load_sessions: int  # concurrent HTTP sessions
    load_calls: int  # calls per session
    fuzz_calls: int  # fuzzed tool calls over stdio
    hostile_tools: tuple[str, ...]  # tools every hostile factory is sent to


BOUNDED = Budget(race_seconds=2.5, load_sessions=4, load_calls=30, fuzz_calls=200,
                 hostile_tools=("check_shapes",))
BUDGET = Budget(race_seconds=20.0, load_sessions=16, load_calls=600, fuzz_calls=2000,
                hostile_tools=("check_shapes", "analyze_gradients", "create_smoke_test")) if FULL else BOUNDED


@dataclass
class Row:
    attack: str
    attempts: int
    bad: int
    detail: str = ""


def record(attack: str, attempts: int, bad: int, detail: str = "") -> Row:
    """Add one row to the abuse table (a JSON line in $ML_DEBUG_MCP_ABUSE_REPORT when it is set)."""
    row = Row(attack, attempts, bad, detail)
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(row)) + "\n")
    return row


# --- static path escapes -----------------------------------------------------------------------

def escape_paths(root: str, outside: str) -> list[str]:
    """Paths that name something outside `root` (or not a regular file) in every way we know of."""
    secret = f"{outside}/secret.log"
    rel = os.path.relpath(secret, root)
    return [
        secret, rel, f"./{rel}", f"{root}/{rel}", f"{root}/../{os.path.basename(outside)}/secret.log",
        rel.replace("..", "%2e%2e"), rel.replace("/", "%2f"), rel.replace("/", "\\"), f"{rel}\x00.log",
        f"{root}/link_out/secret.log", "link_out/secret.log", "link_file.log", f"{root}/link_file.log",
        "link_chain.log", "link_abs_dir/secret.log", "link_loop.log",
        "/etc/passwd", "/etc/shadow", "/proc/self/environ", "/proc/self/cmdline", "/proc/self/mem",
        f"/proc/{os.getpid()}/environ", "/proc/1/environ", f"/proc/self/root{secret}", f"/proc/self/cwd/{rel}",
        "/proc/self/fd/0", "/proc/self/fd/2", "/dev/zero", "/dev/urandom", "/dev/stdin", "/dev/tty",
        "/dev/null", "/sys/kernel/notes", "~/.ssh/id_rsa", "~root/.bashrc", "$HOME/.bashrc",
        f"file://{secret}", f"file://localhost{secret}", "fifo.log", f"{root}/fifo.log",
        "//" + secret.lstrip("/"), f"{root}//..//..{secret}", "../" * 40 + "etc/passwd",
        "a/" * 600 + "x.log", "\u2025/secret.log", "..\u2215secret.log", f"{root}/.", "/", ".." ,
    ]


def plant_escape_targets(root, outside, secret_text: str) -> None:
    """The links and special files `escape_paths` names inside `root`."""
    (outside / "secret.log").write_text(f"step 1 | loss 9.9 {secret_text}\n" * 5)
    (root / "link_out").symlink_to(outside)
    (root / "link_file.log").symlink_to(outside / "secret.log")
    (root / "link_mid.log").symlink_to(outside / "secret.log")
    (root / "link_chain.log").symlink_to(root / "link_mid.log")
    (root / "link_abs_dir").symlink_to(os.path.abspath(outside))
    (root / "link_loop.log").symlink_to(root / "link_loop.log")
    os.mkfifo(root / "fifo.log")


# --- fuzzed arguments --------------------------------------------------------------------------

NASTY_STRINGS = ["", " ", "\x00", "../../../../etc/passwd", "/proc/self/environ", "/dev/zero", "%s%n%x",
                 "{0}{1}{__class__}", "(a+)+$", "((((((((((a*)*)*)*)*)*)*)*)*)*)*b", "[", "*", "\\",
                 "A" * 100_000, "é漢字🙂", "\u202e", "\r\n" * 50, "nan", "-1", "1e309", "true",
                 "train.log", "runs", "journal.md", "model.py:build", "model.py:", ":build", "os:system",
                 "builtins:eval", "subprocess:run", "/tmp", "file:///etc/passwd", "trackio://x/y",
                 "mlflow://1/2", "http://127.0.0.1:1/", "${HOME}", "$(id)", "`id`"]
REAL_STRINGS = ["train.log", "train.log", "runs", "runs/a.log", "journal.md", "notes/journal.md", "loss",
                "test_fuzz.py", "tests/test_fuzz_regression.py", "nan_loss", "oom", "healthy", "float16",
                "cpu", "adam", "cross_entropy", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
                "step 1 | loss nan\nstep 2 | loss nan", "loss", "sgd", "mse"]
NASTY_NUMBERS = [0, -1, 1, 2, 7, 2**31, -(2**31), 2**63, 10**30, 0.5, -0.0, 1e-300, 1e308]
LOGS = ["train.log", "runs/a.log", "runs", "journal.md"]
PATH_FIELDS = {"path": LOGS + ["notes/journal.md", "tests/test_fuzz_regression.py", "test_fuzz.py"],
               "log_path": LOGS, "before_path": LOGS, "after_path": LOGS, "source": LOGS, "log": LOGS,
               "code_path": ["train.log"], "entrypoint": ["model.py:build", "os:getcwd"]}
# Numbers a server may legitimately wait on: fuzz them small, so a call is bounded by design.
WAIT_FIELDS = {"seconds", "poll_seconds", "idle_seconds", "interval", "samples", "steps"}


def _number(schema: dict, rng: random.Random, integer: bool, plausible: bool):
    """In range half the time (so the call reaches the tool's own code), hostile the other half."""
    if plausible or rng.random() < 0.5:
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = min(schema.get("maximum", schema.get("exclusiveMaximum", 100)), low + 100)
        return rng.randint(int(low), int(high)) if integer else rng.uniform(low, high)
    return rng.choice(NASTY_NUMBERS[:8] if integer else NASTY_NUMBERS + [math.inf, -math.inf, math.nan])


def fuzz_value(schema: dict, rng: random.Random, name: str = "", depth: int = 0, plausible: bool = False):
    """A value for one field: mostly of a type the schema allows with hostile content, rarely of the wrong type.

    `plausible` keeps to realistic strings and in-range numbers, so the call gets past validation into the tool.
    """
    if not plausible and rng.random() < 0.04:
        return rng.choice([None, True, 3, -7.5, "x", [], {}, [1, "a"], {"k": [None]}])
    options = [schema] if "type" in schema else schema.get("anyOf", [])
    chosen = rng.choice([o for o in options if o.get("type") not in (None, "null")] or [{"type": "null"}])
    kind = chosen.get("type")
    if name in WAIT_FIELDS and kind in ("integer", "number"):
        return rng.choice([0, -1, 1, 0.01, 0.3, 2, math.inf, math.nan] if kind == "number" else [0, -1, 1, 2, 10**12])
    if kind == "string":
        if chosen.get("enum"):
            return rng.choice(chosen["enum"] + ([] if plausible else NASTY_STRINGS[:3]))
        if plausible and name in PATH_FIELDS:
            return rng.choice(PATH_FIELDS[name])
        return rng.choice(REAL_STRINGS if plausible else NASTY_STRINGS + REAL_STRINGS)
    if kind in ("integer", "number"):
        return _number(chosen, rng, kind == "integer", plausible)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array" and depth < 2:
        sizes = [1, 2, 3] if plausible else [0, 1, 2, 3, 50]
        return [fuzz_value(chosen.get("items", {}), rng, depth=depth + 1, plausible=plausible)
                for _ in range(rng.choice(sizes))]
    if kind == "object":  # classify_failure's series: names to values, some of them not finite
        return {rng.choice(["loss", "grad_norm", "reward", "val_loss", "lr", *NASTY_STRINGS[:8]]):
                [rng.choice([1.0, 0.5, 1e30, -1e30, 0.0, math.nan, math.inf]) * rng.random()
                 for _ in range(rng.choice([0, 1, 3, 40, 500]))] for _ in range(rng.randint(0, 3))}
    return None


def fuzz_arguments(input_schema: dict, rng: random.Random) -> dict:
    """Arguments for one call: each field kept or dropped, required ones now and then missing, extras added."""
    properties, required = input_schema.get("properties", {}), set(input_schema.get("required", []))
    plausible = rng.random() < 0.4
    args = {k: fuzz_value(v, rng, k, plausible=plausible) for k, v in properties.items()
            if (k in required and (plausible or rng.random() > 0.03)) or rng.random() < 0.4}
    if not plausible and rng.random() < 0.03:
        args[rng.choice(["__proto__", "extra", "path\x00", ""])] = "x"
    return args


# --- hostile model factories -------------------------------------------------------------------

HOSTILE_HEADER = '''\
import ctypes, os, signal, subprocess, sys, time

import torch
from torch import nn


def _fine():
    return nn.Linear(4, 2), torch.randn(2, 4)
'''

# name -> factory body; each must come back from the server as a tool error, quickly and in order.
HOSTILE_FACTORIES = {
    "segfault": "ctypes.string_at(0)",
    "abort": "os.abort()",
    "sys_exit": "sys.exit(3)",
    "os_exit_zero": "os._exit(0)",
    "raises": "raise RuntimeError('factory failed on purpose')",
    "recursion": "def f(n): return f(n + 1)\n    f(0)",
    "reads_stdin": "sys.stdin.read()\n    raise SystemExit('stdin gave nothing')",
    "hangs": "while True: time.sleep(0.05)",
    "busy_loop": "while True: pass",
    "allocates_50_gib": "x = bytearray(50 << 30)\n    return x",
    "stdout_garbage": "print('{\"jsonrpc\": \"2.0\", \"id\": 1, \"result\": {}}' * 1000)\n    raise SystemExit(1)",
    "wrong_type": "return 42",
    "sigkill_self": "os.kill(os.getpid(), signal.SIGKILL)",
    "signals_the_server": "for pid in {os.getppid(), os.getpgid(0)}:\n        os.kill(pid, signal.SIGKILL)",
    "ignores_sigterm": "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True: time.sleep(0.05)",
}
BOUNDED_HOSTILE = ("segfault", "sys_exit", "os_exit_zero", "raises", "reads_stdin", "hangs", "wrong_type")


def hostile_source() -> str:
    return HOSTILE_HEADER + "".join(f"\n\ndef {name}():\n    {body}\n" for name, body in HOSTILE_FACTORIES.items())


def hostile_names() -> tuple[str, ...]:
    return tuple(HOSTILE_FACTORIES) if FULL else BOUNDED_HOSTILE
