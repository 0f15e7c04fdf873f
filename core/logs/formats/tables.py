"""Tabular metric files: CSV/TSV (generic and Lightning's CSVLogger) and MLflow metric files.

- Lightning `CSVLogger` (lightning/pytorch/loggers/csv_logs.py, `ExperimentWriter.log_metrics`)
  writes `metrics.csv` with one header of every key ever logged and sparse rows: a
  `training_step` row fills `train_loss_step`, a validation row fills `val_loss`; `epoch` and
  `step` columns are always there.
- MLflow's file store (mlflow/store/tracking/file_store.py) appends `"{timestamp} {value} {step}\\n"`
  to `mlruns/<experiment_id>/<run_id>/metrics/<metric key>` (a key with `/` becomes subfolders).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ml_debug_mcp.core.logs.formats.common import (Collector, is_ignored_key, is_step_key, strip_rank_prefix,
                                             to_float)
from ml_debug_mcp.core.logs.formats.text import LineParser
from ml_debug_mcp.core import safe_fs

MAX_CSV_FIELD = 1 << 16


def _delimiter(header: str) -> str:
    return "\t" if header.count("\t") > header.count(",") else ","


def _lightning_names(columns: list[str]) -> list[str]:
    """Lightning logs `x_step` and `x_epoch` for one `x`; both would alias to the same metric.

    The per-step column keeps the canonical name; the epoch average is renamed `x_epoch_avg`
    so it stays a separate curve instead of zig-zagging the per-step one.
    """
    names = list(columns)
    present = set(columns)
    for i, col in enumerate(columns):
        if col.endswith("_epoch") and col[: -len("_epoch")] + "_step" in present:
            names[i] = col[: -len("_epoch")] + "_epoch_avg"
    return names


def parse_csv_lines(lines: Iterable[str], collector: Collector, lightning: bool = False) -> None:
    """Rows of a CSV/TSV with a header line; empty cells are simply absent from a record."""
    iterator = iter(lines)
    header_line = None
    for line in iterator:
        collector.lines += 1
        if line.strip():
            header_line = line
            break
    if header_line is None:
        return
    csv.field_size_limit(MAX_CSV_FIELD)
    delimiter = _delimiter(header_line)
    try:
        columns = next(csv.reader([header_line], delimiter=delimiter))
    except csv.Error:
        collector.warn("the CSV header could not be read")
        return
    columns = [c.strip() for c in columns]
    names = _lightning_names(columns) if lightning else columns
    step_cols = [i for i, c in enumerate(columns) if is_step_key(c)]
    step_col = step_cols[0] if step_cols else None
    skip = {i for i, c in enumerate(columns) if is_ignored_key(c) or i in step_cols}

    def counted() -> Iterator[str]:
        for line in iterator:
            collector.lines += 1
            yield line

    reader = csv.reader(counted(), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            collector.unparsed += 1
            continue
        if not row:
            continue
        values: dict[str, float] = {}
        for i, cell in enumerate(row[: len(names)]):
            if i in skip or not cell:
                continue
            value = to_float(cell)
            if value is not None:
                values[names[i]] = value
        step = to_float(row[step_col]) if step_col is not None and step_col < len(row) else None
        if not collector.add(values, step):
            collector.unparsed += 1


def parse_mlflow_metric_lines(lines: Iterable[str], name: str, collector: Collector) -> None:
    """One MLflow metric file: `timestamp value step` per line (step defaults to 0 in old stores)."""
    for raw in lines:
        collector.lines += 1
        parts = raw.split()
        if len(parts) < 2:
            if raw.strip():
                collector.unparsed += 1
            continue
        value = to_float(parts[1])
        step = to_float(parts[2]) if len(parts) > 2 else None
        if value is None:
            collector.unparsed += 1
            continue
        collector.add({name: value}, step)


def mlflow_metric_files(run_dir: Path, limit: int = 500) -> list[tuple[str, Path]]:
    """(metric key, file) for every metric of an MLflow run directory, keys as logged."""
    metrics_dir = run_dir / "metrics"
    found: list[tuple[str, Path]] = []
    if not metrics_dir.is_dir():
        return found
    for path in sorted(metrics_dir.rglob("*")):
        real = safe_fs.confine(run_dir, path) if path.is_file() else None
        if real is not None:  # the key is the name as logged, the file its checked real path
            found.append((path.relative_to(metrics_dir).as_posix(), real))
            if len(found) >= limit:
                break
    return found


def looks_like_mlflow_metric(lines: list[str]) -> bool:
    """Every sampled line is `<ms timestamp> <number> <int step>`."""
    sample = [ln for ln in lines if ln.strip()][:20]
    if not sample:
        return False
    for ln in sample:
        parts = ln.split()
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) < 12:
            return False
        if to_float(parts[1]) is None or not parts[2].lstrip("-").isdigit():
            return False
    return True


def looks_like_csv(lines: list[str]) -> bool:
    """A header of names, then rows with the same number of delimited fields, mostly numbers."""
    sample = [strip_rank_prefix(ln)[1] for ln in lines if ln.strip()][:30]
    if len(sample) < 2:
        return False
    delim = _delimiter(sample[0])
    if delim not in sample[0]:
        return False
    try:
        rows = list(csv.reader(sample, delimiter=delim))
    except csv.Error:
        return False
    header = rows[0]
    if len(header) < 2 or any(to_float(h) is not None for h in header if h.strip()):
        return False
    numeric_rows = 0
    for row in rows[1:]:
        if len(row) != len(header):
            return False
        cells = [c for c in row if c.strip()]
        if cells and sum(to_float(c) is not None for c in cells) >= max(1, len(cells) // 2):
            numeric_rows += 1
    return numeric_rows >= max(1, (len(rows) - 1) // 2)


def is_lightning_header(line: str) -> bool:
    cols = {c.strip() for c in line.split(",")}
    return "step" in cols and "epoch" in cols


# --- tables printed to the console -------------------------------------------------------------
# A header row of names, then rows of numbers in the same columns: markdown (`| Epoch | Loss |`),
# a notebook's or a screenshot's table retyped (tabs or runs of spaces), YOLO's per-epoch rows.

_MD_RULE_RE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_UNIT_RE = re.compile(r"^([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*(?:G|GB|M|MB|%|s|ms)?$")
_HEADER_WORD_RE = re.compile(r"^[A-Za-z_(][\w()./@:%-]*(?: [A-Za-z_(][\w()./@:%-]*){0,3}$")


def split_cells(line: str) -> list[str]:
    """Cells of a table row: by pipes (markdown), else tabs, else runs of two or more spaces, else spaces."""
    text = line.strip()
    if "|" in text:
        return [c.strip() for c in text.strip("|").split("|")]
    if "\t" in text:
        return [c.strip() for c in text.split("\t") if c.strip()]
    cells = re.split(r"\s{2,}", text)
    return cells if len(cells) > 1 else text.split()


def cell_value(cell: str) -> float | None:
    """A number as a table prints it, units and all: '5.61G', '97.5%', '0.03s'."""
    value = to_float(cell)
    if value is None:
        m = _UNIT_RE.match(cell.strip())
        value = float(m.group(1)) if m else None
    return value


class TableParser(LineParser):
    """Console tables: the latest header row names the cells of the value rows under it.

    A header is two or more cells of words (multi-word names such as `Training Loss` when cells are
    split by pipes, tabs or wide gaps); a value row has the header's cell count and is mostly numbers.
    A step or epoch column gives the step; an `N/M` cell (YOLO's `0/299`) gives N.
    """

    fmt = "table"
    prefilter = None

    def __init__(self, collector: Collector) -> None:
        super().__init__(collector)
        self.header: list[str] | None = None

    def header_of(self, cells: list[str]) -> list[str] | None:
        if len(cells) >= 2 and all(c and _HEADER_WORD_RE.match(c) and to_float(c) is None and not c.endswith(":")
                                   for c in cells):
            return cells
        return None

    def row(self, cells: list[str]) -> tuple[dict[str, float], float | None] | None:
        """(metrics, step) of a value row under the current header, or None."""
        header = self.header
        if header is None or len(cells) != len(header):
            return None
        values: dict[str, float] = {}
        step = None
        numbers = 0
        for name, cell in zip(header, cells):
            fraction = re.fullmatch(r"(\d+)\s*/\s*(\d+)", cell)
            if fraction:
                numbers += 1
                if step is None:
                    step = float(fraction.group(1))
                continue
            value = cell_value(cell)
            if value is None:
                continue
            numbers += 1
            if is_step_key(name) and step is None:
                step = value
            elif not is_ignored_key(name):
                values[name] = value
        # Every cell a number, but for a label or a "No log" in a wide row.
        if not values or numbers < len(cells) - (len(cells) - 1) // 3:
            return None
        if step is None:
            for name in ("epoch", "Epoch"):
                if name in values:
                    step = values[name]
        return values, step

    def feed(self, line: str, rank: int | None) -> bool:
        if _MD_RULE_RE.match(line):
            return False
        cells = split_cells(line)
        header = self.header_of(cells)
        if header is not None:
            self.header = header
            return False
        found = self.row(cells)
        if found is None:
            return False
        values, step = found
        return self.out.add(values, step, rank)


class YoloParser(TableParser):
    """YOLO training tables: ultralytics (v8+) `Epoch GPU_mem box_loss cls_loss dfl_loss Instances Size`, yolov5
    `Epoch gpu_mem box obj cls labels img_size`, with rows `  2/300  4.09G  0.5756 ... 736: 56%|...| 1033/1833`
    (the progress bar after the colon is dropped), and yolov5/yolov3 `results.txt` rows printed without a header
    (`0/89 5.61G box obj cls total targets img_size P R mAP@.5 mAP@.5:.95 val_box val_obj val_cls`).

    The step is the epoch; of the rows one epoch prints, the last is kept. `loss` is the printed total,
    or the sum of the printed loss parts when there is no total column (ultralytics prints none).
    """

    fmt = "yolo"
    _ROW_RE = re.compile(r"^\s*(\d+)/(\d+)\s+\S")
    _LOSS_PARTS = ("box", "obj", "cls", "giou", "box_loss", "cls_loss", "dfl_loss", "obj_loss", "seg_loss")
    RESULTS_COLUMNS = ["Epoch", "gpu_mem", "box", "obj", "cls", "total", "targets", "img_size", "precision", "recall",
                       "mAP_0.5", "mAP_0.5:0.95", "val_box", "val_obj", "val_cls"]

    def __init__(self, collector: Collector) -> None:
        super().__init__(collector)
        self.pending: tuple[dict[str, float], float | None, int | None] | None = None

    def header_of(self, cells: list[str]) -> list[str] | None:
        words = " ".join(cells).split()
        if words and words[0].lower() == "epoch" and len(words) >= 3:
            return words
        return None

    def _emit(self) -> None:
        if self.pending is not None:
            self.out.add(*self.pending)
            self.pending = None

    def feed(self, line: str, rank: int | None) -> bool:
        if not self._ROW_RE.match(line):
            header = self.header_of(line.split())
            if header is not None:
                self.header = header
            return False
        body = line.split(":", 1)[0] if ":" in line else line  # "736: 56%|####| 1033/1833 [...]"
        cells = body.split()
        header = self.header
        if header is None or len(header) != len(cells):
            header = self.RESULTS_COLUMNS if len(cells) in (8, 15) else None
        if header is None:
            return False
        saved, self.header = self.header, header[: len(cells)]
        found = self.row(cells)
        self.header = saved
        if found is None:
            return False
        values, step = found
        low = {k.lower(): k for k in values}
        if "total" in low:
            values["loss"] = values.pop(low["total"])
        else:
            parts = [values[low[p]] for p in self._LOSS_PARTS if p in low]
            if parts:
                values["loss"] = sum(parts)
        if self.pending is not None and self.pending[1] != step:
            self._emit()
        self.pending = (values, step, rank)
        return True

    def finish(self) -> None:
        self._emit()
