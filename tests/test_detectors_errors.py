"""Error-text detectors: real PyTorch errors triggered here, verbatim public messages for GPU/NCCL/etc.,
and the unrelated errors and healthy logs that must stay unlabelled."""

from __future__ import annotations

import importlib.util
import json
import re
import traceback
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ml_debug_mcp.core.diagnosis.detectors import error_text as errors
from ml_debug_mcp.core.diagnosis.detectors.error_text import detect_errors

EVAL_DIR = Path(__file__).parent / "eval" / "errors"
FIXTURES = Path(__file__).parent / "fixtures" / "code"


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_error_cases", EVAL_DIR / "generate_error_cases.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
CASES = json.loads((EVAL_DIR / "cases.json").read_text())


def _top(text: str):
    hypotheses = detect_errors(text)
    assert hypotheses, f"nothing detected in:\n{text[-600:]}"
    return hypotheses[0]


def _explained(h) -> str:
    return " ".join(e.text for e in h.evidence) + " " + " ".join(h.root_causes)


# --- real errors, triggered now -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GEN.REAL_ERRORS))
def test_real_error_is_classified(name):
    label, trigger, _ = GEN.REAL_ERRORS[name]
    text = GEN.capture(trigger)
    top = _top(text)
    assert top.failure == label, [(h.failure, h.confidence) for h in detect_errors(text)]
    assert top.confidence >= 0.5
    assert top.fixes and top.root_causes and top.next_steps
    lines = text.splitlines()
    for ev in top.evidence:
        assert ev.kind == "error" and ev.rule and ev.rule.startswith("errors.")
        assert 1 <= ev.line_no <= len(lines)
        assert lines[ev.line_no - 1].strip()[:40] in ev.text  # the evidence quotes the line it points at


def _raise(fn) -> str:
    try:
        fn()
    except Exception:  # noqa: BLE001
        return traceback.format_exc()
    raise AssertionError("did not raise")


def test_linear_mismatch_names_the_feature_counts():
    text = _raise(lambda: nn.Linear(256, 10)(torch.randn(32, 512)))
    top = _top(text)
    assert top.failure == "shape_mismatch"
    assert "expects 256 input features but gets 512" in _explained(top)
    assert "the layer before it outputs 512" in _explained(top)
    assert any("nn.Linear(512, 10)" in f.action for f in top.fixes)
    assert [s.tool for s in top.next_steps] == ["check_shapes"]


def test_broadcast_batch_and_conv_numbers_are_explained():
    broadcast = _top(_raise(lambda: torch.randn(4, 3) + torch.randn(4, 5)))
    assert "dimension 1: 3 vs 5" in _explained(broadcast)
    batch = _top(_raise(lambda: F.cross_entropy(torch.randn(8, 10), torch.randint(0, 10, (4,)))))
    assert "8 rows but the targets have 4" in _explained(batch) and "2x as many rows" in _explained(batch)
    conv = _top(_raise(lambda: nn.Conv2d(3, 64, 3)(torch.randn(8, 1, 28, 28))))
    assert "expects 3 input channels" in _explained(conv) and "grayscale" in _explained(conv)
    nhwc = _top(_raise(lambda: nn.Conv2d(3, 8, 3)(torch.randn(2, 32, 32, 3))))
    assert "channels-last" in _explained(nhwc)
    assert any("permute(0, 3, 1, 2)" in f.action for f in nhwc.fixes)


def test_dtype_messages_say_which_types_and_why():
    half = _top(_raise(lambda: nn.Linear(3, 3)(torch.randn(2, 3).half())))
    assert half.failure == "dtype_mismatch" and "Half vs Float" in _explained(half)
    assert any("autocast" in f.action for f in half.fixes)
    double = _top(_raise(lambda: nn.Linear(3, 3)(torch.randn(2, 3, dtype=torch.float64))))
    assert "float64" in _explained(double) and any(".float()" in f.action for f in double.fixes)


