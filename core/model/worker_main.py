"""The worker process: build the user's model from an entrypoint and inspect it. User code runs here.

`core/model/worker.py` starts this file by path (`python -E -B worker_main.py`) with the task as JSON on
stdin, so it runs under any interpreter that has torch, with or without ml_debug_mcp installed. It
imports only the standard library and, once the task is read, torch.

Entrypoint contract (`path/to/file.py:factory` or `package.module:factory`, the attribute may be
dotted): `factory()` is called with no arguments and returns one of
    model                    inputs come from `input_shapes`
    (model, batch)
    (model, batch, loss_fn)
`batch` is a Tensor (the only forward argument), a dict (keyword arguments to forward), or a pair
`(inputs, target)` where `inputs` is a Tensor, a tuple of Tensors (positional arguments) or a dict.
`loss_fn(output, target)` is called when the batch has a target, `loss_fn(output)` otherwise, and
returns a scalar. A file is imported as a module (its `if __name__ == "__main__":` block does not
run); a file inside a package is imported by its dotted name, so relative imports work.

Output protocol: the real stdout is kept private (file descriptor 1 is pointed at stderr, so user
prints cannot corrupt it) and carries only lines starting with the per-run marker the server sent:
`<marker> progress {json}` while working and exactly one `<marker> result {json}` at the end, either
`{"ok": true, "result": ...}` or `{"ok": false, "error": {...}}`. Non-finite floats are sent as the
strings "nan", "inf", "-inf" so the JSON stays strict.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import sysconfig
import traceback
from pathlib import Path

THIS_FILE = os.path.abspath(__file__)
MAX_MESSAGE = 1500
MAX_TRACEBACK = 4000
MAX_RECORDED_CALLS = 20000
MAX_TENSORS_PER_CALL = 8
MAX_KEYS_LISTED = 50
KNOWN_MODEL_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                      "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
NON_MODEL_KEYS = ("optimizer", "optimizer_state_dict", "optim", "scheduler", "lr_scheduler", "scaler")
MODULE_CONFIG_ATTRS = ("in_features", "out_features", "in_channels", "out_channels", "kernel_size", "stride",
                       "padding", "num_features", "normalized_shape", "num_embeddings", "embedding_dim",
                       "input_size", "hidden_size", "num_layers", "batch_first", "embed_dim", "num_heads",
                       "num_groups", "num_channels", "start_dim", "end_dim")

torch = None  # imported by _import_torch once the task is read
contract = meta_trace = None  # contract.py and meta_trace.py beside this file, loaded by path with torch
confine = None  # confine.py beside this file: the sandbox, applied before anything else


class WorkerFailure(Exception):
    """A failure the server turns into a specific, actionable error (kind + phase + the cause)."""

    def __init__(self, kind: str, phase: str, cause: BaseException | None = None, **extra: object) -> None:
        super().__init__(kind)
        self.kind, self.phase, self.cause, self.extra = kind, phase, cause, extra

    def as_dict(self) -> dict:
        out: dict = {"kind": self.kind, "phase": self.phase, **self.extra}
        if self.cause is not None:
            out.update(describe_exception(self.cause))
        return out


# ------------------------------------------------------------------------------------------------
# Output channel


class Channel:
    """The private stdout: marker-prefixed progress and result lines."""

    def __init__(self, stream, marker: str) -> None:
        self.stream, self.marker, self.phase = stream, marker, "starting"

    def progress(self, message: str, done: float | None = None, total: float | None = None) -> None:
        self.phase = message
        self._send("progress", {"message": message, "done": done, "total": total})

    def result(self, payload: dict) -> None:
        self._send("result", payload)

    def _send(self, what: str, payload: dict) -> None:
        self.stream.write(f"{self.marker} {what} {json.dumps(strict_json(payload), allow_nan=False)}\n")
        self.stream.flush()


def private_stdout():
    """Keep fd 1 for the protocol and send everything else that writes to it (print, C code) to stderr."""
    private = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return private


def strict_json(value):
    """Non-finite floats become strings; tuples become lists; anything else unknown becomes its repr."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)[:200]


# ------------------------------------------------------------------------------------------------
# Errors: which frame is the user's, and how to describe an exception


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if torch is not None:
        dirs.add(os.path.dirname(torch.__file__))
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs if d)


def _is_user_file(filename: str) -> bool:
    if os.path.dirname(os.path.abspath(filename)) == os.path.dirname(THIS_FILE) or filename.startswith("<"):
        return False
    return not filename.startswith(_library_dirs())


