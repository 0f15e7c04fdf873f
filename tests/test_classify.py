"""classify: real logs in several formats -> ranked, explained diagnosis with tool calls an agent can follow."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import training_runs as tr
from hypothesis import given, settings
from hypothesis import strategies as st
from ml_debug_mcp.core.diagnosis.classify import CONFIRMED, classify, classify_path, classify_text, merge_hypotheses
from ml_debug_mcp.core.diagnosis.hypotheses import Diagnosis, Evidence, Hypothesis

# The MCP tools and the arguments they accept: every suggested call must fit these.
def _tool_arguments() -> dict[str, set[str]]:
    """Each tool's argument names, read from the real server: next_steps must be callable as given."""
    import anyio

    from ml_debug_mcp.server.app import create_server

    async def listing():
        return await create_server().list_tools()

    tools = anyio.run(listing)
    return ({t.name: set(t.input_schema.get("properties", {})) for t in tools},
            {t.name: set(t.input_schema.get("required", [])) for t in tools})


TOOL_ARGS, TOOL_REQUIRED = _tool_arguments()

OOM_TRACEBACK = """Traceback (most recent call last):
  File "/home/user/train.py", line 88, in <module>
    loss.backward()
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.65 GiB of which 1.12 GiB is free.
"""

# (run, formats, expected top-1)
FORMAT_CASES = [
    ("healthy", tr.FORMATS, "healthy"),
    ("lr_too_high_nan", ("hf", "jsonl", "csv", "nanogpt"), "nan_loss"),
    ("lr_too_high_divergence", ("csv", "kv"), "divergence"),
    ("overfitting", ("hf", "nanogpt"), "overfitting"),
    ("detached_graph", ("kv", "jsonl"), "vanishing_gradients"),
    ("deep_sigmoid", ("csv",), "vanishing_gradients"),
    ("shuffled_labels", ("hf",), "plateau"),
    ("rl_entropy_collapse", ("jsonl",), "mode_collapse"),
    ("rank_collapse", ("csv",), "rank_collapse"),
    ("slow_throughput", ("nanogpt",), "slow_throughput"),
    ("exploding_rnn", ("hf",), "exploding_gradients"),
]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classify_logs")
    for run_name, formats, _ in FORMAT_CASES:
        for fmt in formats:
            tr.write_log(tr.run(run_name), root / f"{run_name}.{fmt}.log", fmt)
    return root


def json_clean(d: Diagnosis) -> dict:
    return json.loads(json.dumps(d.model_dump(), allow_nan=False))


def check_next_steps(d: Diagnosis) -> None:
    for h in d.hypotheses:
        for step in h.next_steps:
            assert step.tool in TOOL_ARGS, step.tool
            assert set(step.arguments) <= TOOL_ARGS[step.tool], (step.tool, step.arguments)
            assert set(step.missing) >= TOOL_REQUIRED[step.tool] - set(step.arguments), (step.tool, step.missing)
            assert not set(step.missing) & set(step.arguments)
            assert step.why


def test_the_required_arguments_table_is_the_tools_schemas() -> None:
    from ml_debug_mcp.core.diagnosis.hypotheses import ONE_OF_ARGUMENTS, REQUIRED_ARGUMENTS

    assert {tool: set(args) for tool, args in REQUIRED_ARGUMENTS.items()} == {
        tool: required for tool, required in TOOL_REQUIRED.items() if required}
    assert all(set(options) <= TOOL_ARGS[tool] for tool, options in ONE_OF_ARGUMENTS.items())


def test_steps_the_server_cannot_complete_name_what_is_missing() -> None:
    d = classify_text("", error_text=OOM_TRACEBACK)  # no log path: tail_log cannot be pointed anywhere
    steps = [s for h in d.hypotheses for s in h.next_steps]
    check_next_steps(d)
    assert any(s.missing for s in steps)
    assert all("path" in s.missing for s in steps if s.tool == "tail_log")
    assert all("after_path" in s.missing for s in steps if s.tool == "compare_runs")


