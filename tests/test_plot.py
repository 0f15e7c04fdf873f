"""core.plot: a small headless PNG with the curves, NaN/Inf positions and labelled marks."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest

from ml_debug_mcp.core.logs.metrics import parse_metrics_text
from ml_debug_mcp.core.plot import _panels, _use_log, plot_metrics
from ml_debug_mcp.core.logs.series import ParsedLog

PURPLE = np.array([148, 103, 189]) / 255  # tab:purple, the mark colour
RED = np.array([1.0, 0.0, 0.0])


def log_text(nan_from: int | None = None) -> str:
    lines = []
    for step in range(600):
        loss = 3 * math.exp(-step / 150) + 0.1
        if nan_from is not None and step >= nan_from:
            loss = math.nan
        lines.append(f"step {step} | loss {loss:.5f} | lr {1e-3 * min(1.0, (step + 1) / 50):.3e} | "
                     f"grad_norm {0.5 + (40 if step == 300 else 0):.3f}")
        if step % 100 == 0:
            lines.append(f"step {step}: train loss {loss:.5f}, val loss {loss + 0.2:.5f}")
    return "\n".join(lines)


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def pixels(png: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]


def colour_columns(image: np.ndarray, colour: np.ndarray, tol: float = 0.03) -> np.ndarray:
    close = np.all(np.abs(image - colour) < tol, axis=-1)
    return close.sum(axis=0)


def test_png_is_small_and_800_by_500():
    png = plot_metrics(parse_metrics_text(log_text()), title="run")
    assert png_size(png) == (800, 500)
    assert len(png) < 150_000


def test_marks_are_drawn_as_vertical_lines():
    parsed = parse_metrics_text(log_text())
    plain = pixels(plot_metrics(parsed))
    marked = pixels(plot_metrics(parsed, marks=[(300, "grad spike")]))
    changed = np.any(np.abs(marked - plain) > 0.1, axis=-1)
    per_column = changed.sum(axis=0)
    # A dashed line through all three panels: one narrow band of columns, tall, purple-ish.
    assert per_column.max() > 150
    band = np.flatnonzero(per_column > 150)
    assert band.max() - band.min() <= 3
    colour = marked[changed[:, band[0]], band[0]].mean(axis=0)
    assert np.linalg.norm(colour - PURPLE) < np.linalg.norm(colour - np.array([0.12, 0.47, 0.71]))


def test_nan_positions_are_marked_in_red():
    clean = pixels(plot_metrics(parse_metrics_text(log_text())))
    broken = pixels(plot_metrics(parse_metrics_text(log_text(nan_from=450))))
    assert colour_columns(clean, RED).sum() == 0
    assert colour_columns(broken, RED).sum() > 20


def test_empty_log_still_gives_a_png():
    png = plot_metrics(ParsedLog(format="unknown"))
    assert png_size(png) == (800, 500)
    unknown_names = plot_metrics(parse_metrics_text(log_text()), names=["no_such_metric"])
    assert png_size(unknown_names) == (800, 500)


def test_panel_layout():
    parsed = parse_metrics_text(log_text())
    assert _panels(parsed, None) == [["loss", "eval_loss"], ["lr"], ["grad_norm"]]
    assert _panels(parsed, ["grad_norm", "loss", "eval_loss"]) == [["loss", "eval_loss"], ["grad_norm"]]
    only_acc = parse_metrics_text("step 1 | accuracy 0.5\nstep 2 | accuracy 0.6\n")
    assert _panels(only_acc, None) == [["accuracy"]]


def test_log_scale_only_for_positive_values_spanning_decades():
    assert _use_log([1e-5, 1e-4, 1e-3])
    assert not _use_log([1.0, 2.0, 3.0])
    assert not _use_log([-1.0, 100.0, 1e4])


def test_ranked_series_are_plotted_per_rank():
    text = "\n".join(f"[rank{r}]:step {s} | loss {2 - s / 100 + r:.3f}" for s in range(50) for r in range(3))
    png = plot_metrics(parse_metrics_text(text))
    assert png_size(png) == (800, 500)


def test_headless_and_leaves_pyplot_alone():
    pyplot = pytest.importorskip("matplotlib.pyplot")
    before = pyplot.get_fignums()
    plot_metrics(parse_metrics_text(log_text()))
    assert pyplot.get_fignums() == before  # drawn on a bare Figure, never registered with pyplot
