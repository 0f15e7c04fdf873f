"""Line-oriented parsers for the console formats trainers print.

Each parser takes one decoded line (rank prefix already removed) and, when the line is a metric
record, hands `{raw_name: value}` plus its step to the `Collector`. They are deliberately
forgiving: a line they do not understand is counted as unparsed, never an error.

Formats and the public source each follows:
- hf_trainer: transformers `ProgressCallback.on_log` / `PrinterCallback` print `str(dict)`; floats
  are bare (`{'loss': 2.31, ...}`) before transformers 4.5x and `f"{v:.4g}"` strings after
  (`{'loss': '2.31', ...}`). No step is printed, so train records count steps and an eval record
  takes the step of the train record before it.
- jsonl: one JSON object per line (`json.dumps` of a metrics dict), step under any step key.
- keyvalue / nanogpt / megatron: `key value`, `key: value`, `key=value` pairs, e.g. nanoGPT
  train.py `iter {n}: loss {:.4f}, time {:.2f}ms, mfu {:.2f}%` and `step {n}: train loss {:.4f},
  val loss {:.4f}`; Megatron-LM `training_log` ` iteration {:8d}/{:8d} | consumed samples: ... |
  learning rate: {:.6E} | lm loss: {:.6E} | ... | grad norm: {:.3f} |` and `evaluate_and_print_results`
  ` validation loss at iteration N | lm loss value: ... | lm loss PPL: ... |`.
- fairseq: `fairseq/logging/progress_bar.py` SimpleProgressBar.log `epoch 001:    100 / 1000 loss=...,
  num_updates=100, ...` and .print `epoch 001 | loss 7.2 | ... | num_updates 100`, behind the
  logger prefix `2020-... | INFO | train_inner |`; JsonProgressBar prints JSON whose values are strings.
- keras: `keras.utils.Progbar` — `Epoch 3/10` then `100/100 [====] - 2s 20ms/step - loss: 0.1234 -
  accuracy: 0.95 - val_loss: ...` (Keras 2) or `100/100 ━━━━ 2s 20ms/step - accuracy: ... - loss: ...`
  (Keras 3); intermediate updates carry `ETA` and are overwritten with `\\r`/`\\b`. Step = epoch.
"""

from __future__ import annotations

import json
import math
import re

from ml_debug_mcp.core.logs.formats.common import (ANSI_RE, NUMBER_PATTERN, Collector, is_ignored_key,
                                             is_known_metric, is_step_key, to_float)
from ml_debug_mcp.core.logs.formats.position import StepClock, find_position

# --- generic key/value pairs -------------------------------------------------------------------
# A key is 1-6 words starting with a letter; then `:`/`=`/spaces; then a number with an optional
# unit. A number followed by ':' is a clock time or a file:line, not a value.
_NUMERIC = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NONFINITE_WORD = r"[-+]?(?:[Nn]a[Nn]|NAN|[Ii]nf(?:inity)?|INF(?:INITY)?)"
# A NaN/Inf word only counts when it ends the field ("loss nan, ...", "loss=nan lr=0.1"), not
# inside prose ("number of nan iterations: 0").
_KV_RE = re.compile(
    r"(?<![\w.\-/])(?P<key>[A-Za-z_][\w./\-]*(?:[ ](?:\([\w/%.]+\)|[A-Za-z_][\w./\-]*)){0,5}?)"
    r"[\"']?\s*(?:[:=]\s*|\s+)\[?"  # DeepSpeed prints per-group values in brackets: lr=[0.0001]
    rf"(?P<val>{_NUMERIC}(?=ms|s|%|x|[KMG]i?B?(?![\w.])|:(?!\d)|[^\w.:]|$)(?!-\d|/\d+/)|{_NONFINITE_WORD}(?=\s*(?:$|[|,;)\]}}'\"]|-\s)|\s+[A-Za-z_][\w./\-]*\s*=))")
# "trainer.py:120" is a source location, not a metric called "trainer.py".
_SOURCE_FILE_RE = re.compile(r"\.(?:py|pyx|cc|cpp|cu|h|c|rs|go|js|ts|java)$")
# Cheap pre-check: a line that names none of these carries no metric the detectors read.
# (Not bare "rank", "sample" or "tok": torchrun prefixes and ordinary INFO lines are full of them.)
_METRIC_HINTS = ("loss", "lr", "learning", "grad", "acc", "reward", "norm", "kl", "entropy", "ppl", "nll", "perp",
                 "perplex", "tok/s", "tok_s", "tokens/s", "tokens_per", "tokens per", "throughput",
                 "samples/s", "samples_per", "samples per", "_rank", "erank", "scale", "time", "epoch",
                 "mem", "adv", "top1", "f1", "it/s", "wps", "ups", "mfu", "ratio", "vocab", "classes")
