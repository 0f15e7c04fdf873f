"""The source text of generated regression tests: one shared harness, one check per failure family.

Everything here is plain Python source that ends up in the user's repository, so it may import
only torch, pytest and the standard library. `core/record/smoke.py` assembles a file from a header (the
docstring, imports and constants, the template's among them), `load_factory`, the harness, the
template's tests, and a tiny stand-in model when there is no entrypoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from ml_debug_mcp.core.diagnosis.catalogue import THRESHOLDS

# Builds the model under test and runs training steps on it. Reads INPUT_SHAPE and SEED from the
# header and calls the `load_factory()` defined before it.
HARNESS = '''
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
'''

HARNESS_IMPORTS = ("from collections.abc import Callable", "from typing import Any, NamedTuple")

# A tiny stand-in for the user's model, used when create_smoke_test gets no entrypoint.
TINY_CLASSIFIER = '''
# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working. Replace load_factory() above with your own
# factory (or re-run create_smoke_test with entrypoint='path/to/file.py:factory').


def tiny_model_factory():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    inputs = torch.randn(8, 16)
    labels = torch.randint(0, 4, (8,))
    return model, (inputs, labels)
'''

TINY_ENTROPY_CLASSIFIER = '''
# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working: a classifier whose loss has an entropy bonus,
# written with the epsilon that keeps log(0) out of it. Replace load_factory() above with your
# own factory (or re-run create_smoke_test with entrypoint='path/to/file.py:factory').


def entropy_regularised_loss(logits, labels):
    p = torch.softmax(logits, dim=-1)
    entropy = -(p * torch.log(p + EPSILON)).sum(dim=-1).mean()
    return torch.nn.functional.cross_entropy(logits, labels) - 0.01 * entropy


def tiny_model_factory():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    return model, (torch.randn(8, 16), torch.randint(0, 4, (8,))), entropy_regularised_loss
'''

TINY_RECURRENT = '''
# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working: a context vector carried from one call to the
# next (the CVFP pattern), detached at the boundary. Replace load_factory() above with your own
# factory (or re-run create_smoke_test with entrypoint='path/to/file.py:factory').


class TinyContextModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.update = torch.nn.Linear(16 + 16, 16)
        self.head = torch.nn.Linear(16, 4)
        self.context = None

    def forward(self, x):
        previous = self.context if self.context is not None else torch.zeros(x.shape[0], 16)
        context = torch.tanh(self.update(torch.cat([x, previous], dim=-1)))
        self.context = context.detach()  # the fix: without it the next backward walks this step's freed graph
        return self.head(context)


def tiny_model_factory():
    return TinyContextModel(), (torch.randn(8, 16), torch.randint(0, 4, (8,)))
'''

TINY_TOKEN_MODEL = '''
# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working: token ids into an embedding, class labels out.
# Replace load_factory() above with your own factory (or re-run create_smoke_test with
# entrypoint='path/to/file.py:factory').


class TinyTokenClassifier(torch.nn.Module):
    def __init__(self, vocab_size: int = 50, classes: int = 4) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, 16)
        self.head = torch.nn.Linear(16, classes)

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(dim=1))


def tiny_model_factory():
    return TinyTokenClassifier(), (torch.randint(0, 50, (8, 12)), torch.randint(0, 4, (8,)))
'''

TINY_ENCODER = '''
# --- TODO: point it at your model -------------------------------------------------------------
# This tiny stand-in only shows the check working: an encoder whose outputs are the
# representations. Replace load_factory() above with your own factory (or re-run
# create_smoke_test with entrypoint='path/to/file.py:factory').


def tiny_model_factory():
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    return model, torch.randn(64, 16)
'''


# --- The checks, one per failure family ------------------------------------------------------

FINITE_TRAINING = '''

def test_epsilon_keeps_the_entropy_edge_case_finite():
    """p = [0, 1] is the edge case: 0 * log(0) is NaN without the epsilon, finite with it."""
    p = torch.tensor([0.0, 1.0], requires_grad=True)
    assert torch.isnan(-torch.sum(p * torch.log(p))), "the edge case no longer reproduces log(0)"
    entropy = -torch.sum(p * torch.log(p + EPSILON))
    entropy.backward()
    assert torch.isfinite(entropy), "entropy with the epsilon should be finite"
    assert torch.isfinite(p.grad).all(), "its gradient should be finite too"


def test_training_at_a_high_learning_rate_keeps_loss_and_gradients_finite():
    """A few Adam steps at LEARNING_RATE: every loss and every gradient must stay finite."""
    case = build_case()

    def check(step: int, loss: float, model: torch.nn.Module) -> None:
        assert math.isfinite(loss), (f"loss is {loss} at step {step}: look for log/div/sqrt without an epsilon, "
                                     "or localise it with torch.autograd.set_detect_anomaly(True)")
        bad = [name for name, p in trainable(model) if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients at step {step} in: {', '.join(bad[:5])}"

    train_steps(case, STEPS, LEARNING_RATE, after_backward=check)
'''

CLIPPED_GRADIENTS = '''

def test_raw_gradient_norm_stays_under_the_exploding_threshold():
    """STEPS steps trained as the fixed run trains (clip_grad_norm_ at MAX_NORM): the global norm
    measured before clipping stays finite and at most RAW_NORM_LIMIT at every step."""
    case = build_case()

    def clip_and_check(step: int, loss: float, model: torch.nn.Module) -> None:
        raw = float(torch.nn.utils.clip_grad_norm_([p for _, p in trainable(model)], MAX_NORM))
        assert math.isfinite(raw), f"the gradient norm is {raw} at step {step}: it overflowed before clipping"
        assert raw <= RAW_NORM_LIMIT, (f"the raw gradient norm reached {raw:.4g} at step {step} (limit "
                                       f"{RAW_NORM_LIMIT:g}): gradients explode, and clipping only hides it")
        assert math.isfinite(loss), f"loss is {loss} at step {step}"

    train_steps(case, STEPS, LEARNING_RATE, after_backward=clip_and_check)
'''

GRADIENT_FLOW = '''

def test_every_trainable_parameter_gets_a_nonzero_gradient():
    """One backward: a parameter with no gradient or an all-zero one is cut off from the loss
    (detach, no_grad, .item(), requires_grad=False upstream, or unused)."""
    case = build_case()
    named = [(n, p) for n, p in trainable(case.model) if n not in ALLOWED_WITHOUT_GRAD]
    assert named, "the model has no trainable parameters"
    loss = compute_loss(case, forward(case.model, case.batch))
    assert loss.requires_grad, ("the loss does not require grad: the graph is cut between the model and the loss "
                                "(detach/no_grad/.item()/.numpy())")
    loss.backward()
    missing = [n for n, p in named if p.grad is None]
    zero = [n for n, p in named if p.grad is not None and p.numel() and float(p.grad.detach().abs().max()) == 0.0]
    assert not missing, f"no gradient reached: {', '.join(missing[:8])}"
    assert not zero, f"the gradient is exactly zero for: {', '.join(zero[:8])}"


def test_no_gradient_is_vanishingly_small_next_to_the_largest():
    """The smallest per-parameter gradient norm is at least SMALLEST_RATIO of the largest."""
    case = build_case()
    compute_loss(case, forward(case.model, case.batch)).backward()
    norms = {n: float(p.grad.detach().float().norm()) for n, p in trainable(case.model)
             if p.grad is not None and n not in ALLOWED_WITHOUT_GRAD}
    assert norms, "no parameter received a gradient"
    largest = max(norms.values())
    tiny = sorted((n for n, v in norms.items() if v < SMALLEST_RATIO * largest), key=norms.get)
    assert not tiny, (f"gradients vanish in {', '.join(tiny[:5])} (norm {norms[tiny[0]]:.3g} against a largest of "
                      f"{largest:.3g}): saturating activations, missing normalisation or residuals")
'''

CARRIED_STATE = '''

def test_consecutive_steps_with_carried_state_do_not_reuse_the_graph():
    """STEPS training steps on one model: state it carries from one call to the next must be
    detached at the boundary, or the second backward walks the first step's freed graph."""
    case = build_case()
    optimizer = torch.optim.Adam([p for _, p in trainable(case.model)], lr=LEARNING_RATE)
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        try:
            loss = compute_loss(case, forward(case.model, case.batch))
            loss.backward()
        except RuntimeError as exc:
            if any(marker in str(exc) for marker in GRAPH_REUSE_ERRORS):
                pytest.fail(f"step {step}: {exc}\\nState carried across steps still holds a previous step's graph "
                            "(or a saved tensor was changed in place): detach it at the iteration boundary, "
                            "e.g. context = context.detach()")
            raise
        optimizer.step()
