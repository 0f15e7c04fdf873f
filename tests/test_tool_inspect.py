"""analyze_gradients and check_shapes through real MCP clients, real workers, real user files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from mcp import Client
from safetensors.torch import save_file
from torch import nn

from mcp_harness import stdio_client
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.core.model.probe import TrainingProbe
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = pytest.mark.anyio
MODELS = Path(__file__).resolve().parent / "fixtures" / "models"


def _server(*roots: Path, **settings):
    return create_server(Config(roots=Roots.from_strings([str(r) for r in roots]), **settings))


def _text(result) -> str:
    return result.content[0].text


def _write_probe_stats(folder: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with TrainingProbe(model, folder, every=2) as probe:
        for _ in range(10):
            opt.zero_grad()
            loss = model(torch.randn(32, 8)).pow(2).mean()
            loss.backward()
            probe.step(opt, loss=loss)
            opt.step()
    return folder / "grad_stats.jsonl"


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"  # killed, waiting to be reaped
    except FileNotFoundError:
        return True


async def test_each_user_code_failure_is_a_clear_error_and_the_server_keeps_serving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIDFILE_DIR", str(tmp_path))
    stats = _write_probe_stats(tmp_path)
    failures = {
        "segfault": ["segmentation fault (SIGSEGV)", "misbehaving.py", "in segfault", "server is unaffected"],
        "exits": ["sys.exit(3)", "misbehaving.py", "in exits"],
        "allocates_too_much": ["ran out of memory", "1536 MiB", "--worker-memory-mb"],
        "raises": ["KeyError", "'hidden_size'", "misbehaving.py", "config[\"hidden_size\"]"],
        "returns_a_string": ["returned a builtins.str", "returns model, (model, batch) or (model, batch, loss_fn)", "Example:"],
        "nope": ["has no attribute 'nope'", "segfault", "spins_with_child"],
        "spins_with_child": ["did not finish within 20 s", "killed with everything it started", "--worker-timeout"],
    }
    async with Client(_server(MODELS, tmp_path, worker_timeout=20, worker_memory_mb=1536,
                              worker_env=("PIDFILE_DIR",))) as client:  # PIDFILE_DIR passes the allowlist
        for attr, words in failures.items():
            result = await client.call_tool("analyze_gradients", {"entrypoint": f"misbehaving.py:{attr}"})
            text = _text(result)
            assert result.is_error and result.structured_content is None, attr
            assert all(w in text for w in words), (attr, text)
            assert "Traceback (most recent call last)" not in text and "internal error" not in text, text
            alive = await client.call_tool("analyze_gradients", {"stats_path": str(stats)})
            assert not alive.is_error, (attr, _text(alive))
        child = int((tmp_path / "child.pid").read_text())
        assert _process_gone(child), "the timed-out worker's child process survived"
        ok = await client.call_tool("analyze_gradients", {"entrypoint": "pathologies.py:healthy_mlp", "steps": 2})
    assert not ok.is_error and ok.structured_content["verdict"] == "healthy"


async def test_analyze_gradients_names_the_broken_layer_and_stays_quiet_on_a_healthy_model() -> None:
    async with Client(_server(MODELS)) as client:
        healthy = await client.call_tool("analyze_gradients", {"entrypoint": "pathologies.py:healthy_mlp",
                                                                "steps": 3, "optimizer": "sgd", "lr": 0.05})
        broken = await client.call_tool("analyze_gradients", {"entrypoint": "pathologies.py:detached_encoder"})
    assert not healthy.is_error, _text(healthy)
    report = healthy.structured_content["reports"][0]
    assert healthy.structured_content["verdict"] == "healthy" and report["band_counts"] == {"healthy": 6}
    assert report["settings"]["optimizer"] == "sgd" and report["settings"]["inputs"] == "the factory's batch"
    assert "Verdict: healthy" in _text(healthy) and "update ratio" in _text(healthy)

    report = broken.structured_content["reports"][0]
    assert broken.structured_content["verdict"] == "vanishing_gradients"
    assert report["first_bad_layer"] == "encoder"
    text = _text(broken)
    assert "first bad layer encoder (Linear)" in text and "MISSING" in text and "detach" in text


async def test_check_shapes_explains_the_mismatch_and_traces_package_entrypoints() -> None:
    async with Client(_server(MODELS)) as client:
        wrong = await client.call_tool("check_shapes", {"entrypoint": "pathologies.py:wrong_in_features",
                                                        "input_shapes": [[8, 3, 16, 16]]})
        package = await client.call_tool("check_shapes", {"entrypoint": "zoo.nets:build"})
        single = await client.call_tool("check_shapes", {"entrypoint": "pathologies.py:conv_bn",
                                                         "input_shapes": [[1, 3, 8, 8]]})
    assert single.structured_content["status"] == "ok" and len(single.structured_content["notes"]) == 1
    assert "NOTE: Batch size 1 reaches BatchNorm layers (1)" in _text(single)
    assert not wrong.is_error  # a failing forward is the finding, not a tool error
    failure = wrong.structured_content["failure"]
    assert failure["module_repr"] == "Linear(in_features=256, out_features=10, bias=True)"
    text = _text(wrong)
    assert text.startswith("SHAPE CHECK FAILED: Linear '3' expects 256 input features")
    assert "Flatten '2', outputs [8, 512]" in text and "RAISED" in text and "Conv2d" in text
    assert package.structured_content["status"] == "ok"
    assert package.structured_content["output"][0]["shape"] == [4, 2]


async def test_checkpoints_and_probe_statistics_through_the_tool(tmp_path: Path) -> None:
    torch.manual_seed(0)
    before = {"encoder.weight": torch.randn(16, 16), "head.weight": torch.randn(4, 16)}
    after = {"encoder.weight": before["encoder.weight"].clone(), "head.weight": before["head.weight"] * 1.002}
    save_file(before, tmp_path / "step100.safetensors")
    save_file(after, tmp_path / "step101.safetensors")
    torch.save({"model": before, "args": argparse.Namespace(lr=0.1)}, tmp_path / "full.pt")
    stats = _write_probe_stats(tmp_path / "run")
    async with Client(_server(tmp_path)) as client:
        both = await client.call_tool("analyze_gradients", {
            "checkpoint": "step100.safetensors", "checkpoint_after": "step101.safetensors", "steps_between": 1,
            "stats_path": str(stats.relative_to(tmp_path))})
        unsafe = await client.call_tool("analyze_gradients", {"checkpoint": "full.pt",
                                                              "checkpoint_after": "step101.safetensors"})
    assert not both.is_error, _text(both)
    checkpoints, probe = both.structured_content["reports"]
    assert checkpoints["source"] == "checkpoints" and probe["source"] == "probe_stats"
    layers = {layer["name"]: layer for layer in checkpoints["layers"]}
    assert layers["encoder.weight"]["band"] == "frozen" and layers["head.weight"]["band"] == "healthy"
    assert layers["head.weight"]["update_ratio"] == pytest.approx(0.002, rel=1e-3)
    assert checkpoints["verdict"] == "vanishing_gradients" and probe["verdict"] == "healthy"
    assert both.structured_content["verdict"] == "vanishing_gradients"
    assert "[checkpoint pair]" in _text(both) and "[probe statistics]" in _text(both)
    assert unsafe.is_error
    assert "Refusing to load" in _text(unsafe) and "argparse.Namespace" in _text(unsafe)
    assert "weights_only=True" in _text(unsafe)


@pytest.mark.parametrize("tool,arguments,words", [
    ("analyze_gradients", {}, ["at least one source"]),
    ("analyze_gradients", {"checkpoint": "a.safetensors"}, ["in pairs", "checkpoint_after"]),
    ("analyze_gradients", {"input_shapes": [[2, 16]]}, ["pass the entrypoint"]),
    ("analyze_gradients", {"entrypoint": "pathologies.py"}, ["'file.py:factory'"]),
    ("analyze_gradients", {"entrypoint": "/etc/hosts.py:make"}, ["outside the allowed roots"]),
    ("analyze_gradients", {"entrypoint": "missing.py:make"}, ["does not exist"]),
    ("analyze_gradients", {"entrypoint": "os.path:join"}, ["not inside the allowed roots"]),
    ("analyze_gradients", {"entrypoint": "pathologies.py:bare_mlp", "steps": 51}, ["steps"]),
    ("analyze_gradients", {"entrypoint": "pathologies.py:bare_mlp", "steps": -1}, ["steps"]),
    ("analyze_gradients", {"entrypoint": "pathologies.py:bare_mlp", "lr": 0}, ["lr"]),
    ("analyze_gradients", {"entrypoint": "pathologies.py:bare_mlp", "input_shapes": [[0, 16]]}, ["positive integer"]),
    ("analyze_gradients", {"stats_path": "../../etc/passwd"}, ["outside the allowed roots"]),
    ("check_shapes", {"entrypoint": "pathologies.py:bare_mlp", "input_shapes": [[100000, 100000]]}, ["cap"]),
    ("check_shapes", {"entrypoint": "pathologies.py:bare_mlp", "input_shapes": [[2, 16]], "dtype": "quaternion"},
     ["Unknown dtype"]),
])
async def test_bad_arguments_are_refused_before_any_worker_starts(tool: str, arguments: dict, words: list[str]) -> None:
    async with Client(_server(MODELS)) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert all(w in _text(result) for w in words), _text(result)


async def test_the_installed_server_runs_the_worker_over_stdio(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text((MODELS / "pathologies.py").read_text())
    async with stdio_client("--root", str(tmp_path)) as client:
        result = await client.call_tool("check_shapes", {"entrypoint": "model.py:bare_mlp", "input_shapes": [[3, 16]]})
    assert not result.is_error, _text(result)
    assert result.structured_content["output"][0]["shape"] == [3, 4]
    assert not (tmp_path / "__pycache__").exists()  # the worker runs with -B: nothing written next to user code


MODEL_FILE = "import torch\n\ndef make():\n    return torch.nn.Linear(4, 2)\n"


async def test_no_code_above_the_root_runs_when_the_entrypoint_sits_in_a_package(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    project = outer / "proj"
    project.mkdir(parents=True)
    marker = tmp_path / "OUTSIDE_CODE_RAN"
    (outer / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (project / "__init__.py").write_text("")
    (project / "model.py").write_text(MODEL_FILE)
    async with Client(_server(project)) as client:
        result = await client.call_tool("check_shapes", {"entrypoint": "model.py:make", "input_shapes": [[3, 4]]})
    assert not result.is_error, result.content[0].text
    assert not marker.exists(), "an __init__.py outside the roots was imported"


async def test_a_module_name_that_resolves_outside_the_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text(MODEL_FILE)
    async with Client(_server(tmp_path)) as client:
        shadowed = await client.call_tool("check_shapes", {"entrypoint": "json:make", "input_shapes": [[3, 4]]})
        by_file = await client.call_tool("check_shapes", {"entrypoint": "json.py:make", "input_shapes": [[3, 4]]})
    assert shadowed.is_error and "standard library" in shadowed.content[0].text
    assert not by_file.is_error, by_file.content[0].text
