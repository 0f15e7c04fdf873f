"""The GPU and process picture of a training host: step 1 of the debugging decision tree.

`host_status()` is the one entry point the `gpu_status` tool calls. It finds the training
processes (psutil), reads every GPU (NVML), samples utilization and CPU% over a short window
(one instant lies: a dataloader stall looks like an idle GPU for a moment in any healthy run),
joins GPUs to processes, and writes a diagnosis line per GPU plus host-level findings with
severity, evidence numbers and fixes. Without a GPU or driver it still returns the process
picture with `nvml.available = False` and the reason.
"""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core.diagnosis.catalogue import FailureId
from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Fix, NextStep
from ml_debug_mcp.core.host.nvml import GpuInfo, NvmlSession, NvmlStatus, UtilizationSample
from ml_debug_mcp.core.host.processes import (
    CpuSampler,
    MissingProcess,
    ProcessInfo,
    TrainingProcess,
    WindowStats,
    discover_training_processes,
)

MAX_SAMPLES = 50
MAX_WINDOW_SECONDS = 30.0
IDLE_UTIL_PERCENT = 10.0
MEMORY_FULL_PERCENT = 95.0
LOG_SILENT_SECONDS = 600.0
"""A live job whose log has not moved for 10 minutes is worth a look (NCCL hangs are silent)."""

Severity = Literal["info", "warning", "critical"]
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
_HARMFUL_THROTTLES = ("hw slowdown", "sw thermal slowdown", "hw thermal slowdown", "hw power brake slowdown")
_STUCK_STATES = ("zombie", "stopped")


class Finding(BaseModel):
    """One diagnosis line: what is wrong, how sure, the numbers behind it and what to do."""

    rule: str
    severity: Severity
    message: str
    failure: FailureId | None = None
    confidence: float = Field(ge=0.0, le=1.0)
    gpu_index: int | None = None
    host: str | None = Field(None, description="the GPU's host, when the picture covers several (Prometheus)")
    pid: int | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    fixes: list[Fix] = Field(default_factory=list)
    next_steps: list[NextStep] = Field(default_factory=list)


class GpuStatus(GpuInfo):
    """A GPU's instant picture plus its utilization over the window and a one-line diagnosis."""

    utilization_gpu_window: WindowStats | None = None
    utilization_memory_window: WindowStats | None = None
    host: str | None = Field(None, description="Hostname label (Prometheus source); None = this host")
    job: str | None = Field(None, description="the scrape job or scheduler job the GPU's series belong to")
    diagnosis: str = ""


class HostGroup(BaseModel):
    """The GPUs of one host and job, as a Prometheus source reports them."""

    host: str
    job: str | None = None
    gpus: int
    critical: int = 0
    warning: int = 0
    summary: str


class LogPointer(BaseModel):
    path: str
    exists: bool
    size_bytes: int | None = None
    modified_seconds_ago: float | None = None
    reason: str | None = None
    hint: str


class SamplingWindow(BaseModel):
    samples: int
    interval_seconds: float
    duration_seconds: float


class HostStatus(BaseModel):
    hostname: str
    nvml: NvmlStatus
    gpus: list[GpuStatus] = Field(default_factory=list)
    processes: list[TrainingProcess] = Field(default_factory=list)
    processes_omitted: int = Field(0, description="training processes found beyond the listing cap")
    processes_scanned: int = 0
    missing_process: MissingProcess | None = None
    log: LogPointer | None = None
    window: SamplingWindow
    findings: list[Finding] = Field(default_factory=list, description="every finding, worst first")
    source: str = Field("nvml", description="nvml (this host) or the prometheus:// source read")
    hosts: list[HostGroup] = Field(default_factory=list, description="per host and job (Prometheus source)")
    gpus_omitted: int = Field(0, description="GPUs beyond the listing cap (Prometheus source)")
    summary: str


