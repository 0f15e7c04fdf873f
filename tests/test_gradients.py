"""analyze_gradients' analysis: real models, real training steps, real checkpoints.

The worker's analysis (worker_main.run) runs in this process here, so each pathology costs a
fraction of a second; test_tool_inspect.py drives the same code through the subprocess and MCP.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ml_debug_mcp.core.diagnosis import catalogue
from ml_debug_mcp.core.model import worker_main
from ml_debug_mcp.core.model.checkpoints import compare_checkpoints, report_from_checkpoints
from ml_debug_mcp.core.model.gradients import (GradientReport, LayerGradient, band_for, build_hypotheses, report_from_worker,
                                         summarize_probe_stats)
from ml_debug_mcp.core.model.worker import WorkerError

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"


def analyze(attr: str, top: int = 20, file: Path = MODELS / "pathologies.py", **settings) -> GradientReport:
    task = {"op": "gradients", "entry": {"file": str(file), "attr": attr}, **settings}
    raw = worker_main.run(task, worker_main.Channel(io.StringIO(), "marker"))
    wire = json.loads(json.dumps(worker_main.strict_json(raw), allow_nan=False))  # exactly what the pipe carries
    return report_from_worker(wire, task, target=attr, top=top)


def assert_json_clean(report: GradientReport) -> None:
    def refuse(token: str) -> float:
        raise AssertionError(f"non-finite {token} in the report")

    json.loads(report.model_dump_json(), parse_constant=refuse)


# ------------------------------------------------------------------------------------------------
# Each pathology fires, and the healthy model stays quiet


@pytest.mark.parametrize("settings", [
    dict(steps=5, lr=1e-3, optimizer="adam"),
    dict(steps=5, lr=0.05, optimizer="sgd"),
    dict(steps=0, lr=0.05, optimizer="sgd"),
])
def test_a_healthy_model_is_healthy_under_adam_sgd_and_estimated_ratios(settings: dict) -> None:
    report = analyze("healthy_mlp", **settings)
    assert report.verdict == "healthy" and report.first_bad_layer is None
    assert report.band_counts == {"healthy": 6}
    assert all(1e-5 < layer.update_ratio < 1e-1 for layer in report.layers)
    expected_source = "estimated" if settings["steps"] == 0 else "measured"
    assert {layer.update_ratio_source for layer in report.layers} == {expected_source}
    assert_json_clean(report)


def test_a_detached_encoder_is_a_broken_graph_at_the_encoder() -> None:
    report = analyze("detached_encoder", steps=2, lr=0.05, optimizer="sgd")
    assert report.verdict == "vanishing_gradients"
    assert report.first_bad_layer == "encoder"
    broken = {layer.name for layer in report.layers if layer.band == "broken"}
    assert broken == {"encoder.weight", "encoder.bias"}
    assert all(layer.grad_missing for layer in report.layers if layer.band == "broken")
    top = report.hypotheses[0]
    assert top.confidence >= 0.9 and "detach" in top.fixes[0].action
    assert {layer.band for layer in report.layers if layer.module == "head"} == {"healthy"}


TINY_MODELS = """
import torch
from torch import nn


class AuxHeadAndUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.main, self.aux = nn.Linear(16, 8), nn.Linear(8, 4), nn.Linear(8, 2)
        self.unused = nn.Parameter(torch.ones(3, 3))

    def forward(self, x):
        h = self.body(x)
        return self.main(h), self.aux(h)


