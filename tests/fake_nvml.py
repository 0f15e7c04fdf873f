"""A stand-in for `pynvml` (nvidia-ml-py) that simulates a GPU host: the one fake in the suite.

It mirrors the real module's surface for the calls ml_debug_mcp makes: same function names,
constants, ctypes struct return types (`memory.used/total/free`, `utilization.gpu/memory`),
process-info objects (`.pid`, `.usedGpuMemory`), and the error classes generated the same way
pynvml does (a base `NVMLError` whose constructor maps a code to its `NVMLError_<Name>`
subclass). Calls before `nvmlInit` raise `NVMLError_Uninitialized`, as the real library does.

Inject it at the import boundary, never by patching the code under test:
    ML_DEBUG_MCP_NVML_MODULE=fake_nvml PYTHONPATH=tests ...

Configure from the environment (read at import and by `configure()` with no arguments):
    FAKE_NVML_GPUS=8                   number of GPUs (0 = NVML loads but sees none)
    FAKE_NVML_SCENARIO=healthy         healthy | idle | memory_full | thermal | power_cap | ecc | gpu_lost
    FAKE_NVML_INIT_ERROR=DRIVER_NOT_LOADED   nvmlInit fails with NVML_ERROR_<this>
    FAKE_NVML_NOT_SUPPORTED=nvmlDeviceGetTemperature,nvmlDeviceGetTotalEccErrors
    FAKE_NVML_UTIL=90,95,3             GPU utilization per successive sample (last value repeats)
    FAKE_NVML_PROCESSES=0:1234:2048,1:5678:1024:graphics   gpu:pid:MiB[:graphics]
or from Python with `configure(gpus=..., scenario=..., ...)` / `configure(devices=[FakeDevice(...)])`.
`STATE` counts init/shutdown calls so tests can check sessions are closed.
"""

from __future__ import annotations

import os
import string
import sys
from ctypes import Structure, c_uint, c_ulonglong
from dataclasses import dataclass, field

# ---- constants (values as in pynvml) ----
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999

NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1
NVML_TEMPERATURE_GPU = 0
NVML_NVLINK_MAX_LINKS = 36
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_PCIE_UTIL_TX_BYTES = 0
NVML_PCIE_UTIL_RX_BYTES = 1
NVML_DEVICE_MIG_DISABLE = 0x0
NVML_DEVICE_MIG_ENABLE = 0x1

nvmlClocksEventReasonGpuIdle = 0x001
nvmlClocksEventReasonApplicationsClocksSetting = 0x002
nvmlClocksEventReasonSwPowerCap = 0x004
nvmlClocksEventReasonHwSlowdown = 0x008
nvmlClocksEventReasonSyncBoost = 0x010
nvmlClocksEventReasonSwThermalSlowdown = 0x020
nvmlClocksEventReasonHwThermalSlowdown = 0x040
nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x080
nvmlClocksEventReasonDisplayClockSetting = 0x100
nvmlClocksEventReasonNone = 0x000

_ERROR_STRINGS = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


# ---- errors, built the way pynvml builds them ----
class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}

    def __new__(cls, value):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self):
        return _ERROR_STRINGS.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other):
        return self.value == other.value

    __hash__ = Exception.__hash__


class NVMLLibraryMismatchError(Exception):
    pass


