"""analyze_gradients: per-layer gradient health of the user's model (not implemented yet)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from ml_debug_mcp.tools._base import RUNS_USER_CODE, ToolEnv, not_implemented


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="analyze_gradients",
        title="Analyze gradient health",
        annotations=RUNS_USER_CODE,
        description=(
            "Per-layer gradient norms, weight-update ratios (target ~1e-3, <1e-5 frozen, >1e-1 unstable) and "
            "dead/exploding layers for a model built from `entrypoint` ('path/to/file.py:make_model'), a "
            "checkpoint pair, or a statistics file written by the in-training probe. Not implemented yet: "
            "returns an error that says what to use instead."
        ),
    )
    async def analyze_gradients(
        entrypoint: Annotated[str | None, Field(description="'file.py:factory' or 'package.module:factory' returning the model")] = None,
        checkpoint: Annotated[str | None, Field(description="safetensors or torch checkpoint (loaded weights_only)")] = None,
        stats_path: Annotated[str | None, Field(description="JSON-lines gradient statistics written by TrainingProbe")] = None,
    ) -> str:
        raise not_implemented(
            "analyze_gradients",
            "Until it lands, log grad_norm (the value clip_grad_norm_ returns) in your training log and call "
            "classify_failure on the log: its gradient-norm detectors flag 0 (broken graph), >10 (exploding) and NaN.",
        )
