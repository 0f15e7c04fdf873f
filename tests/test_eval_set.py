"""The labelled evaluation set: classify must keep sane floors on every case (floors, not exact results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ml_debug_mcp.core.diagnosis.catalogue import FAILURE_IDS
from ml_debug_mcp.core.diagnosis.evaluate import CRASHED, EvalReport, evaluate, format_report, load_cases

EVAL_ROOT = Path(__file__).resolve().parent / "eval"

MIN_CASES = 60
MIN_TOP1 = 0.85
MIN_HEALTHY_CASES = 8
MIN_CLASS_RECALL = 0.5  # every failure with at least two cases


@pytest.fixture(scope="module")
def report() -> EvalReport:
    return evaluate(EVAL_ROOT)


def test_the_set_is_large_varied_and_well_formed() -> None:
    cases = load_cases(EVAL_ROOT)
    assert len(cases) >= MIN_CASES
    labels = {c.label for c in cases}
    assert len(labels) >= 15, f"only {len(labels)} failure classes covered"
    assert sum(c.label == "healthy" for c in cases) >= MIN_HEALTHY_CASES
    for c in cases:
        assert set(c.accept) <= set(FAILURE_IDS)
        for rel in (c.log, c.error_file, c.code):
            if rel:
                assert c.resolve(rel).is_file(), f"{c.id}: {rel} missing"
                assert c.resolve(rel).stat().st_size < 600_000, f"{c.id}: {rel} is too large for the repository"
        assert c.log or c.log_text or c.error_text or c.error_file or c.series or c.code, f"{c.id} has no input"


def test_top1_accuracy_floor(report: EvalReport) -> None:
    assert report.top1_accuracy >= MIN_TOP1, format_report(report)


def test_no_false_alarm_on_healthy_runs(report: EvalReport) -> None:
    assert report.healthy_cases >= MIN_HEALTHY_CASES
    assert report.healthy_false_alarms == 0, format_report(report)


def test_no_case_crashes_classify(report: EvalReport) -> None:
    assert [r.id for r in report.results if r.predicted == CRASHED] == []


def test_every_class_is_mostly_recognised(report: EvalReport) -> None:
    weak = [(s.failure, s.recall) for s in report.per_class if s.support >= 2 and (s.recall or 0) < MIN_CLASS_RECALL]
    assert weak == [], format_report(report)


def test_the_harness_scores_what_it_is_given(tmp_path: Path) -> None:
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "nan.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1.0 if s < 20 else float("nan")})
                                                for s in range(1, 40)) + "\n")
    cases = [
        {"id": "right", "label": "nan_loss", "log": "nan.jsonl"},
        {"id": "wrong_label", "label": "oom", "log": "nan.jsonl"},
        {"id": "accepted", "label": "divergence", "accept": ["nan_loss"], "log": "nan.jsonl"},
        {"id": "crash", "label": "healthy", "error_file": "missing.txt"},
    ]
    (folder / "cases.json").write_text(json.dumps(cases))
    r = evaluate(tmp_path)
    by_id = {x.id: x for x in r.results}
    assert by_id["right"].correct and by_id["accepted"].correct and not by_id["wrong_label"].correct
    assert by_id["crash"].predicted == CRASHED and "FileNotFoundError" in by_id["crash"].error
    assert r.top1_accuracy == 0.5 and r.cases == 4
    assert r.confusion["oom"] == {"nan_loss": 1}
    nan = next(s for s in r.per_class if s.failure == "nan_loss")
    assert nan.predicted == 3 and nan.precision == round(2 / 3, 3) and nan.recall == 1.0
    assert r.healthy_cases == 1 and r.healthy_false_alarms == 0  # a crash is counted wrong, not as an alarm
    assert "wrong_label: expected oom, got nan_loss" in format_report(r)


def test_malformed_manifests_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "cases.json").write_text(json.dumps([{"id": "a", "label": "not_a_failure", "series": {}}]))
    with pytest.raises(ValueError, match="not a failure id"):
        load_cases(tmp_path)
    (tmp_path / "cases.json").write_text(json.dumps([{"id": "a", "label": "oom", "error_text": "x"}] * 2))
    with pytest.raises(ValueError, match="duplicate case ids"):
        load_cases(tmp_path)
