"""A small PNG of the training curves, for an agent (or its user) to look at.

Loss and eval loss share the top panel; learning rate and gradient norm get panels of their
own (log scale when they span orders of magnitude), because on one axis they would flatten
the loss. NaN/Inf positions are marked, and `marks` (e.g. the steps a diagnosis points at) are
drawn as labelled vertical lines. matplotlib is imported lazily with the Agg backend through
`Figure` directly, so this is headless and safe off the main thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from ml_debug_mcp.core.logs.series import MetricSeries, ParsedLog

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 5.0, 100
MAX_PANELS = 4
MAX_RANKS_DRAWN = 8
_DEFAULT_PANELS: list[list[str]] = [["loss", "eval_loss"], ["lr"], ["grad_norm"]]


def _series_for(parsed: ParsedLog, name: str) -> list[MetricSeries]:
    found = [s for s in parsed.series if s.name == name]
    unranked = [s for s in found if s.rank is None]
    if unranked:
        return unranked
    return sorted(found, key=lambda s: s.rank or 0)[:MAX_RANKS_DRAWN]


def _panels(parsed: ParsedLog, names: Sequence[str] | None) -> list[list[str]]:
    present = set(parsed.names)
    if names:
        wanted = [n for n in names if n in present]
        losses = [n for n in wanted if "loss" in n]
        others = [[n] for n in wanted if "loss" not in n]
        panels = ([losses] if losses else []) + others
    else:
        panels = [[n for n in group if n in present] for group in _DEFAULT_PANELS]
        panels = [p for p in panels if p]
        if not panels:
            panels = [[n] for n in sorted(present)[:3]]
    return panels[:MAX_PANELS]


def drawn_series(parsed: ParsedLog, names: Sequence[str] | None = None) -> list[list[MetricSeries]]:
    """The series each panel draws, top to bottom: what `plot_metrics` shows, for callers to check."""
    return [[s for name in group for s in _series_for(parsed, name)] for group in _panels(parsed, names)]


def _use_log(values: list[float]) -> bool:
    positive = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if len(positive) < 2 or len(positive) < len([v for v in values if v is not None]):
        return False
    return max(positive) / min(positive) > 50


class PlotUnavailable(ValueError):
    """matplotlib is an extra (`[plot]`): the light install answers plot=true with what to install."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"plot=true needs matplotlib, which the server's Python cannot import ({cause}). "
                         "Install it with pip install 'ml-debug-mcp[plot]', or call again with plot=false "
                         "for the same result without the picture.")


def plot_metrics(parsed: ParsedLog, names: list[str] | None = None,
                 marks: Sequence[tuple[float, str]] = (), title: str | None = None) -> bytes:
    """PNG bytes (800x500) of the chosen series against step; see the module docstring."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(exc) from None

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    panels = drawn_series(parsed, names)
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no metric series to plot" + (f"\n({parsed.format})" if parsed.format else ""),
                ha="center", va="center", fontsize=12)
        return _png(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        all_values: list[float] = []
        for s in panel:
            ys = [math.nan if v is None else v for v in s.values]
            all_values.extend(v for v in s.values if v is not None)
            label = s.name if s.rank is None else f"{s.name} r{s.rank}"
            ax.plot(s.steps, ys, linewidth=1.0, label=label, alpha=0.9 if s.rank in (None, 0) else 0.5)
            _mark_nonfinite(ax, s)
        if _use_log(all_values):
            ax.set_yscale("log")
        ax.set_ylabel(", ".join(dict.fromkeys(s.name for s in panel)), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if len(ax.get_legend_handles_labels()[0]) > 1:
            ax.legend(fontsize=7, loc="best")
    for step, label in marks:
        if step is None or not math.isfinite(step):
            continue
        for ax in axes:
            ax.axvline(step, color="tab:purple", linestyle="--", linewidth=0.9, alpha=0.8)
        axes[0].annotate(str(label)[:40], xy=(step, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(2, -2), textcoords="offset points", fontsize=7, color="tab:purple",
                         va="top", rotation=90)
    axes[-1].set_xlabel("step", fontsize=8)
    fig.suptitle(title or (parsed.path or parsed.format or "metrics"), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _mark_nonfinite(ax, s: MetricSeries) -> None:
    """Red ticks at the top of the panel where the series went NaN/Inf (values cannot show it)."""
    if not s.nonfinite:
        return
    steps = [p.step for p in s.nonfinite]
    ax.scatter(steps, [0.97] * len(steps), transform=ax.get_xaxis_transform(), marker="v", color="red",
               s=18, zorder=5, label=f"{s.name} NaN/Inf" if s.rank in (None, 0) else None)
    first = s.nonfinite[0]
    ax.axvline(first.step, color="red", linestyle=":", linewidth=0.8)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
