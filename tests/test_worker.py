"""The user-code worker: real subprocesses, real user files, the sandbox around them."""

from __future__ import annotations

import ast
import io
import os
import stat
import sys
from pathlib import Path

import pytest

from ml_debug_mcp.core.model import worker_main
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.core.model.sandbox import Policy
from ml_debug_mcp.core.model.worker import WorkerError, parse_entrypoint, resolve_entrypoint, run_worker

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"


def _task(attr: str, file: str = "misbehaving.py", **extra) -> dict:
    return {"op": "gradients", "entry": {"file": str(MODELS / file), "attr": attr}, **extra}


def _run(task: dict, **kw) -> dict:
    return run_worker(task, kw.pop("python", sys.executable), kw.pop("timeout", 60), kw.pop("memory_mb", 4096),
                      MODELS, **kw)


# ------------------------------------------------------------------------------------------------
# Entrypoints and the roots sandbox (no process needed)


@pytest.mark.parametrize("raw,words", [
    ("model.py", ["file.py:factory"]),
    ("model.py:", ["file.py:factory"]),
    (":make", ["file.py:factory"]),
    ("model.py:make-model", ["not a Python name"]),
    ("my-pkg.models:make", ["neither a .py file path nor a dotted module"]),
])
def test_malformed_entrypoints_say_the_expected_form(raw: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_entrypoint(raw)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_entrypoints_resolve_only_inside_the_roots(tmp_path: Path) -> None:
    second = tmp_path / "second-root"
    second.mkdir()
    (second / "notes.txt").write_text("not python")
    roots = Roots.from_strings([str(MODELS), str(second)])
    resolved = resolve_entrypoint(roots, "pathologies.py:healthy_mlp")
    assert resolved.task == {"file": str(MODELS / "pathologies.py"), "root": str(MODELS), "attr": "healthy_mlp"}
    assert resolved.cwd == MODELS
    module = resolve_entrypoint(roots, "zoo.nets:build")
    assert module.task == {"module": "zoo.nets", "file": str(MODELS / "zoo" / "nets.py"), "sys_path": str(MODELS),
                           "attr": "build"}

    outside = tmp_path / "evil.py"
    outside.write_text("def make():\n    pass\n")
    cases = {
        str(outside) + ":make": "outside the allowed roots",
        "../" * 8 + "etc/passwd.py:x": "outside the allowed roots",
        "missing.py:make": "does not exist",
        "zoo/:build": "is a directory",
        str(second / "notes.txt") + ":f": "not a .py file",
        "json:loads": "not inside the allowed roots",  # an installed module: project code only
    }
    for raw, expected in cases.items():
        with pytest.raises(ValueError) as info:
            resolve_entrypoint(roots, raw)
        assert expected in str(info.value), (raw, str(info.value))


# ------------------------------------------------------------------------------------------------
# The protocol, the environment and the limits (real subprocesses)


def test_stray_stdout_cannot_forge_or_break_the_result() -> None:
    # chatty() prints a fake marker line, 2 MB of text and a raw fd-1 write before building its model.
    result = _run(_task("chatty", steps=1))
    assert "forged" not in result
    assert [layer["name"] for layer in result["layers"]] == ["weight", "bias"]
    assert result["input_source"] == "the factory's batch"


def test_threads_left_running_by_user_code_do_not_hold_the_result() -> None:
    result = _run(_task("leaves_a_thread_running", steps=1), timeout=30)  # would time out if the worker waited
    assert [layer["name"] for layer in result["layers"]] == ["weight", "bias"]


def test_worker_environment_has_no_secrets_and_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_DEBUG_MCP_TOKEN", "server-token-0123456789")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("PIDFILE_DIR", str(tmp_path))
    _run(_task("reports_environment", steps=0),  # PIDFILE_DIR passes the allowlist as a --worker-env name
         policy=Policy(roots=(str(MODELS), str(tmp_path)), env_names=("PIDFILE_DIR",)))
    seen = ast.literal_eval((tmp_path / "env.txt").read_text())
    assert seen["ML_DEBUG_MCP_TOKEN"] is None and seen["HF_TOKEN"] is None
    assert seen["CUDA_VISIBLE_DEVICES"] == ""
    assert seen["HOME"] == os.environ.get("HOME")


def test_the_address_space_limit_is_enforced() -> None:
    # 8 GB of float32 would be granted without the limit (the allocation is lazy); under 1.5 GB it is refused.
    with pytest.raises(WorkerError) as info:
        _run(_task("allocates_too_much"), memory_mb=1536)
    assert info.value.kind == "memory"
    assert "1536 MiB" in str(info.value) and "misbehaving.py" in str(info.value)


def test_an_interpreter_without_torch_or_missing_is_named(tmp_path: Path) -> None:
    no_site = tmp_path / "python-no-site"
    no_site.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')  # -S: no site-packages, so no torch
    no_site.chmod(no_site.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(WorkerError) as info:
        _run(_task("chatty"), python=str(no_site))
    assert info.value.kind == "no_torch" and "--python" in str(info.value)
    with pytest.raises(WorkerError) as info:
        _run(_task("chatty"), python=str(tmp_path / "nope" / "python"))
    assert info.value.kind == "interpreter" and "ML_DEBUG_MCP_PYTHON" in str(info.value)


def test_progress_reports_the_phases() -> None:
    seen: list[str] = []
    _run({"op": "shapes", "entry": {"file": str(MODELS / "pathologies.py"), "attr": "bare_mlp"},
          "input_shapes": [[2, 16]]}, progress=lambda done, total, message: seen.append(message))
    assert "importing the entrypoint" in seen and "forward pass" in seen


# ------------------------------------------------------------------------------------------------
# The factory contract, exercised in this process (worker_main.run is what the subprocess runs)


def _in_process(task: dict) -> dict:
    return worker_main.run(task, worker_main.Channel(io.StringIO(), "marker"))


def test_package_modules_load_with_relative_imports_by_name_and_by_file() -> None:
    by_module = _in_process({"op": "shapes", "entry": {"module": "zoo.nets", "file": str(MODELS / "zoo" / "nets.py"),
                                                       "sys_path": str(MODELS), "attr": "build"}})
    by_file = _in_process({"op": "shapes", "entry": {"file": str(MODELS / "zoo" / "nets.py"), "attr": "build"}})
    for result in (by_module, by_file):
        assert result["failure"] is None and result["output"][0]["shape"] == [4, 2]


def test_loss_fn_and_multiple_inputs_follow_the_contract() -> None:
    with_loss = _in_process(_task("with_loss_fn", "pathologies.py", steps=2))
    assert with_loss["history"][0]["loss"] == pytest.approx(2.2829, rel=1e-3)  # mean |out - target| of the fixture
    tokens = _in_process(_task("two_inputs", "pathologies.py", input_shapes=[[4, 6], [4, 6, 1]],
                               dtypes=["int64", None], steps=1))
    assert {layer["name"] for layer in tokens["layers"]} == {"embed.weight", "proj.weight", "proj.bias"}
    assert all(layer["grad_norm"] > 0 for layer in tokens["layers"])


@pytest.mark.parametrize("attr,kind", [("returns_a_string", "factory_result"), ("raises", "factory_raised"),
                                       ("nope", "entry_attribute")])
def test_factory_mistakes_are_classified(attr: str, kind: str) -> None:
    with pytest.raises(worker_main.WorkerFailure) as info:
        _in_process(_task(attr))
    assert info.value.kind == kind


def test_a_model_without_inputs_asks_for_input_shapes() -> None:
    with pytest.raises(worker_main.WorkerFailure) as info:
        _in_process(_task("bare_mlp", "pathologies.py"))
    assert info.value.kind == "no_inputs"
