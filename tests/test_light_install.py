"""The light install: a fresh venv without torch runs the server and its log, GPU, diagnosis, journal
and compare tools through a real stdio client; the model tools find a torch interpreter or say what to pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

import training_runs

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
MODEL = "import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()), torch.randn(2, 8)\n"


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory) -> Path:
    """`pip install` of the built wheel into a venv that does not see this one's packages (pip's cache keeps it quick)."""
    work = tmp_path_factory.mktemp("light")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist"),
          str(REPO)])
    wheel = next((work / "dist").glob("ml_debug_mcp-*.whl"))
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], timeout=600)
    return venv


def _client(venv: Path, root: Path) -> Client:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return Client(StdioServerParameters(command=str(venv / "bin" / "ml-debug-mcp"), args=["--root", str(root)],
                                        env=env, cwd=str(root)), read_timeout_seconds=180)


def _text(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def test_the_base_install_has_no_torch_matplotlib_or_tensorboard(light_venv):
    probe = "import importlib.util as u; print([m for m in ('torch', 'matplotlib', 'tensorboard', 'safetensors') if u.find_spec(m)])"
    out = _run([str(light_venv / "bin" / "python"), "-c", probe]).stdout.strip()
    assert out == "[]", f"the light install pulled {out}"


async def test_tools_answer_without_torch(light_venv, tmp_path):
    root = tmp_path / "runs"
    training_runs.write_log(training_runs.run("lr_too_high_nan"), root / "nan" / "train.log", "hf")
    training_runs.write_log(training_runs.run("healthy"), root / "healthy" / "train.log", "hf")
    (root / "model.py").write_text(MODEL)
    async with _client(light_venv, root) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"tail_log", "classify_failure", "gpu_status", "write_journal", "compare_runs", "check_shapes"} <= names
        tail = await client.call_tool("tail_log", {"path": "nan/train.log", "lines": 20})
        assert not tail.is_error, _text(tail)
        assert tail.structured_content["lines"]
        classified = await client.call_tool("classify_failure", {"log_path": "nan/train.log"})
        assert not classified.is_error, _text(classified)
        assert classified.structured_content["hypotheses"][0]["failure"] == "nan_loss"
        gpu = await client.call_tool("gpu_status", {})
        assert not gpu.is_error, _text(gpu)
        journal = await client.call_tool("write_journal", {
            "path": "journal.md", "title": "nan at lr 1", "symptom": "loss NaN", "root_cause": "lr too high",
            "fix": "lr 1e-3", "resolution": "finite", "failure": "nan_loss"})
        assert not journal.is_error, _text(journal)
        assert (root / "journal.md").read_text().count("nan at lr 1") == 1
        compared = await client.call_tool("compare_runs", {"before_path": "nan/train.log",
                                                           "after_path": "healthy/train.log"})
        assert not compared.is_error, _text(compared)
        assert compared.structured_content["verdict"] in ("fixed", "improved_but_unverified")
        plot = await client.call_tool("read_metrics", {"path": "nan/train.log", "plot": True})
        assert plot.is_error and "ml-debug-mcp[plot]" in _text(plot)
        shapes = await client.call_tool("check_shapes", {"entrypoint": "model.py:make"})
        assert shapes.is_error
        message = _text(shapes)
        assert "--python" in message and str(light_venv / "bin" / "python") in message, message


async def test_model_tools_run_in_the_venv_inside_the_root(light_venv, tmp_path):
    """A root with its own .venv (here: a venv layout whose python is this test's, which has torch)."""
    from test_interpreter import fake_env

    root = tmp_path / "project"
    root.mkdir()
    exe = fake_env(root / ".venv")
    (root / "model.py").write_text(MODEL)
    async with _client(light_venv, root) as client:
        shapes = await client.call_tool("check_shapes", {"entrypoint": "model.py:make"})
    assert not shapes.is_error, _text(shapes)
    chosen = shapes.structured_content["interpreter"]
    assert chosen["source"] == "root_env" and chosen["python"] == str(exe)
    assert f"worker python: {exe}" in _text(shapes)
    assert shapes.structured_content["status"] == "ok"
