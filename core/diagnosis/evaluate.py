"""The classify evaluation harness: run every labelled case, score the top-1 answer.

Two kinds of set (format: tests/eval/README.md): `cases.json` manifests under an evaluation root
(the regression set), and the real-world corpus, JSON lines of pasted excerpts split into `dev`
and a sealed `test` (tests/eval/realworld/). A real-world excerpt is scored the two ways a user
hands it over: as a log file (`classify_path`) and as pasted `error_text`. The report gives top-1
accuracy, per-class precision and recall, the healthy false-alarm rate, the confusion matrix,
the calibration of the top confidence, and the same figures for a keyword-grep baseline, so a
detector change is judged on the whole set rather than on the case it was written for.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
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
    framework: str | None = None
    paste_style: str | None = None
    pasted: bool = Field(False, description="Real-world excerpt: scored as a log file and as error_text")
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


class CalibrationBand(BaseModel):
    band: str = Field(description="Top-1 confidence range, e.g. '0.8-1.0'")
    cases: int
    correct: int
    accuracy: float | None = None
    mean_confidence: float | None = None


class Calibration(BaseModel):
    """Does a confidence mean a probability? Accuracy of the top answer per confidence band."""

    expected_calibration_error: float | None = Field(
        None, description="Mean |accuracy - confidence| over ten equal-width bins, weighted by cases")
    bands: list[CalibrationBand]


class EvalReport(BaseModel):
    name: str = "classify"
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
    calibration: Calibration | None = None
    results: list[CaseResult]
    mean_seconds: float
    max_seconds: float
    healthy_false_alarms_at_half: int = Field(0, description="Healthy cases whose top-1 is a failure at >= 0.5")


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


SPLITS = ("dev", "test")
REALWORLD = Path("realworld")  # under the evaluation root: dev.jsonl, test.jsonl, test.sha256
Mode = str  # "log" (classify_failure(log_path=...)) or "error" (classify_failure(error_text=...))


def load_realworld(root: Path, split: str) -> list[EvalCase]:
    """The real-world corpus split `split` ("dev" or "test") as cases whose text is the pasted excerpt."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} (or 'regression')")
    path = Path(root) / REALWORLD / f"{split}.jsonl"
    cases = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        raw = json.loads(line)
        try:
            cases.append(EvalCase(id=raw["id"], label=raw["label"], accept=raw.get("accept") or [],
                                  log_text=raw["text"], source=raw.get("source_url"), notes=raw.get("notes"),
                                  framework=raw.get("framework"), paste_style=raw.get("paste_style"),
                                  pasted=True, folder=path.parent))
        except (KeyError, ValidationError) as exc:
            raise ValueError(f"{path}:{n}: {exc}") from exc
    return cases


def run_case(case: EvalCase, mode: Mode = "log") -> Diagnosis:
    """classify on the case's inputs, through the same entry points the tools use.

    A case with only pasted text is scored as the tool receives it: in "log" mode the text is a log
    file passed as log_path, in "error" mode it is passed as error_text.
    """
    from ml_debug_mcp.core.diagnosis.classify import classify, classify_path, classify_text

    error_text = case.error_text
    if case.error_file:
        error_text = (error_text or "") + case.resolve(case.error_file).read_text(errors="replace")
    code_path = case.resolve(case.code) if case.code else None
    if case.log:
        return classify_path(case.resolve(case.log), fmt=case.format, log_path=case.log, code_path=code_path,
                             error_text=error_text)
    if case.pasted and mode == "error":
        return classify(error_text=case.log_text, code_path=code_path)
    if case.pasted:
        with tempfile.TemporaryDirectory(prefix="mldebug-eval-") as folder:
            path = Path(folder) / "pasted.log"
            path.write_text(case.log_text, encoding="utf-8")
            return classify_path(path, fmt=case.format, log_path="pasted.log", code_path=code_path,
                                 error_text=error_text)
    if case.log_text is not None:
        return classify_text(case.log_text, fmt=case.format, code_path=code_path, error_text=error_text)
    return classify(error_text=error_text, code_path=code_path, series=case.series)


