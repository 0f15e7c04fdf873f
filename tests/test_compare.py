"""compare_runs on real before/after training runs: fixed, improved but unverified, not fixed, regressed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import training_runs as tr
from ml_debug_mcp.core.diagnosis.classify import parsed_from_series
from ml_debug_mcp.core.diagnosis.compare import Comparison, compare_paths, compare_runs
from ml_debug_mcp.core.logs.series import ParsedLog


def compare(before: str, after: str, metric: str = "loss") -> Comparison:
    c = compare_runs(tr.to_parsed(tr.run(before)), tr.to_parsed(tr.run(after)), metric=metric)
    json.dumps(c.model_dump(), allow_nan=False)
    return c


def test_nan_fixed_and_stable_past_ten_times_the_old_failure_step() -> None:
    c = compare("lr_too_high_early_nan", "healthy")
    assert c.verdict == "fixed", c.summary
    assert "nan_loss" in c.resolved and not c.persisting and not c.new
    assert c.failure_step is not None and c.required_stable_steps == max(100, 10 * (c.failure_step - 1))
    assert c.stable_steps >= c.required_stable_steps
    assert "non-finite" in (c.improvement_note or "")


def test_a_fix_that_has_not_run_long_enough_is_unverified() -> None:
    c = compare("lr_too_high_nan", "healthy")  # NaN at ~step 104: needs ~1030 clean steps, the re-run has 300
    assert c.verdict == "improved_but_unverified", c.summary
    assert c.stable_steps < c.required_stable_steps
    assert "run longer" in c.summary


def test_slow_burn_fixed_with_a_measured_improvement() -> None:
    c = compare("lr_too_low", "healthy")
    assert c.verdict == "fixed"
    assert c.resolved == ["slow_convergence"]
    assert c.improvement is not None and c.improvement > 0.10
    assert c.before_value > c.after_value and c.lower_is_better


def test_higher_is_better_metrics_are_compared_the_right_way_round() -> None:
    c = compare("lr_too_low", "healthy", metric="train_accuracy")
    assert c.metric == "accuracy" and not c.lower_is_better
    assert c.improvement is not None and c.improvement > 0.10


def test_same_pathology_after_the_attempted_fix_is_not_fixed() -> None:
    c = compare("detached_graph", "frozen_weights")  # a different bug, same symptom: weights still do not move
    assert c.verdict == "not_fixed"
    assert "vanishing_gradients" in c.persisting


def test_a_new_pathology_is_a_regression() -> None:
    c = compare("lr_too_low", "lr_too_high_divergence")
    assert c.verdict == "regressed"
    assert "divergence" in c.new


def test_a_worse_metric_without_a_pathology_is_a_regression() -> None:
    c = compare("healthy", "healthy_sgd")
    assert c.pathologies_before == []
    assert c.improvement is not None and c.improvement < -0.10
    assert c.verdict == "regressed"


def test_values_are_compared_at_the_horizon_both_runs_reached() -> None:
    before = tr.to_parsed(tr.run("lr_too_low").records[:150])
    after = tr.to_parsed(tr.run("healthy"))
    c = compare_runs(before, after)
    assert c.horizon_step == 150.0
    healthy_at_150 = float(np.median([r["loss"] for r in tr.run("healthy").records[140:150]]))
    assert abs(c.after_value - healthy_at_150) < 1e-9


def test_pathology_gone_but_gain_under_ten_percent_is_unverified() -> None:
    flat = {"loss": [[s, 1.0 + 0.002 * (s % 3)] for s in range(1, 301)]}
    slightly_better = {"loss": [[s, 1.0 - 0.08 * (1 - np.exp(-s / 60)) + 0.002 * (s % 3)] for s in range(1, 301)]}
    c = compare_runs(parsed_from_series(flat), parsed_from_series(slightly_better))
    assert "plateau" in c.resolved
    assert c.improvement is not None and 0 < c.improvement < 0.10
    assert c.verdict == "improved_but_unverified"


def test_missing_metric_and_empty_logs_degrade_honestly() -> None:
    c = compare("healthy", "healthy_s20", metric="reward")
    assert c.improvement is None and "reward cannot be compared" in c.improvement_note
    assert "loss" in c.improvement_note, "the note lists the metrics that were logged"
    empty = compare_runs(tr.to_parsed(tr.run("lr_too_low")), ParsedLog(format="unknown"))
    assert empty.verdict == "not_fixed" and empty.stable_steps is None


def test_compare_paths_reads_both_logs_through_the_parsers(tmp_path: Path) -> None:
    before = tr.write_log(tr.run("lr_too_high_early_nan"), tmp_path / "before.log", "hf")
    after = tr.write_log(tr.run("healthy"), tmp_path / "after.csv", "csv")
    c = compare_paths(before, after)
    assert c.verdict == "fixed"
    assert c.summary.startswith("Fixed:")


def test_an_overfitting_fix_is_judged_on_eval_loss_by_default() -> None:
    c = compare_runs(tr.to_parsed(tr.run("overfitting")), tr.to_parsed(tr.run("healthy")))
    assert c.metric == "eval_loss", "regularisation raises the train loss on purpose"
    assert compare("overfitting", "healthy", metric="loss").metric == "loss", "an explicit metric wins"


OOM = """Traceback (most recent call last):
  File "train.py", line 88, in <module>
    loss.backward()
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.65 GiB of which 1.12 GiB is free.
"""


def _crashed_log(path: Path, steps: int) -> Path:
    """A real run's log cut at `steps` records, ending in the OOM traceback that stopped it."""
    run = copy.copy(tr.run("healthy"))  # runs are cached: never cut the shared one
    run.records = run.records[:steps]
    tr.write_log(run, path, "kv")
    with open(path, "a") as fh:
        fh.write(OOM)
    return path


def test_a_crash_is_fixed_when_the_rerun_gets_past_it_and_not_when_it_crashes_again(tmp_path: Path) -> None:
    before = _crashed_log(tmp_path / "oom.log", 60)
    again = compare_paths(before, _crashed_log(tmp_path / "oom_again.log", 60))
    assert again.verdict == "not_fixed" and "oom" in again.persisting, again.summary
    fixed = compare_paths(before, tr.write_log(tr.run("healthy"), tmp_path / "after.log", "kv"))
    assert fixed.verdict == "fixed" and "oom" in fixed.resolved, fixed.summary
    assert any("got past the old run's crash" in fixed.summary or "reached step" in e.text for e in fixed.evidence)


def test_a_rerun_log_without_metrics_proves_nothing(tmp_path: Path) -> None:
    before = tr.write_log(tr.run("lr_too_high_early_nan"), tmp_path / "before.log", "kv")
    (tmp_path / "after.log").write_text("starting training\nloading data\n")
    c = compare_paths(before, tmp_path / "after.log")
    assert c.verdict == "not_fixed" and c.resolved == [] and "holds no metric series" in c.summary