def validate_sampling(samples: int, interval: float) -> None:
    """Bound the window so a tool call cannot hang the agent; explain what would fit."""
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise ValueError(f"samples must be a whole number from 1 to {MAX_SAMPLES}, got {samples!r}.")
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be between 1 and {MAX_SAMPLES}, got {samples}; "
                         f"try samples=10 with interval=0.5.")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval):
        raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}.")
    if interval < 0:
        raise ValueError(f"interval must be >= 0 seconds, got {interval}.")
    window = (samples - 1) * interval
    if window > MAX_WINDOW_SECONDS:
        raise ValueError(
            f"samples={samples} with interval={interval}s spans {window:.1f}s; keep (samples - 1) x interval "
            f"<= {MAX_WINDOW_SECONDS:.0f}s, e.g. samples={samples} with interval="
            f"{MAX_WINDOW_SECONDS / max(samples - 1, 1):.2f}."
        )


def host_status(
    samples: int = 1,
    interval: float = 0.5,
    pid: int | None = None,
    name_pattern: str | None = None,
    log_path: Path | None = None,
    *,
    pcie_throughput: bool = False,
) -> HostStatus:
    """The GPU + training-process picture of this host, sampled over `samples` x `interval`.

    Raises ValueError only for caller errors (bad samples/interval/pid/regex); everything the
    host refuses to tell (no driver, permissions, exited processes) is reported in the result.
    """
    validate_sampling(samples, interval)
    discovery = discover_training_processes(pid=pid, name_pattern=name_pattern)
    cpu = CpuSampler(discovery.handles)
    utilization: dict[int, list[UtilizationSample]] = {}
    started = time.monotonic()
    with NvmlSession() as session:
        gpu_infos = session.read_gpus(pcie_throughput=pcie_throughput)
        for info in gpu_infos:
            utilization[info.index] = [UtilizationSample(
                index=info.index, gpu=info.utilization_gpu_percent, memory=info.utilization_memory_percent)]
        for step in range(1, samples):
            time.sleep(max(0.0, started + step * interval - time.monotonic()))
            for sample in session.sample_utilization():
                utilization.setdefault(sample.index, []).append(sample)
            cpu.sample()
        status = session.status
    duration = time.monotonic() - started
    if samples > 1:
        cpu.apply(discovery.processes)

    gpus = [_with_window(info, utilization.get(info.index, [])) for info in gpu_infos]
    _join_processes_to_gpus(discovery.processes, gpus)
    log = describe_log(log_path) if log_path is not None else None
    findings = diagnose(status, gpus, discovery.processes, discovery.missing, log, samples,
                        explicit_search=pid is not None or name_pattern is not None)
    for gpu in gpus:
        gpu.diagnosis = gpu_line(gpu, [f for f in findings if f.gpu_index == gpu.index])
    return HostStatus(
        hostname=socket.gethostname(),
        nvml=status,
        gpus=gpus,
        processes=discovery.processes,
        processes_omitted=discovery.omitted,
        processes_scanned=discovery.scanned,
        missing_process=discovery.missing,
        log=log,
        window=SamplingWindow(samples=samples, interval_seconds=float(interval), duration_seconds=round(duration, 3)),
        findings=findings,
        summary=_summary(status, gpus, discovery.processes, discovery.omitted, findings),
    )


def _with_window(info: GpuInfo, samples: list[UtilizationSample]) -> GpuStatus:
    gpu = GpuStatus(**info.model_dump())
    gpu.utilization_gpu_window = WindowStats.from_values([float(s.gpu) for s in samples if s.gpu is not None])
    gpu.utilization_memory_window = WindowStats.from_values(
        [float(s.memory) for s in samples if s.memory is not None])
    return gpu


def _join_processes_to_gpus(processes: list[TrainingProcess], gpus: list[GpuStatus]) -> None:
    """Mark which GPUs each training process (and its job) holds, from NVML's process lists."""
    owner: dict[int, tuple[TrainingProcess, ProcessInfo]] = {}
    for top in processes:
        for info in (top, *top.children):
            owner[info.pid] = (top, info)
    for gpu in gpus:
        for gpu_process in gpu.processes:
            if gpu_process.pid not in owner:
                continue
            top, info = owner[gpu_process.pid]
            gpu_process.training_pid = top.pid
            if gpu.index not in info.gpus:
                info.gpus.append(gpu.index)
            if gpu_process.used_memory_bytes is not None:
                info.gpu_memory_bytes = (info.gpu_memory_bytes or 0) + gpu_process.used_memory_bytes
            if gpu.index not in top.job_gpus:
                top.job_gpus.append(gpu.index)


