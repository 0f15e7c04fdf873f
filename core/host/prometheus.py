"""Every host's GPUs from a Prometheus server that scrapes NVIDIA's dcgm-exporter.

A multi-node job is seen in one call: `gpu_status(source="prometheus://host:9090")` asks the
Prometheus HTTP query API for the DCGM_FI_DEV_* series (memory, utilisation, temperature, power,
Xid errors, clock-throttle reasons) and their utilisation over a window, builds the same
`GpuStatus` the NVML path builds, one per (Hostname, gpu, UUID), and judges each with the same
per-GPU rules (`snapshot.gpu_findings`), grouped by host and job. Bounded: one instant query plus
three range aggregates, a capped number of GPUs listed, a request timeout.
"""

from __future__ import annotations

import math
import re
import socket
from collections import defaultdict
from urllib.parse import urlsplit

import httpx

from ml_debug_mcp.core.host.nvml import NvmlStatus, decode_throttle_reasons
from ml_debug_mcp.core.host.processes import WindowStats
from ml_debug_mcp.core.host.snapshot import (Finding, GpuStatus, HostGroup, HostStatus, SamplingWindow, gpu_findings,
                                             gpu_line, sort_findings)

MAX_GPUS = 256
REQUEST_TIMEOUT = 10.0
WINDOW = "5m"
FIELDS = ("FB_USED", "FB_FREE", "GPU_UTIL", "MEM_COPY_UTIL", "GPU_TEMP", "POWER_USAGE", "SM_CLOCK", "MEM_CLOCK",
          "XID_ERRORS", "CLOCK_THROTTLE_REASONS")
_INSTANT = '{__name__=~"DCGM_FI_DEV_(' + "|".join(FIELDS) + ')"}'
_SOURCE = re.compile(r"^prometheus(\+https)?://([^/?#\s]+)(/[^?#\s]*)?$")
MIB = 1 << 20


