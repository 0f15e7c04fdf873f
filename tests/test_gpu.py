"""NVML reading against the fake bindings (injected at the import boundary) and the real
pynvml on this driverless host."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import psutil
import pytest

from ml_debug_mcp.core.host.nvml import NVML_MODULE_ENV, decode_throttle_reasons, read_gpu_report

TESTS = Path(__file__).parent
GiB = 2**30


@pytest.fixture
def fake_nvml(monkeypatch):
    """The simulated host, reset to one healthy GPU; configure it per test."""
    monkeypatch.syspath_prepend(str(TESTS))
    for name in [n for n in os.environ if n.startswith("FAKE_NVML_")]:
        monkeypatch.delenv(name)
    import fake_nvml as module

    monkeypatch.setenv(NVML_MODULE_ENV, "fake_nvml")
    module.configure()
    return module


def real_nvml_library_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- the fake is faithful

def test_fake_mirrors_the_real_pynvml_api(fake_nvml):
    import pynvml

    public = [n for n in dir(fake_nvml) if n.startswith(("nvml", "NVML"))]
    missing = [n for n in public if not hasattr(pynvml, n)]
    assert not missing, f"fake_nvml invents names pynvml does not have: {missing}"
    for name in public:
        value = getattr(fake_nvml, name)
        if isinstance(value, int):
            assert value == getattr(pynvml, name), name
    for module in (fake_nvml, pynvml):
        error = module.NVMLError(module.NVML_ERROR_NOT_SUPPORTED)
        assert type(error) is module.NVMLError_NotSupported and error.value == module.NVML_ERROR_NOT_SUPPORTED
        assert isinstance(module.NVMLError_DriverNotLoaded(), module.NVMLError)
        assert module.NVMLError_LibRmVersionMismatch().value == 18
        assert str(module.NVMLError_NoPermission()) == "Insufficient Permissions"


def test_fake_refuses_calls_before_init_like_the_real_library(fake_nvml):
    with pytest.raises(fake_nvml.NVMLError_Uninitialized):
        fake_nvml.nvmlDeviceGetCount()


# ---------------------------------------------------------------- reading a GPU

def test_every_field_of_a_healthy_gpu_is_read(fake_nvml):
    report = read_gpu_report()
    assert report.nvml.available and report.nvml.driver_version == "550.54.15"
    assert report.nvml.cuda_driver_version == "12.4" and report.nvml.device_count == 1
    gpu = report.gpus[0]
    device = fake_nvml.STATE.devices[0]
    assert (gpu.index, gpu.name, gpu.uuid) == (0, device.name, device.uuid)
    assert (gpu.memory_used_bytes, gpu.memory_total_bytes) == (device.memory_used, device.memory_total)
    assert gpu.memory_used_bytes + gpu.memory_free_bytes == gpu.memory_total_bytes
    assert gpu.memory_used_percent == pytest.approx(60.0)
    assert (gpu.utilization_gpu_percent, gpu.utilization_memory_percent) == (95, 60)
    assert (gpu.temperature_c, gpu.power_draw_w, gpu.power_limit_w) == (64, 520.0, 700.0)
    assert (gpu.clock_sm_mhz, gpu.clock_memory_mhz) == (1980, 2619)
    assert gpu.throttle_reasons == [] and gpu.throttle_mask == 0
    assert gpu.ecc_errors.volatile_uncorrected == 0 and gpu.ecc_errors.aggregate_corrected == 0
    assert (gpu.pcie_link_generation, gpu.pcie_link_width) == (5, 16)
    assert gpu.mig_mode == "disabled"
    assert gpu.nvlink_links is None and "not supported" in gpu.unavailable["nvlink_links"]
    assert set(gpu.unavailable) == {"nvlink_links", "nvlink_active_links", "pcie_tx_kib_per_s", "pcie_rx_kib_per_s"}


def test_pcie_throughput_is_read_only_on_request(fake_nvml):
    gpu = read_gpu_report(pcie_throughput=True).gpus[0]
    assert (gpu.pcie_tx_kib_per_s, gpu.pcie_rx_kib_per_s) == fake_nvml.STATE.devices[0].pcie_kib
    assert "pcie_tx_kib_per_s" not in gpu.unavailable


def test_eight_gpu_host_with_nvlink(fake_nvml):
    fake_nvml.configure(gpus=8)
    gpus = read_gpu_report().gpus
    assert [g.index for g in gpus] == list(range(8))
    assert len({g.uuid for g in gpus}) == 8
    assert all(g.nvlink_links == 18 and g.nvlink_active_links == 18 for g in gpus)


def test_one_unsupported_field_never_loses_the_others(fake_nvml):
    fake_nvml.configure(not_supported=["nvmlDeviceGetTemperature", "nvmlDeviceGetTotalEccErrors",
                                       "nvmlDeviceGetPowerUsage", "nvmlDeviceGetMigMode"])
    gpu = read_gpu_report().gpus[0]
    assert gpu.temperature_c is None and "not supported" in gpu.unavailable["temperature_c"]
    assert gpu.power_draw_w is None and "nvmlDeviceGetPowerUsage" in gpu.unavailable["power_draw_w"]
    assert gpu.ecc_errors.volatile_uncorrected is None
    assert "not supported" in gpu.unavailable["ecc_errors.aggregate_uncorrected"]
    assert gpu.mig_mode is None and "mig_mode" in gpu.unavailable
    assert gpu.power_limit_w == 700.0 and gpu.memory_total_bytes > 0 and gpu.utilization_gpu_percent == 95


def test_permission_denied_on_one_process_list_keeps_the_other(fake_nvml):
    fake_nvml.configure(processes=[(0, os.getpid(), GiB, True)])
    fake_nvml.STATE.devices[0].errors["nvmlDeviceGetComputeRunningProcesses"] = fake_nvml.NVML_ERROR_NO_PERMISSION
    gpu = read_gpu_report().gpus[0]
    assert "permission denied" in gpu.unavailable["processes_compute"]
    assert [(p.pid, p.type) for p in gpu.processes] == [(os.getpid(), "graphics")]


def test_throttle_reasons_decode_to_words():
    assert decode_throttle_reasons(0) == []
    assert decode_throttle_reasons(0x60) == ["sw thermal slowdown", "hw thermal slowdown"]
    assert decode_throttle_reasons(0x1 | 0x4 | 0x80) == ["gpu idle", "sw power cap", "hw power brake slowdown"]
    assert decode_throttle_reasons(0x8 | 0x10000) == ["hw slowdown", "unknown (0x10000)"]


def test_older_bindings_fall_back_to_the_throttle_reasons_call(fake_nvml, monkeypatch):
    monkeypatch.delattr(fake_nvml, "nvmlDeviceGetCurrentClocksEventReasons")
    fake_nvml.configure(scenario="thermal")
    assert read_gpu_report().gpus[0].throttle_reasons == ["sw thermal slowdown", "hw thermal slowdown"]


def test_gpu_processes_are_named_through_psutil(fake_nvml):
    gone = psutil.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    fake_nvml.configure(processes=[(0, os.getpid(), 3 * GiB), (0, os.getpid(), GiB, True), (0, gone.pid, None)])
    processes = {p.pid: p for p in read_gpu_report().gpus[0].processes}
    me = processes[os.getpid()]
    assert me.visible and me.type == "compute+graphics" and me.used_memory_bytes == 3 * GiB
    assert me.user == psutil.Process().username() and "pytest" in me.command
    ghost = processes[gone.pid]
    assert not ghost.visible and ghost.used_memory_bytes is None and "PID namespace" in ghost.reason


def test_gpu_process_listing_is_capped_largest_first(fake_nvml):
    from ml_debug_mcp.core.host.nvml import MAX_GPU_PROCESSES

    count = MAX_GPU_PROCESSES + 7
    fake_nvml.configure(processes=[(0, 4_000_000 + i, (i + 1) * 2**20) for i in range(count)])
    gpu = read_gpu_report().gpus[0]
    assert len(gpu.processes) == MAX_GPU_PROCESSES and gpu.processes_omitted == 7
    assert gpu.processes[0].used_memory_bytes == count * 2**20


def test_a_lost_gpu_is_reported_and_the_others_still_read(fake_nvml):
    fake_nvml.configure(gpus=2, scenario="gpu_lost")
    first, lost = read_gpu_report().gpus
    assert first.memory_total_bytes > 0
    assert lost.index == 1 and lost.name is None and "lost" in lost.unavailable["handle"]


# ---------------------------------------------------------------- NVML unusable as a whole

@pytest.mark.parametrize("error, code, words", [
    ("LIBRARY_NOT_FOUND", "library_not_found", "--gpus all"),
    ("DRIVER_NOT_LOADED", "driver_not_loaded", "modprobe nvidia"),
    ("LIB_RM_VERSION_MISMATCH", "lib_rm_version_mismatch", "Reboot"),
    ("NO_PERMISSION", "no_permission", "video"),
    ("UNKNOWN", "nvml_error", "nvidia-smi"),
])
def test_init_failures_become_a_structured_answer(fake_nvml, error, code, words):
    fake_nvml.configure(init_error=error)
    report = read_gpu_report()
    assert report.gpus == []
    assert (report.nvml.available, report.nvml.reason_code) == (False, code)
    assert words in report.nvml.fix and report.nvml.reason
    assert fake_nvml.STATE.shutdown_calls == 0, "nothing to shut down when init failed"


def test_zero_devices_is_not_available_and_still_shuts_down(fake_nvml):
    fake_nvml.configure(gpus=0)
    report = read_gpu_report()
    assert (report.nvml.available, report.nvml.reason_code, report.nvml.device_count) == (False, "no_devices", 0)
    assert fake_nvml.STATE.initialized == 0 and fake_nvml.STATE.shutdown_calls == 1


def test_every_session_is_shut_down(fake_nvml):
    for _ in range(3):
        read_gpu_report()
    assert fake_nvml.STATE.init_calls == fake_nvml.STATE.shutdown_calls == 3
    assert fake_nvml.STATE.initialized == 0


def test_missing_bindings_module_is_reported_with_the_install_command(monkeypatch):
    monkeypatch.setenv(NVML_MODULE_ENV, "no_such_nvml_module_anywhere")
    report = read_gpu_report()
    assert (report.nvml.available, report.nvml.reason_code) == (False, "nvml_not_installed")
    assert "pip install nvidia-ml-py" in report.nvml.fix


@pytest.mark.skipif(real_nvml_library_present(), reason="an NVIDIA driver is installed: this checks a driverless host")
def test_real_pynvml_without_a_driver_says_library_not_found(monkeypatch):
    monkeypatch.delenv(NVML_MODULE_ENV, raising=False)
    report = read_gpu_report()
    assert report.nvml.module == "pynvml"
    assert (report.nvml.available, report.nvml.reason_code) == (False, "library_not_found")
    assert "libnvidia-ml.so.1" in report.nvml.reason and report.gpus == []