def test_inplace_modification_names_tensor_op_and_versions():
    def inplace():
        a = torch.randn(10, 5, requires_grad=True)
        b = a.sigmoid()
        b.mul_(2)
        b.sum().backward()

    top = _top(_raise(inplace))
    assert top.failure == "graph_reuse"
    assert "[10, 5]" in _explained(top) and "Sigmoid" in _explained(top)
    assert "version 1" in _explained(top) and "version 0" in _explained(top)


def test_anomaly_mode_points_at_the_forward_line(tmp_path):
    script = tmp_path / "entropy_train.py"
    script.write_text(
        "import torch\n"
        "p = torch.tensor([0.0, 0.5, 0.5], requires_grad=True)\n"
        "with torch.autograd.detect_anomaly():\n"
        "    entropy = -(p * torch.log(p)).sum()\n"
        "    entropy.backward()\n"
    )
    text = GEN.capture(lambda: exec(compile(script.read_text(), str(script), "exec"), {}))
    top = _top(text)
    assert top.failure == "nan_loss" and top.confidence >= 0.9
    assert "LogBackward0" in _explained(top)
    assert f"{script}:4" in _explained(top) and "torch.log(p)" in _explained(top)
    assert any("clamp_min(1e-8)" in f.action for f in top.fixes)


def test_cpu_allocation_failure_reports_the_size():
    top = _top(_raise(lambda: torch.empty(2**45)))
    assert top.failure == "oom"
    assert "131072.00 GiB" in _explained(top) and "absurd" in _explained(top)
    assert top.evidence[0].value == pytest.approx(131072.0)


def test_ddp_with_unused_parameters_is_a_distributed_failure():
    top = _top(GEN.capture(GEN._ddp_unused_parameters))
    assert top.failure == "distributed_hang"
    assert any("find_unused_parameters=True" in f.action for f in top.fixes)



def test_matmul_dtype_messages_name_both_dtypes_and_which_operand_has_which():
    cuda = _top("RuntimeError: expected mat1 and mat2 to have the same dtype, but got: float != c10::Half\n")
    assert cuda.failure == "dtype_mismatch" and "Float vs Half" in _explained(cuda)
    assert "mat1 (a Linear's input, or the left operand of @) is float32" in _explained(cuda)
    assert "is float16: the model was cast with .half()" in _explained(cuda)
    assert any("autocast" in f.action for f in cuda.fixes)
    cpu = _top(_raise(lambda: torch.randn(2, 3) @ torch.randn(3, 2).half()))  # 'expected m1 and m2 ...' on CPU
    assert "Float vs Half" in _explained(cpu) and "vs c10" not in _explained(cpu)  # was "Float vs c10"
    ints = _top("RuntimeError: expected mat1 and mat2 to have the same dtype, but got: long int != float")
    assert "Long vs Float" in _explained(ints) and "is int64 but mat2" in _explained(ints)


DATALOADER_BUS_ERROR = (
    "RuntimeError: DataLoader worker (pid 8123) is killed by signal: Bus error. It is possible that dataloader's "
    "workers are out of shared memory. Please try to raise your shared memory limit."
)


def test_dataloader_bus_error_is_host_shared_memory_in_either_phrasing():
    for text, who in (
        (DATALOADER_BUS_ERROR, "DataLoader worker pid 8123 died of SIGBUS"),
        ("ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory "
         "(shm).", "a DataLoader worker died of SIGBUS"),
    ):
        top = _top(text)
        assert top.failure == "oom" and [e.rule for e in top.evidence] == ["errors.shared_memory"]
        assert who in _explained(top) and "/dev/shm" in _explained(top)
        assert "--shm-size" in top.fixes[0].action and "num_workers" in top.fixes[0].action


def test_other_worker_deaths_and_healthy_dtype_or_shm_lines_are_not_shared_memory():
    killed = _top("RuntimeError: DataLoader worker (pid 8123) is killed by signal: Killed.")
    assert [e.rule for e in killed.evidence] == ["errors.worker_killed"]
    assert detect_errors("RuntimeError: DataLoader worker (pid 8123) is killed by signal: Segmentation fault.") == []
    healthy = "autocast on: mat1 and mat2 are float16, same dtype; /dev/shm has 16 GB of shared memory\n"
    assert detect_errors(healthy) == []