def describe_log(path: Path) -> LogPointer:
    """Size and age of the training log, with the tool call that reads it."""
    path = Path(path)
    hint = f"call tail_log(path='{path}') to see the last lines, or classify_failure(log_path='{path}')"
    try:
        stat = path.stat()
    except OSError as exc:
        return LogPointer(path=str(path), exists=False, reason=f"{type(exc).__name__}: {exc.strerror or exc}",
                          hint="check the log path; the training script may log elsewhere (look for --output_dir)")
    return LogPointer(path=str(path), exists=True, size_bytes=stat.st_size,
                      modified_seconds_ago=round(max(0.0, time.time() - stat.st_mtime), 1), hint=hint)


# ---------------------------------------------------------------- diagnosis rules

def diagnose(
    status: NvmlStatus,
    gpus: list[GpuStatus],
    processes: list[TrainingProcess],
    missing: MissingProcess | None,
    log: LogPointer | None,
    samples: int,
    explicit_search: bool = False,
) -> list[Finding]:
    """All findings for the host, worst first. Each rule is a small function below."""
    findings: list[Finding] = []
    findings += _nvml_findings(status, processes)
    for gpu in gpus:
        findings += gpu_findings(gpu)
        findings += _stuck_process_on_gpu(gpu)
        findings += _idle_while_training(gpu, processes, samples)
    findings += _stuck_training_processes(processes, gpus)
    findings += _training_not_on_gpu(status, gpus, processes)
    findings += _gpus_left_unused(gpus, processes)
    findings += _missing_process(missing, log)
    findings += _log_silent(log, processes, gpus)
    if not processes and missing is None:
        findings.append(Finding(
            rule="no_training_process", severity="info", confidence=0.6,
            message=("no process matched the given pid/name_pattern" if explicit_search else
                     "no training process found (looked for torchrun, deepspeed, accelerate launch, lightning, "
                     "and python scripts or modules with 'train' in their name)"),
            next_steps=[NextStep(tool="gpu_status", arguments={"name_pattern": "<part of your command line>"},
                                 why="name the job if its script is not called train*")],
        ))
    sort_findings(findings)
    return findings


def gpu_findings(gpu: GpuStatus) -> list[Finding]:
    """The rules that judge a GPU from its own readings alone: NVML's and Prometheus's paths share them."""
    found = _gpu_unreadable(gpu) + _memory_near_full(gpu) + _throttled(gpu) + _ecc_uncorrected(gpu) + _xid(gpu)
    for finding in found:
        finding.host = gpu.host
    return found


def sort_findings(findings: list[Finding]) -> None:
    findings.sort(key=lambda f: (_SEVERITY_RANK[f.severity], f.host or "", f.gpu_index if f.gpu_index is not None else -1))


def _nvml_findings(status: NvmlStatus, processes: list[TrainingProcess]) -> list[Finding]:
    if status.available:
        return []
    expected_on_cpu_host = status.reason_code in ("library_not_found", "no_devices", "nvml_not_installed")
    severity: Severity = "info" if expected_on_cpu_host and not processes else "warning"
    return [Finding(
        rule="nvml_unavailable", severity=severity, confidence=0.9,
        message=f"GPU state unavailable ({status.reason_code}): {status.reason}",
        evidence=[Evidence(kind="gpu", text=f"NVML: {status.reason}")],
        fixes=[Fix(action=status.fix or "check the driver with nvidia-smi",
                   expected_effect="gpu_status can read GPU memory, utilization and processes")],
    )]


def _gpu_unreadable(gpu: GpuStatus) -> list[Finding]:
    if "handle" not in gpu.unavailable:
        return []
    reason = gpu.unavailable["handle"]
    lost = "lost" in reason
    return [Finding(
        rule="gpu_unreadable", severity="critical" if lost else "warning", confidence=0.9, gpu_index=gpu.index,
        message=f"GPU {gpu.index} cannot be read: {reason}",
        evidence=[Evidence(kind="gpu", text=f"nvmlDeviceGetHandleByIndex({gpu.index}) failed: {reason}")],
        fixes=[Fix(action="drain the node and reset the GPU (nvidia-smi -r) or reboot; check dmesg for Xid errors",
                   expected_effect="the GPU is back on the bus, or the node is out of the pool")],
    )]


