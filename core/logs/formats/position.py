"""Where a metric line stands in training: its step, epoch and place in the epoch, wherever printed.

Trainers print the position in a dozen ways — `iter: 60`, `Iteration 1000,`, `step 100/500`,
`Epoch [1][50/500]` (mmcv), `Epoch(train) [1][50/500]` (mmengine), `Epoch: [0] [217/361]`
(PaddleDetection), `Epoch[0] Batch [100]` (MXNet), `epoch: 1 step: 10` (MindSpore), `[12/300]`,
`Epoch 3/10 ... 120/500`. `find_position` reads one line into a `Position`; `StepClock` turns the
positions of successive lines into one increasing step (epochs times batches when the batch
count is printed, else batches counted on across epochs), so every parser gets the same rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "Epoch [1]", "Epoch(train) [1]", "epoch: 3", "Epoch 3/10", "epoch: [27/500]", "Epoch[0]", "epoch 001:"
_EPOCH_RE = re.compile(r"(?<![\w/])epoch(?:\s*\(\w+\))?\s*[:=#]?\s*\[?\s*(\d+)(?:\s*/\s*(\d+))?\s*\]?", re.I)
# What follows an epoch: "[50/500]", "[217/361]", "Batch [100]", "batch_id: 10" (and, for trainers that
# count steps inside the epoch, such as MindSpore, "step: 10").
_IN_EPOCH_RE = re.compile(r"\s*[,:|-]?\s*(?:\[\s*(\d+)\s*/\s*(\d+)\s*\]|(?:batch(?:_id)?|(step|iter))\s*"
                          r"[:=#]?\s*\[?\s*(?:\d+-)?(\d+)(?:\s*/\s*(\d+))?\s*\]?)", re.I)
# An explicit step anywhere: "iter: 60", "Iteration 1000", "step 100/500", "global_step: 700", "Iter(train) [50/900]".
_STEP_RE = re.compile(r"(?<![\w/.])(?:global[_ ]step|iter(?:ation)?s?|step|iter_num|num_updates|it)(?:\(\w+\))?\s*[:=#]?\s*"
                      r"\[?\s*(\d+)(?:\s*/\s*(\d+))?\s*\]?(?![\w.]|/\d|:\d)", re.I)
# A bare fraction: "[12/300]" or " 120/500 " (not a date 17/01/2019, not a path, not a ratio inside a word).
_FRACTION_RE = re.compile(r"(?<![\w/.:])\[?\s*(\d+)\s*/\s*(\d+)\s*\]?(?![\w/.:])")


@dataclass
class Position:
    """One line's place in training; any part may be missing."""

    step: float | None = None   # an explicit global step or iteration
    epoch: float | None = None
    index: float | None = None  # the batch inside the epoch
    per_epoch: float | None = None  # batches per epoch, when printed

    @property
    def found(self) -> bool:
        return self.step is not None or self.epoch is not None or self.index is not None


def find_position(line: str, steps_in_epoch: bool = False) -> Position:
    """The step, epoch and batch-in-epoch printed on one line (already cleaned of logger prefixes).

    `steps_in_epoch`: a `step N` right after the epoch counts inside the epoch (MindSpore's
    LossMonitor), not from the start of training (the default: PaddleOCR's `iter` is global).
    """
    pos = Position()
    m = _EPOCH_RE.search(line)
    if m:
        pos.epoch = float(m.group(1))
        rest = _IN_EPOCH_RE.match(line, m.end())
        if rest and (steps_in_epoch or not rest.group(3)):
            index, total = (rest.group(1), rest.group(2)) if rest.group(1) else (rest.group(4), rest.group(5))
            pos.index = float(index)
            pos.per_epoch = float(total) if total else None
    if pos.index is None:
        s = _STEP_RE.search(line)
        if s:
            pos.step = float(s.group(1))
    if pos.step is None and pos.index is None:
        for f in _FRACTION_RE.finditer(line):
            if m and m.start() <= f.start() < m.end():
                continue  # the "3/10" of "Epoch 3/10" is the epoch count
            if pos.epoch is not None:
                pos.index, pos.per_epoch = float(f.group(1)), float(f.group(2))
            else:
                pos.step = float(f.group(1))
            break
    return pos


class StepClock:
    """One increasing step from successive `Position`s: epochs and batches folded together.

    With the batch count printed, step = (epoch - first epoch) * batches + batch; without it, the
    batch numbers of a new epoch continue from the largest one of the previous epoch.
    """

    def __init__(self) -> None:
        self.first_epoch: float | None = None
        self.epoch: float | None = None
        self.offset = 0.0
        self.top = 0.0

    def step(self, pos: Position) -> float | None:
        if pos.step is not None:
            return pos.step
        if pos.index is None:
            return None
        if pos.epoch is None:
            return pos.index
        if self.first_epoch is None:
            self.first_epoch = self.epoch = pos.epoch
        if pos.per_epoch:
            return (pos.epoch - self.first_epoch) * pos.per_epoch + pos.index
        if pos.epoch != self.epoch:
            if pos.epoch > (self.epoch or 0):
                self.offset += self.top
            self.epoch, self.top = pos.epoch, 0.0
        self.top = max(self.top, pos.index)
        return self.offset + pos.index
