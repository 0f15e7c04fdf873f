"""GPU state through NVML (the nvidia-ml-py bindings), the structured `nvidia-smi`.

Every reading is individually fallible: a consumer GPU has no ECC, a container may forbid
power readings, an old driver lacks a function. Each field is `None` plus a reason in
`unavailable`, so one refusal never loses the others. When NVML as a whole is unusable (no
driver, library mismatch, no permission, bindings not installed, zero devices) the answer is
`NvmlStatus(available=False, reason_code=..., reason=..., fix=...)`, never an exception.

Testing hook: the bindings module is imported by name from the environment variable
`ML_DEBUG_MCP_NVML_MODULE` (default `pynvml`). Tests point it at `tests/fake_nvml.py`, which
mirrors pynvml's functions, structs and error classes. NVML indices are physical GPU indices:
they ignore CUDA_VISIBLE_DEVICES, so match GPUs by UUID when comparing with a training log.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core.host.processes import COMMAND_CHARS, identify_process

NVML_MODULE_ENV = "ML_DEBUG_MCP_NVML_MODULE"
MAX_GPU_PROCESSES = 50
"""Processes listed per GPU (largest memory first); MPS hosts can run far more."""

NvmlReasonCode = Literal[
    "nvml_not_installed",
    "library_not_found",
    "driver_not_loaded",
    "lib_rm_version_mismatch",
    "no_permission",
    "no_devices",
    "nvml_error",
]

# NVML error constant -> (reason_code, what it means, what to do). Looked up by name on the
# loaded module so the real bindings and the fake share one table.
_INIT_FAILURES: dict[str, tuple[NvmlReasonCode, str, str]] = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": (
        "library_not_found",
        "libnvidia-ml.so.1 was not found: this host has no NVIDIA driver, or the container does not see it.",
        "On a GPU host install the NVIDIA driver; in Docker run with --gpus all (NVIDIA Container Toolkit) "
        "so the driver library is mounted. On a CPU-only host this is expected: the process picture still applies.",
    ),
    "NVML_ERROR_DRIVER_NOT_LOADED": (
        "driver_not_loaded",
        "The NVIDIA kernel driver is not loaded.",
        "Check `lsmod | grep nvidia` and `dmesg | grep -i nvrm`; load it with `sudo modprobe nvidia` "
        "or reboot after a driver install.",
    ),
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (
        "lib_rm_version_mismatch",
        "The NVML library and the loaded kernel module have different versions (driver upgraded without a reboot).",
        "Reboot the node, or unload and reload the nvidia kernel modules so they match the user-space driver.",
    ),
    "NVML_ERROR_NO_PERMISSION": (
        "no_permission",
        "Permission denied opening the GPU devices (/dev/nvidia*).",
        "Run the server as a user allowed to use the GPUs (often the 'video' group), "
        "or pass the devices into the container.",
    ),
}

# Per-field NVML errors worth explaining in words rather than NVML's terse string.
_FIELD_REASONS = {
    "NVML_ERROR_NOT_SUPPORTED": "not supported on this GPU or driver",
    "NVML_ERROR_NO_PERMISSION": "permission denied (needs root or a privileged container)",
    "NVML_ERROR_FUNCTION_NOT_FOUND": "the driver's NVML library lacks this function (driver older than the bindings)",
    "NVML_ERROR_GPU_IS_LOST": "the GPU is lost (fell off the bus): reset it or reboot the node",
    "NVML_ERROR_NOT_FOUND": "not found",
    "NVML_ERROR_INVALID_ARGUMENT": "invalid argument for this GPU",
}

CLOCK_EVENT_REASONS: dict[int, str] = {
    0x001: "gpu idle",
    0x002: "applications clocks setting",
    0x004: "sw power cap",
    0x008: "hw slowdown",
    0x010: "sync boost",
    0x020: "sw thermal slowdown",
    0x040: "hw thermal slowdown",
    0x080: "hw power brake slowdown",
    0x100: "display clock setting",
    0x200: "board limit",
    0x400: "reliability",
}
"""nvmlClocksEventReason* bits (same values as the older nvmlClocksThrottleReason*)."""


class NvmlStatus(BaseModel):
    """Whether NVML answered, and if not exactly why and what to do about it."""

    available: bool
    reason_code: NvmlReasonCode | None = None
    reason: str | None = None
    fix: str | None = None
    module: str = "pynvml"
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml_version: str | None = None
    device_count: int | None = None


class GpuProcess(BaseModel):
    """A process holding a context on a GPU, named through psutil."""

    pid: int
    type: Literal["compute", "graphics", "compute+graphics"]
    used_memory_bytes: int | None = Field(None, description="None when NVML cannot attribute memory (MIG, WDDM)")
    visible: bool = Field(True, description="False when psutil cannot see the pid (container PID namespace, exited)")
    ppid: int | None = None
    name: str | None = None
    state: str | None = None
    user: str | None = None
    command: str | None = None
    command_truncated: bool = False
    reason: str | None = None
    training_pid: int | None = Field(None, description="top process of the training job this belongs to, if any")


class EccCounts(BaseModel):
    volatile_corrected: int | None = None
    volatile_uncorrected: int | None = None
    aggregate_corrected: int | None = None
    aggregate_uncorrected: int | None = None


class GpuInfo(BaseModel):
    """One GPU's instant picture; any field NVML refused is None with its reason in `unavailable`."""

    index: int
    name: str | None = None
    uuid: str | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_used_percent: float | None = None
    utilization_gpu_percent: int | None = None
    utilization_memory_percent: int | None = Field(None, description="memory-controller busy %, not memory used")
    temperature_c: int | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    clock_sm_mhz: int | None = None
    clock_memory_mhz: int | None = None
    throttle_reasons: list[str] | None = Field(None, description="decoded current clocks-event reasons; [] = none")
    throttle_mask: int | None = None
    ecc_errors: EccCounts = Field(default_factory=EccCounts)
    xid_last: int | None = Field(None, description="the last Xid error the driver reported (DCGM); 0 = none")
    pcie_link_generation: int | None = None
    pcie_link_width: int | None = None
    pcie_tx_kib_per_s: int | None = None
    pcie_rx_kib_per_s: int | None = None
    nvlink_links: int | None = Field(None, description="links that report a state; None when the GPU has no NVLink")
    nvlink_active_links: int | None = None
    mig_mode: Literal["enabled", "disabled"] | None = None
    mig_mode_pending: Literal["enabled", "disabled"] | None = None
    processes: list[GpuProcess] = Field(default_factory=list)
    processes_omitted: int = 0
    unavailable: dict[str, str] = Field(default_factory=dict)


