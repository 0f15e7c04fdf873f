"""Static scan of a training script (with `ast`) for the anti-patterns behind common failures.

The rules encode the seeds' lessons: host-device sync points inside the training loop,
log/sqrt/division without an epsilon, backward() without zero_grad(), state carried across
iterations without .detach() (the CVFP "backward through the graph a second time" bug),
F.normalize inside an MSE fixed-point loss (matches direction only), retain_graph=True as a
band-aid, and no gradient clipping. Findings are evidence, not verdicts: `code_hypotheses`
turns them into hypotheses, and raises confidence when another detector saw the matching
symptom (`signals`).
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import tokenize
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core import safe_fs
from ml_debug_mcp.core.diagnosis.catalogue import FailureId, failure_info
from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Fix, Hypothesis, NextStep

MAX_CODE_BYTES = 2_000_000
"""Larger files are refused: a training script this big is generated or vendored code."""

Severity = Literal["error", "warning", "info"]


class CodeFinding(BaseModel):
    """One anti-pattern at one place in the source."""

    rule: str
    line: int = Field(description="1-based line (0 when the finding is about the whole file)")
    column: int = Field(description="0-based column")
    snippet: str
    message: str
    failures: list[FailureId] = Field(default_factory=list)
    severity: Severity = "warning"
    fix: Fix | None = None


@dataclass(frozen=True)
class _RuleInfo:
    severity: Severity
    failures: tuple[FailureId, ...]
    confidence: float  # of the hypothesis from this finding alone
    confirmed: float  # when another detector saw one of `failures`
    fix: Fix | None


def _fix(action: str, effect: str) -> Fix:
    return Fix(action=action, expected_effect=effect)


RULES: dict[str, _RuleInfo] = {
    "carried_state_no_detach": _RuleInfo(
        "error",
        ("graph_reuse",),
        0.6,
        0.95,
        _fix(
            "Detach the carried state at the iteration boundary: pass `state.detach()` into the call (or assign "
            "`state = state.detach()` at the top of the loop)",
            "Each backward() only traverses the current iteration's graph: no 'backward through the graph a second "
            "time' error, and memory stops growing with the number of iterations",
        ),
    ),
    "normalize_in_mse": _RuleInfo(
        "warning",
        ("rank_collapse", "plateau"),
        0.4,
        0.8,
        _fix(
            "Compare raw values in the MSE (F.mse_loss(new, target)); if direction really is the goal, use an explicit "
            "cosine loss and track the norms separately",
            "The loss asks for equal values, so a fixed point is reachable and the norms stop drifting",
        ),
    ),
    "missing_zero_grad": _RuleInfo(
        "warning",
        ("divergence", "exploding_gradients"),
        0.5,
        0.85,
        _fix(
            "Call optimizer.zero_grad(set_to_none=True) once per optimisation step (after step(), or before "
            "backward())",
            "Each update uses the current batch's gradient instead of the running sum of every batch so far",
        ),
    ),
    "unguarded_log": _RuleInfo(
        "warning",
        ("nan_loss",),
        0.3,
        0.7,
        _fix(
            "Guard the argument: torch.log(x.clamp_min(1e-8)) or torch.log(x + 1e-8); use F.log_softmax / "
            "F.logsigmoid instead of log(softmax) / log(sigmoid)",
            "log never sees 0, so neither the value nor its gradient (1/x) becomes infinite",
        ),
    ),
    "unguarded_sqrt": _RuleInfo(
        "warning",
        ("nan_loss",),
        0.3,
        0.7,
        _fix(
            "Add an epsilon: torch.sqrt(x + 1e-8) (or x.clamp_min(1e-12).sqrt())",
            "The gradient 1/(2*sqrt(x)) stays finite when x reaches 0",
        ),
    ),
    "division_by_reduction": _RuleInfo(
        "warning",
        ("nan_loss",),
        0.3,
        0.7,
        _fix(
            "Guard the denominator: x / (d + 1e-8) or x / d.clamp_min(1e-8); F.normalize(x, eps=...) for norms",
            "An empty mask, a zero vector or a constant batch no longer divides by zero",
        ),
    ),
    "sync_in_loop": _RuleInfo(
        "warning",
        ("slow_throughput",),
        0.3,
        0.7,
        _fix(
            "Keep values on the device inside the loop and sync only every N steps (if step % log_every == 0: "
            "loss.item()), or accumulate with a detached tensor",
            "The GPU no longer waits for the host every iteration; steps per second rise",
        ),
    ),
    "retain_graph": _RuleInfo(
        "warning",
        ("graph_reuse", "oom"),
        0.3,
        0.65,
        _fix(
            "Remove retain_graph=True and detach state carried between iterations; for two losses, sum them and "
            "call backward() once",
            "Graphs are freed after each step: memory stays flat and gradients no longer leak into earlier steps",
        ),
    ),
    "no_grad_clipping": _RuleInfo(
        "info",
        ("exploding_gradients", "nan_loss", "loss_spike"),
        0.0,
        0.6,
        _fix(
            "Clip between backward() and step(): torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)",
            "The global gradient norm is capped at 1.0, so one bad batch cannot blow up the weights",
        ),
    ),
    "syntax_error": _RuleInfo("error", (), 0.0, 0.0, None),
    "file_too_large": _RuleInfo("info", (), 0.0, 0.0, None),
    "unreadable": _RuleInfo("info", (), 0.0, 0.0, None),
}


def _finding(rule: str, node: ast.AST | None, lines: list[str], message: str) -> CodeFinding:
    info = RULES[rule]
    line = getattr(node, "lineno", 0) or 0
    column = getattr(node, "col_offset", 0) or 0
    snippet = lines[line - 1].strip()[:200] if 0 < line <= len(lines) else ""
    return CodeFinding(
        rule=rule,
        line=line,
        column=column,
        snippet=snippet,
        message=message,
        failures=list(info.failures),
        severity=info.severity,
        fix=info.fix,
    )


# ---------------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------------


def scan_code(path: Path) -> list[CodeFinding]:
    """Findings for one Python file (or notebook), in line order. Never raises for bad input."""
    try:
        if not path.is_file():
            return [_whole_file("unreadable", f"{path} is not a file: pass the training script itself")]
        with safe_fs.open_read(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_CODE_BYTES:
                return [_whole_file("file_too_large",
                                    f"{path} is {size:,} bytes, over the {MAX_CODE_BYTES:,}-byte limit for a training "
                                    "script: not scanned. Pass the file that holds the training loop.")]
            raw = fh.read()
    except OSError as exc:
        return [_whole_file("unreadable", f"could not read {path}: {exc.strerror or exc}")]
    source = _decode(raw)
    if path.suffix == ".ipynb":
        source = _notebook_source(source)
    return scan_source(source, filename=str(path))


def _decode(raw: bytes) -> str:
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    except SyntaxError:
        encoding = "utf-8"
    return raw.decode(encoding, errors="replace")


def _notebook_source(text: str) -> str:
    """Code cells joined in order; IPython magics and shell lines are blanked so line numbers stay put."""
    try:
        cells = json.loads(text).get("cells", [])
    except (ValueError, AttributeError):
        return text
    chunks = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        chunks.append("\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines()))
    return "\n\n".join(chunks)


def _whole_file(rule: str, message: str, severity: str = "info") -> CodeFinding:
    """A finding about the file as a whole (unreadable, too large, unparsable): no line to point at."""
    return CodeFinding(rule=rule, line=0, column=0, snippet="", severity=severity, message=message)


def scan_source(source: str, filename: str = "<source>") -> list[CodeFinding]:
    """Findings for Python source text (the same rules as `scan_code`)."""
    source = source.removeprefix("\ufeff")  # Python itself accepts a byte-order mark; pasted text may keep it
    lines = source.splitlines()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # the user's `1if x` is theirs to fix, not our stderr's
            tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        line = exc.lineno or 0
        return [
            CodeFinding(
                rule="syntax_error",
                line=line,
                column=max((exc.offset or 1) - 1, 0),
                snippet=lines[line - 1].strip()[:200] if 0 < line <= len(lines) else "",
                severity="error",
                message=f"the file does not parse ({exc.msg}), so it was not scanned: Python raises this "
                "SyntaxError before training starts",
            )
        ]
    except (ValueError, RecursionError, MemoryError) as exc:
        return [_whole_file("syntax_error", f"the file could not be parsed ({type(exc).__name__}: {exc}), so it was "
                                            "not scanned", "error")]
    try:
        findings = _Scanner(tree, lines).run()
    except RecursionError:  # machine-generated code nested deeper than the scanner can walk
        return [_whole_file("syntax_error", "the file nests expressions too deeply to walk, so it was not scanned",
                            "error")]
    unique: dict[tuple[str, int, int], CodeFinding] = {}
    for f in findings:
        unique.setdefault((f.rule, f.line, f.column), f)
    return sorted(unique.values(), key=lambda f: (f.line, f.column, f.rule))


# ---------------------------------------------------------------------------------------------
# AST helpers
# ---------------------------------------------------------------------------------------------

_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_STEP_FUNCTION_NAMES = {"training_step", "train_step", "train_one_step", "train_batch", "training_step_end"}
_SYNC_METHODS = {"item", "cpu", "numpy", "tolist"}
_ZERO_GRAD_METHODS = {"zero_grad", "zero_"}
_CLIP_NAMES = {
    "clip_grad_norm_",
    "clip_grad_norm",
    "clip_grad_value_",
    "clip_gradients",
    "clip_grad_by_norm",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_coef",
}
_CLIP_KEYWORDS = {
    "gradient_clip_val",
    "max_grad_norm",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "gradient_clipping",
    "grad_clip",
    "clip_grad",
    "grad_clip_norm",
    "clip_grad_norm",
}
_REDUCTIONS = {"sum", "norm", "std", "var", "count_nonzero", "vector_norm"}
_GUARD_CALLS = {
    "clamp",
    "clamp_min",
    "clamp_",
    "clamp_min_",
    "clip",
    "clip_",
    "maximum",
    "max",
    "softplus",
    "exp",
    "log1p",
    "relu",
}
_SCALAR_CALLS = {
    "float",
    "int",
    "len",
    "str",
    "round",
    "bool",
    "range",
    "enumerate",
    "zip",
    "list",
    "dict",
    "tuple",
    "time",
    "perf_counter",
    "monotonic",
    "format",
    "abs",
    "min",
    "max",
    "sorted",
    "repr",
}
_TENSORY_NAMES = {
    "loss",
    "losses",
    "logits",
    "output",
    "outputs",
    "out",
    "pred",
    "preds",
    "prediction",
    "predictions",
    "y_hat",
    "yhat",
    "grad",
    "grads",
    "hidden",
    "context",
    "features",
    "embeddings",
}
_EPS_NAME = re.compile(r"eps|epsilon|tiny|min_val|_min\b|floor", re.IGNORECASE)
_DETACH_CALLS = {"detach", "detach_"}
_DETACHING_NAME = re.compile(r"detach|repackage", re.IGNORECASE)
"""`repackage_hidden`, `detach_state`: helpers named for what they do, even when defined in another file."""
_COPIES = {"clone", "contiguous", "to", "cpu", "cuda", "float", "half", "bfloat16", "double", "requires_grad_"}
"""Methods that keep a detached tensor detached: `h.detach().clone()` still has no history."""


def _call_name(call: ast.Call) -> str:
    """The called name's last component: `torch.nn.functional.mse_loss` -> 'mse_loss'."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _dotted(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every node ast.parse produces
        return ""


