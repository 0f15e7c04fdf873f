"""analyze_gradients: per-layer gradient health from a model run, a checkpoint pair or probe statistics."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.diagnosis.hypotheses import confidence_text
from ml_debug_mcp.core.model.gradients import DEFAULT_TOP, MAX_TOP, GradientAnalysis, GradientReport, LayerGradient, fmt
from ml_debug_mcp.tools._base import RUNS_USER_CODE, ToolEnv, effective_roots, interpreter_line, resolve_path, \
    run_blocking, sandbox_line, tool_result, translate_errors, worker_interpreter

MAX_STEPS = 50
_SOURCE_TITLES = {"model": "model run", "checkpoints": "checkpoint pair", "probe_stats": "probe statistics"}


def summarize(analysis: GradientAnalysis) -> str:
    out = [f"Verdict: {analysis.verdict}"]
    for report in analysis.reports:
        out += _report_lines(report)
    out += [line for line in [interpreter_line(analysis.interpreter), sandbox_line(analysis.sandbox)] if line]
    return "\n".join(out)


def _report_lines(r: GradientReport) -> list[str]:
    lines = [f"\n[{_SOURCE_TITLES[r.source]}] {r.target}", r.summary]
    if r.source == "model":
        lines.append(f"ran on {r.settings.get('device') or 'cpu'} ({r.settings.get('param_dtype')}); loss as "
                     f"{r.settings.get('loss_form')}")
    if r.global_grad_norm is not None or r.global_grad_nonfinite:
        lines.append(f"global grad norm (last): {(r.global_grad_nonfinite or '').upper() or fmt(r.global_grad_norm)}")
    for h in r.hypotheses[:3]:
        onset = f", from step {h.onset_step:g}" if h.onset_step is not None else ""
        lines.append(f"- {h.failure} (confidence {confidence_text(h.confidence)}{onset})")
        lines += [f"    evidence: {e.text}" for e in h.evidence[:3]]
        if h.failure != "healthy" and h.fixes:
            lines.append(f"    fix: {h.fixes[0].action} -> {h.fixes[0].expected_effect}")
    if r.mismatch is not None:
        lines.append(f"key/shape mismatch: {r.mismatch.only_before_count} only before, {r.mismatch.only_after_count} "
                     f"only after, {r.mismatch.shape_changed_count} shapes changed")
    if r.layers:
        lines.append(f"{'layer':<40} {'band':<9} {'grad norm':>10} {'max':>9} {'update ratio':>12}  why")
        lines += [_layer_line(layer) for layer in r.layers]
    if r.layers_omitted:
        lines.append(f"({r.layers_omitted} healthier layers not listed; raise `top` to see them)")
    lines += [f"note: {w}" for w in r.warnings]
    return lines


def _layer_line(layer: LayerGradient) -> str:
    grad = "MISSING" if layer.grad_missing else (layer.grad_nonfinite or "").upper() or fmt(layer.grad_norm)
    return (f"{layer.name[:40]:<40} {layer.band:<9} {grad:>10} {fmt(layer.grad_norm_max):>9} "
            f"{fmt(layer.update_ratio):>12}  {layer.reason}")


def register(mcp: MCPServer, env: ToolEnv) -> None:
    from ml_debug_mcp.core.model.worker import contract_text

    @mcp.tool(
        name="analyze_gradients",
        title="Analyze gradient health",
        annotations=RUNS_USER_CODE,
        description=(
            "Per-layer gradient health: gradient norm, weight norm, update ratio ||dW||/||W|| (target ~1e-3, "
            "<1e-5 frozen, >1e-1 unstable; gradient norm <1e-7 vanishing), zero/NaN gradients, missing gradients "
            "(unused parameter, output the loss ignores, or a detached branch), each layer put in a band (overflow, "
            "broken, exploding, large, vanishing, frozen, healthy), a verdict (nan_loss, "
            "exploding_gradients, vanishing_gradients or healthy) with evidence and the first layer in forward "
            "order where it goes wrong. Sources (give at least one): `entrypoint` 'path/to/file.py:factory' "
            "(factory() returns model, (model, batch) or (model, batch, loss_fn); pass input_shapes when it gives "
            "no batch) trained `steps` real steps with `optimizer`/`lr` in a sandboxed CPU worker; `checkpoint` + "
            "`checkpoint_after` (real per-tensor update ratios; safetensors or torch weights_only files); or "
            "`stats_path`, the grad_stats.jsonl TrainingProbe writes during training (per layer over time: last, "
            "max, trend, the step it went to zero/NaN/exploded).\nFactory contract:\n" + contract_text()
        ),
    )
    @translate_errors("analyze_gradients")
    async def analyze_gradients(
        entrypoint: Annotated[str | None, Field(description="'path/to/file.py:factory' or 'package.module:factory' inside the roots")] = None,
        input_shapes: Annotated[list[list[int]] | None, Field(description="one shape per forward() argument, batch first, e.g. [[8, 3, 32, 32]]; overrides the factory's batch")] = None,
        dtype: Annotated[str | list[str] | None, Field(description="input dtype (default: the model's), or one per input, e.g. 'int64' for token ids")] = None,
        steps: Annotated[int, Field(ge=0, le=MAX_STEPS, description="optimizer steps to take; 0 = one backward only (ratios estimated as lr*||grad||/||W||)")] = 1,
        lr: Annotated[float, Field(gt=0, le=100, description="learning rate of your training (ratios scale with it)")] = 1e-3,
        optimizer: Annotated[Literal["adam", "sgd"], Field(description="optimizer used for the steps")] = "adam",
        loss: Annotated[Literal["auto", "mse", "cross_entropy", "sum"], Field(description="loss when the factory gives no loss_fn; auto = the output's .loss, cross-entropy for integer targets, else MSE to a fixed random target")] = "auto",
        checkpoint: Annotated[str | None, Field(description="earlier checkpoint (safetensors, or torch file loaded weights_only)")] = None,
        checkpoint_after: Annotated[str | None, Field(description="later checkpoint of the same model")] = None,
        steps_between: Annotated[int | None, Field(ge=1, le=10**9, description="optimizer steps between the two checkpoints (turns the change into a per-step ratio)")] = None,
        stats_path: Annotated[str | None, Field(description="grad_stats.jsonl written by TrainingProbe (from ml_debug_mcp import TrainingProbe)")] = None,
        top: Annotated[int, Field(ge=1, le=MAX_TOP, description="how many layers to list, worst first")] = DEFAULT_TOP,
        device: Annotated[str, Field(description="'cpu' (default, GPUs hidden) or one named GPU, e.g. 'cuda:1', "
                                                 "for the entrypoint's steps", max_length=16)] = "cpu",
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, GradientAnalysis]:
        from ml_debug_mcp.core.model.checkpoints import compare_checkpoints
        from ml_debug_mcp.core.model.gradients import (analyze_model, gradient_task, overall_verdict,
                                                 summarize_probe_stats)
        from ml_debug_mcp.core.model.shapes import check_inputs
        from ml_debug_mcp.core.model.worker import gpu_index, resolve_entrypoint

        if (input_shapes or dtype) and not entrypoint:
            raise ToolError("input_shapes/dtype describe the inputs of the model built from `entrypoint`; pass the "
                            "entrypoint too.")
        if not (entrypoint or checkpoint or checkpoint_after or stats_path):
            raise ToolError("Give at least one source: entrypoint='train.py:build_model' (runs the model a few "
                            "steps), checkpoint + checkpoint_after (two saved states), or stats_path (the "
                            "grad_stats.jsonl TrainingProbe writes).")
        if bool(checkpoint) != bool(checkpoint_after):
            raise ToolError("Checkpoints are compared in pairs: pass both checkpoint (earlier) and checkpoint_after "
                            "(later). One checkpoint holds weights but no gradients.")
        gpu_index(device)
        if device.strip().lower() != "cpu" and not entrypoint:
            raise ToolError("device names where the entrypoint's model trains; pass the entrypoint too.")
        roots = await effective_roots(env, ctx)
        interpreter = await worker_interpreter(env, roots) if entrypoint or checkpoint else None
        limits = dict(python=interpreter.python if interpreter else "", timeout=env.worker_timeout,
                      memory_mb=env.worker_memory_mb, policy=env.policy(roots))
        reports: list[GradientReport] = []
        if entrypoint:
            entry = await run_blocking(None, resolve_entrypoint, roots, entrypoint)
            shapes, dtypes = check_inputs(input_shapes, dtype)
            task = gradient_task(entry.task, input_shapes=shapes, dtypes=dtypes, steps=steps, lr=lr,
                                 optimizer=optimizer, loss=loss, device=device.strip().lower())
            reports.append(await run_blocking(ctx, analyze_model, task, cwd=entry.cwd, target=entry.label, top=top,
                                              **limits))
        if checkpoint and checkpoint_after:
            before = await resolve_path(roots, checkpoint, what="checkpoint", expect="file")
            after = await resolve_path(roots, checkpoint_after, what="checkpoint_after", expect="file")
            reports.append(await run_blocking(ctx, compare_checkpoints, before, after, steps_between=steps_between,
                                              cwd=before.parent, top=top, **limits))
        if stats_path:
            stats = await resolve_path(roots, stats_path, what="stats_path", expect="file")
            reports.append(await run_blocking(ctx, summarize_probe_stats, stats, top=top))
        analysis = GradientAnalysis(verdict=overall_verdict(reports), reports=reports, interpreter=interpreter,
                                    sandbox=next((r.sandbox for r in reports if r.sandbox), None))
        return tool_result(analysis, summarize(analysis))
