"""Classify error text (tracebacks, CUDA/NCCL lines, framework warnings) into failure hypotheses.

Each rule recognises one family of real PyTorch / CUDA / NCCL / DeepSpeed / HF / Lightning /
Keras phrasings, pulls the numbers out of the message and turns them into a specific
explanation ("a Linear layer expects 256 input features but gets 512"). Rules for the same
failure merge into one `Hypothesis`; catalogue root causes and fixes follow the specific ones.

Two tiers. The precise rules come first and read the numbers out of the message. When none of a
family's precise rules matches, a family phrase ("out of memory", "device-side assert", "same
device", "scalar type"...) still names the family, at a lower confidence, and says what it could
not read: a known family phrase never yields nothing. Text is normalised first (markdown, HTML,
logger and rank prefixes: core.logs.normalize), and read again with wrapped lines joined.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ml_debug_mcp.core.diagnosis.catalogue import FailureId, failure_info
from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Fix, Hypothesis, NextStep
from ml_debug_mcp.core.logs.normalize import flatten, normalize_text

MAX_TEXT_CHARS = 4_000_000
"""Only the last this-many characters are scanned: errors sit at the end of a log."""

_MAX_EVIDENCE = 6
_MAX_MATCHES = 10_000
_LINE_CHARS = 400

# ---------------------------------------------------------------------------------------------
# Rule machinery
# ---------------------------------------------------------------------------------------------


@dataclass
class Reading:
    """What a rule learned from its matches: an explanation with the numbers, and specific advice."""

    summary: str | None = None
    root_causes: list[str] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    confidence: float | None = None  # overrides the rule's base confidence
    failure: FailureId | None = (
        None  # overrides the rule's failure (e.g. a type message that is really a device mismatch)
    )
    value: float | None = None


Explain = Callable[[Sequence[re.Match[str]], str], Reading]


@dataclass(frozen=True)
class _Rule:
    name: str
    failure: FailureId
    pattern: str
    confidence: float
    explain: Explain | None = None
    requires: str | None = None  # a regex that must also occur somewhere in the text
    grep: str | None = None  # what tail_log should grep for to see the context
    case_sensitive: bool = False


def _fix(action: str, effect: str) -> Fix:
    return Fix(action=action, expected_effect=effect)


def _phrase(text: str) -> str:
    """A literal phrase that still matches when a log wraps it across lines."""
    return r"\s+".join(re.escape(word) for word in text.split())


def _ints(group: str | None) -> list[int]:
    return [int(x) for x in re.findall(r"-?\d+", group or "")]


def _shape(group: str | None) -> str:
    return "[" + ", ".join(str(x) for x in _ints(group)) + "]"


_UNITS = {
    "b": 1,
    "bytes": 1,
    "byte": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = r"(\d+(?:\.\d+)?)\s*(bytes|byte|[KMGT]i?B)\b"


def _bytes(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit.lower()]


def _gib(n_bytes: float) -> str:
    if n_bytes >= 2**30:
        return f"{n_bytes / 2**30:.2f} GiB"
    if n_bytes >= 2**20:
        return f"{n_bytes / 2**20:.1f} MiB"
    return f"{n_bytes:.0f} bytes"


def _size_after(label_regex: str, text: str) -> float | None:
    m = re.search(label_regex, text, re.IGNORECASE)
    return _bytes(m.group(1), m.group(2)) if m else None


# ---------------------------------------------------------------------------------------------
# shape_mismatch
# ---------------------------------------------------------------------------------------------


def _explain_matmul(ms: Sequence[re.Match[str]], _: str) -> Reading:
    rows, got, expected, out = (int(ms[0].group(i)) for i in range(1, 5))
    summary = (
        f"a Linear layer (nn.Linear({expected}, {out})) expects {expected} input features but gets {got}: "
        f"the layer before it outputs {got} ({rows} rows = batch x any leading dims)"
    )
    causes = [summary]
    if got > expected and got % expected == 0:
        causes.append(
            f"{got} is {got // expected} x {expected}: a flatten probably kept an extra factor "
            "(input resolution larger than the layer was sized for, or a sequence folded into features)"
        )
    return Reading(
        summary=summary,
        root_causes=causes,
        fixes=[
            _fix(
                f"Make the layer match its input: nn.Linear({got}, {out}), or change the layer before it to output "
                f"{expected} features (nn.LazyLinear({out}) infers in_features on the first batch)",
                "The matrix multiplication shapes agree and the forward pass runs",
            )
        ],
        value=float(got),
    )


def _explain_broadcast(ms: Sequence[re.Match[str]], _: str) -> Reading:
    a, b, dim = (int(ms[0].group(i)) for i in range(1, 4))
    summary = (
        f"two tensors combined element-wise disagree at dimension {dim}: {a} vs {b}; broadcasting needs the "
        "sizes to be equal or one of them to be 1"
    )
    causes = [summary]
    if dim == 0:
        causes.append(
            "dimension 0 is usually the batch: a tensor sized with a fixed batch_size meets a smaller final "
            "batch, or predictions and targets come from different batches"
        )
    else:
        causes.append(
            "predictions and targets of different shapes in a loss (e.g. [B, C] logits against [B] labels in "
            "MSE), or sequence / feature lengths that differ"
        )
    return Reading(
        summary=summary,
        root_causes=causes,
        fixes=[
            _fix(
                "Print both shapes just before the failing line and align them (squeeze/unsqueeze, "
                "x.size(0) instead of a fixed batch size, drop_last=True)",
                "Both operands have the same size at that dimension",
            )
        ],
    )


def _explain_batch(ms: Sequence[re.Match[str]], _: str) -> Reading:
    inp, tgt = int(ms[0].group(1)), int(ms[0].group(2))
    summary = f"the model output has {inp} rows but the targets have {tgt}"
    if inp > tgt and tgt and inp % tgt == 0:
        why = (
            f"the output has {inp // tgt}x as many rows as the targets: a view/reshape folded {inp // tgt} positions "
            "(time steps or spatial locations) into the batch; flatten the targets the same way or reshape with "
            "x.view(x.size(0), -1)"
        )
    elif tgt > inp and inp and tgt % inp == 0:
        why = (
            f"the targets have {tgt // inp}x as many rows: per-token/per-pixel labels were flattened but the logits "
            "were not; flatten logits to (-1, num_classes)"
        )
    else:
        why = (
            "the sizes are unrelated: outputs and labels come from different batches, or a fixed batch size was "
            "used where the last batch is smaller"
        )
    return Reading(
        summary=f"{summary}: {why}",
        root_causes=[f"{summary}: {why}"],
        fixes=[
            _fix(
                "Make outputs and targets agree in dimension 0 (logits.view(-1, C) with targets.view(-1), "
                "or x.view(x.size(0), -1) before the classifier)",
                "The loss accepts the pair",
            )
        ],
    )


def _explain_conv(ms: Sequence[re.Match[str]], _: str) -> Reading:
    weight, inp = _ints(ms[0].group(2)), _ints(ms[0].group(3))
    expected, got = int(ms[0].group(4)), int(ms[0].group(5))
    summary = (
        f"a convolution with weight {_shape(ms[0].group(2))} expects {expected} input channels but the input "
        f"{_shape(ms[0].group(3))} has {got}"
    )
    if len(inp) == 4 and inp[-1] == expected:
        why, fix = (
            "the input looks channels-last (NHWC): its last dimension is the channel count",
            _fix(
                "Permute to NCHW before the model: x = x.permute(0, 3, 1, 2)",
                "The channel dimension is where Conv2d reads it",
            ),
        )
    elif got == 1 and expected == 3:
        why, fix = (
            "grayscale images are fed to a model built for RGB",
            _fix(
                "Convert images to RGB (PIL .convert('RGB') or x.repeat(1, 3, 1, 1)), or build the first conv with "
                "in_channels=1",
                "Input and first layer agree on 1 or 3 channels",
            ),
        )
    elif got == 4 and expected == 3:
        why, fix = (
            "RGBA images (with an alpha channel) are fed to an RGB model",
            _fix("Drop alpha with .convert('RGB') in the dataset", "Images have 3 channels"),
        )
    elif got == 3 and expected == 1:
        why, fix = (
            "RGB images are fed to a model built for one channel",
            _fix("Convert to grayscale, or build the first conv with in_channels=3", "Input and layer agree"),
        )
    else:
        why, fix = (
            f"the layer before it outputs {got} channels",
            _fix(
                f"Set in_channels={got} on this conv (its weight is {weight[:2]} = [out, in/groups]) or change "
                f"the previous layer to output {expected}",
                "The convolution accepts its input",
            ),
        )
    return Reading(summary=f"{summary}: {why}", root_causes=[f"{summary}: {why}"], fixes=[fix])


def _explain_target_size(ms: Sequence[re.Match[str]], _: str) -> Reading:
    target, inp = _shape(ms[0].group(1)), _shape(ms[0].group(2))
    warning = "must be" not in ms[0].group(0)
    summary = f"the loss receives targets {target} and predictions {inp}"
    if warning:
        summary += (
            ": training does not stop, but the loss broadcasts the two to a larger matrix and is silently "
            "wrong (often the reason a regression model does not learn)"
        )
    return Reading(
        summary=summary,
        root_causes=[summary],
        confidence=0.75 if warning else None,
        fixes=[
            _fix(
                "Make them the same shape: output.squeeze(-1) for a [N, 1] output, or target.unsqueeze(-1)",
                "The loss compares each prediction with its own target",
            )
        ],
    )


def _explain_state_dict(ms: Sequence[re.Match[str]], _: str) -> Reading:
    name, ckpt, model = ms[0].group(1), _shape(ms[0].group(2)), _shape(ms[0].group(3))
    summary = f"checkpoint parameter '{name}' is {ckpt} but the model's is {model}: the model was built with a different configuration"
    causes = [summary]
    if name.endswith(("fc.weight", "fc.bias", "classifier.weight", "classifier.bias", "head.weight", "head.bias")):
        causes.append("the classification head differs: the checkpoint was trained with another number of classes")
    return Reading(
        summary=summary,
        root_causes=causes,
        fixes=[
            _fix(
                "Build the model with the checkpoint's configuration, or drop the mismatching keys and load "
                "with strict=False to fine-tune a new head",
                "The state dict loads; only the new head starts from scratch",
            )
        ],
    )


def _template(template: str, fix: Fix) -> Explain:
    """A fixed explanation with the match's groups filled in as {0}, {1}, ..."""

    def explain(ms: Sequence[re.Match[str]], _: str) -> Reading:
        summary = template.format(*ms[0].groups())
        return Reading(summary=summary, root_causes=[summary], fixes=[fix])

    return explain


def _explain_reshape(ms: Sequence[re.Match[str]], _: str) -> Reading:
    dims, numel = _ints(ms[0].group(1)), int(ms[0].group(2))
    known = 1
    for d in dims:
        if d != -1:
            known *= d
    summary = f"reshape to {_shape(ms[0].group(1))} needs a multiple of {known} elements but the tensor has {numel}"
    return Reading(
        summary=summary,
        root_causes=[
            summary,
            "a hard-coded size (batch, sequence length, hidden size) that does not hold for this input",
        ],
        fixes=[
            _fix(
                "Derive sizes from the tensor (x.view(x.size(0), -1)) or use einops.rearrange with named axes",
                "The reshape works for any batch or sequence length",
            )
        ],
    )