class UtilizationSample(BaseModel):
    index: int
    gpu: int | None
    memory: int | None


class GpuReport(BaseModel):
    nvml: NvmlStatus
    gpus: list[GpuInfo] = Field(default_factory=list)


def load_nvml_module():
    """Import the NVML bindings named by ML_DEBUG_MCP_NVML_MODULE (default pynvml), lazily.

    The variable is the testing hook: an end-to-end test sets it to `fake_nvml` with `tests/`
    on PYTHONPATH to run the whole server against a simulated 8-GPU host.
    """
    return importlib.import_module(os.environ.get(NVML_MODULE_ENV) or "pynvml")


def decode_throttle_reasons(mask: int) -> list[str]:
    """Clocks-event bit mask to words; unknown bits are kept as hex so nothing is hidden."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown (0x{unknown:x})")
    return names


def describe_nvml_error(nvml: Any, exc: BaseException, function: str) -> str:
    """A per-field reason: words for the common codes, NVML's own string otherwise."""
    value = getattr(exc, "value", None)
    for constant, words in _FIELD_REASONS.items():
        if value is not None and value == getattr(nvml, constant, object()):
            return f"{words} ({function})"
    mismatch = getattr(nvml, "NVMLLibraryMismatchError", None)
    if mismatch is not None and isinstance(exc, mismatch):
        return f"the nvidia-ml-py bindings do not match the driver's NVML library ({function}); align their versions"
    return f"{type(exc).__name__}: {exc} ({function})"


