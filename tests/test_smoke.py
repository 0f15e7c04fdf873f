"""Generated regression tests: valid for every failure, and real checks - each one passes on a fixed
model and fails on the same model with the bug put back, run by real pytest subprocesses."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ml_debug_mcp.core.diagnosis.catalogue import FAILURE_IDS
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.core.record.smoke import ALLOWED_IMPORTS, check_entrypoint, create_smoke_test, \
    make_tests_folder, project_dir, render, run_test, write_atomically
from ml_debug_mcp.core.record.templates import TEMPLATE_FOR_FAILURE, TEMPLATES

from smoke_models import MODELS

# failure -> (factory stem, text the buggy model's failure must contain)
PAIRS = {
    "nan_loss": ("nan", "at step 0: look for log/div/sqrt without an epsilon"),
    "graph_reuse": ("graph", "backward through the graph a second time"),
    "vanishing_gradients": ("flow", "no gradient reached: body.weight"),
    "exploding_gradients": ("explode", "the raw gradient norm reached"),
    "shape_mismatch": ("shape", "shapes cannot be multiplied (8x2 and 16x4)"),
    "dtype_mismatch": ("dtype", "dtype"),
    "device_mismatch": ("device", "is not on the expected device meta"),
    "cuda_assert": ("labels", "labels span [1, 4] but the model has 4 outputs"),
    "distributed_hang": ("ddp", "Expected to have finished reduction"),
    "oom": ("memory", "over the 64 MiB budget"),
    "plateau": ("plateau", "in 60 steps on one fixed batch"),
    "rank_collapse": ("rank", "the representations have collapsed"),
    "slow_throughput": ("sync", "models.py:"),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (root / "models.py").write_text(MODELS)
    (root / "zoo").mkdir()
    (root / "zoo" / "__init__.py").write_text("")
    (root / "zoo" / "layers.py").write_text("import torch\n\n\ndef block():\n    return torch.nn.Linear(16, 4)\n")
    (root / "zoo" / "nets.py").write_text("from .layers import block\n\n\ndef build():\n    return block()\n")
    (root / "tests").mkdir()
    return root


def _junit(folder: Path, cwd: Path) -> dict[str, tuple[str, str]]:
    """Run pytest on `folder`; {test file stem::test name: (outcome, failure text)}."""
    report = folder / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                    f"--confcutdir={cwd}", str(folder)], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                   timeout=240, check=False,
                   # one intra-op thread: tiny models gain nothing from more, and spinning threads on a busy
                   # machine make them far slower
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"})
    results = {}
    for case in ET.parse(report).iter("testcase"):
        stem = case.get("classname", "").rsplit(".", 1)[-1]
        problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if problem is None else problem.tag
        text = "" if problem is None else f"{problem.get('message', '')}\n{problem.text or ''}"
        results[f"{stem}::{case.get('name')}"] = (outcome, text)
    return results


# ------------------------------------------------------------------------------------------------
# Source checks (no process)


@pytest.mark.parametrize("failure", FAILURE_IDS)
def test_every_failure_renders_compiling_code_that_imports_only_torch_pytest_and_stdlib(project: Path, failure: str):
    factory = check_entrypoint(Roots.from_strings([str(project)]), "models.py:model_only")
    for made_by in (None, factory):
        template, source = render(failure, test_path=project / "tests" / "test_x.py", project=project,
                                  factory=made_by, input_shape=[8, 16])
        assert template.name == TEMPLATE_FOR_FAILURE[failure]
        tree = ast.parse(source)
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and node.module}
        assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS
        tests = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        assert tests, failure
        assert ("TODO: point it at your model" in source) is (made_by is None)
        assert ast.get_docstring(tree).startswith("Regression test for")


def test_a_file_inside_a_package_is_imported_by_its_dotted_name(project: Path):
    roots = Roots.from_strings([str(project)])
    by_file = check_entrypoint(roots, "zoo/nets.py:build")
    by_module = check_entrypoint(roots, "zoo.nets:build")
    assert (by_file.module, by_file.import_base) == ("zoo.nets", project)
    assert (by_module.module, by_module.import_base, by_module.file) == ("zoo.nets", project, project / "zoo" / "nets.py")
    assert check_entrypoint(roots, "models.py:nan_fixed").module is None


@pytest.mark.parametrize("raw, expected", [
    ("no_colon", "needs the form 'file.py:factory'"),
    ("missing.py:build", "does not exist"),
    ("models.py:not_there", "defines no top-level 'not_there'"),
    ("models.py:bad-name", "not a Python name"),
    ("json:loads", "not inside the allowed roots"),
    ("broken.py:build", "syntax error at line 1"),
])
def test_a_bad_entrypoint_is_refused_without_importing_it(project: Path, raw: str, expected: str):
    (project / "broken.py").write_text("def build(:\n")
    with pytest.raises(ValueError) as info:
        check_entrypoint(Roots.from_strings([str(project)]), raw)
    assert expected in str(info.value)


def test_the_factory_name_is_found_wherever_the_module_binds_it(tmp_path: Path):
    (tmp_path / "conditional.py").write_text(
        "import torch\ntry:\n    from fast import build\nexcept ImportError:\n    def build():\n"
        "        return torch.nn.Linear(2, 2)\nif True:\n    alias = build\n")
    (tmp_path / "star.py").write_text("from elsewhere import *\n")
    roots = Roots.from_strings([str(tmp_path)])
    for raw in ("conditional.py:build", "conditional.py:alias", "star.py:anything"):
        assert check_entrypoint(roots, raw).attribute == raw.split(":")[1]


# ------------------------------------------------------------------------------------------------
# Writing


def test_an_existing_file_is_never_overwritten_without_overwrite(tmp_path: Path):
    (tmp_path / "tests").mkdir()
    target = tmp_path / "tests" / "test_keep.py"
    target.write_text("# the user's own test\n")
    with pytest.raises(ValueError, match="already exists and was left untouched.*overwrite=true"):
        create_smoke_test(target, "nan_loss", root=tmp_path)
    assert target.read_text() == "# the user's own test\n"
    result = create_smoke_test(target, "nan_loss", root=tmp_path, overwrite=True)
    assert result.overwritten and target.read_bytes().startswith(b'"""Regression test for NaN')
    assert result.bytes_written == target.stat().st_size and not result.ran
    assert [p.name for p in target.parent.iterdir()] == ["test_keep.py"], "no temp file is left behind"


