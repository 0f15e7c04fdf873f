"""The shape of a diagnosis: hypotheses with evidence, causes, fixes and the calls that would confirm them.

Detectors produce `Hypothesis` objects; `classify` merges and ranks them into a `Diagnosis`.
These models are JSON-clean (no NaN/Inf floats) so the tool layer can return them as-is.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core.catalogue import FailureId

EvidenceKind = Literal["metric", "error", "log_line", "code", "gpu", "process", "summary", "missing"]


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


class NextStep(BaseModel):
    """A tool call an agent can make to confirm or refute the hypothesis."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    why: str


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
