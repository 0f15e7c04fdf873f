"""write_journal and create_smoke_test through real MCP clients: from a bare log path to a journal entry
and a regression test that passes on the fixed model and fails on the buggy one."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client

import training_runs
from mcp_harness import stdio_client
from smoke_models import MODELS as SMOKE_MODELS
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = pytest.mark.anyio

# The shared fixed/buggy factories (a log of ReLU features without and with an epsilon, the CVFP context
# carried to the next call without detach()), under the names these tests call.
MODELS = SMOKE_MODELS + """
fixed, buggy, carried_buggy = nan_fixed, nan_buggy, graph_buggy
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    training_runs.write_log(training_runs.run("lr_too_high_nan"), tmp_path / "runs" / "train.log", "hf")
    (tmp_path / "model.py").write_text(MODELS)
    return tmp_path


def _server(root: Path, **settings):
    return create_server(Config(roots=Roots.from_strings([str(root)]), **settings))


def _text(result) -> str:
    return result.content[0].text


async def test_a_bare_log_path_leads_to_a_journal_entry_and_a_regression_test(project: Path):
    async with Client(_server(project)) as client:
        diagnosis = await client.call_tool("classify_failure", {"log_path": "runs/train.log"})
        top = diagnosis.structured_content["hypotheses"][0]
        assert top["failure"] == "nan_loss" and top["confidence"] >= 0.8
        steps = {step["tool"]: step["arguments"] for step in top["next_steps"]}

        journal = await client.call_tool("write_journal", steps["write_journal"])
        assert not journal.is_error, _text(journal)
        entry = journal.structured_content
        assert entry["entries"] == 1 and entry["heading"].endswith(steps["write_journal"]["title"])
        read_back = await client.read_resource("journal://journal.md")
        journal_text = read_back.contents[0].text
        assert entry["heading"] in journal_text and steps["write_journal"]["root_cause"] in journal_text
        assert f"journal://{entry['path']}" in _text(journal)

        smoke_args = {**steps["create_smoke_test"], "entrypoint": "model.py:fixed", "run": True}
        fixed = await client.call_tool("create_smoke_test", smoke_args)
        assert not fixed.is_error, _text(fixed)
        locked = fixed.structured_content
        assert (locked["template"], locked["outcome"], locked["ran"]) == ("finite_training", "passed", True), \
            locked["output_tail"]
        assert (project / steps["create_smoke_test"]["path"]).is_file()  # tests/ was created for it
        assert "It passes" in _text(fixed) and "2 passed" in _text(fixed)

        buggy = await client.call_tool("create_smoke_test", {**smoke_args, "path": "tests/test_nan_still_there.py",
                                                             "entrypoint": "model.py:buggy"})
    assert not buggy.is_error and buggy.structured_content["outcome"] == "failed"
    assert "look for log/div/sqrt without an epsilon" in buggy.structured_content["output_tail"]
    assert "It FAILS" in _text(buggy)


async def test_the_graph_reuse_test_fails_while_the_carried_context_is_not_detached(project: Path):
    async with Client(_server(project)) as client:
        buggy = await client.call_tool("create_smoke_test", {"path": "tests/test_cvfp_regression.py",
                                                             "failure": "graph_reuse", "run": True,
                                                             "entrypoint": "model.py:carried_buggy"})
    assert buggy.structured_content["outcome"] == "failed", buggy.structured_content["output_tail"]
    assert "backward through the graph a second time" in buggy.structured_content["output_tail"]
    assert "detach it at the iteration boundary" in _text(buggy)


async def test_concurrent_journal_calls_all_land(project: Path):
    async with Client(_server(project)) as client:
        async def write(n: int) -> None:
            result = await client.call_tool("write_journal", {
                "path": "notes/journal.md", "title": f"entry {n}", "symptom": "s", "root_cause": "r", "fix": "f",
                "resolution": "ok", "failure": "graph_reuse", "tags": ["cvfp"], "evidence": [f"seen {n}"]})
            assert not result.is_error, _text(result)

        (project / "notes").mkdir()
        async with anyio.create_task_group() as group:
            for n in range(8):
                group.start_soon(write, n)
    text = (project / "notes" / "journal.md").read_text()
    assert sorted(line.split("] - ")[1] for line in text.splitlines() if line.startswith("### [")) == \
        sorted(f"entry {n}" for n in range(8))


LONG = "x" * 4001


