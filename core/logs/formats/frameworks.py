"""Named parsers for the console output of frameworks outside the PyTorch-Trainer family.

Most of them print `name: value` pairs behind a position (`find_position` reads it), so they are
the key/value parser with a format id the diagnosis can cite, and a few renames. Caffe and MXNet
keep state across lines (the iteration a test-net block belongs to, the epoch a summary closes).
Each parser's docstring names the code that prints its lines; the golden fixtures, copied from
public logs, are in tests/fixtures/logs/frameworks/ with their sources.
"""

from __future__ import annotations

import re

from ml_debug_mcp.core.logs.formats.common import NUMBER_PATTERN, to_float
from ml_debug_mcp.core.logs.series import CANONICAL_METRICS, canonical_metric_name
from ml_debug_mcp.core.logs.formats.text import KeyValueParser, LineParser, extract_pairs, split_pairs

_NUM = rf"({NUMBER_PATTERN})"


class Detectron2Parser(KeyValueParser):
    """detectron2 `CommonMetricPrinter`: ` eta: 0:32:27  iter: 6739  total_loss: 0.5  loss_cls: ...  lr: ...`."""

    fmt = "detectron2"


class MMCVParser(KeyValueParser):
    """mmcv `TextLoggerHook` `Epoch [1][50/500]\\tlr: ..., loss: ...`; mmengine `Epoch(train) [1][ 50/500]  ...`.

    Validation lines (`Epoch(val) [1][500/500]  coco/bbox_mAP: ...`, mmcv `Epoch(val) [1][500]`) are
    named `val_*` and placed at the step of the last training line.
    """

    fmt = "mmcv"
    _VAL_RE = re.compile(r"(?:Epoch|Iter)\((?:val|test)\)")

    def __init__(self, collector) -> None:
        super().__init__(collector)
        self.last_step: float | None = None

    def feed(self, line: str, rank: int | None) -> bool:
        if not self._VAL_RE.search(line):
            accepted = super().feed(line, rank)
            if accepted and self.out.last_record is not None:
                self.last_step = self.out.last_record[1]
            return accepted
        values, _, _ = split_pairs(extract_pairs(line))
        values = {f"val_{k}": v for k, v in values.items() if k.lower() != "epoch"}
        return self.out.add(values, self.last_step, rank) if values else False


class PaddleParser(KeyValueParser):
    """PaddlePaddle and its suites, all `name: value` behind a position:

    fluid examples `[Train] epoch: 1, batch_id: 10, loss is: [2.3]`; PaddleDetection `ppdet.engine`
    `Epoch: [0] [217/361] learning_rate: 0.0075 loss: 1659.1 ...`; PaddleOCR `epoch: [27/500], iter: 250030,
    lr: ..., loss: 0.49`; PaddleNLP `global step 100, epoch: 1, batch: 100, loss: 0.5`; v2 `Pass 0, Batch 100,
    Cost 2.3` (the cost is the loss).
    """

    fmt = "paddle"
    _PASS_RE = re.compile(rf"Pass (\d+), Batch (\d+), Cost {_NUM}")

    def feed(self, line: str, rank: int | None) -> bool:
        m = self._PASS_RE.search(line)
        if m:
            line = f"epoch: {m.group(1)}, batch_id: {m.group(2)}, loss: {m.group(3)}" + line[m.end():]
        return super().feed(line, rank)


class MindSporeParser(KeyValueParser):
    """MindSpore `LossMonitor`: `epoch: 1 step: 10, loss is 2.3025` (the step counts inside the epoch);
    newer releases print the loss as `Tensor(shape=[], dtype=Float32, value= 2.30)`."""

    fmt = "mindspore"
    steps_in_epoch = True
    _TENSOR_RE = re.compile(r"Tensor\([^()]*?value=\s*\[?\s*([^\s\])]+)\s*\]?\s*\)")

    def feed(self, line: str, rank: int | None) -> bool:
        if "Tensor(" in line:
            line = self._TENSOR_RE.sub(r"\1", line)
        return super().feed(line, rank)


class JaxParser(KeyValueParser):
    """JAX trainers: CLU `LoggingWriter` (T5X, Flax examples, big_vision) `[100] train/loss=2.3, lr=1e-3`,
    and hand-written `step 100: loss=2.3` / `train epoch: 1, loss: 0.3` lines."""

    fmt = "jax"
    # After glog's "I1002 21:38:13.425730 1399 logging_writer.py:35] " (or nothing), optionally a collection name.
    _CLU_RE = re.compile(r"(?:^|\]\s)\s*(?:\w+\s+)?\[(\d+)\]\s+(?=[\w/.-]+=)")

    def feed(self, line: str, rank: int | None) -> bool:
        m = self._CLU_RE.search(line)
        if m:
            line = f"step {m.group(1)}, " + line[m.end():]
        return super().feed(line, rank)


