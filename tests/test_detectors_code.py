"""Static code scan: each anti-pattern fires on a real fixture script, stays quiet on correct code, and the
fixtures really behave the way the findings claim when they are run."""

from __future__ import annotations

import importlib.util
import json
import traceback
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ml_debug_mcp.core.diagnosis.detectors import code_scan
from ml_debug_mcp.core.diagnosis.detectors.code_scan import CodeFinding, code_hypotheses, scan_code, scan_source
from ml_debug_mcp.core.diagnosis.detectors.error_text import detect_errors

FIXTURES = Path(__file__).parent / "fixtures" / "code"


def _rules(path: Path, severities=("error", "warning")) -> list[tuple[str, int]]:
    return [(f.rule, f.line) for f in scan_code(path) if f.severity in severities]


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"fixture_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


# --- the CVFP pair -----------------------------------------------------------------------------------


def test_cvfp_before_fires_both_bugs():
    before = FIXTURES / "cvfp_before.py"
    assert sorted(_rules(before)) == sorted(
        [
            ("carried_state_no_detach", _line_of(before, "context = self._train_one_token(")),
            ("normalize_in_mse", _line_of(before, "cvfp_loss = F.mse_loss(")),
        ]
    )
    carried = next(f for f in scan_code(before) if f.rule == "carried_state_no_detach")
    assert "`context`" in carried.message and "self._train_one_token" in carried.message
    assert carried.failures == ["graph_reuse"] and carried.severity == "error"
    assert carried.snippet.startswith("context = self._train_one_token(")


def test_cvfp_after_is_clean():
    assert scan_code(FIXTURES / "cvfp_after.py") == []


def test_cvfp_before_really_fails_and_both_detectors_agree():
    """Run the buggy trainer: PyTorch raises the error the scan predicted; the fixed one trains."""
    try:
        _load("cvfp_before").main()
    except RuntimeError:
        error_text = traceback.format_exc()
    else:
        pytest.fail("the buggy CVFP trainer should not train")
    from_error = detect_errors(error_text)
    assert from_error[0].failure == "graph_reuse"
    from_code = code_hypotheses(scan_code(FIXTURES / "cvfp_before.py"), signals={h.failure for h in from_error})
    top = from_code[0]
    assert top.failure == "graph_reuse" and top.confidence >= 0.9
    assert top.evidence[0].kind == "code" and top.evidence[0].rule == "code.carried_state_no_detach"
    assert "detach" in top.fixes[0].action
    trainer = _load("cvfp_after").main(iterations=3)
    assert trainer.previous_contexts is not None and not trainer.previous_contexts.requires_grad


def test_normalized_mse_only_matches_direction():
    """The claim behind normalize_in_mse, checked numerically: optimising MSE between normalised vectors
    aligns the direction but leaves the values apart; raw MSE makes them equal."""
    torch.manual_seed(0)
    target = torch.randn(16) * 3.0

    def fit(loss_fn):
        v = torch.nn.Parameter(torch.randn(16) * 0.1)
        opt = torch.optim.Adam([v], lr=0.05)
        for _ in range(400):
            opt.zero_grad()
            loss_fn(v).backward()
            opt.step()
        return v.detach()

    normalized = fit(lambda v: F.mse_loss(F.normalize(v, dim=0), F.normalize(target, dim=0)))
    raw = fit(lambda v: F.mse_loss(v, target))
    assert F.cosine_similarity(normalized, target, dim=0) > 0.99
    assert (normalized - target).norm() > 0.5 * target.norm()  # the value never converges
    assert (raw - target).norm() < 0.05 * target.norm()


# --- each anti-pattern, and its correct counterpart --------------------------------------------------------


def test_rnn_hidden_state_carried_without_detach():
    path = FIXTURES / "rnn_hidden.py"
    assert _rules(path) == [("carried_state_no_detach", _line_of(path, "logits, hidden = model(x, hidden)"))]


def test_accumulation_and_in_step_bptt_are_not_flagged():
    path = FIXTURES / "accumulation_bptt.py"
    assert scan_code(path) == []
    _load("accumulation_bptt").main(steps=2)  # and it does train