Predictor = Callable[[EvalCase, Mode], tuple[str, float | None, list[str]]]


def classify_predictor(case: EvalCase, mode: Mode) -> tuple[str, float | None, list[str]]:
    """(top failure, its confidence, the next answers) from classify."""
    ranked = run_case(case, mode).hypotheses
    if not ranked:
        return NO_ANSWER, None, []
    return ranked[0].failure, ranked[0].confidence, [f"{h.failure}:{h.confidence:.2f}" for h in ranked[1:4]]


def _score(case: EvalCase, mode: Mode, predictor: Predictor) -> CaseResult:
    start = time.perf_counter()
    try:
        predicted, confidence, runner_up = predictor(case, mode)
    except Exception as exc:  # a crash is a wrong answer to report, not a reason to stop the evaluation
        return CaseResult(id=case.id, label=case.label, predicted=CRASHED, correct=False,
                          seconds=time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")
    return CaseResult(id=case.id, label=case.label, predicted=predicted, confidence=confidence,
                      correct=predicted == case.label or predicted in case.accept, runner_up=runner_up,
                      seconds=time.perf_counter() - start)


def calibration(results: list[CaseResult]) -> Calibration:
    """Reliability of the top-1 confidence: ECE over ten bins, and accuracy in the bands agents act on."""
    scored = [r for r in results if r.confidence is not None]
    ece = 0.0
    for i in range(10):
        low, high = i / 10, (i + 1) / 10
        inside = [r for r in scored if low <= r.confidence < high or (i == 9 and r.confidence >= 1.0)]
        if inside:
            accuracy = sum(r.correct for r in inside) / len(inside)
            ece += len(inside) / len(scored) * abs(accuracy - sum(r.confidence for r in inside) / len(inside))
    bands = []
    for low, high in ((0.0, 0.5), (0.5, 0.8), (0.8, 1.01)):
        inside = [r for r in scored if low <= r.confidence < high]
        correct = sum(r.correct for r in inside)
        bands.append(CalibrationBand(
            band=f"{low:.1f}-{min(high, 1.0):.1f}", cases=len(inside), correct=correct,
            accuracy=round(correct / len(inside), 3) if inside else None,
            mean_confidence=round(sum(r.confidence for r in inside) / len(inside), 3) if inside else None))
    return Calibration(expected_calibration_error=round(ece, 4) if scored else None, bands=bands)


def evaluate(root: Path, cases: list[EvalCase] | None = None, *, mode: Mode = "log",
             predictor: Predictor = classify_predictor, name: str = "classify") -> EvalReport:
    """Score `predictor` (classify by default) on every case under `root` (or on `cases`)."""
    cases = load_cases(root) if cases is None else cases
    results = [_score(c, mode, predictor) for c in cases]
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
        name=name, cases=len(results), correct=correct,
        top1_accuracy=round(correct / len(results), 4) if results else 0.0,
        healthy_cases=len(healthy), healthy_false_alarms=len(alarms),
        healthy_false_alarm_rate=round(len(alarms) / len(healthy), 4) if healthy else None,
        healthy_false_alarms_at_half=sum(1 for r in alarms if (r.confidence or 0.0) >= 0.5),
        no_answer=sum(r.predicted == NO_ANSWER for r in results),
        crashed=sum(r.predicted == CRASHED for r in results), per_class=per_class, confusion=confusion,
        calibration=calibration(results) if any(r.confidence is not None for r in results) else None,
        results=results, mean_seconds=sum(seconds) / len(seconds), max_seconds=max(seconds))


# ------------------------------------------------------------------------------------------------
# The keyword-grep baseline: what a twelve-line script gets, so the gain over it is visible.

