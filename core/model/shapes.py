"""Shapes through the user's model: one traced forward pass, and on failure which layer and why.

The worker records every module's input/output shapes in call order (one pass in eval mode under
no_grad, so BatchNorm accepts a batch of one and nothing is trained); this module validates the
requested inputs, bounds the trace, and turns a failure into a sentence that names the layer, what
it expects (from its own parameters) and what the layer before it produced. No torch here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core.model.interpreter import InterpreterChoice
from ml_debug_mcp.core.model.sandbox import Policy, SandboxStatus

MAX_INPUTS = 16
MAX_DIMS = 8
MAX_INPUT_ELEMENTS = 1 << 25  # 32 Mi elements (128 MB of float32) across all inputs
HEAD_CALLS = 40
TAIL_CALLS = 20
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32"}
_INTEGER = ("int64", "int32", "int16", "int8", "uint8")
BATCH_NORMS = ("BatchNorm", "SyncBatchNorm")


def check_inputs(shapes: list[list[int]] | None, dtype: str | list[str] | None) -> tuple[list[list[int]] | None,
                                                                                       list[str | None] | None]:
    """Validate input shapes and dtypes before any process starts; ValueError says what to change."""
    if not shapes:
        if dtype is not None and not isinstance(dtype, str):
            raise ValueError("dtype was given per input but input_shapes is empty; give one shape per forward argument.")
        return None, None
    if len(shapes) > MAX_INPUTS:
        raise ValueError(f"{len(shapes)} input shapes: at most {MAX_INPUTS} forward arguments are supported.")
    total = 0
    for i, shape in enumerate(shapes):
        if not shape or len(shape) > MAX_DIMS:
            raise ValueError(f"input_shapes[{i}] = {shape} must have 1 to {MAX_DIMS} dimensions, batch first, "
                             "e.g. [8, 3, 32, 32].")
        if any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape):
            raise ValueError(f"input_shapes[{i}] = {shape}: every dimension must be a positive integer.")
        total += math.prod(shape)
    if total > MAX_INPUT_ELEMENTS:
        raise ValueError(f"The inputs hold {total:,} elements in total, above the {MAX_INPUT_ELEMENTS:,} cap: shapes "
                         "are only for tracing and gradient checks, so use a small batch (2-8) and short sequences.")
    names = [dtype] * len(shapes) if dtype is None or isinstance(dtype, str) else list(dtype)
    if len(names) != len(shapes):
        raise ValueError(f"{len(names)} dtypes for {len(shapes)} input shapes: give one dtype, or one per shape.")
    return [list(s) for s in shapes], [_dtype(n) for n in names]


def _dtype(name: str | None) -> str | None:
    if name is None:
        return None
    key = DTYPE_ALIASES.get(name.strip().lower().removeprefix("torch."), name.strip().lower().removeprefix("torch."))
    if key not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; use one of {', '.join(DTYPES)} (integer inputs are drawn below the "
                         "smallest nn.Embedding's num_embeddings, for token ids).")
    return key


# ------------------------------------------------------------------------------------------------
# Result models


class TensorSpec(BaseModel):
    path: str = Field(description="Where in the (nested) value: '0' = first positional, '1.mask' = ...")
    shape: list[int]
    dtype: str
    device: str
    min: int | None = Field(None, description="Smallest value, integer tensors only (index checks)")
    max: int | None = None


class ModuleCall(BaseModel):
    index: int
    name: str = Field(description="Dotted module name; '' is the model itself")
    type: str
    depth: int
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    params: int = Field(0, description="Parameters the module owns directly")
    status: Literal["ok", "raised", "running"]


class UserFrame(BaseModel):
    file: str
    line: int
    function: str
    code: str = ""


class ShapeFailure(BaseModel):
    module: str | None = Field(None, description="The innermost module that was running when the error was raised")
    module_type: str | None = None
    module_repr: str | None = Field(None, description="e.g. Linear(in_features=256, out_features=10, bias=True)")
    exception_type: str
    message: str
    received: list[TensorSpec] = Field(default_factory=list)
    expected: str | None = Field(None, description="What the module's own parameters say it accepts")
    explanation: str
    previous_module: str | None = None
    previous_type: str | None = None
    previous_outputs: list[TensorSpec] = Field(default_factory=list)
    parents: list[str] = Field(default_factory=list)
    user_frame: UserFrame | None = None


class TableRow(BaseModel):
    """One row of the table; a run of identical blocks (blocks.0-47) is one row with count > 1."""

    name: str
    type: str
    depth: int
    count: int = 1
    inputs: list[list[int]] = Field(default_factory=list)
    outputs: list[list[int]] = Field(default_factory=list)
    params: int = Field(0, description="Parameters of one such module, its children included")
    status: Literal["ok", "raised", "running"] = "ok"


class Variant(BaseModel):
    dimension: Literal["batch", "sequence"]
    size_from: int
    size_to: int
    status: Literal["ok", "failed"]
    module: str | None = None
    message: str | None = None


class KeyMismatch(BaseModel):
    key: str
    model: str = Field(description="shape and dtype in the model, e.g. '[50257, 768] float32'")
    checkpoint: str


class CheckpointCompatibility(BaseModel):
    path: str
    compatible: bool
    model_keys: int
    checkpoint_keys: int
    missing: list[str] = Field(default_factory=list, description="in the model, not in the checkpoint")
    missing_count: int = 0
    unexpected: list[str] = Field(default_factory=list, description="in the checkpoint, not in the model")
    unexpected_count: int = 0
    shape_mismatches: list[KeyMismatch] = Field(default_factory=list)
    dtype_mismatches: list[KeyMismatch] = Field(default_factory=list)
    causes: list[str] = Field(default_factory=list, description="the usual causes this diff points at")


class ShapeReport(BaseModel):
    status: Literal["ok", "failed"]
    entrypoint: str
    summary: str
    inputs: list[TensorSpec] = Field(default_factory=list)
    input_source: str = ""
    output: list[TensorSpec] = Field(default_factory=list)
    failure: ShapeFailure | None = None
    calls: list[ModuleCall] = Field(default_factory=list, description="Module calls in order (first/last ones when cut)")
    calls_total: int = 0
    calls_omitted: int = Field(0, description="Calls left out of `calls` (from the middle)")
    total_params: int = 0
    trainable_params: int = 0
    table: list[TableRow] = Field(default_factory=list, description="The module tree in call order, repeated blocks "
                                  "collapsed into one row (bounded)")
    table_rows_omitted: int = 0
    loss_form: str = Field("", description="How the step was run: the factory contract's form and why")
    meta: bool = Field(True, description="Weights on the meta device (no memory); false: real tensors were used")
    fallback: list[str] = Field(default_factory=list, description="Modules run with real tensors (no meta kernel)")
    variants: list[Variant] = Field(default_factory=list, description="The same trace at another batch size and "
                                    "sequence length")
    depends_on: Literal["batch", "sequence", "batch and sequence", "neither"] | None = Field(
        None, description="Whether the mismatch follows the batch size, the sequence length, or neither")
    checkpoint: CheckpointCompatibility | None = None
    notes: list[str] = Field(default_factory=list, description="What this eval-mode pass cannot show about training")
    interpreter: InterpreterChoice | None = Field(None, description="the Python the worker ran under, and why that one")
    sandbox: SandboxStatus | None = Field(None, description="the protections around the user code")


# ------------------------------------------------------------------------------------------------


def shape_task(entry: dict, input_shapes: list[list[int]] | None, dtypes: list[str | None] | None, *,
               meta: bool = True, checkpoint: str | None = None, fallback_mb: int = 1024) -> dict:
    return {"op": "shapes", "entry": entry, "input_shapes": input_shapes, "dtypes": dtypes, "meta": meta,
            "checkpoint": checkpoint, "fallback_mb": fallback_mb}


def check_model_shapes(task: dict, *, python: str, timeout: float, memory_mb: int, cwd: Path, target: str,
                       progress: Callable[..., None] | None = None, policy: Policy | None = None) -> ShapeReport:
    from ml_debug_mcp.core.model.worker import run_worker

    raw = run_worker(task, python, timeout, memory_mb, cwd, progress=progress, policy=policy)
    report = report_from_trace({**raw, "checkpoint_path": task.get("checkpoint") or ""}, target)
    report.sandbox = SandboxStatus(**raw["sandbox"])
    return report


def report_from_trace(raw: dict, target: str) -> ShapeReport:
    calls = [ModuleCall(**{k: v for k, v in c.items() if k in ModuleCall.model_fields}) for c in raw["calls"]]
    failure = _failure(raw["failure"], calls) if raw.get("failure") else None
    keep = _kept_indices(len(calls), raw["failure"] if raw.get("failure") else None)
    report = ShapeReport(
        status="failed" if failure else "ok", entrypoint=target, summary="",
        inputs=[TensorSpec(**t) for t in raw.get("inputs", [])], input_source=raw.get("input_source", ""),
        output=[TensorSpec(**t) for t in raw.get("output", [])], failure=failure,
        calls=[calls[i] for i in keep], calls_total=len(calls) + raw.get("calls_dropped", 0),
        calls_omitted=len(calls) + raw.get("calls_dropped", 0) - len(keep),
        total_params=raw.get("total_params", 0), trainable_params=raw.get("trainable_params", 0))
    report.table, report.table_rows_omitted = collapse(calls)
    report.loss_form, report.meta = raw.get("loss_form", ""), raw.get("meta", True)
    report.fallback = raw.get("fallback_notes") or []
    report.variants = [Variant(dimension=v["dimension"], size_from=v["from"], size_to=v["to"], status=v["status"],
                               module=v.get("module"), message=v.get("message")) for v in raw.get("variants") or []]
    report.depends_on = depends_on(report.status, report.variants)
    if raw.get("checkpoint"):
        report.checkpoint = compatibility(raw["checkpoint"], raw.get("checkpoint_path", ""))
    report.notes = _batch_norm_notes(calls) + _variant_notes(report)
    if report.fallback:
        report.notes.append(f"{len(report.fallback)} module(s) ran with real tensors because their op has no meta "
                            f"kernel: {'; '.join(report.fallback[:3])}")
    report.summary = failure.explanation if failure else (
        f"forward pass ok: {report.calls_total} module calls, output "
        f"{', '.join(str(t.shape) for t in report.output[:3]) or '(no tensor)'}")
    if report.checkpoint is not None:
        report.summary += f"; checkpoint: {_compat_text(report.checkpoint)}"
    return report


# ------------------------------------------------------------------------------------------------
# Which dimension a mismatch follows


def depends_on(status: str, variants: list[Variant]) -> str | None:
    """Failing at the batch's sizes: which change makes it pass. Passing: which change makes it fail."""
    by = {v.dimension: v.status for v in variants}
    if not by:
        return None
    if status == "failed":
        fixed = [d for d, s in by.items() if s == "ok"]
        return "neither" if not fixed else " and ".join(fixed)
    broken = [d for d, s in by.items() if s == "failed"]
    return " and ".join(broken) if broken else None


