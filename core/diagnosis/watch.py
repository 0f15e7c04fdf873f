"""watch_run's engine: follow a running log or tracker run for a bounded time, stop at the first warning.

Every poll re-reads the source only when it grew (the same bounded parsers and tracker reads as every
tool) and runs the same classify pipeline, so the thresholds stay the detectors' own. A live watch
acts on what can be judged while the run goes on: numerical failures, errors in the log, and the early
warnings (entropy collapse or gibberish, zero-variance advantages, KL stuck at 0, the grad norm pinned
at its clip value, effective-rank collapse). Judgements of a whole run's shape (plateau, slow
convergence, hockey stick, overfitting, throughput) are left to classify_failure once it has ended:
on a run half-way through they would be guesses.

The cursor carries the last step seen and the failures already reported, so the next call reports
only what is new.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core.diagnosis.hypotheses import Diagnosis, Evidence, Hypothesis
from ml_debug_mcp.core.logs.sources import SourceNotFound, TrackerSource, read_tracker

MAX_SECONDS = 600.0
# An early warning whose condition holds from the run's first record (or that names no onset) may describe where
# the run started (a uniform policy, a fresh init clipping its first steps or taking large first updates), not
# something that went wrong: it is raised only once the run has the detectors' longest window of records
# (LIMITS.window_max), so it never rests on less than they judge. (numpy and the detectors load on the first
# watch, not when the server starts.)
RUN_SHAPE = frozenset({"plateau", "slow_convergence", "hockey_stick", "overfitting", "slow_throughput", "healthy"})
FAILING_NOW = frozenset({"nan_loss", "divergence", "vanishing_gradients", "oom", "shape_mismatch", "graph_reuse",
                         "device_mismatch",                         "dtype_mismatch", "cuda_assert", "distributed_hang"})


class Alarm(BaseModel):
    """One warning or failure that fired while watching, with what shows it."""

    failure: str
    kind: Literal["failure", "early_warning"]
    confidence: float
    step: float | None = Field(description="where it began (onset), else the step of its evidence")
    evidence: list[Evidence]
    fix: str | None = None


class WatchReport(BaseModel):
    """What one watch_run call saw, and the cursor to watch on from there."""

    status: Literal["alarm", "quiet"]
    source: str
    reason: str = Field(description="why the call returned: an alarm, the time was up, the run stopped or finished")
    alarms: list[Alarm] = Field(default_factory=list)
    run_state: Literal["running", "stopped", "finished", "unknown"]
    last_step: float | None = None
    new_records: int = Field(0, description="records that arrived during this call")
    polls: int = 0
    elapsed_seconds: float = 0.0
    cursor: str = Field(description="pass it to the next watch_run call to go on from here")
    notes: list[str] = Field(default_factory=list)


@dataclass
class Snapshot:
    diagnosis: Diagnosis
    records: int
    last_step: float | None
    first_step: float | None = None
    finished: bool = False
    notes: tuple[str, ...] = ()


@dataclass
class Cursor:
    source: str
    last_step: float | None = None
    records: int = 0
    reported: tuple[str, ...] = ()

    def encode(self) -> str:
        raw = json.dumps({"s": self.source, "t": self.last_step, "n": self.records, "r": list(self.reported)})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @classmethod
    def decode(cls, text: str | None, source: str) -> "Cursor":
        if not text:
            return cls(source)
        try:
            raw = json.loads(base64.urlsafe_b64decode(text.encode()).decode())
            cursor = cls(str(raw["s"]), raw["t"], int(raw["n"]), tuple(str(r) for r in raw["r"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError("The cursor is not one watch_run returned; pass the cursor of the last call unchanged, "
                             "or none to start watching afresh.") from None
        if cursor.source != source:
            raise ValueError(f"The cursor belongs to {cursor.source}, not {source}; pass none to watch this run.")
        return cursor


def alarms_of(diagnosis: Diagnosis, reported: tuple[str, ...] = (), first_step: float | None = None,
              records: int = 0) -> list[Alarm]:
    """The hypotheses a live watch acts on, strongest first, without those reported before."""
    from ml_debug_mcp.core.diagnosis.classify import HEALTHY_VETO
    from ml_debug_mcp.core.diagnosis.detectors.series_common import LIMITS

    out = []
    for h in diagnosis.hypotheses:
        if h.failure in RUN_SHAPE or h.failure in reported or h.confidence < HEALTHY_VETO:
            continue
        alarm = _alarm(h)
        since_start = h.onset_step is None or (first_step is not None and h.onset_step <= first_step)
        if alarm.kind == "early_warning" and since_start and records < LIMITS.window_max:
            continue
        out.append(alarm)
    return out


def _alarm(h: Hypothesis) -> Alarm:
    step = h.onset_step
    if step is None:
        step = next((e.step for e in h.evidence if e.step is not None), None)
    return Alarm(failure=h.failure, kind="failure" if h.failure in FAILING_NOW else "early_warning",
                 confidence=h.confidence, step=step, evidence=h.evidence[:3],
                 fix=h.fixes[0].action if h.fixes else None)


class Reader:
    """Reads a source when it changed since the last poll (a file's size and mtime; a tracker each time)."""

    def __init__(self, source: Path | TrackerSource, fmt: str | None = None) -> None:
        from ml_debug_mcp.core.diagnosis.classify import source_label

        self.source = source
        self.fmt = fmt
        self.label = source_label(source)
        self._stamp: tuple[int, int] | None = None
        self._last: Snapshot | None = None

    def read(self) -> Snapshot:
        from ml_debug_mcp.core.diagnosis.classify import LogEvidence, read_log_evidence

        if isinstance(self.source, TrackerSource):
            run = read_tracker(self.source)  # read here, not by read_log_evidence: the run's status matters too
            return self._snapshot(LogEvidence(run.parsed, [], None, 1), finished=run.finished)
        stamp = _stamp(self.source)
        if self._last is not None and stamp == self._stamp:
            return self._last
        self._stamp = stamp
        self._last = self._snapshot(read_log_evidence(self.source, self.fmt))
        return self._last

    def _snapshot(self, evidence, finished: bool = False) -> Snapshot:
        from ml_debug_mcp.core.diagnosis.classify import classify_evidence

        parsed = evidence.parsed
        last = [s.stats.last_step for s in parsed.series if s.stats.last_step is not None]
        first = [s.stats.first_step for s in parsed.series if s.stats.first_step is not None]
        diagnosis = classify_evidence(evidence, self.label)
        return Snapshot(diagnosis, parsed.records, max(last) if last else None, min(first) if first else None,
                        finished, tuple(parsed.warnings[:3]))


def _stamp(path: Path) -> tuple[int, int]:
    target = path
    try:
        if path.is_dir():  # a run directory: its newest file changes when the run writes
            target = max((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime_ns, default=path)
        st = target.stat()
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def watch(reader: Reader, *, seconds: float = 30.0, poll_seconds: float = 2.0, idle_seconds: float = 60.0,
          cursor: str | None = None, progress: Callable[[float, float | None, str | None], None] | None = None,
          should_stop: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> WatchReport:
    """Poll `reader` until an alarm fires, the run stops (no new data for `idle_seconds`) or finishes, or time is up.

    Raises ValueError for a cursor that is not this source's, and SourceError when a tracker cannot be read.
    """
    seconds = min(max(seconds, 0.0), MAX_SECONDS)
    state = Cursor.decode(cursor, reader.label)
    start = clock()
    last_growth = start
    polls, seen_records = 0, state.records
    snapshot: Snapshot | None = None
    alarms: list[Alarm] = []
    reason, run_state = "", "unknown"
    while True:
        try:
            snapshot = reader.read()
        except SourceNotFound as exc:  # a run started with the watch may not have logged yet: wait for it
            if snapshot is not None:
                raise
            snapshot = None
            waiting = str(exc)
        polls += 1
        if snapshot is None:
            elapsed = clock() - start
            if elapsed >= seconds or should_stop():
                raise SourceNotFound(f"{waiting} (waited {elapsed:.0f} s for it)")
            if progress is not None:
                progress(elapsed, seconds, "waiting for the run's first record")
            sleep(max(0.05, min(poll_seconds, seconds - elapsed)))
            continue
        now = clock()
        if snapshot.records != seen_records:
            last_growth = now
            seen_records = snapshot.records
        alarms = alarms_of(snapshot.diagnosis, state.reported, snapshot.first_step, snapshot.records)
        elapsed = now - start
        if progress is not None:
            step = "no step yet" if snapshot.last_step is None else f"step {snapshot.last_step:g}"
            progress(min(elapsed, seconds), seconds, f"{step}, {snapshot.records} records: "
                     + (alarms[0].failure if alarms else "no warning"))
        if alarms:
            reason, run_state = f"{alarms[0].failure} fired", "running"
            break
        if snapshot.finished:
            reason, run_state = "the run finished without a warning", "finished"
            break
        if snapshot.records and now - last_growth >= idle_seconds:  # before its first record a run is starting
            reason, run_state = f"no new records for {now - last_growth:.0f} s: the run has stopped writing", "stopped"
            break
        if elapsed >= seconds or should_stop():
            reason, run_state = f"watched {elapsed:.0f} s without a warning", "running"
            break
        sleep(max(0.05, min(poll_seconds, seconds - elapsed)))
    elapsed = clock() - start
    new = Cursor(reader.label, snapshot.last_step, snapshot.records,
                 tuple(dict.fromkeys(state.reported + tuple(a.failure for a in alarms))))
    return WatchReport(status="alarm" if alarms else "quiet", source=reader.label, reason=reason, alarms=alarms,
                       run_state=run_state, last_step=snapshot.last_step,
                       new_records=max(0, snapshot.records - state.records), polls=polls,
                       elapsed_seconds=round(elapsed, 2), cursor=new.encode(), notes=list(snapshot.notes))
