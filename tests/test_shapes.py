"""check_shapes' analysis: one traced forward pass of real models, failures explained from the layer's own config."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ml_debug_mcp.core.model import worker_main
from ml_debug_mcp.core.model.shapes import MAX_INPUT_ELEMENTS, ShapeReport, check_inputs, render_table, report_from_trace

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"


def trace(attr: str, shapes: list[list[int]] | None = None, dtype=None,
          file: Path = MODELS / "pathologies.py") -> ShapeReport:
    shapes, dtypes = check_inputs(shapes, dtype)
    task = {"op": "shapes", "entry": {"file": str(file), "attr": attr},
            "input_shapes": shapes, "dtypes": dtypes}
    raw = worker_main.run(task, worker_main.Channel(io.StringIO(), "marker"))
    return report_from_trace(json.loads(json.dumps(worker_main.strict_json(raw), allow_nan=False)), attr)


def test_a_wrong_in_features_names_the_layer_what_it_expects_and_what_fed_it() -> None:
    report = trace("wrong_in_features", [[8, 3, 16, 16]])
    f = report.failure
    assert report.status == "failed" and f is not None
    assert (f.module, f.module_type) == ("3", "Linear")
    assert f.module_repr == "Linear(in_features=256, out_features=10, bias=True)"
    assert f.received[0].shape == [8, 512]
    assert f.expected == "input features (last dimension) = 256"
    assert (f.previous_module, f.previous_type) == ("2", "Flatten") and f.previous_outputs[0].shape == [8, 512]
    assert "expects 256 input features" in f.explanation and "gets 512" in f.explanation
    assert "Flatten '2', outputs [8, 512]" in f.explanation and "in_features=512" in f.explanation
    assert f.exception_type == "RuntimeError" and "256" in f.message  # the meta kernel's words, not the CPU's
    # The trace up to the failure is kept: Conv -> ReLU -> Flatten ran, the Linear raised, the Sequential never finished.
    assert [(c.name, c.status) for c in report.calls] == [("", "running"), ("0", "ok"), ("1", "ok"), ("2", "ok"),
                                                          ("3", "raised")]


def test_the_numbers_follow_the_input_and_a_healthy_model_is_quiet() -> None:
    report = trace("wrong_in_features", [[8, 3, 8, 8]])  # Flatten now gives 2 * 8 * 8 = 128 features
    assert report.status == "failed" and "gets 128" in report.failure.explanation
    report = trace("healthy_mlp", [[5, 16]])
    assert report.status == "ok" and report.failure is None
    assert report.output[0].shape == [5, 4] and report.output[0].dtype == "float32"
    assert [c.type for c in report.calls] == ["Sequential", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert report.calls[1].inputs[0].shape == [5, 16] and report.calls[1].outputs[0].shape == [5, 32]
    assert report.total_params == 16 * 32 + 32 + 32 * 32 + 32 + 32 * 4 + 4


def test_an_error_in_user_forward_code_points_at_the_user_line() -> None:
    f = trace("bad_head_split", [[2, 5, 48]]).failure
    assert f.module_type == "SelfAttention" and f.module == ""
    assert f.user_frame is not None and f.user_frame.file.endswith("pathologies.py")
    assert "self.heads, 16" in f.user_frame.code and f.user_frame.function == "forward"
    assert f.previous_module == "qkv" and f.previous_outputs[0].shape == [2, 5, 144]
    assert "pathologies.py" in f.explanation


def test_dtype_and_index_problems_are_explained() -> None:
    f = trace("bare_mlp", [[4, 16]], "float64").failure
    assert f.expected == "dtype float32" and "gets float64" in f.explanation
    f = trace("embedding_overflow").failure  # the factory's batch holds ids up to 153 for 100 rows
    assert f.module_type == "Embedding" and f.received[0].max == 153
    assert "num_embeddings=100" in f.explanation and "index 153" in f.explanation
    ok = trace("two_inputs", [[2, 3], [2, 3, 1]], ["int64", "float32"])  # ids drawn below num_embeddings
    assert ok.status == "ok" and ok.inputs[0].max < 100


def test_long_traces_are_cut_in_the_middle_and_say_so() -> None:
    report = trace("deep_relu", [[2, 8]])
    assert report.status == "ok" and report.calls_total == 161
    assert len(report.calls) == 60 and report.calls_omitted == 101
    assert report.calls[39].index == 39 and report.calls[40].index == 141
    table = render_table(report)
    assert "0-159  (Linear, ReLU) ×80  each [2, 8]" in table and "Total params: 5,760" in table
    assert report.table[1].count == 80 and report.table[1].params == 72 and len(report.table) == 2
    header = table.splitlines()[0]
    assert header.split() == ["Layer", "Type", "Input", "shape", "Output", "shape", "Params"]


@pytest.mark.parametrize("shapes,dtype,words", [
    ([[8, 0, 3]], None, "positive integer"),
    ([[8, -1]], None, "positive integer"),
    ([[]], None, "1 to 8 dimensions"),
    ([[1] * 9], None, "1 to 8 dimensions"),
    ([[4096, 4096, 4]], None, "cap"),
    ([[2, 3]], "complex32", "Unknown dtype"),
    ([[2, 3], [2]], ["int64"], "2 input shapes"),
])
def test_bad_input_shapes_are_refused_before_any_process_starts(shapes, dtype, words: str) -> None:
    with pytest.raises(ValueError) as info:
        check_inputs(shapes, dtype)
    assert words in str(info.value)


def test_input_validation_accepts_aliases_and_sizes_up_to_the_cap() -> None:
    assert check_inputs([[2, 3]], "torch.long") == ([[2, 3]], ["int64"])
    assert check_inputs([[MAX_INPUT_ELEMENTS]], None) == ([[MAX_INPUT_ELEMENTS]], [None])
    assert check_inputs(None, None) == (None, None)


TINY_MODELS = """
import torch
from torch import nn


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(input_size=4, hidden_size=3, batch_first=True)

    def forward(self, x):
        out, _ = self.rnn(x)
        return out


def recurrent():
    return Recurrent()


def with_batch_norm():
    return nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
"""


def _tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_models.py"
    path.write_text(TINY_MODELS)
    return path


def test_batch_norm_with_a_batch_of_one_warns_that_training_needs_more(tmp_path: Path) -> None:
    report = trace("with_batch_norm", [[1, 8]], file=_tiny(tmp_path))
    assert report.status == "ok" and len(report.notes) == 1
    assert "BatchNorm layers (1)" in report.notes[0] and "batch > 1" in report.notes[0]
    assert "Expected more than 1 value per channel when training" in report.notes[0]
    assert trace("with_batch_norm", [[2, 8]], file=_tiny(tmp_path)).notes == []


def test_the_user_frame_follows_the_fix_as_its_own_sentence(tmp_path: Path) -> None:
    f = trace("recurrent", [[2, 5, 8]], file=_tiny(tmp_path)).failure
    assert f is not None and f.module_type == "LSTM"
    assert "Set input_size=8. Raised at " in f.explanation and ". at " not in f.explanation
    assert f.explanation.endswith(").")
