"""tail_log, read_metrics and the file resource, end to end through real MCP clients."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp_types import ListRootsResult, Root

from mcp_harness import http_client, http_server, stdio_client
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = pytest.mark.anyio
TOKEN = "tail-token-0123456789abcdef"

TRACEBACK = """\
Traceback (most recent call last):
  File "train.py", line 88, in <module>
    loss.backward()
  File "/usr/lib/python3/site-packages/torch/_tensor.py", line 521, in backward
    torch.autograd.backward(
RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity; 13.10 GiB already allocated; 1.20 GiB free; 13.50 GiB reserved in total by PyTorch)
"""


def hf_lines(start: int, stop: int) -> str:
    return "".join(
        f"{{'loss': {2.5 - i * 0.002:.4f}, 'grad_norm': {1.0 + (i % 7) * 0.1:.3f}, "
        f"'learning_rate': {5e-05 * (1 - i / 2000):.3e}, 'epoch': {i / 400:.2f}}}\n"
        for i in range(start, stop)
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "old.log").write_text("step 1 | loss 3.0\n")
    os.utime(runs / "old.log", (1_600_000_000, 1_600_000_000))
    (runs / "train.log").write_text(hf_lines(0, 300) + TRACEBACK)
    return tmp_path


def _server(root: Path):
    return create_server(Config(roots=Roots.from_strings([str(root)])))


async def test_tail_gives_lines_format_metrics_errors_and_file_facts(root: Path):
    async with Client(_server(root)) as client:
        result = await client.call_tool("tail_log", {"path": "runs/train.log", "lines": 20})
    assert not result.is_error, result.content
    data = result.structured_content
    assert len(data["lines"]) == 20
    assert data["lines"][-1]["text"].startswith("RuntimeError: CUDA out of memory")
    assert data["format"] == "hf_trainer"
    metrics = {m["name"]: m for m in data["metrics"]}
    assert metrics["loss"]["value"] == pytest.approx(2.5 - 299 * 0.002)
    assert {"grad_norm", "lr"} <= set(metrics)
    oom = [e for e in data["errors"] if "out of memory" in e["message"]]
    assert oom and oom[0]["text"].startswith("Traceback (most recent call last):")
    assert data["size"] == (root / "runs" / "train.log").stat().st_size
    assert data["still_writing"] is True
    text = result.content[0].text
    assert "CUDA out of memory" in text and "loss=" in text and "next_cursor=" in text



async def test_torch2_rank_prefix_with_space_keeps_the_exception(root: Path):
    """torch 2.x writes "[rank3]: Traceback ..."; the space must not hide the exception line."""
    prefixed = "".join(f"[rank3]: {line}\n" for line in TRACEBACK.splitlines())
    (root / "runs" / "ranked.log").write_text("[rank3]: step 1 | loss 3.0\n" + prefixed)
    async with Client(_server(root)) as client:
        result = await client.call_tool("tail_log", {"path": "runs/ranked.log"})
    oom = [e for e in result.structured_content["errors"] if e["kind"] == "cuda_oom"]
    assert oom and oom[0]["exception_type"] == "RuntimeError" and oom[0]["rank"] == 3
    assert oom[0]["message"].startswith("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert oom[0]["text"].splitlines()[1] == '  File "train.py", line 88, in <module>'  # indentation kept

async def test_cursor_returns_exactly_the_appended_lines_then_detects_truncation(root: Path):
    log = root / "runs" / "train.log"
    async with stdio_client("--root", str(root)) as client:
        first = await client.call_tool("tail_log", {"path": str(log), "lines": 5})
        cursor = first.structured_content["next_cursor"]
        with log.open("a") as fh:
            fh.write(hf_lines(300, 310))
        second = await client.call_tool("tail_log", {"path": str(log), "since": cursor})
        new = [line["text"] for line in second.structured_content["lines"]]
        assert new == hf_lines(300, 310).splitlines()
        third = await client.call_tool("tail_log", {"path": str(log), "since": second.structured_content["next_cursor"]})
        assert third.structured_content["lines"] == []
        log.write_text(hf_lines(0, 3))
        reset = await client.call_tool("tail_log", {"path": str(log), "since": second.structured_content["next_cursor"]})
    assert reset.structured_content["reset"] == "truncated"
    assert [line["text"] for line in reset.structured_content["lines"]] == hf_lines(0, 3).splitlines()


async def test_grep_around_pulls_the_whole_traceback(root: Path):
    async with Client(_server(root)) as client:
        result = await client.call_tool("tail_log", {"path": "runs/train.log", "grep": "^Traceback", "around": 6})
    texts = [line["text"] for line in result.structured_content["lines"]]
    assert texts[0].startswith("{'loss'") or texts[0].startswith("Traceback")
    assert any(t.startswith("Traceback") for t in texts) and texts[-1].startswith("RuntimeError")
    assert result.structured_content["matches"] == 1


async def test_directory_lists_logs_newest_first(root: Path):
    async with Client(_server(root)) as client:
        result = await client.call_tool("tail_log", {"path": "runs"})
    files = [Path(f["path"]).name for f in result.structured_content["files"]]
    assert files[:2] == ["train.log", "old.log"]
    assert "newest first" in result.content[0].text


async def test_plot_is_attached_as_a_png_image(root: Path):
    async with Client(_server(root)) as client:
        result = await client.call_tool("tail_log", {"path": "runs/train.log", "lines": 5, "plot": True})
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    png = base64.b64decode(images[0].data)
    assert png.startswith(b"\x89PNG") and len(png) < 300_000


@pytest.mark.parametrize("args, expected", [
    ({"path": "../outside.log"}, "outside the allowed roots"),
    ({"path": "runs/trian.log"}, "does not exist"),
    ({"path": "runs/train.log", "grep": "(unclosed"}, "regular expression"),
    ({"path": "runs/train.log", "since": "not-a-cursor"}, "cursor"),
    ({"path": "runs/train.log", "format": "made_up"}, "Unknown format"),
    ({"path": "runs/train.log", "lines": 0}, "lines"),
])
async def test_bad_input_is_a_clear_tool_error(root: Path, args: dict, expected: str):
    (root.parent / "outside.log").write_text("secret\n")
    async with Client(_server(root)) as client:
        result = await client.call_tool("tail_log", args)
    assert result.is_error
    assert expected.lower() in result.content[0].text.lower()
    assert "Traceback" not in result.content[0].text


async def test_symlink_escape_is_refused_with_the_roots(root: Path, tmp_path_factory):
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.log"
    secret.write_text("password\n")
    (root / "runs" / "link.log").symlink_to(secret)
    async with Client(_server(root)) as client:
        result = await client.call_tool("tail_log", {"path": "runs/link.log"})
    assert result.is_error and str(root) in result.content[0].text and "password" not in result.content[0].text


async def test_binary_and_empty_files_get_honest_answers(root: Path):
    (root / "runs" / "model.bin").write_bytes(bytes(range(256)) * 64)
    (root / "runs" / "empty.log").write_bytes(b"")
    async with Client(_server(root)) as client:
        binary = await client.call_tool("tail_log", {"path": "runs/model.bin"})
        empty = await client.call_tool("tail_log", {"path": "runs/empty.log"})
    assert binary.structured_content["status"] == "binary" and binary.structured_content["lines"] == []
    assert empty.structured_content["status"] == "empty"


async def test_read_metrics_returns_bounded_series_and_stats(root: Path):
    async with Client(_server(root)) as client:
        result = await client.call_tool("read_metrics", {"path": "runs/train.log", "max_points": 50, "plot": True})
        only = await client.call_tool("read_metrics", {"path": "runs/train.log", "names": ["loss", "val_acc"]})
    assert not result.is_error, result.content
    data = result.structured_content
    assert {"loss", "lr", "grad_norm", "epoch"} <= set(data["available"])
    loss = next(s for s in data["series"] if s["name"] == "loss")
    assert len(loss["steps"]) <= 50 and loss["stats"]["count"] == 300 and loss["downsampled"] is True
    assert loss["stats"]["min"] == pytest.approx(2.5 - 299 * 0.002)
    assert any(c.type == "image" for c in result.content)
    names = [s["name"] for s in only.structured_content["series"]]
    assert names == ["loss"]
    assert any("val_acc" in w for w in only.structured_content["warnings"])



@pytest.fixture
def drawn(monkeypatch) -> list[list[list[str]]]:
    """The series keys each read_metrics PNG drew, panel by panel."""
    from ml_debug_mcp.core import plot

    calls: list[list[list[str]]] = []
    real = plot.plot_metrics

    def spy(parsed, names=None, **kwargs):
        calls.append([[s.key for s in panel] for panel in plot.drawn_series(parsed, names)])
        return real(parsed, names=names, **kwargs)

    monkeypatch.setattr(plot, "plot_metrics", spy)
    return calls


def _jsonl_and_ranks(runs: Path) -> None:
    (runs / "wandb.jsonl").write_text("".join(
        f'{{"_step": {s}, "train/loss": {3 - s / 100}, "val_loss": {3.1 - s / 100}, "grad_norm": 0.5, "lr": 1e-4}}\n'
        for s in range(50)))
    (runs / "ranks.log").write_text("".join(
        f"[rank{r}]:step {s} | loss {2 - s / 100 + r:.3f} | grad_norm 0.5\n" for s in range(50) for r in range(4)))
    shutil.copy(Path(__file__).parent / "fixtures" / "logs" / "keras3.log", runs / "keras.log")


@pytest.mark.parametrize("args, panels", [
    ({"path": "runs/keras.log", "names": ["val_loss", "val_accuracy"]}, [["eval_loss"], ["eval_accuracy"]]),
    ({"path": "runs/wandb.jsonl", "names": ["val_loss", "train/loss", "grad_norm"]},
     [["loss", "eval_loss"], ["grad_norm"]]),
    ({"path": "runs/ranks.log", "rank": 3}, [["loss@rank3"], ["grad_norm@rank3"]]),
])
async def test_read_metrics_plot_draws_the_selected_series(root: Path, drawn, args: dict, panels):
    """The PNG follows the answer's aliases and rank filter, not the raw names or every rank."""
    _jsonl_and_ranks(root / "runs")
    async with Client(_server(root)) as client:
        result = await client.call_tool("read_metrics", {**args, "plot": True})
    assert not result.is_error, result.content
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and base64.b64decode(images[0].data).startswith(b"\x89PNG")
    assert drawn == [panels]
    assert sorted(key for panel in panels for key in panel) == sorted(
        s["name"] if s["rank"] is None else f'{s["name"]}@rank{s["rank"]}' for s in result.structured_content["series"])