# --- verbatim public messages ------------------------------------------------------------------------

PUBLIC = [c for c in CASES if c["source"].startswith("issue:")]


@pytest.mark.parametrize("case", PUBLIC, ids=[c["id"] for c in PUBLIC])
def test_public_message_is_classified(case):
    top = _top(case["error_text"])
    assert top.failure == case["label"] or top.failure in case.get("accept", [])


def _case(case_id: str) -> str:
    return next(c["error_text"] for c in CASES if c["id"] == f"errors/{case_id}")


def test_cuda_oom_numbers_and_advice():
    big = _top(_case("cuda_oom_larger_than_gpu"))
    assert "55.57 GiB" in _explained(big) and "larger than the whole GPU (12.00 GiB)" in _explained(big)
    fragmented = _top(_case("cuda_oom_fragmentation"))
    assert "fragmentation: 40.69 GiB" in _explained(fragmented)
    assert fragmented.fixes[0].action.startswith("Set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")
    assert "other processes" not in _explained(fragmented)  # the one listed process is this run itself
    shared = _top(_case("cuda_oom_other_processes"))
    assert "process 608946: 14.91 GiB" in _explained(shared) and "734147" not in " ".join(shared.root_causes)
    full = _top(_case("cuda_oom_2x"))
    assert "22.90 GiB of the GPU's 23.65 GiB (97%)" in _explained(full)
    assert full.root_causes[0].startswith("tensors already hold")
    assert "but unallocated, more than" not in _explained(full)  # 195 MiB unallocated on 24 GiB is not the story
    legacy = _top(_case("cuda_oom_1x"))
    assert "asked for 2.26 GiB on GPU 0; 6.00 GiB total; 3.03 GiB free" in _explained(legacy)
    assert [s.tool for s in full.next_steps][0] == "gpu_status"


def test_nccl_watchdog_explains_the_wait():
    top = _top(_case("nccl_watchdog_2x"))
    assert "ALLREDUCE #808 waited 600 s (timeout 600 s) on rank(s) 0, 1" in _explained(top)


def test_assert_kinds_are_told_apart():
    labels = _top(_case("assert_n_classes"))
    assert "class label is outside [0, n_classes)" in _explained(labels)
    embedding = _top(_case("assert_src_index_hf"))
    assert "vocab_size" in _explained(embedding) and "max_position_embeddings" in _explained(embedding)
    assert any("CUDA_LAUNCH_BLOCKING=1" in f.action for f in _top(_case("device_side_assert_only")).fixes)


def test_loss_scale_overflow_is_only_serious_when_it_persists():
    early = (
        "[2023-04-28 06:51:30,648] [INFO] [loss_scaler.py:181:update_scale] [deepspeed] OVERFLOW! Rank 0 "
        "Skipping step. Attempted loss scale: 65536, reducing to 32768\n"
        "{'loss': 2.0491, 'learning_rate': 0.0001961913563176343, 'epoch': 0.28}\n"
    )
    calibrating = _top(early)
    assert calibrating.failure == "nan_loss" and calibrating.confidence < 0.5
    assert "calibrating" in _explained(calibrating)
    collapsed = _top(_case("apex_overflow_to_half"))
    assert collapsed.confidence >= 0.8 and "fallen to 0.5" in _explained(collapsed)


def test_torchrun_sigkill_points_at_memory_first():
    found = {h.failure: h for h in detect_errors(GEN.capture(GEN._torchrun_sigkill))}
    assert found["oom"].confidence > found["distributed_hang"].confidence
    assert "ran out of memory" in found["distributed_hang"].root_causes[0]