KEYWORD_RULES: tuple[tuple[str, str], ...] = (
    ("oom", r"out of memory|\bOOM\b|RESOURCE_EXHAUSTED|Killed"),
    ("cuda_assert", r"device-side assert|illegal memory access"),
    ("distributed_hang", r"NCCL|Watchdog|timed? ?out"),
    ("shape_mismatch", r"size mismatch|shape|must match the size"),
    ("device_mismatch", r"same device"),
    ("dtype_mismatch", r"scalar type|dtype"),
    ("graph_reuse", r"backward through the graph|inplace operation|does not require grad"),
    ("nan_loss", r"\bnan\b"),
    ("exploding_gradients", r"\binf\b|overflow|explod"),
    ("mode_collapse", r"collapse|repeat"),
    ("slow_throughput", r"it/s|s/it|slow"),
)


def keyword_baseline(case: EvalCase, mode: Mode) -> tuple[str, float | None, list[str]]:
    """The first keyword family found in the pasted text, else healthy."""
    text = (case.log_text or "") + (case.error_text or "")
    for failure, pattern in KEYWORD_RULES:
        if re.search(pattern, text, re.I):
            return failure, None, []
    return "healthy", None, []


def format_report(report: EvalReport) -> str:
    """The report as plain text: headline numbers, per-class table, confusion matrix, the misses."""
    lines = [
        f"[{report.name}] cases: {report.cases}   top-1 accuracy: {report.top1_accuracy:.3f} "
        f"({report.correct}/{report.cases})",
        f"healthy false alarms: {report.healthy_false_alarms}/{report.healthy_cases}"
        + (f" (rate {report.healthy_false_alarm_rate:.3f}; at confidence >= 0.5: "
           f"{report.healthy_false_alarms_at_half})" if report.healthy_false_alarm_rate is not None else ""),
        (f"no answer: {report.no_answer}   crashed: {report.crashed}   time per case: "
         f"mean {1000 * report.mean_seconds:.0f} ms, max {1000 * report.max_seconds:.0f} ms"),
    ]
    if report.calibration is not None:
        cal = report.calibration
        bands = "; ".join(f"{b.band}: {b.correct}/{b.cases}" + (f" right ({b.accuracy:.2f}, mean conf "
                                                                f"{b.mean_confidence:.2f})" if b.cases else "")
                          for b in cal.bands)
        lines.append(f"calibration: ECE {cal.expected_calibration_error:.3f}; by confidence {bands}")
    lines += ["", f"{'failure':22s} {'support':>7s} {'predicted':>9s} {'precision':>9s} {'recall':>7s}"]
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


class SplitReport(BaseModel):
    """One split scored every way: classify from log_path, from error_text, and the keyword baseline."""

    split: str
    reports: list[EvalReport]


def evaluate_split(root: Path, split: str) -> SplitReport:
    """`regression` is the cases.json set; `dev` and `test` are the real-world corpus, scored three ways."""
    if split == "regression":
        return SplitReport(split=split, reports=[evaluate(root, name="classify")])
    cases = load_realworld(root, split)
    return SplitReport(split=split, reports=[
        evaluate(root, cases, mode="log", name="classify_failure(log_path=...)"),
        evaluate(root, cases, mode="error", name="classify_failure(error_text=...)"),
        evaluate(root, cases, predictor=keyword_baseline, name="keyword-grep baseline")])


def format_split_report(report: SplitReport, *, misses: bool = True) -> str:
    parts = [f"== split: {report.split}"]
    for r in report.reports:
        text = format_report(r)
        if not misses:
            text = text.split("\nmisclassified")[0]
        parts.append(text)
    if len(report.reports) == 3:
        log, error, base = report.reports
        parts.append(f"gain over the keyword baseline: log_path {100 * (log.top1_accuracy - base.top1_accuracy):+.1f} "
                     f"points, error_text {100 * (error.top1_accuracy - base.top1_accuracy):+.1f} points")
    return "\n\n".join(parts)
