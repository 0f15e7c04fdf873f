"""create_smoke_test's engine: render a regression test for a failure, write it atomically, run it apart.

The server never imports the user's code. An entrypoint is resolved inside the roots by the same
rules as the inspection tools (`core.worker.resolve_entrypoint`), and the factory's name is looked
up in the file's syntax tree; the generated test loads the factory with importlib only when pytest
runs it, in a subprocess in the worker's sandbox (core/model/sandbox.py), memory cap and timeout.
The generated source is parsed and compiled before it is written, and imports only torch, pytest,
the standard library and the user's module.
"""

from __future__ import annotations

import ast
import os
import re
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core import safe_fs
from ml_debug_mcp.core.diagnosis.catalogue import FAILURE_IDS, FailureId, failure_info
from ml_debug_mcp.core.model.interpreter import InterpreterChoice
from ml_debug_mcp.core.model.sandbox import CONFINE_FILE, Confinement, Policy, SandboxStatus
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.core.record.templates import HARNESS_IMPORTS, TEMPLATE_FOR_FAILURE, TEMPLATES, Template
from ml_debug_mcp.core.record.templates import contract_source
from ml_debug_mcp.core.record.templates import source as template_source

Outcome = Literal["passed", "failed", "skipped", "error", "not_run"]

MAX_OUTPUT_CHARS = 6000
MAX_INPUT_DIMS = 8
MAX_INPUT_ELEMENTS = 50_000_000
PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", "pytest.ini", "tox.ini", ".git")
ALLOWED_IMPORTS = frozenset({"torch", "pytest"}) | frozenset(sys.stdlib_module_names)
# Standard-library imports a generated file carries only when its code uses them (import: the use).
STDLIB_USES = {"import contextlib": "contextlib.", "import importlib": "importlib.import_module(", "import inspect": "inspect.",
               "import importlib.util": "importlib.util.", "import math": "math.", "import subprocess": "subprocess.",
               "import sys": "sys."}

_TEST_NAME = re.compile(r"^(test_[A-Za-z0-9_]*|[A-Za-z_][A-Za-z0-9_]*_test)\.py$")


class SmokeTestTimeout(ValueError):
    """The generated test ran past the worker timeout and was killed (the file stays)."""


class RunResult(BaseModel):
    outcome: Outcome
    returncode: int | None = None
    seconds: float | None = None
    output_tail: str = Field("", description=f"The end of pytest's output (at most {MAX_OUTPUT_CHARS} characters)")
    sandbox: SandboxStatus | None = None


class SmokeTestResult(BaseModel):
    path: str = Field(description="Absolute path of the generated test file")
    failure: FailureId
    template: str = Field(description="Which check was generated, e.g. 'finite_training' for nan_loss")
    checks: str = Field(description="What the test asserts, in one sentence")
    entrypoint: str | None = Field(description="The factory the test loads, or None for the built-in tiny model")
    bytes_written: int
    overwritten: bool
    ran: bool
    outcome: Outcome = Field(description="passed / failed / skipped / error after run=true; not_run otherwise")
    returncode: int | None = None
    output_tail: str = Field("", description=f"The end of pytest's output (at most {MAX_OUTPUT_CHARS} characters)")
    command: str = Field(description="How to run the test yourself, from the project folder")
    warnings: list[str] = Field(default_factory=list)
    summary: str
    interpreter: InterpreterChoice | None = Field(None, description="the Python the worker ran under, and why that one")
    sandbox: SandboxStatus | None = Field(None, description="the protections around the test run (after run=true)")


@dataclass(frozen=True)
class Factory:
    """Where the generated test finds the user's factory: a file loaded by path, or a module import."""

    label: str  # the entrypoint as the user gave it
    attribute: str
    file: Path  # the source file that defines it (read, never imported, by the server)
    module: str | None = None  # dotted name when it is imported (a module, or a file inside a package)
    import_base: Path | None = None  # the folder to put on sys.path for that import


# ------------------------------------------------------------------------------------------------
# Entrypoints, checked without importing anything