# Searched in lowercased text: an IGNORECASE alternation is several times slower in `re`.
_HINT_RE = re.compile("|".join(_METRIC_HINTS))
_HINT_BYTES_RE = re.compile("|".join(_METRIC_HINTS).encode())


class _LowercaseSearch:
    """A `search(bytes)` that lowercases first: the metric-hint prefilter, case-insensitive."""

    def search(self, data: bytes):
        return _HINT_BYTES_RE.search(data.lower())


HINT_BYTES_RE = _LowercaseSearch()


def _suffix_key(key: str) -> str:
    """For multi-word keys, prefer the shortest known tail: '... at step' -> 'step'; 'loss is' -> 'loss'."""
    if " " not in key or is_known_metric(key) or is_step_key(key):
        return key
    if key.endswith(" is"):  # MindSpore's "loss is 2.3", Paddle's "loss is: [2.3]"
        return _suffix_key(key[:-3])
    words = key.split(" ")
    for i in range(1, len(words)):
        tail = " ".join(words[i:])
        if is_step_key(tail) or is_known_metric(tail):
            return tail
    return key


# "loss: nan eta: 3:56:31" (PaddleDetection, mmcv): a NaN/Inf right after a one-word `key:` counts even when
# another key follows, unlike one inside prose ("number of nan iterations: 0").
_KEYED_NONFINITE_RE = re.compile(rf"(?<![\w.\-/])(?P<key>[A-Za-z_][\w./\-]*)\s*[:=]\s*\[?(?P<val>{_NONFINITE_WORD})(?=\s)")


# "[epoch]: 199, [loss]: 4.99": a key in brackets, unbracketed in place (same length, so spans still hold).
_BRACKETED_KEY_RE = re.compile(r"\[([A-Za-z_][\w./\-]*)\]:")


def extract_pair_spans(line: str) -> list[tuple[str, float, int, int]]:
    """(key, value, value start, value end) for every pair of a free-text line."""
    pairs = []
    if "]:" in line:
        line = _BRACKETED_KEY_RE.sub(r" \1:", line)
    for m in _KV_RE.finditer(line):
        key = m.group("key")
        if _SOURCE_FILE_RE.search(key):
            continue
        value = to_float(m.group("val"))
        if value is not None:
            pairs.append((_suffix_key(key), value, m.start("val"), m.end("val")))
    if "nan" in line or "inf" in line or "NaN" in line or "Inf" in line:
        taken = {start for _, _, start, _ in pairs}
        extra = [(m.group("key"), to_float(m.group("val")), m.start("val"), m.end("val"))
                 for m in _KEYED_NONFINITE_RE.finditer(line) if m.start("val") not in taken]
        if extra:
            pairs = sorted(pairs + extra, key=lambda p: p[2])
    return pairs


def extract_pairs(line: str) -> list[tuple[str, float]]:
    """All (key, value) pairs of a free-text line, keys as printed."""
    return [(key, value) for key, value, _, _ in extract_pair_spans(line)]


def has_metric_hint(line: str) -> bool:
    return _HINT_RE.search(line.lower()) is not None


def split_pairs(pairs: list[tuple[str, float]]) -> tuple[dict[str, float], float | None, bool]:
    """Separate the step from the metrics; also say whether any detector-known metric is present."""
    values: dict[str, float] = {}
    step = None
    counter = False  # the step came from W&B's `_step`, a count of log calls: a trainer's own step wins
    known = False
    for key, value in pairs:
        if is_step_key(key):
            if step is None or (counter and not key.startswith("_")):
                step, counter = value, key.startswith("_")
            continue
        if is_ignored_key(key) or key in values:
            continue
        values[key] = value
        known = known or is_known_metric(key)
    return values, step, known


class LineParser:
    """Base: one instance per parse, may keep state across lines (Keras epochs, HF steps)."""

    fmt = "keyvalue"
    # Bytes that any line this parser can use must contain; text without them is skipped whole.
    prefilter: re.Pattern[bytes] | _LowercaseSearch | None = HINT_BYTES_RE

    steps_in_epoch = False  # see find_position

    def __init__(self, collector: Collector) -> None:
        self.out = collector
        self.clock = StepClock()

    def feed(self, line: str, rank: int | None) -> bool:
        raise NotImplementedError

    def finish(self) -> None:
        """End of the text: a parser that holds a record back (the last row of an epoch) emits it."""

    def place(self, line: str, step: float | None) -> float | None:
        """The line's step: the one its pairs named, else the position printed on it (epoch and batch)."""
        pos = find_position(line, self.steps_in_epoch)
        if pos.index is not None or step is None:
            found = self.clock.step(pos)
            if found is not None:
                return found
        return step


