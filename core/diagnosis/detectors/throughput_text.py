"""Throughput read from pasted tool output: nvidia-smi readings and scaling tables, not loss curves.

When training is slow, people paste what they looked at: `nvidia-smi` (a GPU holding memory at a
few percent utilisation is waiting for data or for the host) or a throughput-per-GPU-count table
(eight GPUs giving three times one GPU's rate). Both say slow_throughput without any loss curve.
"""

from __future__ import annotations

import re
import statistics

from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Hypothesis
from ml_debug_mcp.core.logs.normalize import normalize_text

# nvidia-smi's per-GPU row: "| N/A 44C P0 72W / 300W | 5484MiB / 16130MiB | 31% Default |"
_SMI_ROW = re.compile(r"\|\s*(?:\d+%|N/A)?\s*\d+C\s+P\d+\s+\S+\s*/\s*\S+\s*\|\s*(\d+)MiB\s*/\s*(\d+)MiB\s*\|\s*(\d+)%")
# "8GPUs: 25 images/s", "1 GPU - 120 samples/sec", "16 GPUs (2 nodes): 41 img/s"
_SCALING = re.compile(r"(\d+)\s*x?\s*(?:GPUs?|cards?|devices?|V100|A100|H100)\b[^\n:]{0,30}[:=|-]\s*([\d.]+)\s*"
                      r"(?:images?|imgs?|img|samples?|tokens?|sequences?|it)\s*/\s*(?:s|sec)\b", re.I)
LOW_UTILISATION = 50.0  # percent: a GPU below this while it holds memory waits for something
HELD_MEMORY = 0.05  # share of the GPU's memory in use that says a job is on it
SCALING_EFFICIENCY = 0.6  # rate per GPU at the largest count under this share of the smallest count's


def _smi_evidence(lines: list[str]) -> Evidence | None:
    readings = []
    first = None
    for number, line in enumerate(lines, 1):
        m = _SMI_ROW.search(line)
        if m is None:
            continue
        used, total, util = (float(g) for g in m.groups())
        if total > 0 and used / total >= HELD_MEMORY:
            readings.append(util)
            first = first or number
    if not readings:
        return None
    median = statistics.median(readings)
    if median >= LOW_UTILISATION:
        return None
    return Evidence(kind="gpu", text=(f"nvidia-smi shows GPUs holding memory at a median {median:.0f}% utilisation over "
                                      f"{len(readings)} readings: the GPU waits for data or the host"),
                    line_no=first, value=median, rule=f"throughput_text.nvidia_smi: median GPU-Util < {LOW_UTILISATION:g}%")


def _scaling_evidence(lines: list[str]) -> Evidence | None:
    points: dict[float, float] = {}
    first = None
    for number, line in enumerate(lines, 1):
        for gpus, rate in _SCALING.findall(line):
            if float(gpus) > 0 and float(rate) > 0:
                points.setdefault(float(gpus), float(rate))
                first = first or number
    if len(points) < 2:
        return None
    small, large = min(points), max(points)
    efficiency = (points[large] / large) / (points[small] / small)
    if efficiency >= SCALING_EFFICIENCY:
        return None
    return Evidence(kind="log_line", text=(f"{large:g} devices give {points[large]:g}/s against {points[small]:g}/s on "
                                           f"{small:g}: {efficiency:.0%} scaling efficiency per device (communication "
                                           "or input bound)"), line_no=first, value=round(efficiency, 3),
                    rule=f"throughput_text.scaling: per-device rate < {SCALING_EFFICIENCY:g} x the smallest count's")


def detect_throughput_text(text: str) -> list[Hypothesis]:
    """slow_throughput from pasted nvidia-smi readings or a per-device-count throughput table."""
    if not text or ("MiB" not in text and "/s" not in text):
        return []
    lines = normalize_text(text[-2_000_000:]).split("\n")
    found = [e for e in (_smi_evidence(lines), _scaling_evidence(lines)) if e is not None]
    if not found:
        return []
    return [Hypothesis(failure="slow_throughput", confidence=0.65 + 0.1 * (len(found) - 1), evidence=found)]
