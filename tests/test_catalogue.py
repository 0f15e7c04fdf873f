"""The failure catalogue and thresholds: complete, carrying the seeds' fix table, JSON-clean, cheap to import."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from ml_debug_mcp.core.diagnosis.catalogue import (
    CATALOGUE,
    FAILURE_IDS,
    THRESHOLDS,
    FailureInfo,
    failure_info,
    render_catalogue_markdown,
    render_thresholds_markdown,
)
from ml_debug_mcp.core.diagnosis.hypotheses import Fix, NextStep

TOOLS = {
    "tail_log",
    "read_metrics",
    "classify_failure",
    "compare_runs",
    "gpu_status",
    "analyze_gradients",
    "check_shapes",
    "write_journal",
    "create_smoke_test",
}


def test_every_failure_id_has_a_complete_entry():
    assert set(CATALOGUE) == set(FAILURE_IDS)
    for failure_id, info in CATALOGUE.items():
        assert isinstance(info, FailureInfo) and info.id == failure_id
        assert info.title and info.description and info.symptoms, failure_id
        assert info.confirm_with, failure_id
        assert {step.tool for step in info.confirm_with} <= TOOLS, failure_id
        assert all(isinstance(step, NextStep) and step.why for step in info.confirm_with)
        if failure_id != "healthy":
            assert info.root_causes and info.fixes, failure_id
            assert all(isinstance(f, Fix) and f.action and f.expected_effect for f in info.fixes), failure_id


def _fix_text(failure_id: str) -> str:
    return " ".join(f.action + " " + f.expected_effect for f in CATALOGUE[failure_id].fixes).lower()


def _all_text(failure_id: str) -> str:
    info = CATALOGUE[failure_id]
    return (" ".join(info.root_causes + info.symptoms + info.early_warnings) + " " + _fix_text(failure_id)).lower()


@pytest.mark.parametrize(
    "failure_id, phrases",
    [
        ("divergence", ["10x"]),
        ("nan_loss", ["clip", "lower the learning rate", "epsilon", "log(0)", "division by zero", "sqrt"]),
        ("overfitting", ["dropout", "l2"]),
        ("slow_convergence", ["increase the learning rate", "scheduler"]),
        ("vanishing_gradients", ["relu", "leakyrelu", "batch norm", "requires_grad", "detach"]),
        ("exploding_gradients", ["clip_grad_norm_", "max_norm=1.0"]),
        ("oom", ["batch size", "gradient accumulation", "gradient checkpointing", "expandable_segments"]),
        ("shape_mismatch", ["assert", "einops"]),
        ("slow_throughput", [".item()", "print(tensor)"]),
        ("graph_reuse", ["detach", "backward through the graph a second time", "retain_graph"]),
        ("plateau", ["f.normalize", "direction"]),
        ("rank_collapse", ["effective rank", "diversity"]),
        ("mode_collapse", ["0.9 * log(vocab_size)", "advantages", "0.95"]),
        ("cuda_assert", ["cuda_launch_blocking=1"]),
    ],
)
def test_seed_fix_table_and_decision_tree_are_carried_over(failure_id, phrases):
    text = _all_text(failure_id)
    missing = [p for p in phrases if p.lower() not in text]
    assert not missing, f"{failure_id} lacks {missing}"


@pytest.mark.parametrize(
    "name, value",
    [
        ("update_ratio_target", 1e-3),
        ("update_ratio_frozen", 1e-5),
        ("update_ratio_unstable", 1e-1),
        ("grad_norm_broken", 0.0),
        ("grad_norm_exploding", 10.0),
        ("grad_norm_overflow", None),
        ("entropy_gibberish_fraction", 0.9),
        ("clamp_boundary_fraction", 0.95),
        ("overfit_gap", 0.05),
        ("fix_improvement", 0.10),
        ("stability_steps", 100.0),
        ("stability_failure_multiple", 10.0),
        ("clip_max_norm", 1.0),
        ("lr_reduction_factor", 10.0),
    ],
)
def test_thresholds_hold_the_seed_numbers(name, value):
    threshold = THRESHOLDS[name]
    assert threshold.value == value
    assert threshold.meaning.endswith((".", "...")) and len(threshold.meaning.split()) >= 6


def test_thresholds_are_json_clean():
    payload = json.loads(json.dumps({k: t.model_dump() for k, t in THRESHOLDS.items()}, allow_nan=False))
    assert set(payload) == set(THRESHOLDS)
    assert all(v["value"] is None or math.isfinite(v["value"]) for v in payload.values())


def test_catalogue_serialises_without_nan():
    for info in CATALOGUE.values():
        json.loads(info.model_dump_json())  # pydantic would write NaN as null; any float must be finite
        json.dumps(info.model_dump(), allow_nan=False)


def test_markdown_renders_every_failure_and_threshold():
    md = render_catalogue_markdown()
    for failure_id, info in CATALOGUE.items():
        assert f"(`{failure_id}`)" in md and info.title in md
        for fix in info.fixes:
            assert fix.action in md
    thresholds_md = render_thresholds_markdown()
    for name in THRESHOLDS:
        assert f"`{name}`" in thresholds_md and f"`{name}`" in md
    assert "| 1e-05 |" not in thresholds_md  # comparisons are rendered with their operator
    assert "< 1e-05" in thresholds_md and "> 10" in thresholds_md


def test_unknown_failure_id_is_a_caller_error_naming_the_valid_ones():
    with pytest.raises(ValueError, match="nan_loss"):
        failure_info("nan")
    assert failure_info("oom") is CATALOGUE["oom"]


@pytest.mark.parametrize("first", ["ml_debug_mcp.core.diagnosis.hypotheses", "ml_debug_mcp.core.diagnosis.catalogue"])
def test_import_order_does_not_matter_and_stays_light(first):
    """diagnosis imports catalogue and catalogue's entries hold diagnosis models: either order must work,
    and none of the error/code detectors may pull torch in at import time (server start-up)."""
    code = (
        f"import sys, {first}\n"
        "from ml_debug_mcp.core.diagnosis.catalogue import CATALOGUE\n"
        "from ml_debug_mcp.core.diagnosis.hypotheses import Hypothesis\n"
        "import ml_debug_mcp.core.diagnosis.detectors.error_text, ml_debug_mcp.core.diagnosis.detectors.code_scan\n"
        "Hypothesis(failure='oom', confidence=0.5, fixes=CATALOGUE['oom'].fixes)\n"
        "print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
