"""The one list of log formats: id, what it is, the parser that reads it and how a line of it looks.

Detection votes line by line (`classify_line`) in this list's order, most specific first, so the
format id in a `ParsedLog` names the parser that read the text; the diagnosis cites it from
`describe(fmt)` without knowing any parser.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ml_debug_mcp.core.logs.formats.common import ANSI_RE, Collector
from ml_debug_mcp.core.logs.formats.frameworks import (BaselinesParser, CaffeParser, Detectron2Parser, JaxParser, MindSporeParser,
                                                       MMCVParser, MXNetParser, PaddleParser)
from ml_debug_mcp.core.logs.formats.tables import TableParser, YoloParser
from ml_debug_mcp.core.logs.formats.text import (FairseqParser, HFTrainerParser, JsonLinesParser, KerasParser,
                                                 KeyValueParser, LineParser, MegatronParser, NanoGPTParser,
                                                 WandbHistoryParser, extract_pairs, has_metric_hint, last_segment,
                                                 split_pairs)


@dataclass(frozen=True)
class TextFormat:
    id: str
    description: str
    parser: type[LineParser]
    sniff: re.Pattern[str] | None = None  # a line of this format matches (searched in the cleaned line)


_I = re.I
# Most specific first: a line that several sniffs match belongs to the first.
TEXT_FORMATS: tuple[TextFormat, ...] = (
    TextFormat("hf_trainer", "Hugging Face Trainer console dict lines {'loss': ..., 'learning_rate': ...}",
               HFTrainerParser),
    TextFormat("fairseq", "fairseq simple/json progress lines", FairseqParser,
               re.compile(r"\| (?:train_inner|train|valid) \||epoch \d{3}:\s+\d+\s*/\s*\d+ |(?:^|\| )epoch \d{3} \| ")),
    TextFormat("jsonl", "one JSON object per line", JsonLinesParser),
    TextFormat("wandb", "W&B offline wandb-history.jsonl (_step)", WandbHistoryParser),
    TextFormat("caffe", "Caffe solver 'Iteration N, loss = x', 'Train/Test net output #k: name = x'", CaffeParser,
               re.compile(r"\bIteration \d+(?: \([^)]*\))?, (?:loss|lr) = |\b(?:Train|Test) net output #\d+: ")),
    TextFormat("mmcv", "mmcv/mmdet/mmengine 'Epoch [1][50/500] lr: ..., loss: ...', 'Epoch(train) [1][50/500]'",
               MMCVParser, re.compile(r"\b(?:Epoch|Iter)\((?:train|val|test)\)\s*\[|\bEpoch \[\d+\]\[\s*\d+/\d+\]|"
                                      r"\bIter \[\s*\d+/\d+\]\s")),
    TextFormat("detectron2", "detectron2 'iter: N  total_loss: x  loss_cls: ...'", Detectron2Parser,
               re.compile(r"d2\.utils\.events|\biter: \d+\s+total_loss: ")),
    TextFormat("mxnet", "MXNet 'Epoch[0] Batch [100] Speed: ... accuracy=...', 'Epoch[0] Train-accuracy=...'",
               MXNetParser, re.compile(r"\bEpoch\[\d+\] (?:Batch ?\[|Train-|Validation-|Time cost)|"
                                       r"^\s*Batch \[\d+\]\s+Speed: ")),
    TextFormat("paddle", "PaddlePaddle, PaddleDetection, PaddleOCR, PaddleNLP 'epoch: 1, batch_id: 10, loss is: [..]'",
               PaddleParser, re.compile(r"\bppdet\.|\bppocr\b|\bbatch_id\b|\bloss is: \[|\bEpoch: \[\d+\] \[\s*\d+/\d+\]|"
                                        r"\bepoch: \[\d+/\d+\], (?:global_step|iter)|\bPass \d+, Batch \d+, Cost |"
                                        r"\bglobal step \d+, epoch: \d+, batch: \d+")),
    TextFormat("mindspore", "MindSpore LossMonitor 'epoch: 1 step: 10, loss is 2.3'", MindSporeParser,
               re.compile(r"\bepoch: \d+ step: \d+, loss is ")),
    TextFormat("yolo", "YOLO (ultralytics, yolov5) per-epoch tables '2/300  4.09G  0.5756 ...'", YoloParser,
               re.compile(r"^\s*\d+/\d+\s+\d+(?:\.\d+)?G\s+\d|^\s*Epoch\s+(?:GPU_mem|gpu_mem)\s")),
    TextFormat("jax", "JAX/Flax/T5X (CLU) '[100] train/loss=2.3, lr=...', 'step 100: loss=2.3'", JaxParser,
               re.compile(r"(?:^|\]\s)\s*(?:\w+\s+)?\[\d+\]\s+[\w/.-]+=\S|^\s*step \d+: [\w/.-]+=\S", _I)),
    TextFormat("megatron", "Megatron-LM / DeepSpeed 'iteration N/ M | ... | lm loss: ...'", MegatronParser,
               re.compile(r"iteration\s+\d+/\s*\d+\s*\||validation loss at iteration \d+")),
    TextFormat("keras", "Keras progress bar 'Epoch 3/10' + '- loss: 0.12 - val_loss: ...'", KerasParser,
               re.compile(r"^\s*Epoch \d+/\d+\s*$|^\s*\d+/\d+ (?:\[[=>.]*\]|━+|-) .*- \w+: ")),
    TextFormat("nanogpt", "nanoGPT 'iter 100: loss 2.31, time 45.2ms, mfu 12.3%'", NanoGPTParser,
               re.compile(r"^iter \d+: loss |^step \d+: train loss ")),
    TextFormat("baselines", "OpenAI baselines / Stable-Baselines boxes '| fps | 637 |' between dashed rules",
               BaselinesParser, re.compile(r"^\s*\|\s{1,8}\w[\w/ .]*?\s{2,}\|\s[-+]?\d[\d.e+-]*\s+\|\s*$")),
    TextFormat("keyvalue", "key/value text lines: 'step 100 | loss 2.31 | lr 1e-4'", KeyValueParser),
    TextFormat("table", "a console table: a header row of names, then rows of numbers (markdown, tabs or spaces)",
               TableParser),
)

OTHER_FORMATS: dict[str, str] = {
    "hf_trainer_state": "Hugging Face trainer_state.json (log_history)",
    "lightning_csv": "PyTorch Lightning CSVLogger metrics.csv",
    "csv": "generic CSV/TSV with a header row",
    "tensorboard": "TensorBoard event files (scalars)",
    "mlflow": "MLflow file-store metric files (timestamp value step)",
    "binary": "not a text file",
    "unknown": "text with no recognised metric lines",
}

FORMATS: dict[str, str] = {f.id: f.description for f in TEXT_FORMATS} | OTHER_FORMATS
LINE_PARSERS: dict[str, type[LineParser]] = {f.id: f.parser for f in TEXT_FORMATS}
_SNIFFED = tuple(f for f in TEXT_FORMATS if f.sniff is not None and f.id != "fairseq")
_FAIRSEQ = next(f for f in TEXT_FORMATS if f.id == "fairseq")


def describe(fmt: str) -> str:
    """What a format id means, for a diagnosis to say which parser read the text."""
    return FORMATS.get(fmt, fmt)


def classify_line(line: str) -> str | None:
    """The most specific text format a single line belongs to, or None."""
    if "\x1b" in line:
        line = ANSI_RE.sub("", line)
    if "\r" in line:
        line = last_segment(line)
    stripped = line.strip()
    if not stripped:
        return None
    if "{'" in stripped and "':" in stripped and HFTrainerParser._DICT_RE.search(stripped):
        return "hf_trainer"
    if _FAIRSEQ.sniff.search(stripped):
        return "fairseq"
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            return None
        if isinstance(obj, dict):
            return "wandb" if "_step" in obj and "_runtime" in obj else "jsonl"
        return None
    for fmt in _SNIFFED:
        if fmt.sniff.search(line):
            return fmt.id
    if not has_metric_hint(stripped):
        return None
    _, _, known = split_pairs(extract_pairs(stripped))
    return "keyvalue" if known else None


def table_rows(lines: list[str]) -> int:
    """How many value rows a console table holds in these lines (0: no table)."""
    probe = Collector(10)
    parser = TableParser(probe)
    for line in lines:
        parser.feed(line, None)
    return probe.records