def top_level_names(source: str, filename: str) -> tuple[set[str], bool]:
    """Names a module defines at top level, and whether it can define others we cannot see
    (`from x import *` or a module `__getattr__`). Raises ValueError on a syntax error."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise ValueError(f"{filename} has a syntax error at line {exc.lineno}: {exc.msg}. Fix it before generating "
                         "a test against it.") from None
    names: set[str] = set()
    open_ended = False

    def visit(body: list[ast.stmt]) -> None:
        nonlocal open_ended
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
                continue
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name == "*":
                        open_ended = True
                    else:
                        names.add(alias.asname or alias.name.split(".")[0])
            for block in ("body", "orelse", "finalbody"):  # names bound inside top-level if/try/with/for
                visit(getattr(node, block, None) or [])
            for handler in getattr(node, "handlers", None) or []:
                visit(handler.body)

    visit(tree.body)
    return names, open_ended or "__getattr__" in names


def _check_factory_defined(file: Path, attribute: str, shown: str) -> None:
    try:
        source = safe_fs.read_bytes(file).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{shown} is not UTF-8 Python source.") from None
    names, open_ended = top_level_names(source, shown)
    head = attribute.split(".")[0]
    if head not in names and not open_ended:
        defined = sorted(n for n in names if not n.startswith("_"))[:12]
        raise ValueError(f"{shown} defines no top-level {head!r} (it defines: {', '.join(defined) or 'nothing'}). "
                         "Point the entrypoint at a zero-argument function that returns the model, or (model, batch).")


def package_of(file: Path) -> tuple[str, Path] | None:
    """(dotted name, folder to import from) for a file inside a package, so its relative imports work."""
    parts = [] if file.name == "__init__.py" else [file.stem]
    folder = file.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if folder == file.parent or not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts), folder


def check_entrypoint(roots: Roots, raw: str) -> Factory:
    """Resolve an entrypoint inside the roots (the inspection tools' rules) and check, by reading the
    source, that the factory is defined there. Raises ValueError saying what to change."""
    from ml_debug_mcp.core.model.worker import locate_module, resolve_entrypoint

    resolved = resolve_entrypoint(roots, raw)
    attribute = resolved.task["attr"]
    if "module" in resolved.task:
        module = resolved.task["module"]
        base, file = locate_module(roots, module)
    else:
        file = Path(resolved.task["file"])
        package = package_of(file)
        module, base = package if package is not None else (None, None)
    _check_factory_defined(file, attribute, resolved.label.rpartition(":")[0])
    return Factory(label=resolved.label, attribute=attribute, file=file, module=module, import_base=base)


# ------------------------------------------------------------------------------------------------
# Where things are


def template_for(failure: str) -> Template:
    if failure not in FAILURE_IDS:
        raise ValueError(f"unknown failure id {failure!r}; expected one of: {', '.join(FAILURE_IDS)}")
    return TEMPLATES[TEMPLATE_FOR_FAILURE[failure]]


def check_test_name(name: str) -> None:
    """A name pytest collects by default and imports cleanly: test_<name>.py or <name>_test.py."""
    if not _TEST_NAME.match(name):
        raise ValueError(f"{name or 'the path'} is not a test file name pytest collects: use test_<name>.py "
                         "(letters, digits and underscores), e.g. tests/test_nan_loss_regression.py.")


def check_test_path(path: Path) -> None:
    check_test_name(path.name)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass a file path inside it, e.g. {path / 'test_regression.py'}.")


def make_tests_folder(path: Path) -> bool:
    """Create the test's parent only when it is a missing folder named `tests` in an existing folder.

    Any other missing folder is more likely a typo, so the caller reports it instead of creating it.
    """
    parent = path.parent
    if parent.exists() or parent.name != "tests" or not parent.parent.is_dir():
        return False
    try:
        safe_fs.make_dir(parent)
    except FileExistsError:
        pass
    return True


def project_dir(test_path: Path, root: Path) -> Path:
    """The folder pytest runs from: the nearest ancestor of the test with a project marker
    (pyproject.toml, setup.py, pytest.ini, .git ...) without leaving `root`; else `root`."""
    for folder in test_path.parents:
        if not folder.is_relative_to(root):
            break
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder
    return root


# ------------------------------------------------------------------------------------------------
# Rendering


def _relative(target: Path, base: Path) -> str:
    return Path(os.path.relpath(target, base)).as_posix()


HARNESS_SECTION = """\
# === Harness ====================================================================================
# Everything below is the harness the tests above use: loading the factory, the factory contract
# (FACTORY_CONTRACT, CONTRACT_VERSION: the same code ml-debug-mcp's analyze_gradients and
# check_shapes run) and the training steps. Regenerate the file with create_smoke_test rather than
# edit it."""


def _doc_safe(text: str) -> str:
    """Text that can neither end the docstring nor start an escape sequence in it."""
    return text.replace("\\", "/").replace('"', "'")


def _docstring(failure: str, template: Template, factory: Factory | None, command: str) -> str:
    subject = (f"the factory {_doc_safe(factory.label)}" if factory is not None
               else "a tiny stand-in model defined at the end of this file (TODO: point it at your model)")
    about = textwrap.fill(f"It fails if the bug comes back: {template.checks}. It runs against {subject}.", 96)
    today = datetime.now(timezone.utc).date().isoformat()
    return "\n".join([
        f'"""Regression test for {failure_info(failure).title} (`{failure}`).', "", about, "",
        "The factory follows FACTORY_CONTRACT (in the harness at the end of this file): it takes no",
        "arguments and returns model, (model, batch) or (model, batch, loss_fn). Every test calls it",
        "afresh, seeded with SEED.", "",
        "The settings below are defaults; tune them to your run. Run it with:", f"    {_doc_safe(command)}", "",
        f"Generated by ml-debug-mcp's create_smoke_test on {today}.", '"""'])


def _section(title: str) -> str:
    return f"# --- {title} " + "-" * (92 - len(title))


def _constants(template: Template, factory: Factory | None, project: Path, test_path: Path,
               input_shape: list[int] | None) -> str:
    depth = len(test_path.parent.relative_to(project).parts)
    lines = [_section("What the test runs against"), f"PROJECT_ROOT = Path(__file__).resolve().parents[{depth}]"]
    if factory is not None:
        lines.append(f"ENTRYPOINT = {factory.label!r}")
        if factory.module is None:
            lines.append(f"FACTORY_FILE = {_relative(factory.file, project)!r}")
        else:
            lines += [f"FACTORY_MODULE = {factory.module!r}",
                      f"IMPORT_BASE = {_relative(factory.import_base or project, project)!r}"]
        lines.append(f"FACTORY_NAME = {factory.attribute!r}")
    shape = tuple(input_shape) if input_shape else None
    lines += ["# used when the factory returns only a model", f"INPUT_SHAPE = {shape!r}", "SEED = 0"]
    if template.constants:
        lines += ["", _section("The check's settings")]
        for name, value, comment in template.constants:
            lines += [f"# {comment}", f"{name} = {value!r}"]
    return "\n".join(lines)


def _imports(code: str) -> str:
    """The import block: the standard-library modules `code` uses, then pytest and torch."""
    plain = [line for line, use in STDLIB_USES.items() if use in code]
    return "\n".join(["from __future__ import annotations", "", *plain,
                      *sorted({*HARNESS_IMPORTS, "from pathlib import Path"}), "", "import pytest", "import torch"])


def render(failure: str, *, test_path: Path, project: Path, factory: Factory | None = None,
           input_shape: list[int] | None = None) -> tuple[Template, str]:
    """The template and the complete source of the test file (RuntimeError if a template would not compile)."""
    template = template_for(failure)
    if factory is None:
        loader = [template_source("load_stand_in")]
    else:
        loader = [template_source("load_file" if factory.module is None else "load_module"), template_source("resolve_attribute")]
    body = [*template.tests, HARNESS_SECTION, *loader, template_source("harness"), contract_source(),
            template.tiny_model if factory is None else "", template.main]
    code = "\n\n\n".join(part.strip("\n") for part in body if part)
    command = f"python -m pytest {_relative(test_path, project)} -q"
    head = [_docstring(failure, template, factory, command), _imports(code),
            _constants(template, factory, project, test_path, input_shape)]
    text = "\n\n".join(head) + "\n\n\n" + code + "\n"
    check_generated_source(text, test_path.name)
    return template, text


def check_generated_source(source: str, filename: str) -> None:
    """Parse and compile the source, and refuse imports beyond torch, pytest and the standard library."""
    try:
        tree = ast.parse(source, filename=filename)
        compile(tree, filename, "exec")
    except SyntaxError as exc:  # a template bug, never the caller's input
        raise RuntimeError(f"generated test does not compile: {exc}") from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            if module.split(".")[0] not in ALLOWED_IMPORTS:
                raise RuntimeError(f"generated test imports {module}, outside torch/pytest/stdlib")


# ------------------------------------------------------------------------------------------------
# Writing and running


def write_atomically(path: Path, source: str, *, overwrite: bool) -> int:
    """Write through a temp file in the same folder. Without `overwrite` the last step is a hard link,
    which fails if the name appeared meanwhile, so an existing file is never replaced."""
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    return safe_fs.write_atomic(path, source.encode("utf-8"), overwrite=overwrite)


# Runs inside the child: confine it (core/model/confine.py, loaded by path: first, before pytest imports
# anything of the user's), cap its address space (GPUs are hidden, so no CUDA context needs more) and
# core dumps, then hand over to pytest. Its last line carries a per-run mark with pytest's own exit code:
# a test that ends the interpreter early (os._exit(0) in a factory) exits 0 without it, which is no pass.
_CHILD = """
import importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("_ml_debug_mcp_confine", sys.argv[1])
confine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(confine)
confine.confine_from_environment()
limit = int(sys.argv[2]) * 2**20
if limit > 0:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import pytest
code = pytest.main(sys.argv[4:])
confine.kill_descendants()
print(f"\\n{sys.argv[3]} {int(code)}", flush=True)
sys.exit(code)
"""


def run_test(path: Path, *, cwd: Path, python: str, timeout: float, memory_mb: int = 0,
             policy: Policy | None = None) -> RunResult:
    """Run one test file with pytest in the inspection worker's sandbox (allowlisted environment, no
    visible GPU so it never takes memory from a training run, no network, writes only below the roots)
    and kill everything it started once pytest ends, or on timeout.

    The output is read on a thread: a child the test left running may hold the pipe open forever.
    """
    args = ["-q", "-p", "no:cacheprovider", "--no-header", "-rfEs", "--tb=short", f"--confcutdir={cwd}", str(path)]
    sandbox = Confinement(policy or Policy(roots=(str(cwd),)), cwd=cwd, readable=(str(path),))
    mark = f"ml-debug-mcp:pytest-exit:{secrets.token_hex(8)}"
    started = time.monotonic()
    try:
        proc = subprocess.Popen([python, "-B", "-c", _CHILD, str(CONFINE_FILE), str(memory_mb), mark, *args], cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                **sandbox.popen_kwargs())
    except OSError as exc:
        sandbox.finish(None)
        raise ValueError(f"Cannot start the test interpreter {python!r} ({exc}); set --python to the Python your "
                         "training uses (it needs torch and pytest).") from None
    finally:
        sandbox.started()
    output = bytearray()
    reader = threading.Thread(target=_drain, args=(proc.stdout, output), daemon=True)
    reader.start()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        sandbox.finish(proc)
        raise SmokeTestTimeout(f"the test ran longer than the worker timeout ({timeout:g} s) and was stopped, "
                               "with everything it started") from None
    status = sandbox.finish(proc)
    reader.join(5)
    text, finished = _strip_mark(bytes(output).decode("utf-8", errors="replace"), mark)
    if not finished:
        text += (f"\n[the test interpreter exited with {proc.returncode} before pytest finished: something in the "
                 "test ended the process (os._exit, a signal, a crash), so its result is unknown]")
    return RunResult(outcome=_outcome(proc.returncode, text) if finished else "error", returncode=proc.returncode,
                     seconds=round(time.monotonic() - started, 2), output_tail=_tail(text), sandbox=status)


def _strip_mark(text: str, mark: str) -> tuple[str, bool]:
    """The output without the end-of-run mark, and whether pytest reached it."""
    head, found, _ = text.rpartition(f"\n{mark} ")
    return (head, True) if found else (text, False)


def _drain(stream, sink: bytearray) -> None:
    """Read to EOF keeping a bounded tail (pytest's summary is at the end)."""
    while chunk := stream.read1(1 << 16):
        sink += chunk
        if len(sink) > 8 * MAX_OUTPUT_CHARS:
            del sink[:-4 * MAX_OUTPUT_CHARS]


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_OUTPUT_CHARS else "..." + text[-MAX_OUTPUT_CHARS:]


def _outcome(returncode: int, output: str) -> Outcome:
    """pytest's exit code, with 'all skipped' told apart from 'passed'."""
    if returncode == 0:
        last = output.strip().splitlines()[-1] if output.strip() else ""
        return "skipped" if "skipped" in last and "passed" not in last else "passed"
    if returncode == 1 and "No module named pytest" not in output:
        return "failed"
    return "error"


# ------------------------------------------------------------------------------------------------
# The whole job


def check_input_shape(input_shape: list[int] | None) -> None:
    if input_shape is None:
        return
    if not 1 <= len(input_shape) <= MAX_INPUT_DIMS or any(d < 1 for d in input_shape):
        raise ValueError(f"input_shape {input_shape} must have 1 to {MAX_INPUT_DIMS} positive sizes, batch first, "
                         "e.g. [8, 3, 32, 32].")
    elements = 1
    for d in input_shape:
        elements *= d
    if elements > MAX_INPUT_ELEMENTS:
        raise ValueError(f"input_shape {input_shape} has {elements:,} elements; a smoke test needs a small batch "
                         f"(at most {MAX_INPUT_ELEMENTS:,}).")


def create_smoke_test(path: Path, failure: str, *, root: Path, factory: Factory | None = None,
                      input_shape: list[int] | None = None, overwrite: bool = False, run: bool = False,
                      python: str = sys.executable, timeout: float = 120.0, memory_mb: int = 0,
                      policy: Policy | None = None) -> SmokeTestResult:
    """Render, write and optionally run the regression test for `failure` at `path` (inside `root`).

    Raises ValueError for a bad name or input_shape, an existing file without `overwrite`, or a run
    that timed out (SmokeTestTimeout; the file is kept).
    """
    template_for(failure)
    check_test_path(path)
    check_input_shape(input_shape)
    notes: list[str] = []
    if input_shape and factory is None:
        notes.append("input_shape is only used with an entrypoint whose factory returns just a model; the tiny "
                     "stand-in brings its own batch")
    project = project_dir(path, root)
    template, source = render(failure, test_path=path, project=project, factory=factory, input_shape=input_shape)
    existed = path.exists()
    try:
        written = write_atomically(path, source, overwrite=overwrite)
    except FileExistsError:
        raise ValueError(f"{path} already exists and was left untouched. Pick another path (e.g. "
                         f"{path.stem}_2.py) or pass overwrite=true to replace it.") from None
    command = f"python -m pytest {_relative(path, project)} -q  (from {project})"
    result = SmokeTestResult(path=str(path), failure=failure, template=template.name, checks=template.checks,
                             entrypoint=factory.label if factory is not None else None, bytes_written=written,
                             overwritten=existed, ran=False, outcome="not_run", command=command, warnings=notes,
                             summary="")
    if run:
        try:
            outcome = run_test(path, cwd=project, python=python, timeout=timeout, memory_mb=memory_mb, policy=policy)
        except SmokeTestTimeout as exc:
            raise SmokeTestTimeout(f"{path} was written, but running it failed: {exc}. Run it yourself with "
                                   f"`{command}` to see where it waits (a factory reading a slow file or the "
                                   "network, a collective, an input() call?), or raise the server's "
                                   "--worker-timeout.") from None
        result.ran, result.outcome = True, outcome.outcome
        result.returncode, result.output_tail, result.sandbox = outcome.returncode, outcome.output_tail, outcome.sandbox
    result.summary = _summary(result)
    return result


_VERDICTS = {
    "passed": "It passes: the fix is locked in.",
    "failed": "It FAILS: the bug is still there (or a setting needs tuning to your run); see output_tail.",
    "skipped": "It was skipped here; see output_tail for the reason.",
    "error": "pytest could not run it (a collection or import error); see output_tail.",
}


def _summary(result: SmokeTestResult) -> str:
    subject = (f"against {result.entrypoint}" if result.entrypoint
               else "against a tiny stand-in model (TODO: point it at yours with entrypoint=...)")
    verb = "Replaced" if result.overwritten else "Wrote"
    text = (f"{verb} {result.path} ({result.bytes_written} bytes, template {result.template}) {subject}: it checks "
            f"that {result.checks}.")
    if result.ran and result.outcome == "passed" and not result.entrypoint:
        return f"{text} It passes on the stand-in, which proves the file runs, not that your fix holds."
    if result.ran:
        return f"{text} {_VERDICTS[result.outcome]}"
    return f"{text} Run it with {result.command}."