def parse_source(source: str) -> str:
    """`prometheus://host:port[/prefix]` (or `prometheus+https://`) to the server's base URL."""
    match = _SOURCE.match(source.strip())
    if not match:
        raise ValueError(f"source {source!r} is not a Prometheus address: pass prometheus://host:9090 (or "
                         "prometheus+https://host/prefix behind TLS), or omit source to read this host's GPUs.")
    secure, netloc, prefix = match.groups()
    parts = urlsplit(f"http://{netloc}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"source {source!r} has an invalid port; e.g. prometheus://host:9090.") from None
    if not parts.hostname:
        raise ValueError(f"source {source!r} names no host; e.g. prometheus://host:9090.")
    default = 443 if secure else 9090
    return f"{'https' if secure else 'http'}://{parts.hostname}:{port or default}{(prefix or '').rstrip('/')}"


def _query(client: httpx.Client, base: str, expr: str) -> list[dict]:
    try:
        response = client.get(f"{base}/api/v1/query", params={"query": expr})
    except httpx.HTTPError as exc:
        raise ValueError(f"Prometheus at {base} did not answer ({type(exc).__name__}: {exc}). Check the host and "
                         "port (the web UI's address, default 9090), that it is running, and that this machine can "
                         "reach it.") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "status" not in body:
        raise ValueError(f"{base} answered HTTP {response.status_code} with something that is not the Prometheus "
                         f"query API ({response.text[:120]!r}); is this the Prometheus server's address?")
    if body["status"] != "success":
        raise ValueError(f"Prometheus at {base} refused the query: {body.get('errorType')}: {body.get('error')}")
    data = body.get("data") or {}
    return (data.get("result") or []) if data.get("resultType") == "vector" else []


def _number(sample: dict) -> float | None:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _key(labels: dict) -> tuple[str, str, str]:
    host = labels.get("Hostname") or labels.get("hostname") or labels.get("instance") or "?"
    return host, labels.get("gpu") or labels.get("device") or "?", labels.get("UUID") or labels.get("uuid") or ""


def cluster_status(source: str, window: str = WINDOW) -> HostStatus:
    """The GPUs of every host the Prometheus at `source` sees, judged and grouped; ValueError if it cannot say."""
    base = parse_source(source)
    with httpx.Client(timeout=REQUEST_TIMEOUT, follow_redirects=False) as client:
        instant = _query(client, base, _INSTANT)
        util = {name: _query(client, base, f"{name}_over_time(DCGM_FI_DEV_GPU_UTIL[{window}])")
                for name in ("min", "avg", "max", "count")}
    readings: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    labels_of: dict[tuple[str, str, str], dict] = {}
    for sample in instant:
        labels = sample.get("metric") or {}
        value = _number(sample)
        key = _key(labels)
        labels_of.setdefault(key, labels)
        if value is not None:
            readings[key][labels.get("__name__", "").removeprefix("DCGM_FI_DEV_")] = value
    windows: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for name, samples in util.items():
        for sample in samples:
            value = _number(sample)
            if value is not None:
                windows[_key(sample.get("metric") or {})][name] = value
    keys = sorted(labels_of, key=lambda k: (k[0], int(k[1]) if k[1].isdigit() else 1 << 30, k[2]))
    gpus = [_gpu(key, labels_of[key], readings[key], windows.get(key, {})) for key in keys[:MAX_GPUS]]
    findings: list[Finding] = []
    for gpu in gpus:
        own = gpu_findings(gpu)
        gpu.diagnosis = gpu_line(gpu, own)
        findings += own
    sort_findings(findings)
    omitted = max(0, len(keys) - MAX_GPUS)
    hosts = _groups(gpus, findings)
    if not keys:
        findings.append(Finding(
            rule="no_dcgm_series", severity="info", confidence=0.9,
            message=(f"Prometheus at {base} has no DCGM_FI_DEV_* series: it does not scrape NVIDIA's dcgm-exporter "
                     "(or the exporter has been down longer than the lookback window)"),
        ))
    return HostStatus(
        hostname=socket.gethostname(),
        nvml=NvmlStatus(available=False, module="prometheus",
                        reason=f"not read: the GPUs come from the Prometheus at {base}"),
        gpus=gpus, window=SamplingWindow(samples=1, interval_seconds=0.0, duration_seconds=0.0),
        findings=findings, source=base, hosts=hosts, gpus_omitted=omitted,
        summary=_summary(base, gpus, hosts, findings, omitted, window),
    )


def _gpu(key: tuple[str, str, str], labels: dict, r: dict[str, float], w: dict[str, float]) -> GpuStatus:
    host, index, uuid = key
    used = int(r["FB_USED"] * MIB) if "FB_USED" in r else None
    free = int(r["FB_FREE"] * MIB) if "FB_FREE" in r else None
    total = used + free if used is not None and free is not None else None
    mask = int(r["CLOCK_THROTTLE_REASONS"]) if "CLOCK_THROTTLE_REASONS" in r else None
    unavailable = {f"DCGM_FI_DEV_{f}": "not exported" for f in ("FB_USED", "GPU_UTIL", "GPU_TEMP") if f not in r}
    window = None
    if {"min", "avg", "max", "count"} <= set(w):
        window = WindowStats(min=round(w["min"], 1), mean=round(w["avg"], 1), max=round(w["max"], 1),
                             samples=int(w["count"]))
    gpu = GpuStatus(
        index=int(index) if index.isdigit() else -1, name=labels.get("modelName"), uuid=uuid or None,
        memory_used_bytes=used, memory_free_bytes=free, memory_total_bytes=total,
        memory_used_percent=round(100.0 * used / total, 1) if total else None,
        utilization_gpu_percent=_int(r.get("GPU_UTIL")), utilization_memory_percent=_int(r.get("MEM_COPY_UTIL")),
        temperature_c=_int(r.get("GPU_TEMP")), power_draw_w=r.get("POWER_USAGE"),
        clock_sm_mhz=_int(r.get("SM_CLOCK")), clock_memory_mhz=_int(r.get("MEM_CLOCK")),
        throttle_mask=mask, throttle_reasons=decode_throttle_reasons(mask) if mask is not None else None,
        xid_last=_int(r.get("XID_ERRORS")), unavailable=unavailable,
        host=host, job=labels.get("hpc_job") or labels.get("job") or labels.get("pod"),
    )
    gpu.utilization_gpu_window = window
    return gpu


def _int(value: float | None) -> int | None:
    return None if value is None else int(round(value))


def _groups(gpus: list[GpuStatus], findings: list[Finding]) -> list[HostGroup]:
    grouped: dict[tuple[str, str | None], list[GpuStatus]] = defaultdict(list)
    for gpu in gpus:
        grouped[(gpu.host or "?", gpu.job)].append(gpu)
    out = []
    for (host, job), members in sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        indices = {g.index for g in members}
        own = [f for f in findings if f.host == host and f.gpu_index in indices]
        critical = sum(f.severity == "critical" for f in own)
        warning = sum(f.severity == "warning" for f in own)
        sick = sorted({f.gpu_index for f in own if f.severity != "info"})
        summary = (f"{len(members)} GPU{'s' if len(members) != 1 else ''}, " +
                   (f"GPUs {sick} need a look" if sick else "all ok"))
        out.append(HostGroup(host=host, job=job, gpus=len(members), critical=critical, warning=warning,
                             summary=summary))
    return out


def _summary(base: str, gpus: list[GpuStatus], hosts: list[HostGroup], findings: list[Finding], omitted: int,
             window: str) -> str:
    names = {h.host for h in hosts}
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("critical", "warning", "info")}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no findings"
    cut = f" (+{omitted} GPUs not listed)" if omitted else ""
    serious = [f"{f.host} {f.message}" for f in findings if f.severity != "info"][:3]
    return (f"{len(gpus)} GPUs on {len(names)} host{'s' if len(names) != 1 else ''}{cut} from Prometheus {base} "
            f"(utilisation over {window}); {tally}." + (" " + " | ".join(serious) if serious else ""))
