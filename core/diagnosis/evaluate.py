"""The classify evaluation harness: run every labelled case, score the top-1 answer.

Cases live in `cases.json` manifests under an evaluation root (format: tests/eval/README.md).
The report gives top-1 accuracy, per-class precision and recall, the healthy false-alarm rate
(healthy runs whose top answer is a failure) and the confusion matrix, so a detector change can
be judged on the whole set rather than on the case it was written for.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from ml_debug_mcp.core.diagnosis.catalogue import FAILURE_IDS
from ml_debug_mcp.core.diagnosis.hypotheses import Diagnosis
from pydantic import BaseModel, Field, ValidationError

NO_ANSWER = "none"  # predicted label when classify returns no hypothesis
CRASHED = "error"  # predicted label when classify raised


class EvalCase(BaseModel):
    id: str
    label: str
    accept: list[str] = Field(default_factory=list)
    log: str | None = None
    log_text: str | None = None
    error_text: str | None = None
    error_file: str | None = None
    series: dict[str, list[list[float | None]]] | None = None
    code: str | None = None
    format: str | None = None
    source: str | None = None
    notes: str | None = None
    folder: Path = Field(exclude=True)

    def resolve(self, relative: str) -> Path:
        return (self.folder / relative).resolve()


class CaseResult(BaseModel):
    id: str
    label: str
    predicted: str
    confidence: float | None = None
    correct: bool
    runner_up: list[str] = Field(default_factory=list, description="The next hypotheses, 'failure:confidence'")
    seconds: float
    error: str | None = None


class ClassScore(BaseModel):
    failure: str
    support: int = Field(description="Cases labelled with this failure")
    predicted: int = Field(description="Cases whose top-1 answer was this failure")
    precision: float | None = None
    recall: float | None = None


class EvalReport(BaseModel):
    cases: int
    correct: int
    top1_accuracy: float
    healthy_cases: int
    healthy_false_alarms: int
    healthy_false_alarm_rate: float | None
    no_answer: int
    crashed: int
    per_class: list[ClassScore]
    confusion: dict[str, dict[str, int]] = Field(description="confusion[label][predicted] = count")
    results: list[CaseResult]
    mean_seconds: float
    max_seconds: float


def load_cases(root: Path) -> list[EvalCase]:
    """Every case of every `cases.json` under `root`; raises ValueError on a malformed manifest or a duplicate id."""
    cases: list[EvalCase] = []
    for manifest in sorted(Path(root).rglob("cases.json")):
        try:
            raw = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{manifest}: not a readable JSON list of cases ({exc})") from exc
        if not isinstance(raw, list):
            raise ValueError(f"{manifest}: expected a JSON list of case objects")
        for i, item in enumerate(raw):
            try:
                case = EvalCase(**item, folder=manifest.parent)
            except (TypeError, ValidationError) as exc:
                raise ValueError(f"{manifest} case {i}: {exc}") from exc
            if case.label not in FAILURE_IDS:
                raise ValueError(f"{manifest} case {case.id}: label {case.label!r} is not a failure id")
            cases.append(case)
    ids = Counter(c.id for c in cases)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:
        raise ValueError(f"duplicate case ids: {', '.join(dupes)}")
    return cases


def run_case(case: EvalCase) -> Diagnosis:
    """classify on the case's inputs, through the same entry points the tools use."""
    from ml_debug_mcp.core.diagnosis.classify import classify, classify_path, classify_text

    error_text = case.error_text
    if case.error_file:
        error_text = (error_text or "") + case.resolve(case.error_file).read_text(errors="replace")
    code_path = case.resolve(case.code) if case.code else None
    if case.log:
        return classify_path(case.resolve(case.log), fmt=case.format, log_path=case.log, code_path=code_path,
                             error_text=error_text)
    if case.log_text is not None:
        return classify_text(case.log_text, fmt=case.format, code_path=code_path, error_text=error_text)
    return classify(error_text=error_text, code_path=code_path, series=case.series)