@pytest.mark.parametrize("tool, args, expected", [
    ("create_smoke_test", {"path": "../outside/test_x.py", "failure": "nan_loss"}, "outside the allowed roots"),
    ("create_smoke_test", {"path": "tests/test_x.py", "failure": "nan_everywhere"}, "nan_loss"),
    ("create_smoke_test", {"path": "tests/test_x.py", "failure": "nan_loss", "entrypoint": "no_colon"},
     "file.py:factory"),
    ("create_smoke_test", {"path": "tests/test_x.py", "failure": "nan_loss", "entrypoint": "missing.py:fixed"},
     "does not exist"),
    ("create_smoke_test", {"path": "tests/test_x.py", "failure": "nan_loss", "entrypoint": "model.py:not_there"},
     "defines no top-level 'not_there'"),
    ("create_smoke_test", {"path": "tests/regression.py", "failure": "nan_loss"}, "test_<name>.py"),
    ("create_smoke_test", {"path": "nested/deeper/test_x.py", "failure": "nan_loss"}, "does not exist"),
    ("create_smoke_test", {"path": "tests/test_x.py", "failure": "nan_loss", "input_shape": [0, 3]}, "input_shape"),
    ("write_journal", {"title": "t", "symptom": LONG, "root_cause": "r", "fix": "f", "resolution": "o"}, "4000"),
    ("write_journal", {"title": "t", "symptom": "s", "root_cause": "r", "fix": "f", "resolution": "o",
                       "path": "../journal.md"}, "outside the allowed roots"),
    ("write_journal", {"title": "t", "symptom": "s", "root_cause": "r", "fix": "f", "resolution": "o",
                       "path": "runs/train.log"}, "not a markdown file"),
    ("write_journal", {"title": "t", "symptom": "s", "root_cause": "r", "fix": "f", "resolution": "o",
                       "tags": ["two words"]}, "not a plain word"),
])
async def test_bad_input_is_a_clear_tool_error_and_writes_nothing(project: Path, tool: str, args: dict,
                                                                  expected: str):
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    async with Client(_server(project)) as client:
        result = await client.call_tool(tool, args)
    assert result.is_error and expected in _text(result), _text(result)
    assert "Traceback" not in _text(result)
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before


async def test_an_existing_test_file_is_kept_unless_overwrite_is_passed(project: Path):
    (project / "tests").mkdir()
    (project / "tests" / "test_mine.py").write_text("def test_mine():\n    pass\n")
    async with Client(_server(project)) as client:
        refused = await client.call_tool("create_smoke_test", {"path": "tests/test_mine.py", "failure": "plateau"})
    assert refused.is_error and "overwrite=true" in _text(refused) and "another path" in _text(refused)
    assert (project / "tests" / "test_mine.py").read_text() == "def test_mine():\n    pass\n"


async def test_a_hanging_test_times_out_and_the_server_keeps_serving(project: Path):
    async with Client(_server(project, worker_timeout=4)) as client:
        hung = await client.call_tool("create_smoke_test", {"path": "tests/test_hang.py", "failure": "oom",
                                                            "entrypoint": "model.py:hangs", "run": True})
        assert hung.is_error and "worker timeout (4 s)" in _text(hung) and "was written" in _text(hung)
        after = await client.call_tool("write_journal", {"title": "after the hang", "symptom": "s", "root_cause": "r",
                                                         "fix": "f", "resolution": "o"})
    assert not after.is_error and (project / "tests" / "test_hang.py").is_file()


async def test_write_journal_over_stdio(project: Path):
    async with stdio_client("--root", str(project)) as client:
        result = await client.call_tool("write_journal", {"title": "over stdio", "symptom": "s", "root_cause": "r",
                                                          "fix": "f", "resolution": "o"})
    assert not result.is_error and result.structured_content["created"]
    assert (project / "journal.md").read_text().count("### [") == 1


async def test_the_journal_resource_returns_every_entry_of_a_long_journal(project: Path):
    async with Client(_server(project)) as client:
        for i in range(30):
            result = await client.call_tool("write_journal", {
                "path": "journal.md", "title": f"entry {i}", "symptom": "loss NaN\n" * 5, "root_cause": "no eps",
                "fix": "eps", "resolution": "verified with compare_runs"})
            assert not result.is_error, _text(result)
        text = (await client.read_resource("journal://journal.md")).contents[0].text
    assert text.startswith("# Debugging journal") and "] - entry 0\n" in text and "] - entry 29\n" in text
