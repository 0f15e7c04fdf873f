"""The failure taxonomy: identifiers every detector, tool and resource shares.

The fix table, root causes, symptoms and confirming tool calls for each failure live here too,
so the MCP resource `guide://failure-catalogue` and classify_failure's hypotheses are rendered
from one source. `THRESHOLDS` holds the named numbers the detectors compare against.

Import note: `diagnosis` imports `FailureId` from here, and catalogue entries hold `Fix` and
`NextStep` models from `diagnosis`. To keep either import order working, the entries are built
on first access to `CATALOGUE` (a module-level `__getattr__`), not at import time.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # resolved lazily in _build_catalogue to break the import cycle with diagnosis
    from ml_debug_mcp.core.diagnosis.hypotheses import Fix, NextStep

FailureId = Literal[
    "nan_loss",
    "divergence",
    "loss_spike",
    "exploding_gradients",
    "vanishing_gradients",
    "plateau",
    "slow_convergence",
    "hockey_stick",
    "overfitting",
    "oom",
    "shape_mismatch",
    "graph_reuse",
    "device_mismatch",
    "dtype_mismatch",
    "cuda_assert",
    "distributed_hang",
    "slow_throughput",
    "mode_collapse",
    "rank_collapse",
    "healthy",
]

FAILURE_IDS: tuple[str, ...] = get_args(FailureId)

FailureCategory = Literal["numerics", "optimisation", "generalisation", "runtime_error", "systems", "collapse", "none"]


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------


class Threshold(BaseModel):
    """A named number a detector compares a measurement against, with the sentence that justifies it."""

    name: str
    value: float | None = Field(description="None when the trigger is a condition rather than a number (e.g. 'is NaN')")
    comparison: str = Field(
        description="How the measurement is compared, e.g. '<', '>', '==', 'non-finite', 'x log(vocab)'"
    )
    measures: str = Field(description="What quantity the threshold applies to")
    meaning: str


def _threshold(name: str, value: float | None, comparison: str, measures: str, meaning: str) -> Threshold:
    return Threshold(name=name, value=value, comparison=comparison, measures=measures, meaning=meaning)


THRESHOLDS: dict[str, Threshold] = {
    t.name: t
    for t in (
        _threshold(
            "update_ratio_target",
            1e-3,
            "~",
            "update_ratio = lr * ||grad W|| / ||W|| per layer",
            "Around 1e-3 each step changes a weight by about a thousandth of its size: the healthy middle ground.",
        ),
        _threshold(
            "update_ratio_frozen",
            1e-5,
            "<",
            "update_ratio per layer",
            "Below 1e-5 the layer is effectively frozen: the learning rate is too small, or its gradient is cut "
            "off by a detach, requires_grad=False or a broken graph.",
        ),
        _threshold(
            "update_ratio_unstable",
            1e-1,
            ">",
            "update_ratio per layer",
            "Above 1e-1 one step rewrites a tenth of the weight: training is unstable; clip gradients, lower the "
            "learning rate or raise the batch size.",
        ),
        _threshold(
            "grad_norm_broken",
            0.0,
            "==",
            "gradient norm (global or per layer)",
            "A gradient norm of exactly zero means nothing flows back: the graph is broken (detach, requires_grad, "
            "non-differentiable indexing, argmax) or the parameters are not in the loss at all.",
        ),
        _threshold(
            "grad_norm_vanishing",
            1e-7,
            "<",
            "gradient norm (global or per layer)",
            "A gradient norm under 1e-7 carries no usable signal, even when Adam rescales it into normal-looking "
            "updates: the layers behind it are not learning from the loss.",
        ),
        _threshold(
            "grad_norm_exploding",
            10.0,
            ">",
            "gradient norm (global)",
            "A global gradient norm above 10 is exploding; clip_grad_norm_ keeps single batches from throwing the "
            "weights away.",
        ),
        _threshold(
            "grad_norm_overflow",
            None,
            "non-finite",
            "gradient norm (global or per layer)",
            "A NaN or infinite gradient norm is a numerical overflow: look for log(0), division by zero, "
            "sqrt of a negative number or an fp16 range overflow upstream.",
        ),
        _threshold(
            "clip_max_norm",
            1.0,
            "=",
            "max_norm argument of clip_grad_norm_",
            "The default clipping bound to recommend: clip_grad_norm_(params, max_norm=1.0) (Keras: clipnorm=1.0).",
        ),
        _threshold(
            "lr_reduction_factor",
            10.0,
            "/",
            "learning rate",
            "When the loss diverges, the first fix is to divide the learning rate by 10 and re-run.",
        ),
        _threshold(
            "entropy_gibberish_fraction",
            0.9,
            "x log(vocab_size)",
            "mean token or policy entropy",
            "Entropy above 0.9 * log(vocab_size) is close to uniform over the vocabulary: the model emits gibberish "
            "(entropy collapse upward). Entropy falling towards 0 is the opposite failure, mode collapse.",
        ),
        _threshold(
            "clamp_boundary_fraction",
            0.95,
            "x max_norm",
            "a clamped vector norm (e.g. LoRA v_norm)",
            "A norm at or above 0.95 of its clamp bound is pinned at the constraint: the optimiser is fighting the "
            "clamp instead of learning.",
        ),
        _threshold(
            "overfit_gap",
            0.05,
            ">",
            "(val_loss - train_loss) / train_loss, or train_acc - val_acc",
            "A train/validation gap above 5% is overfitting (the success criterion is a gap under 5%).",
        ),
        _threshold(
            "fix_improvement",
            0.10,
            ">=",
            "relative improvement of the target metric after a fix",
            "A fix counts as working when it improves the metric by at least 10% against the run before it.",
        ),
        _threshold(
            "stability_steps",
            100.0,
            ">=",
            "steps without the failure recurring after a fix",
            "A fix is only verified once the run survives 100 steps without the failure ...",
        ),
        _threshold(
            "stability_failure_multiple",
            10.0,
            "x failure step",
            "steps without the failure recurring after a fix",
            "... or 10 times the step at which it used to fail, whichever is larger.",
        ),
        _threshold(
            "effective_rank_low_fraction",
            0.8,
            "< x dim",
            "effective rank of representations / their dimension",
            "Effective rank under 0.8 of the dimension means the representations are losing diversity "
            "(the CVFP report raises the diversity weight below this point).",
        ),
        _threshold(
            "effective_rank_collapsed_fraction",
            0.1,
            "< x dim",
            "effective rank of representations / their dimension",
            "Effective rank under a tenth of the dimension is collapse: the CVFP runs that converged under a "
            "convergence-only objective measured 1.1% and 6.9%, against 88.7% for a diverse run.",
        ),
    )
}


def render_thresholds_markdown() -> str:
    """The thresholds as a markdown table, so agents see the same numbers the detectors use."""
    lines = [
        "# Thresholds",
        "",
        "The numbers ml-debug-mcp's detectors compare against. Values are defaults, not laws: a run with a "
        "good reason to sit outside one should say so in its journal.",
        "",
        "| name | trigger | measures | why |",
        "|---|---|---|---|",
    ]
    for t in THRESHOLDS.values():
        trigger = t.comparison if t.value is None else f"{t.comparison} {t.value:g}"
        lines.append(f"| `{t.name}` | {trigger} | {t.measures} | {t.meaning} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Catalogue entries
# ---------------------------------------------------------------------------------------------


class FailureInfo(BaseModel):
    """Everything the product knows about one failure class, independent of any particular run."""

    id: FailureId
    title: str
    category: FailureCategory
    description: str
    symptoms: list[str]
    root_causes: list[str]
    fixes: list[Fix]
    confirm_with: list[NextStep] = Field(
        description="Tool calls (arguments left for the caller) that confirm or refute it"
    )
    early_warnings: list[str] = Field(default_factory=list)
    example_messages: list[str] = Field(default_factory=list, description="Error text that names this failure")


# Each entry: plain data, turned into FailureInfo on first access. fixes are (action, expected effect);
# confirm_with are (tool, why).
_ENTRIES: dict[str, dict[str, Any]] = {
    "nan_loss": dict(
        title="NaN / Inf loss",
        category="numerics",
        description="The loss (or a gradient) became NaN or infinite, after which every update is garbage.",
        symptoms=[
            "loss prints as nan or inf from some step N on",
            "anomaly mode names a backward function that 'returned nan values'",
            "mixed precision keeps skipping steps and shrinking the loss scale",
        ],
        root_causes=[
            "log(0) or log of a negative number (entropy, cross-entropy written by hand, log-probabilities)",
            "division by zero or by a tiny norm (normalisation without an epsilon)",
            "sqrt of a negative number, or sqrt at 0 in the backward pass",
            "learning rate too high: weights blow up until the activations overflow",
            "fp16 range overflow (values above 65504) without a working loss scaler",
            "bad input data (NaN in features or labels)",
        ],
        fixes=[
            (
                "Add an epsilon or clamp before log/div/sqrt, e.g. torch.log(p + 1e-8), x / (norm + 1e-8), "
                "torch.sqrt(x.clamp_min(1e-12))",
                "Removes the singular point, so the first NaN disappears at the same step",
            ),
            (
                "Clip gradients with torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0) and lower the "
                "learning rate (try 10x lower)",
                "Bounds each update, so a single bad batch cannot push the weights into overflow",
            ),
            (
                "Localise the first NaN with torch.autograd.set_detect_anomaly(True) for a few steps",
                "The error names the backward function (e.g. LogBackward0) that produced it",
            ),
            (
                "Under fp16 use torch.autocast with a GradScaler, or switch to bf16",
                "Overflowing steps are skipped and the scale adapts instead of poisoning the weights",
            ),
            (
                "Assert torch.isfinite on inputs and labels in the data pipeline",
                "Catches NaN coming from the data rather than the model",
            ),
        ],
        confirm_with=[
            (
                "read_metrics",
                "Find the first non-finite step of loss and grad_norm, and whether grad_norm grew before it",
            ),
            ("classify_failure", "Scan the training code (code_path=...) for log/div/sqrt without an epsilon"),
            ("analyze_gradients", "See which layer's gradients go non-finite first"),
        ],
        early_warnings=["grad_norm climbing steadily before the NaN", "loss scale falling repeatedly under AMP"],
        example_messages=[
            "RuntimeError: Function 'LogBackward0' returned nan values in its 0th output.",
            "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768",
            "Gradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 32768.0",
        ],
    ),
    "divergence": dict(
        title="Divergence",
        category="optimisation",
        description="The loss trends upward (or oscillates ever wider) instead of decreasing.",
        symptoms=[
            "training loss rising over many steps after an initial fall",
            "loss oscillating with growing amplitude",
            "often followed by NaN",
        ],
        root_causes=[
            "learning rate too high (or warm-up too short)",
            "gradients accumulating across steps because zero_grad() is missing",
            "no gradient clipping with a spiky loss landscape",
            "a bug in the loss sign or target (maximising what should be minimised)",
        ],
        fixes=[
            ("Reduce the learning rate by 10x", "The loss decreases again from the same starting point"),
            ("Add or lengthen learning-rate warm-up", "Early steps no longer overshoot while Adam's statistics settle"),
            (
                "Call optimizer.zero_grad(set_to_none=True) once per step",
                "Each update uses only the current batch's gradient",
            ),
            ("Clip gradients (clip_grad_norm_, max_norm=1.0)", "Large single updates are bounded"),
        ],
        confirm_with=[
            ("read_metrics", "Check loss trend against lr and grad_norm over the same steps"),
            ("compare_runs", "Confirm the re-run with a 10x lower LR decreases where this one rose"),
            ("classify_failure", "Scan the code (code_path=...) for a missing zero_grad()"),
        ],
        early_warnings=["grad_norm rising together with the loss", "update ratio above 1e-1"],
    ),
    "loss_spike": dict(
        title="Loss spike",
        category="optimisation",
        description="Isolated jumps of the loss far above its recent level, which may or may not recover.",
        symptoms=["single steps with loss several times the running median", "grad_norm spikes at the same steps"],
        root_causes=[
            "a bad or mislabeled batch (outliers, very long sequences)",
            "learning rate too high for the current curvature",
            "Adam epsilon too small / second-moment estimate stale for rarely-updated parameters",
            "no gradient clipping",
        ],
        fixes=[
            ("Clip gradients (clip_grad_norm_, max_norm=1.0)", "Spikes shrink to bounded bumps"),
            ("Lower the peak learning rate or lengthen warm-up", "Fewer spikes; the ones left recover faster"),
            (
                "Log the batch indices at spike steps and inspect those samples",
                "Identifies data that should be cleaned or filtered",
            ),
        ],
        confirm_with=[
            ("read_metrics", "Line up loss spikes with grad_norm and lr"),
            ("tail_log", "Look at the log lines around the spike steps (grep=..., around=...)"),
        ],
        early_warnings=["grad_norm spikes preceding loss spikes"],
    ),
    "exploding_gradients": dict(
        title="Exploding gradients",
        category="numerics",
        description="Gradient norms grow very large (>10), so updates overshoot and training destabilises.",
        symptoms=["global grad norm above 10 and rising", "update ratio above 1e-1", "loss spikes, then NaN"],
        root_causes=[
            "no gradient clipping",
            "learning rate too high",
            "deep or recurrent network without normalisation or residual connections",
            "poor weight initialisation",
        ],
        fixes=[
            (
                "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0) between backward() and step() "
                "(Keras: clipnorm=1.0)",
                "Caps the global gradient norm at 1.0 so a single step cannot blow up the weights",
            ),
            ("Lower the learning rate", "Smaller update ratio, towards the 1e-3 target"),
            (
                "Add normalisation (LayerNorm/BatchNorm) or residual connections",
                "Keeps activation and gradient scale stable with depth",
            ),
        ],
        confirm_with=[
            ("analyze_gradients", "Per-layer gradient norms and update ratios show which layers explode"),
            ("read_metrics", "grad_norm over time against the 10.0 threshold"),
            ("classify_failure", "Scan the code (code_path=...) to see whether any gradient clipping is applied"),
        ],
        early_warnings=["grad_norm steadily rising", "update ratio creeping above 1e-1"],
    ),
    "vanishing_gradients": dict(
        title="Vanishing gradients, frozen weights or a broken graph",
        category="numerics",
        description="Little or no gradient reaches some or all parameters, so they stop learning.",
        symptoms=[
            "grad norm exactly 0 (broken graph) or tiny in early layers",
            "update ratio below 1e-5",
            "loss flat from the start",
            "'element 0 of tensors does not require grad and does not have a grad_fn'",
        ],
        root_causes=[
            "parameters frozen with requires_grad=False, or missing from the optimizer",
            "a .detach(), .item(), .numpy() or torch.no_grad() cutting the graph between model and loss",
            "saturating activations (sigmoid/tanh) in a deep network",
            "non-differentiable operations (argmax, rounding, integer indexing) on the loss path",
        ],
        fixes=[
            (
                "Use ReLU/LeakyReLU (or GELU) activations and add batch norm / layer norm",
                "Gradient magnitude survives depth",
            ),
            (
                "Check requires_grad on every parameter and that the optimizer receives model.parameters()",
                "Frozen layers start moving; update ratio rises above 1e-5",
            ),
            (
                "Remove detach()/no_grad()/.item() between the model output and the loss",
                "Gradient flows to the model again (norm > 0)",
            ),
            (
                "Use residual connections and a proper initialisation (Kaiming/Xavier)",
                "Early layers receive gradients of similar size to late ones",
            ),
        ],
        confirm_with=[
            ("analyze_gradients", "Per-layer gradient norms: zero means broken graph, tiny means vanishing"),
            ("classify_failure", "Scan the code (code_path=...) for detach/no_grad on the loss path"),
        ],
        early_warnings=["update ratio below 1e-5", "grad norm of early layers orders of magnitude below late layers"],
        example_messages=["RuntimeError: element 0 of tensors does not require grad and does not have a grad_fn"],
    ),
    "plateau": dict(
        title="Plateau",
        category="optimisation",
        description="The loss stops improving at a level that is clearly not the achievable minimum.",
        symptoms=["loss flat for many steps well above the expected value", "metrics stuck at chance level"],
        root_causes=[
            "learning rate decayed too early or too far",
            "a loss that cannot reach its target, e.g. F.normalize inside an MSE fixed-point loss only matches "
            "direction, so the norm keeps drifting and the values never converge",
            "dead units (ReLU) or saturated activations",
            "labels shuffled independently of inputs (nothing to learn)",
        ],
        fixes=[
            ("Check the LR schedule; restart with a higher LR or a warm restart", "The loss resumes decreasing"),
            (
                "Remove normalisation from a fixed-point / reconstruction MSE target (compare raw values)",
                "The loss measures value equality, so it can reach its fixed point",
            ),
            ("Verify that inputs and labels stay aligned through the data pipeline", "Loss drops below chance level"),
        ],
        confirm_with=[
            ("read_metrics", "Loss against lr over the flat stretch"),
            (
                "analyze_gradients",
                "Whether gradients are still flowing (update ratio near 1e-3) while the loss is flat",
            ),
            ("classify_failure", "Scan the code (code_path=...) for F.normalize inside an MSE loss"),
        ],
    ),
    "slow_convergence": dict(
        title="Slow convergence",
        category="optimisation",
        description="The loss decreases, but slowly and almost linearly ('slow burn').",
        symptoms=["loss falling in a straight line with no sign of flattening", "update ratio well below 1e-3"],
        root_causes=["learning rate too low", "no learning-rate schedule", "poor normalisation of the inputs"],
        fixes=[
            (
                "Increase the learning rate and add a scheduler (warm-up + cosine or one-cycle)",
                "Faster initial decrease; the curve bends towards a plateau at a lower loss",
            ),
            ("Normalise inputs to zero mean and unit variance", "Better-conditioned optimisation, faster progress"),
        ],
        confirm_with=[
            ("read_metrics", "Loss slope and lr"),
            ("analyze_gradients", "Update ratios far below the 1e-3 target confirm the LR is too low"),
            ("compare_runs", "Confirm a higher-LR run reaches the same loss at least 10% sooner"),
        ],
        early_warnings=["update ratio around 1e-5 to 1e-4"],
    ),
    "hockey_stick": dict(
        title="Hockey stick",
        category="optimisation",
        description="The loss drops almost at once and then flattens early: the optimiser fell into a fast, poor basin.",
        symptoms=[
            "steep drop in the first few steps, then a long flat line",
            "final loss well above what smaller LRs reach",
        ],
        root_causes=["learning rate too high (a fast local basin)", "model predicting the class prior / mean only"],
        fixes=[
            ("Lower the learning rate and add warm-up", "Slower start but a lower final loss"),
            (
                "Check the predictions are not constant (the prior)",
                "Distinguishes a real plateau from a degenerate solution",
            ),
        ],
        confirm_with=[
            ("read_metrics", "Shape of the loss curve over the first few percent of steps"),
            ("compare_runs", "A lower-LR run should end at least 10% lower"),
        ],
    ),
    "overfitting": dict(
        title="Overfitting",
        category="generalisation",
        description="Training loss keeps falling while validation loss stalls or rises: the model memorises.",
        symptoms=["validation loss rising while training loss falls", "train/validation gap above 5%"],
        root_causes=[
            "model too large for the data",
            "too little regularisation",
            "training too long",
            "leakage or duplicates inflate training metrics",
        ],
        fixes=[
            (
                "Add dropout and L2 regularisation (weight decay)",
                "Validation loss tracks training loss more closely; the gap narrows below 5%",
            ),
            ("Early stopping on the validation loss", "Keeps the checkpoint from before validation loss turned up"),
            ("Data augmentation or more data", "Validation loss falls further"),
            ("Reduce model size", "Less capacity to memorise"),
        ],
        confirm_with=[
            ("read_metrics", "Compare loss and eval_loss (names=['loss','eval_loss']) over the same steps"),
            ("compare_runs", "Confirm the regularised run has a smaller gap (metric='eval_loss')"),
        ],
        early_warnings=["eval_loss minimum reached early while loss keeps falling"],
    ),
    "oom": dict(
        title="Out of memory",
        category="systems",
        description="A GPU, CPU or MPS allocation failed: the batch, model or activations do not fit.",
        symptoms=[
            "CUDA out of memory. Tried to allocate ...",
            "DefaultCPUAllocator: can't allocate memory",
            "process Killed / exit code 137 or -9 (the kernel OOM killer)",
        ],
        root_causes=[
            "batch size or sequence length too large",
            "activations of a large model kept for backward",
            "tensors kept alive across steps (e.g. accumulating loss instead of loss.item())",
            "memory fragmentation: plenty reserved by PyTorch but unallocated",
            "another process holding GPU memory",
        ],
        fixes=[
            (
                "Reduce the batch size, and keep the effective batch with gradient accumulation",
                "Peak memory falls roughly in proportion to the batch size; the optimisation stays the same",
            ),
            (
                "Enable gradient checkpointing (torch.utils.checkpoint / model.gradient_checkpointing_enable())",
                "Activation memory falls sharply at the cost of ~20-30% more compute",
            ),
            ("Use mixed precision (bf16/fp16 autocast)", "Roughly halves activation memory"),
            (
                "When reserved-but-unallocated memory is large, set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
                "Reduces fragmentation so the same workload fits",
            ),
            (
                "Accumulate metrics with loss.item() / .detach(), not the loss tensor",
                "Stops the graph of every step being kept alive",
            ),
        ],
        confirm_with=[
            ("gpu_status", "Memory used per GPU and by which processes"),
            ("tail_log", "The full OOM message with its sizes (grep='out of memory')"),
        ],
        early_warnings=["memory growing step over step (a leak)"],
        example_messages=[
            "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity; ...)",
            "RuntimeError: [enforce fail at alloc_cpu.cpp] . DefaultCPUAllocator: can't allocate memory",
        ],
    ),
    "shape_mismatch": dict(
        title="Shape mismatch",
        category="runtime_error",
        description="Two tensors meet in an operation with incompatible shapes.",
        symptoms=[
            "mat1 and mat2 shapes cannot be multiplied",
            "The size of tensor a (X) must match the size of tensor b (Y)",
            "Expected input batch_size (A) to match target batch_size (B)",
        ],
        root_causes=[
            "a Linear layer's in_features not matching the previous layer's output (e.g. after changing image size)",
            "a missing flatten, or a view/reshape with the wrong order",
            "wrong channel count (grayscale vs RGB)",
            "labels shaped differently from predictions (one-hot vs class indices, extra dimension)",
        ],
        fixes=[
            (
                "Assert shapes at module boundaries (B, T, D = x.shape; assert D == self.hidden_dim)",
                "The error moves to the first place the shape is wrong, with a readable message",
            ),
            (
                "Use einops.rearrange instead of view/reshape",
                "Axis order is explicit, so silent transpositions disappear",
            ),
            (
                "Set the layer size from the actual upstream output (or use nn.LazyLinear)",
                "The multiplication shapes agree",
            ),
        ],
        confirm_with=[("check_shapes", "Trace tensor shapes through the model to find the first layer that disagrees")],
        example_messages=["RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x512 and 256x10)"],
    ),
    "graph_reuse": dict(
        title="Autograd graph reuse or in-place modification",
        category="runtime_error",
        description="backward() walked a graph whose buffers were already freed, or a tensor needed for the "
        "gradient was changed in place.",
        symptoms=[
            "Trying to backward through the graph a second time",
            "one of the variables needed for gradient computation has been modified by an inplace operation",
        ],
        root_causes=[
            "state carried across iterations without .detach() (RNN hidden state, a context vector fed back in, "
            "running statistics) so each backward reaches into the previous step's freed graph",
            "calling backward twice on the same loss, or on two losses sharing a subgraph",
            "in-place ops (x += ..., relu_(inplace=True), x[idx] = ...) on a tensor autograd saved",
        ],
        fixes=[
            (
                "Detach carried state at the iteration boundary: hidden = hidden.detach() / model(x, context.detach())",
                "Each backward only traverses the current step's graph; the error disappears and memory stops growing",
            ),
            (
                "Replace the in-place op with its out-of-place form (x = x + y, nn.ReLU(inplace=False))",
                "The saved tensor keeps the version autograd expects",
            ),
            ("Sum the losses and call backward once", "One traversal of the shared graph"),
            (
                "Use retain_graph=True only when the second backward is genuinely needed",
                "It silences the error but keeps every step's graph alive (memory grows, gradients leak across steps)",
            ),
        ],
        confirm_with=[
            (
                "classify_failure",
                "Scan the training code (code_path=...) for state carried across iterations without detach",
            ),
        ],
        example_messages=[
            "RuntimeError: Trying to backward through the graph a second time (or directly access saved tensors after they have already been freed).",
            "RuntimeError: one of the variables needed for gradient computation has been modified by an inplace operation",
        ],
    ),
    "device_mismatch": dict(
        title="Device mismatch",
        category="runtime_error",
        description="An operation received tensors on different devices (e.g. cuda:0 and cpu).",
        symptoms=["Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"],
        root_causes=[
            "inputs or labels not moved to the model's device",
            "a tensor created inside forward() without device=... (torch.zeros, torch.arange)",
            "a plain tensor attribute instead of a registered buffer, so model.to(device) skips it",
            "a checkpoint loaded on another device",
        ],
        fixes=[
            (
                "Move every batch tensor with .to(device) (or let Accelerate/Lightning place it)",
                "All operands share one device",
            ),
            (
                "Create new tensors with device=x.device (or torch.zeros_like)",
                "Tensors made in forward follow the input",
            ),
            ("Register constant tensors with self.register_buffer", "model.to(device) moves them too"),
        ],
        confirm_with=[("check_shapes", "Trace the forward pass; the trace reports each tensor's device")],
        example_messages=[
            "RuntimeError: Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"
        ],
    ),
    "dtype_mismatch": dict(
        title="Dtype mismatch",
        category="runtime_error",
        description="An operation received tensors of different dtypes (float vs half, float vs double, float vs long).",
        symptoms=[
            "expected scalar type Float but found Half",
            "mat1 and mat2 must have the same dtype",
            "Input type (torch.cuda.HalfTensor) and weight type (torch.cuda.FloatTensor) should be the same",
        ],
        root_causes=[
            "half-precision inputs to a float32 model outside autocast (or the reverse)",
            "numpy float64 data turned into double tensors",
            "integer labels where a float target is expected (BCE/MSE) or float labels where class indices are expected",
        ],
        fixes=[
            (
                "Use torch.autocast for mixed precision instead of manual .half() casts",
                "Autocast picks matching dtypes per op",
            ),
            ("Cast inputs to the model's dtype: x.to(next(model.parameters()).dtype)", "Operands agree"),
            (
                "Convert labels to the type the loss expects (.long() for cross-entropy, .float() for BCE/MSE)",
                "The loss accepts them",
            ),
        ],
        confirm_with=[("check_shapes", "Trace the forward pass; the trace reports each tensor's dtype")],
        example_messages=["RuntimeError: expected scalar type Float but found Half"],
    ),
    "cuda_assert": dict(
        title="CUDA device-side assert / index out of range",
        category="runtime_error",
        description="A kernel assertion failed on the GPU, almost always an index (class label, token id) out of range.",
        symptoms=[
            "device-side assert triggered",
            "Assertion `t >= 0 && t < n_classes` failed",
            "Assertion `srcIndex < srcSelectDimSize` failed",
            "IndexError: index out of range in self (the CPU form)",
            "CUBLAS_STATUS_EXECUTION_FAILED or later unrelated CUDA errors (the assert surfaces asynchronously)",
        ],
        root_causes=[
            "class labels >= num_classes or negative (e.g. labels 1..N instead of 0..N-1, or -1 padding without ignore_index)",
            "token ids >= vocab_size (tokenizer and embedding size disagree after adding tokens)",
            "position ids beyond max_position_embeddings (sequence too long)",
        ],
        fixes=[
            (
                "Re-run with CUDA_LAUNCH_BLOCKING=1 (or on CPU) to get the real failing line",
                "The traceback points at the op that asserted instead of a later one",
            ),
            (
                "Check label range: assert 0 <= labels.min() and labels.max() < num_classes; use ignore_index for padding",
                "The assert no longer triggers",
            ),
            (
                "Resize the embedding after adding tokens (model.resize_token_embeddings(len(tokenizer)))",
                "Every token id has a row",
            ),
            ("Truncate sequences to max_position_embeddings", "Position ids stay in range"),
        ],
        confirm_with=[
            ("tail_log", "Find the first assertion line above the Python traceback (grep='Assertion')"),
            ("check_shapes", "Trace the embedding and classifier sizes against the data"),
        ],
        example_messages=[
            "RuntimeError: CUDA error: device-side assert triggered",
            "Assertion `t >= 0 && t < n_classes` failed.",
        ],
    ),
    "distributed_hang": dict(
        title="Distributed hang or failure",
        category="systems",
        description="Ranks stop making progress together: a collective timed out, NCCL failed, or a worker died.",
        symptoms=[
            "Watchdog caught collective operation timeout: WorkNCCL(... OpType=ALLREDUCE ...)",
            "NCCL error ... unhandled system error / Connection reset by peer",
            "torch.distributed.elastic ... ChildFailedError",
            "DDP: Expected to have finished reduction in the prior iteration",
            "log output stops while the processes stay alive at 100% GPU",
        ],
        root_causes=[
            "ranks taking different code paths (a collective called on some ranks only, uneven data per rank)",
            "one rank crashed (often OOM) and the others wait for it until the timeout",
            "parameters unused in the forward pass under DDP",
            "network / NCCL transport problems (wrong interface, InfiniBand, shared memory too small in containers)",
        ],
        fixes=[
            (
                "Find the first rank that failed: read every rank's log, not only rank 0",
                "The real error (e.g. OOM) appears on that rank",
            ),
            (
                "Make every rank call the same collectives in the same order (drop_last=True, same number of batches)",
                "No rank waits on a collective the others never reach",
            ),
            (
                "For unused parameters pass find_unused_parameters=True to DDP, or remove the unused modules",
                "The reducer no longer waits for gradients that never come",
            ),
            (
                "Debug with NCCL_DEBUG=INFO and TORCH_DISTRIBUTED_DEBUG=DETAIL; in containers raise --shm-size",
                "The log names the failing transport or mismatched collective",
            ),
        ],
        confirm_with=[
            ("gpu_status", "Whether every rank's process is alive and whether GPUs are busy or idle"),
            ("tail_log", "The first error on each rank (grep='NCCL|Error')"),
        ],
        example_messages=[
            "[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1, OpType=ALLREDUCE, ... Timeout(ms)=600000) ran for 600023 milliseconds before timing out."
        ],
    ),
    "slow_throughput": dict(
        title="Slow throughput",
        category="systems",
        description="Training runs, but far slower than the hardware allows.",
        symptoms=["low GPU utilisation", "steps per second well below expectation", "CPU busy while the GPU idles"],
        root_causes=[
            "host-device sync points in the training loop (.item(), print(tensor), .cpu(), .numpy(), .tolist())",
            "data loading bottleneck (num_workers=0, no pin_memory, slow decoding)",
            "tiny batches that cannot fill the GPU",
        ],
        fixes=[
            (
                "Remove CPU-GPU sync points from the loop: log loss.item() every N steps, not every step",
                "The GPU is no longer stalled waiting for the host each iteration",
            ),
            ("Raise DataLoader num_workers and set pin_memory=True", "Batches are ready when the GPU asks"),
            ("Increase the batch size (or use mixed precision) to fill the GPU", "Higher samples per second"),
        ],
        confirm_with=[
            ("gpu_status", "GPU utilisation of the training process over several samples (samples=10)"),
            ("classify_failure", "Scan the code (code_path=...) for sync points inside the training loop"),
            ("read_metrics", "Throughput or step time over the run"),
        ],
    ),
    "mode_collapse": dict(
        title="Mode, entropy or reward collapse",
        category="collapse",
        description="A generative or RL model's output distribution degenerates: one token or pattern, or the opposite, "
        "near-uniform gibberish.",
        symptoms=[
            "entropy falling towards 0 (one mode) or rising above 0.9 * log(vocab_size) (gibberish)",
            "reward high while advantages are all zero (no learning signal left)",
            "generated samples repetitive or nonsensical",
        ],
        root_causes=[
            "training driven by the KL term alone once the reward has no variance (KL-only steps)",
            "token-level importance weights mismatched with sequence-level rewards",
            "overfitting to a few tasks (too many steps per task)",
            "learning rate too high for policy updates",
        ],
        fixes=[
            (
                "Gate the KL term on non-zero advantages (skip KL-only updates)",
                "No collapse when the batch has no reward variance",
            ),
            (
                "Use length-normalised (sequence-level) log-probabilities for importance weights",
                "Importance ratios stay within about [0.5, 2]",
            ),
            ("Rotate tasks more often (fewer steps per task)", "Stable for hundreds of steps rather than tens"),
            ("Add an entropy bonus or monitor entropy with an early-stop alarm", "Entropy stays in a healthy band"),
        ],
        confirm_with=[("read_metrics", "entropy, reward, kl and advantage_std over the same steps")],
        early_warnings=[
            "entropy > 0.9 * log(vocab_size): gibberish is imminent",
            "all advantages zero while mean reward > 0.5: only the KL term is training the model",
            "a clamped norm at >= 0.95 of its bound: the model is fighting the constraint",
        ],
    ),
    "rank_collapse": dict(
        title="Effective-rank collapse",
        category="collapse",
        description="Representations collapse onto a few directions: the objective is met, but diversity is gone.",
        symptoms=[
            "effective rank falling to a small fraction of the dimension (the CVFP runs: 1-7%)",
            "convergence metric high while downstream quality drops",
        ],
        root_causes=[
            "an objective that only rewards convergence/agreement (e.g. a fixed-point MSE) with no term keeping "
            "representations apart",
            "a diversity term weighted too weakly (or so strongly that it cancels the convergence term)",
            "F.normalize inside an MSE loss, which matches direction only and lets norms drift",
        ],
        fixes=[
            (
                "Add or re-weight a diversity term, with a staged schedule (high diversity weight early, lower later)",
                "Effective rank stays high while convergence still improves",
            ),
            (
                "Make the diversity weight adaptive: raise it when effective rank < 0.8 * dim",
                "Avoids the all-or-nothing trade-off of a fixed weight",
            ),
            (
                "Compare raw values in fixed-point MSE losses (no F.normalize)",
                "The loss actually asks for equal values",
            ),
        ],
        confirm_with=[
            ("read_metrics", "effective_rank against the convergence metric over the same steps"),
            ("classify_failure", "Scan the code (code_path=...) for F.normalize inside an MSE objective"),
        ],
        early_warnings=["effective rank falling while the convergence loss improves"],
    ),
    "healthy": dict(
        title="Healthy",
        category="none",
        description="No failure detected: the loss decreases, gradients are bounded, no errors.",
        symptoms=["loss decreasing and flattening", "grad norm bounded and non-zero", "train/val gap under 5%"],
        root_causes=[],
        fixes=[],
        confirm_with=[("read_metrics", "Keep watching loss, eval_loss and grad_norm as the run continues")],
    ),
}


def _build_catalogue() -> dict[str, FailureInfo]:
    from ml_debug_mcp.core.diagnosis.hypotheses import Fix, NextStep

    FailureInfo.model_rebuild(_types_namespace={"Fix": Fix, "NextStep": NextStep})
    catalogue: dict[str, FailureInfo] = {}
    for failure_id in FAILURE_IDS:
        entry = dict(_ENTRIES[failure_id])
        entry["fixes"] = [Fix(action=a, expected_effect=e) for a, e in entry["fixes"]]
        entry["confirm_with"] = [NextStep(tool=t, why=w) for t, w in entry["confirm_with"]]
        catalogue[failure_id] = FailureInfo(id=failure_id, **entry)
    return catalogue


@functools.cache
def _catalogue() -> dict[str, FailureInfo]:
    return _build_catalogue()


def __getattr__(name: str) -> Any:
    if name == "CATALOGUE":
        return _catalogue()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def failure_info(failure_id: str) -> FailureInfo:
    """The catalogue entry for one failure id (raises ValueError naming the valid ids)."""
    catalogue = _catalogue()
    if failure_id not in catalogue:
        raise ValueError(f"unknown failure id {failure_id!r}; expected one of: {', '.join(FAILURE_IDS)}")
    return catalogue[failure_id]


def render_catalogue_markdown() -> str:
    """The whole catalogue as one markdown document (served as an MCP resource)."""
    out = [
        "# Failure catalogue",
        "",
        "Every failure class classify_failure can report, with what it looks like, why it happens, what fixes it "
        "and which tool calls confirm it. Thresholds are listed at the end.",
        "",
    ]
    for info in _catalogue().values():
        out += [f"## {info.title} (`{info.id}`)", "", info.description, ""]
        sections: list[tuple[str, list[str]]] = [
            ("Symptoms", info.symptoms),
            ("Likely root causes", info.root_causes),
            ("Fixes", [f"{f.action} — *expected:* {f.expected_effect}" for f in info.fixes]),
            ("Confirm with", [f"`{s.tool}`: {s.why}" for s in info.confirm_with]),
            ("Early warnings", info.early_warnings),
            ("Error text that names it", [f"`{m}`" for m in info.example_messages]),
        ]
        for heading, items in sections:
            if items:
                out += [f"**{heading}**", ""] + [f"- {item}" for item in items] + [""]
    out.append(render_thresholds_markdown().replace("# Thresholds", "## Thresholds", 1))
    return "\n".join(out)