# ------------------------------------------------------------------------------------------------
# Real logs, every format


@pytest.mark.parametrize("run_name,fmt,expected", [(r, f, e) for r, fs, e in FORMAT_CASES for f in fs])
def test_classify_path_names_the_pathology(logs: Path, run_name: str, fmt: str, expected: str) -> None:
    d = classify_path(logs / f"{run_name}.{fmt}.log", log_path=f"runs/{run_name}.log")
    assert d.hypotheses and d.hypotheses[0].failure == expected, d.summary
    json_clean(d)
    check_next_steps(d)
    assert expected.split("_")[0] in d.summary or d.hypotheses[0].failure in d.summary


def test_a_confirmed_failure_ends_with_verify_journal_and_regression_test(logs: Path) -> None:
    d = classify_path(logs / "lr_too_high_nan.jsonl.log", log_path="runs/nan.log")
    top = d.hypotheses[0]
    assert top.confidence >= CONFIRMED and d.needs_more_evidence == []
    tools = [s.tool for s in top.next_steps]
    assert tools[-3:] == ["compare_runs", "write_journal", "create_smoke_test"]
    journal = top.next_steps[-2].arguments
    assert journal["title"].endswith(f"at step {top.onset_step:g}")
    assert journal["symptom"] and journal["root_cause"] and journal["fix"]
    assert top.next_steps[-1].arguments == {"path": "tests/test_nan_loss_regression.py", "failure": "nan_loss"}
    assert any(s.tool == "read_metrics" and s.arguments["path"] == "runs/nan.log" for s in top.next_steps)
    assert top.fixes and all(f.expected_effect for f in top.fixes), "catalogue fixes come with their expected effect"
    assert any("learning rate too high" in c for c in top.root_causes[:1]), "the run's own evidence picks the cause"


def test_weak_top_hypothesis_says_what_evidence_is_missing(logs: Path) -> None:
    tr.write_log(tr.run("hockey_stick"), logs / "hockey.csv", "csv")
    d = classify_path(logs / "hockey.csv")
    top = d.hypotheses[0]
    assert top.failure == "hockey_stick" and top.confidence < CONFIRMED
    assert d.needs_more_evidence
    assert any(note.startswith("Call ") for note in d.needs_more_evidence)
    assert "needs_more_evidence" in d.summary
    assert all(s.tool not in ("write_journal", "create_smoke_test") for s in top.next_steps)


def test_healthy_run_is_healthy_with_no_false_alarm(logs: Path) -> None:
    d = classify_path(logs / "healthy.hf.log")
    assert d.hypotheses[0].failure == "healthy"
    assert all(h.confidence < 0.5 for h in d.hypotheses[1:])
    assert d.summary.startswith("The run looks healthy")


def test_mechanism_outranks_the_symptom_it_explains(logs: Path) -> None:
    d = classify_path(logs / "deep_sigmoid.csv.log")
    ranked = [h.failure for h in d.hypotheses]
    assert ranked.index("vanishing_gradients") < ranked.index("plateau")
    assert any("explains the plateau" in e.text for e in d.hypotheses[0].evidence)


# ------------------------------------------------------------------------------------------------
# Errors in logs, error text, code


def test_traceback_at_the_end_of_a_log_is_found_with_its_file_line(tmp_path: Path) -> None:
    lines = [repr({"loss": 2.0 - 0.01 * i, "learning_rate": 1e-3, "epoch": i / 100}) for i in range(100)]
    path = tmp_path / "train.log"
    path.write_text("\n".join(lines + OOM_TRACEBACK.splitlines()) + "\n")
    d = classify_path(path)
    top = d.hypotheses[0]
    assert top.failure == "oom"
    oom_line = 100 + next(i for i, ln in enumerate(OOM_TRACEBACK.splitlines(), 1) if "OutOfMemoryError" in ln)
    assert any(e.kind == "error" and e.line_no == oom_line for e in top.evidence)
    assert any(s.tool == "gpu_status" for s in top.next_steps)