def _memory_near_full(gpu: GpuStatus) -> list[Finding]:
    percent = gpu.memory_used_percent
    if percent is None or percent < MEMORY_FULL_PERCENT:
        return []
    used_gib, total_gib = gpu.memory_used_bytes / 2**30, gpu.memory_total_bytes / 2**30
    return [Finding(
        rule="gpu_memory_near_full", severity="warning", failure="oom", confidence=0.6, gpu_index=gpu.index,
        message=(f"GPU {gpu.index} memory {percent:.1f}% full ({used_gib:.1f} of {total_gib:.1f} GiB): OOM risk "
                 f"when a longer batch or an eval step arrives (a caching allocator or a framework's "
                 f"preallocation also fills memory; the risk is real if batch shapes vary)"),
        evidence=[Evidence(kind="gpu", text=f"memory used {gpu.memory_used_bytes} of {gpu.memory_total_bytes} bytes",
                           value=percent, metric="memory_used_percent", rule=f">= {MEMORY_FULL_PERCENT:.0f}%")],
        fixes=[
            Fix(action="halve the per-device batch size and double gradient accumulation steps",
                expected_effect="same effective batch, about half the activation memory"),
            Fix(action="enable activation checkpointing (torch.utils.checkpoint / model.gradient_checkpointing_enable())",
                expected_effect="activation memory drops sharply for ~30% more compute"),
            Fix(action="set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True before launching",
                expected_effect="less fragmentation: fewer OOMs with free memory still reported"),
        ],
    )]


def _throttled(gpu: GpuStatus) -> list[Finding]:
    reasons = gpu.throttle_reasons or []
    harmful = [r for r in reasons if r in _HARMFUL_THROTTLES]
    power_capped = "sw power cap" in reasons
    if not harmful and not power_capped:
        return []
    evidence = [Evidence(kind="gpu", text=f"clocks-event reasons: {', '.join(reasons)} (mask 0x{gpu.throttle_mask:x})",
                         value=float(gpu.throttle_mask), metric="throttle_mask")]
    if gpu.temperature_c is not None:
        evidence.append(Evidence(kind="gpu", text=f"temperature {gpu.temperature_c} C", value=gpu.temperature_c,
                                 metric="temperature_c"))
    if gpu.clock_sm_mhz is not None:
        evidence.append(Evidence(kind="gpu", text=f"SM clock {gpu.clock_sm_mhz} MHz", value=gpu.clock_sm_mhz,
                                 metric="clock_sm_mhz"))
    if gpu.power_draw_w is not None and gpu.power_limit_w is not None:
        evidence.append(Evidence(kind="gpu", text=f"power {gpu.power_draw_w} W of {gpu.power_limit_w} W limit",
                                 value=gpu.power_draw_w, metric="power_draw_w"))
    if harmful:
        return [Finding(
            rule="gpu_throttled", severity="warning", failure="slow_throughput", confidence=0.8, gpu_index=gpu.index,
            message=f"GPU {gpu.index} clocks are being cut by {', '.join(harmful)}: steps run slower than they should",
            evidence=evidence,
            fixes=[Fix(action="check cooling and airflow (fans, blocked intakes, datacenter inlet temperature); "
                              "for hw slowdown / power brake check the PSU and power cabling; move the job to another node",
                       expected_effect="clocks return to boost, step time drops")],
        )]
    return [Finding(
        rule="gpu_power_capped", severity="info", failure="slow_throughput", confidence=0.5, gpu_index=gpu.index,
        message=f"GPU {gpu.index} is at its software power cap: normal under heavy load, a limit if the cap was lowered",
        evidence=evidence,
        fixes=[Fix(action="compare power_limit_w with the card's default (nvidia-smi -q -d POWER); restore it with "
                          "nvidia-smi -pl if it was lowered",
                   expected_effect="higher sustained clocks")],
    )]


