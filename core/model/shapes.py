"""Shapes through the user's model: one traced forward pass, and on failure which layer and why.

The worker records every module's input/output shapes in call order (one pass in eval mode under
no_grad, so BatchNorm accepts a batch of one and nothing is trained); this module validates the
requested inputs, bounds the trace, and turns a failure into a sentence that names the layer, what
it expects (from its own parameters) and what the layer before it produced. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core.model.interpreter import InterpreterChoice

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
    notes: list[str] = Field(default_factory=list, description="What this eval-mode pass cannot show about training")
    interpreter: InterpreterChoice | None = Field(None, description="the Python the worker ran under, and why that one")


# ------------------------------------------------------------------------------------------------


def shape_task(entry: dict, input_shapes: list[list[int]] | None, dtypes: list[str | None] | None) -> dict:
    return {"op": "shapes", "entry": entry, "input_shapes": input_shapes, "dtypes": dtypes}


def check_model_shapes(task: dict, *, python: str, timeout: float, memory_mb: int, cwd: Path, target: str,
                       progress: Callable[..., None] | None = None) -> ShapeReport:
    from ml_debug_mcp.core.model.worker import run_worker

    return report_from_trace(run_worker(task, python, timeout, memory_mb, cwd, progress=progress), target)


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
    report.notes = _batch_norm_notes(calls)
    report.summary = failure.explanation if failure else (
        f"forward pass ok: {report.calls_total} module calls, output "
        f"{', '.join(str(t.shape) for t in report.output[:3]) or '(no tensor)'}")
    return report


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
    rows = [("Layer", "Type", "Input shape", "Output shape", "Params")]
    previous = None
    for call in report.calls[:max_rows]:
        if previous is not None and call.index != previous + 1:
            rows.append((f"... {call.index - previous - 1} calls omitted", "", "", "", ""))
        previous = call.index
        name = ("  " * call.depth) + (call.name or "(model)")
        out = _shapes(call.outputs) if call.status == "ok" else "RAISED" if call.status == "raised" else "(unfinished)"
        rows.append((name, call.type, _shapes(call.inputs), out, f"{call.params:,}" if call.params else "-"))
    if len(report.calls) > max_rows:
        rows.append((f"... {len(report.calls) - max_rows} more rows in `calls`", "", "", "", ""))
    widths = [min(48, max(len(r[i]) for r in rows)) for i in range(5)]
    lines = ["  ".join(cell[:48].ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"Total params: {report.total_params:,} (trainable {report.trainable_params:,})")
    return "\n".join(lines)


def _shapes(specs: list[TensorSpec]) -> str:
    if not specs:
        return "-"
    text = ", ".join(str(t.shape) for t in specs[:3])
    return text + (" ..." if len(specs) > 3 else "")