def test_missing_zero_grad_fires_and_the_gradients_really_accumulate():
    path = FIXTURES / "no_zero_grad.py"
    assert ("missing_zero_grad", _line_of(path, "loss.backward()")) in _rules(path)
    accumulating = _load("no_zero_grad").main(steps=30)
    torch.manual_seed(0)  # the same problem, trained correctly
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    correct = []
    for _ in range(30):
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        correct.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))
        optimizer.step()
    assert correct[-1] < correct[0]
    assert accumulating[-1] > 5 * accumulating[0] and accumulating[-1] > 10 * correct[-1]


def test_missing_zero_grad_through_a_helper_is_reported_at_the_call():
    path = FIXTURES / "helper_no_zero_grad.py"
    assert _rules(path) == [("missing_zero_grad", _line_of(path, "        train_step(model, optimizer, x, y)"))]


def test_sync_points_inside_the_loop():
    path = FIXTURES / "sync_points.py"
    assert _rules(path) == [
        ("sync_in_loop", _line_of(path, "losses.append(loss.item())")),
        ("sync_in_loop", _line_of(path, "print(loss)")),
        ("sync_in_loop", _line_of(path, ".cpu().numpy()")),
    ]
    findings = {f.line: f for f in scan_code(path)}
    assert "print(loss)" in findings[_line_of(path, "print(loss)")].message
    assert all(f.failures == ["slow_throughput"] for f in findings.values())


def test_numerically_fragile_ops():
    path = FIXTURES / "nan_ops.py"
    assert _rules(path) == [
        ("unguarded_log", _line_of(path, "torch.log(probs)")),
        ("unguarded_log", _line_of(path, "torch.log(F.softmax(")),
        ("division_by_reduction", _line_of(path, "/ mask.sum()")),
        ("unguarded_sqrt", _line_of(path, "torch.sqrt(")),
    ]
    log_softmax = next(f for f in scan_code(path) if f.line == _line_of(path, "torch.log(F.softmax("))
    assert "F.log_softmax" in log_softmax.message


def test_retain_graph_band_aid():
    path = FIXTURES / "retain_graph.py"
    assert sorted(_rules(path)) == sorted(
        [
            ("carried_state_no_detach", _line_of(path, "state = cell(")),
            ("retain_graph", _line_of(path, "loss.backward(retain_graph=True)")),
        ]
    )
    hypotheses = {h.failure: h for h in code_hypotheses(scan_code(path))}
    assert {"graph_reuse", "oom"} <= set(hypotheses)


def test_a_clean_training_script_has_no_findings():
    assert scan_code(FIXTURES / "clean_train.py") == []
    history = _load("clean_train").main(epochs=4)
    assert len(history) >= 3 and history[-1] < history[0]  # it really trains


def test_no_clipping_only_matters_with_an_exploding_signal():
    path = FIXTURES / "no_zero_grad.py"
    info = [f for f in scan_code(path) if f.rule == "no_grad_clipping"]
    assert len(info) == 1 and info[0].severity == "info"
    quiet = {h.failure: h for h in code_hypotheses(scan_code(path))}
    assert "loss_spike" not in quiet and quiet["exploding_gradients"].evidence[0].rule == "code.missing_zero_grad"
    loud = {h.failure: h for h in code_hypotheses(scan_code(path), signals={"exploding_gradients"})}
    rules = {e.rule for e in loud["exploding_gradients"].evidence}
    assert rules == {"code.missing_zero_grad", "code.no_grad_clipping"}
    assert loud["exploding_gradients"].confidence > quiet["exploding_gradients"].confidence
    assert not [f for f in scan_code(FIXTURES / "sync_points.py") if f.rule == "no_grad_clipping"]