def _explain_stack(ms: Sequence[re.Match[str]], text: str) -> Reading:
    a, ia, b, ib = ms[0].group(1), ms[0].group(2), ms[0].group(3), ms[0].group(4)
    summary = f"stacking tensors of different sizes: {_shape(a)} at entry {ia} and {_shape(b)} at entry {ib}"
    if "collate" in text:
        summary += ": the DataLoader's default collate cannot batch samples of different lengths/sizes"
        fix = _fix(
            "Pad in a collate_fn (torch.nn.utils.rnn.pad_sequence, or a tokenizer with padding=True) or resize "
            "images to one size",
            "Every batch stacks into one tensor",
        )
    else:
        fix = _fix("Pad or crop the tensors to a common size before torch.stack", "torch.stack succeeds")
    return Reading(summary=summary, root_causes=[summary], fixes=[fix])


def _explain_keras_shapes(ms: Sequence[re.Match[str]], _: str) -> Reading:
    a, b = ms[0].group(1), ms[0].group(2)
    summary = f"Keras compares tensors of shapes ({a}) and ({b})"
    causes = [summary]
    fixes = [_fix("Align the model output with the labels", "The loss accepts them")]
    if a.replace(" ", "").endswith(",1") or b.replace(" ", "").endswith(",1"):
        causes.append(
            "one side has a single column: integer class labels against a categorical_crossentropy loss "
            "that expects one-hot labels (or the reverse)"
        )
        fixes.insert(
            0,
            _fix(
                "Use sparse_categorical_crossentropy with integer labels, or one-hot encode the labels "
                "(keras.utils.to_categorical)",
                "Labels and predictions have the same shape",
            ),
        )
    return Reading(summary=summary, root_causes=causes, fixes=fixes)


# ---------------------------------------------------------------------------------------------
# dtype_mismatch / device_mismatch
# ---------------------------------------------------------------------------------------------

_DTYPE_WORDS = {
    "float": "Float",
    "float32": "Float",
    "half": "Half",
    "float16": "Half",
    "double": "Double",
    "float64": "Double",
    "bfloat16": "BFloat16",
    "long": "Long",
    "int64": "Long",
    "int": "Int",
    "int32": "Int",
    "byte": "Byte",
    "bool": "Bool",
    "c10::half": "Half",
    "c10::bfloat16": "BFloat16",
    "long int": "Long",  # CUDA/CPU matmul checks print the C++ type names
    "unsigned char": "Byte",
}
_TORCH_DTYPES = {"Float": "float32", "Half": "float16", "BFloat16": "bfloat16", "Double": "float64", "Long": "int64",
                 "Int": "int32", "Byte": "uint8", "Bool": "bool"}
_CXX_DTYPE = r"((?:long |unsigned )?[\w:]+)"
"""A dtype as a C++ type name: `float`, `c10::Half`, `long int` (the optional word cannot overlap the rest)."""


def _dtype_name(raw: str) -> str:
    word = raw.strip().strip("'\"").lower()
    for prefix in ("torch.cuda.", "torch.mps.", "torch.", "cuda", "cpu"):
        if word.startswith(prefix):
            word = word[len(prefix) :]
    word = word.removesuffix("tensor")
    return _DTYPE_WORDS.get(word, raw.strip())


def _dtype_advice(a: str, b: str) -> tuple[str, Fix]:
    pair = {a, b}
    if pair & {"Half", "BFloat16"} and "Float" in pair:
        return (
            "half-precision tensors meet float32 ones: a manual .half()/.to(bfloat16) on the model or the inputs "
            "outside torch.autocast",
            _fix(
                "Drop manual casts and wrap the forward pass in torch.autocast(device_type, dtype=torch.float16/bfloat16)",
                "Autocast picks a matching dtype per operation",
            ),
        )
    if "Double" in pair:
        return (
            "float64 tensors meet float32 ones: data created from numpy float64 arrays (torch.from_numpy keeps "
            "float64) or a torch.tensor of Python floats with dtype=torch.double",
            _fix(
                "Convert inputs and targets with .float() (or torch.from_numpy(a).float()) in the dataset",
                "All floating tensors are float32 like the model",
            ),
        )
    if pair & {"Long", "Int", "Byte"}:
        return (
            "integer and floating tensors are mixed: class-index targets where a float target is expected "
            "(MSE/BCE), or float labels where class indices are expected (cross-entropy)",
            _fix(
                "Give the loss the type it expects: .long() class indices for cross_entropy/nll_loss, .float() "
                "targets for mse_loss/BCE",
                "The loss accepts its target",
            ),
        )
    return (
        f"tensors of dtype {a} and {b} meet in one operation",
        _fix(f"Cast one side so both are {b}", "The operation runs"),
    )


def _explain_dtype_pair(first: int, second: int, sides: Callable[[str, str], str | None] | None = None) -> Explain:
    """`sides` says which operand holds which dtype when the message's order means something."""

    def explain(ms: Sequence[re.Match[str]], _: str) -> Reading:
        a, b = _dtype_name(ms[0].group(first) or "?"), _dtype_name(ms[0].group(second) or "?")
        cause, fix = _dtype_advice(a, b)
        side = sides(a, b) if sides else None
        summary = f"{a} vs {b}: {side or cause}"
        return Reading(summary=summary, root_causes=[summary, cause] if side else [summary], fixes=[fix])

    return explain


def _matmul_sides(a: str, b: str) -> str | None:
    """mat1/m1 is a Linear's input and mat2/m2 its weight (F.linear is addmm(bias, input, weight.T))."""
    if "?" in (a, b):
        return None
    ta, tb = _TORCH_DTYPES.get(a, a), _TORCH_DTYPES.get(b, b)
    side = f"mat1 (a Linear's input, or the left operand of @) is {ta} but mat2 (its weight, or the right one) is {tb}"
    low = {"Half", "BFloat16"}
    if a == "Float" and b in low:
        return (f"{side}: the model was cast with .half()/.to(bfloat16) but the batch is still float32, or this layer "
                "runs outside the autocast region")
    if b == "Float" and a in low:
        return (f"{side}: the input was cast to {ta} (or comes out of an autocast region) but this layer keeps "
                "float32 weights and runs with autocast off")
    return side


def _device_of(raw: str) -> str:
    low = raw.lower()
    if "cuda" in low:
        return "cuda"
    if "mps" in low:
        return "mps"
    return "cpu"


def _explain_input_weight_type(ms: Sequence[re.Match[str]], _: str) -> Reading:
    """'Input type (A) and weight type (B)': a device mismatch when one side is CUDA, else a dtype one."""
    inp, which, other = ms[0].group(1), ms[0].group(2), ms[0].group(3)
    din, dother = _device_of(inp), _device_of(other)
    if din != dother:
        summary = (
            f"the input is a {inp} on {din} but the {which} is a {other} on {dother}: "
            f"{'the batch was not moved to the GPU' if dother == 'cuda' else 'the model was not moved to the device of the input'}"
        )
        return Reading(
            failure="device_mismatch",
            summary=summary,
            root_causes=[summary],
            fixes=[
                _fix(
                    "Move the batch to the model's device: x = x.to(next(model.parameters()).device)",
                    "Input and weights live on the same device",
                )
            ],
        )
    a, b = _dtype_name(inp), _dtype_name(other)
    cause, fix = _dtype_advice(a, b)
    summary = f"input dtype {a} vs {which} dtype {b}: {cause}"
    return Reading(summary=summary, root_causes=[summary], fixes=[fix])


class _Triple:
    """A stand-in match for rules that reuse another rule's explanation with reordered groups."""

    def __init__(self, *groups: str) -> None:
        self._groups = groups

    def group(self, i: int) -> str:
        return self._groups[i - 1]


def _explain_devices(first: int, second: int) -> Explain:
    def explain(ms: Sequence[re.Match[str]], _: str) -> Reading:
        a, b = ms[0].group(first), ms[0].group(second)
        summary = f"one operation received tensors on {a} and on {b}"
        arg = ms[0].groupdict().get("arg")
        if arg:
            summary += f" (argument '{arg}')"
        return Reading(summary=summary, root_causes=[summary])

    return explain


# ---------------------------------------------------------------------------------------------
# graph_reuse / vanishing_gradients
# ---------------------------------------------------------------------------------------------


def _explain_inplace(ms: Sequence[re.Match[str]], _: str) -> Reading:
    m = ms[0]
    tensor_type, shape, op, version, expected = m.group(1), _shape(m.group(2)), m.group(4), m.group(5), m.group(6)
    source = f", produced by {op}," if op else ""
    summary = (
        f"a {shape} {tensor_type}{source} was modified in place after autograd saved it for backward "
        f"(now at version {version}, backward needs version {expected})"
    )
    return Reading(
        summary=summary,
        root_causes=[
            summary,
            f"look for x += ..., x[...] = ..., .mul_()/.add_()/.clamp_(), or nn.ReLU(inplace=True) applied to the output of {op or 'that operation'}",
        ],
        fixes=[
            _fix(
                "Replace the in-place operation with its out-of-place form (x = x * 2, nn.ReLU(inplace=False), "
                "x = x.clone() before the modification)",
                "The saved tensor keeps the version backward expects",
            )
        ],
    )


_BACKWARD_OPS: dict[str, tuple[str, str]] = {
    "Log": (
        "log of 0 or of a negative number (its gradient 1/x is infinite at 0)",
        "torch.log(x.clamp_min(1e-8)) or torch.log(x + 1e-8); for log-probabilities use F.log_softmax instead of softmax().log()",
    ),
    "Sqrt": (
        "sqrt at 0 (gradient 1/(2*sqrt(x)) is infinite) or of a negative number",
        "torch.sqrt(x + 1e-8) or x.clamp_min(1e-12).sqrt()",
    ),
    "Div": ("division by zero or by a vanishing denominator", "divide by (d + 1e-8) or d.clamp_min(1e-8)"),
    "Pow": (
        "a power of 0 with a fractional or negative exponent, or of a negative base",
        "clamp the base away from 0 (x.clamp_min(1e-8) ** p)",
    ),
    "Norm": (
        "the norm of an all-zero vector (its gradient x/||x|| is 0/0)",
        "use F.normalize(x, eps=1e-8) or sqrt(sum(x**2) + 1e-12)",
    ),
    "LinalgVectorNorm": (
        "the norm of an all-zero vector (its gradient x/||x|| is 0/0)",
        "use F.normalize(x, eps=1e-8) or sqrt(sum(x**2) + 1e-12)",
    ),
    "Acos": ("acos at +-1, where the gradient is infinite", "clamp the input to [-1 + 1e-7, 1 - 1e-7]"),
    "Asin": ("asin at +-1, where the gradient is infinite", "clamp the input to [-1 + 1e-7, 1 - 1e-7]"),
    "Atanh": ("atanh at +-1, where the gradient is infinite", "clamp the input to (-1 + 1e-7, 1 - 1e-7)"),
    "Exp": ("exp of a large number overflowed", "use torch.logsumexp / log-space arithmetic, or clamp the exponent"),
    "Cdist": (
        "the distance between identical points (the gradient of ||x - y|| at 0)",
        "add an epsilon inside the square root",
    ),
    "LogSoftmax": (
        "a row of logits that is already inf/NaN, or fully masked with -inf",
        "mask with a large finite negative number, never a whole row of -inf",
    ),
    "Softmax": (
        "a row of logits that is already inf/NaN, or fully masked with -inf",
        "mask with a large finite negative number, never a whole row of -inf",
    ),
}