'''

BATCH_DIMENSION = '''

def test_forward_keeps_the_batch_dimension():
    """The output's first dimension is the input's batch size, for the full batch and for a batch
    of one (a hard-coded batch size in view/reshape breaks the second). In eval mode: BatchNorm
    cannot normalise one sample in training mode, and shapes do not depend on the mode."""
    case = build_case()
    case.model.eval()
    full = batch_size(case.batch)
    for size in dict.fromkeys((full, 1)):
        with torch.no_grad():
            prediction = output_tensor(forward(case.model, slice_batch(case.batch, size)))
        assert prediction.shape[0] == size, (f"input batch of {size} gave an output of shape "
                                             f"{tuple(prediction.shape)}")
        if EXPECTED_OUTPUT_SHAPE is not None:
            expected = tuple(size if dim is None else dim for dim in EXPECTED_OUTPUT_SHAPE)
            assert tuple(prediction.shape) == expected, f"output shape {tuple(prediction.shape)} != {expected}"


def batch_size(batch: Any) -> int:
    inputs, _ = split_batch(batch)
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else \\
        inputs[0] if isinstance(inputs, (tuple, list)) else inputs
    return int(first.shape[0])


def slice_batch(batch: Any, size: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[:size]
    if isinstance(batch, dict):
        return {k: slice_batch(v, size) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(slice_batch(v, size) for v in batch)
    return batch
'''

OWN_DTYPE_AND_DEVICE = '''

def test_forward_under_the_models_own_dtype_and_device():
    """Inputs moved to the model's device and floating dtype: the forward pass runs and the
    output follows the model."""
    case = build_case()
    device, dtype = model_device_dtype(case.model)
    stray = [n for n, t in list(case.model.named_parameters()) + list(case.model.named_buffers()) if t.device != device]
    assert not stray, f"parameters or buffers on another device than {device}: {', '.join(stray[:5])}"
    with torch.no_grad():
        prediction = output_tensor(forward(case.model, to_model(case.batch, device, dtype)))
    assert prediction.device == device, f"the output is on {prediction.device}, the model on {device}"
    if prediction.is_floating_point():
        assert prediction.dtype == dtype, f"the output is {prediction.dtype}, the model {dtype}"

'''

FOLLOWS_DTYPE = '''

def test_tensors_made_in_forward_follow_the_model_to_float64():
    """The whole model and batch in float64: a tensor created inside forward with a fixed dtype
    (torch.zeros(n) without dtype=x.dtype) breaks the matmul or leaves the output in float32."""
    case = build_case()
    case.model.double()
    with torch.no_grad():
        prediction = output_tensor(forward(case.model, to_model(case.batch, model_device_dtype(case.model)[0],
                                                                torch.float64)))
    if prediction.is_floating_point():
        assert prediction.dtype == torch.float64, (f"the model in float64 returned {prediction.dtype}: a cast or a "
                                                   "tensor made without dtype=x.dtype inside forward")
'''

FOLLOWS_DEVICE = '''

def test_tensors_made_in_forward_follow_the_model_to_another_device():
    """The model and batch moved to CUDA (or, without a GPU, to the meta device): a tensor created
    inside forward without device=x.device, or a plain tensor attribute, stays behind and the
    forward pass fails with a device mismatch."""
    case = build_case()
    target = "cuda" if torch.cuda.is_available() else "meta"
    dtype = model_device_dtype(case.model)[1]
    case.model.to(target)
    try:
        with torch.no_grad():
            prediction = output_tensor(forward(case.model, to_model(case.batch, target, dtype)))
    except (RuntimeError, NotImplementedError) as exc:
        if target == "meta" and not any(marker in str(exc) for marker in DEVICE_ERRORS):
            pytest.skip(f"the model cannot run on the meta device ({type(exc).__name__}: {str(exc)[:200]}); "
                        "this check needs a GPU")
        raise
    assert prediction.device.type == target, f"the output stayed on {prediction.device}"
'''

INDEX_RANGE = '''

def test_labels_and_token_ids_are_in_range_on_cpu():
    """On the CPU an index out of range is a plain IndexError with the real line, instead of an
    asynchronous device-side assert: class labels must be < the number of outputs, token ids <
    the embedding size."""
    case = build_case()
    case.model.to("cpu")
    batch = to_model(case.batch, "cpu", model_device_dtype(case.model)[1])
    inputs, target = split_batch(batch)
    embedding = next((m for m in case.model.modules() if isinstance(m, torch.nn.Embedding)), None)
    if embedding is not None:
        for ids in integer_tensors(inputs):
            assert int(ids.min()) >= 0 and int(ids.max()) < embedding.num_embeddings, (
                f"token ids span [{int(ids.min())}, {int(ids.max())}] but the embedding has "
                f"{embedding.num_embeddings} rows: resize it after adding tokens")
    output = forward(case.model, batch)
    prediction = output_tensor(output)
    if target is not None and not target.is_floating_point():
        valid = target[target != IGNORE_INDEX]
        if valid.numel():
            assert int(valid.min()) >= 0 and int(valid.max()) < prediction.shape[-1], (
                f"labels span [{int(valid.min())}, {int(valid.max())}] but the model has {prediction.shape[-1]} "
                f"outputs: labels must be 0..{prediction.shape[-1] - 1} (ignore_index={IGNORE_INDEX} for padding)")
    compute_loss(case._replace(batch=batch), output)  # the loss's own index checks, with a readable error


def test_the_largest_token_id_is_accepted():
    """Token id num_embeddings - 1, the boundary, goes through the model."""
    case = build_case()
    embedding = next((m for m in case.model.modules() if isinstance(m, torch.nn.Embedding)), None)
    inputs, _ = split_batch(case.batch)
    if embedding is None or not isinstance(inputs, torch.Tensor) or inputs.is_floating_point():
        pytest.skip("the model's input is not a tensor of token ids into an embedding")
    with torch.no_grad():
        forward(case.model, torch.full_like(inputs, embedding.num_embeddings - 1))


def integer_tensors(inputs: Any) -> list[torch.Tensor]:
    values = inputs.values() if isinstance(inputs, dict) else inputs if isinstance(inputs, (tuple, list)) else [inputs]
    return [v for v in values if isinstance(v, torch.Tensor) and not v.is_floating_point() and v.dtype != torch.bool]
'''


DDP_STEPS = '''

def test_two_steps_under_ddp_with_one_process():
    """DistributedDataParallel with a single gloo process: a parameter the forward pass does not use
    makes the second step fail here, and makes multi-rank runs hang or fail in the reducer. It runs in
    a child process, so the process group never leaks into the rest of the session and a hang
    becomes a timeout."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    try:
        child = subprocess.run([sys.executable, __file__, DDP_FLAG], capture_output=True, text=True,
                               timeout=DDP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"two DDP steps did not finish in {DDP_TIMEOUT} s: a collective is waiting for a gradient or "
                    "a rank that never comes")
    assert child.returncode == 0, f"two DDP steps failed:\\n{child.stderr[-4000:]}"


def ddp_steps() -> None:
    """What the child process runs: two DDP steps, then every parameter must have its gradient."""
    import datetime

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    case = build_case()
    # An in-memory store: no file or port to share with anything else.
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=DDP_TIMEOUT))
    try:
        wrapped = DistributedDataParallel(case.model)
        optimizer = torch.optim.Adam([p for _, p in trainable(case.model)], lr=LEARNING_RATE)
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            compute_loss(case, forward(wrapped, case.batch)).backward()
            optimizer.step()
    finally:
        dist.destroy_process_group()
    unused = [n for n, p in trainable(case.model) if p.grad is None]
    assert not unused, f"parameters unused in forward (DDP waits for their gradients): {', '.join(unused[:8])}"
'''

DDP_MAIN = '''
if __name__ == "__main__" and sys.argv[1:] == [DDP_FLAG]:
    ddp_steps()
'''

MEMORY_BUDGET = '''

def test_forward_and_backward_fit_in_the_memory_budget():
    """One forward and backward at the batch's size: peak GPU memory (CUDA) or the rise in peak
    resident memory (Linux) stays within MEMORY_BUDGET_MB."""
    case = build_case()
    device, _ = model_device_dtype(case.model)

    def step() -> None:
        compute_loss(case, forward(case.model, case.batch)).backward()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        used_mb = torch.cuda.max_memory_allocated(device) / 2**20
        what = "peak CUDA memory"
    else:
        used_mb = peak_rss_rise_mb(step)
        what = "rise in peak resident memory"
    assert used_mb <= MEMORY_BUDGET_MB, (f"{what} of one step is {used_mb:.0f} MiB, over the {MEMORY_BUDGET_MB:g} MiB "
                                         "budget: smaller batch, gradient checkpointing or mixed precision")


def peak_rss_rise_mb(run: Callable[[], None]) -> float:
    """How far peak RSS rises while `run` runs (Linux: reset VmHWM through /proc/self/clear_refs)."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("no CUDA device and no /proc/self/status to read peak memory from (not Linux)")

    def field_kib(name: str) -> int:
        for line in status.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
        pytest.skip(f"/proc/self/status has no {name} line")

    before = field_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS counter ({exc}); run this check on a GPU or a full Linux kernel")
    run()
    return max(0, field_kib("VmHWM") - before) / 1024
'''

FITS_ONE_BATCH = '''

def test_loss_decreases_on_a_fixed_batch_and_stays_finite():
    """STEPS Adam steps on one fixed batch: a model that cannot fit one batch is broken. The loss
    must fall to REQUIRED_FRACTION of where it started, stay finite, and never rise above
    SPIKE_FACTOR times its starting value."""
    case = build_case()
    losses = train_steps(case, STEPS, LEARNING_RATE)
    bad = [(i, v) for i, v in enumerate(losses) if not math.isfinite(v)]
    assert not bad, f"loss became {bad[0][1]} at step {bad[0][0]}"
    first, best_late = losses[0], min(losses[-5:])
    worst = max(range(len(losses)), key=losses.__getitem__)
    assert losses[worst] <= SPIKE_FACTOR * max(first, 1e-12), (
        f"loss spiked to {losses[worst]:.4g} at step {worst} from {first:.4g}: learning rate too high or no clipping")
    if first > 1e-8:
        assert best_late <= REQUIRED_FRACTION * first, (
            f"loss went from {first:.4g} to {best_late:.4g} in {STEPS} steps on one fixed batch (needed "
            f"<= {REQUIRED_FRACTION:g}x): gradients not reaching the weights, a loss that cannot reach its "
            "target, or a learning rate far too low")
'''

REPRESENTATION_RANK = '''

def effective_rank(representations: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values): 1 for identical rows, up to min(N, D)."""
    flat = representations.detach().float().reshape(representations.shape[0], -1)
    singular = torch.linalg.svdvals(flat)
    total = float(singular.sum())
    if total == 0.0:
        return 0.0
    p = singular / total
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))


def rank_floor(representations: torch.Tensor) -> float:
    n, d = representations.shape[0], representations[0].numel()
    return max(2.0, RANK_FLOOR_FRACTION * min(n, d))


def representations_of(case: Case) -> torch.Tensor:
    with torch.no_grad():
        out = output_tensor(forward(case.model, case.batch))
    if out.shape[0] < 3:
        pytest.fail(f"a batch of {out.shape[0]} is too small to measure diversity; use 16 or more samples")
    return out


def test_representations_are_diverse():
    """The outputs for a batch of different inputs span more than a couple of directions."""
    case = build_case()
    reps = representations_of(case)
    rank = effective_rank(reps)
    assert rank >= rank_floor(reps), (f"effective rank {rank:.2f} of {tuple(reps.shape)} outputs is below "
                                      f"{rank_floor(reps):.2f}: the representations have collapsed")


def test_representations_stay_diverse_after_training():
    """STEPS steps of the model's own objective (loss_fn from the factory) keep the effective rank
    above the floor: a convergence-only objective collapses it."""
    case = build_case()
    train_steps(case, STEPS, LEARNING_RATE)
    reps = representations_of(case)
    rank = effective_rank(reps)
    assert rank >= rank_floor(reps), (f"after {STEPS} steps the effective rank is {rank:.2f}, below "
                                      f"{rank_floor(reps):.2f}: the objective collapses the representations; add or "
                                      "re-weight a diversity term")
'''

NO_HOST_SYNC = '''

def test_training_step_makes_no_host_sync():
    """Forward, loss and backward call no .item()/.tolist()/.numpy()/.cpu() and take no Python bool
    or float of a tensor: on a GPU each one stalls the step until the device catches up."""
    case = build_case()
    with host_syncs_recorded() as syncs:
        compute_loss(case, forward(case.model, case.batch)).backward()
    assert not syncs, "host syncs in the step:\\n" + "\\n".join(f"  {site} ({name})" for site, name in syncs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; the Tensor-method check above covers the CPU")
def test_training_step_runs_under_cuda_sync_debug_mode_error():
    """On a GPU, torch.cuda.set_sync_debug_mode('error') turns every synchronising call into an error."""
    case = build_case()
    dtype = model_device_dtype(case.model)[1]
    case.model.to("cuda")
    batch = to_model(case.batch, "cuda", dtype)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        compute_loss(case._replace(batch=batch), forward(case.model, batch)).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@contextlib.contextmanager
def host_syncs_recorded():
    """Wrap the Tensor methods that copy to the host; record the first call site outside torch."""
    torch_dir = str(Path(torch.__file__).resolve().parent)
    syncs: list[tuple[str, str]] = []
    saved = {name: torch.Tensor.__dict__.get(name) for name in SYNC_METHODS}

    def recording(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self, *args, **kwargs):
            frame = sys._getframe(1)
            while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(torch_dir):
                frame = frame.f_back
            site = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
            if (site, name) not in syncs:
                syncs.append((site, name))
            return original(self, *args, **kwargs)
        return wrapper

    for name in SYNC_METHODS:
        setattr(torch.Tensor, name, recording(name, getattr(torch.Tensor, name)))
    try:
        yield syncs
    finally:
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)
'''


@dataclass(frozen=True)
class Template:
    """One family's check: its constants (name, value, comment), its tests and its stand-in model."""

    name: str
    checks: str  # one sentence for the docstring and the tool's summary
    constants: tuple[tuple[str, object, str], ...]
    tests: tuple[str, ...]
    tiny_model: str = TINY_CLASSIFIER
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
             (FINITE_TRAINING,), tiny_model=TINY_ENTROPY_CLASSIFIER),
    Template("clipped_gradients",
             "the raw gradient norm (before clipping) stays finite and under the exploding threshold at every "
             "step",
             (("MAX_NORM", 1.0, "the max_norm of clip_grad_norm_ in your training loop"),
              _LR, ("STEPS", 20, "training steps on the fixed batch"),
              ("RAW_NORM_LIMIT", _EXPLODING, "the exploding threshold (global norm > 10); raise it only if your "
               "healthy run's raw norm is known to sit higher")),
             (CLIPPED_GRADIENTS,)),
    Template("gradient_flow",
             "every parameter that requires grad gets a non-None, non-zero gradient after one backward, and none "
             "is vanishingly small next to the largest",
             (("ALLOWED_WITHOUT_GRAD", set(), "names of parameters that legitimately get no gradient"),
              ("SMALLEST_RATIO", 1e-7, "smallest per-parameter gradient norm / largest")),
             (GRADIENT_FLOW,)),
    Template("carried_state",
             "consecutive training steps with state carried between calls do not raise 'Trying to backward "
             "through the graph a second time' (the CVFP missing-detach bug) or an in-place modification error",
             (_LR, ("STEPS", 3, "consecutive steps on the same model, so carried state crosses two boundaries"),
              ("GRAPH_REUSE_ERRORS", ("backward through the graph a second time",
                                      "modified by an inplace operation"), "the errors this test guards against")),
             (CARRIED_STATE,), tiny_model=TINY_RECURRENT),
    Template("batch_dimension",
             "a forward pass returns the input's batch dimension, for the full batch and for a batch of one",
             (("EXPECTED_OUTPUT_SHAPE", None, "e.g. (None, 10), None standing for the batch size; None: batch only"),),
             (BATCH_DIMENSION,)),
    Template("model_dtype",
             "a forward pass under the model's own dtype and device works, and tensors made inside forward follow "
             "the model to float64",
             (), (OWN_DTYPE_AND_DEVICE, FOLLOWS_DTYPE)),
    Template("model_device",
             "a forward pass under the model's own device and dtype works, and tensors made inside forward follow "
             "the model to another device (CUDA, or the meta device without a GPU)",
             (("DEVICE_ERRORS", ("is not on the expected device", "Expected all tensors to be on the same device"),
               "error text that means a tensor stayed on the wrong device"),),
             (OWN_DTYPE_AND_DEVICE, FOLLOWS_DEVICE)),
    Template("index_range",
             "class labels and token ids are within the model's output and embedding sizes, checked on the CPU "
             "where an out-of-range index is a readable error",
             (("IGNORE_INDEX", -100, "label value the loss ignores (padding)"),),
             (INDEX_RANGE,), tiny_model=TINY_TOKEN_MODEL),
    Template("ddp_steps",
             "two steps under DistributedDataParallel (one gloo process) succeed and every parameter is used, so "
             "the reducer never waits for a gradient that does not come",
             (_LR, ("DDP_TIMEOUT", 120, "seconds the two steps may take before they count as hung"),
              ("DDP_FLAG", "--ddp-steps", "the argument that makes this file run the DDP steps as a child process")),
             (DDP_STEPS,), main=DDP_MAIN),
    Template("memory_budget",
             "one forward and backward at the batch's size fits in a memory budget (peak CUDA memory, or the rise "
             "in peak RSS on Linux)",
             (("MEMORY_BUDGET_MB", 2048.0, "TODO: the memory one step may use, in MiB (your GPU's, minus headroom)"),),
             (MEMORY_BUDGET,)),
    Template("fits_one_batch",
             "the loss decreases on a fixed batch over a few dozen steps (a model that cannot fit one batch is "
             "broken), stays finite and never spikes",
             (("LEARNING_RATE", 1e-2, "Adam learning rate of the check's own training steps"),
              ("STEPS", 60, "training steps on the fixed batch"),
              ("REQUIRED_FRACTION", 0.5, "the best of the last 5 losses must be at most this fraction of the first"),
              ("SPIKE_FACTOR", 3.0, "no loss may exceed this multiple of the first")),
             (FITS_ONE_BATCH,)),
    Template("representation_rank",
             "the effective rank (exp of the entropy of the normalised singular values) of a batch of outputs stays "
             "above a floor, before and after a few training steps",
             (_LR, ("STEPS", 20, "training steps of the model's own objective before the second measurement"),
              ("RANK_FLOOR_FRACTION", 0.1, "collapse: effective rank under this fraction of min(batch, dim)")),
             (REPRESENTATION_RANK,), tiny_model=TINY_ENCODER),
    Template("no_host_sync",
             "the forward, loss and backward make no host sync (.item(), .tolist(), .cpu(), bool(tensor)...), "
             "checked by wrapping those Tensor methods, and under torch.cuda.set_sync_debug_mode('error') on a GPU",
             (("SYNC_METHODS", ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__"),
               "Tensor methods that copy to the host"),),
             (NO_HOST_SYNC,)),
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
