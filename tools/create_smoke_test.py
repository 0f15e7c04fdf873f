"""create_smoke_test: write (and optionally run) a pytest regression test for a diagnosed failure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.diagnosis.catalogue import FailureId
from ml_debug_mcp.core.paths import PathOutsideRoots, Roots
from ml_debug_mcp.core.record.smoke import MAX_INPUT_DIMS, SmokeTestResult
from ml_debug_mcp.core.model.interpreter import InterpreterChoice
from ml_debug_mcp.tools._base import WRITES_FILES, ToolEnv, effective_roots, interpreter_line, resolve_path_now, \
    run_blocking, sandbox_line, tool_result, translate_errors, worker_interpreter

MAX_OUTPUT_LINES_IN_SUMMARY = 25


def summarize(result: SmokeTestResult) -> str:
    lines = [result.summary]
    lines += [f"note: {w}" for w in result.warnings]
    lines += [line for line in [interpreter_line(result.interpreter), sandbox_line(result.sandbox)] if line]
    if result.ran and result.output_tail:
        tail = result.output_tail.splitlines()[-MAX_OUTPUT_LINES_IN_SUMMARY:]
        lines += [f"--- pytest ({result.outcome}, exit code {result.returncode}), last lines:", *tail]
    return "\n".join(lines)


def _containing_root(roots: Roots, path: Path) -> Path:
    """The most specific root that holds `path`."""
    holding = [root for root in roots.paths if path == root or path.is_relative_to(root)]
    return max(holding, key=lambda root: len(root.parts))


def _test_path(roots: Roots, raw: str) -> Path:
    """Resolve the test file inside the roots; a missing `tests/` folder is created, any other is an error."""
    from ml_debug_mcp.core.record.smoke import make_tests_folder

    make_tests_folder(_inside_roots(roots, raw))
    return resolve_path_now(roots, raw, what="test path", expect="new")


def _inside_roots(roots: Roots, raw: str) -> Path:
    """Where `raw` resolves inside the roots, existing or not (the roots' own error otherwise)."""
    try:
        return roots.resolve(raw.strip())
    except (PathOutsideRoots, ValueError) as exc:
        raise ToolError(str(exc)) from None


def _create(env: ToolEnv, roots: Roots, path: str, failure: str, entrypoint: str | None,
            input_shape: list[int] | None, overwrite: bool, run: bool,
            interpreter: InterpreterChoice | None) -> SmokeTestResult:
    """Validate everything first, so a refused call leaves no folder behind; then write (and run)."""
    from ml_debug_mcp.core.record.smoke import check_entrypoint, check_input_shape, check_test_name, create_smoke_test, \
        template_for

    template_for(failure)
    check_input_shape(input_shape)
    check_test_name(Path(path.strip()).name)
    _inside_roots(roots, path)
    factory = check_entrypoint(roots, entrypoint) if entrypoint is not None else None
    target = _test_path(roots, path)
    result = create_smoke_test(target, failure, root=_containing_root(roots, target), factory=factory,
                               input_shape=input_shape, overwrite=overwrite, run=run,
                               python=interpreter.python if interpreter else "",
                               timeout=env.worker_timeout, memory_mb=env.worker_memory_mb, policy=env.policy(roots))
    result.interpreter = interpreter
    return result


def register(mcp: MCPServer, env: ToolEnv) -> None:
    from ml_debug_mcp.core.model.worker import contract_text

    @mcp.tool(
        name="create_smoke_test",
        title="Create a regression smoke test",
        annotations=WRITES_FILES,
        description=(
            "Lock a fixed failure in: writes a pytest file that fails if the failure comes back, one check per "
            "family (nan_loss: finite loss and gradients at a high LR plus the log(0) edge case; "
            "exploding_gradients: clipped norm <= max_norm; vanishing_gradients: every parameter gets a non-zero "
            "gradient; graph_reuse: consecutive steps with carried state do not backward through a freed graph; "
            "shape/dtype/device_mismatch: forward keeps the batch dimension / follows the model's dtype and device; "
            "oom: one step fits a memory budget; curve failures: the loss falls on a fixed batch; mode/rank "
            "collapse: effective rank above a floor; slow_throughput: no .item()/host sync in the step). "
            "entrypoint 'path/to/file.py:factory' (or 'package.module:factory') names the factory (contract below, "
            "the same code the inspection tools run, carried in the file's harness); the test imports it only when "
            "pytest runs. Without it the test runs on a tiny stand-in model marked TODO. Never overwrites an existing "
            "file unless overwrite=true; a missing tests/ folder is created. run=true runs it with pytest in a "
            "subprocess (worker timeout and memory cap, GPUs hidden so it never takes memory from a training run) "
            "and reports passed/failed with the output's tail: passed on the fixed model means the fix is locked in."
            "\nFactory contract:\n" + contract_text()
        ),
    )
    @translate_errors("create_smoke_test")
    async def create_smoke_test(
        path: Annotated[str, Field(description="test file to create inside the roots, e.g. "
                                               "tests/test_nan_loss_regression.py")],
        failure: Annotated[FailureId, Field(description="the failure id classify_failure returned")],
        entrypoint: Annotated[str | None, Field(description="'path/to/file.py:factory' or 'package.module:factory'; "
                                                            "the factory takes no arguments", max_length=500)] = None,
        input_shape: Annotated[list[Annotated[int, Field(ge=1, le=1 << 24)]] | None,
                               Field(description="shape of one input batch, batch first, e.g. [8, 3, 32, 32]; used "
                                                 "when the factory returns only the model",
                                     min_length=1, max_length=MAX_INPUT_DIMS)] = None,
        overwrite: Annotated[bool, Field(description="replace the file if it exists")] = False,
        run: Annotated[bool, Field(description="run the test with pytest in a subprocess and report the outcome")]
        = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, SmokeTestResult]:
        roots = await effective_roots(env, ctx)
        interpreter = await worker_interpreter(env, roots) if run else None
        result = await run_blocking(ctx, _create, env, roots, path, failure, entrypoint, input_shape, overwrite, run,
                                    interpreter)
        return tool_result(result, summarize(result))