def user_frame(tb) -> dict | None:
    """The last traceback frame in the user's own code (not torch, the stdlib or this worker)."""
    frames = [f for f in traceback.extract_tb(tb) if _is_user_file(f.filename)]
    if not frames:
        return None
    f = frames[-1]
    return {"file": f.filename, "line": f.lineno, "function": f.name, "code": (f.line or "").strip()[:300]}


def is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("can't allocate memory", "not enough memory", "std::bad_alloc", "out of memory"))


def describe_exception(exc: BaseException) -> dict:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "exc_type": type(exc).__name__,
        "message": str(exc)[:MAX_MESSAGE],
        "user_frame": user_frame(exc.__traceback__),
        "traceback": text[-MAX_TRACEBACK:],
    }


def exit_code(exc: SystemExit) -> int:
    return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1


@contextlib.contextmanager
def phase(channel: Channel, name: str, kind: str = "user_exception"):
    """Announce a phase (the server names it if the process dies) and classify what escapes it."""
    channel.progress(name)
    try:
        yield
    except WorkerFailure:
        raise
    except SystemExit as exc:
        raise WorkerFailure("user_exit", name, exc, exit_code=exit_code(exc)) from None
    except Exception as exc:
        raise WorkerFailure("memory" if is_memory_error(exc) else kind, name, exc) from None


# ------------------------------------------------------------------------------------------------
# Building the model from the entrypoint


def _import_torch(channel: Channel) -> None:
    global torch, contract, meta_trace
    channel.progress("importing torch")
    try:
        import torch as _torch
    except Exception as exc:
        raise WorkerFailure("no_torch", "importing torch", exc, python=sys.executable) from None
    torch = _torch
    contract, meta_trace = _sibling("contract"), _sibling("meta_trace")