def _make_error_classes() -> None:
    """NVML_ERROR_NOT_SUPPORTED -> NVMLError_NotSupported, registered for NVMLError(code)."""
    module = sys.modules[__name__]
    for constant in [name for name in dir(module) if name.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(constant.replace("NVML_ERROR_", ""), "_").replace("_", "")
        code = getattr(module, constant)

        def bound_new(cls, *args, _code=code):
            return NVMLError.__new__(cls, _code)

        subclass = type(class_name, (NVMLError,), {"__new__": bound_new, "__module__": __name__})
        setattr(module, class_name, subclass)
        NVMLError._valClassMapping[code] = subclass


_make_error_classes()


def nvmlExceptionClass(nvmlErrorCode):
    if nvmlErrorCode not in NVMLError._valClassMapping:
        raise ValueError(f"nvmlErrorCode {nvmlErrorCode} is not valid")
    return NVMLError._valClassMapping[nvmlErrorCode]


# ---- return types ----
class c_nvmlMemory_t(Structure):
    _fields_ = [("total", c_ulonglong), ("free", c_ulonglong), ("used", c_ulonglong)]


class c_nvmlUtilization_t(Structure):
    _fields_ = [("gpu", c_uint), ("memory", c_uint)]


class nvmlFriendlyObject:
    """pynvml returns process infos as plain attribute bags of this name."""

    def __init__(self, dictionary):
        for key, value in dictionary.items():
            setattr(self, key, value)


class c_nvmlDevice_t:
    """Opaque device handle (a ctypes pointer in pynvml)."""

    def __init__(self, index: int) -> None:
        self.index = index


# ---- the simulated host ----
MiB = 1024 * 1024


@dataclass
class FakeProcess:
    pid: int
    used_bytes: int | None
    graphics: bool = False


@dataclass
class FakeDevice:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = ""
    memory_total: int = 80 * 1024 * MiB
    memory_used: int = 48 * 1024 * MiB
    utilization: list[int] = field(default_factory=lambda: [95])
    memory_utilization: list[int] = field(default_factory=lambda: [60])
    temperature: int = 64
    power_mw: int = 520_000
    power_limit_mw: int = 700_000
    clock_sm: int = 1980
    clock_mem: int = 2619
    throttle_mask: int = nvmlClocksEventReasonNone
    ecc: dict[tuple[int, int], int] = field(default_factory=dict)  # (error_type, counter) -> count
    pcie_gen: int = 5
    pcie_width: int = 16
    pcie_kib: tuple[int, int] = (1200, 3400)
    nvlink_links: int = 0
    mig_mode: tuple[int, int] = (NVML_DEVICE_MIG_DISABLE, NVML_DEVICE_MIG_DISABLE)
    processes: list[FakeProcess] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code
    samples_taken: int = 0


@dataclass
class FakeState:
    devices: list[FakeDevice] = field(default_factory=list)
    init_error: int | None = None
    initialized: int = 0
    init_calls: int = 0
    shutdown_calls: int = 0
    handle_errors: dict[int, int] = field(default_factory=dict)


STATE = FakeState()

SCENARIOS = ("healthy", "idle", "memory_full", "thermal", "power_cap", "ecc", "gpu_lost")


def make_device(index: int, scenario: str = "healthy", gpus: int = 1) -> FakeDevice:
    """A device in one of the named conditions; 8-GPU hosts get NVLink like an HGX board."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown FAKE_NVML scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    device = FakeDevice(uuid=f"GPU-fake0000-0000-0000-0000-{index:012d}", nvlink_links=18 if gpus >= 8 else 0)
    if scenario == "idle":
        device.utilization, device.memory_utilization = [2], [0]
        device.power_mw = 90_000
        device.throttle_mask = nvmlClocksEventReasonGpuIdle
    elif scenario == "memory_full":
        device.memory_used = int(device.memory_total * 0.97)
    elif scenario == "thermal":
        device.temperature = 91
        device.throttle_mask = nvmlClocksEventReasonSwThermalSlowdown | nvmlClocksEventReasonHwThermalSlowdown
        device.clock_sm = 1110
    elif scenario == "power_cap":
        device.power_mw = device.power_limit_mw
        device.throttle_mask = nvmlClocksEventReasonSwPowerCap
    elif scenario == "ecc":
        device.ecc = {(NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC): 2,
                      (NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_AGGREGATE_ECC): 5,
                      (NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC): 140}
    return device


def configure(
    gpus: int | None = None,
    scenario: str | None = None,
    *,
    devices: list[FakeDevice] | None = None,
    init_error: str | int | None = None,
    not_supported: list[str] | tuple[str, ...] | None = None,
    utilization: list[int] | None = None,
    processes: list[tuple[int, int, int | None]] | None = None,
) -> FakeState:
    """Reset the simulated host; arguments left out fall back to the FAKE_NVML_* environment.

    processes: (gpu_index, pid, used_bytes or None); used_bytes None mimics NVML's "not available".
    """
    env = os.environ
    if gpus is None:
        gpus = int(env.get("FAKE_NVML_GPUS", "1"))
    if scenario is None:
        scenario = env.get("FAKE_NVML_SCENARIO", "healthy")
    if init_error is None and env.get("FAKE_NVML_INIT_ERROR"):
        init_error = env["FAKE_NVML_INIT_ERROR"]
    if not_supported is None:
        not_supported = [n for n in env.get("FAKE_NVML_NOT_SUPPORTED", "").split(",") if n]
    if utilization is None and env.get("FAKE_NVML_UTIL"):
        utilization = [int(v) for v in env["FAKE_NVML_UTIL"].split(",")]
    if processes is None:
        processes = _parse_processes(env.get("FAKE_NVML_PROCESSES", ""))

    global STATE
    STATE = FakeState()
    STATE.devices = devices if devices is not None else [make_device(i, scenario, gpus) for i in range(gpus)]
    if scenario == "gpu_lost" and STATE.devices:
        STATE.handle_errors[len(STATE.devices) - 1] = NVML_ERROR_GPU_IS_LOST
    if isinstance(init_error, str):
        init_error = getattr(sys.modules[__name__], "NVML_ERROR_" + init_error.upper())
    STATE.init_error = init_error
    for device in STATE.devices:
        for function in not_supported:
            device.errors[function] = NVML_ERROR_NOT_SUPPORTED
        if utilization:
            device.utilization = list(utilization)
    for entry in processes:
        gpu_index, pid, used = entry[:3]
        graphics = len(entry) > 3 and bool(entry[3])
        STATE.devices[gpu_index].processes.append(FakeProcess(pid=pid, used_bytes=used, graphics=graphics))
    return STATE


def _parse_processes(raw: str) -> list[tuple]:
    entries = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        parts = item.split(":")
        entries.append((int(parts[0]), int(parts[1]), int(parts[2]) * MiB, len(parts) > 3 and parts[3] == "graphics"))
    return entries


# ---- the API ----
def _check_initialized() -> None:
    if STATE.initialized <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)


def _device(handle, function: str) -> FakeDevice:
    _check_initialized()
    if not isinstance(handle, c_nvmlDevice_t) or not 0 <= handle.index < len(STATE.devices):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    device = STATE.devices[handle.index]
    if function in device.errors:
        raise NVMLError(device.errors[function])
    return device


def nvmlInitWithFlags(flags):
    STATE.init_calls += 1
    if STATE.init_error is not None:
        raise NVMLError(STATE.init_error)
    STATE.initialized += 1


def nvmlInit():
    nvmlInitWithFlags(0)


def nvmlShutdown():
    _check_initialized()
    STATE.shutdown_calls += 1
    STATE.initialized -= 1


def nvmlErrorString(result):
    return _ERROR_STRINGS.get(result, "Unknown Error")


def nvmlSystemGetDriverVersion():
    _check_initialized()
    return "550.54.15"


def nvmlSystemGetNVMLVersion():
    _check_initialized()
    return "12.550.54.15"


def nvmlSystemGetCudaDriverVersion():
    _check_initialized()
    return 12040


def nvmlDeviceGetCount():
    _check_initialized()
    return len(STATE.devices)


def nvmlDeviceGetHandleByIndex(index):
    _check_initialized()
    if not 0 <= index < len(STATE.devices):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if index in STATE.handle_errors:
        raise NVMLError(STATE.handle_errors[index])
    return c_nvmlDevice_t(index)


def nvmlDeviceGetName(handle):
    return _device(handle, "nvmlDeviceGetName").name


def nvmlDeviceGetUUID(handle):
    return _device(handle, "nvmlDeviceGetUUID").uuid


def nvmlDeviceGetMemoryInfo(handle, version=None):
    device = _device(handle, "nvmlDeviceGetMemoryInfo")
    return c_nvmlMemory_t(total=device.memory_total, free=device.memory_total - device.memory_used,
                          used=device.memory_used)


def nvmlDeviceGetUtilizationRates(handle):
    """Each call is one sample: walks the configured sequence, then holds its last value."""
    device = _device(handle, "nvmlDeviceGetUtilizationRates")
    step = device.samples_taken
    device.samples_taken += 1
    gpu = device.utilization[min(step, len(device.utilization) - 1)]
    memory = device.memory_utilization[min(step, len(device.memory_utilization) - 1)]
    return c_nvmlUtilization_t(gpu=gpu, memory=memory)


def nvmlDeviceGetTemperature(handle, sensor):
    device = _device(handle, "nvmlDeviceGetTemperature")
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return device.temperature


def nvmlDeviceGetPowerUsage(handle):
    return _device(handle, "nvmlDeviceGetPowerUsage").power_mw


def nvmlDeviceGetEnforcedPowerLimit(handle):
    return _device(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw


def nvmlDeviceGetClockInfo(handle, type):  # noqa: A002 - pynvml's parameter name
    device = _device(handle, "nvmlDeviceGetClockInfo")
    clocks = {NVML_CLOCK_SM: device.clock_sm, NVML_CLOCK_MEM: device.clock_mem, NVML_CLOCK_GRAPHICS: device.clock_sm}
    if type not in clocks:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return clocks[type]


def nvmlDeviceGetCurrentClocksEventReasons(handle):
    return _device(handle, "nvmlDeviceGetCurrentClocksEventReasons").throttle_mask


def nvmlDeviceGetCurrentClocksThrottleReasons(handle):
    return _device(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").throttle_mask


def nvmlDeviceGetTotalEccErrors(handle, errorType, counterType):
    device = _device(handle, "nvmlDeviceGetTotalEccErrors")
    return device.ecc.get((errorType, counterType), 0)


def nvmlDeviceGetCurrPcieLinkGeneration(handle):
    return _device(handle, "nvmlDeviceGetCurrPcieLinkGeneration").pcie_gen


def nvmlDeviceGetCurrPcieLinkWidth(handle):
    return _device(handle, "nvmlDeviceGetCurrPcieLinkWidth").pcie_width


def nvmlDeviceGetPcieThroughput(device, counter):
    fake = _device(device, "nvmlDeviceGetPcieThroughput")
    return fake.pcie_kib[0 if counter == NVML_PCIE_UTIL_TX_BYTES else 1]


def nvmlDeviceGetNvLinkState(device, link):
    fake = _device(device, "nvmlDeviceGetNvLinkState")
    if fake.nvlink_links == 0:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    if not 0 <= link < fake.nvlink_links:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return NVML_FEATURE_ENABLED


def nvmlDeviceGetMigMode(device):
    return list(_device(device, "nvmlDeviceGetMigMode").mig_mode)


def _process_infos(device: FakeDevice, graphics: bool) -> list[nvmlFriendlyObject]:
    return [nvmlFriendlyObject({"pid": p.pid, "usedGpuMemory": p.used_bytes, "gpuInstanceId": 0xFFFFFFFF,
                                "computeInstanceId": 0xFFFFFFFF})
            for p in device.processes if p.graphics == graphics]


def nvmlDeviceGetComputeRunningProcesses(handle):
    return _process_infos(_device(handle, "nvmlDeviceGetComputeRunningProcesses"), graphics=False)


def nvmlDeviceGetGraphicsRunningProcesses(handle):
    return _process_infos(_device(handle, "nvmlDeviceGetGraphicsRunningProcesses"), graphics=True)


configure()