def _forward_origin(text: str, before: int) -> str | None:
    """Anomaly mode prints the forward call that produced the bad op; return 'file:line `code`'."""
    start = text.rfind("Traceback of forward call that caused the error", 0, before)
    if start < 0:
        return None
    block_end = text.find("(Triggered internally", start)
    block = text[start : block_end if 0 <= block_end < before + 1 else before]
    frames = list(
        re.finditer(r'File "([^"]+)", line (\d+), in [^\n]*(?:\n(?!\s*File ")(?!\s*\(Triggered)\s*([^\n]*))?', block)
    )
    if not frames:
        return None
    user = [f for f in frames if not re.search(r"site-packages|dist-packages|[/\\]torch[/\\]", f.group(1))]
    last = (user or frames)[-1]
    code = (last.group(3) or "").strip()
    return f"{last.group(1)}:{last.group(2)}" + (f" `{code}`" if code else "")


def _explain_anomaly(ms: Sequence[re.Match[str]], text: str) -> Reading:
    fn = ms[0].group(1)
    op = re.sub(r"Backward\d*$", "", fn)
    cause, epsilon_fix = _BACKWARD_OPS.get(
        op, ("an operation in the backward pass produced NaN", "guard the operation's input with an epsilon or a clamp")
    )
    origin = _forward_origin(text, ms[0].start())
    summary = f"{fn} produced NaN in the backward pass: {cause}"
    if origin:
        summary += f"; the forward call was {origin}"
    return Reading(
        summary=summary,
        root_causes=[summary],
        fixes=[_fix(f"Guard the input of that operation: {epsilon_fix}", f"{fn} no longer returns NaN")],
    )