def test_independent_signals_for_one_failure_raise_confidence() -> None:
    series = {"loss": [[s, 2.0 - 0.005 * s] for s in range(1, 60)] + [[60, None], [61, None]]}
    error = "RuntimeError: Function 'LogBackward0' returned nan values in its 0th output."
    alone_series = classify(series=series).hypotheses[0]
    alone_error = classify(error_text=error).hypotheses[0]
    both = classify(series=series, error_text=error).hypotheses[0]
    assert alone_series.failure == alone_error.failure == both.failure == "nan_loss"
    assert both.confidence > max(alone_series.confidence, alone_error.confidence)
    assert {e.kind for e in both.evidence} >= {"metric", "error"}


def test_merge_keeps_one_hypothesis_per_failure_without_double_counting_one_source() -> None:
    a = Hypothesis(failure="divergence", confidence=0.6, evidence=[Evidence(kind="metric", metric="loss", text="a")])
    b = Hypothesis(failure="divergence", confidence=0.6, evidence=[Evidence(kind="metric", metric="loss", text="b")])
    c = Hypothesis(failure="divergence", confidence=0.6, evidence=[Evidence(kind="code", text="c")])
    same_source = merge_hypotheses([a, b])
    assert len(same_source) == 1 and same_source[0].confidence == 0.6
    assert [e.text for e in same_source[0].evidence] == ["a", "b"]
    assert merge_hypotheses([a, c])[0].confidence > 0.6


def test_code_scan_points_at_the_line_and_is_not_suggested_again(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\n"
        "def entropy(p):\n"
        "    return -(p * torch.log(p)).sum()\n"
        "for step in range(100):\n"
        "    loss = entropy(model(x))\n"
        "    loss.backward()\n"
        "    opt.step()\n"
        "    opt.zero_grad()\n")
    series = {"loss": [[s, 1.0] for s in range(1, 40)] + [[40, None]]}
    d = classify(series=series, code_path=script)
    top = d.hypotheses[0]
    assert top.failure == "nan_loss"
    assert any(e.kind == "code" and e.line_no == 3 for e in top.evidence)
    assert not any(s.tool == "classify_failure" for s in top.next_steps)


# ------------------------------------------------------------------------------------------------
# Bad input: honest answers, never an exception


@pytest.mark.parametrize("content", [b"", b"hello world\nthis is not a training log\n", b"{'loss': 2.3}\n",
                                     bytes(range(256)) * 8])
