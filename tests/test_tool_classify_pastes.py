"""classify_failure on what people paste, through a real MCP client: real-world excerpts from the dev split as
log_path and as error_text, and the bad input a user will send (binary, empty, huge, another language)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = pytest.mark.anyio
DEV = Path(__file__).resolve().parent / "eval" / "realworld" / "dev.jsonl"


def dev_case(case_id: str) -> dict:
    for line in DEV.read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        if case["id"] == case_id:
            return case
    raise KeyError(case_id)


@pytest.fixture
def server(tmp_path: Path):
    return create_server(Config(roots=Roots.from_strings([str(tmp_path)])))


@pytest.mark.parametrize("case_id", [
    "err-device-conceptexpress-bolditalic",   # markdown bold and italics around the message
    "err-oom-paddlevideo-line",               # PaddlePaddle's own OOM wording: the family tier
    "num-litgpt-628-codellama-jumps-to-11",   # nine metric lines: a jump that stays up
    "col-sentigan-adv-same-sentence",         # quoted generated samples
])
async def test_real_excerpts_are_read_as_a_file_and_as_pasted_text(server, tmp_path: Path, case_id: str):
    case = dev_case(case_id)
    (tmp_path / "pasted.log").write_text(case["text"], encoding="utf-8")
    async with Client(server) as client:
        for arguments in ({"log_path": "pasted.log"}, {"error_text": case["text"]}):
            result = await client.call_tool("classify_failure", arguments)
            assert not result.is_error, result.content[0].text
            top = result.structured_content["hypotheses"][0]
            assert top["failure"] in [case["label"], *case["accept"]], (arguments.keys(), top)
            assert top["evidence"] and result.content[0].text.startswith("Most likely")


@pytest.mark.parametrize("text, says", [
    ("\x00\x01\x02\x03\xfe\xff" * 3000, "binary"),
    ("   ", "no evidence for any failure"),
    ("模型训练一切正常，没有任何报错。\n" * 40, "no evidence for any failure"),
])
async def test_bad_pastes_get_a_clear_answer(server, text: str, says: str):
    async with Client(server) as client:
        result = await client.call_tool("classify_failure", {"error_text": text})
    assert not result.is_error
    assert result.structured_content["hypotheses"] == []
    assert says in result.content[0].text


async def test_a_20_mb_paste_is_answered_from_its_end(server):
    text = "noise line without meaning\n" * 800_000 + "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    async with Client(server) as client:
        result = await client.call_tool("classify_failure", {"error_text": text})
    assert not result.is_error
    assert result.structured_content["hypotheses"][0]["failure"] == "oom"
    assert any("only its last" in n for n in result.structured_content["input_notes"])