class NvmlSession:
    """One nvmlInit .. nvmlShutdown span: open once, read and sample, always shut down.

    Use as a context manager. When NVML is unusable, `status.available` is False with the
    reason and every read returns empty lists; nothing raises.
    """

    def __init__(self) -> None:
        self.nvml: Any = None
        self.status = NvmlStatus(available=False, reason_code="nvml_error", reason="session not opened")
        self._initialized = False
        self._handles: list[tuple[int, Any, str | None]] = []

    def __enter__(self) -> "NvmlSession":
        self.status = self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._initialized:
            self._initialized = False
            try:
                self.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutdown failing must not mask the answer
                pass

    def _open(self) -> NvmlStatus:
        module_name = os.environ.get(NVML_MODULE_ENV) or "pynvml"
        try:
            nvml = load_nvml_module()
        except ImportError as exc:
            return NvmlStatus(
                available=False, module=module_name, reason_code="nvml_not_installed",
                reason=f"The NVML bindings module '{module_name}' could not be imported ({exc}).",
                fix="pip install nvidia-ml-py (it provides the `pynvml` module).",
            )
        self.nvml = nvml
        try:
            nvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - any init failure is an answer, not a crash
            return self._init_failure(exc, module_name)
        self._initialized = True
        status = NvmlStatus(available=True, module=module_name)
        status.driver_version = self._optional("nvmlSystemGetDriverVersion")
        cuda = self._optional("nvmlSystemGetCudaDriverVersion")
        if isinstance(cuda, int) and cuda > 0:
            status.cuda_driver_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
        status.nvml_version = self._optional("nvmlSystemGetNVMLVersion")
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:  # noqa: BLE001
            failed = self._init_failure(exc, module_name)
            return failed.model_copy(update={"driver_version": status.driver_version})
        status.device_count = count
        if count == 0:
            return status.model_copy(update={
                "available": False, "reason_code": "no_devices",
                "reason": "NVML loaded but reports 0 GPUs.",
                "fix": "Check `nvidia-smi -L`; in a container pass the GPUs (--gpus all); on a cloud VM check the "
                       "GPU is attached. (CUDA_VISIBLE_DEVICES does not hide GPUs from NVML.)",
            })
        for index in range(count):
            try:
                self._handles.append((index, nvml.nvmlDeviceGetHandleByIndex(index), None))
            except Exception as exc:  # noqa: BLE001
                self._handles.append((index, None, describe_nvml_error(nvml, exc, "nvmlDeviceGetHandleByIndex")))
        return status

    def _init_failure(self, exc: BaseException, module_name: str) -> NvmlStatus:
        value = getattr(exc, "value", None)
        for constant, (code, reason, fix) in _INIT_FAILURES.items():
            if value is not None and value == getattr(self.nvml, constant, object()):
                return NvmlStatus(available=False, module=module_name, reason_code=code, reason=reason, fix=fix)
        return NvmlStatus(
            available=False, module=module_name, reason_code="nvml_error",
            reason=f"NVML failed to start: {type(exc).__name__}: {exc}.",
            fix="Run `nvidia-smi` on the host to see the driver's own error; check `dmesg | grep -i nvrm`.",
        )

    def _optional(self, function: str, *args: Any) -> Any:
        try:
            result = getattr(self.nvml, function)(*args)
        except Exception:  # noqa: BLE001 - version strings are nice to have
            return None
        return result.decode() if isinstance(result, bytes) else result

    def read_gpus(self, *, pcie_throughput: bool = False, command_chars: int = COMMAND_CHARS) -> list[GpuInfo]:
        """Every GPU's full picture. PCIe throughput is opt-in: NVML blocks ~20 ms per direction per GPU."""
        if not self._initialized:
            return []
        gpus = []
        for index, handle, handle_error in self._handles:
            if handle is None:
                gpus.append(GpuInfo(index=index, unavailable={"handle": handle_error or "no handle"}))
                continue
            gpus.append(_read_gpu(self.nvml, index, handle, pcie_throughput, command_chars))
        return gpus

    def sample_utilization(self) -> list[UtilizationSample]:
        """One nvmlDeviceGetUtilizationRates reading per GPU, for the sampling window."""
        samples = []
        for index, handle, _ in self._handles:
            if handle is None:
                continue
            try:
                rates = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                samples.append(UtilizationSample(index=index, gpu=int(rates.gpu), memory=int(rates.memory)))
            except Exception:  # noqa: BLE001 - a missing sample is just not counted
                samples.append(UtilizationSample(index=index, gpu=None, memory=None))
        return samples


