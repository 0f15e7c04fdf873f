"""Training-process discovery against real processes: sleeping scripts, a torchrun-like tree,
a zombie, a stopped process and a pid that has exited. Every process is cleaned up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ml_debug_mcp.core.host import processes
from ml_debug_mcp.core.host.processes import (
    CpuSampler,
    bound_command,
    discover_training_processes,
    training_match,
)

SLEEPER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    time.sleep(0.2)
"""

# A parent that forks a child which exits at once and is never reaped until SIGTERM.
ZOMBIE_PARENT = """
import os, signal, sys, time
child = os.fork()
if child == 0:
    os._exit(0)
def reap(*_):
    os.waitpid(child, 0)
    sys.exit(0)
signal.signal(signal.SIGTERM, reap)
print(child, flush=True)
while True:
    time.sleep(0.2)
"""

# torchrun-like: starts N rank processes with RANK/LOCAL_RANK/WORLD_SIZE in their environment;
# rank 0 starts a dataloader-like helper that inherits its environment.
LAUNCHER = """
import os, signal, subprocess, sys, time
n, rank_script = int(sys.argv[1]), sys.argv[2]
ranks = []
for r in range(n):
    env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(n))
    ranks.append(subprocess.Popen([sys.executable, "-u", rank_script, str(r)], env=env, stdout=subprocess.PIPE, text=True))
helpers = [int(p.stdout.readline()) for p in ranks]
def stop(*_):
    for p in ranks:
        p.terminate()
    for p in ranks:
        p.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print(" ".join(str(p.pid) for p in ranks) + "|" + " ".join(str(h) for h in helpers if h), flush=True)
while True:
    time.sleep(0.2)
"""

RANK = """
import signal, subprocess, sys, time
helper = None
if sys.argv[1] == "0":
    helper = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(0.2)"])
def stop(*_):
    if helper:
        helper.kill()
        helper.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print(helper.pid if helper else 0, flush=True)
while True:
    time.sleep(0.2)
"""


