"""The failure taxonomy: identifiers every detector, tool and resource shares.

The fix table and root causes for each failure live here too (filled in by the classify work),
so the MCP resource `guide://failure-catalogue` and classify_failure's hypotheses are rendered
from one source.
"""

from __future__ import annotations

from typing import Literal, get_args

FailureId = Literal[
    "nan_loss",
    "divergence",
    "loss_spike",
    "exploding_gradients",
    "vanishing_gradients",
    "plateau",
    "slow_convergence",
    "hockey_stick",
    "overfitting",
    "oom",
    "shape_mismatch",
    "graph_reuse",
    "device_mismatch",
    "dtype_mismatch",
    "cuda_assert",
    "distributed_hang",
    "slow_throughput",
    "mode_collapse",
    "rank_collapse",
    "healthy",
]

FAILURE_IDS: tuple[str, ...] = get_args(FailureId)