class Whisper(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.last = nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.last(self.first(x) * 1e-9)


def aux_head_and_unused():
    torch.manual_seed(0)
    return AuxHeadAndUnused(), torch.randn(8, 16)


def whisper():
    torch.manual_seed(0)
    return Whisper(), torch.randn(8, 16)
"""


def _tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_models.py"
    path.write_text(TINY_MODELS)
    return path


def test_a_missing_gradient_names_unused_parameters_and_ignored_outputs_not_only_detach(tmp_path: Path) -> None:
    report = analyze("aux_head_and_unused", file=_tiny(tmp_path), steps=1)
    missing = {layer.name: layer for layer in report.layers if layer.grad_missing}
    assert set(missing) == {"unused", "aux.weight", "aux.bias"}
    for layer in missing.values():
        assert "forward never uses it" in layer.reason and "output the loss ignores" in layer.reason
        assert "first tensor" in layer.reason and "detach()" in layer.reason
    actions = [fix.action for fix in report.hypotheses[0].fixes]
    assert "detach" in actions[0] and any("Use every parameter" in a for a in actions)
    assert any("aux" in a for a in actions)


def test_a_tiny_gradient_vanishes_even_when_adam_makes_the_update_look_normal(tmp_path: Path) -> None:
    report = analyze("whisper", file=_tiny(tmp_path), steps=2, lr=1e-3, optimizer="adam")
    by_name = {layer.name: layer for layer in report.layers}
    weight, bias = by_name["first.weight"], by_name["first.bias"]
    assert weight.grad_norm < 1e-7 and weight.update_ratio > 1e-5  # Adam: the step is normal-sized
    assert weight.band == "vanishing" and "Adam rescales the step" in weight.reason
    assert bias.band == "vanishing"  # 1-D tensors are judged on their gradient too
    assert report.verdict == "vanishing_gradients" and report.first_bad_layer == "first"
    assert band_for(grad_norm=9.9e-10, ratio=1e-3)[0] == "vanishing"


def test_early_starving_compares_weights_with_weights() -> None:
    def layer(name: str, order: int, shape: list[int], band: str) -> LayerGradient:
        return LayerGradient(name=name, module=name[0], order=order, shape=shape, band=band, reason="", grad_norm=1.0)

    layers = [layer("0.weight", 1, [4, 4], "frozen"), layer("0.bias", 1, [4], "healthy"),
              layer("1.weight", 2, [4, 4], "healthy")]
    vanish = build_hypotheses(layers, steps=[], extra={}, onsets={})[0]
    assert vanish.failure == "vanishing_gradients" and vanish.confidence == 0.8


def test_a_bias_cancelled_by_batchnorm_is_not_a_broken_graph() -> None:
    report = analyze("conv_bn", steps=3)
    assert report.verdict == "healthy", report.summary
    bias = next(layer for layer in report.layers if layer.name == "0.bias")
    assert bias.grad_norm < 1e-5  # zero up to float rounding: BatchNorm subtracts what the bias adds
    assert bias.band == "healthy" and "BatchNorm2d" in bias.reason and "bias=False" in bias.reason


def test_a_deep_sigmoid_stack_vanishes_from_the_first_layer() -> None:
    report = analyze("deep_sigmoid", steps=3, lr=0.05, optimizer="sgd")
    assert report.verdict == "vanishing_gradients" and report.first_bad_layer == "0"
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["0.weight"].band == "vanishing" and by_name["0.weight"].grad_norm < 1e-7  # sigmoid^25 starves it
    profile = next(e for e in report.hypotheses[0].evidence if e.rule == "first vs last weight in forward order")
    assert "0.weight" in profile.text and "24.weight" in profile.text
    assert report.hypotheses[0].fixes[0].action.startswith("Use ReLU")
    # Late layers still learn: the starving is at the input end.
    assert report.band_counts["healthy"] >= 4


@pytest.mark.parametrize("settings", [dict(steps=5, lr=50.0, optimizer="sgd"), dict(steps=5, lr=1.0, optimizer="adam")])
def test_a_learning_rate_far_too_high_explodes(settings: dict) -> None:
    report = analyze("healthy_mlp", **settings)
    assert report.verdict == "exploding_gradients"
    top = report.hypotheses[0]
    assert top.onset_step == 1 and top.confidence >= 0.85
    assert {layer.band for layer in report.layers if len(layer.shape) == 2} <= {"exploding", "large"}
    assert any(e.metric == "global_grad_norm" and e.value > 10 for e in top.evidence)
    assert_json_clean(report)


def test_a_nan_is_traced_to_the_code_before_the_module_that_receives_it() -> None:
    report = analyze("log_of_negative", steps=3)
    assert report.verdict == "nan_loss" and report.first_bad_layer == "out"
    assert report.history[0].loss is None and report.history[0].loss_nonfinite == "nan"
    assert len(report.history) == 1  # training stops at the first non-finite loss
    assert "input of out (Linear)" in report.hypotheses[0].evidence[1].text
    assert report.band_counts == {"overflow": 4}
    assert_json_clean(report)


def test_output_is_bounded_worst_first() -> None:
    report = analyze("deep_sigmoid", top=3, steps=1, lr=0.05, optimizer="sgd")
    assert len(report.layers) == 3 and report.layers_total == 26 and report.layers_omitted == 23
    assert [layer.name for layer in report.layers] == ["0.bias", "0.weight", "2.bias"]  # biases vanish too
    assert report.band_counts["vanishing"] + report.band_counts["frozen"] + report.band_counts["healthy"] == 26


# ------------------------------------------------------------------------------------------------
# Thresholds come from the catalogue, not from copies


def test_bands_follow_the_catalogue_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert band_for(grad_norm=0.5, ratio=2e-6)[0] == "frozen"
    assert band_for(grad_norm=0.5, ratio=0.2)[0] == "large"
    assert band_for(grad_norm=11.0, ratio=1e-3)[0] == "exploding"
    assert band_for(grad_norm=0.0, ratio=1e-3)[0] == "broken"
    assert band_for(grad_nonfinite="nan")[0] == "overflow"
    frozen = catalogue.THRESHOLDS["update_ratio_frozen"].model_copy(update={"value": 1e-6})
    monkeypatch.setitem(catalogue.THRESHOLDS, "update_ratio_frozen", frozen)
    assert band_for(grad_norm=0.5, ratio=2e-6)[0] == "healthy"
    exploding = catalogue.THRESHOLDS["grad_norm_exploding"].model_copy(update={"value": 20.0})
    monkeypatch.setitem(catalogue.THRESHOLDS, "grad_norm_exploding", exploding)
    assert band_for(grad_norm=11.0, ratio=1e-3)[0] == "healthy"


# ------------------------------------------------------------------------------------------------
# Checkpoint pairs


def _train_and_save(tmp: Path, *, lr: float, freeze_first: bool, steps: int = 10) -> dict[str, Path]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    if freeze_first:
        model[0].weight.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    after = model.state_dict()
    paths = {"st0": tmp / "before.safetensors", "st1": tmp / "after.safetensors",
             "pt0": tmp / "before.pt", "pt1": tmp / "after.pt"}
    save_file(before, paths["st0"])
    save_file({k: v.contiguous() for k, v in after.items()}, paths["st1"])
    torch.save({"model": before, "optimizer": {}, "epoch": 0}, paths["pt0"])
    torch.save({"model": after, "optimizer": opt.state_dict(), "epoch": 1}, paths["pt1"])
    return paths


def _compare_in_process(before: Path, after: Path, steps_between: int | None = None) -> GradientReport:
    raw = worker_main.run({"op": "checkpoints", "before": str(before), "after": str(after)},
                          worker_main.Channel(io.StringIO(), "marker"))
    return report_from_checkpoints(json.loads(json.dumps(worker_main.strict_json(raw))), before, after,
                                   steps_between=steps_between)


def test_a_checkpoint_pair_finds_the_frozen_tensor(tmp_path: Path) -> None:
    paths = _train_and_save(tmp_path, lr=0.05, freeze_first=True)
    for before, after in ((paths["st0"], paths["st1"]), (paths["pt0"], paths["pt1"])):
        report = _compare_in_process(before, after, steps_between=10)
        by_name = {layer.name: layer for layer in report.layers}
        assert by_name["0.weight"].band == "frozen" and by_name["0.weight"].update_ratio == 0
        assert by_name["3.weight"].band == "healthy"
        assert report.verdict == "vanishing_gradients" and report.first_bad_layer == "0"
        assert report.settings["steps_between"] == 10
        assert by_name["0.bias"].band == "healthy" and "BatchNorm" in by_name["0.bias"].reason  # cancelled, not starved
        assert any("integer" in w for w in report.warnings)  # num_batches_tracked is skipped, and said so
    assert any("'model' entry" in w for w in report.warnings)


def test_an_unchanged_tensor_is_first_suspected_frozen_or_outside_the_optimizer(tmp_path: Path) -> None:
    paths = _train_and_save(tmp_path, lr=0.05, freeze_first=True)
    report = _compare_in_process(paths["pt0"], paths["pt1"], steps_between=10)
    frozen = next(layer for layer in report.layers if layer.name == "0.weight")
    assert "requires_grad=False" in frozen.reason and "param groups" in frozen.reason
    assert "requires_grad" in report.hypotheses[0].fixes[0].action
    assert sum("'model' entry" in w for w in report.warnings) == 1


def test_optimizer_state_in_a_checkpoint_is_not_analysed_as_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    paths = []
    for step in range(2):
        opt.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
        paths.append(tmp_path / f"ckpt{step}.pt")
        torch.save({"weights": model.state_dict(), "opt": opt.state_dict()}, paths[-1])
    report = _compare_in_process(*paths, steps_between=1)
    assert {layer.name.partition(".")[0] for layer in report.layers} == {"weights"}
    assert any("optimizer-state tensors" in w for w in report.warnings)


def test_a_checkpoint_pair_flags_exploding_updates_and_stays_quiet_when_healthy(tmp_path: Path) -> None:
    healthy = _train_and_save(tmp_path, lr=0.01, freeze_first=False, steps=1)
    report = _compare_in_process(healthy["st0"], healthy["st1"], steps_between=1)
    assert report.verdict == "healthy", report.summary
    wild = tmp_path / "wild"
    wild.mkdir()
    paths = _train_and_save(wild, lr=200.0, freeze_first=False, steps=1)
    report = _compare_in_process(paths["st0"], paths["st1"], steps_between=1)
    assert report.verdict == "exploding_gradients"
    assert any("more than its own size" in layer.reason for layer in report.layers if layer.band == "large")


def test_mismatched_checkpoints_report_the_difference(tmp_path: Path) -> None:
    a = {"encoder.weight": torch.ones(4, 4), "head.weight": torch.ones(2, 4), "old.bias": torch.ones(4)}
    b = {"encoder.weight": torch.ones(4, 4) * 1.001, "head.weight": torch.ones(3, 4), "new.bias": torch.ones(4)}
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    report = _compare_in_process(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    m = report.mismatch
    assert m.only_before == ["old.bias"] and m.only_after == ["new.bias"]
    assert m.shape_changed[0].name == "head.weight" and m.shape_changed[0].after == [3, 4]
    assert [layer.name for layer in report.layers] == ["encoder.weight"]
    assert any("differ in keys or shapes" in w for w in report.warnings)
    save_file({"x": torch.ones(2)}, tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="no floating-point tensor in common"):
        _compare_in_process(tmp_path / "a.safetensors", tmp_path / "c.safetensors")


def test_checkpoints_are_read_in_the_worker_and_pickles_are_refused(tmp_path: Path) -> None:
    paths = _train_and_save(tmp_path, lr=0.05, freeze_first=True)
    report = compare_checkpoints(paths["pt0"], paths["pt1"], steps_between=10, python=sys.executable, timeout=60,
                                 memory_mb=4096, cwd=tmp_path)
    assert report.source == "checkpoints" and report.first_bad_layer == "0"
    assert any("running averages" in w for w in report.warnings)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, unsafe)
    with pytest.raises(worker_main.WorkerFailure) as info:
        worker_main.run({"op": "checkpoints", "before": str(unsafe), "after": str(unsafe)},
                        worker_main.Channel(io.StringIO(), "marker"))
    assert info.value.kind == "unsafe_pickle" and info.value.extra["global_name"] == "argparse.Namespace"
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(WorkerError) as err:
        compare_checkpoints(not_a_checkpoint, paths["pt1"], steps_between=None, python=sys.executable, timeout=60,
                            memory_mb=4096, cwd=tmp_path)
    assert err.value.kind == "checkpoint_unreadable" and "state_dict" in str(err.value)


# ------------------------------------------------------------------------------------------------
# Probe statistics files that are not what they should be


def test_a_file_without_probe_records_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "train.log"
    bogus.write_text("step 1 loss 2.3\nstep 2 loss 2.2\n")
    with pytest.raises(ValueError, match="no probe records"):
        summarize_probe_stats(bogus)