def test_device_messages_extract_both_devices():
    top = _top(_case("device_two_devices"))
    assert "cuda:0 and on cpu (argument 'mat2')" in _explained(top)
    legacy = _top(_case("device_input_weight_type"))
    assert legacy.failure == "device_mismatch" and "on cuda" in _explained(legacy) and "on cpu" in _explained(legacy)


def test_paths_are_filled_into_next_steps():
    top = detect_errors(_case("cuda_oom_2x"), log_path="/runs/a/train.log")[0]
    tail = next(s for s in top.next_steps if s.tool == "tail_log")
    assert tail.arguments["path"] == "/runs/a/train.log" and tail.arguments["grep"] == "out of memory"
    graph = detect_errors("RuntimeError: Trying to backward through the graph a second time", code_path="train.py")[0]
    assert any(s.tool == "classify_failure" and s.arguments == {"code_path": "train.py"} for s in graph.next_steps)


def test_a_wrapped_message_is_still_recognised():
    wrapped = (
        "RuntimeError: Trying to backward through the graph a second time, but the\n"
        "buffers have already been freed. Specify retain_graph=True when calling\n"
        ".backward() or autograd.grad() the first time."
    )  # as quoted in the CVFP report
    assert _top(wrapped).failure == "graph_reuse"


def test_repeated_kernel_asserts_fold_into_one_piece_of_evidence():
    top = _top(_case("assert_n_classes"))
    assert len([e for e in top.evidence if e.rule.startswith("errors.assert_n_classes")]) == 1
    assert "matched 3 times" in next(e.rule for e in top.evidence if "assert_n_classes" in e.rule)


# --- must stay quiet --------------------------------------------------------------------------------


def _unrelated_errors() -> dict[str, str]:
    class BrokenDataset(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": torch.zeros(3)}["label"]

    return {
        "file_not_found": _raise(lambda: open("/nonexistent/checkpoints/last.pt")),
        "dataloader_key_error": _raise(lambda: next(iter(torch.utils.data.DataLoader(BrokenDataset(), batch_size=2)))),
        "module_not_found": _raise(lambda: __import__("definitely_not_installed_pkg")),
        "python_zero_division": _raise(lambda: 1 / 0),
        "torch_load_missing": _raise(lambda: torch.load("/nonexistent/model.pt")),
        "type_error": _raise(lambda: nn.Linear(3, 3)("not a tensor")),
        "no_cuda": "AssertionError: Torch not compiled with CUDA enabled",
        "no_kernel_image": "RuntimeError: CUDA error: no kernel image is available for execution on the device",
        "pip_download": "pip._vendor.urllib3.exceptions.ProtocolError: ('Connection aborted.', "
        "ConnectionResetError(104, 'Connection reset by peer'))",
        "hf_missing_inputs": "ValueError: You have to specify either input_ids or inputs_embeds",
    }


UNRELATED = _unrelated_errors()


@pytest.mark.parametrize("name", sorted(UNRELATED))
def test_unrelated_errors_get_no_label(name):
    assert detect_errors(UNRELATED[name]) == []


def test_healthy_training_logs_get_no_label(capsys):
    import importlib

    spec = importlib.util.spec_from_file_location("clean_train", FIXTURES / "clean_train.py")
    clean = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clean)
    clean.main(epochs=2)
    real_log = capsys.readouterr().out
    assert "loss" in real_log
    hf_style = "\n".join(
        f"{{'loss': {2.5 - i * 0.01:.4f}, 'grad_norm': 1.41, 'learning_rate': 2e-05, 'epoch': {i / 100:.2f}}}"
        for i in range(200)
    )
    lightning_style = (
        "Epoch 0:  10%|█         | 32/320 [00:02<00:21, 13.1it/s, loss=0.693, v_num=0]\n"
        "Epoch 3: 100%|██████████| 320/320 [00:21<00:00, 14.77it/s, loss=0.112, v_num=0, val_loss=0.130]\n"
        "`Trainer.fit` stopped: `max_epochs=4` reached.\n"
    )
    tricky = (
        "nan_count=0 inf_count=0 banana=3 finance=ok exit_code=0 killed_processes=0\n"
        "Processes killed: none. Loss is decreasing. Exited with code 0.\n"
    )
    for text in (real_log, hf_style, lightning_style, tricky, ""):
        assert detect_errors(text) == [], text[:200]


