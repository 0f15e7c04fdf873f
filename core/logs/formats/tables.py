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
from collections.abc import Iterable, Iterator
from pathlib import Path

from ml_debug_mcp.core.logs.formats.common import (Collector, is_ignored_key, is_step_key, strip_rank_prefix,
                                             to_float)
from ml_debug_mcp.core.paths import stays_within

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
        if path.is_file() and stays_within(run_dir, path):
            found.append((path.relative_to(metrics_dir).as_posix(), path))
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