def _walk_no_defs(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk that does not descend into nested function or class definitions."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if not isinstance(child, (*_FUNCS, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(child))


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_backward(call: ast.Call) -> bool:
    return _call_name(call) in {"backward", "manual_backward"}


def _is_optimizer_step(call: ast.Call) -> bool:
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "step"):
        return False
    receiver = _dotted(call.func.value).lower()
    return ("opt" in receiver or "scaler" in receiver) and "sched" not in receiver


def _is_zero_grad(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        name = _call_name(node)
        if name == "zero_grad":
            return True
        if name == "zero_" and "grad" in _dotted(node.func).lower():
            return True
    if isinstance(node, ast.Assign):  # p.grad = None
        return (
            any(isinstance(t, ast.Attribute) and t.attr == "grad" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and node.value.value is None
        )
    return False


def _is_guarded(expr: ast.AST) -> bool:
    """An epsilon added, a clamp applied, or a function that cannot return 0."""
    for node in ast.walk(expr):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, (int, float)) and side.value > 0:
                    return True
                if isinstance(side, (ast.Name, ast.Attribute)) and _EPS_NAME.search(_dotted(side)):
                    return True
        if isinstance(node, ast.Call) and _call_name(node) in _GUARD_CALLS:
            return True
        if isinstance(node, ast.keyword) and node.arg in {"eps", "epsilon", "min"}:
            return True
    return False


def _has_variable(expr: ast.AST) -> bool:
    return any(isinstance(n, (ast.Name, ast.Attribute)) for n in ast.walk(expr))


def _is_torch_like(call: ast.Call) -> bool:
    """torch.log(x) / x.log() / torch.special.log(x), not math.log or np.log."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return False
    owner = _dotted(func.value)
    return owner not in {"math", "np", "numpy", "cmath", "scipy"} and not owner.startswith(("np.", "numpy.", "math."))


def _log_argument(call: ast.Call) -> ast.AST | None:
    func = call.func
    assert isinstance(func, ast.Attribute)
    owner = _dotted(func.value)
    if owner in {"torch", "torch.special", "F", "torch.nn.functional"}:
        return call.args[0] if call.args else None
    return func.value  # x.log()


# ---------------------------------------------------------------------------------------------
# The scanner
# ---------------------------------------------------------------------------------------------


class _Scanner:
    def __init__(self, tree: ast.Module, lines: list[str]) -> None:
        self.tree = tree
        self.lines = lines
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent
        self.functions: dict[str, list[ast.AST]] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, []).append(node)
        self.backward_functions = self._functions_that(
            lambda c: isinstance(c, ast.Call) and (_is_backward(c) or _is_optimizer_step(c))
        )
        self.step_functions = self._functions_that(lambda c: isinstance(c, ast.Call) and _is_optimizer_step(c))
        self.zero_grad_functions = self._functions_that(_is_zero_grad)
        self.detaching_functions = self._detaching_functions()
        self.findings: list[CodeFinding] = []

    # --- call graph ------------------------------------------------------------------------------
    def _local_callee(self, call: ast.Call) -> str | None:
        func = call.func
        if isinstance(func, ast.Name) and func.id in self.functions:
            return func.id
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in {"self", "cls"}
            and func.attr in self.functions
        ):
            return func.attr
        return None

    def _functions_that(self, predicate) -> set[str]:
        """Names of local functions that do `predicate` directly or through other local functions."""
        found: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, defs in self.functions.items():
                if name in found:
                    continue
                for fn in defs:
                    for node in _walk_no_defs(fn):
                        if predicate(node) or (isinstance(node, ast.Call) and self._local_callee(node) in found):
                            found.add(name)
                            changed = True
                            break
                    if name in found:
                        break
        return found

    def _detaching_functions(self) -> set[str]:
        """Local helpers whose every return is detached, like the recursive `repackage_hidden`: start from all
        functions and drop those with a return that is not, until nothing changes (so recursion counts)."""
        found = set(self.functions)
        while True:
            kept = {name for name in found if all(self._returns_detached(fn, found) for fn in self.functions[name])}
            if kept == found:
                return found
            found = kept

    def _returns_detached(self, fn: ast.AST, helpers: set[str]) -> bool:
        if any(re.search(r"no_grad|inference_mode", _dotted(d)) for d in fn.decorator_list):
            return True
        returns = [n.value for n in _walk_no_defs(fn) if isinstance(n, ast.Return)]
        return bool(returns) and all(v is not None and self._detached(v, helpers) for v in returns)

    def _detached(self, expr: ast.AST, helpers: set[str] | None = None) -> bool:
        """The value has no graph history: `.detach()`, `.data`, a detaching helper, or a tuple/list/comprehension
        of those (`tuple(h.detach() for h in hidden)`)."""
        helpers = self.detaching_functions if helpers is None else helpers
        if isinstance(expr, (ast.Tuple, ast.List)):
            return bool(expr.elts) and all(self._detached(e, helpers) for e in expr.elts)
        if isinstance(expr, (ast.ListComp, ast.GeneratorExp)):
            return self._detached(expr.elt, helpers)
        if isinstance(expr, ast.Attribute):
            return expr.attr == "data"
        if not isinstance(expr, ast.Call):
            return False
        name = _call_name(expr)
        if _DETACHING_NAME.search(name) or self._local_callee(expr) in helpers:  # .detach(), detach_state(h)
            return True
        if isinstance(expr.func, ast.Name) and name in {"tuple", "list"}:
            return len(expr.args) == 1 and self._detached(expr.args[0], helpers)
        return name in _COPIES and isinstance(expr.func, ast.Attribute) and self._detached(expr.func.value, helpers)

    def _does(self, scope: ast.AST, predicate, functions: set[str]) -> bool:
        return any(
            predicate(n) or (isinstance(n, ast.Call) and self._local_callee(n) in functions)
            for n in _walk_no_defs(scope)
        )

    def _is_training_loop(self, loop: ast.AST) -> bool:
        return self._does(
            loop,
            lambda n: isinstance(n, ast.Call) and (_is_backward(n) or _is_optimizer_step(n)),
            self.backward_functions,
        )

    # --- context ---------------------------------------------------------------------------------
    def _ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        while node in self.parents:
            node = self.parents[node]
            yield node

    def _enclosing_function(self, node: ast.AST) -> ast.AST | None:
        return next((a for a in self._ancestors(node) if isinstance(a, _FUNCS)), None)

    def _enclosing_loops(self, node: ast.AST) -> list[ast.AST]:
        loops = []
        for a in self._ancestors(node):
            if isinstance(a, _FUNCS):
                break
            if isinstance(a, _LOOPS):
                loops.append(a)
        return loops

    def _per_step(self, node: ast.AST) -> bool:
        """Runs once per training step: inside a training loop, or in a step function."""
        if any(self._is_training_loop(loop) for loop in self._enclosing_loops(node)):
            return True
        fn = self._enclosing_function(node)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return fn.name in _STEP_FUNCTION_NAMES or self._is_step_function(fn)
        return False

    def _is_step_function(self, fn: ast.AST) -> bool:
        """The function is one training step: it calls backward()/step() itself, outside any loop of its own
        (a function that holds the whole training loop is not: code after its loop runs once)."""
        return any(
            isinstance(n, ast.Call) and (_is_backward(n) or _is_optimizer_step(n)) and not self._enclosing_loops(n)
            for n in _walk_no_defs(fn)
        )

    def _throttled(self, node: ast.AST) -> bool:
        """Inside `if step % N == 0:` (or a logging/verbose/debug condition): not every step."""
        for a in self._ancestors(node):
            if isinstance(a, _FUNCS):
                return False
            if isinstance(a, ast.If):
                test = a.test
                if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) for n in ast.walk(test)):
                    return True
                if re.search(r"log|print|verbose|debug|interval|every", _dotted(test), re.IGNORECASE):
                    return True
        return False

    def _in_no_grad(self, node: ast.AST) -> bool:
        """Under `with torch.no_grad()` / inference_mode, or in a function decorated with them."""
        for a in self._ancestors(node):
            if isinstance(a, (ast.With, ast.AsyncWith)) and any(
                re.search(r"no_grad|inference_mode", _dotted(item.context_expr)) for item in a.items
            ):
                return True
            if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return any(re.search(r"no_grad|inference_mode|_use_grad", _dotted(d)) for d in a.decorator_list)
            if isinstance(a, ast.Lambda):
                return False
        return False

    def _guarded(self, expr: ast.AST) -> bool:
        """Guarded in place, or a name whose assignment in the same scope is guarded."""
        if _is_guarded(expr):
            return True
        if isinstance(expr, ast.Name):
            scope = self._enclosing_function(expr) or self.tree
            return any(
                isinstance(n, ast.Assign) and expr.id in _target_names(n.targets) and _is_guarded(n.value)
                for n in _walk_no_defs(scope)
            )
        return False

    # --- rules -----------------------------------------------------------------------------------
    def run(self) -> list[CodeFinding]:
        self._sync_points()
        self._nan_prone_ops()
        self._normalize_in_mse()
        self._retain_graph()
        self._training_loops()
        self._no_clipping()
        return self.findings

    def _add(self, rule: str, node: ast.AST | None, message: str) -> None:
        self.findings.append(_finding(rule, node, self.lines, message))

    def _sync_points(self) -> None:
        tensor_names = self._tensor_names()
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            if name in _SYNC_METHODS and isinstance(node.func, ast.Attribute) and not node.args:
                if self._per_step(node) and not self._throttled(node):
                    self._add(
                        "sync_in_loop",
                        node,
                        f"`.{name}()` inside the training loop copies a value from the GPU to the host and waits "
                        "for every queued kernel, each iteration",
                    )
            elif name == "print" and isinstance(node.func, ast.Name):
                shown = self._printed_tensor(node, tensor_names)
                if shown and self._per_step(node) and not self._throttled(node):
                    self._add(
                        "sync_in_loop",
                        node,
                        f"print({shown}) of a tensor inside the training loop forces a host-device sync every "
                        "iteration",
                    )

    def _tensor_names(self) -> set[str]:
        """Names that probably hold tensors: assigned from calls that are not scalar-returning."""
        names = set(_TENSORY_NAMES)
        scalar: set[str] = set()
        for node in ast.walk(self.tree):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call)
            ):
                called = _call_name(node.value)
                (scalar if called in _SYNC_METHODS or called in _SCALAR_CALLS else names).add(node.targets[0].id)
        return names - scalar

    def _printed_tensor(self, call: ast.Call, tensor_names: set[str]) -> str | None:
        for arg in call.args:
            parts = (
                [v.value for v in arg.values if isinstance(v, ast.FormattedValue)]
                if isinstance(arg, ast.JoinedStr)
                else [arg]
            )
            for part in parts:
                if isinstance(part, ast.Name) and part.id in tensor_names:
                    return part.id
                if (
                    isinstance(part, ast.Call)
                    and _call_name(part) in {"mean", "sum", "norm", "max", "min", "std"}
                    and isinstance(part.func, ast.Attribute)
                    and _names_in(part.func.value) & tensor_names
                ):
                    return _dotted(part)
        return None

    def _nan_prone_ops(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Call, ast.BinOp)) and self._in_no_grad(node):
                continue  # no gradient there; a forward-only NaN shows up in the metrics instead
            if isinstance(node, ast.Call) and _is_torch_like(node):
                name = _call_name(node)
                if name in {"log", "log2", "log10"}:
                    arg = _log_argument(node)
                    if arg is not None and _has_variable(arg) and not self._guarded(arg):
                        inner = arg if isinstance(arg, ast.Call) else None
                        inner_name = _call_name(inner) if inner else ""
                        if inner_name in {"softmax", "sigmoid"}:
                            better = "F.log_softmax" if inner_name == "softmax" else "F.logsigmoid"
                            msg = (
                                f"log({inner_name}(...)) underflows to log(0) = -inf for confident predictions; "
                                f"{better} computes the same value stably"
                            )
                        else:
                            msg = f"`{_dotted(node)[:80]}` has no epsilon or clamp: log(0) = -inf and its gradient 1/x is infinite"
                        self._add("unguarded_log", node, msg)
                elif name in {"sqrt", "rsqrt"}:
                    arg = _log_argument(node)
                    if arg is not None and _has_variable(arg) and not self._guarded(arg):
                        self._add(
                            "unguarded_sqrt",
                            node,
                            f"`{_dotted(node)[:80]}` has no epsilon: at 0 the gradient 1/(2*sqrt(x)) is infinite, "
                            "and a negative input gives NaN",
                        )
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                denominator = node.right
                if (
                    isinstance(denominator, ast.Call)
                    and _call_name(denominator) in _REDUCTIONS
                    and not _is_guarded(denominator)
                    and not isinstance(denominator.func, ast.Name)
                ):
                    self._add(
                        "division_by_reduction",
                        node,
                        f"division by `{_dotted(denominator)[:60]}`, which is 0 for an empty mask, an all-zero "
                        "vector or a constant batch: the result is NaN/Inf",
                    )

    def _normalize_in_mse(self) -> None:
        mse_objects = {
            t.id
            for node in ast.walk(self.tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _call_name(node.value) == "MSELoss"
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        normalized = self._names_assigned_from("normalize")
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and (
                _call_name(node) == "mse_loss" or (isinstance(node.func, ast.Name) and node.func.id in mse_objects)
            ):
                args = list(node.args) + [k.value for k in node.keywords]
                if any(self._is_normalized(a, normalized) for a in args):
                    self._add("normalize_in_mse", node, _NORMALIZE_MESSAGE)
            elif (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Pow)
                and isinstance(node.right, ast.Constant)
                and node.right.value == 2
            ):
                diff = node.left
                if (
                    isinstance(diff, ast.BinOp)
                    and isinstance(diff.op, ast.Sub)
                    and self._is_normalized(diff.left, normalized)
                    and self._is_normalized(diff.right, normalized)
                ):
                    self._add("normalize_in_mse", node, _NORMALIZE_MESSAGE)

    def _names_assigned_from(self, callee: str) -> set[str]:
        return {
            t.id
            for node in ast.walk(self.tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _call_name(node.value) == callee
            for t in node.targets
            if isinstance(t, ast.Name)
        }

    @staticmethod
    def _is_normalized(expr: ast.AST, normalized_names: set[str]) -> bool:
        if isinstance(expr, ast.Call) and _call_name(expr) == "normalize":
            return True
        return isinstance(expr, ast.Name) and expr.id in normalized_names

    def _retain_graph(self) -> None:
        for node in ast.walk(self.tree):
            retains = isinstance(node, ast.Call) and any(
                k.arg == "retain_graph" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if retains and self._per_step(node):
                self._add(
                    "retain_graph",
                    node,
                    "retain_graph=True inside the training loop is usually a band-aid for 'Trying to backward "
                    "through the graph a second time': it keeps each step's graph alive, so memory grows and "
                    "gradients flow into earlier steps",
                )

    def _training_loops(self) -> None:
        for loop in ast.walk(self.tree):
            if not isinstance(loop, _LOOPS) or not self._is_training_loop(loop):
                continue
            self._missing_zero_grad(loop)
            self._carried_state(loop)

    def _missing_zero_grad(self, loop: ast.AST) -> None:
        """Judged at the innermost loop that updates the weights (a loop with only backward() is accumulation)."""

        def updates(scope: ast.AST) -> bool:
            return self._does(scope, lambda n: isinstance(n, ast.Call) and _is_optimizer_step(n), self.step_functions)

        if not updates(loop):
            return
        if any(isinstance(n, _LOOPS) and updates(n) for n in _walk_no_defs(loop)):
            return
        if self._does(loop, _is_zero_grad, self.zero_grad_functions):
            return
        anchor = next((n for n in _walk_no_defs(loop) if isinstance(n, ast.Call) and _is_backward(n)), None) or next(
            (
                n
                for n in _walk_no_defs(loop)
                if isinstance(n, ast.Call) and self._local_callee(n) in self.backward_functions
            ),
            None,
        )
        if anchor is None:
            return
        self._add(
            "missing_zero_grad",
            anchor,
            "backward() runs every iteration but gradients are never zeroed inside the loop: each step adds the "
            "new gradient to all previous ones, so updates grow without bound (divergence / exploding gradients)",
        )

    def _carried_state(self, loop: ast.AST) -> None:
        body_nodes = [n for stmt in loop.body for n in _walk_stmt_order(stmt)]
        for node in body_nodes:
            if not isinstance(node, ast.Assign):
                continue
            targets = _target_names(node.targets)
            if not targets or not isinstance(node.value, (ast.Call, ast.Subscript)):
                continue
            call = node.value if isinstance(node.value, ast.Call) else node.value.value
            if not isinstance(call, ast.Call) or _call_name(call) in {"detach", "item", "clone"}:
                continue
            fed_back = [a for a in _call_inputs(call) if isinstance(a, ast.Name) and a.id in targets]
            for arg in fed_back:
                name = arg.id
                if (
                    self._in_no_grad(node)
                    or self._detached_in_loop(body_nodes, name)
                    or self._fresh_each_iteration(body_nodes, node, name)
                ):
                    continue
                callee = _dotted(call.func)
                self._add(
                    "carried_state_no_detach",
                    node,
                    f"`{name}` is computed by `{callee}(...)` from its own previous value and carried into the "
                    f"next iteration without .detach(), while backward() runs every iteration: the next "
                    "backward reaches into the previous step's graph, whose buffers were already freed "
                    "('Trying to backward through the graph a second time')",
                )

    def _detached_in_loop(self, body_nodes: list[ast.AST], name: str) -> bool:
        """`f(x, name.detach())` or `name.detach_()` anywhere in the loop breaks the chain, and so does re-binding
        `name` to a detached value (`name = repackage_hidden(name)`, truncated BPTT's idiom) or under no_grad."""
        return any(
            _is_detach_of(node, name)
            or (
                isinstance(node, ast.Assign)
                and name in _target_names(node.targets)
                and (self._detached(node.value) or self._in_no_grad(node))
            )
            for node in body_nodes
        )

    @staticmethod
    def _fresh_each_iteration(body_nodes: list[ast.AST], feedback: ast.Assign, name: str) -> bool:
        """The name is re-initialised (without reading itself) before the feedback assignment."""
        for node in body_nodes:
            if node is feedback:
                return False
            if (
                isinstance(node, ast.Assign)
                and name in _target_names(node.targets)
                and name not in _names_in(node.value)
            ):
                return True
        return False

    def _no_clipping(self) -> None:
        backward = [n for n in ast.walk(self.tree) if isinstance(n, ast.Call) and _is_backward(n)]
        if not backward:
            return
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and _call_name(node) in _CLIP_NAMES:
                return
            if isinstance(node, ast.keyword) and node.arg in _CLIP_KEYWORDS:
                return
            if isinstance(node, ast.Attribute) and node.attr in _CLIP_KEYWORDS:
                return
        self._add(
            "no_grad_clipping",
            backward[0],
            "no gradient clipping anywhere in the file (clip_grad_norm_ / clip_grad_value_): harmless while "
            "gradients are bounded, but nothing stops one bad batch from blowing up the weights",
        )


_NORMALIZE_MESSAGE = (
    "MSE between F.normalize(...)d vectors only asks for the same direction (it equals 2 - 2*cos): the norms stay "
    "free, so a fixed-point or value-matching objective never converges in value (the CVFP bug: MSE between "
    "iterations stayed ~300x above threshold), and a convergence-only objective can also collapse the "
    "representations' effective rank"
)


def _walk_stmt_order(stmt: ast.AST) -> Iterator[ast.AST]:
    """Nodes of a statement in source order (ast.walk is breadth-first, which scrambles statements)."""
    yield stmt
    for child in ast.iter_child_nodes(stmt):
        if not isinstance(child, (*_FUNCS, ast.ClassDef)):
            yield from _walk_stmt_order(child)


def _target_names(targets: Iterable[ast.AST]) -> set[str]:
    names: set[str] = set()
    for t in targets:
        if isinstance(t, ast.Name):
            names.add(t.id)
        elif isinstance(t, (ast.Tuple, ast.List)):
            names |= _target_names(t.elts)
    return names


def _is_detach_of(node: ast.AST, name: str) -> bool:
    """`name.detach()` / `name.detach_()`."""
    return (
        isinstance(node, ast.Call)
        and _call_name(node) in _DETACH_CALLS
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == name
    )


def _call_inputs(call: ast.Call) -> list[ast.AST]:
    return [a.value if isinstance(a, ast.Starred) else a for a in call.args] + [k.value for k in call.keywords]


# ---------------------------------------------------------------------------------------------
# Findings -> hypotheses
# ---------------------------------------------------------------------------------------------


def code_hypotheses(findings: Iterable[CodeFinding], signals: Iterable[str] = frozenset()) -> list[Hypothesis]:
    """Turn findings into hypotheses, one per failure id, most confident first.

    `signals` are failure ids other detectors already saw (e.g. {"exploding_gradients"} from a
    grad-norm series): a finding that explains an observed symptom is worth much more than one
    that merely could cause it, and "no clipping" only becomes a hypothesis alongside one.
    """
    seen = set(signals)
    grouped: dict[str, list[tuple[CodeFinding, float]]] = {}
    for f in findings:
        info = RULES.get(f.rule)
        if info is None or not f.failures:
            continue
        for failure in f.failures:
            confidence = info.confirmed if failure in seen else info.confidence
            if confidence <= 0:
                continue
            grouped.setdefault(failure, []).append((f, confidence))
    hypotheses = []
    for failure, items in grouped.items():
        miss = 1.0
        for _, c in items:
            miss *= 1.0 - c
        catalogue = failure_info(failure)
        evidence = [
            Evidence(
                kind="code", line_no=f.line, text=f"line {f.line}: `{f.snippet}` — {f.message}", rule=f"code.{f.rule}"
            )
            for f, _ in items[:8]
        ]
        root_causes: list[str] = []
        fixes: list[Fix] = []
        for f, _ in items:
            cause = f"{f.message} (line {f.line})"
            if cause not in root_causes:
                root_causes.append(cause)
            if f.fix and all(x.action != f.fix.action for x in fixes):
                fixes.append(f.fix)
        root_causes += [c for c in catalogue.root_causes if c not in root_causes]
        fixes += [x for x in catalogue.fixes if all(y.action != x.action for y in fixes)]
        steps = [
            NextStep(tool=s.tool, arguments={}, why=s.why)
            for s in catalogue.confirm_with
            if not (s.tool == "classify_failure" and "code_path" in s.why)
        ]
        if failure == "graph_reuse":
            steps.append(
                NextStep(
                    tool="tail_log",
                    arguments={"grep": "backward through the graph"},
                    why="Check whether the run already failed with the error this pattern causes",
                )
            )
        hypotheses.append(
            Hypothesis(
                failure=failure,
                confidence=round(min(0.99, 1.0 - miss), 3),
                evidence=evidence,
                root_causes=root_causes,
                fixes=fixes,
                next_steps=steps,
            )
        )
    hypotheses.sort(key=lambda h: -h.confidence)
    return hypotheses
