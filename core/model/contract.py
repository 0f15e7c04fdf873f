"""The factory contract: how a user's `factory()` becomes a model, a batch and a loss. One copy of it.

The inspection worker loads this file by path (it runs under any interpreter with torch, with or
without ml_debug_mcp installed) and every generated smoke test carries its body verbatim, so
analyze_gradients, check_shapes and the regression tests read a factory the same way. The server
reads only the text of FACTORY_CONTRACT (through the syntax tree, without importing torch) for the
tool descriptions and error messages. Only torch and the standard library below the body marker.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

# ---------------------------------------- body ----------------------------------------

# --- ml-debug-mcp factory contract v2: the same code as the server's inspection worker -----------

CONTRACT_VERSION = 2
FACTORY_CONTRACT = """\
factory() takes no arguments and returns model, (model, batch) or (model, batch, loss_fn).
  batch: a Tensor, or any nesting of tuples, lists and dicts of Tensors. A dict is passed as
    model(**batch); a tuple or list as model(*batch[:-1]) with batch[-1] the target.
  loss_fn is decided from its signature (parameter names, annotations, arity):
    loss_fn(model, batch) -> loss     your own step, like HF compute_loss(model, inputs)
    loss_fn(output, target) -> loss   e.g. nn.CrossEntropyLoss(); loss_fn(output) with no target
  Without loss_fn: a LightningModule's own training_step(batch, 0); a Hugging Face model's
    output.loss (labels in the batch); else cross-entropy for integer targets, MSE otherwise.
Example:
    def make():
        model = Net()
        return model, (torch.randn(8, 16), torch.randint(0, 4, (8,))), lambda model, batch: F.cross_entropy(model(batch[0]), batch[1])"""

MODEL_NAMES = frozenset({"model", "module", "net", "network", "policy", "agent", "pl_module", "lightning_module"})
BATCH_NAMES = frozenset({"batch", "inputs", "data", "sample", "samples", "examples", "minibatch", "features"})
OUTPUT_NAMES = frozenset({"output", "outputs", "out", "pred", "preds", "prediction", "predictions", "logits",
                          "y_hat", "yhat", "y_pred", "input", "scores", "result"})
TARGET_NAMES = frozenset({"target", "targets", "y", "label", "labels", "truth", "y_true", "gt", "ground_truth"})


class ContractError(TypeError):
    """The factory, its batch or its loss does not fit the contract; the message says what to change."""

    def __init__(self, problem: str, assumed: str | None = None) -> None:
        text = problem.rstrip(".") + "."
        if assumed:
            text += f" It was read as {assumed}."
        super().__init__(f"{text}\nAccepted forms:\n{FACTORY_CONTRACT}")
        self.problem, self.assumed = problem, assumed


class Case(NamedTuple):
    """What the factory gave, completed: `form` says how the loss is computed and why."""

    model: torch.nn.Module
    batch: Any
    loss_fn: Callable[..., Any] | None
    form: str  # loss_fn(model, batch), loss_fn(output, target), loss_fn(output), training_step(batch, 0), default loss
    why: str = ""

    def describe_form(self) -> str:
        return f"{self.form} ({self.why})" if self.why else self.form


def describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(type(v).__name__ for v in value[:4])})"
    return "None" if value is None else f"a {type(value).__module__}.{type(value).__qualname__}"


def _mro_names(value: Any) -> set[str]:
    return {c.__name__ for c in type(value).__mro__}


def is_lightning(model: Any) -> bool:
    return "LightningModule" in _mro_names(model) and callable(getattr(model, "training_step", None))


def check_factory(factory: Callable[..., Any]) -> None:
    """A factory is called with no arguments: say so before calling one that needs some."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    needed = [p.name for p in signature.parameters.values()
              if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if needed:
        name = getattr(factory, "__name__", "factory")
        raise ContractError(f"{name}() needs the arguments {', '.join(needed)}, but the factory is called with none: "
                            f"give them defaults, or add `def make(): return {name}(...)` and point at make")