def _sibling(name: str):
    """A module beside this file, loaded by path (ml_debug_mcp need not be installed where the worker runs)."""
    spec = importlib.util.spec_from_file_location(f"_ml_debug_mcp_{name}", os.path.join(os.path.dirname(THIS_FILE),
                                                                                      f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package_name(path: Path, root: Path | None) -> tuple[str, Path] | None:
    """For a file inside a package (folders with __init__.py): its dotted name and the folder to import from.

    The climb stops at the sandbox root: an `__init__.py` above it is outside the roots and must not run.
    """
    parts = [path.stem] if path.name != "__init__.py" else []
    folder = path.parent
    while folder != root and (folder / "__init__.py").is_file() and all(p.isidentifier() for p in parts):
        parts.insert(0, folder.name)
        folder = folder.parent
    if not parts or folder == path.parent or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts), folder


def load_module(entry: dict, channel: Channel):
    with phase(channel, "importing the entrypoint", kind="entry_import"):
        if "module" in entry:
            sys.path.insert(0, entry["sys_path"])
            module = importlib.import_module(entry["module"])
            loaded = getattr(module, "__file__", None)
            if loaded is None or Path(loaded).resolve() != Path(entry["file"]):
                # A name like "json" resolves to the standard library, not the project's json.py.
                raise WorkerFailure("entry_shadowed", "importing the entrypoint", None, module=entry["module"],
                                    loaded=str(loaded), expected=entry["file"])
            return module
        path = Path(entry["file"])
        if not path.is_file():
            raise WorkerFailure("entry_missing", "importing the entrypoint", None, file=str(path))
        package = _package_name(path, Path(entry["root"]) if entry.get("root") else None)
        if package is not None:
            sys.path.insert(0, str(package[1]))
            return importlib.import_module(package[0])
        sys.path.insert(0, str(path.parent))
        name = path.stem
        if not name.isidentifier() or name in sys.modules or name in getattr(sys, "stdlib_module_names", ()):
            name = "user_entrypoint"  # never shadow a module the worker or torch already uses
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module


def find_factory(module, attr: str):
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise WorkerFailure("entry_attribute", "finding the factory", None, attribute=attr,
                                module=module.__name__, available=names[:30])
        target = getattr(target, part)
    if not callable(target):
        raise WorkerFailure("entry_attribute", "finding the factory", None, attribute=attr,
                            module=module.__name__, not_callable=type(target).__name__)
    return target


def build(task: dict, channel: Channel):
    """Call the factory and read what it returned through the contract (contract.py); a Case."""
    factory = find_factory(load_module(task["entry"], channel), task["entry"]["attr"])
    try:
        contract.check_factory(factory)
    except contract.ContractError as exc:
        raise WorkerFailure("factory_contract", "checking the factory's signature", exc) from None
    with phase(channel, "building the model (calling the factory)", kind="factory_raised"):
        made = factory()
    try:
        return contract.unpack(made)
    except contract.ContractError as exc:
        raise WorkerFailure("factory_result", "checking what the factory returned", exc) from None


# ------------------------------------------------------------------------------------------------
# Inputs and loss


def model_device(model):
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def default_float_dtype(model):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def random_inputs(model, shapes: list[list[int]], dtypes: list[str | None], device=None) -> list:
    """Random tensors of the given shapes; integer inputs stay below the smallest Embedding's size."""
    gen = torch.Generator().manual_seed(0)
    embeddings = [m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    high = min(embeddings) if embeddings else 2
    device, out = device or model_device(model), []
    for shape, name in zip(shapes, dtypes):
        dtype = getattr(torch, name) if name else default_float_dtype(model)
        if dtype.is_floating_point:
            t = torch.randn(shape, generator=gen).to(dtype)
        elif dtype == torch.bool:
            t = torch.randint(0, 2, shape, generator=gen).bool()
        else:
            t = torch.randint(0, high, shape, generator=gen).to(dtype)
        out.append(t.to(device))
    return out


def primary_tensor(output):
    return contract.output_tensor(output)


def step_inputs(task: dict, case, channel: Channel, device=None):
    """(case, description): the factory's case, or one whose batch is random inputs of input_shapes.

    Inputs made from shapes are forward arguments only (no target), so the default loss replaces a
    loss_fn(model, batch) or training_step, which expect the user's own batch.
    """
    if task.get("input_shapes"):
        with phase(channel, "creating inputs"):
            args = random_inputs(case.model, task["input_shapes"],
                                 task.get("dtypes") or [None] * len(task["input_shapes"]), device)
        if case.form != "loss_fn(output)":
            case = contract.Case(case.model, None, None, "default loss", "random inputs of input_shapes have no "
                                 "target: the output's .loss, else MSE to a fixed random target")
        return case._replace(batch=(tuple(args), None)), "random inputs of input_shapes"  # (inputs, no target)
    if case.batch is None:
        raise WorkerFailure("no_inputs", "creating inputs", None)
    return case, "the factory's batch"


# ------------------------------------------------------------------------------------------------
# Tensor descriptions


def tensor_specs(value, path: str = "", limit: int = MAX_TENSORS_PER_CALL, ranges: dict | None = None) -> list[dict]:
    """Shape/dtype/device of every tensor in a (nested) value, depth-first, bounded."""
    found: list[dict] = []

    def walk(v, where: str, depth: int) -> None:
        if len(found) >= limit or depth > 4:
            return
        if torch.is_tensor(v):
            spec = {"path": where or "0", "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""),
                    "device": str(v.device)}
            if not v.is_floating_point() and not v.is_complex() and v.numel() and v.dtype != torch.bool:
                if not v.is_meta:
                    spec["min"], spec["max"] = int(v.min()), int(v.max())
                elif ranges and id(v) in ranges:
                    spec["min"], spec["max"] = ranges[id(v)]
            found.append(spec)
        elif isinstance(v, dict):
            for k, item in v.items():
                walk(item, f"{where}.{k}" if where else str(k), depth + 1)
        elif isinstance(v, (tuple, list)):
            for i, item in enumerate(v):
                walk(item, f"{where}.{i}" if where else str(i), depth + 1)
        elif hasattr(v, "__dataclass_fields__") or hasattr(v, "keys"):
            with contextlib.suppress(Exception):
                walk(dict(v.items()) if hasattr(v, "items") else vars(v), where, depth + 1)

    walk(value, path, 0)
    return found


def module_config(module) -> dict:
    config = {}
    for attr in MODULE_CONFIG_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, (int, float, bool, str)) or (isinstance(value, (tuple, list)) and
                                                          all(isinstance(v, int) for v in value)):
            config[attr] = list(value) if isinstance(value, (tuple, list)) else value
    for p in module.parameters(recurse=False):
        config["param_dtype"] = str(p.dtype).replace("torch.", "")
        break
    return config


def module_repr(module) -> str:
    try:
        extra = module.extra_repr()
    except Exception:
        extra = ""
    return f"{type(module).__name__}({extra})"[:300]


# ------------------------------------------------------------------------------------------------
# check_shapes: one traced forward pass


def op_shapes(task: dict, channel: Channel) -> dict:
    """Trace the step on meta weights (meta_trace.py), at the batch's sizes and at a changed batch/sequence."""
    meta = bool(task.get("meta", True))
    try:
        with meta_trace.MetaInit() if meta else contextlib.nullcontext():
            case = build(task, channel)
    except WorkerFailure as failure:
        if meta and failure.kind == "factory_raised" and meta_trace.is_meta_error(failure.cause):
            raise WorkerFailure("meta_value", failure.phase, failure.cause) from None
        raise
    case, source = step_inputs(task, case, channel, torch.device("cpu"))
    model, notes = case.model, []
    if meta and not meta_trace.on_meta(model):
        model.to_empty(device="meta")  # weights the factory made for real (loaded, or built outside __init__)
    budget = int(task.get("fallback_mb", 1024)) << 20
    checkpoint = state_dict_diff(model, task["checkpoint"], channel) if task.get("checkpoint") else None
    ranges: dict = {}
    base = _trace(case, meta, ranges, budget, notes, channel)
    if meta and base["failure"] is not None and base["failure"].pop("meta_error", False):
        reason = f"{base['failure']['exc_type']}: {base['failure']['message'].splitlines()[0][:200]}"
        where = _frame_text_short(base["failure"])
        if meta_trace.param_bytes(model) > budget:
            raise WorkerFailure("meta_unsupported", "forward pass on the meta device", None, reason=reason,
                                where=where, needed_mb=meta_trace.param_bytes(model) >> 20, budget_mb=budget >> 20)
        with phase(channel, "building real weights (the meta trace could not finish)", kind="memory"):
            meta_trace.materialize(model)
        meta = False
        notes.append(f"traced with real tensors for the whole model: {reason}{where}; the meta device has shapes "
                     "but no values")
        base = _trace(case, meta, ranges, budget, notes, channel)
    variants = []
    for dimension, resized in _resized_batches(case.batch):
        channel.progress(f"tracing again with the {dimension} changed")
        other = _trace(case._replace(batch=resized[2]), meta, ranges, budget, [], channel, record=False)
        failure = other["failure"] or {}
        variants.append({"dimension": dimension, "from": resized[0], "to": resized[1],
                         "status": "failed" if other["failure"] else "ok", "module": failure.get("module"),
                         "message": (failure.get("message") or "").splitlines()[0][:300] if failure else None})
    return {**base, "input_source": source, "loss_form": case.describe_form(), "variants": variants,
            "meta": meta, "fallback_notes": notes[:20], "checkpoint": checkpoint,
            "total_params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "param_bytes": meta_trace.param_bytes(model)}


def _frame_text_short(failure: dict) -> str:
    frame = failure.get("user_frame")
    return f" at {frame['file']}:{frame['line']} ({frame['code']})" if frame else ""


def _resized_batches(batch):
    """(dimension, (old, new, batch)) with the batch dimension changed, and the sequence one for token inputs."""
    found = contract.tensors(batch)
    if not found or found[0].dim() == 0:
        return []
    size = found[0].shape[0]
    out = [("batch", (size, size + 1 if size > 1 else 2))]
    tokens = [t for t in found if t.dim() >= 2 and not t.is_floating_point() and t.dtype != torch.bool]
    if tokens:
        length = tokens[0].shape[1]
        out.append(("sequence", (length, length - 1 if length > 2 else length + 1)))
    return [(name, (old, new, _resize(batch, 0 if name == "batch" else 1, old, new))) for name, (old, new) in out]


def _resize(batch, dim: int, old: int, new: int):
    def change(t):
        if t.dim() <= dim or t.shape[dim] != old or (dim == 1 and t.dim() < 2):
            return t
        shape = list(t.shape)
        shape[dim] = new
        if t.is_meta:
            return torch.empty(shape, dtype=t.dtype, device="meta")
        if t.is_floating_point():
            return torch.randn(shape, dtype=t.dtype)
        if t.dtype == torch.bool or not t.numel():
            return torch.ones(shape, dtype=t.dtype)
        return torch.randint(int(t.min()), int(t.max()) + 1, shape).to(t.dtype)

    return contract.map_tensors(batch, change)


def _trace(case, meta: bool, ranges: dict, budget: int, notes: list, channel: Channel, record: bool = True) -> dict:
    """One no-grad pass of the step with every module's input/output shapes recorded in call order
    (without `record`, only the modules still running are kept: enough to say which one raised)."""
    model = case.model
    batch = meta_trace.to_meta(case.batch, contract.map_tensors, ranges) if meta else case.batch
    names = {id(m): n for n, m in model.named_modules()}
    calls: list[dict] = []
    stack: list[int] = []
    dropped = [0]

    def pre(module, a, kw):
        if len(calls) >= MAX_RECORDED_CALLS:
            dropped[0] += 1
            stack.append(-1)
        else:
            calls.append({"index": len(calls), "name": names.get(id(module), "?"), "type": type(module).__name__,
                          "depth": len(stack), "inputs": tensor_specs((a, kw) if kw else a, ranges=ranges)
                          if record else [],
                          "params": sum(p.numel() for p in module.parameters(recurse=False)),
                          "leaf": not any(True for _ in module.children()), "status": "running"})
            stack.append(len(calls) - 1)
        if meta and a and torch.is_tensor(a[0]):
            _meta_checks(module, a[0], ranges)

    def post(module, a, kw, output):
        index = stack.pop()
        if index >= 0:
            calls[index]["outputs"] = tensor_specs(output) if record else []
            calls[index]["status"] = "ok"

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    wrapped = meta_trace.fallback_forwards(model, contract.map_tensors, ranges, budget, notes) if meta else []
    model.eval()
    failure = output = None
    channel.progress("forward pass")
    try:
        with torch.no_grad(), torch.device("meta") if meta else contextlib.nullcontext():
            if contract.takes_model(case):
                output = contract.run_step(case._replace(batch=batch)).output
            else:
                output = contract.forward(model, batch)
    except SystemExit as exc:
        raise WorkerFailure("user_exit", "forward pass", exc, exit_code=exit_code(exc)) from None
    except Exception as exc:
        if is_memory_error(exc):
            raise WorkerFailure("memory", "forward pass", exc) from None
        failure = _shape_failure(exc, model, calls, [i for i in stack if i >= 0])
        if meta and meta_trace.is_meta_error(exc):
            failure["meta_error"] = True
    finally:
        for h in handles:
            h.remove()
        for m in wrapped:
            del m.forward
    return {"inputs": tensor_specs(batch, limit=32, ranges=ranges), "calls": calls, "calls_dropped": dropped[0],
            "output": tensor_specs(output) if failure is None else [], "failure": failure}


WEIGHTED = ("Linear", "Bilinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
            "ConvTranspose3d", "RNN", "LSTM", "GRU")


def _meta_checks(module, x, ranges: dict) -> None:
    """What CPU kernels check and meta kernels do not: index range (from the real batch) and input dtype."""
    if isinstance(module, torch.nn.Embedding):
        low, high = ranges.get(id(x), (0, 0))
        if high >= module.num_embeddings or low < 0:
            raise IndexError("index out of range in self")  # the CPU kernel's words
    elif type(module).__name__ in WEIGHTED and x.is_floating_point():
        weight = next((p for p in module.parameters(recurse=False) if p.is_floating_point()), None)
        if weight is not None and weight.dtype != x.dtype:
            raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got {x.dtype} and {weight.dtype}")


def state_dict_diff(model, path: str, channel: Channel) -> dict:
    """Keys, shapes and dtypes of the model's state_dict and of the checkpoint (headers or mmap only)."""
    mine = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()}
    theirs = Checkpoint(path, channel)
    return {"model": mine, "checkpoint": {k: [theirs.shapes[k], theirs.dtypes.get(k)] for k in theirs.shapes},
            "note": theirs.note}


def _shape_failure(exc: Exception, model, calls: list[dict], open_calls: list[int]) -> dict:
    """Which module raised (the innermost still running), what it is, and what ran just before it."""
    modules = dict(model.named_modules())
    failing = open_calls[-1] if open_calls else None
    info = describe_exception(exc)
    if failing is None:
        return {**info, "call": None}
    record = calls[failing]
    module = modules.get(record["name"])
    record["status"] = "raised"
    previous = next((c for c in reversed(calls) if c["status"] == "ok" and c["leaf"]), None)
    return {**info, "call": failing, "module": record["name"], "module_type": record["type"],
            "module_repr": module_repr(module) if module is not None else record["type"],
            "config": module_config(module) if module is not None else {},
            "received": record["inputs"], "parents": [calls[i]["name"] for i in open_calls[:-1]],
            "previous": ({"name": previous["name"], "type": previous["type"], "outputs": previous.get("outputs", [])}
                         if previous else None)}


# ------------------------------------------------------------------------------------------------
# analyze_gradients: forward/backward and optimizer steps, measured per parameter


def _norms(tensors: list) -> list:
    """L2 norms in fp32 as 0-d tensors: one fused kernel for dense tensors, sparse ones one by one."""
    if not tensors:
        return []
    if not any(t.is_sparse for t in tensors):
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    return [(t.coalesce().values() if t.is_sparse else t).float().norm() for t in tensors]


def _median(values: list[float]) -> float | None:
    finite = sorted(v for v in values if math.isfinite(v))
    return finite[len(finite) // 2] if finite else None


def _forward_order_hooks(model, state: dict):
    """First-call order of every module, and where a NaN/Inf first shows up: a module's input or output.

    A non-finite input means the value was produced before that module ran (by the data, or by code
    in a parent's forward such as a log of a negative number); a non-finite output means it was made there.
    """
    names = {id(m): n for n, m in model.named_modules()}

    def note(module, value, where: str) -> None:
        if state["nonfinite_module"] is None:
            out = primary_tensor(value)
            if out is not None and out.is_floating_point() and not bool(torch.isfinite(out).all()):
                state["nonfinite_module"] = {"module": names.get(id(module), "?"), "type": type(module).__name__,
                                             "step": state["step"], "where": where}

    def pre(module, a):
        state["order"].setdefault(names.get(id(module), "?"), len(state["order"]))
        note(module, a, "input")

    def post(module, a, output):
        note(module, output, "output")

    return [h for m in model.modules() for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]


def op_gradients(task: dict, channel: Channel) -> dict:
    device = task_device(task)
    case, source = step_inputs(task, build(task, channel), channel, device)
    model = case.model
    if device is not None:
        with phase(channel, f"moving the model and batch to {task.get('device')}", kind="device_failed"):
            model.to(device)
            case = case._replace(batch=contract.map_tensors(case.batch, lambda t: t.to(device)))
    named = [(n, p) for n, p in model.named_parameters()]
    trainable = [(n, p) for n, p in named if p.requires_grad]
    if not trainable:
        raise WorkerFailure("no_trainable", "collecting parameters", None, params=len(named))
    params = [p for _, p in trainable]
    steps, lr = int(task.get("steps", 1)), float(task.get("lr", 1e-3))
    optimizer = None
    if steps >= 1:
        cls = torch.optim.Adam if task.get("optimizer", "adam") == "adam" else torch.optim.SGD
        optimizer = cls(params, lr=lr)
    state = {"order": {}, "nonfinite_module": None, "step": 0}
    handles = _forward_order_hooks(model, state)
    model.train()
    per = [{"grad": [], "ratio": [], "nonfinite_step": None, "nonfinite_count": 0} for _ in params]
    history, first, broken = [], None, None
    weight_norms_0 = [float(v) for v in _norms([p.detach() for p in params])]
    form = case.form
    for step in range(max(steps, 1)):
        state["step"] = step
        channel.progress(f"training step {step + 1} of {max(steps, 1)}", step, max(steps, 1))
        model.zero_grad(set_to_none=True)
        with phase(channel, f"forward pass and loss as {form}", kind="step_failed"):
            loss = contract.run_step(case, hint=task.get("loss", "auto")).loss
        loss_value = float(loss.detach().float())
        if not loss.requires_grad:
            broken = "the loss does not require grad: no path connects any parameter to the loss"
            history.append({"step": step, "loss": loss_value, "global_grad_norm": None})
            break
        with phase(channel, "backward pass", kind="backward_failed"):
            loss.backward()
        record = _measure_step(params, per, step, first is None)
        if first is None:
            first = record["first"]
        ratio = None
        if optimizer is not None:
            ratio = _optimizer_step(optimizer, params, per, channel)
        history.append({"step": step, "loss": loss_value, "global_grad_norm": record["global"],
                        "global_update_ratio": ratio})
        if not math.isfinite(loss_value) or not math.isfinite(record["global"]):
            break
    for h in handles:
        h.remove()
    weight_norms_1 = [float(v) for v in _norms([p.detach() for p in params])]
    modules = dict(model.named_modules())
    layers = []
    for i, (name, p) in enumerate(trainable):
        module = name.rpartition(".")[0]
        grads = per[i]["grad"]
        layers.append({
            "name": name, "module": module, "module_type": type(modules.get(module, model)).__name__,
            "order": state["order"].get(module), "shape": list(p.shape), "numel": p.numel(),
            "grad_missing": first is None or first["missing"][i],
            "grad_norm": grads[0] if grads else None, "grad_norm_last": grads[-1] if grads else None,
            "grad_norm_max": max((g for g in grads if g is not None and math.isfinite(g)), default=None),
            "zero_fraction": first["zero"][i] if first else None,
            "nonfinite_step": per[i]["nonfinite_step"], "nonfinite_count": per[i]["nonfinite_count"],
            "weight_norm": weight_norms_0[i], "weight_norm_last": weight_norms_1[i],
            "update_ratio": _median(per[i]["ratio"]), "update_ratio_max": max(
                (r for r in per[i]["ratio"] if math.isfinite(r)), default=None),
        })
    return {"layers": layers, "history": history, "broken_graph": broken, "input_source": source,
            "nonfinite_module": state["nonfinite_module"], "frozen_params": len(named) - len(trainable),
            "frozen_param_names": [n for n, p in named if not p.requires_grad][:MAX_KEYS_LISTED],
            "module_order": sorted(state["order"], key=state["order"].get)[:2000],
            "module_types": {n: type(m).__name__ for n, m in modules.items() if n in state["order"]},
            "lr": lr, "steps": steps, "loss_form": case.describe_form(), "device": task.get("device") or "cpu",
            "param_dtype": str(params[0].dtype).replace("torch.", "")}


def task_device(task: dict):
    """None for the CPU default; the one GPU the server made visible for device='cuda:N'."""
    wanted = task.get("device") or "cpu"
    if wanted == "cpu":
        return None
    if not torch.cuda.is_available():
        raise WorkerFailure("no_cuda", "looking for the GPU", None, device=wanted)
    return torch.device("cuda:0")  # CUDA_VISIBLE_DEVICES holds only the requested index


def _measure_step(params: list, per: list[dict], step: int, is_first: bool) -> dict:
    """Gradient norms of this step (one fused norm, one host transfer); zero share on the first step."""
    present = [i for i, p in enumerate(params) if p.grad is not None]
    grads = [params[i].grad for i in present]
    norms = [float(v) for v in torch.stack(_norms(grads)).tolist()] if grads else []
    by_index = dict(zip(present, norms))
    for i, slot in enumerate(per):
        value = by_index.get(i)
        slot["grad"].append(value)
        if value is not None and not math.isfinite(value) and slot["nonfinite_step"] is None:
            g = params[i].grad
            slot["nonfinite_step"], slot["nonfinite_count"] = step, int((~torch.isfinite(g.to_dense())).sum())
    first = None
    if is_first:
        zero = {i: float((g.to_dense() == 0).float().mean()) for i, g in zip(present, grads)}
        first = {"missing": [i not in by_index for i in range(len(params))], "zero": [zero.get(i) for i in range(len(params))]}
    total = math.sqrt(sum(v * v for v in norms)) if norms else 0.0
    return {"global": total, "first": first}


def _optimizer_step(optimizer, params: list, per: list[dict], channel: Channel) -> float | None:
    """Take one step and measure ||W_after - W_before|| / ||W_before|| per parameter."""
    before = [p.detach().clone() for p in params]
    with phase(channel, "optimizer step", kind="optimizer_failed"):
        optimizer.step()
    deltas = torch._foreach_sub([p.detach() for p in params], before)
    stacked = torch.stack(_norms(deltas) + _norms(before)).tolist()
    n = len(params)
    num = den = 0.0
    for i in range(n):
        delta, weight = stacked[i], stacked[n + i]
        num, den = num + delta * delta, den + weight * weight
        if weight > 0:
            per[i]["ratio"].append(delta / weight)
    return math.sqrt(num) / math.sqrt(den) if den > 0 else None


# ------------------------------------------------------------------------------------------------
# analyze_gradients from a checkpoint pair


class Checkpoint:
    """Tensors of one checkpoint file, read lazily (safetensors) or memory-mapped (torch, weights_only)."""

    def __init__(self, path: str, channel: Channel) -> None:
        self.path, self.note = path, None
        with phase(channel, f"opening {os.path.basename(path)}", kind="checkpoint_unreadable"):
            if path.endswith(".safetensors"):
                self._open_safetensors(path)
            else:
                self._open_torch(path)

    def _open_safetensors(self, path: str) -> None:
        try:
            from safetensors import safe_open
        except ImportError as exc:
            raise WorkerFailure("missing_package", "opening a safetensors file", exc, package="safetensors") from None
        handle = safe_open(path, framework="pt")
        slices = {k: handle.get_slice(k) for k in handle.keys()}
        self.shapes = {k: list(v.get_shape()) for k, v in slices.items()}
        self.dtypes = {k: SAFETENSORS_DTYPES.get(v.get_dtype(), v.get_dtype()) for k, v in slices.items()}
        self.get = handle.get_tensor

    def _open_torch(self, path: str) -> None:
        import pickle

        try:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only" not in str(exc).lower():
                raise
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            raise WorkerFailure("unsafe_pickle", f"loading {os.path.basename(path)}", exc, file=path,
                                global_name=found.group(1) if found else None) from None
        tensors: dict = {}
        root = obj
        if isinstance(obj, dict):
            for key in KNOWN_MODEL_KEYS:
                if isinstance(obj.get(key), dict) and any(torch.is_tensor(v) for v in obj[key].values()):
                    root, self.note = obj[key], f"used the '{key}' entry of the checkpoint"
                    break
            else:
                root = {k: v for k, v in obj.items() if k not in NON_MODEL_KEYS}
        _flatten(root, "", tensors)
        if not tensors:
            raise WorkerFailure("checkpoint_empty", f"reading {os.path.basename(path)}", None, file=path,
                                top_keys=[str(k) for k in obj][:20] if isinstance(obj, dict) else [])
        self.shapes = {k: list(v.shape) for k, v in tensors.items()}
        self.dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in tensors.items()}
        self.get = tensors.__getitem__


def _flatten(value, prefix: str, out: dict) -> None:
    if torch.is_tensor(value):
        out[prefix or "tensor"] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), out)


