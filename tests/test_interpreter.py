"""Finding the user's training interpreter: real interpreters probed, a real running training process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ml_debug_mcp.core.host.processes import training_interpreters
from ml_debug_mcp.core.model.interpreter import Candidate, NoInterpreter, choose_interpreter, probe_torch
from ml_debug_mcp.core.paths import Roots


def fake_env(folder: Path, *python_args: str, conda: bool = False) -> Path:
    """A virtualenv layout whose bin/python runs a real interpreter (`-S` hides its site-packages, torch too)."""
    (folder / "bin").mkdir(parents=True)
    if conda:
        (folder / "conda-meta").mkdir()
    else:
        (folder / "pyvenv.cfg").write_text(f"home = {Path(sys.executable).parent}\n")
    exe = folder / "bin" / "python"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} {" ".join(python_args)} "$@"\n')
    exe.chmod(0o755)
    return exe


def no_torch_python(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "python-without-torch"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    exe.chmod(0o755)
    return exe


def test_configured_python_is_taken_as_given(tmp_path):
    choice = choose_interpreter(Roots.from_strings([str(tmp_path)]), "/opt/conda/bin/python", sys.executable)
    assert choice.source == "configured" and choice.python == "/opt/conda/bin/python"
    assert "--python" in choice.reason


def test_a_venv_inside_the_root_wins_over_the_server(tmp_path):
    exe = fake_env(tmp_path / ".venv")
    choice = choose_interpreter(Roots.from_strings([str(tmp_path)]), None, str(no_torch_python(tmp_path / "srv")))
    assert choice.source == "root_env" and choice.python == str(exe)
    assert choice.torch_version == torch.__version__ and "virtualenv" in choice.reason


def test_a_conda_env_under_envs_is_found(tmp_path):
    exe = fake_env(tmp_path / "envs" / "train", conda=True)
    choice = choose_interpreter(Roots.from_strings([str(tmp_path)]), None, str(no_torch_python(tmp_path / "srv")))
    assert choice.python == str(exe) and "conda env" in choice.reason


def test_envs_without_torch_are_passed_over_with_the_reason(tmp_path):
    fake_env(tmp_path / "venv", "-S")  # a venv whose interpreter cannot import torch
    choice = choose_interpreter(Roots.from_strings([str(tmp_path)]), None, sys.executable)
    assert choice.source == "server" and choice.python == sys.executable
    assert len(choice.passed_over) == 1 and "torch" in choice.passed_over[0]


def test_no_torch_anywhere_says_what_to_pass(tmp_path):
    fake_env(tmp_path / ".venv", "-S")
    server = no_torch_python(tmp_path / "srv")
    with pytest.raises(NoInterpreter) as info:
        choose_interpreter(Roots.from_strings([str(tmp_path)]), None, str(server))
    message = str(info.value)
    assert "--python" in message and "ML_DEBUG_MCP_PYTHON" in message and "ml-debug-mcp[torch]" in message
    assert str(server) in message and str(tmp_path / ".venv" / "bin" / "python") in message


def test_probe_is_cached_and_a_missing_interpreter_is_no_crash(tmp_path):
    first = probe_torch(sys.executable)
    started = time.monotonic()
    assert probe_torch(sys.executable) == first == (True, torch.__version__)
    assert time.monotonic() - started < 1.0  # the second answer comes from the cache, not another import
    ok, why = probe_torch(str(tmp_path / "nope" / "python"))
    assert not ok and "cannot be run" in why


def test_the_interpreter_of_a_running_training_process_inside_the_roots(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.py").write_text("import time\ntime.sleep(60)\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.Popen([sys.executable, "train.py"], cwd=run, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        found: list[tuple[str, str]] = []
        while time.monotonic() < deadline and not found:
            found = [f for f in training_interpreters(Roots.from_strings([str(run)])) if str(proc.pid) in f[1]]
            time.sleep(0.2)
        assert found and found[0][0] == sys.executable  # the venv path it was started with, not /proc's binary
        assert all(str(proc.pid) not in why for _, why in training_interpreters(Roots.from_strings([str(elsewhere)])))
        candidates = [Candidate(p, "training_process", why) for p, why in found]
        choice = choose_interpreter(Roots.from_strings([str(run)]), None, str(no_torch_python(tmp_path / "srv")),
                                    candidates)
        assert choice.source == "training_process" and f"process {proc.pid}" in choice.reason
    finally:
        proc.kill()
        proc.wait()


def test_probe_ignores_the_servers_own_settings(tmp_path, monkeypatch):
    """The probe runs with -E and the worker's environment: a PYTHONPATH of ours does not leak torch in."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    ok, _ = probe_torch(str(no_torch_python(tmp_path / "bare")))
    assert not ok
