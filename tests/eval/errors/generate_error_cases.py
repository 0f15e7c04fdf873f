"""Build `tests/eval/errors/cases.json`: error messages with the failure each one names.

Two kinds of case:

* captured: errors PyTorch really raises on CPU (shape, dtype, graph reuse, NaN under anomaly
  mode, allocation failure, DDP over gloo, torchrun, a SIGKILLed process...). `REAL_ERRORS`
  triggers each one and `capture` returns what a log would show (warnings + traceback).
  tests/test_detectors_errors.py runs the same triggers live.
* public: GPU / NCCL / DeepSpeed / apex / HF / Lightning / Keras messages that cannot be
  produced here, copied verbatim from the public issue thread given as each case's source.

Run `python tests/eval/errors/generate_error_cases.py` to regenerate the manifest.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent.parent / "fixtures" / "code"
MAX_LINES = 30


def _run_as_script(source: str, filename: str = "train.py") -> None:
    """Execute source as if it were the user's script, so tracebacks name `train.py`."""
    exec(compile(source, filename, "exec"), {"__name__": "__train__"})


def capture(trigger: Callable[[], object]) -> str:
    """Warnings and the traceback the trigger raises, as a training log would show them."""
    buffer = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                trigger()
        except BaseException:  # noqa: BLE001 - every error is the point here
            tb = traceback.format_exc()
        else:
            raise AssertionError(f"{trigger} did not raise")
    for w in caught:
        buffer.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    lines = tb.splitlines()
    if len(lines) > MAX_LINES:
        lines = lines[:1] + ["  ..."] + lines[-(MAX_LINES - 2):]
    buffer.write("\n".join(lines) + "\n")
    return buffer.getvalue()