def test_the_no_clobber_write_refuses_a_name_that_appeared_meanwhile(tmp_path: Path):
    target = tmp_path / "test_race.py"
    write_atomically(target, "x = 1\n", overwrite=False)
    with pytest.raises(FileExistsError):
        write_atomically(target, "x = 2\n", overwrite=False)
    assert target.read_text() == "x = 1\n"


def test_only_a_missing_tests_folder_is_created(tmp_path: Path):
    assert make_tests_folder(tmp_path / "tests" / "test_a.py") and (tmp_path / "tests").is_dir()
    assert not make_tests_folder(tmp_path / "spec" / "test_a.py") and not (tmp_path / "spec").exists()
    assert not make_tests_folder(tmp_path / "a" / "tests" / "test_a.py") and not (tmp_path / "a").exists()


def test_pytest_runs_from_the_nearest_project_folder_inside_the_root(tmp_path: Path):
    (tmp_path / "sub" / "tests").mkdir(parents=True)
    (tmp_path / "sub" / "pyproject.toml").write_text("")
    assert project_dir(tmp_path / "sub" / "tests" / "test_a.py", tmp_path) == tmp_path / "sub"
    assert project_dir(tmp_path / "other" / "test_a.py", tmp_path) == tmp_path


# ------------------------------------------------------------------------------------------------
# Running the generated tests (real pytest subprocesses)