def _ecc_uncorrected(gpu: GpuStatus) -> list[Finding]:
    ecc = gpu.ecc_errors
    volatile, aggregate = ecc.volatile_uncorrected or 0, ecc.aggregate_uncorrected or 0
    if volatile <= 0 and aggregate <= 0:
        return []
    current = volatile > 0
    return [Finding(
        rule="ecc_uncorrected", severity="critical" if current else "warning", confidence=0.9, gpu_index=gpu.index,
        message=(f"GPU {gpu.index} has {volatile} uncorrected ECC errors since the last driver load: "
                 f"a hardware fault that corrupts or kills training" if current else
                 f"GPU {gpu.index} has had {aggregate} uncorrected ECC errors over its lifetime (none since boot)"),
        evidence=[Evidence(kind="gpu", text=f"ECC uncorrected volatile={ecc.volatile_uncorrected} "
                                            f"aggregate={ecc.aggregate_uncorrected}; corrected volatile="
                                            f"{ecc.volatile_corrected}",
                           value=float(volatile if current else aggregate), metric="ecc_uncorrected", rule="> 0")],
        fixes=[Fix(action="drain the node, reset the GPU (nvidia-smi -r) and check retired pages / row remapping "
                          "(nvidia-smi -q -d PAGE_RETIREMENT,ROW_REMAPPER); RMA if it recurs; "
                          "resume from a checkpoint elsewhere",
                   expected_effect="training moves off faulty memory")],
    )]


# Xid codes from NVIDIA's Xid catalogue that mean the GPU or its memory is failing, not the program.
_XID_HARDWARE = {
    48: "double-bit ECC error", 63: "ECC page retirement / row remapping", 64: "row remapping failure",
    74: "NVLink error", 79: "GPU has fallen off the bus", 92: "high single-bit ECC rate",
    94: "contained ECC error", 95: "uncontained ECC error", 119: "GSP RPC timeout", 120: "GSP error",
}
_XID_PROGRAM = {13: "graphics engine exception (often an out-of-range index in a kernel)",
                31: "GPU memory page fault (illegal address)", 43: "GPU stopped processing (a kernel faulted)",
                45: "preemptive cleanup after an earlier fault"}


def _xid(gpu: GpuStatus) -> list[Finding]:
    code = gpu.xid_last
    if not code:
        return []
    hardware = code in _XID_HARDWARE
    meaning = _XID_HARDWARE.get(code) or _XID_PROGRAM.get(code) or "see NVIDIA's Xid catalogue"
    fix = (Fix(action="drain the node and reset the GPU (nvidia-smi -r) or reboot; check dmesg and the retired "
                      "pages / row remapper; resume the job from a checkpoint on another node",
               expected_effect="the job runs on sound hardware") if hardware else
           Fix(action="rerun with CUDA_LAUNCH_BLOCKING=1 to find the kernel that faulted (an index out of range, "
                      "a bad pointer in a custom kernel); the GPU itself is usually fine",
               expected_effect="the faulting operation shows in the traceback"))
    return [Finding(
        rule="gpu_xid_error", severity="critical", failure=None if hardware else "cuda_assert",
        confidence=0.85 if hardware else 0.6, gpu_index=gpu.index,
        message=f"GPU {gpu.index} reported Xid {code}: {meaning}",
        evidence=[Evidence(kind="gpu", text=f"DCGM_FI_DEV_XID_ERRORS = {code}", value=float(code),
                           metric="xid_last", rule="!= 0")],
        fixes=[fix],
    )]