def _scale(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _explain_loss_scale(reduced_group: int) -> Explain:
    def explain(ms: Sequence[re.Match[str]], _: str) -> Reading:
        count = len(ms)
        final = _scale(ms[-1].group(reduced_group))
        if final is not None and final <= 1.0:
            conf = 0.85
            summary = (
                f"{count} skipped steps and the loss scale has fallen to {final:g}: gradients overflow even when "
                "barely scaled, so they are genuinely inf/NaN, not a calibration artefact"
            )
        elif count >= 20:
            conf = 0.6
            summary = (
                f"{count} fp16 overflow skips (last scale {final:g}): the loss scaler keeps hitting inf/NaN gradients"
                if final is not None
                else f"{count} fp16 overflow skips: the loss scaler keeps hitting inf/NaN gradients"
            )
        else:
            conf = 0.25
            summary = (
                f"{count} fp16 overflow skip(s): a few at the start of training are the dynamic loss scaler "
                "calibrating and are harmless; only persistent ones, or a scale falling towards 1, mean NaN"
            )
        return Reading(
            summary=summary,
            root_causes=[summary],
            confidence=conf,
            value=final,
            fixes=[
                _fix(
                    "If the scale keeps falling: switch to bf16, lower the learning rate, clip gradients, and "
                    "look for log/div/sqrt without an epsilon",
                    "Overflow skips stop after the first few steps",
                )
            ],
        )

    return explain


# ---------------------------------------------------------------------------------------------
# oom
# ---------------------------------------------------------------------------------------------


def _explain_cuda_oom(ms: Sequence[re.Match[str]], text: str) -> Reading:
    m = ms[0]
    line = text[m.start() : text.find("\n", m.end()) if "\n" in text[m.end() :] else len(text)][:1500]
    wanted = _bytes(m.group(2), m.group(3))
    gpu = re.search(r"GPU (\d+)", line)
    total = _size_after(r"total capac(?:i)?ty (?:of )?" + _SIZE, line) or _size_after(_SIZE + r" total capac", line)
    if total is None:
        t = re.search(_SIZE + r" total capac", line, re.IGNORECASE)
        total = _bytes(t.group(1), t.group(2)) if t else None
    free = _size_after(r"of which " + _SIZE + r" is free", line)
    if free is None:
        f = re.search(_SIZE + r" free\b", line, re.IGNORECASE)
        free = _bytes(f.group(1), f.group(2)) if f else None
    allocated = _size_after(_SIZE + r" is allocated by PyTorch", line)
    if allocated is None:
        a = re.search(_SIZE + r" already allocated", line, re.IGNORECASE)
        allocated = _bytes(a.group(1), a.group(2)) if a else None
    unallocated = _size_after(_SIZE + r" is reserved by PyTorch but unallocated", line)
    reserved = None
    r1 = re.search(_SIZE + r" reserved in total by PyTorch", line, re.IGNORECASE)
    if r1:
        reserved = _bytes(r1.group(1), r1.group(2))
        if allocated is not None and unallocated is None:
            unallocated = max(reserved - allocated, 0.0)
    others = [(pid, _bytes(n, u)) for pid, n, u in re.findall(r"Process (\d+) has " + _SIZE + r" memory in use", line)]

    where = f"GPU {gpu.group(1)}" if gpu else "the GPU"
    parts = [f"asked for {_gib(wanted)} on {where}"]
    if total is not None:
        parts.append(f"{_gib(total)} total")
    if free is not None:
        parts.append(f"{_gib(free)} free")
    if allocated is not None:
        parts.append(f"{_gib(allocated)} held by tensors")
    if unallocated is not None:
        parts.append(f"{_gib(unallocated)} reserved by PyTorch but unallocated")
    summary = "; ".join(parts)
    causes: list[str] = []
    fixes: list[Fix] = []
    if total is not None and wanted > total:
        causes.append(
            f"one allocation ({_gib(wanted)}) is larger than the whole GPU ({_gib(total)}): freeing other "
            "memory cannot help; that tensor itself must shrink (batch, sequence length, resolution, or an "
            "attention matrix that grows with length squared)"
        )
        fixes.append(
            _fix(
                "Shrink the tensor that is being allocated: smaller batch or sequence length, chunk the "
                "operation, or use memory-efficient attention",
                "The single allocation fits on the device",
            )
        )
    if unallocated is not None and unallocated >= wanted and (total is None or unallocated >= 0.05 * total):
        causes.append(
            f"fragmentation: {_gib(unallocated)} is reserved by PyTorch but unallocated, more than the "
            f"{_gib(wanted)} requested, yet no single free block was large enough"
        )
        fixes.append(
            _fix(
                "Set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True before starting the run",
                "The allocator can grow segments instead of needing one free block, so the same workload fits",
            )
        )
    others = _other_processes(others, allocated, unallocated)
    if others:
        listed = ", ".join(f"process {pid}: {_gib(b)}" for pid, b in others)
        causes.append(
            f"other processes also hold memory on this GPU ({listed}): another job, a stale run or a notebook"
        )
        fixes.append(
            _fix(
                "Stop the other processes using this GPU (gpu_status lists them) or pick a free GPU with "
                "CUDA_VISIBLE_DEVICES",
                "The full memory of the GPU is available to this run",
            )
        )
    if allocated is not None and total is not None and allocated >= 0.5 * total:
        causes.append(
            f"tensors already hold {_gib(allocated)} of the GPU's {_gib(total)} "
            f"({100 * allocated / total:.0f}%): model, optimizer state and activations at this batch size "
            "need more memory than the GPU has"
        )
    if not causes:
        causes.append(f"the working set does not fit: {summary}")
    return Reading(summary=summary, root_causes=causes, fixes=fixes, value=wanted / 2**30)


def _other_processes(
    processes: list[tuple[str, float]], allocated: float | None, unallocated: float | None
) -> list[tuple[str, float]]:
    """PyTorch 2.x lists every process on the GPU, this one included: drop the one whose usage is ours."""
    if allocated is None:
        return processes if len(processes) > 1 else []
    ours = allocated + (unallocated or 0.0)
    return [(pid, b) for pid, b in processes if abs(b - ours) > max(2**30, 0.1 * ours)]


def _explain_mps_oom(ms: Sequence[re.Match[str]], _: str) -> Reading:
    m = ms[0]
    allocated, other, allowed, wanted = (_bytes(m.group(i), m.group(i + 1)) for i in (1, 3, 5, 7))
    summary = (
        f"MPS (Apple GPU) asked for {_gib(wanted)}: {_gib(allocated)} held by PyTorch, {_gib(other)} by other "
        f"allocations, limit {_gib(allowed)}"
    )
    causes = [summary]
    if other > allocated:
        causes.append(
            "most of the unified memory is taken by other allocations (other apps, or tensors outside this model)"
        )
    return Reading(
        summary=summary,
        root_causes=causes,
        value=wanted / 2**30,
        fixes=[
            _fix(
                "Reduce the batch size; PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 lifts the limit but can make "
                "the whole machine swap or freeze",
                "Peak memory stays under the MPS limit",
            )
        ],
    )


def _explain_cpu_alloc(ms: Sequence[re.Match[str]], _: str) -> Reading:
    n = int(ms[0].group(1))
    summary = f"host RAM allocation of {_gib(n)} failed"
    causes = [summary]
    if n > 2**40:
        causes.append(
            "the size is absurd for any machine: a size computed from a wrong shape (e.g. an outer product or "
            "broadcast that was meant to be element-wise)"
        )
    else:
        causes.append(
            "the process (data loading, a CPU copy of the dataset, or the model on CPU) needs more RAM than is free"
        )
    return Reading(
        summary=summary,
        root_causes=causes,
        value=n / 2**30,
        fixes=[
            _fix(
                "Check the shape of the tensor being created; stream the dataset instead of loading it into "
                "memory; lower the batch size or num_workers",
                "The allocation fits in RAM",
            )
        ],
    )


_SIGKILL_CAUSE = (
    "the process was killed with SIGKILL, which on Linux is most often the kernel OOM killer (host RAM "
    "exhausted); a scheduler enforcing a memory or time limit sends it too"
)


def _explain_killed(kind: str) -> Explain:
    def explain(ms: Sequence[re.Match[str]], _: str) -> Reading:
        return Reading(
            summary=f"{kind}: {_SIGKILL_CAUSE}",
            root_causes=[_SIGKILL_CAUSE],
            fixes=[
                _fix(
                    "Check `dmesg | grep -i -E 'killed process|out of memory'` or the scheduler's log, then "
                    "lower host memory use (fewer DataLoader workers, no full-dataset copies, smaller "
                    "prefetch)",
                    "The process survives; RSS stays below the machine's RAM",
                )
            ],
        )

    return explain


def _explain_shm(ms: Sequence[re.Match[str]], _: str) -> Reading:
    """Either PyTorch phrasing: the worker's own SIGBUS line, or the main process's 'killed by signal: Bus error'."""
    pid = next((m.group(1) for m in ms if m.group(1)), None)
    who = f"DataLoader worker pid {pid}" if pid else "a DataLoader worker"
    summary = (
        f"{who} died of SIGBUS: the workers ran out of host shared memory (/dev/shm), where they put batches for the "
        "main process; Docker's default is 64 MB"
    )
    return Reading(
        summary=summary,
        root_causes=[summary],
        fixes=[
            _fix(
                "Raise /dev/shm: run the container with --shm-size=16g or --ipc=host (Kubernetes: mount an emptyDir "
                "with medium: Memory at /dev/shm), or lower num_workers",
                "Workers can pass batches to the main process",
            )
        ],
    )


def _explain_tf_oom(ms: Sequence[re.Match[str]], _: str) -> Reading:
    dims = _ints(ms[0].group(1))
    elements = 1
    for d in dims:
        elements *= d
    summary = (
        f"TensorFlow could not allocate a tensor of shape {_shape(ms[0].group(1))} ({_gib(elements * 4)} in float32)"
    )
    return Reading(summary=summary, root_causes=[summary], value=elements * 4 / 2**30)


# ---------------------------------------------------------------------------------------------
# cuda_assert
# ---------------------------------------------------------------------------------------------


def _explain_n_classes(ms: Sequence[re.Match[str]], _: str) -> Reading:
    summary = (
        "a class label is outside [0, n_classes): the loss kernel (NLLLoss / cross_entropy) asserted on the GPU "
        f"({len(ms)} thread(s) reported it)"
    )
    return Reading(
        summary=summary,
        root_causes=[
            summary,
            "labels numbered 1..N instead of 0..N-1, a background/ignore class not counted in num_classes, or -1 padding "
            "without ignore_index",
        ],
        fixes=[
            _fix(
                "Check labels.min() >= 0 and labels.max() < num_classes on a batch; set num_classes correctly or pass "
                "ignore_index for padding",
                "The assert no longer triggers",
            )
        ],
    )


def _explain_src_index(ms: Sequence[re.Match[str]], _: str) -> Reading:
    summary = (
        "an index is larger than the table it selects from (indexSelect / embedding lookup): a token id >= "
        "vocab_size or a position id >= max_position_embeddings"
    )
    return Reading(
        summary=summary,
        root_causes=[
            summary,
            "the tokenizer has more tokens than the embedding has rows (tokens added without resize_token_embeddings), or "
            "sequences longer than the model's maximum length",
        ],
        fixes=[
            _fix(
                "Compare input_ids.max() with the embedding size; call model.resize_token_embeddings(len(tokenizer)) "
                "after adding tokens; truncate to max_position_embeddings",
                "Every index has a row in its table",
            )
        ],
    )


def _explain_target_oob(ms: Sequence[re.Match[str]], _: str) -> Reading:
    target = int(ms[0].group(1))
    if target < 0:
        summary = f"a class label is {target}: a padding value used as a label without ignore_index={target}"
    else:
        summary = f"class label {target} does not exist: the classifier has at most {target} outputs (labels must be in [0, num_classes))"
    return Reading(
        summary=summary,
        root_causes=[summary],
        fixes=[
            _fix(
                "Make num_classes cover every label (max label + 1), remap labels to start at 0, or pass "
                "ignore_index for padding",
                "Every target indexes an existing class",
            )
        ],
    )


def _explain_index_oob(ms: Sequence[re.Match[str]], _: str) -> Reading:
    idx, dim, size = ms[0].group(1), ms[0].group(2), ms[0].group(3)
    summary = f"index {idx} used on dimension {dim} of size {size}: valid indices are 0..{int(size) - 1}"
    return Reading(summary=summary, root_causes=[summary])


def _explain_seq_len(ms: Sequence[re.Match[str]], _: str) -> Reading:
    got, limit = ms[0].group(1), ms[0].group(2)
    summary = (
        f"a tokenized sequence has {got} tokens but the model accepts {limit}: position ids beyond {limit} will "
        "index past the position-embedding table (a device-side assert on GPU)"
    )
    return Reading(
        summary=summary,
        root_causes=[summary],
        fixes=[_fix(f"Tokenize with truncation=True, max_length={limit}", "Every sequence fits the position table")],
    )


# ---------------------------------------------------------------------------------------------
# distributed_hang
# ---------------------------------------------------------------------------------------------


def _explain_watchdog(ms: Sequence[re.Match[str]], text: str) -> Reading:
    m = ms[0]
    seq, op, timeout_ms, ran_ms = m.group(1), m.group(2), int(m.group(5)), int(m.group(6))
    ranks = sorted({int(r) for r in re.findall(r"\[Rank (\d+)\] Watchdog caught", text)})
    summary = (
        f"collective {op} #{seq} waited {ran_ms / 1000:.0f} s (timeout {timeout_ms / 1000:.0f} s)"
        + (f" on rank(s) {', '.join(map(str, ranks))}" if ranks else "")
        + ": at least one rank never joined it"
    )
    causes = [
        summary,
        "the missing rank crashed (look for its own error, often OOM) or is stuck elsewhere: uneven "
        "numbers of batches per rank, a collective inside rank-dependent code (if rank == 0: ...), or slow "
        "I/O on one rank (checkpoint saving, evaluation on rank 0 only)",
    ]
    return Reading(
        summary=summary,
        root_causes=causes,
        value=ran_ms / 1000,
        fixes=[
            _fix(
                "Read every rank's log for the first error; make all ranks run the same collectives "
                "(drop_last=True, evaluation on all ranks or a barrier around rank-0 work)",
                "No rank waits on a collective the others never reach",
            )
        ],
    )


def _explain_nccl_error(ms: Sequence[re.Match[str]], _: str) -> Reading:
    kind = ms[0].group(ms[0].lastindex) if ms[0].lastindex else ms[0].group(0)
    summary = f"NCCL failed with '{kind}'"
    causes = [summary]
    low = kind.lower()
    if "system" in low or "remote" in low or "network" in low:
        causes.append(
            "a transport problem: wrong network interface, InfiniBand/RoCE misconfiguration, a firewall, too "
            "little shared memory in a container (/dev/shm), or a peer process that died"
        )
    elif "cuda" in low:
        causes.append("a CUDA error surfaced inside NCCL: often an OOM or a device-side assert on that rank")
    return Reading(
        summary=summary,
        root_causes=causes,
        fixes=[
            _fix(
                "Re-run with NCCL_DEBUG=INFO (and NCCL_SOCKET_IFNAME=<interface>, NCCL_IB_DISABLE=1 to "
                "test without InfiniBand; --shm-size=16g or --ipc=host in Docker)",
                "The NCCL log names the failing transport; the right setting lets the ranks connect",
            )
        ],
    )


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------

_DISTRIBUTED_CONTEXT = (
    r"(?i)nccl|gloo|c10d|torch\.distributed|ProcessGroup|torchrun|TCPStore|local_rank|DistributedDataParallel|deepspeed"
)

# One rule per entry, kept as a table: name, failure, pattern, base confidence, explanation, options.
# fmt: off
_RULES: tuple[_Rule, ...] = (
    # --- shape_mismatch -----------------------------------------------------------------------
    _Rule("matmul_shapes", "shape_mismatch", r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)", 0.95, _explain_matmul, grep="shapes cannot be multiplied"),
    _Rule("matmul_shapes_1x", "shape_mismatch", r"size mismatch, m1: \[(\d+) x (\d+)\], m2: \[(\d+) x (\d+)\]", 0.95, _explain_matmul, grep="size mismatch"),
    _Rule("broadcast_sizes", "shape_mismatch", r"The size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at non-singleton dimension (\d+)", 0.9, _explain_broadcast, grep="must match the size"),
    _Rule("batch_size", "shape_mismatch", r"Expected input batch_size \((\d+)\) to match target batch_size \((\d+)\)", 0.95, _explain_batch, grep="batch_size"),
    _Rule("conv_channels", "shape_mismatch", r"Given groups=(\d+), weight of size \[?([\d, ]+?)\]?, expected input\[([\d, ]+)\] to have (\d+) channels, but got (\d+) channels instead", 0.95, _explain_conv, grep="channels"),
    _Rule("conv_rank", "shape_mismatch", r"Expected (\d+)D \(unbatched\) or (\d+)D \(batched\) input to (\w+), but got input of size: \[([\d, ]*)\]", 0.9,
          _template("{2} takes a {0}D or {1}D input but got shape [{3}]", _fix("Add the missing batch dimension (x.unsqueeze(0)) or remove an extra one", "The layer receives the rank it expects")), grep="input to"),
    _Rule("conv_rank_1x", "shape_mismatch", r"Expected (\d+)-dimensional input for \d+-dimensional weight \[?[\d, ]+\]?, but got (\d+)-dimensional input of size \[([\d, ]+)\] instead", 0.9,
          _template("a convolution expects {0}-D input but got {1}-D input [{2}]", _fix("Add the batch dimension: x.unsqueeze(0)", "The convolution receives NCHW input")), grep="dimensional input"),
    _Rule("loss_target_size", "shape_mismatch", r"(?:Using a target size|Target size) \(torch\.Size\(\[([\d, ]*)\]\)\) (?:that is different to|must be the same as) (?:the )?input size \(torch\.Size\(\[([\d, ]*)\]\)\)", 0.9, _explain_target_size, grep="target size"),
    _Rule("multi_target", "shape_mismatch", r"multi-target not supported", 0.85,
          _template("cross-entropy/NLL received 2-D targets: class-index labels shaped [N, 1] (or one-hot labels) instead of [N]", _fix("Pass targets.squeeze(1) (or targets.argmax(1) for one-hot labels)", "Targets are a 1-D vector of class indices")), grep="target"),
    _Rule("normalized_shape", "shape_mismatch", r"Given normalized_shape=\[([\d, ]+)\], expected input with shape \[\*, ([\d, ]+)\], but got input of size\s*\[([\d, ]+)\]", 0.9,
          _template("a LayerNorm built for [{0}] receives input [{2}]: its last dimension differs", _fix("Build the LayerNorm with the input's last dimension", "The normalisation runs")), grep="normalized_shape"),
    _Rule("batchnorm_features", "shape_mismatch", r"running_mean should contain (\d+) elements not (\d+)", 0.9,
          _template("a BatchNorm built for {1} features receives {0} channels", _fix("Set num_features to the channel count of its input", "BatchNorm accepts the input")), grep="running_mean"),
    _Rule("rnn_input_size", "shape_mismatch", r"input\.size\(-1\) must be equal to input_size\. Expected (\d+), got (\d+)", 0.9,
          _template("an RNN/LSTM built with input_size={0} receives features of size {1} (check batch_first too)", _fix("Set input_size to the feature size, and batch_first=True if the input is [batch, seq, features]", "The recurrent layer accepts its input")), grep="input_size"),
    _Rule("reshape_numel", "shape_mismatch", r"shape '\[([-\d, ]+)\]' is invalid for input of size (\d+)", 0.9, _explain_reshape, grep="is invalid for input of size"),
    _Rule("view_stride", "shape_mismatch", r"view size is not compatible with input tensor's size and stride", 0.8,
          _template("view() on a non-contiguous tensor (after transpose/permute)", _fix("Use .reshape(...) or .contiguous().view(...)", "The reshape works on any memory layout")), grep="view size"),
    _Rule("cat_sizes", "shape_mismatch", r"Sizes of tensors must match except in dimension (\d+)", 0.85,
          _template("torch.cat joins tensors that differ in a dimension other than {0}", _fix("Pad/crop the tensors to a common size, or concatenate along the dimension that differs", "torch.cat succeeds")), grep="Sizes of tensors must match"),
    _Rule("stack_sizes", "shape_mismatch", r"stack expects each tensor to be equal size, but got \[([\d, ]*)\] at entry (\d+) and \[([\d, ]*)\] at entry (\d+)", 0.85, _explain_stack, grep="stack expects"),
    _Rule("bmm_sizes", "shape_mismatch", r"Expected size for first two dimensions of batch2 tensor to be: \[([\d, ]+)\] but got: \[([\d, ]+)\]", 0.9,
          _template("a batched matmul (bmm/attention) expected the second operand to start with [{0}] but got [{1}]", _fix("Transpose or reshape the second operand so its batch and inner dimensions match the first", "The batched matmul runs")), grep="batch2"),
    _Rule("expand_sizes", "shape_mismatch", r"The expanded size of the tensor \((\d+)\) must match the existing size \((\d+)\) at non-singleton dimension (\d+)", 0.85,
          _template("expanding a tensor of size {1} to {0} at dimension {2}: only size-1 dimensions can expand", _fix("Make the dimension 1 (unsqueeze) before expand, or fix the target size", "expand/broadcast succeeds")), grep="expanded size"),
    _Rule("state_dict_size", "shape_mismatch", r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) from checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)", 0.9, _explain_state_dict, grep="size mismatch for"),
    _Rule("einsum_broadcast", "shape_mismatch", r"einsum\(\): operands do not broadcast", 0.85, grep="einsum"),
    _Rule("tf_incompatible", "shape_mismatch", r"Incompatible shapes: \[([\d,]+)\] vs\. \[([\d,]+)\]", 0.85,
          _template("TensorFlow combines tensors of shapes [{0}] and [{1}]", _fix("Align predictions and labels (squeeze/expand_dims, one-hot vs sparse labels)", "The op accepts both tensors")), grep="Incompatible shapes"),
    _Rule("keras_incompatible", "shape_mismatch", r"Shapes \(([^)]*)\) and \(([^)]*)\) are incompatible", 0.85, _explain_keras_shapes, grep="are incompatible"),
    _Rule("keras_layer_input", "shape_mismatch", r"Input \d+ of layer \"?([\w-]+)\"? is incompatible with the layer: ([^\n]*)", 0.85,
          _template("Keras layer '{0}' got an input it was not built for: {1}", _fix("Reshape/flatten the input or rebuild the layer for this input shape", "The layer accepts its input")), grep="is incompatible with the layer"),
    # --- dtype_mismatch -----------------------------------------------------------------------
    _Rule("scalar_type_found", "dtype_mismatch", r"expected scalar type (\w+) but found (\w+)", 0.9, _explain_dtype_pair(1, 2), grep="scalar type"),
    _Rule("found_dtype", "dtype_mismatch", r"Found dtype (\w+) but expected (\w+)", 0.9, _explain_dtype_pair(1, 2), grep="Found dtype"),
    _Rule("mat_same_dtype", "dtype_mismatch", r"mat1 and mat2 must have the same dtype(?:, but got (\w+) and (\w+))?", 0.9, _explain_dtype_pair(1, 2, _matmul_sides), grep="same dtype"),
    _Rule("m1_m2_dtype", "dtype_mismatch", r"expected (?:m1|mat1) and (?:m2|mat2) to have the same dtype, but got: " + _CXX_DTYPE + " != " + _CXX_DTYPE, 0.9, _explain_dtype_pair(1, 2, _matmul_sides), grep="same dtype"),
    _Rule("object_scalar_type", "dtype_mismatch", r"Expected object of scalar type (\w+) but got scalar type (\w+)", 0.9, _explain_dtype_pair(1, 2), grep="scalar type"),
    _Rule("input_weight_type", "dtype_mismatch", r"Input type \(([\w.:]+)\) and (weight|bias) type \(([\w.:]+)\) should be the same", 0.9, _explain_input_weight_type, grep="should be the same"),
    _Rule("argument_same_type", "dtype_mismatch", r"Expected tensor for argument #\d+ '\w+' to have the same type as tensor for argument #\d+ '(\w+)'; but type ([\w.]+) does not equal ([\w.]+)", 0.9,
          lambda ms, text: _explain_input_weight_type([_Triple(ms[0].group(2), ms[0].group(1), ms[0].group(3))], text), grep="same type"),
    _Rule("target_dtype", "dtype_mismatch", r"expected target dtype to be Long or Byte, but got (\w+)", 0.85,
          _template("cross-entropy/NLL needs integer class indices but the targets are {0}", _fix("Pass targets.long() (or use soft targets of the same shape as the logits)", "The loss accepts the targets")), grep="target dtype"),
    _Rule("indices_scalar_type", "dtype_mismatch", r"Expected tensor for argument #\d+ '(\w+)' to have (?:one of )?the following scalar types?: ([\w, ]+); but got ([\w.]+) instead", 0.85,
          _template("argument '{0}' must be {1} but is {2} (e.g. float token ids fed to an embedding)", _fix("Cast the indices with .long()", "The embedding/index op accepts them")), grep="scalar type"),
    _Rule("not_implemented_dtype", "dtype_mismatch", r"\"(\w+)\" not implemented for '(\w+)'", 0.75,
          _template("kernel {0} has no {1} implementation here: half precision on CPU, or integer tensors where floats are expected", _fix("Keep the model in float32 on CPU (use autocast on GPU), or cast integer inputs with .float()", "A kernel exists for the dtype")), grep="not implemented for"),
    _Rule("cast_result", "dtype_mismatch", r"result type (\w+) can't be cast to the desired output type (\w+)", 0.85,
          _template("an in-place op would store a {0} result in a {1} tensor", _fix("Use an out-of-place op or create the tensor as floating point", "The result fits its dtype")), grep="can't be cast"),
    # --- device_mismatch ----------------------------------------------------------------------
    _Rule("same_device_found", "device_mismatch", r"Expected all tensors to be on the same device, but found at least two devices, ([\w:]+) and ([\w:]+)!?(?: \(when checking argument for argument (?P<arg>\w+))?", 0.95, _explain_devices(1, 2), grep="same device"),
    _Rule("same_device_got", "device_mismatch", r"Expected all tensors to be on the same device, but got (?P<arg>\w+) is on ([\w:]+), different from other tensors on ([\w:]+)", 0.95, _explain_devices(2, 3), grep="same device"),
    _Rule("device_type_1x", "device_mismatch", r"Expected object of device type (\w+) but got device type (\w+) for argument #\d+ '(?P<arg>\w+)'", 0.95, _explain_devices(1, 2), grep="device type"),
    _Rule("argument_on_device", "device_mismatch", r"Tensor for argument #\d+ '(?P<arg>\w+)' is on (\w+), but expected (?:it )?to be on (\w+)", 0.9, _explain_devices(2, 3), grep="is on"),
    _Rule("rnn_devices", "device_mismatch", r"Input and (?:hidden|parameter) tensors are not at the same device, found input tensor at (\w+) and (?:hidden|parameter) tensor at (\w+)", 0.9, _explain_devices(1, 2), grep="same device"),
    _Rule("indices_device", "device_mismatch", r"indices should be either on cpu or on the same device as the indexed tensor \((\w+)\)", 0.85, grep="indices should be"),
    _Rule("deserialize_cuda", "device_mismatch", r"Attempting to deserialize object on a CUDA device but torch\.cuda\.is_available\(\) is False", 0.85,
          _template("a checkpoint saved on a GPU is loaded on a machine without CUDA", _fix("torch.load(path, map_location='cpu') (or the current device)", "The checkpoint loads on this machine")), grep="deserialize"),
    # --- graph_reuse --------------------------------------------------------------------------
    _Rule("backward_twice", "graph_reuse", _phrase("Trying to backward through the graph a second time"), 0.95, grep="backward through the graph"),
    _Rule("inplace_version", "graph_reuse", r"one of the variables needed for gradient computation has been modified by an inplace operation: \[([\w.]+) \[([\d, ]*)\]\](?:, which is output (\d+) of (\w+),)? is at version (\d+); expected version (\d+) instead", 0.95, _explain_inplace, grep="inplace operation"),
    _Rule("inplace_generic", "graph_reuse", _phrase("has been modified by an inplace operation"), 0.9, grep="inplace operation"),
    _Rule("leaf_inplace", "graph_reuse", r"a (?:view of a )?leaf Variable that requires grad (?:is being|has been) used in an in-place operation", 0.85,
          _template("a parameter (a leaf that requires grad) was modified in place outside torch.no_grad()", _fix("Wrap manual weight updates/initialisation in `with torch.no_grad():` or use out-of-place ops", "Autograd no longer refuses the operation")), grep="leaf Variable"),
    _Rule("view_inplace", "graph_reuse", r"Output (\d+) of (\w+) is a view and is being modified inplace", 0.85,
          _template("output {0} of {1} (a view shared with other outputs) is modified in place", _fix("Clone the view before modifying it (x = x.clone()) or use an out-of-place op", "The views stay consistent for backward")), grep="modified inplace"),
    _Rule("inference_tensor", "graph_reuse", r"Inference tensors cannot be saved for backward|Inplace update to inference tensor outside InferenceMode", 0.75,
          _template("a tensor created under torch.inference_mode() is used in a computation that trains", _fix("Create it under torch.no_grad() instead, or .clone() it before use", "Autograd can save it")), grep="inference"),
    # --- vanishing_gradients (broken graph) -----------------------------------------------------
    _Rule("no_grad_fn", "vanishing_gradients", r"element (\d+) of tensors does not require grad and does not have a grad_fn", 0.9,
          _template("backward() was called on a tensor with no graph: every parameter is frozen, or the loss was computed under torch.no_grad() / from .detach()/.item()/.numpy() values", _fix("Check requires_grad on the parameters and that nothing between model output and loss detaches (no_grad, detach, numpy, item)", "The loss has a grad_fn and gradients reach the model")), grep="does not require grad"),
    _Rule("checkpoint_no_grad_inputs", "vanishing_gradients", _phrase("None of the inputs have requires_grad=True. Gradients will be None"), 0.6,
          _template("reentrant gradient checkpointing got inputs without requires_grad (frozen embeddings, e.g. with LoRA): the checkpointed layers receive no gradient", _fix("Use torch.utils.checkpoint(..., use_reentrant=False), or model.enable_input_require_grads() in HF Transformers", "Checkpointed layers get gradients again")), grep="requires_grad"),
    _Rule("unused_in_graph", "vanishing_gradients", r"(?:One of the differentiated Tensors|The differentiated Tensor at index \d+) appears to not have been used in the graph", 0.75,
          _template("autograd.grad was asked for the gradient of a tensor that the output does not depend on: the graph is cut between them", _fix("Find the detach/no_grad/non-differentiable op between input and output", "Every requested tensor is in the graph")), grep="not have been used in the graph"),
    _Rule("empty_optimizer", "vanishing_gradients", r"optimizer got an empty parameter list", 0.7,
          _template("the optimizer received no parameters: everything is frozen, or parameters() was consumed (a generator used twice) before it reached the optimizer", _fix("Pass list(model.parameters()) (or the filtered trainable ones) and check requires_grad", "The optimizer updates the model")), grep="empty parameter list"),
    # --- cuda_assert --------------------------------------------------------------------------
    _Rule("assert_n_classes", "cuda_assert", r"Assertion `t >= 0 && t < n_classes` failed", 0.95, _explain_n_classes, grep="n_classes"),
    _Rule("assert_src_index", "cuda_assert", r"Assertion `srcIndex < srcSelectDimSize` failed", 0.95, _explain_src_index, grep="srcSelectDimSize"),
    _Rule("assert_generic", "cuda_assert", r"Assertion `([^`]+)` failed", 0.8,
          _template("a GPU kernel assertion failed: `{0}` (almost always an index out of range)", _fix("Re-run with CUDA_LAUNCH_BLOCKING=1, or on CPU, to get the exact failing line and a readable IndexError", "The traceback points at the real operation")), grep="Assertion"),
    _Rule("device_side_assert", "cuda_assert", r"device-side assert(?:ion)? triggered", 0.85, grep="device-side assert"),
    _Rule("cpu_index_self", "cuda_assert", r"IndexError: index out of range in self", 0.85,
          _template("an embedding lookup received an index >= num_embeddings (the CPU form of the device-side indexSelect assert)", _fix("Check input_ids.max() < num_embeddings; resize the embedding after adding tokens", "Every id has an embedding row")), grep="index out of range"),
    _Rule("target_out_of_bounds", "cuda_assert", r"Target (-?\d+) is out of bounds", 0.9, _explain_target_oob, grep="out of bounds"),
    _Rule("index_out_of_bounds", "cuda_assert", r"index (-?\d+) is out of bounds for dimension (\d+) with size (\d+)", 0.6, _explain_index_oob, grep="out of bounds"),
    _Rule("cublas_execution_failed", "cuda_assert", r"CUBLAS_STATUS_EXECUTION_FAILED", 0.5,
          _template("cuBLAS failed to execute: usually an earlier asynchronous error (an index assert) or an OOM surfacing in the next matmul, sometimes a driver/CUDA mismatch", _fix("Re-run with CUDA_LAUNCH_BLOCKING=1 to find the real failing op; check for out-of-range labels/ids first", "The first real error is reported where it happens")), grep="CUBLAS"),
    _Rule("illegal_memory_access", "cuda_assert", r"an illegal memory access was encountered", 0.45,
          _template("a kernel read or wrote outside its memory: an out-of-range index, a custom CUDA extension bug, or a hardware/driver fault", _fix("Re-run with CUDA_LAUNCH_BLOCKING=1 (and compute-sanitizer for custom kernels)", "The failing kernel is identified")), grep="illegal memory access"),
    _Rule("unspecified_launch_failure", "cuda_assert", r"CUDA error: unspecified launch failure", 0.35, grep="launch failure"),
    _Rule("cudnn_execution_failed", "cuda_assert", r"CUDNN_STATUS_EXECUTION_FAILED|CUDNN_STATUS_MAPPING_ERROR", 0.45, grep="CUDNN"),
    _Rule("cublas_not_initialized_assert", "cuda_assert", r"CUBLAS_STATUS_NOT_INITIALIZED", 0.35, grep="CUBLAS"),
    _Rule("sequence_too_long", "cuda_assert", r"Token indices sequence length is longer than the specified maximum sequence length for this model \((\d+) > (\d+)\)", 0.5, _explain_seq_len, grep="maximum sequence length"),
    # --- oom ------------------------------------------------------------------------------------
    _Rule("cuda_oom", "oom", r"(CUDA|HIP|XPU) out of memory\. Tried to allocate " + _SIZE, 0.97, _explain_cuda_oom, grep="out of memory"),
    _Rule("oom_exception_type", "oom", r"torch\.(?:cuda\.)?OutOfMemoryError", 0.95, grep="OutOfMemoryError"),
    _Rule("cuda_error_oom", "oom", r"CUDA error: out of memory", 0.9, grep="out of memory"),
    _Rule("mps_oom", "oom", r"MPS backend out of memory \(MPS allocated: " + _SIZE + r", other allocations: " + _SIZE + r", max allowed: " + _SIZE + r"\)\. Tried to allocate " + _SIZE, 0.95, _explain_mps_oom, grep="MPS backend out of memory"),
    _Rule("cpu_allocator", "oom", r"DefaultCPUAllocator: (?:can't allocate memory|not enough memory): you tried to allocate (\d+) bytes", 0.9, _explain_cpu_alloc, grep="DefaultCPUAllocator"),
    _Rule("alloc_failed", "oom", r"CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED", 0.8, grep="ALLOC_FAILED"),
    _Rule("cublas_not_initialized_oom", "oom", r"CUBLAS_STATUS_NOT_INITIALIZED", 0.45,
          _template("cuBLAS could not create its handle: usually no GPU memory left for it (or an earlier device-side assert)", _fix("Check gpu_status for memory held by other processes; lower the batch size", "cuBLAS initialises")), grep="CUBLAS"),
    _Rule("tf_oom", "oom", r"OOM when allocating tensor (?:with|of) shape\s*\[([\d, ]+)\]", 0.95, _explain_tf_oom, grep="OOM when allocating"),
    _Rule("xla_oom", "oom", r"RESOURCE_EXHAUSTED: Out of memory", 0.9, grep="RESOURCE_EXHAUSTED"),
    _Rule("worker_killed", "oom", r"DataLoader worker \(pid \d+\) is killed by signal: Killed", 0.75,
          _template("a DataLoader worker was SIGKILLed: the workers together ran the host out of RAM (each holds its own copy of Python objects it touches)", _fix("Lower num_workers, keep dataset state in numpy arrays / memory-mapped files rather than Python lists, or add RAM", "Workers stay alive")), grep="killed by signal"),
    _Rule("shared_memory", "oom", r"insufficient shared memory \(shm\)|DataLoader worker \(pid (\d+)\) is killed by signal: Bus error", 0.8, _explain_shm, grep="shared memory"),
    _Rule("kernel_oom_killer", "oom", r"Out of memory: Kill(?:ed)? process \d+|\boom-kill(?:er)?\b|\boom_kill_process\b", 0.9, _explain_killed("the kernel log shows the OOM killer"), grep="oom"),
    _Rule("killed_line", "oom", r"(?m)^\s*Killed\s*$|^(?:\S+: )?(?:line \d+: )?\d+ Killed\s+\S", 0.55, _explain_killed("the shell printed 'Killed'"), grep="Killed", case_sensitive=True),
    _Rule("exit_137", "oom", r"\bexit(?:ed)?(?:[ _]?code| status| with (?:exit )?(?:code|status))?[ \t]{0,8}(?:[:=][ \t]{0,8})?\(?(?:137|-9)\b", 0.55, _explain_killed("exit code 137 / -9"), grep="exit"),
    _Rule("sigkill", "oom", r"\bSIGKILL\b|Signals\.SIGKILL", 0.5, _explain_killed("the process died with SIGKILL"), grep="SIGKILL", case_sensitive=True),
    # --- distributed_hang ---------------------------------------------------------------------
    _Rule("nccl_watchdog_timeout", "distributed_hang", r"Watchdog caught collective operation timeout: WorkNCCL\(SeqNum=(\d+), OpType=(\w+)(?:, NumelIn=(\d+), NumelOut=(\d+))?, Timeout\(ms\)=(\d+)\) ran for (\d+) milliseconds before timing out", 0.92, _explain_watchdog, grep="Watchdog caught"),
    _Rule("watchdog_stuck", "distributed_hang", r"watchdog got stuck for (\d+) seconds without making progress", 0.85,
          _template("the NCCL watchdog made no progress for {0} s: a rank is hung (deadlock, a CUDA kernel that never finishes, or a dead peer)", _fix("Dump stacks of every rank (py-spy dump --pid <pid>) to see where each waits", "The stuck rank and line are identified")), grep="watchdog"),
    _Rule("nccl_ops_failed", "distributed_hang", r"Some NCCL operations have failed or timed out", 0.8, grep="NCCL"),
    _Rule("nccl_error", "distributed_hang", r"NCCL (?:error|Error \d+)[^\n]*?(unhandled system error|unhandled cuda error|internal error|invalid usage|remote process exited or there was a network error)", 0.85, _explain_nccl_error, grep="NCCL"),
    _Rule("nccl_error_code", "distributed_hang", r"\bncclSystemError\b|\bncclInternalError\b|\bncclRemoteError\b|\bncclUnhandledCudaError\b|\bncclInvalidUsage\b", 0.8, _explain_nccl_error, grep="NCCL", case_sensitive=True),
    _Rule("peer_reset", "distributed_hang", r"Connection (?:reset|closed) by peer|Broken pipe", 0.5,
          _template("a rank lost its connection to a peer: the peer process most likely died first (its own log has the real error)", _fix("Find the first rank that failed and fix its error", "No connection drops")), requires=_DISTRIBUTED_CONTEXT, grep="by peer"),
    _Rule("child_failed", "distributed_hang", r"ChildFailedError", 0.4,
          _template("torchrun reports that a worker process failed: the real error is the first traceback of the failing rank (exitcode -9 means it was killed, usually OOM)", _fix("Read the failing rank's traceback above the ChildFailedError summary, or set up torch.distributed.elastic error files (@record)", "The underlying error is known")), grep="ChildFailedError", case_sensitive=True),
    _Rule("ddp_unfinished_reduction", "distributed_hang", r"Expected to have finished reduction in the prior iteration before starting a new one", 0.9,
          _template("DDP waited for gradients of parameters that did not take part in the loss (unused modules or branches)", _fix("Remove the unused parameters, or pass find_unused_parameters=True to DistributedDataParallel (slower)", "The reducer finishes every iteration")), grep="finished reduction"),
    _Rule("ddp_ready_twice", "distributed_hang", r"Expected to mark a variable ready only once", 0.75,
          _template("DDP saw a parameter's gradient twice in one iteration: reentrant gradient checkpointing, or a module reused in the forward pass", _fix("Use checkpoint(..., use_reentrant=False) or DistributedDataParallel(static_graph=True)", "Each parameter reports its gradient once")), grep="ready only once"),
    _Rule("collective_mismatch", "distributed_hang", r"Detected mismatch between collectives on ranks", 0.9,
          _template("ranks called different collectives (or different shapes) at the same step", _fix("Make every rank execute the same collectives in the same order with the same tensor shapes", "Collectives line up")), grep="mismatch between collectives"),
    _Rule("init_timeout", "distributed_hang", r"Timed out initializing process group|Timed out after \d+ seconds waiting for clients|DistStoreError: (?:Timed out|Socket Timeout)", 0.85,
          _template("not every rank joined the rendezvous: a node failed to start, wrong MASTER_ADDR/MASTER_PORT, or a firewall", _fix("Check every node started with the same MASTER_ADDR/PORT and world size and can reach the port", "All ranks join")), grep="Timed out"),
    _Rule("port_in_use", "distributed_hang", r"The server socket has failed to listen on any local network address", 0.7,
          _template("the rendezvous port is already taken: a previous run is still alive, or two jobs share MASTER_PORT", _fix("Kill the stale run or pick another --master_port", "The store starts")), grep="failed to listen"),
    # --- nan_loss -------------------------------------------------------------------------------
    _Rule("anomaly_nan", "nan_loss", r"Function '(\w+)' returned nan values in its (\d+)\w* output", 0.95, _explain_anomaly, grep="returned nan values"),
    _Rule("loss_is_nan", "nan_loss", r"(?<![A-Za-z])loss\b['\"]?\s*(?:is|=|:|became|becomes|was)\s*(?:nan|[-+]?inf)\b", 0.85,
          _template("the training loss became non-finite", _fix("Find the first non-finite step with read_metrics and localise the op with torch.autograd.set_detect_anomaly(True)", "The operation that creates the NaN is known")), grep="nan"),
    _Rule("keras_invalid_loss", "nan_loss", r"Invalid loss, terminating training", 0.85, grep="Invalid loss"),
    _Rule("metric_not_finite", "nan_loss", r"Monitored metric (\S+) = (nan|[-+]?inf) is not finite", 0.85,
          _template("the monitored metric {0} became {1}", _fix("Find where the loss first goes non-finite (read_metrics)", "The source of the NaN is known")), grep="is not finite"),
    _Rule("nan_parameters", "nan_loss", r"Detected nan and/or inf values in `([^`]+)`", 0.9,
          _template("parameter `{0}` contains NaN/Inf: an earlier update was non-finite", _fix("Clip gradients and lower the learning rate; localise the op with anomaly detection", "Parameters stay finite")), grep="Detected nan"),
    _Rule("deepspeed_overflow", "nan_loss", r"OVERFLOW! Rank \d+ Skipping step\. Attempted loss scale: ([\d.e+-]+)(?:, reducing to ([\d.e+-]+))?", 0.3, _explain_loss_scale(2), grep="OVERFLOW"),
    _Rule("fairseq_overflow", "nan_loss", r"overflow detected, setting loss scale to:? ([\d.e+-]+)", 0.3, _explain_loss_scale(1), grep="overflow detected"),
    _Rule("apex_overflow", "nan_loss", r"Gradient overflow\.\s+Skipping step, loss scaler \d+ reducing loss scale to ([\d.e+-]+)", 0.3, _explain_loss_scale(1), grep="Gradient overflow"),
    _Rule("loss_scale_minimum", "nan_loss", r"Current loss scale already at minimum - cannot decrease scale anymore", 0.92,
          _template("the fp16 loss scale reached its minimum and gradients still overflow: they are genuinely inf/NaN", _fix("Switch to bf16 or fp32 for the unstable part, lower the learning rate, and find the op producing inf", "Steps stop being skipped")), grep="loss scale"),
    _Rule("nonfinite_grad_norm", "nan_loss", r"The total norm of order ([\d.]+|inf) for gradients from `parameters` is non-finite", 0.9,
          _template("the gradient norm is NaN/Inf (overflow) when clip_grad_norm_ runs", _fix("Localise the op with torch.autograd.set_detect_anomaly(True); add epsilons to log/div/sqrt; lower the learning rate", "Gradients stay finite")), grep="non-finite"),
    _Rule("tf_check_numerics", "nan_loss", r"Tensor had (NaN|Inf) values|Nan in summary histogram", 0.85, grep="NaN"),
    _Rule("input_contains_nan", "nan_loss", r"Input contains (?:NaN|infinity)", 0.5,
          _template("a metric or preprocessing step received NaN/Inf values: predictions (from a NaN loss) or input data", _fix("Check predictions and data for NaN before the metric", "The origin of the NaN is known")), grep="Input contains"),
    # --- mode_collapse (the early-warning log lines recommended in the research-debug guide) ------
    _Rule("entropy_warning", "mode_collapse", r"Entropy collapse imminent", 0.6, grep="Entropy"),
    _Rule("zero_variance_warning", "mode_collapse", r"Perfect accuracy but zero variance", 0.6, grep="zero variance"),
    _Rule("clamp_boundary_warning", "mode_collapse", r"at clamp boundary", 0.5, grep="clamp boundary"),
    # --- slow_throughput ----------------------------------------------------------------------
    _Rule("few_workers", "slow_throughput", r"does not have many workers which may be a bottleneck", 0.45,
          _template("the DataLoader has too few workers: the GPU may wait for data", _fix("Raise num_workers (start with the number of CPU cores) and set pin_memory=True", "Samples per second rise")), grep="workers"),
    _Rule("dynamo_recompile", "slow_throughput", r"torch\._dynamo hit config\.(?:cache_size_limit|recompile_limit) \((\d+)\)", 0.5,
          _template("torch.compile recompiled {0} times and gave up: shapes or Python values change every step, so the function runs un-compiled", _fix("Pad to fixed shapes, mark dynamic dimensions (torch._dynamo.mark_dynamic) or compile with dynamic=True", "One compiled graph is reused")), grep="dynamo"),
    _Rule("too_many_workers", "slow_throughput", r"This DataLoader will create (\d+) worker processes in total\. Our suggested max number of worker in current system is (\d+)", 0.35,
          _template("{0} DataLoader workers on a machine that suggests {1}: workers compete for CPU", _fix("Set num_workers to the suggested maximum", "Less CPU contention")), grep="worker processes"),
)
# fmt: on


