"""check_shapes: trace tensor shapes through the user's model and explain the first mismatch."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.model.shapes import ShapeReport, render_table
from ml_debug_mcp.tools._base import RUNS_USER_CODE, ToolEnv, effective_roots, interpreter_line, run_blocking, \
    tool_result, translate_errors, worker_interpreter


def summarize(report: ShapeReport) -> str:
    lines = []
    if report.failure is not None:
        f = report.failure
        lines.append(f"SHAPE CHECK FAILED: {f.explanation}")
        lines.append(f"{f.exception_type}: {f.message.strip()[:400]}")
        if f.user_frame is not None:
            lines.append(f"last user frame: {f.user_frame.file}:{f.user_frame.line} in {f.user_frame.function}: "
                         f"{f.user_frame.code}")
    else:
        lines.append(report.summary)
    inputs = ", ".join(f"{t.shape} {t.dtype}" for t in report.inputs[:6])
    lines.append(f"inputs ({report.input_source}): {inputs}")
    lines.append(render_table(report))
    if report.calls_omitted:
        lines.append(f"({report.calls_omitted} of {report.calls_total} module calls omitted from the middle)")
    lines += [f"NOTE: {note}" for note in report.notes]
    lines += [line for line in [interpreter_line(report.interpreter)] if line]
    return "\n".join(lines)


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="check_shapes",
        title="Check tensor shapes",
        annotations=RUNS_USER_CODE,
        description=(
            "Run one forward pass (eval mode, no gradients) of the model from `entrypoint` ('path/to/file.py:factory'; "
            "factory() returns the model, or (model, batch)) on random inputs of `input_shapes` in a sandboxed CPU "
            "worker, and report "
            "every module's input/output shapes and dtypes in call order (a torchinfo-like table). On a failure: "
            "the module that raised, its configuration (e.g. Linear(in_features=256, out_features=10)), the shapes "
            "it received, what it expects and what the layer before it produced, plus the last frame of your code."
        ),
    )
    @translate_errors("check_shapes")
    async def check_shapes(
        entrypoint: Annotated[str, Field(description="'path/to/file.py:factory' or 'package.module:factory' inside the roots")],
        input_shapes: Annotated[list[list[int]] | None, Field(description="one shape per forward() argument, batch first, e.g. [[8, 3, 32, 32]]; default: the factory's batch")] = None,
        dtype: Annotated[str | list[str] | None, Field(description="input dtype (default: the model's), or one per input, e.g. ['int64', 'bool']")] = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ShapeReport]:
        from ml_debug_mcp.core.model.shapes import check_inputs, check_model_shapes, shape_task
        from ml_debug_mcp.core.model.worker import resolve_entrypoint

        roots = await effective_roots(env, ctx)
        entry = await run_blocking(None, resolve_entrypoint, roots, entrypoint)
        shapes, dtypes = check_inputs(input_shapes, dtype)
        interpreter = await worker_interpreter(env, roots)
        report = await run_blocking(ctx, check_model_shapes, shape_task(entry.task, shapes, dtypes),
                                    python=interpreter.python, timeout=env.worker_timeout, memory_mb=env.worker_memory_mb,
                                    cwd=entry.cwd, target=entry.label)
        report.interpreter = interpreter
        return tool_result(report, summarize(report))