class MXNetParser(KeyValueParser):
    """MXNet `Speedometer` `Epoch[0] Batch [100]\\tSpeed: 1234.5 samples/sec\\taccuracy=0.5` and the fit loop's
    epoch lines `Epoch[0] Train-accuracy=0.7`, `Epoch[0] Time cost=20.5`, `Epoch[0] Validation-accuracy=0.6`.

    An epoch line sits at the step of that epoch's last batch line (the epoch number when no batch
    line was printed); its time is the epoch's, not a step's.
    """

    fmt = "mxnet"
    _EPOCH_LINE_RE = re.compile(r"Epoch\s*\[(\d+)\]\s+(?!Batch)")
    _RENAMES = {"speed": "samples_per_sec", "time cost": "epoch_time"}

    def __init__(self, collector) -> None:
        super().__init__(collector)
        self.batches_seen = False

    def feed(self, line: str, rank: int | None) -> bool:
        values, step, known = split_pairs(extract_pairs(line))
        values = {self._RENAMES.get(k.lower(), k): v for k, v in values.items() if k.lower() not in ("epoch", "batch")}
        if not values:
            return False
        summary = self._EPOCH_LINE_RE.search(line)
        if summary:
            step = self.clock.offset + self.clock.top if self.batches_seen else float(summary.group(1))
        else:
            placed = self.place(line, step)
            self.batches_seen = self.batches_seen or placed is not None
            step = placed
        return self.out.add(values, step, rank)


class CaffeParser(LineParser):
    """Caffe `Solver` (solver.cpp) behind glog prefixes:

    `Iteration 1000 (1.2 iter/s, 16.6s/20 iters), loss = 8.26` (older: `Iteration 1000, loss = 8.26`),
    `    Train net output #0: loss = 8.26 (* 1 = 8.26 loss)`, `Iteration 1000, lr = 0.001`, and a test block
    `Iteration 18000, Testing net (#0)` then `    Test net output #2: loss = 3.3 (* 1 = 3.3 loss)`.
    Train outputs sit at the iteration printed before them; test outputs are named `val_*` at the
    iteration of their test block. A train output called `loss` repeats the iteration's loss and is skipped.
    """

    fmt = "caffe"
    prefilter = re.compile(rb"Iteration|net output")
    _ITER_RE = re.compile(rf"Iteration (\d+)(?: \([^)]*\))?, (loss|lr) = {_NUM}")
    _TESTING_RE = re.compile(r"Iteration (\d+), Testing net")
    _OUTPUT_RE = re.compile(rf"(Train|Test) net output #\d+: (\S+) = {_NUM}")

    def __init__(self, collector) -> None:
        super().__init__(collector)
        self.iteration: float | None = None
        self.test_iteration: float | None = None
        self.loss_at: float | None = None

    def feed(self, line: str, rank: int | None) -> bool:
        m = self._OUTPUT_RE.search(line)
        if m:
            kind, name, value = m.group(1), m.group(2), to_float(m.group(3))
            if value is None:
                return False
            if kind == "Test":
                return self.out.add({f"val_{name}": value}, self.test_iteration, rank)
            if self.iteration is None:
                return False  # an output before any iteration line: its step is unknown
            if name == "loss" and self.loss_at == self.iteration:
                return True
            return self.out.add({name: value}, self.iteration, rank)
        m = self._TESTING_RE.search(line)
        if m:
            self.test_iteration = float(m.group(1))
            return True
        m = self._ITER_RE.search(line)
        if m:
            self.iteration = float(m.group(1))
            value = to_float(m.group(3))
            if value is None:
                return False
            if m.group(2) == "loss":
                self.loss_at = self.iteration
            return self.out.add({m.group(2): value}, self.iteration, rank)
        return False


class BaselinesParser(LineParser):
    """OpenAI baselines and Stable-Baselines (2 and 3) `logger.dumpkvs` boxes: one record per box of
    `| key | value |` rows between dashed rules. SB3 groups keys under section rows (`| time/ |  |`),
    so `fps` below `time/` is `time/fps`. The step is the box's total timesteps, else its update count.
    """

    fmt = "baselines"
    prefilter = re.compile(rb"\|")
    _ROW_RE = re.compile(r"^\s*\|\s*(?P<key>[^|]*?)\s*\|\s*(?P<val>[^|]*?)\s*\|\s*$")
    _RULE_RE = re.compile(r"^\s*-{5,}\s*$")
    _STEP_KEYS = ("total_timesteps", "timesteps_total", "total timesteps", "serial_timesteps", "n_updates",
                  "nupdates", "iterations")

    def __init__(self, collector) -> None:
        super().__init__(collector)
        self.box: dict[str, float] = {}
        self.section = ""
        self.opened = False  # rows count only inside a box: a markdown table has no dashed rule around it

    def feed(self, line: str, rank: int | None) -> bool:
        if self._RULE_RE.match(line):
            self.opened = True
            return self._flush(rank)
        m = self._ROW_RE.match(line) if self.opened else None
        if not m:
            return False
        key, raw = m.group("key"), m.group("val")
        if key.endswith("/") and not raw:
            self.section = key
            return True
        value = to_float(raw)
        if value is None:
            return False
        nested = self.section and line[line.index("|") + 1:].startswith("  ")
        # A name the detectors know (fps, loss, learning_rate...) keeps it; others keep their section.
        known = canonical_metric_name(key) in CANONICAL_METRICS
        self.box[self.section + key if nested and not known else key] = value
        return True

    def _flush(self, rank: int | None) -> bool:
        box, self.box, self.section = self.box, {}, ""
        if not box:
            return False
        step = None
        for wanted in self._STEP_KEYS:
            found = next((k for k in box if k.rsplit("/", 1)[-1] == wanted), None)
            if found is not None:
                step = box.pop(found) if wanted != "iterations" else box[found]
                break
        return self.out.add(box, step, rank)

    def finish(self) -> None:
        self._flush(None)