def _compare_tensor(name: str, w0, w1) -> dict:
    return {"name": name, "shape": list(w0.shape), "numel": w0.numel(), "identical": bool(torch.equal(w0, w1)),
            "weight_norm": float(w0.norm()), "weight_norm_after": float(w1.norm()), "delta_norm": float((w1 - w0).norm()),
            "nonfinite_before": int((~torch.isfinite(w0)).sum()), "nonfinite_after": int((~torch.isfinite(w1)).sum())}


def op_checkpoints(task: dict, channel: Channel) -> dict:
    before, after = Checkpoint(task["before"], channel), Checkpoint(task["after"], channel)
    common = [k for k in before.shapes if k in after.shapes]
    changed = [{"name": k, "before": before.shapes[k], "after": after.shapes[k]}
               for k in common if before.shapes[k] != after.shapes[k]]
    same = [k for k in common if before.shapes[k] == after.shapes[k]]
    tensors, skipped = [], 0
    with phase(channel, "comparing tensors", kind="checkpoint_unreadable"):
        for n, key in enumerate(same):
            if n and n % 100 == 0:
                channel.progress("comparing tensors", n, len(same))
            w0, w1 = before.get(key), after.get(key)
            if not (w0.is_floating_point() and w1.is_floating_point()):
                skipped += 1
                continue
            tensors.append(_compare_tensor(key, w0.float(), w1.float()))
    only_before = [k for k in before.shapes if k not in after.shapes]
    only_after = [k for k in after.shapes if k not in before.shapes]
    return {"tensors": tensors, "skipped_non_float": skipped, "keys_before": len(before.shapes),
            "keys_after": len(after.shapes), "only_before": only_before[:MAX_KEYS_LISTED],
            "only_after": only_after[:MAX_KEYS_LISTED], "only_before_count": len(only_before),
            "only_after_count": len(only_after), "shape_changed": changed[:MAX_KEYS_LISTED],
            "shape_changed_count": len(changed), "notes": [n for n in (before.note, after.note) if n]}