def _variant_notes(report: ShapeReport) -> list[str]:
    if report.depends_on is None:
        return []
    sizes = {v.dimension: v for v in report.variants}
    if report.status == "ok":
        return [f"The model works at this {v.dimension} size ({v.size_from}) but fails at {v.size_to}"
                f"{' in ' + v.module if v.module else ''}: {v.message}. Something is hard-coded to the {v.dimension} "
                f"size (a view/reshape with a literal, a fixed-length buffer)." for v in sizes.values()
                if v.status == "failed"]
    if report.depends_on == "neither":
        return ["The mismatch does not depend on the batch size or the sequence length (it fails at "
                + " and ".join(f"{v.dimension} {v.size_to}" for v in sizes.values())
                + " too): a fixed feature size disagrees between two layers."]
    return [f"The mismatch depends on the {report.depends_on}: at {v.dimension} {v.size_to} instead of "
            f"{v.size_from} the trace passes." for v in sizes.values() if v.status == "ok"]


# ------------------------------------------------------------------------------------------------
# State-dict compatibility


def _spec(entry: list) -> str:
    return f"{entry[0]} {entry[1]}"


def compatibility(raw: dict, path: str, listed: int = 50) -> CheckpointCompatibility:
    """Missing/unexpected keys and per-key shape/dtype differences, with the usual causes named."""
    mine, theirs = raw["model"], raw["checkpoint"]
    missing = [k for k in mine if k not in theirs]
    unexpected = [k for k in theirs if k not in mine]
    shapes = [KeyMismatch(key=k, model=_spec(mine[k]), checkpoint=_spec(theirs[k]))
              for k in mine if k in theirs and list(mine[k][0]) != list(theirs[k][0])]
    dtypes = [KeyMismatch(key=k, model=_spec(mine[k]), checkpoint=_spec(theirs[k]))
              for k in mine if k in theirs and list(mine[k][0]) == list(theirs[k][0]) and theirs[k][1]
              and mine[k][1] != theirs[k][1]]
    report = CheckpointCompatibility(
        path=path, compatible=not (missing or unexpected or shapes), model_keys=len(mine), checkpoint_keys=len(theirs),
        missing=missing[:listed], missing_count=len(missing), unexpected=unexpected[:listed],
        unexpected_count=len(unexpected), shape_mismatches=shapes[:listed], dtype_mismatches=dtypes[:listed])
    report.causes = _causes(mine, theirs, missing, unexpected, shapes, dtypes)
    return report


