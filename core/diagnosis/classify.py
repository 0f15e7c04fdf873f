"""classify: every detector's hypotheses merged into one ranked, explained `Diagnosis`.

Inputs are whatever the caller has: a log file, log text, raw metric series, an error message,
the training script. Each goes to its detector (series, error text, code), duplicates of one
failure are merged (independent signals raise confidence, noisy-OR), a mechanism outranks the
curve symptom it explains, and every hypothesis gets the catalogue's causes and fixes plus the
concrete tool calls that would confirm it. Detector modules are imported on first use, so
importing this module stays cheap for the server.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_debug_mcp.core.diagnosis.catalogue import failure_info
from ml_debug_mcp.core.diagnosis.compare import target_metric
from ml_debug_mcp.core.diagnosis.hypotheses import Diagnosis, Evidence, Hypothesis, NextStep, confidence_text
from ml_debug_mcp.core.logs.series import (OBJECTIVE_PATTERNS, ParsedLog, SeriesBuilder, canonical_metric_name,
                                           last_run)
from ml_debug_mcp.core.logs.sources import TrackerSource

CONFIRMED = 0.8  # at or above: the diagnosis stands; below: say what evidence is missing
HEALTHY_VETO = 0.5  # a failure this confident rules out calling the run healthy
MAX_EVIDENCE = 10
SECONDARY_WEIGHT = 0.5  # how much an agreeing independent signal counts in the noisy-OR
MAX_INPUT_NOTES = 5  # parser and code-scan notes passed on with a diagnosis
MAX_PASTE_CHARS = 8_000_000  # pasted error_text beyond this is read from its end

# A mechanism and the curve symptom it produces: when both fire, the mechanism ranks first.
EXPLAINS: dict[str, tuple[str, ...]] = {
    "vanishing_gradients": ("plateau", "slow_convergence", "hockey_stick"),
    "exploding_gradients": ("loss_spike", "divergence"),
    "nan_loss": ("divergence", "exploding_gradients", "loss_spike"),
    "divergence": ("loss_spike", "hockey_stick"),
    "oom": ("distributed_hang",),
    "mode_collapse": ("plateau",),
    "rank_collapse": ("hockey_stick",),
}

# Metrics that would settle each failure, for read_metrics calls and "log this" advice.
CONFIRMING_METRICS: dict[str, tuple[str, ...]] = {
    "nan_loss": ("loss", "grad_norm", "lr", "loss_scale"),
    "divergence": ("loss", "lr", "grad_norm"),
    "loss_spike": ("loss", "grad_norm", "lr"),
    "exploding_gradients": ("grad_norm", "loss", "update_ratio"),
    "vanishing_gradients": ("grad_norm", "update_ratio", "loss"),
    "plateau": ("loss", "lr", "grad_norm", "accuracy"),
    "slow_convergence": ("loss", "lr", "update_ratio"),
    "hockey_stick": ("loss", "lr", "eval_loss"),
    "overfitting": ("loss", "eval_loss", "accuracy", "eval_accuracy"),
    "slow_throughput": ("throughput", "step_time"),
    "mode_collapse": ("entropy", "reward", "kl", "advantage_std"),
    "rank_collapse": ("effective_rank", "loss"),
    "distributed_hang": ("loss", "step_time"),
}

# tail_log greps for failures whose log lines are worth reading around the onset.
LOG_GREPS: dict[str, str] = {
    "nan_loss": r"(?i)\b(nan|inf)\b|overflow",
    "loss_spike": r"(?i)loss",
    "distributed_hang": r"NCCL|Timeout|Watchdog|Error",
    "oom": r"(?i)out of memory|OOM|Killed",
    "cuda_assert": r"Assertion|device-side assert",
}


# ------------------------------------------------------------------------------------------------
# Inputs


def parsed_from_series(series: Mapping[str, Sequence[Sequence[float | None]]], max_points: int = 2000) -> ParsedLog:
    """Raw `{name: [[step, value], ...]}` as a ParsedLog (names canonicalised, None read as NaN).

    Raises ValueError naming the series when a point is not a [step, value] pair of numbers.
    """
    builders: dict[str, SeriesBuilder] = {}
    records = 0
    for raw_name, points in series.items():
        name = canonical_metric_name(str(raw_name))
        builder = builders.setdefault(name, SeriesBuilder(name, max_points=max_points))
        for i, point in enumerate(points):
            if not isinstance(point, (list, tuple)) or len(point) != 2:
                raise ValueError(f"series '{raw_name}' point {i} is {point!r}; each point must be [step, value].")
            step, value = point
            try:
                step_f = float(step)
                value_f = math.nan if value is None else float(value)
            except (TypeError, ValueError):
                raise ValueError(f"series '{raw_name}' point {i} is {point!r}; step and value must be numbers "
                                 "(value may be null for NaN).") from None
            builder.add(step_f, value_f)
            records += 1
    return ParsedLog(format="series", series=[b.build() for b in builders.values()], records=records)


def _merge_parsed(a: ParsedLog | None, b: ParsedLog | None) -> ParsedLog | None:
    if a is None or b is None:
        return a or b
    names = {(s.name, s.rank) for s in b.series}
    kept = [s for s in a.series if (s.name, s.rank) not in names]
    return a.model_copy(update={"series": kept + b.series, "records": a.records + b.records,
                                "warnings": a.warnings + b.warnings})


def _error_hypotheses(blocks: Iterable[Any], log_path: str | None, code_path: str | None) -> list[Hypothesis]:
    """detect_errors on each extracted error block, evidence line numbers shifted to the file's."""
    from ml_debug_mcp.core.diagnosis.detectors.error_text import detect_errors

    found: list[Hypothesis] = []
    for block in blocks:
        for h in detect_errors(block.text, log_path=log_path, code_path=code_path):
            for e in h.evidence:
                if e.line_no is not None:
                    e.line_no = e.line_no + block.first_line - 1
                if block.rank is not None and "rank" not in e.text:
                    e.text = f"[rank {block.rank}] {e.text}"
            found.append(h)
    return found


