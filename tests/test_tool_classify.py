"""classify_failure and compare_runs end to end: real tiny training runs, real logs, real MCP clients."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from mcp import Client

import training_runs
from mcp_harness import stdio_client
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = pytest.mark.anyio

SHAPE_ERROR = """Traceback (most recent call last):
  File "train.py", line 41, in <module>
    logits = model(x)
RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x512 and 256x10)
"""

SYNC_SCRIPT = """\
import torch
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(100):
    opt.zero_grad()
    loss = model(torch.randn(4, 8)).pow(2).mean()
    loss.backward()
    opt.step()
    print(f"step {step} loss {loss.item()}")
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    training_runs.write_log(training_runs.run("lr_too_high_nan"), root / "nan" / "train.log", "hf")
    training_runs.write_log(training_runs.run("healthy"), root / "healthy" / "train.log", "hf")
    training_runs.write_log(training_runs.run("overfitting"), root / "overfit" / "metrics.jsonl", "jsonl")
    (root / "train.py").write_text(SYNC_SCRIPT)
    return root


def _server(root: Path):
    return create_server(Config(roots=Roots.from_strings([str(root)])))


async def test_a_bare_log_path_leads_to_diagnosis_with_evidence_and_next_steps(runs: Path):
    async with Client(_server(runs)) as client:
        result = await client.call_tool("classify_failure", {"log_path": "nan/train.log", "plot": True})
    assert not result.is_error, result.content
    top = result.structured_content["hypotheses"][0]
    assert top["failure"] == "nan_loss" and top["confidence"] >= 0.8
    assert any(e["step"] is not None and e["rule"] for e in top["evidence"])
    assert top["fixes"] and top["root_causes"]
    tools = [s["tool"] for s in top["next_steps"]]
    assert "write_journal" in tools and "create_smoke_test" in tools
    assert any(c.type == "image" and base64.b64decode(c.data).startswith(b"\x89PNG") for c in result.content)
    assert "nan_loss" in result.content[0].text


async def test_healthy_run_raises_no_alarm(runs: Path):
    async with Client(_server(runs)) as client:
        result = await client.call_tool("classify_failure", {"log_path": str(runs / "healthy" / "train.log")})
    hypotheses = result.structured_content["hypotheses"]
    assert hypotheses[0]["failure"] == "healthy"
    assert not [h for h in hypotheses if h["failure"] != "healthy" and h["confidence"] >= 0.5]


async def test_overfitting_from_a_jsonl_log_over_stdio(runs: Path):
    async with stdio_client("--root", str(runs)) as client:
        result = await client.call_tool("classify_failure", {"log_path": "overfit/metrics.jsonl"})
    assert result.structured_content["hypotheses"][0]["failure"] == "overfitting"


async def test_error_text_gets_the_numbers_explained(runs: Path):
    async with Client(_server(runs)) as client:
        result = await client.call_tool("classify_failure", {"error_text": SHAPE_ERROR})
    top = result.structured_content["hypotheses"][0]
    assert top["failure"] == "shape_mismatch"
    joined = " ".join(e["text"] for e in top["evidence"]) + " ".join(top["root_causes"])
    assert "256" in joined and "512" in joined
    assert any(s["tool"] == "check_shapes" for s in top["next_steps"])


async def test_code_scan_points_at_the_sync_point_line(runs: Path):
    async with Client(_server(runs)) as client:
        result = await client.call_tool("classify_failure", {"code_path": "train.py"})
    evidence = [e for h in result.structured_content["hypotheses"] for e in h["evidence"] if e["kind"] == "code"]
    assert any(e["line_no"] == 9 and ".item()" in e["text"] for e in evidence), evidence


async def test_series_argument_with_nulls_for_nan(runs: Path):
    series = {"loss": [[i, 2.0 - i * 0.01] for i in range(60)] + [[60, None], [61, None]]}
    async with Client(_server(runs)) as client:
        result = await client.call_tool("classify_failure", {"series": series})
    top = result.structured_content["hypotheses"][0]
    assert top["failure"] == "nan_loss" and top["onset_step"] == 60


async def test_no_evidence_at_all_is_not_called_healthy(runs: Path, tmp_path: Path):
    empty = runs / "empty.log"
    empty.write_text("")
    async with Client(_server(runs)) as client:
        nothing = await client.call_tool("classify_failure", {})
        blank = await client.call_tool("classify_failure", {"log_path": "empty.log"})
        one_line = await client.call_tool("classify_failure", {"log_text": "epoch 1 starting\n"})
    assert nothing.is_error and "log_path" in nothing.content[0].text
    for result in (blank, one_line):
        assert not result.is_error
        data = result.structured_content
        assert not data["hypotheses"] or data["hypotheses"][0]["failure"] != "healthy"
        assert data["needs_more_evidence"] and "evidence" in data["summary"].lower()


@pytest.mark.parametrize("args, expected", [
    ({"log_path": "../../etc/passwd"}, "outside the allowed roots"),
    ({"code_path": "missing.py"}, "does not exist"),
    ({"log_path": "nan/train.log", "format": "nope"}, "Unknown format"),
    ({"series": {"loss": [[1]]}}, "series"),
])
async def test_bad_input_is_a_clear_tool_error(runs: Path, args: dict, expected: str):
    async with Client(_server(runs)) as client:
        result = await client.call_tool("classify_failure", args)
    assert result.is_error and expected.lower() in result.content[0].text.lower()


async def test_compare_runs_says_whether_the_fix_worked(runs: Path):
    async with Client(_server(runs)) as client:
        fixed = await client.call_tool("compare_runs", {"before_path": "nan/train.log",
                                                        "after_path": "healthy/train.log"})
        same = await client.call_tool("compare_runs", {"before_path": "nan/train.log",
                                                       "after_path": "nan/train.log"})
        refused = await client.call_tool("compare_runs", {"before_path": "nan/train.log",
                                                          "after_path": "/etc/hostname"})
    data = fixed.structured_content
    assert data["verdict"] in ("fixed", "improved_but_unverified")
    assert "nan_loss" in data["resolved"] and data["evidence"]
    assert same.structured_content["verdict"] == "not_fixed"
    assert "nan_loss" in same.structured_content["persisting"]
    assert refused.is_error and "outside the allowed roots" in refused.content[0].text