WRAPPER_PREFIXES = {"module.": "DistributedDataParallel (or DataParallel) saved the wrapped model",
                    "_orig_mod.": "torch.compile saved the compiled wrapper",
                    "model.": "a wrapper (e.g. a LightningModule's self.model) saved the model as an attribute"}


def _causes(mine: dict, theirs: dict, missing: list, unexpected: list, shapes: list, dtypes: list) -> list[str]:
    causes = []
    for prefix, why in WRAPPER_PREFIXES.items():
        stripped = {k[len(prefix):] for k in unexpected if k.startswith(prefix)}
        if stripped and len(stripped & set(missing)) >= max(1, len(missing) // 2):
            causes.append(f"The checkpoint's keys carry a '{prefix}' prefix: {why}. Strip it before loading: "
                          f"{{k.removeprefix('{prefix}'): v for k, v in state_dict.items()}}.")
        added = {k[len(prefix):] for k in missing if k.startswith(prefix)}
        if added and len(added & set(unexpected)) >= max(1, len(unexpected) // 2):
            causes.append(f"The model's keys carry a '{prefix}' prefix the checkpoint lacks: load into the inner "
                          f"model, or add the prefix.")
    vocab = [m for m in shapes if _differs_in_first_dim_only(mine[m.key][0], theirs[m.key][0])
             and any(w in m.key for w in ("emb", "wte", "lm_head", "tok", "vocab", "decoder", "output"))]
    if vocab:
        sizes = f"{theirs[vocab[0].key][0][0]} in the checkpoint vs {mine[vocab[0].key][0][0]} in the model"
        causes.append(f"The vocabulary size changed ({sizes}; {', '.join(m.key for m in vocab[:3])}): a tokenizer "
                      "with added tokens, or padding to a multiple of 64. Resize the embeddings to the checkpoint's "
                      "size (model.resize_token_embeddings) or load with the same tokenizer.")
    other = [m for m in shapes if m not in vocab]
    if other:
        causes.append(f"{len(other)} tensors differ in shape ({other[0].key}: {other[0].checkpoint} in the "
                      f"checkpoint vs {other[0].model}): the model's configuration (width, layers, heads) differs.")
    if dtypes:
        causes.append(f"{len(dtypes)} tensors differ only in dtype ({dtypes[0].key}: {dtypes[0].checkpoint} vs "
                      f"{dtypes[0].model}); load_state_dict casts them, but check you trained in the dtype you think.")
    if (missing or unexpected) and not causes:
        causes.append(f"{len(missing)} keys missing and {len(unexpected)} unexpected: this checkpoint is probably "
                      "from another model or version.")
    return causes


def _differs_in_first_dim_only(a: list, b: list) -> bool:
    return len(a) == len(b) and len(a) >= 1 and a[0] != b[0] and list(a[1:]) == list(b[1:])


def _compat_text(c: CheckpointCompatibility) -> str:
    if c.compatible and not c.dtype_mismatches:
        return f"all {c.model_keys} keys match in shape and dtype"
    parts = [f"{c.missing_count} missing", f"{c.unexpected_count} unexpected",
             f"{len(c.shape_mismatches)} shape mismatches", f"{len(c.dtype_mismatches)} dtype mismatches"]
    return ", ".join(parts) + (f" ({c.causes[0]})" if c.causes else "")


# ------------------------------------------------------------------------------------------------
# Collapsing repeated blocks


_INDEXED = re.compile(r"^(.*?)(\d+)$")
MAX_TABLE_ROWS = 200


def _subtree_end(calls: list[ModuleCall], i: int) -> int:
    j = i + 1
    while j < len(calls) and calls[j].depth > calls[i].depth:
        j += 1
    return j


def _signature(call: ModuleCall) -> tuple:
    return call.type, tuple(tuple(t.shape) for t in call.inputs), tuple(tuple(t.shape) for t in call.outputs)


def _run_length(calls: list[ModuleCall], i: int, period: int) -> tuple[int, list[int], str]:
    """How many repeats of the `period` siblings starting at calls[i]: (count, group starts, last index)."""
    starts, j = [], i
    for _ in range(period):
        if j >= len(calls) or calls[j].depth != calls[i].depth:
            return 1, [i], ""
        starts.append(j)
        j = _subtree_end(calls, j)
    first = [_signature(calls[k]) for k in starts]
    base = _INDEXED.match(calls[i].name)
    count, groups, last = 1, [i], calls[starts[-1]].name
    while True:
        group, k = [], j
        for _ in range(period):
            if k >= len(calls) or calls[k].depth != calls[i].depth or calls[k].status != "ok":
                return count, groups, last
            group.append(k)
            k = _subtree_end(calls, k)
        names = [_INDEXED.match(calls[g].name) for g in group]
        expected = int(base.group(2)) + count * period
        if [_signature(calls[g]) for g in group] != first or any(
                not m or m.group(1) != base.group(1) or int(m.group(2)) != expected + n for n, m in enumerate(names)):
            return count, groups, last
        count, j, last = count + 1, k, calls[group[-1]].name
        groups.append(group[0])


def collapse(calls: list[ModuleCall]) -> tuple[list[TableRow], int]:
    """Rows in call order; siblings `prefix.N`, `prefix.N+1`... that repeat (one module or a short pattern
    like Linear, ReLU) with the same shapes become one row `prefix.0-47 Type x48`, insides shown once."""
    rows: list[TableRow] = []
    i = 0
    while i < len(calls):
        call = calls[i]
        best = (1, [i], "", 1)
        if _INDEXED.match(call.name) and call.status == "ok":
            for period in (1, 2, 3, 4):
                count, groups, last = _run_length(calls, i, period)
                if count >= 2 and count * period > best[0] * best[3]:
                    best = (count, groups, last, period)
        count, groups, last, period = best
        if count == 1:
            end = _subtree_end(calls, i)
            rows.append(_row(call, call.name or "(model)", call.type, 1, sum(c.params for c in calls[i:end])))
            i += 1
            continue
        group_end = groups[1]
        members = [k for k in range(i, group_end) if calls[k].depth == call.depth]
        kind = call.type if period == 1 else "(" + ", ".join(calls[k].type for k in members) + ")"
        start, stop = _INDEXED.match(call.name).group(2), _INDEXED.match(last).group(2)
        name = f"{call.name[:len(call.name) - len(start)]}{start}-{stop}"
        row = _row(call, name, kind, count, sum(c.params for c in calls[i:group_end]))
        row.outputs = [t.shape for t in calls[members[-1]].outputs[:3]]
        rows.append(row)
        if period == 1:
            rows.extend(collapse(calls[i + 1:group_end])[0])
        i = _subtree_end(calls, groups[-1]) if period == 1 else _end_of_group(calls, groups[-1], period)
    return rows[:MAX_TABLE_ROWS], max(0, len(rows) - MAX_TABLE_ROWS)


def _end_of_group(calls: list[ModuleCall], start: int, period: int) -> int:
    j = start
    for _ in range(period):
        j = _subtree_end(calls, j)
    return j


def _row(call: ModuleCall, name: str, kind: str, count: int, params: int) -> TableRow:
    return TableRow(name=name, type=kind, depth=call.depth, count=count, params=params,
                    inputs=[t.shape for t in call.inputs[:3]], outputs=[t.shape for t in call.outputs[:3]],
                    status=call.status)


def _batch_norm_notes(calls: list[ModuleCall]) -> list[str]:
    """The trace runs in eval mode, where BatchNorm takes a batch of one; training mode refuses it."""
    names = [c.name or "(the model)" for c in calls
             if c.type.startswith(BATCH_NORMS) and c.inputs and c.inputs[0].shape[:1] == [1]]
    if not names:
        return []
    return [f"Batch size 1 reaches BatchNorm layers ({', '.join(dict.fromkeys(names[:5]))}): this check runs in "
            "eval mode, so it passes, but training mode needs a batch > 1 and fails with 'Expected more than 1 "
            "value per channel when training'. Train with batch size >= 2, or use GroupNorm/LayerNorm."]


def _kept_indices(n: int, failure: dict | None) -> list[int]:
    keep = set(range(min(n, HEAD_CALLS))) | set(range(max(0, n - TAIL_CALLS), n))
    if failure and failure.get("call") is not None:
        keep.add(failure["call"])
    return sorted(keep)


def _failure(raw: dict, calls: list[ModuleCall]) -> ShapeFailure:
    received = [TensorSpec(**t) for t in raw.get("received", [])]
    previous = raw.get("previous") or {}
    failure = ShapeFailure(
        module=raw.get("module"), module_type=raw.get("module_type"), module_repr=raw.get("module_repr"),
        exception_type=raw.get("exc_type", "Error"), message=raw.get("message", ""), received=received,
        explanation="", previous_module=previous.get("name"), previous_type=previous.get("type"),
        previous_outputs=[TensorSpec(**t) for t in previous.get("outputs", [])], parents=raw.get("parents", []),
        user_frame=UserFrame(**raw["user_frame"]) if raw.get("user_frame") else None)
    failure.expected, failure.explanation = explain(failure, raw.get("config") or {})
    return failure


# ------------------------------------------------------------------------------------------------
# "Linear expects 256 input features but gets 512: the layer before it, Flatten, outputs [8, 512]"


def _module_label(name: str | None, kind: str | None) -> str:
    return f"{kind} '{name}'" if name else f"{kind} (the model itself)"


def _before(f: ShapeFailure) -> str:
    if not f.previous_module and not f.previous_type:
        return ""
    shapes = ", ".join(str(t.shape) for t in f.previous_outputs[:2]) or "no tensor"
    return f": the layer before it, {_module_label(f.previous_module, f.previous_type)}, outputs {shapes}"


def _mismatch(f: ShapeFailure, what: str, want: Any, got: Any, fix: str) -> tuple[str, str]:
    kind = f.module_type
    return (f"{what} = {want}", f"{_module_label(f.module, kind)} expects {want} {what} but gets {got} "
            f"(input {f.received[0].shape}){_before(f)}. {fix}")


def explain(f: ShapeFailure, config: dict) -> tuple[str | None, str]:
    """(expected, explanation) from the module's configuration and the shapes it received."""
    kind, x = f.module_type or "", f.received[0] if f.received else None
    frame = f" Raised at {f.user_frame.file}:{f.user_frame.line} ({f.user_frame.code})." if f.user_frame else ""
    if x is not None:
        found = _known_mismatch(f, kind, x, config)
        if found is not None:
            return found[0], found[1] + frame
    shapes = ", ".join(f"{t.shape} {t.dtype}" for t in f.received[:4]) or "no tensors"
    named = f.module_repr if f.module_repr and not f.module_repr.endswith("()") else _module_label(f.module, kind)
    return None, (f"{named} raised {f.exception_type}: {f.message.strip()[:300]}"
                  f" with input {shapes}{_before(f)}.{frame}")


def _known_mismatch(f: ShapeFailure, kind: str, x: TensorSpec, config: dict) -> tuple[str, str] | None:
    shape, ndim = x.shape, len(x.shape)
    param_dtype = config.get("param_dtype")
    if param_dtype and x.dtype != param_dtype and x.dtype not in _INTEGER and x.dtype != "bool" and kind != "Embedding":
        return (f"dtype {param_dtype}", f"{_module_label(f.module, kind)} expects {param_dtype} input (its weight's "
                f"dtype) but gets {x.dtype}{_before(f)}. Cast the input (x.to({param_dtype})) or the model.")
    if kind in ("Linear", "Bilinear", "LazyLinear") and "in_features" in config and shape[-1] != config["in_features"]:
        return _mismatch(f, "input features (last dimension)", config["in_features"], shape[-1],
                         f"Set in_features={shape[-1]}, or fix the layer that feeds it.")
    if kind.startswith(("Conv", "ConvTranspose")) and kind[-2:-1].isdigit() and "in_channels" in config:
        n = int(kind[-2])
        if ndim not in (n + 1, n + 2):
            return (f"{n + 2}-D input", f"{_module_label(f.module, kind)} expects a {n + 2}-D input (N, C, ...) or "
                    f"{n + 1}-D unbatched, but gets {ndim}-D {shape}{_before(f)}.")
        channels = shape[1] if ndim == n + 2 else shape[0]
        if channels != config["in_channels"]:
            return _mismatch(f, "input channels", config["in_channels"], channels,
                             f"Set in_channels={channels}, or check the channel order (PyTorch is channels-first).")
    if kind.startswith(("BatchNorm", "InstanceNorm")) and "num_features" in config and ndim >= 2 \
            and shape[1] != config["num_features"]:
        return _mismatch(f, "channels (dimension 1)", config["num_features"], shape[1],
                         f"Set num_features={shape[1]}.")
    if kind == "GroupNorm" and "num_channels" in config and ndim >= 2 and shape[1] != config["num_channels"]:
        return _mismatch(f, "channels (dimension 1)", config["num_channels"], shape[1], f"Set num_channels={shape[1]}.")
    if kind == "LayerNorm" and "normalized_shape" in config:
        want = list(config["normalized_shape"])
        if shape[-len(want):] != want:
            return _mismatch(f, "trailing dimensions", want, shape[-len(want):],
                             f"Set normalized_shape={shape[-len(want):]}.")
    if kind == "Embedding" and "num_embeddings" in config:
        if x.dtype not in _INTEGER:
            return ("integer indices", f"{_module_label(f.module, kind)} expects integer indices but gets {x.dtype}"
                    f"{_before(f)}. Pass dtype='int64' for token ids.")
        if x.max is not None and x.max >= config["num_embeddings"]:
            return (f"indices < {config['num_embeddings']}", f"{_module_label(f.module, kind)} has num_embeddings="
                    f"{config['num_embeddings']} but gets index {x.max}: raise num_embeddings (vocabulary size) or "
                    "check the tokenizer.")
    if kind in ("RNN", "LSTM", "GRU") and "input_size" in config and shape[-1] != config["input_size"]:
        return _mismatch(f, "input features (last dimension)", config["input_size"], shape[-1],
                         f"Set input_size={shape[-1]}.")
    if kind == "MultiheadAttention" and "embed_dim" in config and shape[-1] != config["embed_dim"]:
        return _mismatch(f, "embedding size (last dimension)", config["embed_dim"], shape[-1],
                         f"Set embed_dim={shape[-1]}.")
    return None


# ------------------------------------------------------------------------------------------------
# The torchinfo-like table


def render_table(report: ShapeReport, max_rows: int = 60) -> str:
    """The collapsed tree: 'blocks.0-47  Block x48  each [1, 128, 1600] -> [1, 128, 1600]'."""
    rows = [("Layer", "Type", "Input shape", "Output shape", "Params")]
    for row in report.table[:max_rows]:
        name = ("  " * row.depth) + row.name
        kind = f"{row.type} ×{row.count}" if row.count > 1 else row.type
        each = "each " if row.count > 1 else ""
        out = _dims(row.outputs) if row.status == "ok" else "RAISED" if row.status == "raised" else "(unfinished)"
        params = f"{row.params:,}" + (" each" if row.count > 1 else "") if row.params else "-"
        rows.append((name, kind, each + _dims(row.inputs), out, params))
    hidden = len(report.table) - max_rows + report.table_rows_omitted
    if hidden > 0:
        rows.append((f"... {hidden} more rows (see `table` and `calls`)", "", "", "", ""))
    widths = [min(48, max(len(r[i]) for r in rows)) for i in range(5)]
    lines = ["  ".join(cell[:48].ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"Total params: {report.total_params:,} (trainable {report.trainable_params:,})")
    return "\n".join(lines)


def _dims(shapes: list[list[int]]) -> str:
    return ", ".join(str(s) for s in shapes) or "-"
