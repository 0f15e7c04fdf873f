"""The factory contract on model files written the way people write them, and check_shapes at real sizes.

Through a real MCP client (in memory, real worker subprocesses) where the tool's wording matters; the
worker's analysis in this process (worker_main.run) where only the numbers do.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from mcp import Client
from safetensors.torch import save_file
from torch import nn

from ml_debug_mcp.core.model import worker_main
from ml_debug_mcp.core.model.contract import ContractError, loss_form
from ml_debug_mcp.core.model.shapes import report_from_trace
from ml_debug_mcp.core.model.worker import contract_text
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
REAL = str(MODELS / "real_world.py")
BIG = str(MODELS / "big.py")


def _server(*roots: Path, **settings):
    return create_server(Config(roots=Roots.from_strings([str(r) for r in roots]), **settings))


def _run(task: dict) -> dict:
    raw = worker_main.run(task, worker_main.Channel(io.StringIO(), "marker"))
    return json.loads(json.dumps(worker_main.strict_json(raw), allow_nan=False))


def _shapes(attr: str, file: str = BIG, **extra):
    raw = _run({"op": "shapes", "entry": {"file": file, "attr": attr}, **extra})
    return report_from_trace({**raw, "checkpoint_path": extra.get("checkpoint") or ""}, attr)


# ------------------------------------------------------------------------------------------------
# The loss_fn form, from the signature


def _model_batch(model, batch): ...
def _output_target(output, target): ...
def _annotated(m: nn.Module, b): ...
def _unclear(a, b): ...
def _one(logits): ...
def _three(model, batch, extra): ...


@pytest.mark.parametrize("fn,form", [
    (_model_batch, "model_batch"), (_output_target, "output_target"), (_annotated, "model_batch"),
    (_unclear, "output_target"), (_one, "output"), (nn.CrossEntropyLoss(), "output_target"),
    (nn.functional.mse_loss, "output_target"), (lambda policy, rollout: 0, "model_batch"),
])
def test_the_loss_form_is_read_from_names_annotations_and_arity(fn, form: str) -> None:
    assert loss_form(fn)[0] == form


def test_a_loss_fn_needing_three_arguments_says_what_is_accepted() -> None:
    with pytest.raises(ContractError, match="needs 3 arguments") as info:
        loss_form(_three)
    assert "loss_fn(model, batch) -> loss" in str(info.value) and "Example:" in str(info.value)


def test_the_contract_is_documented_once_and_shown_in_every_tool_description() -> None:
    text = contract_text()
    assert "loss_fn(model, batch)" in text and "training_step(batch, 0)" in text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert text in readme


# ------------------------------------------------------------------------------------------------
# analyze_gradients on real-world model files, both loss_fn forms, through an MCP client


pytestmark = pytest.mark.anyio


async def test_models_written_independently_are_analysed_in_both_factory_forms() -> None:
    cases = {"two_tower_step": "loss_fn(model, batch)", "two_tower_pair": "loss_fn(output, target)",
             "policy_step": "loss_fn(model, batch)", "policy_pair": "loss_fn(output, target)"}
    async with Client(_server(MODELS)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name in ("analyze_gradients", "check_shapes", "create_smoke_test"):
            assert contract_text() in tools[name].description
        for attr, form in cases.items():
            result = await client.call_tool("analyze_gradients", {"entrypoint": f"real_world.py:{attr}", "steps": 2})
            assert not result.is_error, (attr, result.content[0].text)
            report = result.structured_content["reports"][0]
            assert report["settings"]["loss_form"].startswith(form), (attr, report["settings"])
            assert report["settings"]["device"] == "cpu" and f"loss as {form}" in result.content[0].text
            assert result.structured_content["verdict"] == "healthy", (attr, result.content[0].text)
            assert all(layer["grad_norm"] and layer["grad_norm"] > 0 for layer in report["layers"]), attr
        for attr in ("deep_sigmoid_step", "deep_sigmoid_pair"):
            result = await client.call_tool("analyze_gradients", {"entrypoint": f"real_world.py:{attr}"})
            assert result.structured_content["verdict"] == "vanishing_gradients", result.content[0].text
        quiet = await client.call_tool("analyze_gradients", {"entrypoint": "real_world.py:healthy_relu_step"})
        assert quiet.structured_content["verdict"] == "healthy", quiet.content[0].text


async def test_a_lightning_module_and_a_hugging_face_model_from_a_config() -> None:
    pytest.importorskip("pytorch_lightning")
    pytest.importorskip("transformers")
    async with Client(_server(MODELS, worker_timeout=240)) as client:
        lightning = await client.call_tool("analyze_gradients", {"entrypoint": "real_world.py:lightning_classifier"})
        assert not lightning.is_error, lightning.content[0].text
        report = lightning.structured_content["reports"][0]
        assert report["settings"]["loss_form"].startswith("training_step(batch, 0)")
        assert {layer["name"] for layer in report["layers"]} >= {"net.0.weight", "net.2.weight"}
        hf = await client.call_tool("check_shapes", {"entrypoint": "real_world.py:hf_gpt2"})
        assert not hf.is_error, hf.content[0].text
        outputs = {spec["path"]: spec["shape"] for spec in hf.structured_content["output"]}
        assert hf.structured_content["status"] == "ok" and outputs["logits"] == [2, 16, 128], outputs
    hf_grads = _run({"op": "gradients", "entry": {"file": REAL, "attr": "hf_gpt2"}, "steps": 1})
    assert hf_grads["loss_form"].startswith("default loss")  # labels in the batch: the model's own output.loss
    assert 4.0 < hf_grads["history"][0]["loss"] < 6.0  # ~ln(128) for an untrained LM, not an MSE


@pytest.mark.parametrize("attr,dtype", [("bf16_mlp", "bfloat16"), ("fp16_mlp", "float16")])
def test_half_precision_models_are_measured_in_float32(attr: str, dtype: str) -> None:
    raw = _run({"op": "gradients", "entry": {"file": REAL, "attr": attr}, "steps": 2})
    assert raw["param_dtype"] == dtype
    norms = [layer["grad_norm"] for layer in raw["layers"]]
    assert all(isinstance(n, float) and 0 < n < 1e3 for n in norms), norms


async def test_a_named_gpu_is_opt_in_and_a_host_without_one_says_so() -> None:
    async with Client(_server(MODELS)) as client:
        result = await client.call_tool("analyze_gradients", {"entrypoint": "real_world.py:policy_step",
                                                               "device": "cuda:1"})
        if torch.cuda.device_count() < 2:
            assert result.is_error and "sees no CUDA GPU" in result.content[0].text
        bad = await client.call_tool("analyze_gradients", {"entrypoint": "real_world.py:policy_step",
                                                            "device": "gpu1"})
        assert bad.is_error and "'cuda:1'" in bad.content[0].text


@pytest.mark.parametrize("tool,attr,words", [
    ("analyze_gradients", "needs_config", ["needs the arguments config", "def make(): return needs_config(...)"]),
    ("analyze_gradients", "returns_a_dict", ["returned a builtins.dict", "Accepted forms", "Example:"]),
    ("analyze_gradients", "three_argument_loss", ["loss_of_three(model, batch, extra) needs 3 arguments"]),
    ("analyze_gradients", "vector_loss", ["must be a scalar tensor", "loss_fn(model, batch) returned", "[2, 1]"]),
    ("check_shapes", "reads_values_while_building", ["read a tensor's value", "meta device", "meta=false",
                                                      "real_world.py"]),
])
async def test_factories_outside_the_contract_get_an_error_that_says_what_to_change(tool: str, attr: str,
                                                                                   words: list[str]) -> None:
    async with Client(_server(MODELS)) as client:
        result = await client.call_tool(tool, {"entrypoint": f"real_world.py:{attr}"})
        text = result.content[0].text
        assert result.is_error and all(w in text for w in words), text
        if attr == "reads_values_while_building":
            real = await client.call_tool(tool, {"entrypoint": f"real_world.py:{attr}", "meta": False})
            assert not real.is_error and not real.structured_content["meta"], real.content[0].text


# ------------------------------------------------------------------------------------------------
# check_shapes at real sizes, on the meta device


async def test_billion_parameter_models_trace_within_a_small_memory_cap() -> None:
    """1.6B and 6.7B parameters would need 6.5 and 27 GB as real float32; the worker gets 1.5 GiB."""
    async with Client(_server(MODELS, worker_memory_mb=1536, worker_timeout=240)) as client:
        for attr, blocks, params in (("gpt2_xl", "blocks.0-47", 1_638_022_400), ("llama_7b", "layers.0-31", None)):
            result = await client.call_tool("check_shapes", {"entrypoint": f"big.py:{attr}"})
            assert not result.is_error, result.content[0].text
            report = result.structured_content
            assert report["status"] == "ok" and report["meta"] and report["depends_on"] is None
            row = next(r for r in report["table"] if r["name"] == blocks)
            assert row["count"] == len(range(int(blocks.split("-")[1]) + 1))
            assert row["inputs"] == row["outputs"] == [[1, 128, 1600 if attr == "gpt2_xl" else 4096]]
            assert f"{blocks}" in result.content[0].text and "×" in result.content[0].text
            if params:
                assert report["total_params"] == params
            else:
                assert 6.5e9 < report["total_params"] < 7e9


@pytest.mark.parametrize("attr,status,depends", [
    ("hard_batch", "ok", "batch"),  # right only at batch 4: batch 5 fails
    ("hard_batch_at_3", "failed", "batch"),  # fails at 3, passes at 4
    ("fixed_length_at_17", "failed", "sequence"),  # passes at length 16
    ("wrong_width", "failed", "neither"),
    ("tiny_gpt", "ok", None),
])
def test_which_dimension_a_mismatch_follows(attr: str, status: str, depends: str | None) -> None:
    report = _shapes(attr)
    assert (report.status, report.depends_on) == (status, depends), (report.summary, report.variants)
    if depends:
        words = "does not depend on the batch size or the sequence length" if depends == "neither" else depends
        assert any(words in note for note in report.notes), report.notes


def test_an_op_without_a_meta_kernel_runs_real_for_that_module_only() -> None:
    report = _shapes("custom_op_model")
    assert report.status == "ok" and report.meta and report.output[0].shape == [3, 2]
    assert len(report.fallback) == 1 and report.fallback[0].startswith("1 (Softsign)")
    assert any("no meta kernel" in note for note in report.notes)
    values = _shapes("reads_values_in_forward")  # the model's own code reads a value: the whole model runs real
    assert values.status == "ok" and not values.meta and "whole model" in " ".join(values.fallback)


# ------------------------------------------------------------------------------------------------
# State-dict compatibility


def _tiny_state(prefix: str = "") -> dict:
    torch.manual_seed(0)
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("big_models", BIG)
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    model, _ = module.tiny_gpt()
    return {prefix + k: v for k, v in model.state_dict().items()}


def test_checkpoints_are_diffed_key_by_key_with_the_usual_causes(tmp_path: Path) -> None:
    save_file(_tiny_state(), tmp_path / "same.safetensors")
    same = _shapes("tiny_gpt", checkpoint=str(tmp_path / "same.safetensors")).checkpoint
    assert same.compatible and not same.dtype_mismatches and same.model_keys == same.checkpoint_keys

    save_file(_tiny_state("module."), tmp_path / "ddp.safetensors")
    ddp = _shapes("tiny_gpt", checkpoint=str(tmp_path / "ddp.safetensors")).checkpoint
    assert not ddp.compatible and ddp.missing_count == ddp.unexpected_count == ddp.model_keys
    assert "'module.' prefix" in ddp.causes[0] and "DistributedDataParallel" in ddp.causes[0]

    torch.save(_tiny_state("_orig_mod."), tmp_path / "compiled.pt")
    compiled = _shapes("tiny_gpt", checkpoint=str(tmp_path / "compiled.pt")).checkpoint
    assert "torch.compile" in compiled.causes[0]

    vocab = _shapes("tiny_gpt_bigger_vocab", checkpoint=str(tmp_path / "same.safetensors"))
    c = vocab.checkpoint
    assert {m.key for m in c.shape_mismatches} == {"wte.weight", "lm_head.weight"}
    assert "vocabulary size changed (100 in the checkpoint vs 112 in the model" in c.causes[0]

    torch.save({"state_dict": {k: v.half() for k, v in _tiny_state().items()}}, tmp_path / "half.ckpt")
    half = _shapes("tiny_gpt", checkpoint=str(tmp_path / "half.ckpt")).checkpoint
    assert half.compatible and len(half.dtype_mismatches) == half.model_keys  # read from a Lightning-style nest
    assert "differ only in dtype" in half.causes[0] and half.dtype_mismatches[0].checkpoint.endswith("float16")