def _bare_error_hypotheses(text: str, first_line: int, known: set[str], log_path: str | None,
                           code_path: str | None) -> list[Hypothesis]:
    """Error lines outside any extracted block: only failures the blocks did not already explain."""
    from ml_debug_mcp.core.diagnosis.detectors.error_text import detect_errors

    found = [h for h in detect_errors(text, log_path=log_path, code_path=code_path) if h.failure not in known]
    for h in found:
        for e in h.evidence:
            if e.line_no is not None:
                e.line_no = e.line_no + first_line - 1
    return found


# ------------------------------------------------------------------------------------------------
# Merging and ranking


def _sources(h: Hypothesis) -> set[tuple[str, str | None]]:
    return {(e.kind, e.metric) for e in h.evidence}


def _noisy_or(base: float, extra: float) -> float:
    return 1.0 - (1.0 - base) * (1.0 - SECONDARY_WEIGHT * extra)


def _union(target: list, items: Iterable, key=lambda x: x) -> None:
    keys = {key(x) for x in target}
    for item in items:
        if key(item) not in keys:
            target.append(item)
            keys.add(key(item))


def merge_hypotheses(hypotheses: Iterable[Hypothesis]) -> list[Hypothesis]:
    """One hypothesis per failure: evidence combined; independent agreeing signals raise confidence."""
    groups: dict[str, list[Hypothesis]] = {}
    for h in hypotheses:
        groups.setdefault(h.failure, []).append(h)
    merged = []
    for group in groups.values():
        group.sort(key=lambda h: -h.confidence)
        top = group[0].model_copy(deep=True)
        confidence = top.confidence
        seen_sources = _sources(top)
        for other in group[1:]:
            if not (_sources(other) & seen_sources):
                confidence = _noisy_or(confidence, other.confidence)
            seen_sources |= _sources(other)
            _union(top.evidence, other.evidence, key=lambda e: e.text)
            _union(top.root_causes, other.root_causes)
            _union(top.fixes, other.fixes, key=lambda f: f.action)
            _union(top.next_steps, other.next_steps, key=lambda s: (s.tool, repr(sorted(s.arguments.items()))))
            onsets = [x for x in (top.onset_step, other.onset_step) if x is not None]
            top.onset_step = min(onsets) if onsets else None
        top.confidence = round(min(0.99, confidence), 3)
        top.evidence = top.evidence[:MAX_EVIDENCE]
        merged.append(top)
    return merged


