"""The real NVML path on a real GPU. Skipped, with the reason, where there is none.

Run on a GPU host with:  python -m pytest -m gpu tests/test_gpu_real.py -q
"""

from __future__ import annotations

import os
import time

import pytest

from ml_debug_mcp.core.host.nvml import NVML_MODULE_ENV, read_gpu_report
from ml_debug_mcp.core.host.snapshot import host_status

pytestmark = pytest.mark.gpu
MiB = 2**20


@pytest.fixture(autouse=True)
def real_nvml(monkeypatch):
    monkeypatch.delenv(NVML_MODULE_ENV, raising=False)
    report = read_gpu_report()
    if not report.nvml.available:
        pytest.skip(f"no usable NVIDIA GPU here: {report.nvml.reason_code}: {report.nvml.reason}")
    return report


def test_real_gpus_report_consistent_memory_and_names(real_nvml):
    assert real_nvml.nvml.driver_version and real_nvml.nvml.device_count == len(real_nvml.gpus)
    for gpu in real_nvml.gpus:
        assert gpu.name and gpu.uuid and gpu.uuid.startswith(("GPU-", "MIG-"))
        assert 0 <= gpu.memory_used_bytes <= gpu.memory_total_bytes
        assert gpu.memory_free_bytes <= gpu.memory_total_bytes
        if gpu.utilization_gpu_percent is not None:
            assert 0 <= gpu.utilization_gpu_percent <= 100
        if gpu.throttle_reasons is not None:
            assert all(isinstance(r, str) and r for r in gpu.throttle_reasons)


def test_a_cuda_tensor_shows_up_in_this_process_gpu_memory():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch cannot use CUDA here (CPU build or no visible device)")
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    before = {g.uuid: g.memory_used_bytes for g in read_gpu_report().gpus}
    block = torch.empty(512 * MiB, dtype=torch.uint8, device="cuda:0")
    torch.cuda.synchronize()
    time.sleep(0.2)
    try:
        status = host_status(pid=os.getpid())
        gpu = next(g for g in status.gpus if g.uuid and g.uuid.removeprefix("GPU-") == uuid.removeprefix("GPU-"))
        assert gpu.memory_used_bytes - before[gpu.uuid] >= 400 * MiB
        mine = [p for p in gpu.processes if p.pid == os.getpid()]
        if not mine:
            pytest.skip("NVML lists host pids and this test runs in another PID namespace (container)")
        assert mine[0].training_pid == os.getpid()
        if mine[0].used_memory_bytes is not None:
            assert mine[0].used_memory_bytes >= 512 * MiB
        assert gpu.index in status.processes[0].gpus
    finally:
        del block
        torch.cuda.empty_cache()
