"""core.errors on the error texts trainers and launchers really print (tests/fixtures/logs/errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_debug_mcp.core.logs.error_blocks import MAX_BLOCK_CHARS, MAX_BLOCKS, extract_errors, extract_errors_text

ERRORS = Path(__file__).parent / "fixtures" / "logs" / "errors"


def errors_of(name: str):
    return extract_errors_text((ERRORS / name).read_text())


def test_chained_traceback_is_one_block_ending_at_the_last_exception():
    text = (ERRORS / "chained_traceback.log").read_text()
    [block] = extract_errors_text(text)
    assert block.kind == "python_traceback"
    assert block.exception_type == "RuntimeError" and block.message == "could not load shard-0042"
    lines = text.splitlines()
    assert lines[block.first_line - 1] == "Traceback (most recent call last):"
    assert block.last_line == len(lines)
    assert "KeyError: 'shard-0042'" in block.text and "During handling of the above exception" in block.text
    assert block.text.count("Traceback (most recent call last):") == 2


def test_direct_cause_chain():
    text = ("Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n    g()\nOSError: disk\n\n"
            "The above exception was the direct cause of the following exception:\n\n"
            "Traceback (most recent call last):\n  File \"a.py\", line 9, in <module>\n    f()\n"
            "ValueError: wrapped\nstep 3 | loss 1.0\n")
    [block] = extract_errors_text(text)
    assert block.exception_type == "ValueError" and "OSError: disk" in block.text
    assert block.last_line == 11  # stops before the next log record


def test_cuda_oom_traceback():
    [block] = errors_of("cuda_oom.log")
    assert block.kind == "cuda_oom"
    assert block.exception_type == "torch.OutOfMemoryError"
    assert block.message.startswith("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert block.first_line == 2


def test_device_side_assert_keeps_the_cuda_advice_and_the_kernel_assert():
    blocks = errors_of("device_assert.log")
    kinds = [b.kind for b in blocks]
    assert kinds == ["cuda_error", "cuda_error"]
    kernel, traceback = blocks
    assert "Assertion `t >= 0 && t < n_classes` failed" in kernel.message
    assert traceback.exception_type == "RuntimeError"
    assert traceback.message == "CUDA error: device-side assert triggered"
    assert "CUDA_LAUNCH_BLOCKING=1" in traceback.text and "TORCH_USE_CUDA_DSA" in traceback.text
    assert "step 56" not in traceback.text


def test_cublas_status_error():
    [block] = errors_of("cublas.log")
    assert block.kind == "cuda_error" and "CUBLAS_STATUS_EXECUTION_FAILED" in block.message


def test_nccl_watchdog_timeouts_from_two_ranks_fold_into_one():
    blocks = errors_of("nccl_timeout.log")
    timeout = next(b for b in blocks if b.kind == "nccl_timeout")
    assert timeout.repeats == 2 and timeout.rank == 1
    assert "Watchdog caught collective operation timeout" in timeout.message
    assert all(b.kind in ("nccl_timeout", "nccl_error") for b in blocks)


def test_killed_and_kernel_oom_killer():
    [killed] = errors_of("oom_killed.log")
    assert killed.kind == "oom_killed" and killed.first_line == 3
    dmesg = errors_of("dmesg_oom.log")
    assert [b.kind for b in dmesg] == ["oom_killed", "oom_killed"]
    assert "Killed process 4242 (python)" in dmesg[1].message


def test_torchrun_child_failed_summary():
    blocks = errors_of("child_failed.log")
    summary = next(b for b in blocks if b.kind == "torchrun_child_failed")
    assert summary.exception_type.endswith("ChildFailedError")
    assert "exitcode: -9" in summary.message and "Signal 9 (SIGKILL)" in summary.message
    assert summary.text.rstrip().endswith("=" * 60)
    assert "Root Cause (first observed failure):" in summary.text
    assert any(b.kind == "exit_code" for b in blocks)  # the agent's "failed (exitcode: -9)" line


def test_healthy_log_has_no_errors():
    # Mentions of "exit", "signal", "memory" and "status" in ordinary lines are not errors.
    assert errors_of("healthy.log") == []


@pytest.mark.parametrize("line, kind", [
    ("Segmentation fault (core dumped)", "signal"),
    ("Fatal Python error: Aborted", "signal"),
    ("subprocess.CalledProcessError: Command '['python', 'x.py']' returned non-zero exit status 1.", "exit_code"),
    ("Process finished with exit code 137", "exit_code"),
    ("RuntimeError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:275, unhandled cuda error", "nccl_error"),
    ("torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, internal error", "nccl_error"),
    ("RuntimeError: CUDA error: an illegal memory access was encountered", "cuda_error"),
])
def test_single_error_lines(line, kind):
    [block] = extract_errors_text(f"step 1 | loss 2.0\n{line}\nstep 2 | loss 1.0\n")
    assert block.kind == kind and block.first_line == block.last_line == 2


def test_zero_exit_code_is_not_an_error():
    assert extract_errors_text("Process finished with exit code 0\nexit status 0\n") == []


def test_interleaved_rank_tracebacks_stay_whole():
    lines = []
    for a, b in zip(["Traceback (most recent call last):", '  File "t.py", line 3, in <module>', "    step()",
                     "ValueError: rank zero broke"],
                    ["Traceback (most recent call last):", '  File "t.py", line 9, in <module>', "    sync()",
                     "KeyError: 'rank one broke'"]):
        lines += [f"[rank0]:{a}", f"[rank1]:{b}"]
    blocks = extract_errors(lines)
    assert sorted((b.rank, b.exception_type) for b in blocks) == [(0, "ValueError"), (1, "KeyError")]
    zero = next(b for b in blocks if b.rank == 0)
    assert zero.first_line == 1 and zero.last_line == 7
    assert "sync()" not in zero.text


def test_text_is_bounded_and_keeps_the_end():
    frames = "".join(f'  File "deep.py", line {i}, in f{i}\n    f{i + 1}()\n' for i in range(500))
    text = "Traceback (most recent call last):\n" + frames + "RecursionError: maximum recursion depth exceeded\n"
    [block] = extract_errors_text(text)
    assert block.text_truncated and len(block.text) <= MAX_BLOCK_CHARS
    assert block.text.rstrip().endswith("RecursionError: maximum recursion depth exceeded")
    assert block.exception_type == "RecursionError"


def test_number_of_blocks_is_bounded():
    names = [f"{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(200)]  # distinct beyond digits
    text = "\n".join(f"Traceback (most recent call last):\n  File \"x.py\", line {i}\nValueError: case {name}"
                     for i, name in enumerate(names))
    blocks = extract_errors_text(text)
    assert len(blocks) == MAX_BLOCKS
    assert blocks[-1].message == f"case {names[-1]}"  # the latest are kept


def test_repeats_differing_only_in_numbers_fold_into_the_first():
    text = "\n".join(f"[E ProcessGroupNCCL.cpp:616] [Rank {r}] Watchdog caught collective operation timeout: "
                     f"WorkNCCL(SeqNum={100 + r}) ran for {600000 + r} milliseconds before timing out." for r in range(8))
    [block] = extract_errors_text(text)
    assert block.repeats == 8 and "[Rank 0]" in block.message


def test_traceback_cut_by_the_window_is_still_reported():
    [block] = extract_errors_text('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n')
    assert block.kind == "python_traceback" and block.exception_type is None


def test_line_numbering_and_offsets_from_the_caller():
    lines = ["ok", "Killed"]
    [block] = extract_errors(lines, first_line_no=101, numbering="file", offsets=[500, 503])
    assert (block.first_line, block.numbering, block.first_offset) == (102, "file", 503)