async def test_file_resource_gives_the_tail_inside_roots_and_points_at_tail_log_outside(root: Path):
    log = root / "runs" / "train.log"
    async with Client(_server(root)) as client:
        content = await client.read_resource(f"file://{log}")
        assert content.contents[0].text.rstrip().endswith(TRACEBACK.strip().splitlines()[-1])
        with pytest.raises(Exception) as info:
            await client.read_resource("file:///etc/hostname")
        same = await client.read_resource(f"file://localhost{log}")  # RFC 8089's named local host
        assert same.contents[0].text == content.contents[0].text
        os.mkfifo(root / "runs" / "pipe.log")
        with pytest.raises(Exception) as fifo:
            await client.read_resource(f"file://{root / 'runs' / 'pipe.log'}")
    assert "tail_log" in str(info.value) and "outside the allowed roots" in str(info.value)
    assert "not a regular file" in str(fifo.value)


async def test_roots_offered_by_the_client_are_allowed(root: Path, tmp_path_factory):
    other = tmp_path_factory.mktemp("client-root")
    (other / "run.log").write_text("step 5 | loss 1.25\n")

    async def list_roots(context):
        return ListRootsResult(roots=[Root(uri=other.as_uri(), name="client project")])

    server = _server(root)
    async with Client(server, mode="legacy", list_roots_callback=list_roots) as client:
        allowed = await client.call_tool("tail_log", {"path": str(other / "run.log")})
    async with Client(server, mode="legacy") as client:
        refused = await client.call_tool("tail_log", {"path": str(other / "run.log")})
    assert not allowed.is_error and allowed.structured_content["lines"][0]["text"] == "step 5 | loss 1.25"
    assert refused.is_error and "outside the allowed roots" in refused.content[0].text