class Spawner:
    """Starts python scripts from a private folder and always cleans them and their children up."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen] = []

    @property
    def token(self) -> str:
        """A regex matching only this test's processes (their script paths live in its folder)."""
        return re.escape(str(self.folder))

    def start(self, script_name: str, body: str, *args: str) -> tuple[subprocess.Popen, str]:
        path = self.folder / script_name
        path.write_text(textwrap.dedent(body))
        proc = subprocess.Popen([sys.executable, "-u", str(path), *args], stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        first_line = proc.stdout.readline().strip()
        assert proc.poll() is None, f"{script_name} exited early with {proc.returncode}"
        return proc, first_line

    def close(self) -> None:
        for proc in reversed(self.procs):
            try:
                descendants = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                descendants = []
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for child in descendants:
                try:
                    child.kill()
                except psutil.Error:
                    pass
            proc.stdout.close()


@pytest.fixture
def spawner(tmp_path):
    spawned = Spawner(tmp_path)
    yield spawned
    spawned.close()


def wait_for_state(pid: int, state: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while psutil.Process(pid).status() != state:
        assert time.monotonic() < deadline, f"pid {pid} never reached state {state}"
        time.sleep(0.02)


def by_pid(discovery) -> dict:
    return {p.pid: p for p in discovery.processes}


# ---------------------------------------------------------------- command-line heuristic

@pytest.mark.parametrize("cmdline, expected", [
    (["/usr/bin/python3", "train.py", "--lr", "3e-4"], "train.py"),
    (["python", "-u", "scripts/pretrain_gpt.py"], "pretrain_gpt.py"),
    (["/usr/bin/python3", "/usr/local/bin/torchrun", "--nproc_per_node=8", "main.py"], "torchrun"),
    (["torchrun", "--nproc_per_node", "2", "main.py"], "torchrun"),
    (["python", "-m", "torch.distributed.run", "main.py"], "torchrun"),
    (["python3.11", "-m", "mypkg.train_lm"], "training module"),
    (["deepspeed", "--num_gpus", "8", "main.py"], "deepspeed"),
    (["accelerate", "launch", "main.py"], "accelerate launch"),
    (["python", "-X", "faulthandler", "finetune.py"], "finetune.py"),
    (["python", "main.py", "fit", "--config", "c.yaml"], "LightningCLI"),
])
def test_training_command_lines_are_recognised(cmdline, expected):
    reason = training_match(cmdline)
    assert reason is not None and expected in reason


@pytest.mark.parametrize("cmdline", [
    ["tail", "-f", "train.log"],
    ["vim", "train.py"],
    ["python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"],
    ["python", "serve.py", "--port", "8000"],
    ["accelerate", "config"],
    ["python", "-m", "http.server"],
    [],
])
def test_other_command_lines_are_not_training(cmdline):
    assert training_match(cmdline) is None


def test_long_command_lines_are_cut_and_flagged():
    text, cut = bound_command(["python", "train.py"] + [f"--flag{i}=value" for i in range(100)], 80)
    assert cut and len(text) == 80 and text.startswith("python train.py")
    assert bound_command(["python", "train.py"], 80) == ("python train.py", False)


# ---------------------------------------------------------------- discovery with real processes

def test_sleeping_train_script_is_found_with_its_details(spawner):
    proc, _ = spawner.start("train.py", SLEEPER)
    found = by_pid(discover_training_processes())
    assert proc.pid in found
    info = found[proc.pid]
    assert info.state in ("sleeping", "running")
    assert info.rss_bytes and info.rss_bytes > 1_000_000
    assert info.age_seconds is not None and 0 <= info.age_seconds < 60
    assert info.user == psutil.Process().username()
    assert "train.py" in info.command and "train.py" in info.match_reason
    assert info.role == "process"


def test_a_script_not_named_train_is_found_only_by_name_pattern(spawner):
    proc, _ = spawner.start("worker_job.py", SLEEPER)
    assert proc.pid not in by_pid(discover_training_processes())
    found = by_pid(discover_training_processes(name_pattern=spawner.token + ".*worker_job"))
    assert list(found) == [proc.pid]
    assert "name_pattern" in found[proc.pid].match_reason


def test_server_process_and_ancestors_are_never_auto_discovered(spawner):
    proc, _ = spawner.start("bystander.py", SLEEPER)
    # This pattern matches the pytest process and the shell that started it as well as the child.
    pattern = rf"pytest|{spawner.token}|python"
    found = by_pid(discover_training_processes(name_pattern=pattern, limit=10_000))
    excluded = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    assert proc.pid in found
    assert not excluded & set(found)


@pytest.mark.parametrize("parents", ["psutil parent map", "ppid read in the pass"])
def test_torchrun_like_job_lists_ranks_under_the_launcher(spawner, parents, monkeypatch):
    if parents == "ppid read in the pass":  # a platform without psutil's helper takes the other road
        monkeypatch.setattr(processes, "_parent_map", lambda: None)
    rank_script = spawner.folder / "train_rank.py"
    rank_script.write_text(textwrap.dedent(RANK))
    launcher, line = spawner.start("torchrun", LAUNCHER, "2", str(rank_script))
    rank_part, helper_part = line.split("|")
    rank_pids = [int(p) for p in rank_part.split()]
    helper_pids = [int(p) for p in helper_part.split()]

    found = by_pid(discover_training_processes())
    assert launcher.pid in found
    assert not set(rank_pids) & set(found), "ranks belong under their launcher, not at the top level"
    job = found[launcher.pid]
    assert job.role == "launcher" and "torchrun" in job.match_reason
    children = {c.pid: c for c in job.children}
    assert set(rank_pids) <= set(children)
    assert [(children[p].rank, children[p].local_rank, children[p].world_size) for p in rank_pids] == [(0, 0, 2), (1, 1, 2)]
    assert all(children[p].role == "rank" for p in rank_pids)
    assert helper_pids and all(children[h].role == "subprocess" and children[h].rank == 0 for h in helper_pids)


def test_the_parent_map_is_read_in_one_piece_on_linux():
    if not sys.platform.startswith("linux"):
        pytest.skip("psutil's parent map helper is Linux-only")
    parents = processes._parent_map()
    assert parents is not None and parents[os.getpid()] == os.getppid()


def test_zombie_child_is_shown_with_its_state(spawner):
    parent, line = spawner.start("train.py", ZOMBIE_PARENT)
    zombie_pid = int(line)
    wait_for_state(zombie_pid, psutil.STATUS_ZOMBIE)

    job = by_pid(discover_training_processes())[parent.pid]
    zombie = next(c for c in job.children if c.pid == zombie_pid)
    assert zombie.state == "zombie"

    direct = discover_training_processes(pid=zombie_pid)
    assert direct.missing is None
    assert direct.processes[0].state == "zombie"
    assert "zombie" in direct.processes[0].unavailable["command"]


def test_stopped_process_is_reported_stopped(spawner):
    proc, _ = spawner.start("train.py", SLEEPER)
    os.kill(proc.pid, signal.SIGSTOP)
    wait_for_state(proc.pid, psutil.STATUS_STOPPED)
    assert by_pid(discover_training_processes(pid=proc.pid))[proc.pid].state == "stopped"


def test_a_pid_that_exited_is_reported_not_running(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    result = discover_training_processes(pid=proc.pid)
    assert result.processes == []
    assert result.missing is not None and result.missing.pid == proc.pid
    assert result.missing.message == f"process {proc.pid} is not running: it exited or never existed"


def test_listing_is_capped_and_counts_what_it_left_out(spawner):
    pids = {spawner.start(f"train_{i}.py", SLEEPER)[0].pid for i in range(3)}
    result = discover_training_processes(name_pattern=spawner.token, limit=2)
    assert len(result.processes) == 2 and result.omitted == 1
    assert {p.pid for p in result.processes} <= pids


def test_command_lines_are_bounded(spawner):
    proc, _ = spawner.start("train.py", SLEEPER, *[f"--option-{i}=some-long-value" for i in range(40)])
    info = by_pid(discover_training_processes(pid=proc.pid, command_chars=120))[proc.pid]
    assert info.command_truncated and len(info.command) == 120


@pytest.mark.parametrize("pattern, message", [("train[", "not a valid regular expression"), ("  ", "empty"),
                                              ("x" * 300, "under 200")])
def test_bad_name_pattern_is_a_caller_error(pattern, message):
    with pytest.raises(ValueError, match=message):
        discover_training_processes(name_pattern=pattern)


@pytest.mark.parametrize("pid", [0, -3, True, "123"])
def test_bad_pid_is_a_caller_error(pid):
    with pytest.raises(ValueError, match="positive integer"):
        discover_training_processes(pid=pid)


def test_cpu_sampler_tells_a_busy_process_from_a_sleeping_one(spawner):
    busy, _ = spawner.start("train_busy.py", "print('ready', flush=True)\nwhile True: pass\n")
    idle, _ = spawner.start("train_idle.py", SLEEPER)
    discovery = discover_training_processes(name_pattern=spawner.token)
    sampler = CpuSampler(discovery.handles)
    for _ in range(3):
        time.sleep(0.2)
        sampler.sample()
    windows = sampler.windows()
    assert windows[busy.pid].samples == 3
    # A spinning loop gets a real share of a core even on a loaded machine; a sleeper gets ~none.
    assert windows[busy.pid].mean > max(5.0, 3 * windows[idle.pid].mean)


def test_secrets_on_a_command_line_are_not_shown(spawner):
    proc, _ = spawner.start("train.py", SLEEPER, "--hf-token=hf_abc123secret", "--password", "hunter2", "--lr", "3e-4")
    info = by_pid(discover_training_processes())[proc.pid]
    assert "hf_abc123secret" not in info.command and "hunter2" not in info.command
    assert "--hf-token=***" in info.command and "--lr 3e-4" in info.command