def apply_explanations(hypotheses: list[Hypothesis]) -> None:
    """A mechanism that explains a co-occurring symptom ranks above it and cites it as support."""
    by_failure = {h.failure: h for h in hypotheses}
    for cause, symptoms in EXPLAINS.items():
        mechanism = by_failure.get(cause)
        if mechanism is None or mechanism.confidence < HEALTHY_VETO:
            continue
        for symptom in symptoms:
            effect = by_failure.get(symptom)
            if effect is None or mechanism.confidence < effect.confidence - 0.2:
                continue  # a weak mechanism signal does not overrule a strong symptom
            raised = max(mechanism.confidence, min(0.99, effect.confidence + 0.05))
            mechanism.confidence = round(min(0.99, max(raised, _noisy_or(mechanism.confidence, effect.confidence * 0.5))), 3)
            note = Evidence(kind="summary", text=f"explains the {symptom.replace('_', ' ')} seen in the same run "
                                                 f"({confidence_text(effect.confidence)})", rule=f"classify.explains:{cause}->{symptom}")
            _union(mechanism.evidence, [note], key=lambda e: e.text)


def _rank(hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    failures = [h for h in hypotheses if h.failure != "healthy"]
    healthy = [h for h in hypotheses if h.failure == "healthy"]
    if healthy and any(h.confidence >= HEALTHY_VETO for h in failures):
        healthy = []
    ranked = sorted(failures, key=lambda h: -h.confidence)
    if healthy:
        strong = [h for h in ranked if h.confidence >= healthy[0].confidence]
        weak = [h for h in ranked if h.confidence < healthy[0].confidence]
        ranked = strong + healthy + weak
    return ranked


# ------------------------------------------------------------------------------------------------
# Causes, fixes and next steps


def _attach_catalogue(h: Hypothesis) -> None:
    info = failure_info(h.failure)
    _union(h.root_causes, info.root_causes)
    _union(h.fixes, info.fixes, key=lambda f: f.action)


def _step(tool: str, why: str, **arguments: Any) -> NextStep:
    return NextStep(tool=tool, arguments={k: v for k, v in arguments.items() if v is not None}, why=why)


def _confirming_steps(h: Hypothesis, log_path: str | None, code_path: str | None,
                      available: set[str]) -> list[NextStep]:
    """The catalogue's confirm_with calls, with the arguments this run makes concrete."""
    steps: list[NextStep] = []
    for template in failure_info(h.failure).confirm_with:
        tool, why = template.tool, template.why
        if tool in ("read_metrics", "tail_log") and not log_path:
            continue
        if tool == "read_metrics":
            wanted = [m for m in CONFIRMING_METRICS.get(h.failure, ("loss",)) if not available or m in available]
            steps.append(_step(tool, why, path=log_path, names=wanted or None, plot=True))
        elif tool == "tail_log":
            grep = LOG_GREPS.get(h.failure)
            steps.append(_step(tool, why, path=log_path, grep=grep, around=3 if grep else None, lines=50))
        elif tool == "classify_failure":
            if code_path:
                continue  # the code was already scanned in this call
            steps.append(_step(tool, why + ". Pass code_path=<the training script>.", log_path=log_path))
        elif tool == "compare_runs":
            steps.append(_step(tool, why + ". Pass the fixed run's log as after_path.", before_path=log_path,
                               metric=target_metric(h.failure, available or None)))
        elif tool == "gpu_status":
            steps.append(_step(tool, why, samples=5, interval=1.0))
        elif tool in ("analyze_gradients", "check_shapes"):
            steps.append(_step(tool, why + (". Pass entrypoint='train.py:build' (a factory returning the model, or "
                                            "(model, batch); add input_shapes when it returns no batch) and your lr, "
                                            "checkpoint + checkpoint_after, or the stats_path TrainingProbe writes."
                                            if tool == "analyze_gradients" else
                                            ". Pass entrypoint='train.py:build' and input_shapes of one batch.")))
        else:
            steps.append(_step(tool, why))
    return steps


def _closing_steps(h: Hypothesis, log_path: str | None, available: set[str]) -> list[NextStep]:
    """For a confirmed failure: verify the fix, journal it, lock it in with a regression test."""
    info = failure_info(h.failure)
    symptom = h.evidence[0].text if h.evidence else info.description
    cause = h.root_causes[0] if h.root_causes else info.description
    fix = h.fixes[0].action if h.fixes else "(the fix you applied)"
    onset = f" at step {h.onset_step:g}" if h.onset_step is not None else ""
    steps = []
    if log_path:
        steps.append(_step("compare_runs", "After applying the fix and re-running, check the pathology is gone, the "
                                           "metric improved >= 10% and the run stayed stable; pass the new log as "
                                           "after_path.", before_path=log_path,
                           metric=target_metric(h.failure, available or None)))
    steps.append(_step("write_journal", "Record the symptom, root cause and fix once the fix is verified (edit the "
                                        "resolution to say how it was verified).",
                       path="journal.md", title=f"{info.title}{onset}", symptom=symptom, root_cause=cause, fix=fix,
                       resolution="Fix applied; verified with compare_runs on the re-run.", failure=h.failure,
                       evidence=[e.text for e in h.evidence[:5]]))
    steps.append(_step("create_smoke_test", "Lock the fix in with a regression test that fails if this failure "
                                            "comes back.", path=f"tests/test_{h.failure}_regression.py",
                       failure=h.failure))
    return steps


def _missing_evidence(top: Hypothesis | None, parsed: ParsedLog | None, log_path: str | None,
                      had_errors: bool, had_code: bool, pasted_binary: bool = False) -> list[str]:
    available = set(parsed.names) if parsed is not None else set()
    notes: list[str] = []
    if top is None:
        if pasted_binary:
            notes.append("The text looks binary (mostly non-text bytes): pass the training log or the traceback as text.")
        if not available:
            notes.append("No metric series were found" + (f" ({'; '.join(parsed.warnings)})" if parsed and parsed.warnings
                                                          else "") + ": pass a training log with loss values (any "
                         "common format), or series={'loss': [[step, value], ...]}.")
        elif "loss" not in available:
            notes.append(f"The log has {', '.join(sorted(available))} but no loss series: a loss curve is what most "
                         "detectors read. Log the training loss (and eval loss) per step.")
        else:
            notes.append("The loss series is too short to judge its shape: let the run log at least a few dozen steps, "
                         "then call classify_failure again.")
        if not had_errors:
            notes.append("If the run crashed, pass the traceback as error_text (or the log that contains it).")
        return notes
    if top.confidence >= CONFIRMED:
        return []
    missing = [m for m in CONFIRMING_METRICS.get(top.failure, ()) if m not in available]
    notes.append(f"{top.failure} is at {confidence_text(top.confidence)} (< {CONFIRMED}): the evidence is one weak or ambiguous "
                 "signal.")
    if missing:
        notes.append(f"Log {', '.join(missing)} per step: these series would confirm or rule out {top.failure}.")
    for step in top.next_steps[:2]:
        notes.append(f"Call {step.tool}({', '.join(f'{k}={v!r}' for k, v in step.arguments.items())}): {step.why}")
    if not had_code:
        notes.append("Pass code_path=<the training script> so the code scan can point at the line behind it.")
    return notes


def _looks_binary(text: str) -> bool:
    sample = text[:4096]
    odd = sum(1 for ch in sample if (ord(ch) < 32 and ch not in "\n\r\t") or 0x7f <= ord(ch) < 0xa0 or ch == "\ufffd")
    return odd > 0.1 * len(sample)


def _summary(ranked: list[Hypothesis], notes: list[str]) -> str:
    if not ranked:
        return "Not enough evidence to classify this run: no evidence for any failure in what was given. " + (
            notes[0] if notes else "")
    top = ranked[0]
    info = failure_info(top.failure)
    lead = top.evidence[0].text if top.evidence else info.description
    if top.failure == "healthy":
        weak = [h for h in ranked[1:] if h.failure != "healthy"]
        text = (f"The run looks healthy (confidence {confidence_text(top.confidence)}): {lead}." if top.confidence >= 0.5
                else f"Nothing alarming, tentatively (confidence {confidence_text(top.confidence)}): {lead}.")
        if weak:
            text += " Weak signals below the alarm level: " + ", ".join(f"{h.failure} ({confidence_text(h.confidence)})" for h in weak) + "."
        return text
    onset = f" from step {top.onset_step:g}" if top.onset_step is not None else ""
    text = f"Most likely {info.title} ({top.failure}, confidence {confidence_text(top.confidence)}){onset}: {lead}."
    others = [h for h in ranked[1:] if h.failure != "healthy"][:3]
    if others:
        text += " Also considered: " + ", ".join(f"{h.failure} ({confidence_text(h.confidence)})" for h in others) + "."
        if others[0].confidence >= HEALTHY_VETO and top.confidence - others[0].confidence < 0.1:
            text += " The top two are close: the next steps below tell them apart."
    if top.fixes:
        text += f" First fix to try: {top.fixes[0].action}."
    if top.confidence < CONFIRMED:
        text += " Confidence is below 0.8; see needs_more_evidence."
    return text


# ------------------------------------------------------------------------------------------------
# Entry points


def parse_safely(*, path: Path | None = None, text: str | None = None, fmt: str | None = None,
                 progress: Callable[[float, float | None, str | None], None] | None = None) -> ParsedLog:
    """parse_metrics / parse_metrics_text, degrading an unexpected parser failure to a warning.

    Raises ValueError for an unknown `fmt` (a caller error).
    """
    from ml_debug_mcp.core.logs.metrics import FORMATS, parse_metrics, parse_metrics_text

    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"Unknown format '{fmt}'. Use one of: {', '.join(sorted(FORMATS))}, or omit it to auto-detect.")
    try:
        if path is not None:
            return parse_metrics(path, fmt=fmt, progress=progress)
        return parse_metrics_text(text or "", fmt=fmt)
    except Exception as exc:  # a parser bug must not hide the errors in the log
        return ParsedLog(path=str(path) if path is not None else None, format=fmt or "unknown",
                         warnings=[f"metric parsing failed ({type(exc).__name__}: {exc}); no metric series read"])