# ------------------------------------------------------------------------------------------------


OPERATIONS = {"shapes": op_shapes, "gradients": op_gradients, "checkpoints": op_checkpoints}


def run(task: dict, channel: Channel) -> dict:
    """Run one task in this process (the tests call it directly to exercise the analysis without a spawn)."""
    operation = OPERATIONS.get(task.get("op"))
    if operation is None:
        raise WorkerFailure("bad_task", "reading the task", None, op=task.get("op"))
    if torch is None:
        _import_torch(channel)
    torch.manual_seed(int(task.get("seed", 0)))
    return operation(task, channel)


def main() -> int:
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(THIS_FILE):
        sys.path.pop(0)  # this folder holds core modules whose names (errors, plot...) could shadow user imports
    global confine
    confine = _sibling("confine")
    confine.confine_from_environment()  # first: before any user code, while single-threaded
    stream = private_stdout()
    faulthandler.enable(sys.stderr)
    task = json.loads(sys.stdin.read())
    channel = Channel(stream, task["marker"])
    try:
        channel.result({"ok": True, "result": run(task, channel)})
    except WorkerFailure as failure:
        channel.result({"ok": False, "error": failure.as_dict()})
    except BaseException as exc:  # noqa: BLE001 - whatever user code raises must come back as a result
        kind = "memory" if is_memory_error(exc) else "user_exit" if isinstance(exc, SystemExit) else "internal"
        channel.result({"ok": False, "error": {"kind": kind, "phase": channel.phase, **describe_exception(exc)}})
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    confine.kill_descendants()  # what user code left running, daemons included (we are their subreaper)
    os._exit(code)  # the result is out: do not wait for threads or atexit handlers user code left behind