def _stuck_process_on_gpu(gpu: GpuStatus) -> list[Finding]:
    findings = []
    for process in gpu.processes:
        if process.state not in _STUCK_STATES:
            continue
        memory = f"{process.used_memory_bytes / 2**30:.1f} GiB" if process.used_memory_bytes is not None else "memory"
        evidence = [Evidence(kind="process", text=f"pid {process.pid} state={process.state} holds {memory} on GPU "
                                                  f"{gpu.index}: {process.command or process.name or '?'}")]
        if process.state == "zombie":
            findings.append(Finding(
                rule="zombie_holding_gpu", severity="critical", failure="oom", confidence=0.8, gpu_index=gpu.index,
                pid=process.pid, evidence=evidence,
                message=f"zombie process {process.pid} still holds {memory} on GPU {gpu.index}: the next run may OOM",
                fixes=[Fix(action=f"kill or restart its parent (pid {process.ppid}) so it is reaped; if the memory stays "
                                  f"allocated, reset the GPU (nvidia-smi -r -i {gpu.index}) once nothing else uses it",
                           expected_effect="the GPU memory is released")],
            ))
        else:
            findings.append(Finding(
                rule="stopped_holding_gpu", severity="critical", failure="distributed_hang", confidence=0.8,
                gpu_index=gpu.index, pid=process.pid, evidence=evidence,
                message=(f"process {process.pid} is stopped (SIGSTOP / Ctrl-Z) while holding {memory} on GPU "
                         f"{gpu.index}: it makes no progress and other ranks wait for it"),
                fixes=[Fix(action=f"resume it with `kill -CONT {process.pid}` (or `fg` in its shell), or end it with "
                                  f"`kill {process.pid}`",
                           expected_effect="the job continues or the GPU is freed")],
            ))
    return findings


def _idle_while_training(gpu: GpuStatus, processes: list[TrainingProcess], samples: int) -> list[Finding]:
    window = gpu.utilization_gpu_window
    if window is None or window.mean >= IDLE_UTIL_PERCENT:
        return []
    trainers = [p for p in gpu.processes if p.training_pid is not None and p.state not in _STUCK_STATES]
    if not trainers:
        return []
    names = ", ".join(f"pid {p.pid} ({p.name or '?'})" for p in trainers[:4])
    over = f"over {window.samples} samples" if window.samples > 1 else "in a single sample"
    return [Finding(
        rule="gpu_idle_while_training", severity="warning", failure="slow_throughput",
        confidence=0.75 if window.samples >= 3 else 0.45, gpu_index=gpu.index,
        message=(f"GPU {gpu.index} is {window.mean:.0f}% busy {over} while training {names} runs on it: "
                 f"the GPU waits on the input pipeline or on host-device syncs"),
        evidence=[Evidence(kind="gpu", text=f"utilization mean {window.mean}% (min {window.min}, max {window.max}) {over}",
                           value=window.mean, metric="utilization_gpu_percent",
                           rule=f"mean < {IDLE_UTIL_PERCENT:.0f}% with a training process on the GPU")],
        fixes=[
            Fix(action="raise DataLoader num_workers (e.g. 4-8 per GPU) and set pin_memory=True, persistent_workers=True",
                expected_effect="batches are ready when the GPU asks; utilization rises"),
            Fix(action="remove .item(), print(tensor), .cpu() and .numpy() from the inner training loop "
                       "(log every N steps instead)",
                expected_effect="no host-device sync per step"),
        ],
        next_steps=([NextStep(tool="gpu_status", arguments={"samples": 10, "interval": 0.5},
                              why="one sample can catch a normal pause; a window confirms it")]
                    if samples < 3 else []),
    )]


def _stuck_training_processes(processes: list[TrainingProcess], gpus: list[GpuStatus]) -> list[Finding]:
    """Zombie or stopped training processes not already reported through a GPU."""
    on_gpu = {p.pid for g in gpus for p in g.processes if p.state in _STUCK_STATES}
    findings = []
    for top in processes:
        for info in (top, *top.children):
            if info.state not in _STUCK_STATES or info.pid in on_gpu:
                continue
            who = f"{info.role} pid {info.pid}" + (f" (rank {info.rank})" if info.rank is not None else "")
            if info.state == "zombie":
                message = (f"{who} of job {top.pid} has exited but its parent (pid {info.ppid}) has not reaped it: "
                           f"the launcher may be stuck or waiting on other ranks")
                fix = Fix(action=f"read the job's log for why it exited; if the parent (pid {info.ppid}) is hung, kill it",
                          expected_effect="the job ends cleanly and can be restarted from a checkpoint")
                failure: FailureId | None = "distributed_hang" if top.children else None
            else:
                message = f"{who} of job {top.pid} is stopped (SIGSTOP / Ctrl-Z): it makes no progress"
                fix = Fix(action=f"resume it with `kill -CONT {info.pid}` or end it with `kill {info.pid}`",
                          expected_effect="training continues or the job ends")
                failure = "distributed_hang"
            findings.append(Finding(
                rule=f"training_process_{info.state}", severity="warning", failure=failure, confidence=0.7,
                pid=info.pid, message=message, fixes=[fix],
                evidence=[Evidence(kind="process", text=f"pid {info.pid} state={info.state} command={info.command!r}")],
            ))
    return findings