_SEP = "\x00"


def _group_end(pattern: str, start: int) -> int:
    """Index of the ')' closing the group that opens at `start`."""
    depth, i = 0, start
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _class_end(pattern, i) + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return len(pattern) - 1


def _class_end(pattern: str, start: int) -> int:
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i


def _split_alternatives(pattern: str) -> list[str]:
    parts, start, i = [], 0, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _class_end(pattern, i) + 1
            continue
        if ch == "(":
            i = _group_end(pattern, i) + 1
            continue
        if ch == "|":
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    return parts + [pattern[start:]]


def _required_literals(alt: str) -> str:
    """The alternative with everything a match might not contain literally replaced by _SEP."""
    out: list[str] = []
    i = 0
    while i < len(alt):
        ch = alt[i]
        nxt = alt[i + 1] if i + 1 < len(alt) else ""
        if ch == "\\":
            out.append(_SEP if nxt in "sSdDwWbBAZ0123456789" else nxt)
            i += 2
        elif ch == "[":
            out.append(_SEP)
            i = _class_end(alt, i) + 1
        elif ch == "(":
            end = _group_end(alt, i)
            body = alt[i + 1 : end]
            quantifier = alt[end + 1] if end + 1 < len(alt) else ""
            if body.startswith("?P<"):
                body = body[body.index(">") + 1 :]
            elif body.startswith("?:"):
                body = body[2:]
            elif body.startswith("?"):
                body = None  # lookaround or inline flags: not part of the match
            if body is None or quantifier in "?*{" and quantifier or len(_split_alternatives(body)) > 1:
                out.append(_SEP)
            else:
                out.append(_SEP + _required_literals(body) + _SEP)
            i = end + 1
        elif ch in "?*" or (ch == "{" and re.match(r"\{0?,", alt[i:])):
            if out:
                out[-1] = _SEP  # the previous atom may be absent
            i = alt.index("}", i) + 1 if ch == "{" else i + 1
        elif ch in "+.^${}":
            out.append(_SEP)
            i = alt.index("}", i) + 1 if ch == "{" else i + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def anchors(pattern: str) -> tuple[str, ...]:
    """Lower-case literals, one per top-level alternative, that any match must contain.

    Case-insensitive regexes lose the re engine's literal-prefix fast path, so each rule first
    checks that one of its anchors occurs in the lower-cased text (a plain substring search).
    An empty tuple means some alternative has no usable literal, so the rule always runs.
    """
    found = []
    for alt in _split_alternatives(pattern):
        runs = _required_literals(alt).split(_SEP)
        best = max(runs, key=len, default="")
        if len(best.strip()) < 4:
            return ()
        found.append(best.lower())
    return tuple(found)


