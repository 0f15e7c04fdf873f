"""normalize: pasted decoration removed line by line, the line count kept, the trainer's text untouched."""

from __future__ import annotations

import pytest

from ml_debug_mcp.core.logs.normalize import clean_line, flatten, looks_decorated, normalize_text


@pytest.mark.parametrize("pasted, printed", [
    ("**RuntimeError: CUDA out of memory.** Tried to allocate 2.00 GiB",
     "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    ("> `torch.OutOfMemoryError: CUDA out of memory`", "torch.OutOfMemoryError: CUDA out of memory"),
    ("> > quoted twice: loss 0.5", "quoted twice: loss 0.5"),
    ("2023-05-01 12:34:56,789 - INFO - {'loss': 0.5, 'epoch': 1}", "{'loss': 0.5, 'epoch': 1}"),
    ("[2023-05-01 12:34:56] [INFO] [trainer.py:42] step 10 loss 2.3", "step 10 loss 2.3"),
    ("I0501 12:34:56.789012 12345 solver.cpp:228] Iteration 100, loss = 87.3365", "Iteration 100, loss = 87.3365"),
    ("[rank0]: RuntimeError: Expected all tensors to be on the same device",
     "RuntimeError: Expected all tensors to be on the same device"),
    ("[1,0]<stderr>:NCCL WARN timeout", "NCCL WARN timeout"),
    ("INFO:root:epoch 3 loss 1.2", "epoch 3 loss 1.2"),
    ("size mismatch &gt; copying a param<br>", "size mismatch > copying a param"),
    ("\x1b[31mValueError\x1b[0m: bad", "ValueError: bad"),
    (" 10%|█ | 10/100 [loss=2.3]\r 20%|██ | 20/100 [loss=2.1]", " 20%|██ | 20/100 [loss=2.1]"),
    ("```python", ""),
])
def test_decoration_is_removed(pasted: str, printed: str):
    assert clean_line(pasted) == printed


@pytest.mark.parametrize("line", [
    '  File "train.py", line 3, in <module>',
    "    self.__init__()",
    "TypeError: expected <class 'torch.Tensor'> but got <class 'list'>",
    "Epoch 1/10",
    "{'loss': 2.3, 'learning_rate': 5e-05, 'epoch': 0.1}",
    "step 100: train loss 2.31, val loss 2.40",
])
def test_the_trainers_own_text_is_left_alone(line: str):
    assert clean_line(line) == line
    assert not looks_decorated(line)


def test_line_count_and_offsets_survive():
    text = "```\n**a**\n> b\nc\n```"
    cleaned = normalize_text(text)
    assert cleaned.count("\n") == text.count("\n")
    assert cleaned.split("\n") == ["", "a", "b", "c", ""]
    flat = flatten("CUDA out of\nmemory")
    assert len(flat) == len("CUDA out of\nmemory") and "out of memory" in flat


def test_huge_lines_are_bounded():
    assert len(clean_line("x" * 1_000_000)) <= 20_000
