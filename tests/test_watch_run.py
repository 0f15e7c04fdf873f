"""watch_run on real runs written live: a background process trains a real PyTorch loop and writes each record as
it is logged while watch_run follows it through a real MCP client, progress notifications included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import training_runs as tr
from mcp import Client
from mcp_harness import TESTS_DIR
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # each case trains a run in a background process


def start_run(run: str, out: Path, delay: float, trackio: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(TESTS_DIR / "live_training.py"), run, str(out), "--delay", str(delay)]
    cmd += ["--trackio", trackio] if trackio else []
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


class Progress:
    def __init__(self) -> None:
        self.events: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))


async def watch(root: Path, args: dict, progress: Progress | None = None, **config):
    async with Client(create_server(Config(roots=Roots.from_strings([str(root)]), **config))) as client:
        return await client.call_tool("watch_run", args, progress_callback=progress)


@pytest.mark.parametrize("run, failure", [("rl_entropy_collapse", "mode_collapse"),
                                          ("clipped_every_step", "exploding_gradients"),
                                          ("rank_collapse", "rank_collapse")])
async def test_an_early_warning_fires_while_the_run_is_still_training(tmp_path, run, failure):
    log = tmp_path / "train.jsonl"
    log.touch()
    final_step = tr.run(run).records[-1]["step"]
    proc = start_run(run, log, delay=0.05)
    progress = Progress()
    try:
        r = await watch(tmp_path, {"source": "train.jsonl", "seconds": 240, "poll_seconds": 0.5, "idle_seconds": 60},
                        progress)
        still_training = proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    assert not r.is_error, r.content
    report = r.structured_content
    assert report["status"] == "alarm" and report["alarms"][0]["failure"] == failure, report
    alarm = report["alarms"][0]
    assert alarm["kind"] == "early_warning" and alarm["evidence"] and alarm["step"] is not None
    assert report["last_step"] < final_step and still_training  # it returned before the run ended
    assert progress.events and all(total == 240 for _, total, _ in progress.events)
    assert [p for p, _, _ in progress.events] == sorted(p for p, _, _ in progress.events)
    assert "ALARM" in r.content[0].text and failure in r.content[0].text


@pytest.mark.parametrize("run", ["healthy", "rl_healthy", "clipped_healthy"])
async def test_a_healthy_run_gets_a_quiet_answer_and_the_cursor_goes_on_from_there(tmp_path, run):
    log = tmp_path / "train.jsonl"
    log.touch()
    records = tr.run(run).records
    proc = start_run(run, log, delay=0.01)
    progress = Progress()
    try:
        r = await watch(tmp_path, {"source": "train.jsonl", "seconds": 240, "poll_seconds": 0.5, "idle_seconds": 4},
                        progress)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert not r.is_error, r.content
    report = r.structured_content
    assert report["status"] == "quiet" and report["alarms"] == [], report
    assert report["run_state"] == "stopped" and report["last_step"] == records[-1]["step"]
    assert report["new_records"] == len(records), err
    assert len(progress.events) >= 2
    again = await watch(tmp_path, {"source": "train.jsonl", "seconds": 5, "poll_seconds": 0.5, "idle_seconds": 1,
                                   "cursor": report["cursor"]})
    assert again.structured_content["status"] == "quiet" and again.structured_content["new_records"] == 0


async def test_the_cursor_does_not_repeat_an_alarm_already_reported(tmp_path):
    log = tmp_path / "train.jsonl"
    for record in tr.run("rl_entropy_collapse").records:  # a finished run: the alarm fires on the first read
        with log.open("a") as fh:
            fh.write(__import__("json").dumps(record) + "\n")
    first = await watch(tmp_path, {"source": "train.jsonl", "seconds": 5, "idle_seconds": 1})
    assert first.structured_content["alarms"][0]["failure"] == "mode_collapse"
    second = await watch(tmp_path, {"source": "train.jsonl", "seconds": 5, "poll_seconds": 0.5, "idle_seconds": 1,
                                    "cursor": first.structured_content["cursor"]})
    assert second.structured_content["status"] == "quiet", second.structured_content
    other = tmp_path / "other.jsonl"
    other.write_text(log.read_text())
    wrong = await watch(tmp_path, {"source": "other.jsonl", "cursor": first.structured_content["cursor"]})
    garbage = await watch(tmp_path, {"source": "train.jsonl", "cursor": "not-a-cursor"})
    assert wrong.is_error and "belongs to" in wrong.content[0].text
    assert garbage.is_error and "not one watch_run returned" in garbage.content[0].text


async def test_watching_a_trackio_run_as_it_logs(tmp_path):
    store = tmp_path / "store"
    proc = start_run("rl_entropy_collapse", store, delay=0.05, trackio="rl")
    try:
        r = await watch(tmp_path, {"source": "trackio://rl/rl_entropy_collapse", "seconds": 240, "poll_seconds": 0.5,
                                   "idle_seconds": 60}, trackio_dir=store)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert not r.is_error, (r.content, err[-2000:])
    report = r.structured_content
    assert report["status"] == "alarm" and report["alarms"][0]["failure"] == "mode_collapse", report
    assert report["last_step"] < tr.run("rl_entropy_collapse").records[-1]["step"]


async def test_bad_arguments_are_clear_tool_errors(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    too_long = await watch(tmp_path, {"source": "train.jsonl", "seconds": 601})
    missing = await watch(tmp_path, {"source": "nope.jsonl"})
    assert too_long.is_error and "600" in too_long.content[0].text
    assert missing.is_error and "does not exist" in missing.content[0].text