@functools.cache
def _compiled() -> tuple[tuple[_Rule, re.Pattern[str], re.Pattern[str] | None, tuple[str, ...]], ...]:
    return tuple(
        (
            rule,
            re.compile(rule.pattern, 0 if rule.case_sensitive else re.IGNORECASE),
            re.compile(rule.requires) if rule.requires else None,
            anchors(rule.pattern),
        )
        for rule in _RULES
    )


@dataclass(frozen=True)
class _Family:
    """A phrase that names a failure family without saying enough to explain it."""

    failure: FailureId
    pattern: str
    unread: str  # what the precise rules would have read, for the evidence


FAMILY_CONFIDENCE = 0.75  # below CONFIRMED: the family is named, the mechanism is not read (right 97% on dev)
# Ordered: the first family phrase of a line wins, so the specific phrases precede the loose ones.
# fmt: off
_FAMILIES: tuple[_Family, ...] = (
    _Family("graph_reuse", r"backward through the graph|modified by an inplace operation|does not require grad and does not have a grad_fn|saved (?:intermediate values|tensors) .{0,40}(?:freed|been freed)|retain_graph=True", "which tensor or step holds the freed graph"),
    _Family("cuda_assert", r"device-side assert|illegal memory access|cudaErrorIllegalAddress|misaligned address|unspecified launch failure|CUBLAS_STATUS_EXECUTION_FAILED|CUDNN_STATUS_(?:EXECUTION_FAILED|INTERNAL_ERROR|MAPPING_ERROR)|srcIndex < srcSelectDimSize|index out of bounds|Assertion .{0,120} failed|an illegal instruction", "which index or kernel was out of range"),
    _Family("oom", r"out of memory|\bOOM\b(?![\"']?\s*[=:]\s*[\"']?\d)|RESOURCE_EXHAUSTED|Resource exhausted|memory (?:isn't|is not) enough|not enough memory|insufficient memory|cannot allocate memory|Cannot allocate [\d.]+ ?[KMGT]?i?B|failed to allocate|allocat\w* (?:<= available )?failed|MemoryError|std::bad_alloc|CUBLAS_STATUS_ALLOC_FAILED|more than total mem size|oom-kill|killed by signal: Killed|exit(?:ed)? (?:with )?(?:code|status)[: =]*137", "the sizes (asked for, in use, free)"),
    _Family("distributed_hang", r"Watchdog caught|collective operation timeout|WorkNCCL\(.{0,200}timed out|NCCL (?:error|timeout|WARN|communicator)|nccl\w*Error|ProcessGroupNCCL.{0,120}(?:timed? ?out|Timeout|abort)|RendezvousTimeout|Rendezvous\w*Error|rendezvous .{0,40}timed? ?out|DistNetworkError|Socket Timeout|Timed out (?:waiting|after|initializing)|timed out in blocking wait|stalled ops|missing ranks|deadlock|barrier .{0,40}timed? ?out|heartbeat .{0,40}(?:timed? ?out|lost|failed)|connection (?:reset|refused) by peer.{0,80}(?:gloo|nccl|c10d)", "which collective and rank stalled, and the timeout"),
    _Family("device_mismatch", r"same device|different devices|(?:is|are|be) on (?:the )?(?:CPU|GPU|cuda(?::\d+)?|cpu)\b.{0,60}(?:but|expected)|expected (?:object of )?device type|Expected .{0,80} to be on|device type \w+ but got|should be the same device|tensors? (?:is|are) on (?:different|another) device", "which tensor sits on which device"),
    _Family("dtype_mismatch", r"scalar type|(?:must|should) (?:have|be) the same dtype|same dtype,? but got|dtype mismatch|dtype .{0,40}(?:does not match|doesn't match|mismatch|but got|expected)|Found dtype \w+ but expected|expected .{0,40}(?:Float|Half|Double|BFloat16|Long|Int)\w* (?:but|and) (?:got|found)|not implemented for '(?:Half|BFloat16|Long|Int|Bool|Byte|Char|ComplexFloat)'|Input type .{0,60} and (?:weight|bias) type|was expected to be a (?:float|double|int\d+|half|bfloat16) tensor|must have identical types|\b(?:b?float|int)\d+ vs\.? (?:b?float|int)\d+\b", "the two dtypes"),
    _Family("shape_mismatch", r"size mismatch|shape mismatch|shapes? (?:are )?(?:not compatible|incompatible)|Incompatible shapes|is incompatible with (?:the )?layer|expected axis -?\\d+ of input shape|only batches of spatial targets|must match the size|cannot be multiplied|Dimensions must be equal|dimension mismatch|same shape, got|shape '\[.{0,60}\]' is invalid|cannot reshape|(?:expected|wrong|invalid|unexpected) (?:input )?shape|(?:expected|got) .{0,40}(?:dimensions?|dims|channels)\b.{0,40}(?:but|instead)|shape \[.{0,60}\] vs\.? \[", "the two shapes"),
    _Family("divergence", r"loss (?:is |has been )?explod|(?:loss|training|model|optimi[sz]ation) (?:has |is )?diverg|\bdiverged\b|loss (?:became|is|got) too (?:large|big|high)", "how far the loss rose, and from when"),
    _Family("exploding_gradients", r"exploding gradient|gradients? (?:are |is )?explod|grad(?:ient)?[_ ]norm (?:is |=|:)?\s*inf\b|gradient norm .{0,30}\binf\b|gradient overflow|(?:NaN|Inf) (?:found |detected )?in .{0,30}grad(?:ient)?s?[_ ]norm|grad(?:ient)?[_ ]norm (?:is |=|:)\s*nan\b", "the gradient norm over the steps"),
    _Family("slow_throughput", r"XLA compilation detected|(?:too many|frequent|excessive) (?:re)?compil|recompil\w* .{0,60}(?:cache_size_limit|recompile_limit|slow)|hit config\.(?:cache_size_limit|recompile_limit)|data ?loader (?:is )?(?:the )?bottleneck|(?:training|throughput|iteration|step) (?:is |got |became )?(?:very |extremely |much )?slow(?:er)?\b", "the step time or throughput over the steps"),
    _Family("nan_loss", r"loss (?:is|became|becomes|=|:)\s*-?nan\b|loss\w* (?:is|became|becomes|has become|turned|goes|went)\b.{0,20}\b(?:nan|inf(?:inite)?)\b|nan loss|loss[^\n]{0,12}\bNaN\b|NaN or Inf found|non-finite loss|Invalid loss|Detected (?:NaN|nan)|returned nan values|nan values? (?:in|found)|loss is not finite", "where the first non-finite value appeared"),
)
# fmt: on