@pytest.fixture(scope="module")
def generated_runs(project: Path) -> dict[str, tuple[str, str]]:
    """One pytest run over every generated test: each template on its stand-in model, each failure's
    check on a fixed and a buggy factory, and a factory that returns only a model."""
    roots = Roots.from_strings([str(project)])
    stand_ins, pairs = project / "tests" / "stand_ins", project / "tests" / "pairs"
    stand_ins.mkdir()
    pairs.mkdir()
    for name in TEMPLATES:
        failure = next(f for f, t in TEMPLATE_FOR_FAILURE.items() if t == name)
        create_smoke_test(stand_ins / f"test_{name}.py", failure, root=project)
    for failure, (stem, _) in PAIRS.items():
        for variant in ("fixed", "buggy", "fixed_step", "buggy_step", "fixed_loss", "buggy_loss"):
            target = pairs / f"test_{failure}_{variant}.py"
            create_smoke_test(target, failure, root=project,
                              factory=check_entrypoint(roots, f"models.py:{stem}_{variant}"))
            if failure == "oom":  # the budget is the user's to set; the fixed step needs ~10 MiB
                target.write_text(target.read_text().replace("MEMORY_BUDGET_MB = 2048.0", "MEMORY_BUDGET_MB = 64.0"))
    # A factory that returns only the model gets a random batch of input_shape.
    create_smoke_test(pairs / "test_model_only.py", "shape_mismatch", root=project, input_shape=[5, 16],
                      factory=check_entrypoint(roots, "models.py:model_only"))
    # A package module with a relative import, named by module and by file.
    for name, raw in (("by_module", "zoo.nets:build"), ("by_file", "zoo/nets.py:build")):
        create_smoke_test(pairs / f"test_package_{name}.py", "vanishing_gradients", root=project,
                          factory=check_entrypoint(roots, raw))
    return _junit(project / "tests", project)


def test_every_template_passes_on_its_tiny_stand_in_model(generated_runs: dict[str, tuple[str, str]]):
    stand_ins = {key: outcome for key, (outcome, _) in generated_runs.items()
                 if key.split("::")[0] in {f"test_{name}" for name in TEMPLATES}}
    assert {key.split("::")[0] for key in stand_ins} == {f"test_{name}" for name in TEMPLATES}
    bad = {key: outcome for key, outcome in stand_ins.items() if outcome not in ("passed", "skipped")}
    assert not bad, bad
    skipped = [key for key, outcome in stand_ins.items() if outcome == "skipped"]
    assert skipped == ["test_no_host_sync::test_training_step_runs_under_cuda_sync_debug_mode_error"]


@pytest.mark.parametrize("form", ["", "_step", "_loss"])
def test_each_check_passes_on_the_fixed_model_and_fails_on_the_buggy_one(generated_runs: dict[str, tuple[str, str]],
                                                                         form: str):
    """Every factory form: no loss_fn (the default loss), step(model, batch) and loss(output, target)."""
    for failure, (_, message) in PAIRS.items():
        fixed = {k: v for k, v in generated_runs.items() if k.startswith(f"test_{failure}_fixed{form}::")}
        buggy = {k: v for k, v in generated_runs.items() if k.startswith(f"test_{failure}_buggy{form}::")}
        outcomes = [outcome for outcome, _ in fixed.values()]
        assert "passed" in outcomes and set(outcomes) <= {"passed", "skipped"}, (failure, fixed)
        failed = [text for outcome, text in buggy.values() if outcome in ("failure", "error")]
        assert failed, (failure, buggy)
        assert any(message in text for text in failed), (failure, message, failed)


def test_a_factory_that_returns_only_a_model_gets_a_batch_of_input_shape(project: Path,
                                                                         generated_runs: dict[str, tuple[str, str]]):
    assert "INPUT_SHAPE = (5, 16)" in (project / "tests" / "pairs" / "test_model_only.py").read_text()
    assert generated_runs["test_model_only::test_forward_keeps_the_batch_dimension"][0] == "passed"


def test_a_factory_in_a_package_is_imported_with_its_relative_imports(generated_runs: dict[str, tuple[str, str]]):
    for name in ("by_module", "by_file"):
        outcomes = {k: v[0] for k, v in generated_runs.items() if k.startswith(f"test_package_{name}::")}
        assert outcomes and set(outcomes.values()) == {"passed"}, outcomes


@pytest.mark.parametrize("body, outcome", [("os._exit(0)", "error"), ("assert True", "passed")])
def test_a_test_that_ends_the_interpreter_early_is_no_pass(tmp_path: Path, body: str, outcome: str):
    """pytest exits 0 when a test calls os._exit(0): only pytest's own end-of-run mark makes a pass."""
    test = tmp_path / "test_ends_early.py"
    test.write_text(f"import os\n\n\ndef test_it():\n    {body}\n")
    result = run_test(test, cwd=tmp_path, python=sys.executable, timeout=120)
    assert (result.returncode, result.outcome) == (0, outcome), result.output_tail
    assert ("before pytest finished" in result.output_tail) == (outcome == "error")
    assert "ml-debug-mcp:pytest-exit" not in result.output_tail