def stand_in_loss(parsed: ParsedLog) -> tuple[ParsedLog, str | None]:
    """A log without a series called `loss` still has a training objective: read the closest one as
    the loss (a loss-named series, else NLL, else perplexity, else the eval loss alone), and say which."""
    if parsed.get("loss") is not None or not parsed.series:
        return parsed, None
    for pattern in OBJECTIVE_PATTERNS:
        named = sorted({s.name for s in parsed.series if pattern.search(s.name)},
                       key=lambda n: (not n.startswith("total"), len(n), n))
        if named:
            break
    else:
        named = ["eval_loss"] if parsed.get("eval_loss") is not None else []
    if not named:
        return parsed, None
    chosen = named[0]
    extra = [s.model_copy(update={"name": "loss"}) for s in parsed.series if s.name == chosen]
    return parsed.model_copy(update={"series": parsed.series + extra}), (
        f"The log has no series called loss: '{chosen}' was read as the loss.")


def classify(parsed: ParsedLog | None = None, error_text: str | None = None, code_path: Path | None = None,
             log_path: str | None = None, *, series: Mapping[str, Sequence[Sequence[float | None]]] | None = None,
             error_blocks: Iterable[Any] = (), tail_text: str | None = None, tail_first_line: int = 1) -> Diagnosis:
    """Ranked hypotheses from whatever evidence is given; never raises on bad data.

    `log_path` is the path as the caller knows it, used in suggested tool calls. `error_blocks`
    are `core.errors.ErrorBlock`s already cut out of a log (see `classify_path`); `tail_text` is the
    end of the log, scanned too for error lines that stand alone (no traceback around them, such as
    DeepSpeed's "OVERFLOW!" or Keras' "Invalid loss"), numbered from `tail_first_line`. Raises
    ValueError only for malformed `series` (a caller error).
    """
    from ml_debug_mcp.core.diagnosis.detectors.series_checks import detect_series

    parsed = _merge_parsed(parsed, parsed_from_series(series) if series else None)
    paste_note = None
    if error_text and len(error_text) > MAX_PASTE_CHARS:
        paste_note = (f"error_text is {len(error_text) / 1e6:.0f} MB: only its last {MAX_PASTE_CHARS // 1_000_000} MB "
                      "were read (errors and the latest metrics sit at the end); pass the file as log_path to read it all.")
        error_text = error_text[-MAX_PASTE_CHARS:]
    if parsed is None and error_text and error_text.strip():
        pasted = parse_safely(text=error_text)  # pasted text is often a log excerpt: read its metric lines too
        parsed = pasted if pasted.series else None
    code_arg = str(code_path) if code_path is not None else None
    found: list[Hypothesis] = []
    input_notes: list[str] = [paste_note] if paste_note else []
    if parsed is not None and parsed.series and parsed.format not in ("series", "unknown"):
        from ml_debug_mcp.core.logs.formats.registry import describe

        input_notes.append(f"Metric series read as {parsed.format} ({describe(parsed.format)}): {parsed.records} records.")
    if parsed is not None:
        parsed, stand_in = stand_in_loss(parsed)
        input_notes += [stand_in] if stand_in else []
        parsed, runs = last_run(parsed)
        if runs > 1:
            input_notes.append(f"The log holds {runs} runs one after another (the step count starts again): only the "
                               "last run's curves were judged; pass one run's log to judge another.")
        found += detect_series(parsed)
    blocks = list(error_blocks)
    found += _error_hypotheses(blocks, log_path, code_arg)
    if tail_text:
        found += _bare_error_hypotheses(tail_text, tail_first_line, {h.failure for h in found}, log_path, code_arg)
    if error_text and error_text.strip():
        from ml_debug_mcp.core.diagnosis.detectors.error_text import detect_errors

        found += detect_errors(error_text, log_path=log_path, code_path=code_arg)
    pasted = [text for text in (tail_text, error_text) if text and text.strip()]
    if pasted:
        from ml_debug_mcp.core.diagnosis.detectors.generated_text import detect_generated_text
        from ml_debug_mcp.core.diagnosis.detectors.throughput_text import detect_throughput_text

        for text in pasted:
            found += detect_generated_text(text) + detect_throughput_text(text)
    if code_path is not None:
        from ml_debug_mcp.core.diagnosis.detectors.code_scan import code_hypotheses, scan_code

        signals = {h.failure for h in found if h.confidence >= HEALTHY_VETO and h.failure != "healthy"}
        findings = scan_code(Path(code_path))
        found += code_hypotheses(findings, signals)
        input_notes += [f"code_path: {f.message}" for f in findings if f.line == 0 or f.rule == "syntax_error"]
    if not found and parsed is not None:
        from ml_debug_mcp.core.diagnosis.detectors.series_checks import few_records_reading

        found += [h for h in [few_records_reading(parsed)] if h is not None]
    merged = merge_hypotheses(found)
    apply_explanations(merged)
    ranked = _rank(merged)
    available = set(parsed.names) if parsed is not None else set()
    for h in ranked:
        _attach_catalogue(h)
        _union(h.next_steps, _confirming_steps(h, log_path, code_arg, available),
               key=lambda s: (s.tool, repr(sorted(s.arguments.items()))))
    top = ranked[0] if ranked else None
    if top is not None and top.failure != "healthy" and top.confidence >= CONFIRMED:
        planned = {step.tool for step in top.next_steps}  # a failure whose checks already compare runs: once
        top.next_steps += [step for step in _closing_steps(top, log_path, available)
                           if not (step.tool == "compare_runs" and "compare_runs" in planned)]
    had_errors = bool(blocks) or bool(error_text and error_text.strip())
    binary = bool(error_text) and _looks_binary(error_text)
    notes = _missing_evidence(top, parsed, log_path, had_errors, code_path is not None, binary)
    input_notes += parsed.warnings[:MAX_INPUT_NOTES] if parsed is not None else []
    read_as = parsed.format if parsed is not None and parsed.series else None
    return Diagnosis(hypotheses=ranked, summary=_summary(ranked, notes), needs_more_evidence=notes,
                     input_notes=input_notes, metrics_format=read_as)