class KeyValueParser(LineParser):
    """`step 100 | loss 2.31 | lr 1e-4`, nanoGPT and Megatron lines, any `key: value` log line."""

    fmt = "keyvalue"

    def feed(self, line: str, rank: int | None) -> bool:
        if not has_metric_hint(line):
            return False
        if "\x1b" in line:
            line = ANSI_RE.sub("", line)
        values, step, known = split_pairs(extract_pairs(line))
        if not known:
            return False
        return self.out.add(values, self.place(line, step), rank)


class NanoGPTParser(KeyValueParser):
    fmt = "nanogpt"


class MegatronParser(KeyValueParser):
    """Megatron-LM / DeepSpeed-Megatron: training lines are key/value; validation lines rename."""

    fmt = "megatron"
    _VALID_RE = re.compile(r"validation loss at (?:iteration\s+(\d+))?")
    _VALUE_RE = re.compile(rf"([A-Za-z][\w \-]*?) (value|PPL):\s*({NUMBER_PATTERN})")

    def feed(self, line: str, rank: int | None) -> bool:
        if "validation loss at" in line:
            m = self._VALID_RE.search(line)
            step = float(m.group(1)) if m and m.group(1) else None
            values: dict[str, float] = {}
            for name, kind, val in self._VALUE_RE.findall(line):
                v = to_float(val)
                if v is not None:
                    values[f"val {name.strip()}" + (" ppl" if kind == "PPL" else "")] = v
            return self.out.add(values, step, rank) if values else False
        return super().feed(line, rank)


class HFTrainerParser(LineParser):
    """transformers Trainer console dicts; see the module docstring for the step rule."""

    fmt = "hf_trainer"
    prefilter = re.compile(rb"\{'")
    _DICT_RE = re.compile(r"\{'[^{}]*\}")
    _PAIR_RE = re.compile(r"'([^']+)':\s*(?:'([^']*)'|([^,}\s]+))")

    def __init__(self, collector: Collector) -> None:
        super().__init__(collector)
        self.train_steps = 0

    def feed(self, line: str, rank: int | None) -> bool:
        if "{'" not in line:
            return False
        m = self._DICT_RE.search(line)
        if not m:
            return False
        pairs = []
        for key, quoted, bare in self._PAIR_RE.findall(m.group(0)):
            value = to_float(quoted if quoted else bare)
            if value is not None:
                pairs.append((key, value))
        values, step, known = split_pairs(pairs)
        if not values or "train_runtime" in values:
            return False  # the end-of-training summary repeats an average, not a step
        is_eval = all(k.startswith(("eval_", "test_", "predict_")) or k == "epoch" for k in values)
        if step is None:
            if not is_eval:
                self.train_steps += 1
            step = float(self.train_steps)
            self.out.warn("Trainer console lines print no step: steps here count logged records (x logging_steps "
                          "for optimizer steps; trainer_state.json in the checkpoint folder has the real ones)")
        elif not is_eval:
            self.train_steps = int(step) if math.isfinite(step) else self.train_steps
        return self.out.add(values, step, rank)


def _flatten(obj: dict, prefix: str = "", out: dict | None = None, depth: int = 0) -> dict:
    out = {} if out is None else out
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth < 2:
            _flatten(value, name + "/", out, depth + 1)
        else:
            out[name] = value
    return out


def json_record(obj: object) -> tuple[dict[str, float], float | None, int | None, bool]:
    """Metrics, step, rank and 'has a known metric' from one decoded JSON object."""
    if not isinstance(obj, dict):
        return {}, None, None, False
    flat = _flatten(obj)
    rank = None
    raw_rank = flat.get("rank", flat.get("global_rank"))
    if isinstance(raw_rank, int) and not isinstance(raw_rank, bool) and 0 <= raw_rank < 100000:
        rank = raw_rank
    pairs = []
    for key, raw in flat.items():
        value = to_float(raw)
        if value is not None:
            pairs.append((str(key), value))
    values, step, known = split_pairs(pairs)
    return values, step, rank, known


class JsonLinesParser(LineParser):
    """One JSON object per line; W&B offline `wandb-history.jsonl` is the same with `_step`."""

    fmt = "jsonl"
    prefilter = re.compile(rb"\{")

    def feed(self, line: str, rank: int | None) -> bool:
        start = line.find("{")
        if start < 0 or start > 200:
            return False
        try:
            obj = json.loads(line[start:])
        except ValueError:
            return False
        values, step, json_rank, _ = json_record(obj)
        return self.out.add(values, step, rank if rank is not None else json_rank)


class WandbHistoryParser(JsonLinesParser):
    fmt = "wandb"