def test_signals_raise_confidence():
    findings = scan_code(FIXTURES / "rnn_hidden.py")
    alone = code_hypotheses(findings)[0]
    confirmed = code_hypotheses(findings, signals={"graph_reuse"})[0]
    assert alone.failure == confirmed.failure == "graph_reuse"
    assert alone.confidence < 0.7 < confirmed.confidence
    json.dumps([h.model_dump() for h in code_hypotheses(findings)], allow_nan=False)


# --- bad input degrades into findings ------------------------------------------------------------------


def test_syntax_error_is_a_finding(tmp_path):
    broken = tmp_path / "train.py"
    broken.write_text("import torch\nfor step in range(10)\n    loss.backward()\n")
    [finding] = scan_code(broken)
    assert finding.rule == "syntax_error" and finding.line == 2 and finding.severity == "error"
    assert "does not parse" in finding.message and finding.snippet == "for step in range(10)"
    assert code_hypotheses([finding]) == []


def test_pasted_source_with_a_byte_order_mark_is_scanned_and_its_warnings_stay_quiet(recwarn):
    source = "\ufeffimport torch\nfor x in loader:\n    y = 1if x else 0\n    loss.backward()\n"
    findings = scan_source(source)
    assert "syntax_error" not in [f.rule for f in findings]
    assert not [w for w in recwarn if issubclass(w.category, SyntaxWarning)]


def test_oversized_unreadable_and_missing_files_are_refused_with_a_reason(tmp_path, monkeypatch):
    big = tmp_path / "generated.py"
    big.write_text("x = 1\n" * 50)
    monkeypatch.setattr(code_scan, "MAX_CODE_BYTES", 100)
    [too_big] = scan_code(big)
    assert too_big.rule == "file_too_large" and "300 bytes" in too_big.message
    [directory] = scan_code(tmp_path)
    assert directory.rule == "unreadable" and "not a file" in directory.message
    [missing] = scan_code(tmp_path / "nope.py")
    assert missing.rule == "unreadable"


def test_notebook_code_cells_are_scanned(tmp_path):
    cells = [
        {"cell_type": "markdown", "source": ["# Training\n"]},
        {"cell_type": "code", "source": ["%matplotlib inline\n", "import torch\n", "import torch.nn as nn\n"]},
        {
            "cell_type": "code",
            "source": [
                "cell = nn.GRUCell(4, 4)\n",
                "opt = torch.optim.SGD(cell.parameters(), lr=0.1)\n",
                "h = torch.zeros(1, 4)\n",
                "for step in range(5):\n",
                "    opt.zero_grad()\n",
                "    h = cell(torch.randn(1, 4), h)\n",
                "    h.sum().backward()\n",
                "    torch.nn.utils.clip_grad_norm_(cell.parameters(), 1.0)\n",
                "    opt.step()\n",
            ],
        },
    ]
    notebook = tmp_path / "train.ipynb"
    notebook.write_text(json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {}}))
    findings = scan_code(notebook)
    assert [(f.rule, f.snippet) for f in findings] == [("carried_state_no_detach", "h = cell(torch.randn(1, 4), h)")]


def test_state_reinitialised_each_iteration_or_under_no_grad_is_fine():
    source = (
        "import torch\n"
        "def train(model, cell, loader, opt):\n"
        "    for x in loader:\n"
        "        opt.zero_grad()\n"
        "        h = model.init_hidden()\n"
        "        h = cell(x, h)\n"
        "        with torch.no_grad():\n"
        "            ema = model.ema(x, ema)\n"
        "        h.sum().backward()\n"
        "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "        opt.step()\n"
    )
    assert scan_source(source) == []


def test_syncs_outside_the_loop_or_in_evaluation_are_fine_but_a_step_helper_counts():
    source = (
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    correct = 0\n"
        "    for x, y in loader:\n"
        "        correct += (model(x).argmax(1) == y).sum().item()\n"
        "    return correct\n"
        "def train_step(model, opt, x, y):\n"
        "    opt.zero_grad()\n"
        "    loss = torch.nn.functional.cross_entropy(model(x), y)\n"
        "    loss.backward()\n"
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "    opt.step()\n"
        "    return loss.item()\n"
        "def main(model, opt, loader):\n"
        "    for x, y in loader:\n"
        "        last = train_step(model, opt, x, y)\n"
        "    print(f'final loss {last:.3f}', evaluate(model, loader))\n"
        "    final = model.weight.detach().cpu()\n"
        "    return final\n"
    )
    assert [(f.rule, f.line) for f in scan_source(source)] == [("sync_in_loop", 13)]