@functools.cache
def _compiled_families() -> tuple[tuple[_Family, re.Pattern[str]], ...]:
    return tuple((f, re.compile(f.pattern, re.IGNORECASE)) for f in _FAMILIES)


def _family_hypotheses(text: str, first_line: int, known: set[str]) -> dict[str, "_Accumulated"]:
    """Tier two: one hypothesis per family phrase whose failure no precise rule found."""
    found: dict[str, _Accumulated] = {}
    lines: _Lines | None = None
    flat = flatten(text)
    for family, regex in _compiled_families():
        if family.failure in known or family.failure in found:
            continue
        m = regex.search(flat)
        if m is None:
            continue
        lines = lines or _Lines(text, first_line)
        acc = found.setdefault(family.failure, _Accumulated(first_offset=m.start()))
        acc.confidences.append(FAMILY_CONFIDENCE)
        phrase = " ".join(m.group(0).split())[:80]
        shown = (f"{lines.line(m.start())} -> the phrase '{phrase}' names this family, but not in a message this "
                 f"server reads word for word: {family.unread} could not be read")
        acc.evidence.append(Evidence(kind="error", text=shown, line_no=lines.number(m.start()),
                                     rule=f"errors.family:{family.failure}"))
        acc.greps.append(re.escape(phrase.split()[0]) if phrase else family.failure)
    return found


