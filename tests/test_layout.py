"""The layout holds: imports run one way (tools → core; inside core, later stages → earlier ones),
core never imports mcp, one name per module, and the smoke-test templates are real, lint-clean files."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "core"

# What each part of core may import from core (besides itself). Stages run in decision-tree order.
LEAVES = {"paths", "safe_fs", "user_regex"}
ALLOWED: dict[str, set[str]] = {
    "paths": set(),
    "safe_fs": set(),
    "user_regex": set(),
    "plot": {"logs"},
    "logs": LEAVES,
    "diagnosis": LEAVES | {"logs", "plot"},
    "host": LEAVES | {"diagnosis"},
    "model": LEAVES | {"diagnosis"},
    "record": LEAVES | {"diagnosis", "model"},
    "probe": {"model"},  # the deprecated re-export of TrainingProbe
}
# Modules that exist twice on purpose: core/probe.py is the deprecated alias of core/model/probe.py.
ALIASES = {"probe"}


def part_of(module: str) -> str | None:
    """The part of core a dotted `ml_debug_mcp.core.<part>...` name belongs to, else None."""
    pieces = module.split(".")
    return pieces[2] if pieces[:2] == ["ml_debug_mcp", "core"] and len(pieces) > 2 else None


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Every absolute import in the source, at any depth (lazy imports inside functions count)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "ml_debug_mcp.core":  # `from ml_debug_mcp.core import plot`: the names are parts
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def layering_violations(core: Path) -> list[str]:
    """Imports inside `core` that run against the stage order, or that reach mcp, tools or server."""
    bad = []
    for file in sorted(core.rglob("*.py")):
        relative = file.relative_to(core)
        own = relative.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for line, module in imported_modules(file.read_text(encoding="utf-8")):
            where = f"core/{relative.as_posix()}:{line} imports {module}"
            root = module.split(".")[0]
            if root == "mcp" or root == "mcp_types" or module.startswith(("ml_debug_mcp.tools", "ml_debug_mcp.server")):
                bad.append(f"{where} (core never imports MCP, the tools or the server)")
                continue
            target = part_of(module)
            if target is None or target == own or target.startswith("__"):
                continue
            if target not in ALLOWED.get(own, set()):
                bad.append(f"{where} ({own} may import only {sorted(ALLOWED.get(own, set())) or 'nothing'} from core)")
    return bad


def test_core_imports_run_one_way():
    assert layering_violations(CORE) == []


@pytest.mark.parametrize("own, injected, why", [
    ("logs/tail.py", "from ml_debug_mcp.core.diagnosis.classify import classify", "logs may import only"),
    ("diagnosis/classify.py", "from ml_debug_mcp.core.model.worker import run_worker", "diagnosis may import only"),
    ("host/nvml.py", "    from ml_debug_mcp.core.record.journal import append_entry", "host may import only"),
    ("model/shapes.py", "import mcp.server", "core never imports MCP"),
    ("record/journal.py", "from mcp_types import TextContent", "core never imports MCP"),
    ("paths.py", "from ml_debug_mcp.tools._base import ToolEnv", "core never imports MCP, the tools"),
])
def test_the_layering_check_catches_an_import_against_the_direction(tmp_path: Path, own: str, injected: str,
                                                                     why: str):
    copy = tmp_path / "core"
    shutil.copytree(CORE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / own
    body = "\n\ndef _injected():\n" + (injected if injected.startswith(" ") else "    " + injected) + "\n"
    target.write_text(target.read_text(encoding="utf-8") + body, encoding="utf-8")
    found = layering_violations(copy)
    assert len(found) == 1 and why in found[0], found


def test_tools_import_core_and_never_the_server():
    for file in sorted((REPO / "tools").glob("*.py")):
        for line, module in imported_modules(file.read_text(encoding="utf-8")):
            assert not module.startswith("ml_debug_mcp.server"), f"tools/{file.name}:{line} imports {module}"


def test_every_stage_says_what_it_owns_and_may_import():
    for init in sorted(CORE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len(doc.split()) >= 30 and "import" in doc, f"{init.relative_to(REPO)} needs its one-paragraph map"


def test_no_two_modules_in_core_share_a_name():
    names: dict[str, list[str]] = {}
    for file in CORE.rglob("*.py"):
        if file.name != "__init__.py":
            names.setdefault(file.stem, []).append(file.relative_to(CORE).as_posix())
    twice = {name: places for name, places in names.items() if len(places) > 1 and name not in ALIASES}
    assert twice == {}


def test_the_old_training_probe_path_still_works_and_says_it_is_deprecated():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    from ml_debug_mcp.core.probe import TrainingProbe\n"
            "except DeprecationWarning as w:\n    print('warned:', w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "warned: ml_debug_mcp.core.probe is deprecated" in out.stdout, out.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ml_debug_mcp import TrainingProbe as new
        from ml_debug_mcp.core.probe import TrainingProbe as old
    assert old is new


# ------------------------------------------------------------------------------------------------
# The smoke-test templates are real files

TEMPLATES = CORE / "record" / "templates"


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if shutil.which("ruff") is None:
        pytest.fail("ruff is part of the test extra ([test]): pip install -e '.[test]'")
    return subprocess.run(["ruff", *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_every_template_file_parses_and_has_one_body():
    from ml_debug_mcp.core.record.templates import BODY_MARKER, source

    files = sorted(p for p in TEMPLATES.glob("*.py") if p.name != "__init__.py")
    assert len(files) >= 20
    for file in files:
        text = file.read_text(encoding="utf-8")
        ast.parse(text, filename=str(file))
        assert text.count("\n" + BODY_MARKER + "\n") == 1, f"{file.name}: one body marker line"
        ast.parse(source(file.stem), filename=f"{file.name} (body)")


def test_the_project_lints_clean():
    out = ruff("check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout[-4000:]


def test_every_rendered_smoke_test_lints_clean(tmp_path: Path):
    """A generated file has no undefined or unused names, for every failure and every way to load a factory."""
    from ml_debug_mcp.core.diagnosis.catalogue import FAILURE_IDS
    from ml_debug_mcp.core.record.smoke import Factory, render

    (tmp_path / "tests").mkdir()
    (tmp_path / "model.py").write_text("def make():\n    pass\n")
    loaders = [None, Factory(label="model.py:make", attribute="make", file=tmp_path / "model.py"),
               Factory(label="pkg.model:make", attribute="make", file=tmp_path / "model.py", module="pkg.model",
                       import_base=tmp_path)]
    for failure in FAILURE_IDS:
        for factory in loaders:
            _, text = render(failure, test_path=tmp_path / "tests" / "test_x.py", project=tmp_path, factory=factory)
            out = ruff("check", "--no-cache", "--isolated", "--select", "F", "--stdin-filename", "test_x.py", "-",
                       stdin=text)
            assert out.returncode == 0, f"{failure} ({factory and factory.label}):\n{out.stdout[-3000:]}"
