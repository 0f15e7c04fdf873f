"""Metric lines of frameworks outside the PyTorch-Trainer family, read by their named parsers.

Every golden fixture under tests/fixtures/logs/frameworks/ is copied verbatim from a public log
(sources in SOURCES.md); the expected series below are read off those lines by hand. The position
finder and the console-table parser are checked on the forms trainers print, and on text that
only looks like them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ml_debug_mcp.core.logs.formats.position import StepClock, find_position
from ml_debug_mcp.core.logs.formats.registry import FORMATS, TEXT_FORMATS, classify_line, describe
from ml_debug_mcp.core.logs.metrics import detect_format, parse_metrics, parse_metrics_text

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "logs" / "frameworks"


def series(parsed, name):
    found = [s for s in parsed.series if s.name == name]
    assert found, f"no {name} series in {[s.name for s in parsed.series]}"
    return found[0]


def points(parsed, name):
    s = series(parsed, name)
    return list(zip(s.steps, s.values))


# (fixture, format id, {series: [(step, value), ...]}) — values as printed in the fixture.
GOLDEN = [
    ("caffe.log", "caffe", {
        "loss": [(8120, -6.43825e-20), (8160, -6.43825e-20), (8200, -6.43825e-20)],
        "lr": [(8080, 1e-05), (8120, 1e-05), (8160, 1e-05), (8200, 1e-05)],
        "loss_bbox": [(8120, 0.0), (8160, 0.0), (8200, 0.0)],
        # the first line's output comes before any iteration line: its step is unknown, it is not kept
        "loss_coverage": [(8120, 0.0), (8160, 0.0), (8200, 0.0)],
    }),
    ("detectron2.log", "detectron2", {
        "loss": [(19, 1.986), (39, 1.872), (59, 1.578), (79, 1.468), (99, 1.236), (119, 1.109)],
        "lr": [(19, 1.6068e-05), (39, 3.2718e-05), (59, 4.9367e-05), (79, 6.6017e-05), (99, 8.2668e-05),
               (119, 9.9318e-05)],
        "loss_cls": [(19, 0.595), (39, 0.5049), (59, 0.4264), (79, 0.3577), (99, 0.2802), (119, 0.2311)],
        "memory": [(19, 2725), (39, 2849), (59, 2849), (79, 2849), (99, 2849), (119, 2849)],
    }),
    ("mmcv.log", "mmcv", {  # Epoch [1][i/29317]: the first epoch of the paste counts from 0
        "loss": [(2150, 1.0037), (2200, 0.9392), (2250, 0.9800), (2300, 0.9889), (2350, 0.9516)],
        "lr": [(2150, 0.02), (2200, 0.02), (2250, 0.02), (2300, 0.02), (2350, 0.02)],
        "accuracy": [(2150, 90.0684), (2200, 90.4268), (2250, 90.2373), (2300, 89.8252), (2350, 90.2236)],
        "step_time": [(2150, 0.391), (2200, 0.391), (2250, 0.394), (2300, 0.394), (2350, 0.388)],
    }),
    ("mxnet.log", "mxnet", {  # batches of epoch 6 continue from the last batch of epoch 5
        "accuracy": [(100, 0.987778), (200, 0.985625), (300, 0.983594), (400, 0.986250), (500, 0.985156),
                     (600, 0.986719), (700, 0.985156), (800, 0.988437), (900, 0.986875), (900, 0.989443),
                     (1000, 0.988552), (1100, 0.989688), (1200, 0.988906), (1300, 0.987812), (1400, 0.987656)],
        "eval_accuracy": [(4, 0.972432), (900, 0.971636)],
        "epoch_time": [(900, 1.627)],
    }),
    ("paddle.log", "paddle", {  # Epoch: [e] [i/1832]: epoch 1 batch 0 is step 1832
        "loss": [(1600, 3.706899), (1700, 3.372004), (1800, 3.515841), (1832, 3.343108), (1932, 3.376305)],
        "lr": [(1600, 0.001747), (1700, 0.001856), (1800, 0.001965), (1832, 0.002), (1932, 0.002109)],
    }),
    ("mindspore.log", "mindspore", {
        "loss": [(1872, 0.0793872), (1873, 0.07211199), (1874, 0.079631396), (1875, 0.31805548)],
    }),
    ("jax.log", "jax", {  # four hosts print step 400
        "loss": [(400, 3.219879150390625)] * 4 + [(500, 0.8868171572685242)],
        "lr": [(400, 0.35846155881881714)] * 4 + [(500, 0.4610256254673004)],
        "accuracy": [(400, 0.3724340796470642)] * 4 + [(500, 0.8223657011985779)],
    }),
    ("baselines.log", "baselines", {  # Stable-Baselines3 PPO: one record per box, at its total timesteps
        "throughput": [(2048, 180), (4096, 74), (6144, 62), (8192, 58)],
        "reward": [(2048, 1.8), (4096, 1.48), (6144, 1.67), (8192, 1.87)],
        "loss": [(4096, -0.0199), (6144, -0.0789), (8192, -0.102)],
        "kl": [(4096, 0.0142255565), (6144, 0.039744124), (8192, 0.050227404)],
        "train_value_loss": [(4096, 0.049), (6144, 0.0114), (8192, 0.0149)],
    }),
    ("yolo.log", "yolo", {  # the printed total is the loss; the step is the epoch
        "loss": [(0, 0.3099)], "box": [(0, 0.11)], "obj": [(0, 0.1612)], "cls": [(0, 0.03867)],
        "memory": [(0, 5.2)],
    }),
]


@pytest.mark.parametrize("name, fmt, expected", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_fixture_is_read_by_its_parser_with_the_exact_series(name, fmt, expected):
    path = FIXTURES / name
    assert detect_format(path) == fmt
    for parsed in (parse_metrics(path), parse_metrics_text(path.read_text(encoding="utf-8"))):
        assert parsed.format == fmt
        for metric, want in expected.items():
            got = points(parsed, metric)
            assert [s for s, _ in got] == [float(s) for s, _ in want], metric
            assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-9, abs=0), metric
            assert series(parsed, metric).nonfinite == []
    assert fmt in FORMATS and describe(fmt) != fmt


@pytest.mark.parametrize("text, where", [
    ("[11/21 09:20:05] ppdet.engine INFO: Epoch: [0] [3/361] learning_rate: 0.0075 loss: 1659.1 eta: 3:56:31\n"
     "[11/21 09:20:06] ppdet.engine INFO: Epoch: [0] [4/361] learning_rate: 0.0075 loss: nan eta: 3:56:31\n"
     "[11/21 09:20:07] ppdet.engine INFO: Epoch: [0] [5/361] learning_rate: 0.0075 loss: inf eta: 3:56:31\n",
     [(4.0, "nan"), (5.0, "inf")]),
    ("I0102 10:00:00.000001 1 solver.cpp:228] Iteration 100, loss = 2.3\n"
     "I0102 10:00:01.000001 1 solver.cpp:228] Iteration 120, loss = -nan\n"
     "I0102 10:00:02.000001 1 solver.cpp:228] Iteration 140, loss = nan\n", [(120.0, "nan")]),  # a run starts once
])
def test_nan_and_inf_stay_at_the_step_they_were_printed(text, where):
    loss = series(parse_metrics_text(text), "loss")
    assert [(n.step, n.kind) for n in loss.nonfinite] == where
    assert loss.stats.count == 3
    assert math.isfinite(loss.values[0])


def test_caffe_test_net_outputs_are_validation_series_at_their_test_iteration():
    text = ("I1010 17:36:18.471542 24907 solver.cpp:247] Iteration 0, Testing net (#0)\n"
            "I1010 17:36:51.366374 24907 solver.cpp:298]     Test net output #0: accuracy = 0.00028\n"
            "I1010 17:36:51.521034 24907 solver.cpp:191] Iteration 0, loss = 87.3366\n"
            "I1010 17:40:30.682349 24907 solver.cpp:191] Iteration 1000, loss = 8.26466\n"
            "I1010 17:51:27.956398 24907 solver.cpp:247] Iteration 4000, Testing net (#0)\n"
            "I1010 17:52:00.040813 24907 solver.cpp:298]     Test net output #0: loss = 3.30735 (* 1 = 3.30735 loss)\n")
    parsed = parse_metrics_text(text)
    assert parsed.format == "caffe"
    assert points(parsed, "loss") == [(0.0, 87.3366), (1000.0, 8.26466)]
    assert points(parsed, "eval_loss") == [(4000.0, 3.30735)]
    assert points(parsed, "eval_accuracy") == [(0.0, 0.00028)]


def test_mmengine_validation_lines_are_val_series_at_the_last_training_step():
    text = ("07/04 08:12:50 - mmengine - INFO - Epoch(train)  [1][ 750/7393]  base_lr: 3.7531e-05 lr: 3.7531e-05  "
            "eta: 3 days, 9:40:59  time: 0.5451  data_time: 0.0148  memory: 14765  grad_norm: 45.8713  loss: 37.4994\n"
            "07/04 08:13:18 - mmengine - INFO - Epoch(train)  [1][ 800/7393]  base_lr: 4.0030e-05 lr: 4.0030e-05  "
            "eta: 3 days, 9:33:46  time: 0.5410  data_time: 0.0151  memory: 14765  grad_norm: 45.5470  loss: 36.6604\n"
            "07/04 09:00:00 - mmengine - INFO - Epoch(val) [1][500/500]    coco/bbox_mAP: 0.3000  loss: 30.1\n")
    parsed = parse_metrics_text(text)
    assert parsed.format == "mmcv"
    assert points(parsed, "loss") == [(750.0, 37.4994), (800.0, 36.6604)]
    assert points(parsed, "grad_norm") == [(750.0, 45.8713), (800.0, 45.547)]
    assert points(parsed, "eval_loss") == [(800.0, 30.1)]


def test_paddle_and_mindspore_spellings_of_the_loss():
    paddle = parse_metrics_text("[Train] epoch: 0, batch_id: 10, loss is: [2.3025851]\n"
                                "[Train] epoch: 0, batch_id: 20, loss is: [1.9]\n")
    assert paddle.format == "paddle" and points(paddle, "loss") == [(10.0, 2.3025851), (20.0, 1.9)]
    mindspore = parse_metrics_text("epoch: 1 step: 10, loss is Tensor(shape=[], dtype=Float32, value= 2.30)\n"
                                   "epoch: 2 step: 10, loss is Tensor(shape=[], dtype=Float32, value= 1.5)\n")
    assert mindspore.format == "mindspore" and points(mindspore, "loss") == [(10.0, 2.3), (20.0, 1.5)]


@pytest.mark.parametrize("line, step, epoch, index, per_epoch", [
    ("Epoch [1][4500/14659]\tlr: 0.01000, eta: 1 day, 12:32:12", None, 1, 4500, 14659),
    ("Epoch(train) [1][ 50/500]  lr: 1e-3", None, 1, 50, 500),
    ("ppdet.engine INFO: Epoch: [0] [217/361] learning_rate: 0.007510", None, 0, 217, 361),
    ("epoch: [27/500], iter: 250030, lr: 0.000993, loss: 0.498792", 250030, 27, None, None),
    ("Epoch[1] Batch [10]\tSpeed: 29.01 samples/sec", None, 1, 10, None),
    ("Epoch[0] Batch [0-100]\tSpeed: 29.01 samples/sec", None, 0, 100, None),
    ("eta: N/A  iter: 60  total_loss: 2.940", 60, None, None, None),
    ("Iteration 1000, loss = 8.26466", 1000, None, None, None),
    ("Iter(train) [  50/90000]  lr: 0.02", 50, None, None, None),
    ("step 100/500 loss 2.3", 100, None, None, None),
    ("[12/300] loss: 0.3", 12, None, None, None),
    ("Epoch 3/10 - 120/500 - loss: 0.3", None, 3, 120, 500),
    ("epoch: 8 - global_step: 700/940 - loss:1535.619873", 700, 8, None, None),
    ("[Train] epoch: 1, batch_id: 10, loss is: [2.3]", None, 1, 10, None),
    ("time=17/01/2019--21:28:53 loss=0.1", None, None, None, None),  # a date is no position
    ("loss: 0.3 eta: 0:32:27", None, None, None, None),
])
def test_the_position_is_found_wherever_it_stands(line, step, epoch, index, per_epoch):
    pos = find_position(line)
    assert (pos.step, pos.epoch, pos.index, pos.per_epoch) == (step, epoch, index, per_epoch)


def test_the_step_clock_folds_epochs_and_batches_into_one_increasing_step():
    counted = StepClock()  # the batch count is printed
    steps = [counted.step(find_position(f"Epoch [{e}][{i}/500] loss: 1")) for e, i in ((3, 250), (3, 500), (4, 250))]
    assert steps == [250, 500, 750]
    uncounted = StepClock()  # it is not: the new epoch continues from the last batch seen
    steps = [uncounted.step(find_position(f"Epoch[{e}] Batch [{i}] acc=1")) for e, i in ((0, 100), (0, 200), (1, 100))]
    assert steps == [100, 200, 300]


def test_console_tables_markdown_tabs_and_spaces():
    markdown = ("| Epoch | Training Loss | Validation Loss |\n|---|---|---|\n| 1 | 0.6900 | 0.6500 |\n"
                "| 2 | 0.4100 | 0.5200 |\n| 3 | 0.2000 | 0.6100 |\n")
    tabs = "Step\tTraining Loss\tValidation Loss\n500\t0.69\tNo log\n1000\t0.41\t0.52\n1500\t0.20\t0.61\n"
    for text, steps, fmt in ((markdown, [1.0, 2.0, 3.0], "table"), (tabs, [500.0, 1000.0, 1500.0], "csv")):
        parsed = parse_metrics_text(text)
        assert parsed.format == fmt  # a tab-separated table is a TSV to the CSV reader
        assert series(parsed, "loss").steps == steps
        assert series(parsed, "loss").values == [0.69, 0.41, 0.2]
    assert points(parse_metrics_text(tabs), "eval_loss") == [(1000.0, 0.52), (1500.0, 0.61)]


def test_text_that_only_looks_like_a_table_is_not_one():
    yaml_result = ("Result for PPO_CartPole-v0_120b5_00000:\n  agent_timesteps_total: 4000\n  done: false\n"
                   "  episode_len_mean: 22.57\n  hostname: Kais-MacBook-Pro.local\n  episodes_total: 175\n"
                   "  episodes_this_iter: 175\n")
    assert parse_metrics_text(yaml_result).format != "table"
    prose = "Traceback (most recent call last):\n  File \"train.py\", line 3, in <module>\nRuntimeError: boom\n"
    assert parse_metrics_text(prose).series == []


def test_each_sniff_claims_its_own_lines_only():
    own = {fmt: (FIXTURES / f"{fmt}.log").read_text(encoding="utf-8").splitlines() for fmt in
           ("caffe", "detectron2", "mmcv", "mxnet", "paddle", "mindspore", "jax", "baselines")}
    from ml_debug_mcp.core.logs.normalize import clean_line

    for fmt, lines in own.items():
        votes = [classify_line(clean_line(line)) for line in lines if line.strip()]
        assert votes.count(fmt) >= len(votes) // 2, (fmt, votes)
    assert [f.id for f in TEXT_FORMATS].count("keyvalue") == 1
    assert classify_line("step 100 | loss 2.31 | lr 1e-4") == "keyvalue"


def test_a_markdown_two_column_table_is_not_a_baselines_box():
    markdown = "| Setting | FSDP |\n|---|---|\n| Speed | 2.93 |\n| Memory | 23.8 |\n"
    assert parse_metrics_text(markdown).format != "baselines"
    sb2 = ("--------------------------------------\n| fps                | 0             |\n"
           "| total_timesteps    | 4635          |\n--------------------------------------\n")
    parsed = parse_metrics_text(sb2)
    assert parsed.format == "baselines" and points(parsed, "throughput") == [(4635.0, 0.0)]