# --- mechanics ------------------------------------------------------------------------------------------


def test_only_the_tail_of_a_huge_text_is_scanned_and_line_numbers_stay_true(monkeypatch):
    monkeypatch.setattr(errors, "MAX_TEXT_CHARS", 2000)
    head = "RuntimeError: CUDA error: device-side assert triggered\n"
    filler = "".join(f"step {i} loss 0.5\n" for i in range(1000))
    tail = "RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x8 and 16x2)\n"
    hypotheses = detect_errors(head + filler + tail)
    assert [h.failure for h in hypotheses] == ["shape_mismatch"]  # the early assert is outside the window
    assert hypotheses[0].evidence[0].line_no == 1002


def test_every_anchor_is_contained_in_what_its_rule_matches():
    """The substring prefilter must never hide a match: check it against every case in the eval set."""
    corpus = [c["error_text"] for c in CASES]
    checked = 0
    for rule, regex, _, rule_anchors in errors._compiled():
        for text in corpus:
            for m in regex.finditer(text):
                if rule_anchors:
                    assert any(a in m.group(0).lower() for a in rule_anchors), (rule.name, m.group(0))
                    checked += 1
    assert checked > 50


def test_anchor_extraction_handles_optional_parts_and_alternatives():
    assert errors.anchors(r"(?<![A-Za-z])loss\b\s*(?:is|=)\s*nan") == ("loss",)
    assert errors.anchors(r"CUDA error: out of memory|HIP out of memory") == (
        "cuda error: out of memory",
        "hip out of memory",
    )
    assert errors.anchors(r"a (?:view of a )?leaf Variable") == ("leaf variable",)
    assert errors.anchors(r"\bab\b") == ()  # nothing long enough: the rule always runs
    for _, regex, _, rule_anchors in errors._compiled():
        assert re.compile(regex.pattern)  # every rule compiles
        assert all(a == a.lower() for a in rule_anchors)


def test_every_hypothesis_is_json_clean():
    for case in CASES:
        for h in detect_errors(case["error_text"], log_path="train.log", code_path="train.py"):
            json.dumps(h.model_dump(), allow_nan=False)
            assert 0.0 < h.confidence < 1.0


def test_every_error_failure_class_is_covered_by_the_eval_set():
    labels = {c["label"] for c in CASES}
    assert {
        "oom",
        "shape_mismatch",
        "graph_reuse",
        "device_mismatch",
        "dtype_mismatch",
        "cuda_assert",
        "distributed_hang",
        "nan_loss",
        "vanishing_gradients",
    } <= labels
    assert len(CASES) >= 35
    assert all(c["source"] in {"training_run"} or c["source"].startswith("issue:https://github.com/") for c in CASES)


def test_no_rule_backtracks_quadratically_on_long_runs_of_one_character():
    """Error text is user input: a rule whose time grows with the square of a line would freeze the server.

    Compared as a ratio in the same run (4x the input must cost well under 16x the time), not a limit.
    """
    import time

    from ml_debug_mcp.core.diagnosis.detectors import error_text as error_rules

    def cost(regex, text: str) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _match in regex.finditer(text):
                pass
            best = min(best, time.perf_counter() - start)
        return best

    quadratic = []
    for rule, regex, _requires, _anchors in error_rules._compiled():
        anchor = rule.grep or "x"
        for filler in (" ", "\t", "a", "0", ":", "=", "x "):
            small = cost(regex, anchor + filler * 2000 + "\n")
            large = cost(regex, anchor + filler * 8000 + "\n")
            if large > 0.005 and large / max(small, 1e-9) > 9:
                quadratic.append((rule.name, filler, round(large / small, 1)))
    assert not quadratic, quadratic