def _training_not_on_gpu(status: NvmlStatus, gpus: list[GpuStatus], processes: list[TrainingProcess]) -> list[Finding]:
    readable = [g for g in gpus if "processes_compute" not in g.unavailable and "handle" not in g.unavailable]
    if not status.available or not readable:
        return []
    hidden = [p.pid for g in readable for p in g.processes if not p.visible]
    findings = []
    for top in processes:
        alive = [i for i in (top, *top.children) if i.state not in (*_STUCK_STATES, None)]
        if top.job_gpus or not alive:
            continue
        young = top.age_seconds is not None and top.age_seconds < 60
        caveats = []
        if hidden:
            caveats.append(f"NVML lists pids this server cannot see ({', '.join(map(str, hidden[:5]))}): "
                           f"in a container the job may be on a GPU under a host pid")
        if young:
            caveats.append(f"the job started {top.age_seconds:.0f}s ago and may not have created its CUDA context yet")
        findings.append(Finding(
            rule="training_not_on_gpu", severity="warning", failure="slow_throughput",
            confidence=0.35 if caveats else 0.65, pid=top.pid,
            message=(f"training pid {top.pid} ({top.match_reason}) is alive but holds no GPU: running on CPU by "
                     f"mistake?" + (" Caveat: " + "; ".join(caveats) if caveats else "")),
            evidence=[Evidence(kind="process", text=f"pid {top.pid} and its {len(top.children)} children are in no "
                                                    f"GPU's process list ({len(readable)} GPUs readable)")],
            fixes=[Fix(action="check the script moves model and batches to the device (model.to('cuda'), "
                              "batch.to(device)), that torch.cuda.is_available() is True in its environment, and "
                              "that CUDA_VISIBLE_DEVICES is not empty",
                       expected_effect="the job appears in a GPU's process list and runs many times faster")],
        ))
    return findings


def _gpus_left_unused(gpus: list[GpuStatus], processes: list[TrainingProcess]) -> list[Finding]:
    """A job on some GPUs while others hold no process at all: a DDP launch that forgot GPUs?"""
    used = sorted({i for p in processes for i in p.job_gpus})
    empty = [g.index for g in gpus if not g.processes and "processes_compute" not in g.unavailable
             and "handle" not in g.unavailable]
    if not used or not empty:
        return []
    return [Finding(
        rule="gpus_left_unused", severity="info", confidence=0.4,
        message=(f"training runs on GPUs {used} while GPUs {empty} hold no process: intended (another job's "
                 f"share), or a launch that did not start one rank per GPU?"),
        evidence=[Evidence(kind="gpu", text=f"GPUs {empty} have empty compute and graphics process lists")],
        fixes=[Fix(action="launch one rank per GPU (torchrun --nproc_per_node=<GPUs>) and check CUDA_VISIBLE_DEVICES "
                          "in the job's environment",
                   expected_effect="all GPUs share the work; throughput scales with their number")],
    )]


def _missing_process(missing: MissingProcess | None, log: LogPointer | None) -> list[Finding]:
    if missing is None:
        return []
    message = missing.message
    next_steps = []
    evidence = [Evidence(kind="process", text=missing.message)]
    if log is not None and log.exists:
        message += (f"; its log {log.path} ({log.size_bytes} bytes, last written "
                    f"{log.modified_seconds_ago:.0f}s ago) says how it ended")
        evidence.append(Evidence(kind="missing", text=f"log {log.path}: {log.size_bytes} bytes, "
                                                      f"modified {log.modified_seconds_ago}s ago"))
        next_steps = [NextStep(tool="tail_log", arguments={"path": log.path}, why="the last lines show the exit reason"),
                      NextStep(tool="classify_failure", arguments={"log_path": log.path},
                               why="turn the traceback into a failure id with fixes")]
    elif log is not None:
        message += f"; the log path {log.path} does not exist ({log.reason})"
    else:
        message += "; pass log=<its log file> to get a pointer to it"
    return [Finding(rule="pid_not_running", severity="warning", confidence=0.9, pid=missing.pid, message=message,
                    evidence=evidence, next_steps=next_steps)]


