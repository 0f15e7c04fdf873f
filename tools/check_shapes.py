"""check_shapes: trace tensor shapes through the user's model and explain the first mismatch."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.model.shapes import ShapeReport, render_table
from ml_debug_mcp.tools._base import RUNS_USER_CODE, ToolEnv, effective_roots, interpreter_line, resolve_path, \
    run_blocking, sandbox_line, tool_result, translate_errors, worker_interpreter


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
    lines.append(f"step: {report.loss_form}; weights on {'the meta device (no memory)' if report.meta else 'the CPU'}")
    if report.depends_on:
        lines.append(f"depends on: {report.depends_on} (" + ", ".join(
            f"{v.dimension} {v.size_from}->{v.size_to}: {v.status}" for v in report.variants) + ")")
    if report.checkpoint is not None:
        lines += _checkpoint_lines(report)
    lines.append(render_table(report))
    if report.calls_omitted:
        lines.append(f"({report.calls_omitted} of {report.calls_total} module calls omitted from the middle)")
    lines += [f"NOTE: {note}" for note in report.notes]
    lines += [line for line in [interpreter_line(report.interpreter), sandbox_line(report.sandbox)] if line]
    return "\n".join(lines)


def _checkpoint_lines(report: ShapeReport) -> list[str]:
    c = report.checkpoint
    lines = [f"checkpoint {c.path}: {'compatible' if c.compatible else 'NOT compatible'} ({c.model_keys} model keys, "
             f"{c.checkpoint_keys} in the checkpoint)"]
    if c.missing_count:
        lines.append(f"  missing ({c.missing_count}): {', '.join(c.missing[:8])}")
    if c.unexpected_count:
        lines.append(f"  unexpected ({c.unexpected_count}): {', '.join(c.unexpected[:8])}")
    lines += [f"  shape {m.key}: model {m.model}, checkpoint {m.checkpoint}" for m in c.shape_mismatches[:8]]
    lines += [f"  dtype {m.key}: model {m.model}, checkpoint {m.checkpoint}" for m in c.dtype_mismatches[:4]]
    lines += [f"  cause: {cause}" for cause in c.causes]
    return lines


def register(mcp: MCPServer, env: ToolEnv) -> None:
    from ml_debug_mcp.core.model.worker import contract_text

    @mcp.tool(
        name="check_shapes",
        title="Check tensor shapes",
        annotations=RUNS_USER_CODE,
        description=(
            "Trace one forward pass (eval mode, no gradients) of the model from `entrypoint` "
            "('path/to/file.py:factory') on its batch or random inputs of `input_shapes` in a sandboxed CPU worker. "
            "The weights are built on the meta device (shapes, no memory: a 7B model traces in seconds); a module "
            "whose op has no meta kernel runs with real tensors alone, and the result says so. Reports every "
            "module's input/output shapes and dtypes in call order (a torchinfo-like table, repeated blocks "
            "collapsed: 'blocks.0-47 Block ×48'), traces again at another batch size and sequence length to say "
            "whether a mismatch depends on the batch, the sequence or neither, and on a failure names the module "
            "that raised, its configuration, the shapes it received, what it expects and what the layer before it "
            "produced. `checkpoint` (safetensors or torch state_dict, read from headers / weights_only mmap) lists "
            "missing and unexpected keys and shape/dtype mismatches per key, naming the usual causes (module. "
            "from DDP, _orig_mod. from torch.compile, a changed vocabulary).\nFactory contract:\n" + contract_text()
        ),
    )
    @translate_errors("check_shapes")
    async def check_shapes(
        entrypoint: Annotated[str, Field(description="'path/to/file.py:factory' or 'package.module:factory' inside the roots")],
        input_shapes: Annotated[list[list[int]] | None, Field(description="one shape per forward() argument, batch first, e.g. [[8, 3, 32, 32]]; default: the factory's batch")] = None,
        dtype: Annotated[str | list[str] | None, Field(description="input dtype (default: the model's), or one per input, e.g. ['int64', 'bool']")] = None,
        checkpoint: Annotated[str | None, Field(description="a state_dict file (safetensors, or torch loaded weights_only) to check against the model's keys, shapes and dtypes")] = None,
        meta: Annotated[bool, Field(description="build the weights on the meta device (no memory); false builds real weights, for factories that read tensor values while building")] = True,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ShapeReport]:
        from ml_debug_mcp.core.model.shapes import check_inputs, check_model_shapes, shape_task
        from ml_debug_mcp.core.model.worker import resolve_entrypoint

        roots = await effective_roots(env, ctx)
        entry = await run_blocking(None, resolve_entrypoint, roots, entrypoint)
        shapes, dtypes = check_inputs(input_shapes, dtype)
        state = str(await resolve_path(roots, checkpoint, what="checkpoint", expect="file")) if checkpoint else None
        task = shape_task(entry.task, shapes, dtypes, meta=meta, checkpoint=state,
                          fallback_mb=max(64, env.worker_memory_mb // 4))
        interpreter = await worker_interpreter(env, roots)
        report = await run_blocking(ctx, check_model_shapes, task,
                                    python=interpreter.python, timeout=env.worker_timeout, memory_mb=env.worker_memory_mb,
                                    cwd=entry.cwd, target=entry.label, policy=env.policy(roots))
        report.interpreter = interpreter
        return tool_result(report, summarize(report))