class _FieldReader:
    """Calls one NVML function and, if it raises, records why under each field it would fill."""

    def __init__(self, nvml: Any, unavailable: dict[str, str]) -> None:
        self.nvml = nvml
        self.unavailable = unavailable

    def __call__(self, fields: str | tuple[str, ...], function: str, *args: Any) -> Any:
        names = (fields,) if isinstance(fields, str) else fields
        call = getattr(self.nvml, function, None)
        if call is None:
            reason = f"{function} is missing from the installed NVML bindings; upgrade nvidia-ml-py"
        else:
            try:
                result = call(*args)
                return result.decode() if isinstance(result, bytes) else result
            except Exception as exc:  # noqa: BLE001 - one field's failure stays with that field
                reason = describe_nvml_error(self.nvml, exc, function)
        for name in names:
            self.unavailable[name] = reason
        return None


def _read_gpu(nvml: Any, index: int, handle: Any, pcie_throughput: bool, command_chars: int) -> GpuInfo:
    gpu = GpuInfo(index=index)
    read = _FieldReader(nvml, gpu.unavailable)
    gpu.name = read("name", "nvmlDeviceGetName", handle)
    gpu.uuid = read("uuid", "nvmlDeviceGetUUID", handle)

    memory = read(("memory_used_bytes", "memory_total_bytes", "memory_free_bytes", "memory_used_percent"),
                  "nvmlDeviceGetMemoryInfo", handle)
    if memory is not None:
        gpu.memory_used_bytes, gpu.memory_total_bytes, gpu.memory_free_bytes = (
            int(memory.used), int(memory.total), int(memory.free))
        if gpu.memory_total_bytes > 0:
            gpu.memory_used_percent = round(100.0 * gpu.memory_used_bytes / gpu.memory_total_bytes, 1)

    rates = read(("utilization_gpu_percent", "utilization_memory_percent"), "nvmlDeviceGetUtilizationRates", handle)
    if rates is not None:
        gpu.utilization_gpu_percent, gpu.utilization_memory_percent = int(rates.gpu), int(rates.memory)

    gpu.temperature_c = read("temperature_c", "nvmlDeviceGetTemperature", handle, nvml.NVML_TEMPERATURE_GPU)
    power = read("power_draw_w", "nvmlDeviceGetPowerUsage", handle)
    gpu.power_draw_w = round(power / 1000.0, 1) if power is not None else None
    limit = read("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", handle)
    gpu.power_limit_w = round(limit / 1000.0, 1) if limit is not None else None
    gpu.clock_sm_mhz = read("clock_sm_mhz", "nvmlDeviceGetClockInfo", handle, nvml.NVML_CLOCK_SM)
    gpu.clock_memory_mhz = read("clock_memory_mhz", "nvmlDeviceGetClockInfo", handle, nvml.NVML_CLOCK_MEM)

    event_function = ("nvmlDeviceGetCurrentClocksEventReasons"
                      if hasattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons")
                      else "nvmlDeviceGetCurrentClocksThrottleReasons")
    mask = read(("throttle_reasons", "throttle_mask"), event_function, handle)
    if mask is not None:
        gpu.throttle_mask = int(mask)
        gpu.throttle_reasons = decode_throttle_reasons(gpu.throttle_mask)

    gpu.ecc_errors = _read_ecc(nvml, read, handle)
    gpu.pcie_link_generation = read("pcie_link_generation", "nvmlDeviceGetCurrPcieLinkGeneration", handle)
    gpu.pcie_link_width = read("pcie_link_width", "nvmlDeviceGetCurrPcieLinkWidth", handle)
    if pcie_throughput:
        gpu.pcie_tx_kib_per_s = read("pcie_tx_kib_per_s", "nvmlDeviceGetPcieThroughput", handle,
                                     nvml.NVML_PCIE_UTIL_TX_BYTES)
        gpu.pcie_rx_kib_per_s = read("pcie_rx_kib_per_s", "nvmlDeviceGetPcieThroughput", handle,
                                     nvml.NVML_PCIE_UTIL_RX_BYTES)
    else:
        skipped = "not read by default: NVML blocks ~20 ms per direction per GPU (pcie_throughput=True reads it)"
        gpu.unavailable["pcie_tx_kib_per_s"] = gpu.unavailable["pcie_rx_kib_per_s"] = skipped
    gpu.nvlink_links, gpu.nvlink_active_links = _read_nvlink(nvml, handle, gpu.unavailable)

    mig = read(("mig_mode", "mig_mode_pending"), "nvmlDeviceGetMigMode", handle)
    if mig is not None:
        enabled = getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)
        gpu.mig_mode, gpu.mig_mode_pending = ("enabled" if m == enabled else "disabled" for m in mig)

    gpu.processes, gpu.processes_omitted = _read_processes(read, handle, command_chars)
    return gpu