def _score(case: EvalCase) -> CaseResult:
    start = time.perf_counter()
    try:
        diagnosis = run_case(case)
    except Exception as exc:  # a crash is a wrong answer to report, not a reason to stop the evaluation
        return CaseResult(id=case.id, label=case.label, predicted=CRASHED, correct=False,
                          seconds=time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    ranked = diagnosis.hypotheses
    top = ranked[0] if ranked else None
    predicted = top.failure if top is not None else NO_ANSWER
    return CaseResult(id=case.id, label=case.label, predicted=predicted,
                      confidence=top.confidence if top is not None else None,
                      correct=predicted == case.label or predicted in case.accept,
                      runner_up=[f"{h.failure}:{h.confidence:.2f}" for h in ranked[1:4]], seconds=seconds)


def evaluate(root: Path, cases: list[EvalCase] | None = None) -> EvalReport:
    """Score classify on every case under `root` (or on `cases`)."""
    cases = load_cases(root) if cases is None else cases
    results = [_score(c) for c in cases]
    confusion: dict[str, dict[str, int]] = {}
    for r in results:
        row = confusion.setdefault(r.label, {})
        row[r.predicted] = row.get(r.predicted, 0) + 1
    labels = sorted({r.label for r in results} | {r.predicted for r in results if r.predicted in FAILURE_IDS})
    per_class = []
    for failure in labels:
        labelled = [r for r in results if r.label == failure]
        predicted = [r for r in results if r.predicted == failure]
        per_class.append(ClassScore(
            failure=failure, support=len(labelled), predicted=len(predicted),
            precision=round(sum(r.correct for r in predicted) / len(predicted), 3) if predicted else None,
            recall=round(sum(r.correct for r in labelled) / len(labelled), 3) if labelled else None))
    healthy = [r for r in results if r.label == "healthy"]
    alarms = [r for r in healthy if r.predicted not in ("healthy", NO_ANSWER, CRASHED)]
    seconds = [r.seconds for r in results] or [0.0]
    correct = sum(r.correct for r in results)
    return EvalReport(
        cases=len(results), correct=correct, top1_accuracy=round(correct / len(results), 4) if results else 0.0,
        healthy_cases=len(healthy), healthy_false_alarms=len(alarms),
        healthy_false_alarm_rate=round(len(alarms) / len(healthy), 4) if healthy else None,
        no_answer=sum(r.predicted == NO_ANSWER for r in results),
        crashed=sum(r.predicted == CRASHED for r in results), per_class=per_class, confusion=confusion,
        results=results, mean_seconds=sum(seconds) / len(seconds), max_seconds=max(seconds))


def format_report(report: EvalReport) -> str:
    """The report as plain text: headline numbers, per-class table, confusion matrix, the misses."""
    lines = [
        f"cases: {report.cases}   top-1 accuracy: {report.top1_accuracy:.3f} ({report.correct}/{report.cases})",
        f"healthy false alarms: {report.healthy_false_alarms}/{report.healthy_cases}"
        + (f" (rate {report.healthy_false_alarm_rate:.3f})" if report.healthy_false_alarm_rate is not None else ""),
        (f"no answer: {report.no_answer}   crashed: {report.crashed}   classify time per case: "
         f"mean {1000 * report.mean_seconds:.0f} ms, max {1000 * report.max_seconds:.0f} ms"),
        "",
        f"{'failure':22s} {'support':>7s} {'predicted':>9s} {'precision':>9s} {'recall':>7s}",
    ]
    for s in report.per_class:
        p = "-" if s.precision is None else f"{s.precision:.2f}"
        r = "-" if s.recall is None else f"{s.recall:.2f}"
        lines.append(f"{s.failure:22s} {s.support:7d} {s.predicted:9d} {p:>9s} {r:>7s}")
    lines += ["", "confusion (label -> predicted: count)"]
    for label in sorted(report.confusion):
        row = report.confusion[label]
        cells = ", ".join(f"{p}: {n}" for p, n in sorted(row.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {label:22s} {cells}")
    misses = [r for r in report.results if not r.correct]
    if misses:
        lines += ["", "misclassified"]
        for r in misses:
            extra = f" [{r.error}]" if r.error else (f" (next: {', '.join(r.runner_up)})" if r.runner_up else "")
            conf = f" {r.confidence:.2f}" if r.confidence is not None else ""
            lines.append(f"  {r.id}: expected {r.label}, got {r.predicted}{conf}{extra}")
    return "\n".join(lines)
