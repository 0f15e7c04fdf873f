"""The real-world corpus: the sealed test split has not changed, and the corpus has the shape the issue asks for."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections import Counter
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "eval" / "realworld"
# Sealed on 2026-12-04, before any rule was tuned on the corpus. Never update this to make the test pass.
TEST_SPLIT_SHA256 = "e8ece92d1d2dfbcdc62a9ef562fef0d381c2b2f6e6ecb714035df286ad0b4f3b"
LABELS = 20
SHORTFALL = {"hockey_stick": 2}  # real text rarely carries it (README); every other label has at least 8


def _cases(split: str) -> list[dict]:
    return [json.loads(line) for line in (CORPUS / f"{split}.jsonl").read_text(encoding="utf-8").splitlines() if line]


def test_the_test_split_is_sealed():
    digest = hashlib.sha256((CORPUS / "test.jsonl").read_bytes()).hexdigest()
    assert digest == TEST_SPLIT_SHA256, "tests/eval/realworld/test.jsonl changed: the sealed test split is read-only"
    assert (CORPUS / "test.sha256").read_text().split()[0] == TEST_SPLIT_SHA256


def test_the_split_is_the_seeded_draw_and_keeps_threads_whole():
    spec = importlib.util.spec_from_file_location("realworld_split", CORPUS / "split.py")
    split = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(split)
    dev, test = _cases("dev"), _cases("test")
    redrawn_dev, redrawn_test = split.split(dev + test)
    assert [c["id"] for c in redrawn_test] == [c["id"] for c in test]
    assert [c["id"] for c in redrawn_dev] == [c["id"] for c in dev]
    assert not {split.thread_of(c["source_url"]) for c in dev} & {split.thread_of(c["source_url"]) for c in test}
    assert len(test) / (len(dev) + len(test)) >= 0.30


def test_the_corpus_is_as_large_and_varied_as_asked():
    cases = _cases("dev") + _cases("test")
    assert len(cases) >= 400
    assert len({c["id"] for c in cases}) == len(cases)
    assert all(c["source_url"].startswith("http") and c["text"].strip() for c in cases)
    assert len({c["framework"].strip().lower() for c in cases}) >= 25
    labels = Counter(c["label"] for c in cases)
    assert len(labels) == LABELS
    assert labels["healthy"] >= 30
    short = {label: n for label, n in labels.items() if n < 8}
    assert short == SHORTFALL
    styles = Counter(c["paste_style"] for c in cases)
    for style in ("markdown-fence", "table", "progress-bar", "rank-prefix", "logger-prefix", "quoted"):
        assert styles[style] >= 3, style


# ------------------------------------------------------------------------------------------------
# Floors: the dev split (the only one tuned on) and the regression set must not fall back.
# The sealed test split is scored by `ml-debug-mcp eval --split test`, never asserted on here.

DEV_TOP1_FLOOR = 0.70  # both ways a user hands text over
REGRESSION_TOP1_FLOOR = 0.99
CONFIDENT = 0.8  # hypotheses this confident must be right at least this often


def test_dev_split_floors_from_log_path_and_from_error_text():
    from ml_debug_mcp.core.diagnosis.evaluate import evaluate_split, format_split_report

    report = evaluate_split(CORPUS.parent, "dev")
    by_log, by_text, baseline = report.reports
    for r in (by_log, by_text):
        assert r.top1_accuracy >= DEV_TOP1_FLOOR, format_split_report(report, misses=False)
        assert r.top1_accuracy > baseline.top1_accuracy, "the keyword grep must stay behind"
        assert r.crashed == 0
        confident = next(b for b in r.calibration.bands if b.band.startswith("0.8"))
        assert confident.cases and confident.accuracy >= CONFIDENT, confident


def test_regression_set_floor():
    from ml_debug_mcp.core.diagnosis.evaluate import evaluate, format_report

    report = evaluate(CORPUS.parent)
    assert report.top1_accuracy >= REGRESSION_TOP1_FLOOR, format_report(report)