def _read_ecc(nvml: Any, read: _FieldReader, handle: Any) -> EccCounts:
    counts = EccCounts()
    for counter_name, counter in (("volatile", nvml.NVML_VOLATILE_ECC), ("aggregate", nvml.NVML_AGGREGATE_ECC)):
        for error_name, error_type in (("corrected", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                                       ("uncorrected", nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)):
            field_name = f"{counter_name}_{error_name}"
            value = read(f"ecc_errors.{field_name}", "nvmlDeviceGetTotalEccErrors", handle, error_type, counter)
            setattr(counts, field_name, int(value) if value is not None else None)
    return counts


def _read_nvlink(nvml: Any, handle: Any, unavailable: dict[str, str]) -> tuple[int | None, int | None]:
    """Walk links until NVML refuses one; link 0 refused means the GPU has no NVLink."""
    links = active = 0
    for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            state = nvml.nvmlDeviceGetNvLinkState(handle, link)
        except Exception as exc:  # noqa: BLE001
            if link == 0:
                reason = describe_nvml_error(nvml, exc, "nvmlDeviceGetNvLinkState")
                unavailable["nvlink_links"] = unavailable["nvlink_active_links"] = reason
                return None, None
            break
        links += 1
        active += 1 if state == getattr(nvml, "NVML_FEATURE_ENABLED", 1) else 0
    return links, active


def _read_processes(read: _FieldReader, handle: Any, command_chars: int) -> tuple[list[GpuProcess], int]:
    """Compute and graphics lists merged by pid, largest memory first, each named through psutil."""
    kinds: dict[int, set[str]] = {}
    memory: dict[int, int | None] = {}
    for kind, function in (("compute", "nvmlDeviceGetComputeRunningProcesses"),
                           ("graphics", "nvmlDeviceGetGraphicsRunningProcesses")):
        for info in read(f"processes_{kind}", function, handle) or []:
            pid = int(info.pid)
            kinds.setdefault(pid, set()).add(kind)
            used = info.usedGpuMemory
            if used is not None:
                memory[pid] = max(memory.get(pid) or 0, int(used))
            else:
                memory.setdefault(pid, None)
    ranked = sorted(kinds, key=lambda pid: (-(memory.get(pid) or 0), pid))
    processes = []
    for pid in ranked[:MAX_GPU_PROCESSES]:
        identity = identify_process(pid, command_chars)
        process_type = "compute+graphics" if len(kinds[pid]) == 2 else next(iter(kinds[pid]))
        processes.append(GpuProcess(
            type=process_type, used_memory_bytes=memory.get(pid),
            **identity.model_dump(),
        ))
    return processes, max(0, len(ranked) - MAX_GPU_PROCESSES)


def read_gpu_report(*, pcie_throughput: bool = False) -> GpuReport:
    """One-shot convenience: open NVML, read every GPU, shut down."""
    with NvmlSession() as session:
        return GpuReport(nvml=session.status, gpus=session.read_gpus(pcie_throughput=pcie_throughput))
