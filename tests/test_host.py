"""host_status end to end: real processes, the fake NVML at the import boundary, and the
diagnosis rules firing on their condition and staying quiet on a healthy busy GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ml_debug_mcp.core.host.nvml import NVML_MODULE_ENV
from ml_debug_mcp.core.host.snapshot import host_status, validate_sampling

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from test_gpu import fake_nvml, real_nvml_library_present  # noqa: E402,F401 - shared fixture
from test_processes import SLEEPER, ZOMBIE_PARENT, spawner, wait_for_state  # noqa: E402,F401 - shared fixture

GiB = 2**30


@pytest.fixture
def trainer(spawner):
    """A real sleeping train.py, the kind of process a GPU would be running."""
    proc, _ = spawner.start("train.py", SLEEPER)
    return proc


def rules(status, gpu_index=None) -> set[str]:
    return {f.rule for f in status.findings if gpu_index is None or f.gpu_index == gpu_index}


def finding(status, rule):
    return next(f for f in status.findings if f.rule == rule)


def is_json_clean(status) -> bool:
    def reject(constant):
        raise ValueError(f"non-finite {constant} in output")
    json.loads(status.model_dump_json(), parse_constant=reject)
    return True


# ---------------------------------------------------------------- caller errors

@pytest.mark.parametrize("samples, interval, message", [
    (0, 0.5, "between 1 and 50"),
    (51, 0.0, "between 1 and 50"),
    (True, 0.5, "whole number"),
    (2.5, 0.5, "whole number"),
    (5, -1, ">= 0"),
    (5, float("nan"), "number of seconds"),
    (50, 1.0, r"spans 49.0s; keep \(samples - 1\) x interval <= 30s"),
])
def test_bad_sampling_arguments_say_what_would_fit(samples, interval, message):
    with pytest.raises(ValueError, match=message):
        validate_sampling(samples, interval)


def test_largest_allowed_window_is_accepted():
    validate_sampling(50, 30 / 49)
    validate_sampling(1, 1000.0)  # one sample never waits, whatever the interval


# ---------------------------------------------------------------- healthy and joined

def test_healthy_busy_gpu_with_its_trainer_is_quiet(fake_nvml, trainer):
    fake_nvml.configure(processes=[(0, trainer.pid, 40 * GiB)])
    status = host_status(samples=3, interval=0.0, pid=trainer.pid)
    gpu = status.gpus[0]
    assert rules(status, gpu_index=0) == set()
    assert gpu.diagnosis.startswith("ok: 95% busy")
    assert gpu.processes[0].training_pid == trainer.pid
    job = status.processes[0]
    assert (job.pid, job.gpus, job.job_gpus, job.gpu_memory_bytes) == (trainer.pid, [0], [0], 40 * GiB)
    assert status.findings == [] and "no findings" in status.summary
    assert is_json_clean(status)


def test_utilization_window_reports_min_mean_max(fake_nvml, trainer):
    fake_nvml.configure(utilization=[90, 10, 50], processes=[(0, trainer.pid, GiB)])
    status = host_status(samples=3, interval=0.0, pid=trainer.pid)
    window = status.gpus[0].utilization_gpu_window
    assert (window.min, window.mean, window.max, window.samples) == (10.0, 50.0, 90.0, 3)
    assert status.window.samples == 3


def test_cpu_percent_is_sampled_over_the_same_window(fake_nvml, spawner):
    busy, _ = spawner.start("train_busy.py", "print('ready', flush=True)\nwhile True: pass\n")
    status = host_status(samples=3, interval=0.2, pid=busy.pid)
    job = status.processes[0]
    assert job.cpu_percent_window.samples == 2 and job.cpu_percent_window.mean > 20
    assert host_status(samples=1, pid=busy.pid).processes[0].cpu_percent_window is None


# ---------------------------------------------------------------- rules: fire and stay quiet

def test_idle_gpu_with_a_training_process_is_flagged(fake_nvml, trainer):
    fake_nvml.configure(utilization=[3, 5, 2, 4, 1], processes=[(0, trainer.pid, 20 * GiB)])
    status = host_status(samples=5, interval=0.0)
    idle = finding(status, "gpu_idle_while_training")
    assert (idle.gpu_index, idle.failure, idle.severity) == (0, "slow_throughput", "warning")
    assert idle.evidence[0].value == 3.0 and idle.confidence >= 0.7
    assert any("num_workers" in f.action for f in idle.fixes) and any(".item()" in f.action for f in idle.fixes)
    assert status.gpus[0].diagnosis.startswith("warning:")


def test_a_single_idle_sample_is_flagged_with_low_confidence_and_a_retry(fake_nvml, trainer):
    fake_nvml.configure(utilization=[4], processes=[(0, trainer.pid, GiB)])
    idle = finding(host_status(), "gpu_idle_while_training")
    assert idle.confidence < 0.5 and idle.next_steps[0].arguments == {"samples": 10, "interval": 0.5}


def test_idle_gpu_held_by_something_else_is_not_a_training_problem(fake_nvml, trainer):
    fake_nvml.configure(utilization=[2], processes=[(0, os.getpid(), GiB)])
    assert "gpu_idle_while_training" not in rules(host_status(pid=trainer.pid))


def test_memory_97_percent_full_is_an_oom_risk(fake_nvml):
    fake_nvml.configure(scenario="memory_full")
    risk = finding(host_status(), "gpu_memory_near_full")
    assert risk.failure == "oom" and risk.evidence[0].value == pytest.approx(97.0, abs=0.1)
    assert any("expandable_segments:True" in f.action for f in risk.fixes)
    fake_nvml.configure(scenario="healthy")
    assert "gpu_memory_near_full" not in rules(host_status())


def test_thermal_throttle_is_flagged_with_the_decoded_reasons(fake_nvml):
    fake_nvml.configure(scenario="thermal")
    throttled = finding(host_status(), "gpu_throttled")
    assert throttled.failure == "slow_throughput" and "hw thermal slowdown" in throttled.message
    assert any(e.metric == "temperature_c" and e.value == 91 for e in throttled.evidence)


def test_power_cap_is_only_informational_and_gpu_idle_bit_is_silent(fake_nvml):
    fake_nvml.configure(scenario="power_cap")
    assert finding(host_status(), "gpu_power_capped").severity == "info"
    fake_nvml.configure(scenario="idle")
    assert not {"gpu_throttled", "gpu_power_capped"} & rules(host_status())


def test_uncorrected_ecc_errors_are_critical(fake_nvml):
    fake_nvml.configure(scenario="ecc")
    ecc = finding(host_status(), "ecc_uncorrected")
    assert ecc.severity == "critical" and ecc.evidence[0].value == 2 and "drain the node" in ecc.fixes[0].action
    fake_nvml.configure(scenario="healthy")
    assert "ecc_uncorrected" not in rules(host_status())


def test_zombie_holding_gpu_memory_is_critical(fake_nvml, spawner):
    parent, line = spawner.start("train.py", ZOMBIE_PARENT)
    zombie = int(line)
    wait_for_state(zombie, psutil.STATUS_ZOMBIE)
    fake_nvml.configure(processes=[(0, zombie, 12 * GiB), (0, parent.pid, 30 * GiB)])
    status = host_status(pid=parent.pid)
    held = finding(status, "zombie_holding_gpu")
    assert (held.severity, held.pid, held.failure) == ("critical", zombie, "oom")
    assert f"pid {parent.pid}" in held.fixes[0].action and "12.0 GiB" in held.message
    assert "training_process_zombie" not in rules(status), "reported once, through the GPU"


def test_stopped_process_holding_a_gpu_is_critical(fake_nvml, trainer):
    os.kill(trainer.pid, signal.SIGSTOP)
    wait_for_state(trainer.pid, psutil.STATUS_STOPPED)
    fake_nvml.configure(utilization=[0], processes=[(0, trainer.pid, 8 * GiB)])
    status = host_status(pid=trainer.pid)
    stopped = finding(status, "stopped_holding_gpu")
    assert stopped.failure == "distributed_hang" and f"kill -CONT {trainer.pid}" in stopped.fixes[0].action
    assert "gpu_idle_while_training" not in rules(status), "a stopped process explains the idle GPU"


def test_stopped_training_process_without_gpu_is_reported(trainer):
    os.kill(trainer.pid, signal.SIGSTOP)
    wait_for_state(trainer.pid, psutil.STATUS_STOPPED)
    assert finding(host_status(pid=trainer.pid), "training_process_stopped").failure == "distributed_hang"


def test_zombie_rank_is_reported_on_its_job(spawner):
    parent, line = spawner.start("train.py", ZOMBIE_PARENT)
    wait_for_state(int(line), psutil.STATUS_ZOMBIE)
    zombie = finding(host_status(pid=parent.pid), "training_process_zombie")
    assert zombie.pid == int(line) and f"parent (pid {parent.pid})" in zombie.message


def test_training_alive_without_a_gpu_process_may_be_on_cpu(fake_nvml, trainer):
    status = host_status(pid=trainer.pid)
    on_cpu = finding(status, "training_not_on_gpu")
    assert on_cpu.failure == "slow_throughput" and on_cpu.pid == trainer.pid
    assert "CUDA context" in on_cpu.message, "a job seconds old gets the benefit of the doubt"
    fake_nvml.configure(processes=[(0, trainer.pid, GiB)])
    assert "training_not_on_gpu" not in rules(host_status(pid=trainer.pid))


def test_gpus_without_any_process_beside_a_running_job_are_noted(fake_nvml, trainer):
    fake_nvml.configure(gpus=2, processes=[(0, trainer.pid, GiB)])
    unused = finding(host_status(pid=trainer.pid), "gpus_left_unused")
    assert unused.severity == "info" and "GPUs [1]" in unused.message
    fake_nvml.configure(gpus=2, processes=[(0, trainer.pid, GiB), (1, os.getpid(), GiB)])
    assert "gpus_left_unused" not in rules(host_status(pid=trainer.pid))


def test_exited_pid_points_at_its_log(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    log = tmp_path / "train.log"
    log.write_text("step 10 loss 2.3\nRuntimeError: CUDA out of memory\n")
    status = host_status(pid=gone.pid, log_path=log)
    assert status.missing_process.message.startswith(f"process {gone.pid} is not running")
    missing = finding(status, "pid_not_running")
    assert str(log) in missing.message and status.log.size_bytes == log.stat().st_size
    assert [s.tool for s in missing.next_steps] == ["tail_log", "classify_failure"]
    assert missing.next_steps[0].arguments == {"path": str(log)}
    assert "tail_log" in status.log.hint


def test_missing_log_path_is_described_not_raised(tmp_path):
    status = host_status(log_path=tmp_path / "nope.log")
    assert status.log.exists is False and "FileNotFoundError" in status.log.reason


def test_log_silent_while_the_job_lives_hints_at_a_hang(fake_nvml, trainer, tmp_path):
    log = tmp_path / "run.log"
    log.write_text("step 100\n")
    fake_nvml.configure(utilization=[100], processes=[(0, trainer.pid, GiB)])
    assert "log_silent" not in rules(host_status(pid=trainer.pid, log_path=log))
    stale = time.time() - 1800
    os.utime(log, (stale, stale))
    silent = finding(host_status(pid=trainer.pid, log_path=log), "log_silent")
    assert silent.failure == "distributed_hang" and silent.confidence == 0.6 and "30 min" in silent.message


def test_no_training_process_is_an_info_with_a_next_step(spawner):
    status = host_status(name_pattern=spawner.token)
    assert finding(status, "no_training_process").severity == "info"


# ---------------------------------------------------------------- no GPU, and the env-configured fake

@pytest.mark.skipif(real_nvml_library_present(), reason="an NVIDIA driver is installed: this checks a driverless host")
def test_cpu_only_host_still_gets_the_process_picture(monkeypatch, trainer):
    monkeypatch.delenv(NVML_MODULE_ENV, raising=False)
    status = host_status(samples=2, interval=0.05)
    assert status.nvml.available is False and status.nvml.reason_code == "library_not_found"
    assert trainer.pid in {p.pid for p in status.processes}
    unavailable = finding(status, "nvml_unavailable")
    assert unavailable.severity == "warning" and "--gpus all" in unavailable.fixes[0].action
    assert status.gpus == [] and is_json_clean(status)


def test_fake_host_is_configurable_from_the_environment_for_a_subprocess():
    env = dict(os.environ, **{NVML_MODULE_ENV: "fake_nvml", "PYTHONPATH": str(TESTS),
                              "FAKE_NVML_GPUS": "8", "FAKE_NVML_SCENARIO": "memory_full"})
    code = "from ml_debug_mcp.core.host.snapshot import host_status; print(host_status().model_dump_json())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    status = json.loads(out)
    assert status["nvml"]["module"] == "fake_nvml" and len(status["gpus"]) == 8
    assert sorted(f["gpu_index"] for f in status["findings"] if f["rule"] == "gpu_memory_near_full") == list(range(8))
