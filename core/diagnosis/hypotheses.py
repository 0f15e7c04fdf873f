"""The shape of a diagnosis: hypotheses with evidence, causes, fixes and the calls that would confirm them.

Detectors produce `Hypothesis` objects; `classify` merges and ranks them into a `Diagnosis`.
These models are JSON-clean (no NaN/Inf floats) so the tool layer can return them as-is.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ml_debug_mcp.core.diagnosis.catalogue import FailureId

EvidenceKind = Literal["metric", "error", "log_line", "code", "gpu", "process", "summary", "missing", "output"]


class Evidence(BaseModel):
    """One observation behind a hypothesis, with where it was seen and the rule that flagged it."""

    kind: EvidenceKind
    text: str
    step: float | None = None
    value: float | None = None
    line_no: int | None = None
    metric: str | None = None
    rule: str | None = Field(None, description="The window and threshold that fired, e.g. 'median of last 50 > 3x min'")


class Fix(BaseModel):
    action: str
    expected_effect: str


# What each tool cannot run without: its input schema's `required` (a test keeps the two equal), or for
# tools that take one of several sources, the source to name when none is given.
REQUIRED_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "tail_log": ("path",), "read_metrics": ("path",), "check_shapes": ("entrypoint",),
    "compare_runs": ("before_path", "after_path"), "create_smoke_test": ("path", "failure"),
    "write_journal": ("title", "symptom", "root_cause", "fix", "resolution"),
    "watch_run": ("source",),
}
ONE_OF_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "classify_failure": ("code_path", "log_path", "log_text", "error_text", "series"),
    "analyze_gradients": ("entrypoint", "checkpoint", "stats_path"),
}
# Optional in the schema, yet only the agent knows them and the step is worth little without: a
# regression test run against a stand-in model cannot tell the user's bug from its fix.
ASK_FOR: dict[str, tuple[str, ...]] = {"create_smoke_test": ("entrypoint",)}


class NextStep(BaseModel):
    """A tool call an agent can make to confirm or refute the hypothesis."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    why: str
    missing: list[str] = Field(default_factory=list, description="Arguments only the agent knows (the re-run's "
                               "log, the model factory...): fill them in before calling")

    @model_validator(mode="after")
    def _name_missing_arguments(self) -> NextStep:
        """Say which required arguments the server could not fill, so no step is called half-made."""
        wanted = REQUIRED_ARGUMENTS.get(self.tool, ()) + ASK_FOR.get(self.tool, ())
        missing = [a for a in wanted if a not in self.arguments]
        options = ONE_OF_ARGUMENTS.get(self.tool, ())
        if options and not any(a in self.arguments for a in options):
            missing.append(options[0])
        self.missing = missing
        return self


def confidence_text(confidence: float) -> str:
    """Two decimals, rounded down: 0.797 must not read "0.80" next to "below 0.8"."""
    return f"{math.floor(confidence * 100 + 1e-6) / 100:.2f}"


class Hypothesis(BaseModel):
    failure: FailureId
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[Evidence] = Field(default_factory=list)
    root_causes: list[str] = Field(default_factory=list)
    fixes: list[Fix] = Field(default_factory=list)
    next_steps: list[NextStep] = Field(default_factory=list)
    onset_step: float | None = None


class Diagnosis(BaseModel):
    hypotheses: list[Hypothesis]
    summary: str
    needs_more_evidence: list[str] = Field(default_factory=list, description="What would raise confidence above 0.8, when the best hypothesis is below it")
    input_notes: list[str] = Field(default_factory=list, description="What the inputs say about themselves: how the "
                                   "log's steps were counted, a code file that did not parse, a tail that was not read")
    metrics_format: str | None = Field(None, description="Which log-format parser read the metric series (read_metrics "
                                       "format id), when any series were read")