def test_scanning_real_library_code_never_crashes():
    """Robustness: PyTorch's own optimisers and modules are large, varied, real Python."""
    root = Path(torch.__file__).parent
    files = sorted((root / "optim").glob("*.py")) + sorted((root / "nn" / "modules").glob("*.py"))
    assert len(files) > 30
    for path in files:
        for finding in scan_code(path):
            assert isinstance(finding, CodeFinding) and finding.rule in code_scan.RULES


_REPACKAGE_HIDDEN = (
    "def repackage_hidden(h):\n"
    "    if isinstance(h, torch.Tensor):\n"
    "        return h.detach()\n"
    "    else:\n"
    "        return tuple(repackage_hidden(v) for v in h)\n"
)


def _bptt_loop(top_of_loop: str, helpers: str = "") -> str:
    """PyTorch's word_language_model training loop, with `top_of_loop` where it re-packages the hidden state."""
    return (
        "import torch\n"
        f"{helpers}"
        "def train(model, train_data, criterion, optimizer, bsz, bptt):\n"
        "    hidden = model.init_hidden(bsz)\n"
        "    for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):\n"
        "        data, targets = get_batch(train_data, i)\n"
        f"        {top_of_loop}\n"
        "        model.zero_grad()\n"
        "        output, hidden = model(data, hidden)\n"
        "        loss = criterion(output, targets)\n"
        "        loss.backward()\n"
        "        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)\n"
        "        optimizer.step()\n"
    )


@pytest.mark.parametrize(
    "top_of_loop, helpers",
    [
        ("hidden = repackage_hidden(hidden)", _REPACKAGE_HIDDEN),
        ("hidden = tuple(h.detach() for h in hidden)", ""),
        ("hidden = [h.detach() for h in hidden]", ""),
        ("hidden = [x.detach().clone() for x in hidden]", ""),
        ("hidden = (hidden[0].detach(), hidden[1].detach())", ""),
        ("hidden = hidden.detach()", ""),
        ("hidden.detach_()", ""),
        ("hidden = hidden.data", ""),
        ("hidden = utils.detach_hidden(hidden)", ""),
        ("hidden = snapshot(hidden)", "@torch.no_grad()\ndef snapshot(h):\n    return h * 1\n"),
        ("with torch.no_grad():\n            hidden = hidden * 1", ""),
    ],
    ids=["repackage_hidden", "tuple_genexp", "listcomp", "detach_clone", "lstm_pair", "detach", "detach_", "data",
         "named_helper", "no_grad_helper", "no_grad_block"],
)
def test_truncated_bptt_idioms_detach_the_carried_state(top_of_loop, helpers):
    assert scan_source(_bptt_loop(top_of_loop, helpers)) == []


@pytest.mark.parametrize(
    "top_of_loop, helpers",
    [
        ("pass", ""),
        ("pass", _REPACKAGE_HIDDEN),  # the helper is defined but never applied to the state
        ("hidden = mix(hidden, data.detach())", ""),  # a detach of another value does not cut the chain
        ("hidden = step(hidden)", "def step(h):\n    return h.detach() if h is None else h\n"),
        ("hidden = (hidden[0].detach(), hidden[1])", ""),  # half the LSTM state still carries the graph
    ],
    ids=["no_detach", "helper_unused", "other_value_detached", "helper_not_always_detaching", "half_detached"],
)
def test_carried_state_without_a_detach_is_still_flagged(top_of_loop, helpers):
    findings = scan_source(_bptt_loop(top_of_loop, helpers))
    assert "carried_state_no_detach" in {f.rule for f in findings}
    assert code_hypotheses(findings)[0].failure == "graph_reuse"