def _log_silent(log: LogPointer | None, processes: list[TrainingProcess], gpus: list[GpuStatus]) -> list[Finding]:
    if log is None or not log.exists or log.modified_seconds_ago is None or log.modified_seconds_ago < LOG_SILENT_SECONDS:
        return []
    alive = [p for p in processes if p.state not in (*_STUCK_STATES, None)]
    if not alive:
        return []
    job_gpus = {i for p in alive for i in p.job_gpus}
    busy = [g for g in gpus if g.index in job_gpus and g.utilization_gpu_window and g.utilization_gpu_window.mean >= 90]
    evidence = [Evidence(kind="log_line", text=f"log {log.path} last written {log.modified_seconds_ago:.0f}s ago",
                         value=log.modified_seconds_ago, rule=f"> {LOG_SILENT_SECONDS:.0f}s while the job is alive")]
    if busy:
        evidence.append(Evidence(kind="gpu", text=f"GPUs {[g.index for g in busy]} at >= 90% utilization: "
                                                  f"a spinning NCCL collective looks exactly like this"))
    return [Finding(
        rule="log_silent", severity="warning", failure="distributed_hang", confidence=0.6 if busy else 0.4,
        pid=alive[0].pid, evidence=evidence,
        message=(f"training pid {alive[0].pid} is alive but its log has been silent for "
                 f"{log.modified_seconds_ago / 60:.0f} min" + (" with its GPUs pinned busy: likely a collective hang"
                                                               if busy else "")),
        fixes=[Fix(action="dump the stacks with `py-spy dump --pid <rank pid>` on every rank; rerun with "
                          "NCCL_DEBUG=INFO and TORCH_NCCL_ASYNC_ERROR_HANDLING=1 and a shorter collective timeout",
                   expected_effect="shows which rank is stuck where")],
        next_steps=[NextStep(tool="tail_log", arguments={"path": log.path}, why="see the last step logged")],
    )]


# ---------------------------------------------------------------- wording

def gpu_line(gpu: GpuStatus, findings: list[Finding]) -> str:
    if findings:
        worst = min(findings, key=lambda f: _SEVERITY_RANK[f.severity]).severity
        return f"{worst}: " + "; ".join(f.message for f in findings)
    parts = []
    window = gpu.utilization_gpu_window
    if window is not None:
        parts.append(f"{window.mean:.0f}% busy" + (f" (mean of {window.samples} samples)" if window.samples > 1 else ""))
    if gpu.memory_used_percent is not None:
        parts.append(f"memory {gpu.memory_used_percent:.0f}% used")
    if gpu.temperature_c is not None:
        parts.append(f"{gpu.temperature_c} C")
    if gpu.host is None:  # a Prometheus source knows no processes
        count = len(gpu.processes)
        parts.append(f"{count} process{'es' if count != 1 else ''}")
    return "ok: " + ", ".join(parts)


def _summary(status: NvmlStatus, gpus: list[GpuStatus], processes: list[TrainingProcess], omitted: int,
             findings: list[Finding]) -> str:
    if status.available:
        head = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''} (driver {status.driver_version or '?'})"
    else:
        head = f"no GPU picture ({status.reason_code})"
    jobs = f"{len(processes) + omitted} training process{'es' if len(processes) + omitted != 1 else ''}"
    if processes:
        first = processes[0]
        ranks = sum(1 for c in first.children if c.role == "rank")
        jobs += (f", first: pid {first.pid} ({first.match_reason})" + (f", {ranks} ranks" if ranks else "")
                 + (f" on GPUs {sorted(first.job_gpus)}" if first.job_gpus else ""))
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("critical", "warning", "info")}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no findings"
    serious = [f.message for f in findings if f.severity != "info"][:3]
    return f"{head}; {jobs}; {tally}." + (" " + " | ".join(serious) if serious else "")