async def test_tail_over_http_with_a_token(root: Path):
    with http_server("--root", str(root), env={"ML_DEBUG_MCP_TOKEN": TOKEN}) as srv:
        async with http_client(srv.url, token=TOKEN) as client:
            result = await client.call_tool("tail_log", {"path": "runs/train.log", "lines": 3})
    assert not result.is_error and len(result.structured_content["lines"]) == 3


async def test_long_parses_report_progress_to_the_client(root: Path):
    big = root / "runs" / "big.log"
    big.write_text("".join(f"step {i} | loss {2 - i * 1e-6:.5f} | lr 1e-4\n" for i in range(200_000)))
    updates: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total))

    async with Client(_server(root)) as client:
        result = await client.call_tool("read_metrics", {"path": "runs/big.log"}, progress_callback=on_progress)
        diagnosis = await client.call_tool("classify_failure", {"log_path": "runs/big.log"},
                                           progress_callback=on_progress)
    assert not result.is_error and not diagnosis.is_error
    assert len(updates) >= 2 and updates[-1][0] == updates[-1][1] == big.stat().st_size


async def test_a_catastrophic_grep_pattern_cannot_freeze_the_server(root: Path):
    """`^(a+)+$` backtracks exponentially in Python's re; user patterns run on RE2 instead."""
    (root / "runs" / "evil.log").write_text("a" * 60 + "!\n" + "step 1 | loss 2.0\n")
    async with Client(_server(root)) as client:
        with anyio.fail_after(30):
            result = await client.call_tool("tail_log", {"path": "runs/evil.log", "grep": "^(a+)+$"})
            backref = await client.call_tool("tail_log", {"path": "runs/evil.log", "grep": "(a)\\1"})
            gpu = await client.call_tool("gpu_status", {"name_pattern": "(x+x+)+y"})
    assert not result.is_error and result.structured_content["matches"] == 0
    assert backref.is_error and "backreferences" in backref.content[0].text
    assert not gpu.is_error


async def test_files_discovered_inside_a_run_directory_cannot_link_out_of_it(root: Path, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.csv").write_text("step,secret_api_key\n1,12345\n")
    (outside / "secret.log").write_text("step 1 | loss 9.99\n")
    run = root / "runs" / "lightning"
    run.mkdir()
    (run / "metrics.csv").symlink_to(outside / "secret.csv")
    (root / "runs" / "zz_link.log").symlink_to(outside / "secret.log")
    async with Client(_server(root)) as client:
        metrics = await client.call_tool("read_metrics", {"path": "runs/lightning"})
        listing = await client.call_tool("tail_log", {"path": "runs"})
    assert "12345" not in str(metrics.structured_content) and "secret_api_key" not in str(metrics.structured_content)
    assert any("outside" in w for w in metrics.structured_content["warnings"])
    assert "zz_link.log" not in str(listing.structured_content["files"])