def classify_text(text: str, fmt: str | None = None, *, code_path: Path | None = None, error_text: str | None = None,
                  series: Mapping[str, Sequence[Sequence[float | None]]] | None = None) -> Diagnosis:
    """Classify pasted log text: its metrics and the errors in it (plus any extra evidence given)."""
    from ml_debug_mcp.core.logs.error_blocks import extract_errors_text

    note = None
    if len(text) > MAX_PASTE_CHARS:
        note = (f"log_text is {len(text) / 1e6:.0f} MB: only its last {MAX_PASTE_CHARS // 1_000_000} MB were read; "
                "pass the file as log_path to read it all.")
        text = text[-MAX_PASTE_CHARS:]
    parsed = parse_safely(text=text, fmt=fmt)
    diagnosis = classify(parsed, error_text=error_text, code_path=code_path, series=series,
                         error_blocks=extract_errors_text(text), tail_text=text)
    if note:
        diagnosis.input_notes.insert(0, note)
    return diagnosis


TAIL_LINES_SCANNED = 200  # the last lines also searched for stand-alone error lines


def classify_path(path: Path | TrackerSource, fmt: str | None = None, *, log_path: str | None = None, code_path: Path | None = None,
                  error_text: str | None = None,
                  series: Mapping[str, Sequence[Sequence[float | None]]] | None = None,
                  progress: Callable[[float, float | None, str | None], None] | None = None) -> Diagnosis:
    """Classify a log file (or run directory): its metric series plus the errors in its last 256 KB.

    `path` is already resolved inside the roots; `log_path` is how the caller named it (defaults
    to `path`), used in suggested tool calls. Raises ValueError only for an unknown `fmt`.
    """
    evidence = read_log_evidence(path if isinstance(path, TrackerSource) else Path(path), fmt, progress)
    return classify_evidence(evidence, log_path or source_label(path), error_text=error_text, code_path=code_path,
                             series=series)


