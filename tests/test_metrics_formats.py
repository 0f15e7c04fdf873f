"""Every supported metric format, read from golden fixtures (see tests/fixtures/logs/README.md).

Expected values are recomputed from the fixture text with independent, format-specific code
(json, csv, a plain regex), so a parser bug cannot hide behind a copied constant.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from ml_debug_mcp.core.logs.metrics import FORMATS, detect_format, parse_metrics, parse_metrics_text

LOGS = Path(__file__).parent / "fixtures" / "logs"


def series(parsed, name, rank=None):
    found = parsed.get(name, rank)
    assert found is not None, f"no series {name!r} (rank {rank}); have {[s.key for s in parsed.series]}"
    return found


def points(s):
    return list(zip(s.steps, s.values))


def test_formats_listing_is_ids_with_descriptions():
    assert {"hf_trainer", "hf_trainer_state", "lightning_csv", "csv", "jsonl", "keyvalue", "nanogpt", "keras",
            "fairseq", "megatron", "tensorboard", "mlflow", "wandb"} <= set(FORMATS)
    assert all(isinstance(v, str) and v for v in FORMATS.values())


@pytest.mark.parametrize("name, fmt", [
    ("hf_trainer_console.log", "hf_trainer"),
    ("hf_trainer_console_v4_5x.log", "hf_trainer"),
    ("hf_output", "hf_trainer_state"),
    ("hf_output/checkpoint-20/trainer_state.json", "hf_trainer_state"),
    ("lightning_logs", "lightning_csv"),
    ("lightning_logs/version_0/metrics.csv", "lightning_csv"),
    ("metrics.jsonl", "jsonl"),
    ("generic.csv", "csv"),
    ("generic.tsv", "csv"),
    ("keyvalue.log", "keyvalue"),
    ("nanogpt.log", "nanogpt"),
    ("keras2.log", "keras"),
    ("keras3.log", "keras"),
    ("fairseq_simple.log", "fairseq"),
    ("fairseq_json.log", "fairseq"),
    ("megatron.log", "megatron"),
    ("mlruns", "mlflow"),
    ("mlruns/1/3f2a9c0d5e6b4a7c8d9e0f1a2b3c4d5e/metrics/loss", "mlflow"),
    ("wandb", "wandb"),
    ("wandb/offline-run-20240101_120000-abc123de/files/wandb-history.jsonl", "wandb"),
    ("torchrun_ranks.log", "keyvalue"),
    ("torchrun_default_prefix.log", "nanogpt"),
])
def test_detect_format(name, fmt):
    assert detect_format(LOGS / name) == fmt
    assert parse_metrics(LOGS / name).format == fmt


def test_hf_console_bare_floats_tqdm_and_eval_steps():
    text = (LOGS / "hf_trainer_console.log").read_text()
    dicts = [eval(m) for m in re.findall(r"\{'[^{}]*\}", text)]  # the fixture's own dict reprs
    train = [d for d in dicts if "loss" in d]
    evals = [d for d in dicts if "eval_loss" in d]
    parsed = parse_metrics(LOGS / "hf_trainer_console.log")
    loss = series(parsed, "loss")
    assert loss.values == [d["loss"] for d in train]
    assert loss.steps == [float(i) for i in range(1, len(train) + 1)]
    assert series(parsed, "lr").values == [d["learning_rate"] for d in train]
    # Each eval record sits at the step of the train record logged just before it.
    eval_loss = series(parsed, "eval_loss")
    assert eval_loss.values == [d["eval_loss"] for d in evals]
    assert eval_loss.steps == [4.0, 8.0]
    # The final train_runtime summary is not a training step.
    assert loss.stats.count == len(train)


def test_hf_console_string_values_and_nan():
    parsed = parse_metrics(LOGS / "hf_trainer_console_v4_5x.log")
    grad = series(parsed, "grad_norm")
    assert grad.stats.nan_count == 1
    assert [nf.step for nf in grad.nonfinite] == [5.0]
    assert series(parsed, "loss").stats.count == 6
    assert series(parsed, "eval_loss").values == [0.6543]


def test_hf_output_dir_reads_latest_checkpoint_state():
    parsed = parse_metrics(LOGS / "hf_output")
    state = json.loads((LOGS / "hf_output/checkpoint-40/trainer_state.json").read_text())
    train = [e for e in state["log_history"] if "loss" in e]
    loss = series(parsed, "loss")
    assert loss.steps == [float(e["step"]) for e in train]
    assert loss.values == [e["loss"] for e in train]
    assert series(parsed, "eval_loss").steps == [float(e["step"]) for e in state["log_history"] if "eval_loss" in e]
    assert any("checkpoint-40" in w for w in parsed.warnings)
    assert parsed.path.endswith("checkpoint-40/trainer_state.json")


def test_lightning_newest_version_sparse_columns():
    parsed = parse_metrics(LOGS / "lightning_logs")
    assert parsed.path.endswith("version_1/metrics.csv")
    with open(LOGS / "lightning_logs/version_1/metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    step_rows = [r for r in rows if r["train_loss_step"]]
    loss = series(parsed, "loss")
    assert loss.values == [float(r["train_loss_step"]) for r in step_rows]
    assert loss.steps == [float(r["step"]) for r in step_rows]
    val_rows = [r for r in rows if r["val_loss"]]
    assert series(parsed, "eval_loss").values == [float(r["val_loss"]) for r in val_rows]
    assert series(parsed, "eval_accuracy").values == [float(r["val_acc"]) for r in val_rows]
    # The epoch average keeps a series of its own instead of joining the per-step loss.
    assert series(parsed, "train_loss_epoch_avg").stats.count == sum(1 for r in rows if r["train_loss_epoch"])


def test_jsonl_nan_and_infinity_tokens():
    parsed = parse_metrics(LOGS / "metrics.jsonl")
    records = [json.loads(line) for line in (LOGS / "metrics.jsonl").read_text().splitlines()]
    loss = series(parsed, "loss")
    assert loss.steps == [float(r["step"]) for r in records]
    assert loss.stats.nan_count == sum(math.isnan(r["loss"]) for r in records) == 1
    grad = series(parsed, "grad_norm")
    assert grad.stats.inf_count == 1
    assert [(nf.step, nf.kind) for nf in grad.nonfinite] == [(50.0, "inf")]


@pytest.mark.parametrize("name, step_col, mapping", [
    ("generic.csv", "global_step", {"train/loss": "loss", "val/loss": "eval_loss", "lr": "lr"}),
    ("generic.tsv", "iteration", {"loss": "loss", "accuracy": "accuracy"}),
])
def test_generic_csv_and_tsv(name, step_col, mapping):
    path = LOGS / name
    delimiter = "\t" if name.endswith(".tsv") else ","
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=delimiter))
    parsed = parse_metrics(path)
    for column, canonical in mapping.items():
        expected = [(float(r[step_col]), float(r[column])) for r in rows if r[column]]
        assert points(series(parsed, canonical)) == expected


def test_keyvalue_log_with_logging_prefix():
    text = (LOGS / "keyvalue.log").read_text()
    expected = [(float(s), float(v)) for s, v in re.findall(r"step (\d+) \| loss ([\d.]+)", text)]
    parsed = parse_metrics(LOGS / "keyvalue.log")
    assert points(series(parsed, "loss")) == expected
    assert {"loss", "lr", "grad_norm", "throughput"} <= set(parsed.names)
    # "train.py:88" and the timestamp are not metrics.
    assert not any(n.startswith(("train_py", "info")) for n in parsed.names)
    assert parsed.unparsed_lines == 2


def test_nanogpt_iter_and_eval_lines():
    text = (LOGS / "nanogpt.log").read_text()
    parsed = parse_metrics(LOGS / "nanogpt.log")
    iters = re.findall(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms, mfu (-?[\d.]+)%", text, re.M)
    evals = re.findall(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", text, re.M)
    # Both line kinds carry a training loss; in file order they form the loss curve.
    in_order = re.findall(r"^(?:iter (\d+): loss|step (\d+): train loss) ([\d.]+)", text, re.M)
    assert points(series(parsed, "loss")) == [(float(i or s), float(v)) for i, s, v in in_order]
    assert points(series(parsed, "eval_loss")) == [(float(s), float(v)) for s, _, v in evals]
    assert points(series(parsed, "step_time")) == [(float(i), float(t)) for i, _, t, _ in iters]
    assert series(parsed, "mfu").stats.min == -100.0


@pytest.mark.parametrize("name", ["keras2.log", "keras3.log"])
def test_keras_epoch_end_lines_only(name):
    parsed = parse_metrics(LOGS / name)
    text = re.sub(r"\x1b\[[0-9;]*m", "", (LOGS / name).read_text())
    finals = [seg for seg in re.split(r"[\r\n]", text.replace("\b", "")) if seg.strip().startswith("10/10")]
    expected = [float(re.search(r" - loss: ([\d.]+)", seg).group(1)) for seg in finals]
    loss = series(parsed, "loss")
    assert loss.values == expected
    assert loss.steps == [1.0, 2.0, 3.0]  # the epoch
    assert series(parsed, "eval_loss").stats.count == 3
    assert series(parsed, "eval_accuracy").stats.count == 3


def test_fairseq_simple_inner_valid_and_epoch_summary():
    text = (LOGS / "fairseq_simple.log").read_text()
    parsed = parse_metrics(LOGS / "fairseq_simple.log")
    inner = re.findall(r"loss=([\d.]+),.*num_updates=(\d+)", text)
    assert points(series(parsed, "loss")) == [(float(u), float(v)) for v, u in inner]
    valid = re.findall(r"valid on 'valid' subset \| loss ([\d.]+) .*num_updates (\d+)", text)
    assert points(series(parsed, "eval_loss")) == [(float(u), float(v)) for v, u in valid]
    assert series(parsed, "epoch_loss").stats.count == 2  # the end-of-epoch train summaries
    assert series(parsed, "grad_norm").stats.count == len(inner)  # gnorm


def test_fairseq_json_string_values():
    parsed = parse_metrics(LOGS / "fairseq_json.log")
    rows = [json.loads(line.split("| ", 3)[-1]) for line in (LOGS / "fairseq_json.log").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    assert points(series(parsed, "loss")) == [(float(r["num_updates"]), float(r["loss"])) for r in train]
    assert points(series(parsed, "eval_loss")) == [(500.0, 4.1)]


def test_megatron_training_and_validation_lines():
    text = (LOGS / "megatron.log").read_text()
    parsed = parse_metrics(LOGS / "megatron.log")
    lm = re.findall(r"iteration\s+(\d+)/\s*\d+ \|.*? lm loss: ([\d.E+-]+) \|", text)
    assert points(series(parsed, "loss")) == [(float(i), float(v)) for i, v in lm]
    assert series(parsed, "lr").stats.count == len(re.findall(r"iteration\s+\d+/", text))
    assert series(parsed, "grad_norm").stats.count == len(lm)
    val = re.findall(r"validation loss at iteration (\d+) \| lm loss value: ([\d.E+-]+)", text)
    assert points(series(parsed, "eval_loss")) == [(float(i), float(v)) for i, v in val]
    assert series(parsed, "step_time").stats.count > 0
    assert series(parsed, "loss_scale").stats.count > 0


def test_mlflow_run_dir_and_single_metric_file():
    run = LOGS / "mlruns/1/3f2a9c0d5e6b4a7c8d9e0f1a2b3c4d5e"
    parsed = parse_metrics(LOGS / "mlruns")
    rows = [line.split() for line in (run / "metrics/loss").read_text().splitlines()]
    assert points(series(parsed, "loss")) == [(float(s), float(v)) for _, v, s in rows]
    assert series(parsed, "accuracy").stats.count == len((run / "metrics/train/accuracy").read_text().splitlines())
    assert series(parsed, "eval_loss").stats.count == 4
    single = parse_metrics(run / "metrics/train/accuracy")
    assert single.names == ["accuracy"]


def test_wandb_offline_history():
    parsed = parse_metrics(LOGS / "wandb")
    rows = [json.loads(line) for line in next((LOGS / "wandb").rglob("wandb-history.jsonl")).read_text().splitlines()]
    assert points(series(parsed, "loss")) == [(float(r["_step"]), r["train/loss"]) for r in rows]
    assert "runtime" not in parsed.names and "timestamp" not in parsed.names


def test_torchrun_rank_prefixes_kept_apart():
    parsed = parse_metrics(LOGS / "torchrun_ranks.log")
    assert parsed.ranks == [0, 1]
    r0, r1 = series(parsed, "loss", 0), series(parsed, "loss", 1)
    assert r0.stats.nan_count == 0
    assert r1.stats.nan_count == 2 and r1.stats.first_nonfinite_step == 160.0
    assert series(parsed, "grad_norm", 1).stats.inf_count == 2
    assert parsed.get("loss").rank == 0  # rank None falls back to rank 0
    default = parse_metrics(LOGS / "torchrun_default_prefix.log")
    assert default.ranks == [0, 1]
    assert series(default, "loss", 1).stats.count == 10



def test_torch2_rank_prefix_with_space_keeps_ranks_apart():
    text = "\n".join(f"[rank{r}]: step {s} | loss {2 + r + s / 10}" for s in range(5) for r in (0, 1))
    parsed = parse_metrics_text(text)
    assert parsed.ranks == [0, 1]
    assert points(series(parsed, "loss", 1)) == [(s, 3 + s / 10) for s in range(5)]
    assert points(series(parsed, "loss", 0)) == [(s, 2 + s / 10) for s in range(5)]

def _tensorboard_run(logdir: Path) -> None:
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(logdir)) as writer:
        for step in range(20):
            writer.add_scalar("train/loss", 2.0 / (step + 1), step)
            writer.add_scalar("lr", 1e-3, step, new_style=True)  # tensor-valued scalar
        writer.add_scalar("train/loss", float("nan"), 20)
        writer.add_scalars("acc", {"train": 0.5, "val": 0.4}, 20)
        writer.add_histogram("weights", np.arange(10.0), 0)
        writer.add_text("note", "not a scalar", 0)


def test_tensorboard_written_by_summarywriter(tmp_path):
    _tensorboard_run(tmp_path / "tb")
    assert detect_format(tmp_path / "tb") == "tensorboard"
    parsed = parse_metrics(tmp_path / "tb")
    loss = series(parsed, "loss")
    assert loss.stats.count == 21 and loss.stats.nan_count == 1
    assert loss.values[:3] == pytest.approx([2.0, 1.0, 2.0 / 3], rel=1e-6)
    assert series(parsed, "lr").stats.count == 20
    assert {"accuracy", "acc_val"} <= set(parsed.names)  # add_scalars folders acc_train/, acc_val/
    assert "weights" not in parsed.names and "note" not in parsed.names
    event_file = next((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert parse_metrics(event_file).format == "tensorboard"


def test_tensorboard_truncated_event_file_degrades(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb")) as writer:
        for step in range(200):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
    event_file = next((tmp_path / "tb").glob("events.out.tfevents.*"))
    data = event_file.read_bytes()
    event_file.write_bytes(data[: len(data) // 2 + 7])  # cut inside a record, as a crash would
    parsed = parse_metrics(event_file)
    assert parsed.format == "tensorboard"
    count = series(parsed, "loss").stats.count
    assert 50 < count < 200


def test_hf_output_dir_with_tensorboard_only(tmp_path):
    _tensorboard_run(tmp_path / "out" / "runs" / "May01_12-00-00_host")
    parsed = parse_metrics(tmp_path / "out")
    assert parsed.format == "tensorboard"
    assert series(parsed, "loss").stats.count == 21


def test_fmt_override_and_unknown_fmt():
    text = "step 1 | loss 2.0\nstep 2 | loss 1.5\n"
    assert parse_metrics_text(text, fmt="keyvalue").get("loss").values == [2.0, 1.5]
    with pytest.raises(ValueError, match="Unknown format 'nope'"):
        parse_metrics_text(text, fmt="nope")
    with pytest.raises(ValueError, match="auto-detect"):
        parse_metrics(LOGS / "keyvalue.log", fmt="nope")


def test_max_points_bounds_series_but_stats_stay_exact():
    lines = [f"step {i} | loss {1000 - i if i != 777 else 5000}" for i in range(5000)]
    parsed = parse_metrics_text("\n".join(lines), max_points=60)
    loss = series(parsed, "loss")
    assert len(loss.steps) <= 60 and loss.downsampled
    assert loss.stats.count == 5000
    assert loss.stats.max == 5000 and loss.stats.max_step == 777
    assert 5000 in loss.values  # the spike survives downsampling



@pytest.mark.parametrize("max_points", [10, 50])
def test_downsampling_keeps_the_first_and_last_points(tmp_path, max_points):
    """An agent reads the end of a curve first: grad_norm logged every 10 steps must end at 990."""
    rows = [{"step": s, "loss": 3 - s / 1000, **({"grad_norm": 1 + math.sin(s)} if s % 10 == 0 else {})}
            for s in range(1000)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    parsed = parse_metrics(tmp_path / "m.jsonl", max_points=max_points)
    for name, last in (("grad_norm", 990), ("loss", 999)):
        s = series(parsed, name)
        assert (s.steps[0], s.steps[-1]) == (0, last) and len(s.steps) <= max_points
        assert s.values[-1] == pytest.approx(rows[last][name])

def test_bulk_path_matches_line_by_line(tmp_path):
    """The template fast path must give exactly what the line parser gives."""
    import random

    rng = random.Random(3)
    lines = []
    for step in range(30000):
        for rank in (0, 1):
            loss = "nan" if (rank == 1 and step > 29000) else f"{2 + rng.random():.4f}"
            lines.append(f"[rank{rank}]:2024-05-01 12:00:00,000 INFO train.py:9 step {step} | loss {loss} | "
                         f"lr {3e-4:.2e} | grad_norm {rng.random():.3f}")
        if step % 500 == 0:
            lines.append(f"[rank0]:step {step}: train loss {2.5:.4f}, val loss {2.6 + rng.random():.4f}")
            lines.append("[rank0]:2024-05-01 12:00:00,000 INFO data.py:1 loaded shard 7 (123 samples)")
    text = "\n".join(lines) + "\n"
    path = tmp_path / "big.log"
    path.write_text(text)
    bulk = parse_metrics(path)
    from ml_debug_mcp.core.logs.formats.common import Collector
    from ml_debug_mcp.core.logs.formats.bulk import parse_text_blocks

    collector = Collector()
    parse_text_blocks([(0, text.encode())], bulk.format, collector, bulk=False)
    slow = collector.result(bulk.format)
    assert [s.key for s in bulk.series] == [s.key for s in slow.series]
    for a, b in zip(bulk.series, slow.series):
        assert a.steps == b.steps and a.values == b.values and a.nonfinite == b.nonfinite
        sa, sb = a.stats.model_dump(), b.stats.model_dump()
        assert sa.pop("mean") == pytest.approx(sb.pop("mean"))
        assert sa == sb
    assert bulk.records == slow.records
    assert bulk.unparsed_lines == slow.unparsed_lines
    assert bulk.lines_scanned == len(lines)


# --- bad input ----------------------------------------------------------------------------------

def test_binary_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 100)
    assert detect_format(path) == "binary"
    parsed = parse_metrics(path)
    assert parsed.format == "binary" and not parsed.series
    assert any("binary file" in w for w in parsed.warnings)


def test_non_utf8_bytes_are_replaced(tmp_path):
    path = tmp_path / "latin1.log"
    path.write_bytes(b"step 1 | loss 2.0 | note caf\xe9\nstep 2 | loss 1.0 | note \xff\xfe\n")
    parsed = parse_metrics(path)
    assert series(parsed, "loss").values == [2.0, 1.0]


def test_truncated_mid_line(tmp_path):
    path = tmp_path / "cut.log"
    path.write_bytes(b"step 1 | loss 2.0\nstep 2 | loss 1.5\nstep 3 | lo")
    parsed = parse_metrics(path)
    assert series(parsed, "loss").values == [2.0, 1.5]
    assert parsed.lines_scanned == 3


def test_empty_file_and_missing_path(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    parsed = parse_metrics(empty)
    assert parsed.series == [] and any("empty" in w for w in parsed.warnings)
    missing = parse_metrics(tmp_path / "nope.log")
    assert missing.format == "unknown" and any("does not exist" in w for w in missing.warnings)


def test_unknown_format_text_is_scanned(tmp_path):
    path = tmp_path / "prose.txt"
    path.write_text("hello\nthis is not a training log\n")
    parsed = parse_metrics(path)
    assert parsed.format == "unknown" and parsed.lines_scanned == 2
    assert parsed.warnings


def test_plain_directory_reads_newest_log(tmp_path):
    import os

    old = tmp_path / "old.log"
    old.write_text("step 1 | loss 9.0\n")
    os.utime(old, (1_000_000, 1_000_000))
    (tmp_path / "new.log").write_text("step 1 | loss 1.0\n")
    (tmp_path / "notes.md").write_text("step 1 | loss 5.0\n")
    parsed = parse_metrics(tmp_path)
    assert parsed.path.endswith("new.log")
    assert series(parsed, "loss").values == [1.0]
    assert any("newest log file" in w for w in parsed.warnings)


def test_huge_single_line_is_skipped_not_held(tmp_path):
    from ml_debug_mcp.core.logs.formats import common as logfmt_common

    path = tmp_path / "blob.log"
    with open(path, "wb") as fh:
        fh.write(b"step 1 | loss 2.0\n")
        fh.write(b"x" * (3 * logfmt_common.MAX_LINE_BYTES))
        fh.write(b"\nstep 2 | loss 1.0\n")
    parsed = parse_metrics(path)
    assert series(parsed, "loss").values == [2.0, 1.0]
    assert any("longer than" in w for w in parsed.warnings)


def test_directory_copy_of_fixture_is_still_recognised(tmp_path):
    shutil.copytree(LOGS / "lightning_logs", tmp_path / "lightning_logs")
    assert detect_format(tmp_path) == "lightning_csv"


def test_nan_between_key_value_pairs_is_kept():
    """`loss=nan lr=0.1`: a NaN followed by another pair is a NaN, not a dropped value."""
    from ml_debug_mcp.core.logs.metrics import parse_metrics_text

    parsed = parse_metrics_text("step=1 loss=2.0 lr=0.1\nstep=2 loss=nan lr=0.1\nstep=3 loss=inf lr=0.1\n")
    loss = parsed.get("loss")
    assert loss is not None and loss.stats.nan_count == 1 and loss.stats.inf_count == 1
    assert loss.stats.first_nonfinite_step == 2
    prose = parse_metrics_text("number of nan iterations: 0 loss 2.0\n")
    assert all(s.stats.nan_count == 0 for s in prose.series)


def test_bracketed_values_deepspeed_lr_and_tutorial_step_counters():
    # deepspeed/runtime/engine.py _report_progress: "step={}, skipped={}, lr={}, mom={}" with per-group lists
    ds = parse_metrics_text(
        "[2024-05-01 12:00:00,000] [INFO] [logging.py:96:log_dist] [Rank 0] step=100, skipped=0, lr=[0.0001], "
        "mom=[(0.9, 0.999)]\n"
        "[2024-05-01 12:00:09,000] [INFO] [logging.py:96:log_dist] [Rank 0] step=110, skipped=0, lr=[9e-05], "
        "mom=[(0.9, 0.999)]\n", fmt="keyvalue")
    lr = ds.get("lr")
    assert lr is not None and lr.stats.last_value == 9e-05 and lr.stats.last_step == 110.0
    # The classic PyTorch tutorial print: print(f"Epoch [{e}/{n}], Step [{i}/{total}], Loss: {loss:.4f}")
    tut = parse_metrics_text("Epoch [1/5], Step [100/600], Loss: 0.6931\nEpoch [1/5], Step [200/600], Loss: 0.5123\n")
    loss = tut.get("loss")
    assert loss is not None and loss.steps == [100.0, 200.0] and loss.stats.last_value == 0.5123


def test_wandb_history_prefers_the_trainers_global_step_over_the_log_call_counter():
    # transformers' WandbCallback logs train/global_step; wandb adds _step, a count of wandb.log calls
    lines = "".join(json.dumps({"_step": i, "train/loss": 2.0 - i / 100, "train/global_step": 100 * i,
                                "_runtime": 3.5 * i, "_timestamp": 1.7e9 + i}) + "\n" for i in range(20))
    parsed = parse_metrics_text(lines)
    assert parsed.names == ["loss"], "global_step is the step, not a metric"
    assert parsed.get("loss").steps[:3] == [0.0, 100.0, 200.0] and parsed.get("loss").stats.last_step == 1900.0
    alone = parse_metrics_text("".join(json.dumps({"_step": i, "loss": 1.0}) + "\n" for i in range(3)))
    assert alone.get("loss").steps == [0.0, 1.0, 2.0], "with nothing else, _step is the step"


def test_an_objective_by_another_name_makes_a_metric_line():
    """MXNet's language-model example prints NLL and perplexity and no key called loss: still metric lines."""
    text = "".join(f"Epoch [{32732 + 28 * i}] Train: NLL={4.494 - 0.01 * i:.3f}, Perp={89.5 - i:.3f}\n" for i in range(5))
    parsed = parse_metrics_text(text)
    assert [round(v, 3) for v in parsed.get("nll").values] == [4.494, 4.484, 4.474, 4.464, 4.454]
    assert len(parsed.get("perp").values) == 5


def test_prose_naming_no_metric_stays_unread():
    assert parse_metrics_text("Epoch [3] Train: nodes=120, edges=4500\n" * 4).series == []