def test_no_usable_evidence_gives_no_healthy_claim(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "odd.log"
    path.write_bytes(content)
    d = classify_path(path)
    assert all(h.failure != "healthy" for h in d.hypotheses)
    assert d.hypotheses == []
    assert d.summary.startswith("Not enough evidence")
    assert d.needs_more_evidence
    json_clean(d)


def test_missing_file_and_directory_degrade_to_not_enough_evidence(tmp_path: Path) -> None:
    for path in (tmp_path / "not_there.log", tmp_path):
        d = classify_path(path)
        assert d.hypotheses == [] and d.summary.startswith("Not enough evidence")


def test_metrics_without_loss_say_so(tmp_path: Path) -> None:
    path = tmp_path / "lr_only.jsonl"
    path.write_text("\n".join(json.dumps({"step": s, "lr": 1e-3}) for s in range(1, 50)) + "\n")
    d = classify_path(path)
    assert d.hypotheses == [] and "no loss series" in " ".join(d.needs_more_evidence)


def test_nothing_at_all() -> None:
    d = classify()
    assert d.hypotheses == [] and d.needs_more_evidence


def test_contradictory_signals_do_not_claim_healthy() -> None:
    n = 200
    series = {"loss": [[s, 2.0 * math.exp(-s / 50) + 0.2] for s in range(1, n)],
              "grad_norm": [[s, 40.0 + (s % 5)] for s in range(1, n)]}
    d = classify(series=series)
    assert d.hypotheses[0].failure == "exploding_gradients"
    assert "healthy" not in [h.failure for h in d.hypotheses]


def test_malformed_series_and_unknown_format_are_caller_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be \\[step, value\\]"):
        classify(series={"loss": [[1, 2, 3]]})
    with pytest.raises(ValueError, match="must be numbers"):
        classify(series={"loss": [["a", "b"]]})
    with pytest.raises(ValueError, match="Unknown format"):
        classify_path(tmp_path / "x.log", fmt="no_such_format")


def test_series_input_uses_trainer_names_and_null_as_nan() -> None:
    d = classify(series={"train/loss": [[1, 2.0], [2, 1.9], [3, None]]})
    assert d.hypotheses[0].failure == "nan_loss" and d.hypotheses[0].onset_step == 3


def test_pasted_log_text_matches_the_file(logs: Path) -> None:
    path = logs / "overfitting.hf.log"
    from_text = classify_text(path.read_text())
    from_file = classify_path(path)
    assert [h.failure for h in from_text.hypotheses] == [h.failure for h in from_file.hypotheses]


def test_importing_classify_stays_light() -> None:
    code = ("import sys, ml_debug_mcp.core.diagnosis.classify, ml_debug_mcp.core.diagnosis.compare, ml_debug_mcp.core.diagnosis.evaluate;"
            "print(sorted(m for m in ('numpy', 'torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


_LOG_WORDS = st.sampled_from([
    "loss", "nan", "inf", "step", "lr", "grad_norm", "CUDA", "out of memory", "Traceback (most recent call last):",
    "RuntimeError:", "NCCL", "Killed", "exit code", "[rank1]:", "{'loss': ", "}", "=", ":", "|", "\n", "\r", " ",
    "1e999", "-0.0", "12", "3.5", "epoch", "eval_loss", "accuracy", "size mismatch", "shape", "[", "]"])
_LOG_SOUP = st.lists(_LOG_WORDS | st.text(max_size=5), max_size=300).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=_LOG_SOUP, error_text=st.none() | _LOG_SOUP)
def test_any_log_and_error_text_gives_a_json_clean_diagnosis(text: str, error_text: str | None) -> None:
    diagnosis = classify_text(text, error_text=error_text)
    json.dumps(diagnosis.model_dump(mode="json"), allow_nan=False)


def test_input_notes_say_how_steps_were_counted_and_that_the_code_did_not_parse(tmp_path: Path) -> None:
    hf = tr.write_log(tr.run("lr_too_high_nan"), tmp_path / "hf.log", "hf")
    assert any("count logged records" in n for n in classify_path(hf).input_notes)
    kv = tr.write_log(tr.run("lr_too_high_nan"), tmp_path / "kv.log", "kv")
    assert not any("count logged records" in n for n in classify_path(kv).input_notes)
    broken = tmp_path / "train.py"
    broken.write_text("import torch\nfor step in range(10)\n    loss.backward()\n")
    notes = classify_path(kv, code_path=broken).input_notes
    assert any(n.startswith("code_path: the file does not parse") for n in notes)


@pytest.mark.parametrize("text, reading", [
    ("Epoch 1/10 - loss: 0.41 - val_loss: 0.45\nEpoch 2/10 - loss: 0.35 - val_loss: 0.40\n", "healthy"),
    ("Epoch 1/10 - loss: 0.41 - val_loss: 0.45\nEpoch 2/10 - loss: nan - val_loss: nan\n", "nan_loss"),
    ("Epoch 1/10 - loss: 0.41 - val_loss: 0.45\n", None),
])
def test_two_finite_records_are_a_tentative_no_alarm_and_nothing_more(text: str, reading: str | None) -> None:
    """Two records cannot show a shape: only 'nothing alarming', far under the 0.5 veto, and only when
    nothing else was found; one record is no reading at all."""
    d = classify_text(text)
    top = d.hypotheses[0] if d.hypotheses else None
    assert (top.failure if top else None) == reading, d.summary
    if reading == "healthy":
        assert top.confidence < 0.5 and "too few records" in top.evidence[0].text
        assert d.summary.startswith("Nothing alarming, tentatively")
