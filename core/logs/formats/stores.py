"""Structured metric stores: HF `trainer_state.json`, TensorBoard event files, run directories.

- transformers `TrainerState.save_to_json` writes `trainer_state.json` with `log_history`, a list
  of the dicts `Trainer.log` received plus `step` (and `epoch`); the last entry is the
  end-of-training summary (`train_runtime`, `train_loss`, ...), which is skipped.
- TensorBoard event files are read with tensorboard's own `EventFileLoader` (imported lazily),
  which also migrates `simple_value` scalars to tensors, so `torch.utils.tensorboard` output
  (legacy and `new_style=True`) reads the same. `add_scalars` writes one sub-folder per key
  (`<tag>_<key>/`), which becomes the metric name.
- A run directory is recognised by what it holds: `trainer_state.json` (or the newest
  `checkpoint-N/`), Lightning `metrics.csv` (or the newest `version_N/`), an MLflow run
  (`metrics/` + `meta.yaml`) or experiment, W&B `wandb-history.jsonl`, or tfevents files.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ml_debug_mcp.core.logs.formats.common import Collector, iter_file_lines
from ml_debug_mcp.core.logs.formats.text import json_record
from ml_debug_mcp.core import safe_fs

MAX_JSON_BYTES = 256 << 20
MAX_WALK_ENTRIES = 5000
_CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)$")
_VERSION_RE = re.compile(r"version_(\d+)$")


def parse_trainer_state(path: Path, collector: Collector) -> None:
    with safe_fs.open_read(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        collector.bytes += size
        if size > MAX_JSON_BYTES:
            collector.warn(f"trainer_state.json is {size} bytes, over the {MAX_JSON_BYTES} byte limit; not read")
            return
        text = fh.read().decode("utf-8", "replace")
    trainer_state_records(text, collector)


def trainer_state_records(text: str, collector: Collector) -> None:
    """Records of a trainer_state.json document (its `log_history`), without the final summary."""
    try:
        state = json.loads(text)
    except ValueError as exc:
        collector.warn(f"trainer_state.json is not valid JSON ({exc}); perhaps still being written")
        return
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        collector.warn("no 'log_history' list in this JSON document")
        return
    for entry in history:
        collector.lines += 1
        if not isinstance(entry, dict) or "train_runtime" in entry:
            continue
        values, step, _, _ = json_record(entry)
        if not collector.add(values, step):
            collector.unparsed += 1


def looks_like_trainer_state(head: bytes) -> bool:
    return head.lstrip().startswith(b"{") and b'"log_history"' in head


# --- TensorBoard -------------------------------------------------------------------------------

def is_event_file(path: Path) -> bool:
    return "tfevents" in path.name


def looks_like_event_file(head: bytes) -> bool:
    # A TFRecord starts with an 8-byte length and 4-byte CRC; the first Event holds "brain.Event:N".
    return b"brain.Event:" in head[:128]


def find_event_files(root: Path, limit: int = 200) -> list[Path]:
    found: list[Path] = []
    seen = 0
    for dirpath, dirnames, filenames in safe_fs.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            seen += 1
            real = safe_fs.confine(root, Path(dirpath) / name) if "tfevents" in name else None
            if real is not None:
                found.append(real)
                if len(found) >= limit:
                    return found
        if seen > MAX_WALK_ENTRIES:
            break
    return found


def _tb_name(tag: str, rel_dir: str, prefix_dirs: bool) -> str:
    if not rel_dir or rel_dir == ".":
        return tag
    last = rel_dir.rsplit("/", 1)[-1]
    if last.startswith(tag + "_"):
        return last  # add_scalars: "<main_tag>_<key>" folder
    return f"{rel_dir}/{tag}" if prefix_dirs else tag


def _load_events(loader: Callable[[str], Any], file: Path) -> Iterator[Any]:
    """The events of one file, read through its verified descriptor (the reader takes only paths)."""
    with safe_fs.as_fd_path(file) as fd_path:
        yield from loader(fd_path).Load()


def parse_tensorboard(root: Path, collector: Collector) -> None:
    """Scalars from every event file under `root` (a file or a log dir)."""
    try:
        from tensorboard.backend.event_processing import event_file_loader
        from tensorboard.util import tensor_util
    except Exception as exc:  # tensorboard is an extra of the light install
        collector.warn(f"tensorboard is not importable ({exc}); event files cannot be read: "
                       "pip install 'ml-debug-mcp[tensorboard]' in the server's environment")
        return
    files = [root] if root.is_file() else find_event_files(root)
    if not files:
        collector.warn("no TensorBoard event files found")
        return
    dirs = {f.parent for f in files}
    # Names are relative to the folder the event files share (HF nests them in runs/<date>/).
    base = Path(os.path.commonpath([str(d) for d in dirs]))
    prefix_dirs = len(dirs) > 1
    for file in files:
        rel_dir = file.parent.relative_to(base).as_posix() if file.parent != base else ""
        try:
            collector.bytes += file.stat().st_size
            for event in _load_events(event_file_loader.EventFileLoader, file):
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    plugin = value.metadata.plugin_data.plugin_name
                    if plugin not in ("scalars", ""):
                        continue
                    number = None
                    if value.HasField("tensor"):
                        try:
                            arr = tensor_util.make_ndarray(value.tensor)
                        except Exception:
                            continue
                        if arr.size == 1 and arr.dtype.kind in "fiu":
                            number = float(arr.reshape(-1)[0])
                    elif value.HasField("simple_value"):
                        number = float(value.simple_value)
                    if number is None:
                        continue
                    collector.lines += 1
                    name = _tb_name(value.tag, rel_dir, prefix_dirs)
                    collector.add({name: number}, float(event.step))
        except Exception as exc:
            collector.warn(f"{file.name}: stopped reading ({type(exc).__name__}: {exc}); "
                           "the file may be truncated or still being written")


# --- run directories ---------------------------------------------------------------------------

def _newest(paths: list[Path]) -> Path | None:
    best, best_m = None, -math.inf
    for p in paths:
        try:
            m = p.stat().st_mtime
        except OSError:
            continue
        if m > best_m:
            best, best_m = p, m
    return best


def _highest_numbered(paths: list[Path], pattern: re.Pattern[str]) -> Path | None:
    numbered = [(int(m.group(1)), p) for p in paths for m in [pattern.search(p.name)] if m]
    return max(numbered)[1] if numbered else None


def resolve_run_dir(directory: Path) -> tuple[str, Path, list[str]] | None:
    """(format, what to read, notes) for a recognised run directory, else None."""
    try:
        return _resolve_run_dir(directory)
    except OSError:
        return None  # an unreadable sub-folder: not a layout we can use


def _resolve_run_dir(directory: Path) -> tuple[str, Path, list[str]] | None:
    notes: list[str] = []
    try:
        children = sorted(directory.iterdir())[:MAX_WALK_ENTRIES]
    except OSError as exc:
        notes.append(f"cannot list {directory}: {exc.strerror or exc}")
        return None
    names = {c.name: c for c in children}
    if "trainer_state.json" in names:
        return "hf_trainer_state", names["trainer_state.json"], notes
    checkpoints = [c for c in children if c.is_dir() and _CHECKPOINT_RE.search(c.name)
                   and (c / "trainer_state.json").is_file()]
    if checkpoints:
        chosen = _highest_numbered(checkpoints, _CHECKPOINT_RE)
        if chosen is not None:
            if len(checkpoints) > 1:
                notes.append(f"read {chosen.name}/trainer_state.json, the latest of {len(checkpoints)} checkpoints")
            return "hf_trainer_state", chosen / "trainer_state.json", notes
    if "metrics.csv" in names:
        return "lightning_csv", names["metrics.csv"], notes
    versions = [c for c in children if c.is_dir() and _VERSION_RE.search(c.name) and (c / "metrics.csv").is_file()]
    if not versions and "lightning_logs" in names and names["lightning_logs"].is_dir():
        versions = [c for c in names["lightning_logs"].iterdir()
                    if c.is_dir() and _VERSION_RE.search(c.name) and (c / "metrics.csv").is_file()]
    if versions:
        chosen = _highest_numbered(versions, _VERSION_RE)
        if chosen is not None:
            if len(versions) > 1:
                notes.append(f"read {chosen.name}/metrics.csv, the newest of {len(versions)} versions")
            return "lightning_csv", chosen / "metrics.csv", notes
    if "metrics" in names and names["metrics"].is_dir() and ("meta.yaml" in names or "params" in names):
        return "mlflow", directory, notes
    runs = [c for c in children if c.is_dir() and (c / "metrics").is_dir()]
    if not runs and "mlruns" in names:
        runs = [r for exp in names["mlruns"].iterdir() if exp.is_dir()
                for r in exp.iterdir() if r.is_dir() and (r / "metrics").is_dir()]
    if not runs:
        runs = [r for exp in children if exp.is_dir() and (exp / "meta.yaml").is_file()
                for r in exp.iterdir() if r.is_dir() and (r / "metrics").is_dir()]
    if runs:
        chosen = _newest(runs)
        if chosen is not None:
            if len(runs) > 1:
                notes.append(f"read MLflow run {chosen.name}, the most recently modified of {len(runs)} runs")
            return "mlflow", chosen, notes
    history = [p for p in (directory / "wandb-history.jsonl", directory / "files" / "wandb-history.jsonl") if p.is_file()]
    if not history:
        history = sorted(directory.glob("*/wandb-history.jsonl")) + sorted(directory.glob("*/*/wandb-history.jsonl"))
        history += sorted(directory.glob("wandb/*/files/wandb-history.jsonl"))
    if history:
        chosen = _newest(history)
        if chosen is not None:
            if len(history) > 1:
                notes.append(f"read {chosen}, the newest of {len(history)} W&B runs")
            return "wandb", chosen, notes
    if find_event_files(directory, limit=1):
        return "tensorboard", directory, notes
    return None


def read_mlflow_run(run_dir: Path, collector: Collector) -> None:
    from ml_debug_mcp.core.logs.formats.tables import mlflow_metric_files, parse_mlflow_metric_lines

    files = mlflow_metric_files(run_dir)
    if not files:
        collector.warn(f"no metric files under {run_dir / 'metrics'}")
    for name, file in files:
        parse_mlflow_metric_lines(iter_file_lines(file, collector), name, collector)

