"""The source of generated regression tests: one shared harness, one check per failure family.

Each piece is a real Python file in this folder, so it parses, lints and reads as code. A file has two
parts: above the body marker, the imports and stand-in names that let it parse and lint on its own;
below it, the body that is copied into the generated test. Rendering (core/record/smoke.py) is an
explicit concatenation: a header (docstring, imports, constants), a loader, the harness, the
template's checks, and a stand-in model when there is no entrypoint. The bodies may import only
torch, pytest and the standard library, because the generated file lands in the user's repository.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ml_debug_mcp.core.diagnosis.catalogue import THRESHOLDS

BODY_MARKER = "# " + "-" * 40 + " body " + "-" * 40
HERE = Path(__file__).parent
HARNESS_IMPORTS = ("from collections.abc import Callable, Mapping", "from typing import Any, NamedTuple")
CONTRACT_FILE = HERE.parent.parent / "model" / "contract.py"


@functools.cache
def source(name: str) -> str:
    """The renderable body of template file `name` (the text below its body marker)."""
    return _body(HERE / f"{name}.py")


@functools.cache
def contract_source() -> str:
    """The factory contract's body (core/model/contract.py): generated tests carry the worker's own code."""
    return _body(CONTRACT_FILE)


def _body(path: Path) -> str:
    _, marker, body = path.read_text(encoding="utf-8").partition("\n" + BODY_MARKER + "\n")
    if not marker:
        raise RuntimeError(f"{path.name} has no body marker line")
    return "\n" + body.strip("\n") + "\n"


@dataclass(frozen=True)
class Template:
    """One family's check: its constants (name, value, comment), its tests and its stand-in model."""

    name: str
    checks: str  # one sentence for the docstring and the tool's summary
    constants: tuple[tuple[str, object, str], ...]
    tests: tuple[str, ...]
    tiny_model: str = source("tiny_classifier")  # the stand-in model, when there is no entrypoint
    main: str = ""  # a __main__ block, last in the file, for checks that run the file as a child process


_EXPLODING = float(THRESHOLDS["grad_norm_exploding"].value)
_LR = ("LEARNING_RATE", 1e-3, "Adam learning rate of the check's own training steps; use your run's")

TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("finite_training",
             "a few training steps at a high-but-plausible learning rate keep the loss and every gradient finite, "
             "and the log(0) edge case p = [0, 1] stays finite with the epsilon",
             (("LEARNING_RATE", 1e-2, "high but plausible for Adam; set it to the learning rate your run uses"),
              ("STEPS", 25, "training steps on the fixed batch"),
              ("EPSILON", 1e-8, "the epsilon of the fix: log(p + EPSILON)")),
             (source("check_finite_training"),), tiny_model=source("tiny_entropy_classifier")),
    Template("clipped_gradients",
             "the raw gradient norm (before clipping) stays finite and under the exploding threshold at every "
             "step",
             (("MAX_NORM", 1.0, "the max_norm of clip_grad_norm_ in your training loop"),
              _LR, ("STEPS", 20, "training steps on the fixed batch"),
              ("RAW_NORM_LIMIT", _EXPLODING, "the exploding threshold (global norm > 10); raise it only if your "
               "healthy run's raw norm is known to sit higher")),
             (source("check_clipped_gradients"),)),
    Template("gradient_flow",
             "every parameter that requires grad gets a non-None, non-zero gradient after one backward, and none "
             "is vanishingly small next to the largest",
             (("ALLOWED_WITHOUT_GRAD", set(), "names of parameters that legitimately get no gradient"),
              ("SMALLEST_RATIO", 1e-7, "smallest per-parameter gradient norm / largest")),
             (source("check_gradient_flow"),)),
    Template("carried_state",
             "consecutive training steps with state carried between calls do not raise 'Trying to backward "
             "through the graph a second time' (the CVFP missing-detach bug) or an in-place modification error",
             (_LR, ("STEPS", 3, "consecutive steps on the same model, so carried state crosses two boundaries"),
              ("GRAPH_REUSE_ERRORS", ("backward through the graph a second time",
                                      "modified by an inplace operation"), "the errors this test guards against")),
             (source("check_carried_state"),), tiny_model=source("tiny_recurrent")),
    Template("batch_dimension",
             "a forward pass returns the input's batch dimension, for the full batch and for a batch of one",
             (("EXPECTED_OUTPUT_SHAPE", None, "e.g. (None, 10), None standing for the batch size; None: batch only"),),
             (source("check_batch_dimension"),)),
    Template("model_dtype",
             "a forward pass under the model's own dtype and device works, and tensors made inside forward follow "
             "the model to float64",
             (), (source("check_own_dtype_and_device"), source("check_follows_dtype"))),
    Template("model_device",
             "a forward pass under the model's own device and dtype works, and tensors made inside forward follow "
             "the model to another device (CUDA, or the meta device without a GPU)",
             (("DEVICE_ERRORS", ("is not on the expected device", "Expected all tensors to be on the same device"),
               "error text that means a tensor stayed on the wrong device"),),
             (source("check_own_dtype_and_device"), source("check_follows_device"))),
    Template("index_range",
             "class labels and token ids are within the model's output and embedding sizes, checked on the CPU "
             "where an out-of-range index is a readable error",
             (("IGNORE_INDEX", -100, "label value the loss ignores (padding)"),),
             (source("check_index_range"),), tiny_model=source("tiny_token_model")),
    Template("ddp_steps",
             "two steps under DistributedDataParallel (one gloo process) succeed and every parameter is used, so "
             "the reducer never waits for a gradient that does not come",
             (_LR, ("DDP_TIMEOUT", 120, "seconds the two steps may take before they count as hung"),
              ("DDP_FLAG", "--ddp-steps", "the argument that makes this file run the DDP steps as a child process")),
             (source("check_ddp_steps"),), main=source("ddp_main")),
    Template("memory_budget",
             "one forward and backward at the batch's size fits in a memory budget (peak CUDA memory, or the rise "
             "in peak RSS on Linux)",
             (("MEMORY_BUDGET_MB", 2048.0, "TODO: the memory one step may use, in MiB (your GPU's, minus headroom)"),),
             (source("check_memory_budget"),)),
    Template("fits_one_batch",
             "the loss decreases on a fixed batch over a few dozen steps (a model that cannot fit one batch is "
             "broken), stays finite and never spikes",
             (("LEARNING_RATE", 1e-2, "Adam learning rate of the check's own training steps"),
              ("STEPS", 60, "training steps on the fixed batch"),
              ("REQUIRED_FRACTION", 0.5, "the best of the last 5 losses must be at most this fraction of the first"),
              ("SPIKE_FACTOR", 3.0, "no loss may exceed this multiple of the first")),
             (source("check_fits_one_batch"),)),
    Template("representation_rank",
             "the effective rank (exp of the entropy of the normalised singular values) of a batch of outputs stays "
             "above a floor, before and after a few training steps",
             (_LR, ("STEPS", 20, "training steps of the model's own objective before the second measurement"),
              ("RANK_FLOOR_FRACTION", 0.1, "collapse: effective rank under this fraction of min(batch, dim)")),
             (source("check_representation_rank"),), tiny_model=source("tiny_encoder")),
    Template("no_host_sync",
             "the forward, loss and backward make no host sync (.item(), .tolist(), .cpu(), bool(tensor)...), "
             "checked by wrapping those Tensor methods, and under torch.cuda.set_sync_debug_mode('error') on a GPU",
             (("SYNC_METHODS", ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__"),
               "Tensor methods that copy to the host"),),
             (source("check_no_host_sync"),)),
)}

TEMPLATE_FOR_FAILURE: dict[str, str] = {
    "nan_loss": "finite_training",
    "exploding_gradients": "clipped_gradients",
    "vanishing_gradients": "gradient_flow",
    "graph_reuse": "carried_state",
    "shape_mismatch": "batch_dimension",
    "dtype_mismatch": "model_dtype",
    "device_mismatch": "model_device",
    "cuda_assert": "index_range",
    "distributed_hang": "ddp_steps",
    "oom": "memory_budget",
    "divergence": "fits_one_batch",
    "loss_spike": "fits_one_batch",
    "plateau": "fits_one_batch",
    "slow_convergence": "fits_one_batch",
    "hockey_stick": "fits_one_batch",
    "overfitting": "fits_one_batch",
    "healthy": "fits_one_batch",
    "mode_collapse": "representation_rank",
    "rank_collapse": "representation_rank",
    "slow_throughput": "no_host_sync",
}

