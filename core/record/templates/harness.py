"""The shared harness: build the model under test from the factory, run training steps on it.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
import torch

INPUT_SHAPE = None
SEED = 0


def load_factory() -> Callable[[], Any]:
    raise NotImplementedError  # the generated file defines it

# ---------------------------------------- body ----------------------------------------

# --- Harness: builds the model under test and trains it for a few steps ----------------------


class Case(NamedTuple):
    model: torch.nn.Module
    batch: Any
    loss_fn: Callable[..., torch.Tensor] | None


def build_case() -> Case:
    """Call the factory (seeded) and complete what it did not give: a batch of INPUT_SHAPE."""
    torch.manual_seed(SEED)
    made = load_factory()()
    if isinstance(made, torch.nn.Module):
        model, batch, loss_fn = made, None, None
    elif isinstance(made, (tuple, list)) and 1 <= len(made) <= 3 and isinstance(made[0], torch.nn.Module):
        model, batch, loss_fn = (list(made) + [None, None])[:3]
    else:
        pytest.fail(f"the factory returned {type(made).__name__}; expected a torch.nn.Module, (model, batch) "
                    "or (model, batch, loss_fn) - see the module docstring")
    if batch is None:
        batch = random_inputs(model, INPUT_SHAPE)
    model.train()
    return Case(model, batch, loss_fn)


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    floating = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    if not floating:
        return torch.device("cpu"), torch.get_default_dtype()
    return floating[0].device, floating[0].dtype


def random_inputs(model: torch.nn.Module, shape: tuple[int, ...] | None) -> torch.Tensor:
    """Random inputs for a factory that gave only a model: token ids when the first layer is an
    embedding, floats otherwise; without INPUT_SHAPE the first Linear layer's width is a guess."""
    device, dtype = model_device_dtype(model)
    first = next((m for m in model.modules() if any(True for _ in m.parameters(recurse=False))), None)
    if shape is None:
        if isinstance(first, torch.nn.Linear):
            shape = (8, first.in_features)
        elif isinstance(first, torch.nn.Embedding):
            shape = (8, 12)
        else:
            pytest.fail("cannot guess the model's input shape: set INPUT_SHAPE, or make the factory return "
                        "(model, batch)")
    generator = torch.Generator().manual_seed(SEED)
    if isinstance(first, torch.nn.Embedding):
        return torch.randint(0, first.num_embeddings, tuple(shape), generator=generator).to(device)
    return torch.randn(tuple(shape), generator=generator).to(device=device, dtype=dtype)


def split_batch(batch: Any) -> tuple[Any, Any]:
    """(inputs, target): a tensor or a dict is all inputs; a pair is (inputs, target)."""
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            pytest.fail(f"a tuple batch must be (inputs, target); got {len(batch)} items")
        return batch[0], batch[1]
    return batch, None


def to_model(batch: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """Every tensor to `device`; floating ones to `dtype` (token ids and labels keep theirs)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device=device, dtype=dtype) if batch.is_floating_point() else batch.to(device)
    if isinstance(batch, dict):
        return {k: to_model(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_model(v, device, dtype) for v in batch)
    return batch


def forward(model: torch.nn.Module, batch: Any) -> Any:
    inputs, _ = split_batch(batch)
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def output_tensor(output: Any) -> torch.Tensor:
    """The tensor that stands for the model's prediction: logits when named, else the first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, dict) else getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    pytest.fail(f"the model returned {type(output).__name__} with no tensor in it")


def compute_loss(case: Case, output: Any) -> torch.Tensor:
    """loss_fn if the factory gave one; else the output's own .loss, cross-entropy or MSE to the target;
    with no target, MSE to a fixed random target (can the model fit anything at all?)."""
    _, target = split_batch(case.batch)
    if case.loss_fn is not None:
        return case.loss_fn(output) if target is None else case.loss_fn(output, target)
    own = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if isinstance(own, torch.Tensor):
        return own
    prediction = output_tensor(output)
    if target is None:
        generator = torch.Generator().manual_seed(SEED + 1)
        target = torch.randn(prediction.shape, generator=generator).to(prediction)
        return torch.nn.functional.mse_loss(prediction.float(), target.float())
    if not target.is_floating_point():
        return torch.nn.functional.cross_entropy(prediction.reshape(-1, prediction.shape[-1]).float(),
                                                 target.reshape(-1))
    return torch.nn.functional.mse_loss(prediction.float(), target.float())


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for _, p in trainable(model) if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def train_steps(case: Case, steps: int, lr: float,
                after_backward: Callable[[int, float, torch.nn.Module], None] | None = None) -> list[float]:
    """Adam on the fixed batch; `after_backward(step, loss, model)` may check or clip the gradients."""
    optimizer = torch.optim.Adam([p for _, p in trainable(case.model)], lr=lr)
    losses = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = compute_loss(case, forward(case.model, case.batch))
        loss.backward()
        losses.append(float(loss.detach()))
        if after_backward is not None:
            after_backward(step, losses[-1], case.model)
        optimizer.step()
    return losses