def _fixture(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"fixture_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _shell_output(command: list[str], timeout: float = 60) -> Callable[[], None]:
    """A trigger that runs a command and raises with its combined output (what the log holds)."""
    def trigger() -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        raise RuntimeError(f"command exited with {done.returncode}\n{done.stdout}{done.stderr}")
    return trigger


def _ddp_unused_parameters() -> None:
    import torch
    import torch.distributed as dist
    import torch.nn as nn

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(3, 3)
            self.unused = nn.Linear(3, 3)

        def forward(self, x):
            return self.used(x)

    store = Path(tempfile.mkdtemp()) / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(TwoHeads())
        for _ in range(2):
            model(torch.randn(2, 3)).sum().backward()
    finally:
        dist.destroy_process_group()


def _torchrun_sigkill() -> None:
    script = Path(tempfile.mkdtemp()) / "train.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    _shell_output([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script)])()


def _variable_length_collate() -> None:
    import torch
    from torch.utils.data import DataLoader

    samples = [torch.ones(n) for n in (3, 5, 4, 6)]
    next(iter(DataLoader(samples, batch_size=4)))


PRELUDE = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"

# name -> (label, trigger, notes)
REAL_ERRORS: dict[str, tuple[str, Callable[[], object], str]] = {
    "linear_in_features": ("shape_mismatch", lambda: _run_as_script(PRELUDE + "model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))\nmodel(torch.randn(32, 2, 16, 16))\n"), "flattened 2x16x16=512 features into Linear(256, 10)"),
    "broadcast_dim": ("shape_mismatch", lambda: _run_as_script(PRELUDE + "pred = torch.randn(4, 3)\ntarget = torch.randn(4, 5)\nloss = ((pred - target) ** 2).mean()\n"), "element-wise op between [4, 3] and [4, 5]"),
    "batch_size": ("shape_mismatch", lambda: _run_as_script(PRELUDE + "logits = torch.randn(8, 10)\nlabels = torch.randint(0, 10, (4,))\nF.cross_entropy(logits, labels)\n"), "8 logits rows vs 4 labels"),
    "conv_channels": ("shape_mismatch", lambda: _run_as_script(PRELUDE + "conv = nn.Conv2d(3, 64, 3)\nconv(torch.randn(8, 1, 28, 28))\n"), "grayscale batch into an RGB conv"),
    "bce_target_size": ("shape_mismatch", lambda: _run_as_script(PRELUDE + "F.binary_cross_entropy_with_logits(torch.randn(4, 1), torch.rand(4))\n"), "[4, 1] logits vs [4] targets"),
    "reshape_numel": ("shape_mismatch", lambda: _run_as_script(PRELUDE + "x = torch.randn(4, 6)\nx.view(5, 5)\n"), "view to a size that does not divide numel"),
    "lstm_input_size": ("shape_mismatch", lambda: _run_as_script(PRELUDE + "rnn = nn.LSTM(10, 20)\nrnn(torch.randn(5, 3, 12))\n"), "LSTM(input_size=10) given 12 features"),
    "layernorm_shape": ("shape_mismatch", lambda: _run_as_script(PRELUDE + "nn.LayerNorm(10)(torch.randn(4, 12))\n"), "LayerNorm(10) on 12 features"),
    "collate_stack": ("shape_mismatch", _variable_length_collate, "default collate of variable-length samples"),
    "state_dict_head": ("shape_mismatch", lambda: _run_as_script(PRELUDE + "model = nn.Linear(512, 10)\nmodel.load_state_dict(nn.Linear(512, 1000).state_dict())\n"), "checkpoint head has 1000 classes, model 10"),
    "dtype_double_input": ("dtype_mismatch", lambda: _run_as_script(PRELUDE + "import numpy as np\nx = torch.from_numpy(np.random.rand(2, 3))\nnn.Linear(3, 3)(x)\n"), "float64 numpy data into a float32 Linear"),
    "dtype_half_input": ("dtype_mismatch", lambda: _run_as_script(PRELUDE + "nn.Linear(3, 3)(torch.randn(2, 3).half())\n"), "half input, float weights"),
    "dtype_conv_double": ("dtype_mismatch", lambda: _run_as_script(PRELUDE + "nn.Conv2d(3, 4, 3)(torch.randn(1, 3, 8, 8).double())\n"), "double input into a float conv"),
    "dtype_float_class_targets": ("dtype_mismatch", lambda: _run_as_script(PRELUDE + "F.cross_entropy(torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 1.0]))\n"), "float class indices"),
    "dtype_float_token_ids": ("dtype_mismatch", lambda: _run_as_script(PRELUDE + "nn.Embedding(10, 4)(torch.tensor([1.0, 2.0]))\n"), "float token ids into an embedding"),
    "cvfp_backward_twice": ("graph_reuse", lambda: _fixture("cvfp_before").main(), "the CVFP bug: context carried between tokens without detach"),
    "rnn_hidden_carry": ("graph_reuse", lambda: _fixture("rnn_hidden").main(), "GRU hidden state carried across batches without detach"),
    "inplace_sigmoid": ("graph_reuse", lambda: _run_as_script(PRELUDE + "a = torch.randn(10, 5, requires_grad=True)\nb = a.sigmoid()\nb.mul_(2)\nb.sum().backward()\n"), "in-place op on a tensor sigmoid saved"),
    "leaf_inplace": ("graph_reuse", lambda: _run_as_script(PRELUDE + "w = torch.randn(3, requires_grad=True)\nw += 1\n"), "in-place update of a leaf outside no_grad"),
    "retain_graph_bandaid": ("graph_reuse", lambda: _fixture("retain_graph").main(), "retain_graph=True plus weight updates: version error"),
    "loss_under_no_grad": ("vanishing_gradients", lambda: _run_as_script(PRELUDE + "model = nn.Linear(4, 1)\nwith torch.no_grad():\n    loss = model(torch.randn(8, 4)).pow(2).mean()\nloss.backward()\n"), "loss computed under no_grad: broken graph"),
    "empty_optimizer": ("vanishing_gradients", lambda: _run_as_script(PRELUDE + "model = nn.Linear(4, 1)\nfor p in model.parameters():\n    p.requires_grad_(False)\ntorch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)\n"), "every parameter frozen"),
    "embedding_index_cpu": ("cuda_assert", lambda: _run_as_script(PRELUDE + "emb = nn.Embedding(100, 8)\nemb(torch.tensor([[5, 120, 7]]))\n"), "token id 120 >= vocab 100 (CPU form of the indexSelect assert)"),
    "target_out_of_bounds": ("cuda_assert", lambda: _run_as_script(PRELUDE + "F.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 3, 2]))\n"), "label 3 with 3 classes"),
    "anomaly_log_zero": ("nan_loss", lambda: _run_as_script(PRELUDE + "p = torch.tensor([0.0, 0.5, 0.5], requires_grad=True)\nwith torch.autograd.detect_anomaly():\n    entropy = -(p * torch.log(p)).sum()\n    entropy.backward()\n"), "entropy with log(0)"),
    "anomaly_div_zero": ("nan_loss", lambda: _run_as_script(PRELUDE + "v = torch.zeros(3, requires_grad=True)\nwith torch.autograd.detect_anomaly():\n    unit = v / v.norm()\n    unit.sum().backward()\n"), "normalising a zero vector"),
    "nonfinite_clip": ("nan_loss", lambda: _run_as_script(PRELUDE + "w = nn.Parameter(torch.ones(3))\nloss = (w * torch.tensor([1.0, float('inf'), 1.0])).sum()\nloss.backward()\ntorch.nn.utils.clip_grad_norm_([w], 1.0, error_if_nonfinite=True)\n"), "inf gradient at clipping"),
    "cpu_allocation": ("oom", lambda: _run_as_script(PRELUDE + "buffer = torch.empty(2**45)\n"), "absurd host allocation"),
    "shell_killed": ("oom", _shell_output(["bash", "-c", f"{sys.executable} -c 'import os; os.kill(os.getpid(), 9)'; echo exit=$?"]), "SIGKILL as bash reports it (the OOM killer's signature)"),
    "ddp_unused_parameters": ("distributed_hang", _ddp_unused_parameters, "DDP over gloo with a parameter outside the loss"),
    "torchrun_sigkill": ("oom", _torchrun_sigkill, "torchrun worker SIGKILLed (exitcode -9): the OOM killer's signature; the ChildFailedError is its consequence"),
}

# Public messages that need a GPU, NCCL, DeepSpeed... (verbatim excerpts; source = issue thread).
PUBLIC: list[dict] = [
    {"id": "cuda_oom_2x", "label": "oom", "source": "issue:https://github.com/pytorch/pytorch/issues/16417",
     "error_text": "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 22.00 MiB. GPU 0 has a total capacity of 23.65 GiB of which 11.06 MiB is free. Including non-PyTorch memory, this process has 23.60 GiB memory in use. Of the allocated memory 22.90 GiB is allocated by PyTorch, and 194.87 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"},
    {"id": "cuda_oom_1x", "label": "oom", "source": "issue:https://github.com/pytorch/pytorch/issues/59778",
     "error_text": "RuntimeError: CUDA out of memory. Tried to allocate 2.26 GiB (GPU 0; 6.00 GiB total capacity; 781.59 MiB already allocated; 3.03 GiB free; 1.24 GiB reserved in total by PyTorch)"},
    {"id": "cuda_oom_fragmentation", "label": "oom", "source": "issue:https://github.com/Tianhao-Qi/Mask2DiT/issues/4", "notes": "40.69 GiB reserved but unallocated > 35.60 GiB requested",
     "error_text": "CUDA out of memory. Tried to allocate 35.60 GiB. GPU 0 has a total capacity of 79.33 GiB of which 26.16 GiB is free. Process 76883 has 53.16 GiB memory in use. Of the allocated memory 11.97 GiB is allocated by PyTorch, and 40.69 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"},
    {"id": "cuda_oom_capacty_typo", "label": "oom", "source": "issue:https://github.com/carolchenyx/MGFN./issues/35", "notes": "PyTorch 2.0/2.1 misspelled 'capacity'",
     "error_text": "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.70 GiB. GPU 0 has a total capacty of 6.00 GiB of which 0 bytes is free. Of the allocated memory 2.93 GiB is allocated by PyTorch, and 2.30 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF"},
    {"id": "cuda_oom_larger_than_gpu", "label": "oom", "source": "issue:https://github.com/wxian3/NeuroLens/issues/2",
     "error_text": "    return torch.grid_sampler(input, grid, mode_enum, padding_mode_enum, align_corners)\ntorch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 55.57 GiB. GPU 0 has a total capacty of 12.00 GiB of which 9.02 GiB is free. Of the allocated memory 984.52 MiB is allocated by PyTorch, and 463.48 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF"},
    {"id": "cuda_oom_other_processes", "label": "oom", "source": "issue:https://github.com/QwenLM/Qwen2.5-Omni/issues/240",
     "error_text": "CUDA out of memory. Tried to allocate 124.68 GiB. GPU 0 has a total capacity of 95.22 GiB of which 51.23 GiB is free. Process 608946 has 14.91 GiB memory in use. Process 734147 has 29.07 GiB memory in use. Of the allocated memory 25.50 GiB is allocated by PyTorch, and 3.14 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"},
    {"id": "mps_oom_hf_trainer", "label": "oom", "source": "issue:https://github.com/pytorch/pytorch/issues/152351",
     "error_text": "  File \"/opt/anaconda3/envs/huggingface/lib/python3.10/site-packages/accelerate/accelerator.py\", line 1964, in backward\n    loss.backward(**kwargs)\nRuntimeError: MPS backend out of memory (MPS allocated: 11.14 GB, other allocations: 6.65 GB, max allowed: 18.13 GB). Tried to allocate 375.40 MB on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations (may cause system failure)."},
    {"id": "tf_resource_exhausted", "label": "oom", "source": "issue:https://github.com/keras-team/keras/issues/9643",
     "error_text": "ResourceExhaustedError: OOM when allocating tensor with shape[128,128,109,109] and type float on /job:localhost/replica:0/task:0/device:GPU:1 by allocator GPU_1_bfc"},
    {"id": "torchrun_exitcode_minus9", "label": "oom", "accept": ["distributed_hang"], "source": "issue:https://github.com/OpenBMB/MiniCPM-V/issues/770", "notes": "worker SIGKILLed mid-run; the launcher's ChildFailedError follows",
     "error_text": "torch/distributed/elastic/multiprocessing/api.py:826] failed (exitcode: -9) local_rank: 0 (pid: 1322) of binary: /root/miniconda3/bin/python\nTraceback (most recent call last):\n  File \"/root/miniconda3/bin/torchrun\", line 8, in <module>\n    sys.exit(main())\n  File \"/root/miniconda3/lib/python3.10/site-packages/torch/distributed/launcher/api.py\", line 263, in launch_agent\n    raise ChildFailedError(\ntorch.distributed.elastic.multiprocessing.errors.ChildFailedError:"},
    {"id": "nccl_watchdog_2x", "label": "distributed_hang", "source": "issue:https://github.com/XPixelGroup/BasicSR/issues/737",
     "error_text": "[rank1]:[E626 06:24:44.903881913 ProcessGroupNCCL.cpp:616] [Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=808, OpType=ALLREDUCE, NumelIn=9801523, NumelOut=9801523, Timeout(ms)=600000) ran for 600020 milliseconds before timing out.\n[rank1]:[E626 06:24:44.906457629 ProcessGroupNCCL.cpp:1785] [PG ID 0 PG GUID 0(default_pg) Rank 1] Exception (either an error or timeout) detected by watchdog at work: 808, last enqueued NCCL work: 811, last completed NCCL work: 807.\n[rank0]:[E626 06:24:44.159932949 ProcessGroupNCCL.cpp:616] [Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=808, OpType=ALLREDUCE, NumelIn=9801523, NumelOut=9801523, Timeout(ms)=600000) ran for 600030 milliseconds before timing out."},
    {"id": "nccl_watchdog_1x", "label": "distributed_hang", "source": "issue:https://github.com/OFA-Sys/OFA/issues/271",
     "error_text": "[E ProcessGroupNCCL.cpp:737] [Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=469508, OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 1802212 milliseconds before timing out.\n[E ProcessGroupNCCL.cpp:737] [Rank 3] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=469508, OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 1802211 milliseconds before timing out."},
    {"id": "nccl_unhandled_system_error", "label": "distributed_hang", "source": "issue:https://github.com/NVIDIA/nccl/issues/1016",
     "error_text": "NCCL error in: /opt/pytorch/pytorch/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1275, unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.18.1"},
    {"id": "nccl_unhandled_system_error_1x", "label": "distributed_hang", "source": "issue:https://github.com/WZMIAOMIAO/deep-learning-for-image-processing/issues/545",
     "error_text": "RuntimeError: NCCL error in: /pytorch/torch/lib/c10d/ProcessGroupNCCL.cpp:518, unhandled system error, NCCL version 2.4.8"},
    {"id": "ddp_unfinished_reduction_yolox", "label": "distributed_hang", "source": "issue:https://github.com/Megvii-BaseDetection/YOLOX/issues/885",
     "error_text": "Expected to have finished reduction in the prior iteration before starting a new one. This error indicates that your module has parameters that were not used in producing loss. You can enable unused parameter detection by (1) passing the keyword argument `find_unused_parameters=True` to `torch.nn.parallel.DistributedDataParallel`; (2) making sure all `forward` function outputs participate in calculating loss."},
    {"id": "assert_n_classes", "label": "cuda_assert", "source": "issue:https://github.com/milesial/Pytorch-UNet/issues/375",
     "error_text": "../aten/src/ATen/native/cuda/NLLLoss2d.cu:103: nll_loss2d_forward_kernel: block: [5,0,0], thread: [996,0,0] Assertion `t >= 0 && t < n_classes` failed.\n../aten/src/ATen/native/cuda/NLLLoss2d.cu:103: nll_loss2d_forward_kernel: block: [5,0,0], thread: [997,0,0] Assertion `t >= 0 && t < n_classes` failed.\n../aten/src/ATen/native/cuda/NLLLoss2d.cu:103: nll_loss2d_forward_kernel: block: [2,0,0], thread: [783,0,0] Assertion `t >= 0 && t < n_classes` failed."},
    {"id": "assert_src_index_hf", "label": "cuda_assert", "source": "issue:https://github.com/huggingface/transformers/issues/28104",
     "error_text": "../aten/src/ATen/native/cuda/Indexing.cu:1146: indexSelectLargeIndex: block: [18,0,0], thread: [5,0,0] Assertion `srcIndex < srcSelectDimSize` failed.\n../aten/src/ATen/native/cuda/Indexing.cu:1146: indexSelectLargeIndex: block: [18,0,0], thread: [6,0,0] Assertion `srcIndex < srcSelectDimSize` failed."},
    {"id": "assert_src_index_legacy", "label": "cuda_assert", "source": "issue:https://github.com/r9y9/deepvoice3_pytorch/issues/33",
     "error_text": "/opt/conda/conda-bld/pytorch_1512386481460/work/torch/lib/THC/THCTensorIndex.cu:325: void indexSelectLargeIndex(TensorInfo<T, IndexType>, TensorInfo<T, IndexType>, TensorInfo<long, IndexType>, int, int, IndexType, IndexType, long) [with T = float, IndexType = unsigned int, DstDim = 2, SrcDim = 2, IdxDim = -2]: block: [106,0,0], thread: [32,0,0] Assertion `srcIndex < srcSelectDimSize` failed."},
    {"id": "device_side_assert_only", "label": "cuda_assert", "source": "issue:https://github.com/jfzhang95/pytorch-deeplab-xception/issues/175",
     "error_text": "RuntimeError: CUDA error: device-side assert triggered"},
    {"id": "cublas_execution_failed", "label": "cuda_assert", "accept": ["oom"], "source": "issue:https://github.com/seeyourmind/TKGElib/issues/9", "notes": "usually an index assert or OOM surfacing in the next matmul",
     "error_text": "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle, opa, opb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc)`"},
    {"id": "deepspeed_scale_collapsed", "label": "nan_loss", "source": "issue:https://github.com/huggingface/transformers/issues/14531",
     "error_text": "[2021-11-27 00:36:54,800] [INFO] [stage2.py:1628:step] [deepscale] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1, reducing to 1\n  0%|          | 98/24128 [00:40<2:40:10,  2.50it/s][2021-11-27 00:36:55,194] [INFO] [stage2.py:1628:step] [deepscale] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1, reducing to 1\n  0%|          | 99/24128 [00:40<2:39:27,  2.51it/s][2021-11-27 00:36:55,588] [INFO] [stage2.py:1628:step] [deepscale] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1, reducing to 1"},
    {"id": "deepspeed_scale_minimum", "label": "nan_loss", "source": "issue:https://github.com/ymcui/Chinese-LLaMA-Alpaca/issues/534",
     "error_text": "[2023-06-07 22:24:46,260] [INFO] [loss_scaler.py:181:update_scale] [deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 4, reducing to 2\nException: Current loss scale already at minimum - cannot decrease scale anymore. Exiting run."},
    {"id": "apex_overflow_to_half", "label": "nan_loss", "source": "issue:https://github.com/NVIDIA/apex/issues/834",
     "error_text": "Gradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 32768.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 16384.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 8192.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 4096.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 2048.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 1024.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 512.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 256.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 128.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 64.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 32.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 16.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 8.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 4.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 2.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 1.0\nGradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 0.5"},
    {"id": "keras_terminate_on_nan", "label": "nan_loss", "source": "issue:https://github.com/keras-team/keras-tuner/issues/442",
     "error_text": "Epoch 5/10\n   1/1500 [..............................] - ETA: 0s - loss: 2.2759 - accuracy: 0.2188Batch 1: Invalid loss, terminating training\n   2/1500 [..............................] - ETA: 46s - loss: nan - accuracy: 0.1719  Batch 2: Invalid loss, terminating training"},
    {"id": "detr_loss_is_nan", "label": "nan_loss", "source": "issue:https://github.com/Intellindust-AI-Lab/DEIM/issues/96",
     "error_text": "Loss is nan, stopping training"},
    {"id": "device_two_devices", "label": "device_mismatch", "source": "issue:https://github.com/Lightricks/LTX-Video/issues/24",
     "error_text": "  File \"C:\\ComfyUI\\python_embeded\\Lib\\site-packages\\torch\\nn\\modules\\linear.py\", line 125, in forward\n    return F.linear(input, self.weight, self.bias)\nRuntimeError: Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! (when checking argument for argument mat2 in method wrapper_CUDA_mm)"},
    {"id": "device_mat1_on_cpu", "label": "device_mismatch", "source": "issue:https://github.com/ClownsharkBatwing/RES4LYF/pull/223",
     "error_text": "Expected all tensors to be on the same device, but got mat1 is on cpu, different from other tensors on cuda:0 (when checking argument in method wrapper_CUDA_addmm)"},
    {"id": "device_input_weight_type", "label": "device_mismatch", "source": "issue:https://github.com/kyegomez/LiqudNet/issues/7",
     "error_text": "  File \"/home/v/.local/lib/python3.10/site-packages/torch/nn/modules/conv.py\", line 459, in _conv_forward\n    return F.conv2d(input, weight, bias, self.stride,\nRuntimeError: Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same"},
    {"id": "dtype_cuda_half_conv", "label": "dtype_mismatch", "source": "issue:https://github.com/Yu-Fangxu/COLD-Attack/issues/20",
     "error_text": "  File \"/GitHub/COLD-Attack/bleuloss.py\", line 47, in batch_log_bleulosscnn_ae\n    term = nn.functional.conv2d(out, eye_filter)/ngram\nRuntimeError: Input type (torch.cuda.HalfTensor) and weight type (torch.cuda.FloatTensor) should be the same"},
    {"id": "dtype_expected_scalar_type", "label": "dtype_mismatch", "source": "issue:https://github.com/hiyouga/LlamaFactory/issues/1233",
     "error_text": "LLaMA-Efficient-Tuning/src/llmtuner/tuner/core/utils.py\", line 70, in forward\nreturn super().forward(x.to(input_dtype)).to(torch.float32)\nRuntimeError: expected scalar type Float but found Half"},
    {"id": "dtype_cudnn_backward", "label": "dtype_mismatch", "source": "issue:https://github.com/jik876/hifi-gan/issues/44",
     "error_text": "RuntimeError: Expected tensor for argument #1 'grad_output' to have the same type as tensor for argument #2 'weight'; but type torch.cuda.HalfTensor does not equal torch.cuda.FloatTensor (while checking arguments for cudnn_convolution_backward_input)"},
    {"id": "size_mismatch_m1_m2_1x", "label": "shape_mismatch", "source": "issue:https://github.com/pppLang/SKNet/issues/19",
     "error_text": "RuntimeError: size mismatch, m1: [12288 x 3], m2: [1024 x 196] at /pytorch/aten/src/THC/generic/THCTensorMathBlas.cu:290"},
    {"id": "keras_shapes_incompatible", "label": "shape_mismatch", "source": "issue:https://github.com/MiteshPuthran/Speech-Emotion-Analyzer/issues/52",
     "error_text": "ValueError: Shapes (None, 4) and (None, 10) are incompatible"},
    {"id": "lightning_few_workers", "label": "slow_throughput", "source": "issue:https://github.com/EveryVoiceTTS/EveryVoice/issues/173",
     "error_text": "/home/tes001/u/TxT2SPEECH/miniconda3_u20/envs/EveryVoice/lib/python3.9/site-packages/pytorch_lightning/trainer/connectors/data_connector.py:441: The 'val_dataloader' does not have many workers which may be a bottleneck. Consider increasing the value of the `num_workers` argument` to `num_workers=15` in the `DataLoader` to improve performance."},
]


def build_cases() -> list[dict]:
    import torch

    cases = []
    for name, (label, trigger, notes) in REAL_ERRORS.items():
        cases.append({"id": f"errors/{name}", "label": label, "error_text": capture(trigger),
                      "source": "training_run", "notes": f"{notes} (captured from torch {torch.__version__})"})
    for case in PUBLIC:
        cases.append({**case, "id": f"errors/{case['id']}"})
    return cases


def main() -> None:
    cases = build_cases()
    (HERE / "cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {HERE / 'cases.json'}")


if __name__ == "__main__":
    main()
