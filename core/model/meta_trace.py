"""Tracing without the memory: weights on the meta device, real batches, real tensors only where needed.

Loaded by path in the inspection worker (worker_main.py), beside contract.py. The factory runs
under `MetaInit`: tensors made while an nn.Module is being constructed go to the meta device (shapes
and dtypes, no storage), everything else the factory makes (the batch) stays real, so a 7B model
costs no more than its parameter count and token ids keep their values for range checks.
`.to("cpu")`/`.cpu()` on a meta tensor keeps it on meta, so `Net().to(device)` still works.

The forward pass runs on meta copies of the batch under `torch.device("meta")`. A leaf module whose
op has no meta kernel is run for real, alone (`materialized_call`): its weights are made on the CPU,
it gets random real inputs of the same shapes, and its outputs go back to meta. Only the model's
own code reading values (`.item()`, a data-dependent shape) needs the whole model real.
"""

from __future__ import annotations

import sys

import torch
from torch.overrides import TorchFunctionMode

try:
    from torch.utils._device import _device_constructors
    CONSTRUCTORS = frozenset(_device_constructors())
except ImportError:  # an older or newer torch: the common constructors
    CONSTRUCTORS = frozenset(getattr(torch, n) for n in (
        "empty", "zeros", "ones", "full", "rand", "randn", "randint", "arange", "linspace", "tensor", "eye",
        "empty_strided", "randperm", "normal", "logspace") if hasattr(torch, n))
MOVES = frozenset({torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda})
# Random initialisers: meaningless without values, and on meta some run as Python decompositions
# whose first use imports torch._dynamo (seconds). On a meta tensor they return it unchanged.
INITIALISERS = frozenset(getattr(torch.Tensor, n) for n in (
    "normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_", "log_normal_", "cauchy_",
    "erfinv_") if hasattr(torch.Tensor, n))
META_ERRORS = ("meta tensor", "'Meta' backend", "Meta backend", "on meta tensors", "data-dependent",
               "Cannot copy out of meta", "meta device", "with meta", "DispatchKey.Meta", "to_empty",
               "no fake impl registered", "register_fake")


def is_meta_error(exc: BaseException) -> bool:
    """An error that comes from tracing on meta (no kernel, no values), not from the user's shapes."""
    return isinstance(exc, (NotImplementedError, RuntimeError, ValueError, TypeError)) and \
        any(s in str(exc) for s in META_ERRORS)


def _in_module_init() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "__init__" and isinstance(frame.f_locals.get("self"), torch.nn.Module):
            return True
        frame = frame.f_back
    return False


class MetaInit(TorchFunctionMode):
    """Tensors made inside an nn.Module's __init__ land on meta; moving a meta tensor keeps it there."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in CONSTRUCTORS and kwargs.get("device") is None and _in_module_init():
            kwargs["device"] = "meta"
        elif func in INITIALISERS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        elif func in MOVES and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            dtype = kwargs.get("dtype") or next((a for a in args[1:] if isinstance(a, torch.dtype)), None)
            other = next((a for a in args[1:] if isinstance(a, torch.Tensor)), None)
            dtype = dtype or (other.dtype if other is not None else None)
            return args[0] if dtype is None or func is not torch.Tensor.to else args[0].to(dtype=dtype)
        return func(*args, **kwargs)


def param_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def on_meta(module: torch.nn.Module) -> bool:
    return any(t.is_meta for t in list(module.parameters()) + list(module.buffers()))


def materialize(module: torch.nn.Module, device: str = "cpu") -> None:
    """Real (initialised) weights for a meta module: to_empty, then each submodule's reset_parameters."""
    module.to_empty(device=device)
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            try:
                reset()
            except Exception:  # noqa: BLE001 - uninitialised weights still have the right shapes
                pass


def real_like(t: torch.Tensor, ranges: dict[int, tuple[int, int]]) -> torch.Tensor:
    """A real tensor shaped like meta `t`: random floats, or integers inside its known range."""
    if t.is_floating_point() or t.is_complex():
        return torch.randn(t.shape, dtype=t.dtype, device="cpu")
    if t.dtype == torch.bool:
        return torch.zeros(t.shape, dtype=torch.bool, device="cpu")
    low, high = ranges.get(id(t), (0, 0))
    return torch.randint(low, high + 1, t.shape, device="cpu").to(t.dtype)


def to_meta(value, map_tensors, ranges: dict[int, tuple[int, int]]):
    """Meta copies of every tensor in a batch, remembering the integer ones' value ranges by identity."""
    def move(t: torch.Tensor) -> torch.Tensor:
        if t.is_meta:
            return t
        copy = t.to("meta")
        if not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool and t.numel():
            ranges[id(copy)] = (int(t.min()), int(t.max()))
        return copy

    return map_tensors(value, move)


def fallback_forwards(model: torch.nn.Module, map_tensors, ranges: dict, budget_bytes: int,
                      notes: list[str]) -> list:
    """Wrap every leaf module's forward: an op without a meta kernel runs for real for that module alone."""
    names = {id(m): n for n, m in model.named_modules()}
    undo = []
    for module in model.modules():
        if any(True for _ in module.children()) or "forward" in vars(module):
            continue
        original = module.forward

        def forward(*args, _module=module, _original=original, **kwargs):
            try:
                return _original(*args, **kwargs)
            except Exception as exc:
                if not is_meta_error(exc):
                    raise
                size = param_bytes(_module)
                if size > budget_bytes:
                    raise
                with torch.device("cpu"):
                    materialize(_module)
                    out = _original(*map_tensors(list(args), lambda t: real_like(t, ranges) if t.is_meta else t),
                                    **map_tensors(kwargs, lambda t: real_like(t, ranges) if t.is_meta else t))
                _module.to_empty(device="meta")
                label = names.get(id(_module), "?") or "(model)"
                notes.append(f"{label} ({type(_module).__name__}): {str(exc).splitlines()[0][:160]}")
                return map_tensors(out, lambda t: t.to("meta"))

        module.forward = forward
        undo.append(module)
    return undo