def loss_form(loss_fn: Callable[..., Any]) -> tuple[str, str]:
    """('model_batch' | 'output_target' | 'output', why) from the names, annotations and arity."""
    try:  # an nn.Module loss (nn.CrossEntropyLoss()) shows (*args, **kwargs): its forward has the names
        signed = loss_fn.forward if isinstance(loss_fn, torch.nn.Module) else loss_fn
        params = [p for p in inspect.signature(signed).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if not params:
        return "output_target", "its signature cannot be read, so the classic loss_fn(output, target)"
    required = [p for p in params if p.default is p.empty]
    names = [p.name.lower() for p in params[:2]]
    shown = f"{getattr(loss_fn, '__name__', type(loss_fn).__name__)}({', '.join(p.name for p in params)})"
    if len(required) > 2:
        raise ContractError(f"loss_fn {shown} needs {len(required)} arguments; it is called with two")
    if len(params) == 1:
        return "output", f"{shown} takes one argument"
    annotations = [p.annotation for p in params[:2]]
    if any(isinstance(a, type) and issubclass(a, torch.nn.Module) for a in annotations[:1]) or \
            any(isinstance(a, str) and ("Module" in a or "Model" in a) for a in annotations[:1]):
        return "model_batch", f"{shown}: its first parameter is annotated as a model"
    if names[0] in MODEL_NAMES or (len(names) > 1 and names[1] in BATCH_NAMES and names[0] not in OUTPUT_NAMES):
        return "model_batch", f"{shown}: the names say (model, batch)"
    if names[0] in OUTPUT_NAMES or (len(names) > 1 and names[1] in TARGET_NAMES):
        return "output_target", f"{shown}: the names say (output, target)"
    return "output_target", f"{shown}: the names are not telling, so the classic loss_fn(output, target)"


def unpack(made: Any) -> Case:
    """The factory's result as a Case; ContractError for anything outside the contract."""
    if isinstance(made, torch.nn.Module):
        model, batch, loss_fn = made, None, None
    elif isinstance(made, (tuple, list)) and 1 <= len(made) <= 3 and isinstance(made[0], torch.nn.Module):
        model, batch, loss_fn = (list(made) + [None, None])[:3]
    else:
        raise ContractError(f"the factory returned {describe(made)}; it must return an nn.Module first")
    if loss_fn is not None and not callable(loss_fn):
        raise ContractError(f"the third item the factory returned is {describe(loss_fn)}, not a callable loss_fn")
    if loss_fn is not None:
        kind, why = loss_form(loss_fn)
        form = {"model_batch": "loss_fn(model, batch)", "output_target": "loss_fn(output, target)",
                "output": "loss_fn(output)"}[kind]
        return Case(model, batch, loss_fn, form, why)
    if is_lightning(model):
        return Case(model, batch, None, "training_step(batch, 0)", "a LightningModule and no loss_fn")
    return Case(model, batch, None, "default loss", "no loss_fn: the output's .loss, else cross-entropy for integer "
                "targets, MSE otherwise")


def takes_model(case: Case) -> bool:
    """True when the user's code runs the forward itself (loss_fn(model, batch) or training_step)."""
    return case.form in ("loss_fn(model, batch)", "training_step(batch, 0)")


def map_tensors(value: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """The same nesting of tuples/lists/dicts with every tensor replaced by fn(tensor)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_tensors(v, fn) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(v, fn) for v in value)
    return value


def tensors(value: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    map_tensors(value, found.append)
    return found


def split_batch(batch: Any) -> tuple[list[Any], dict[str, Any], Any]:
    """(positional args, keyword args, target) for model(...): see FACTORY_CONTRACT."""
    if isinstance(batch, Mapping):
        return [], dict(batch), None
    if isinstance(batch, (tuple, list)) and not hasattr(batch, "_fields"):
        if len(batch) == 1:
            return split_batch(batch[0])[:2] + (None,)
        inputs, target = list(batch[:-1]), batch[-1]
        if len(inputs) == 1 and isinstance(inputs[0], Mapping):
            return [], dict(inputs[0]), target
        if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)):
            return list(inputs[0]), {}, target
        return inputs, {}, target
    return [batch], {}, None


def forward(model: torch.nn.Module, batch: Any) -> Any:
    args, kwargs, _ = split_batch(batch)
    return model(*args, **kwargs)


def output_tensor(output: Any) -> torch.Tensor | None:
    """The tensor that stands for the prediction: the output, its `logits`, or its first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("logits", "last_hidden_state"):
        value = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    values = output.values() if isinstance(output, Mapping) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        found = output_tensor(value)
        if found is not None:
            return found
    return None


def own_loss(output: Any) -> torch.Tensor | None:
    value = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    return value if isinstance(value, torch.Tensor) and value.numel() == 1 else None


def default_loss(output: Any, target: Any, hint: str = "auto", seed: int = 1) -> torch.Tensor:
    """The output's own loss, or sum / cross-entropy / MSE (to a fixed random target when there is none)."""
    if hint == "auto" and own_loss(output) is not None:
        return own_loss(output)
    out = output_tensor(output)
    if out is None or not out.is_floating_point():
        raise ContractError(f"the model output ({describe(output)}) has no floating-point tensor to compute a loss on;"
                            " return (model, batch, loss_fn) from the factory", "default loss")
    f = torch.nn.functional
    integer_target = isinstance(target, torch.Tensor) and not target.is_floating_point()
    if hint == "sum":
        return out.float().sum()
    if hint == "cross_entropy" or (hint == "auto" and integer_target):
        if target is None:
            generator = torch.Generator().manual_seed(seed)
            target = torch.randint(0, out.shape[-1], tuple(out.shape[:-1]), generator=generator).to(out.device)
        if out.dim() == target.dim() + 1 and out.shape[0] == target.shape[0] and out.shape[2:] == target.shape[1:]:
            return f.cross_entropy(out.float(), target.long())
        if out.shape[:-1].numel() == target.numel():
            return f.cross_entropy(out.reshape(-1, out.shape[-1]).float(), target.reshape(-1).long())
        raise ValueError(f"cannot pair output {list(out.shape)} with target {list(target.shape)} for cross_entropy")
    if target is None:
        generator = torch.Generator().manual_seed(seed)
        target = torch.randn(tuple(out.shape), generator=generator).to(out.device)
    if not isinstance(target, torch.Tensor) or target.numel() != out.numel():
        raise ValueError(f"cannot pair output {list(out.shape)} with target {describe(target)} for mse")
    return f.mse_loss(out.float(), target.reshape(out.shape).float())


class Step(NamedTuple):
    loss: torch.Tensor
    output: Any  # the model's own output when the model was called, else None


def run_step(case: Case, batch: Any = None, hint: str = "auto") -> Step:
    """One forward and loss as the contract says (batch defaults to the case's). No backward."""
    batch = case.batch if batch is None else batch
    model, loss_fn = case.model, case.loss_fn
    seen: list[Any] = []
    handle = model.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        if takes_model(case):
            loss = loss_fn(model, batch) if loss_fn is not None else model.training_step(batch, 0)
            if isinstance(loss, Mapping):
                loss = loss.get("loss")
        else:
            output = forward(model, batch)
            target = split_batch(batch)[2]
            if loss_fn is None:
                loss = default_loss(output, target, hint)
            elif case.form == "loss_fn(output)" or target is None:
                loss = loss_fn(output)
            else:
                loss = loss_fn(output, target)
    finally:
        handle.remove()
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = f" of shape {list(loss.shape)}" if isinstance(loss, torch.Tensor) else ""
        raise ContractError(f"the loss must be a scalar tensor, but {case.form} returned {describe(loss)}{shape}",
                            case.describe_form())
    return Step(loss.reshape(()), seen[0] if seen else None)