# ---------------------------------------------------------------------------------------------
# Merging matches into hypotheses
# ---------------------------------------------------------------------------------------------


class _Lines:
    """1-based line numbers and line text for offsets into the scanned text."""

    def __init__(self, text: str, first_line: int) -> None:
        self.text = text
        self.first_line = first_line
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def number(self, offset: int) -> int:
        return self.first_line + bisect.bisect_right(self.starts, offset) - 1

    def line(self, offset: int) -> str:
        idx = bisect.bisect_right(self.starts, offset) - 1
        start = self.starts[idx]
        end = self.text.find("\n", start)
        line = self.text[start : end if end >= 0 else len(self.text)].strip()
        if len(line) > _LINE_CHARS:
            column = offset - start
            lo = max(0, min(column - 60, len(line) - _LINE_CHARS))
            line = ("..." if lo else "") + line[lo : lo + _LINE_CHARS] + "..."
        return line


@dataclass
class _Accumulated:
    confidences: list[float] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    seen_lines: set[int] = field(default_factory=set)
    root_causes: list[str] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    greps: list[str] = field(default_factory=list)
    first_offset: int = 0


def _combine(confidences: list[float]) -> float:
    """Independent pieces of evidence for one failure raise confidence (noisy-OR), capped below certainty."""
    miss = 1.0
    for c in confidences:
        miss *= 1.0 - c
    return round(min(0.99, 1.0 - miss), 3)


def _add_unique(target: list, items: list, key: Callable = lambda x: x) -> None:
    keys = {key(x) for x in target}
    for item in items:
        if key(item) not in keys:
            target.append(item)
            keys.add(key(item))


def detect_errors(text: str, *, log_path: str | None = None, code_path: str | None = None) -> list[Hypothesis]:
    """Hypotheses for every failure the error text names, most confident first.

    `log_path` / `code_path` (optional) are put into the suggested next tool calls.
    """
    if not text:
        return []
    first_line = 1
    if len(text) > MAX_TEXT_CHARS:
        cut = len(text) - MAX_TEXT_CHARS
        first_line += text.count("\n", 0, cut)
        text = text[cut:]
    found = _precise_hypotheses(text, first_line)
    found.update(_family_hypotheses(normalize_text(text), first_line, set(found)))
    _cross_reference(found)
    hypotheses = [_hypothesis(failure, acc, log_path, code_path) for failure, acc in found.items()]
    hypotheses.sort(key=lambda h: -h.confidence)
    return hypotheses


def _readings(text: str) -> list[tuple[str, str]]:
    """(reading, the text its offsets number lines in): as written, without pasted decoration, and with
    wrapped lines joined (flatten keeps offsets, so its lines are the clean text's)."""
    readings = [(text, text)]
    clean = normalize_text(text)
    if clean != text:
        readings.append((clean, clean))
    if "\n" in clean:
        readings.append((flatten(clean), clean))
    return readings


def _precise_hypotheses(text: str, first_line: int) -> dict[str, "_Accumulated"]:
    """Tier one: every precise rule, on each reading of the text in turn until it matches."""
    readings = _readings(text)
    lowered = [r.lower() for r, _ in readings]
    numbered: dict[int, _Lines] = {}
    found: dict[str, _Accumulated] = {}

    for rule, regex, requires, rule_anchors in _compiled():
        matches: list[re.Match[str]] = []
        for index, ((candidate, _), lower) in enumerate(zip(readings, lowered)):
            if rule_anchors and not any(a in lower for a in rule_anchors):
                continue
            if requires is not None and not requires.search(candidate):
                continue
            matches = [m for m, _ in zip(regex.finditer(candidate), range(_MAX_MATCHES))]
            if matches:
                break
        if not matches:
            continue
        matched, numbering = readings[index]
        lines = numbered.setdefault(index, _Lines(numbering, first_line))
        reading = rule.explain(matches, matched) if rule.explain else Reading()
        failure = reading.failure or rule.failure
        acc = found.setdefault(failure, _Accumulated(first_offset=matches[0].start()))
        acc.first_offset = min(acc.first_offset, matches[0].start())
        acc.confidences.append(reading.confidence if reading.confidence is not None else rule.confidence)
        line_no = lines.number(matches[0].start())
        if line_no not in acc.seen_lines:
            acc.seen_lines.add(line_no)
            shown = lines.line(matches[0].start())
            if reading.summary:
                shown = f"{shown} -> {reading.summary}"
            repeat = (
                f" (matched {len(matches)}{'+' if len(matches) >= _MAX_MATCHES else ''} times)"
                if len(matches) > 1
                else ""
            )
            value = reading.value if reading.value is not None and math.isfinite(reading.value) else None
            acc.evidence.append(
                Evidence(kind="error", text=shown, line_no=line_no, value=value, rule=f"errors.{rule.name}{repeat}")
            )
        _add_unique(acc.root_causes, reading.root_causes)
        _add_unique(acc.fixes, reading.fixes, key=lambda f: f.action)
        if rule.grep:
            _add_unique(acc.greps, [rule.grep])
    return found


def _cross_reference(found: dict[str, _Accumulated]) -> None:
    """Failures that explain each other: say so where an agent will read it."""
    if "distributed_hang" in found and "oom" in found:
        found["distributed_hang"].root_causes.insert(
            0, "a rank ran out of memory (see the oom hypothesis) and the other ranks waited for it: fix the OOM first"
        )
    if "cuda_assert" in found and "oom" in found:
        found["cuda_assert"].root_causes.append(
            "the log also shows an out-of-memory error: a generic CUDA/cuBLAS failure can be that OOM surfacing late"
        )


def _hypothesis(failure: str, acc: _Accumulated, log_path: str | None, code_path: str | None) -> Hypothesis:
    info = failure_info(failure)
    root_causes = list(acc.root_causes)
    _add_unique(root_causes, info.root_causes)
    fixes = list(acc.fixes)
    _add_unique(fixes, info.fixes, key=lambda f: f.action)
    return Hypothesis(
        failure=failure,
        confidence=_combine(acc.confidences),
        evidence=sorted(acc.evidence, key=lambda e: e.line_no or 0)[:_MAX_EVIDENCE],
        root_causes=root_causes,
        fixes=fixes,
        next_steps=_next_steps(failure, acc, log_path, code_path),
    )


def _next_steps(failure: str, acc: _Accumulated, log_path: str | None, code_path: str | None) -> list[NextStep]:
    steps: list[NextStep] = []
    for template in failure_info(failure).confirm_with:
        args: dict = {}
        if template.tool == "tail_log":
            if log_path:
                args["path"] = log_path
            if acc.greps:
                args["grep"] = acc.greps[0]
                args["around"] = 10
        elif template.tool == "classify_failure" and "code_path" in template.why:
            if code_path:
                args["code_path"] = code_path
        elif template.tool in ("read_metrics", "compare_runs") and log_path:
            args["path" if template.tool == "read_metrics" else "before_path"] = log_path
        steps.append(NextStep(tool=template.tool, arguments=args, why=template.why))
    if failure == "graph_reuse" and not any(s.tool == "classify_failure" for s in steps):
        steps.append(
            NextStep(
                tool="classify_failure",
                arguments={"code_path": code_path} if code_path else {},
                why="Scan the training script for state carried across iterations without .detach()",
            )
        )
    return steps


def rule_names() -> list[str]:
    """Every error rule id, for documentation and the eval harness."""
    return [rule.name for rule in _RULES]