class FairseqParser(LineParser):
    """fairseq simple and json progress output, train_inner / train / valid tags."""

    fmt = "fairseq"
    prefilter = re.compile(rb"epoch|\{")
    _INNER_RE = re.compile(r"epoch (\d+):\s+\d+\s*/\s*\d+\s+(.*)$")
    _SUMMARY_RE = re.compile(r"epoch (\d+) \| (.*)$")

    def __init__(self, collector: Collector) -> None:
        super().__init__(collector)
        self.seen_inner = False

    def _emit(self, pairs: list[tuple[str, float]], epoch: float | None, rank: int | None,
              prefix: str) -> bool:
        values, step, _ = split_pairs(pairs)
        if not values:
            return False
        if prefix:
            values = {(k if k.startswith(prefix) or k == "epoch" else prefix + k): v for k, v in values.items()}
        if epoch is not None:
            values.setdefault("epoch", epoch)
        return self.out.add(values, step, rank)

    def feed(self, line: str, rank: int | None) -> bool:
        if "epoch" not in line and "{" not in line:
            return False
        is_valid = "| valid |" in line or "valid on '" in line or "| valid_" in line
        brace = line.find("{")
        if brace >= 0 and line.rstrip().endswith("}"):
            try:
                obj = json.loads(line[brace:])
            except ValueError:
                return False
            if is_valid and isinstance(obj, dict):
                # JsonProgressBar.print(tag="valid") prefixes every key, the step too.
                obj = {(k[len("valid_"):] if k.startswith("valid_") and
                        (is_step_key(k[len("valid_"):]) or k == "valid_epoch") else k): v for k, v in obj.items()}
            values, step, _, _ = json_record(obj)
            if not values:
                return False
            pairs = list(values.items()) + ([("num_updates", step)] if step is not None else [])
            inner = "| train_inner |" in line or "update" in values
            self.seen_inner = self.seen_inner or inner
            prefix = "valid_" if is_valid else ("" if inner or not self.seen_inner else "epoch_")
            return self._emit(pairs, None, rank, prefix)
        m = self._INNER_RE.search(line)
        if m and not is_valid:
            self.seen_inner = True
            # "loss=9.68 (10.49)": older fairseq prints the running average after the value
            pairs = [(k, v) for k, v in (p.split("=", 1) for p in m.group(2).split(", ") if "=" in p)
                     for v in [to_float(v.split(" (", 1)[0])] if v is not None]
            return self._emit(pairs, float(m.group(1)), rank, "")
        m = self._SUMMARY_RE.search(line)
        if m:
            pairs = []
            for field in m.group(2).split(" | "):
                key, _, val = field.strip().rpartition(" ")
                value = to_float(val)
                if key and value is not None and not key.startswith("valid on"):
                    pairs.append((key, value))
            # An end-of-epoch train summary repeats the epoch's average: keep it apart from the
            # per-update curve when there is one, so the loss series is not zig-zagged by it.
            prefix = "valid_" if is_valid else ("epoch_" if self.seen_inner else "")
            return self._emit(pairs, float(m.group(1)), rank, prefix)
        return False


class KerasParser(LineParser):
    """keras Progbar output; only the finished line of each epoch becomes a record."""

    fmt = "keras"
    prefilter = re.compile(rb"Epoch| - ")
    _EPOCH_RE = re.compile(r"^\s*Epoch (\d+)/(\d+)\s*$")
    _BAR_RE = re.compile(r"^\s*(\d+)/(\d+)\b")
    _METRIC_RE = re.compile(rf" - ([A-Za-z_][\w/.]*): ({NUMBER_PATTERN})")

    def __init__(self, collector: Collector) -> None:
        super().__init__(collector)
        self.epoch: float | None = None

    def feed(self, line: str, rank: int | None) -> bool:
        if "\x1b" in line:
            line = ANSI_RE.sub("", line)
        m = self._EPOCH_RE.match(line)
        if m:
            self.epoch = float(m.group(1))
            return False
        if " - " not in line or "ETA" in line:
            return False
        bar = self._BAR_RE.match(line)
        if bar and bar.group(1) != bar.group(2):
            return False
        values = {}
        for key, val in self._METRIC_RE.findall(line):
            value = to_float(val)
            if value is not None and not is_step_key(key):
                values.setdefault(key, value)
        if not values:
            return False
        return self.out.add(values, self.epoch, rank)


def last_segment(line: str) -> str:
    """What a terminal would show for a line rewritten with carriage returns (tqdm, Keras)."""
    if "\b" in line:
        line = line.replace("\b", "")
    if "\r" not in line:
        return line
    for segment in reversed(line.split("\r")):
        if segment.strip():
            return segment
    return ""

