"""The shared harness: build the model under test from the factory, run training steps on it.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered, followed by the body of core/model/contract.py (the factory contract, the same code the
inspection worker runs); the lines above the marker let this file parse and lint on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ml_debug_mcp.core.model.contract import Case, ContractError, check_factory, forward, output_tensor, run_step, \
    takes_model, unpack

INPUT_SHAPE = None
SEED = 0


def load_factory() -> Callable[[], Any]:
    raise NotImplementedError  # the generated file defines it

# ---------------------------------------- body ----------------------------------------

# --- Harness: builds the model under test and trains it for a few steps ----------------------


def build_case() -> Case:
    """Call the factory (seeded) and complete what it did not give: a batch of INPUT_SHAPE."""
    torch.manual_seed(SEED)
    factory = load_factory()
    try:
        check_factory(factory)
        case = unpack(factory())
    except ContractError as exc:
        pytest.fail(str(exc))
    if case.batch is None:
        case = case._replace(batch=random_inputs(case.model, INPUT_SHAPE))
    case.model.train()
    return case


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


def to_model(batch: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """Every tensor to `device`; floating ones to `dtype` (token ids and labels keep theirs)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device=device, dtype=dtype) if batch.is_floating_point() else batch.to(device)
    if isinstance(batch, dict):
        return {k: to_model(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_model(v, device, dtype) for v in batch)
    return batch


def step_loss(case: Case, batch: Any = None) -> torch.Tensor:
    """The loss of one forward pass, computed the way the factory contract says."""
    return run_step(case, batch).loss


def prediction_of(case: Case, batch: Any = None) -> torch.Tensor:
    """The model's output tensor for a batch (the case's by default), however the step calls the model."""
    batch = case.batch if batch is None else batch
    if not takes_model(case):
        return _tensor_or_fail(case, forward(case.model, batch))
    seen: list[Any] = []
    handle = case.model.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        run_step(case, batch)
    except Exception:  # the step's own loss may fail after the model ran: the prediction is what is checked
        if not seen:
            raise
    finally:
        handle.remove()
    return _tensor_or_fail(case, seen[0] if seen else None)


def _tensor_or_fail(case: Case, output: Any) -> torch.Tensor:
    prediction = output_tensor(output)
    if prediction is None:
        pytest.fail(f"no output tensor to check: {case.form} did not call the model itself, or it returned none")
    return prediction


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
        loss = step_loss(case)
        loss.backward()
        losses.append(float(loss.detach()))
        if after_backward is not None:
            after_backward(step, losses[-1], case.model)
        optimizer.step()
    return losses
