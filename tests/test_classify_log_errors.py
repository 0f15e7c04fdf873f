"""Error messages found where they really appear: at the end of a training log, not pasted alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ml_debug_mcp.core.diagnosis.classify import classify_path

CASES = json.loads((Path(__file__).parent / "eval" / "errors" / "cases.json").read_text())
HEALTHY_PREFIX = "".join(
    f"{{'loss': {0.3 + 2.0 * math.exp(-i / 15):.4f}, 'learning_rate': 5e-05, 'epoch': {i / 100:.2f}}}\n"
    for i in range(100)
)


def test_error_cases_are_still_recognised_at_the_end_of_a_healthy_log(tmp_path: Path):
    log = tmp_path / "train.log"
    correct, misses = 0, []
    for case in CASES:
        log.write_text(HEALTHY_PREFIX + case["error_text"] + "\n")
        diagnosis = classify_path(log)
        top = diagnosis.hypotheses[0].failure if diagnosis.hypotheses else None
        if top == case["label"] or top in case.get("accept", []):
            correct += 1
        else:
            misses.append((case["id"], case["label"], top))
    assert correct / len(CASES) >= 0.9, misses


def test_stand_alone_error_lines_without_a_traceback_are_found(tmp_path: Path):
    log = tmp_path / "train.log"
    log.write_text(HEALTHY_PREFIX + "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, "
                   "reducing to 32768\n" * 5 + "Loss is nan, stopping training\n")
    diagnosis = classify_path(log)
    assert diagnosis.hypotheses[0].failure == "nan_loss"
    line_numbers = [e.line_no for e in diagnosis.hypotheses[0].evidence if e.line_no]
    assert line_numbers and max(line_numbers) > 100, "evidence must point at the line in the file"