def source_label(path: Path | TrackerSource) -> str:
    """How suggested tool calls name a source: the tracker URI as written, or the path."""
    return path.label if isinstance(path, TrackerSource) else str(path)


def classify_evidence(evidence: "LogEvidence", log_path: str, **extra: Any) -> Diagnosis:
    """classify() on what read_log_evidence found: the series, the error blocks and the tail text."""
    return classify(evidence.parsed, log_path=log_path, error_blocks=evidence.blocks, tail_text=evidence.tail_text,
                    tail_first_line=evidence.tail_first_line, **extra)


@dataclass
class LogEvidence:
    """What a log file offers classify: its metric series, the error blocks and the text of its end."""

    parsed: ParsedLog
    blocks: list[Any]
    tail_text: str | None
    tail_first_line: int


def read_log_evidence(path: Path | TrackerSource, fmt: str | None = None,
                      progress: Callable[[float, float | None, str | None], None] | None = None) -> LogEvidence:
    """Parse a log (or run directory) and cut the errors out of its last 256 KB, or read a tracker run.

    Never raises but for `fmt`, and a SourceError (a ValueError) for a tracker run that cannot be read."""
    from ml_debug_mcp.core.logs.sources import read_tracker
    from ml_debug_mcp.core.logs.tail import tail_file

    if isinstance(path, TrackerSource):  # a tracker keeps metrics only: no log text to scan for errors
        return LogEvidence(read_tracker(path, progress=progress).parsed, [], None, 1)
    parsed = parse_safely(path=path, fmt=fmt, progress=progress)
    evidence = LogEvidence(parsed, [], None, 1)
    if path.is_file():
        try:
            tail = tail_file(path, lines=TAIL_LINES_SCANNED)
        except Exception as exc:
            parsed.warnings.append(f"error scan of the log tail failed ({type(exc).__name__}: {exc})")
        else:
            evidence.blocks = list(tail.errors)
            parsed.warnings += [w for w in tail.warnings if w not in parsed.warnings]
            # A finished (or pasted) file need not end in a newline: its last line still counts here.
            shown = list(tail.lines) + ([tail.partial_line] if tail.partial_line is not None else [])
            if shown:
                evidence.tail_text = "\n".join(line.text for line in shown)
                evidence.tail_first_line = shown[0].line_no or 1
    return evidence
