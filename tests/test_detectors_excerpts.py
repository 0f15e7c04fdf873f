"""The detectors for what people paste: family phrases, short series, generated samples.

Each rule fires on its pathology and stays quiet on the healthy text next to it.
"""

from __future__ import annotations

import math

import pytest

from ml_debug_mcp.core.diagnosis.classify import classify, classify_text
from ml_debug_mcp.core.diagnosis.detectors.error_text import FAMILY_CONFIDENCE, detect_errors
from ml_debug_mcp.core.diagnosis.detectors.generated_text import detect_generated_text
from ml_debug_mcp.core.diagnosis.detectors.series_checks import detect_series
from ml_debug_mcp.core.logs.metrics import parse_metrics_text
from ml_debug_mcp.core.logs.series import ParsedLog, SeriesBuilder, canonical_metric_name


def series_log(**curves: list[float]) -> ParsedLog:
    built = []
    for name, values in curves.items():
        b = SeriesBuilder(name)
        for i, v in enumerate(values):
            b.add(float(i), v)
        built.append(b.build())
    return ParsedLog(format="test", series=built)


def failures(parsed: ParsedLog) -> dict[str, float]:
    found: dict[str, float] = {}
    for h in detect_series(parsed):  # several detectors may name one failure: the strongest reading counts
        found[h.failure] = max(h.confidence, found.get(h.failure, 0.0))
    return found


# ------------------------------------------------------------------------------------------------
# Error text: the second tier names the family when no precise rule reads the message

@pytest.mark.parametrize("text, family", [
    ("RuntimeError: NPU out of memory. Tried to allocate 386.00 MiB (NPU 2; 60.97 GiB total capacity)", "oom"),
    ("Out of memory error on GPU 0. Cannot allocate 80.000000MB memory on GPU 0", "oom"),
    ("RuntimeError: Malloc for kernel output failed, Memory isn't enough, node:Def", "oom"),
    ("[rank3]:[E1002 ProcessGroupNCCL.cpp:756] Work WorkNCCL(SeqNum=2521, OpType=ALLREDUCE) timed out in blocking wait.",
     "distributed_hang"),
    ('"message": "RendezvousTimeoutError: "', "distributed_hang"),
    ("TypeError: dot_general requires contracting dimensions to have the same shape, got (1041,) and (1029,).",
     "shape_mismatch"),
    ("ValueError: Input 0 of layer dense_30 is incompatible with the layer: expected axis -1 of input shape",
     "shape_mismatch"),
    ("TypeError: x and y must have the same dtype, got tf.float32 != tf.int32", "dtype_mismatch"),
    ("RuntimeError: Tensor for 'out' is on CPU, Tensor for argument #1 'self' is on CPU, but expected them to be on GPU",
     "device_mismatch"),
    ("block: [0,0,0], thread: [455,0,0] Assertion `t >= 0 && t < n_classes` failed on the GPU", "cuda_assert"),
    ("FloatingPointError: Loss became infinite or NaN at iteration=27!", "nan_loss"),
    ("AssertionError: Rank 11: found NaN in local grad norm in backward pass before data-parallel communication",
     "exploding_gradients"),
    ("| INFO | root | NOTE: XLA compilation detected; too many of these can lead to slow training", "slow_throughput"),
])
def test_a_family_phrase_never_yields_nothing(text: str, family: str):
    found = {h.failure: h for h in detect_errors(text)}
    assert family in found, found
    h = found[family]
    assert h.confidence >= FAMILY_CONFIDENCE - 1e-9
    if h.confidence == FAMILY_CONFIDENCE:  # the second tier says what it could not read
        assert "could not be read" in h.evidence[0].text


@pytest.mark.parametrize("text", [
    "| epoch 001: 100 / 12603 loss=14.481, oom=0.000, loss_scale=16.000, wall=868",
    '{"epoch": 1, "loss": "6.5", "oom": "0", "wall": "300"}',
    "autocast on: mat1 and mat2 are float16, same dtype; /dev/shm has 16 GB of shared memory",
    "NCCL INFO Bootstrap : Using eth0:10.0.0.1<0>",
    "Epoch 3/10 - loss: 0.4123 - accuracy: 0.8812 - val_loss: 0.4420",
    "step 120 | grad_norm: 0.83 | compiled the model with torch.compile in 41.2 s | 2.1 it/s",
])
def test_healthy_lines_name_no_family(text: str):
    assert detect_errors(text) == []


def test_the_precise_rule_still_comes_first_with_its_numbers():
    (h,) = detect_errors("**RuntimeError: CUDA out of memory.** Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total "
                         "capacity; 13.10 GiB already allocated)")
    assert h.failure == "oom" and h.confidence > 0.9 and "2.00 GiB" in h.evidence[0].text


def test_a_wrapped_message_is_read_whole():
    (h,) = detect_errors("RuntimeError: CUDA out of\nmemory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total "
                         "capacity; 13.10 GiB already allocated)")
    assert h.failure == "oom" and h.confidence > 0.9 and h.evidence[0].line_no == 1


# ------------------------------------------------------------------------------------------------
# Short series and signature values

def test_a_jump_that_stays_up_is_divergence_from_nine_points():
    found = failures(series_log(loss=[1.70, 11.46, 11.75, 11.50, 11.48, 12.19, 10.02, 10.94, 10.55]))
    assert max(found, key=found.get) == "divergence" and found["divergence"] >= 0.6


def test_a_spike_that_recovers_is_a_spike():
    found = failures(series_log(loss=[0.74, 0.65, 51090.0, 30.8, 0.9, 0.7]))
    assert "loss_spike" in found and "divergence" not in found


def test_the_saturated_softmax_value_marks_a_diverged_run():
    found = failures(series_log(loss=[3.3, 3.1, 87.3365, 87.3365, 87.3365]))
    assert "divergence" in found and found["divergence"] >= 0.7


def test_a_loss_pinned_at_ln_c_or_repeated_exactly_is_a_plateau():
    assert "plateau" in failures(series_log(loss=[2.3026, 2.3026, 2.3026, 2.3026]))
    assert "plateau" in failures(series_log(loss=[1535.6199, 1535.6196, 1535.6199, 1535.6196, 1535.6199]))


def test_an_exactly_zero_loss_carries_no_gradient():
    assert "vanishing_gradients" in failures(series_log(loss=[0.1, 0.0, 0.0, 0.0, 0.0]))


def test_a_falling_excerpt_is_healthy_with_a_confidence_that_grows_with_points():
    three = failures(series_log(loss=[4.26, 3.22, 2.77]))
    ten = failures(series_log(loss=[4.26, 3.22, 2.77, 2.61, 2.53, 2.50, 2.47, 2.44, 2.41, 2.39]))
    assert set(three) == {"healthy"} and set(ten) == {"healthy"}
    assert three["healthy"] < ten["healthy"] < 0.8


def test_a_noisy_late_window_is_neither_plateau_nor_alarm():
    found = failures(series_log(loss=[4.09, 3.74, 3.98, 3.87, 3.99, 3.77, 3.88, 3.68, 3.92, 3.68, 3.97]))
    assert set(found) == {"healthy"} and found["healthy"] < 0.6


def test_one_record_echoed_by_several_hosts_is_no_exact_repeat():
    parsed = series_log(loss=[1.8673, 1.8673, 1.8673, 1.8673], epoch=[0.0, 0.0, 0.0, 0.0])
    assert "plateau" not in failures(parsed)


def test_data_loading_that_fills_the_step_is_slow_throughput():
    slow = failures(series_log(loss=[2.0, 1.9, 1.8, 1.7, 1.6], data_time=[0.9, 0.8, 0.85, 0.9, 0.88],
                               step_time=[1.2, 1.1, 1.15, 1.2, 1.18]))
    fast = failures(series_log(loss=[2.0, 1.9, 1.8, 1.7, 1.6], data_time=[0.01, 0.004, 0.005, 0.004, 0.004],
                               step_time=[1.2, 1.1, 1.15, 1.2, 1.18]))
    assert slow.get("slow_throughput", 0) >= 0.55 and "slow_throughput" not in fast


def test_a_loss_that_stays_put_with_the_learning_rate_at_zero_is_a_plateau():
    stuck = failures(series_log(loss=[0.3657, 0.3764, 0.3721], lr=[0.0, 0.0, 0.0]))
    moving = failures(series_log(loss=[0.3657, 0.3764, 0.3721], lr=[1e-5, 1e-5, 1e-5]))
    falling = failures(series_log(loss=[0.90, 0.61, 0.42], lr=[0.0, 0.0, 0.0]))  # an lr printed rounded to 0
    assert "plateau" in stuck and "plateau" not in moving and "plateau" not in falling


def test_a_throughput_of_exactly_zero_is_slow_throughput():
    assert canonical_metric_name("fps") == "throughput"  # stable-baselines and RL loops print frames per second
    stalled = failures(series_log(loss=[2.0, 1.9, 1.8], throughput=[640.0, 610.0, 0.0]))
    running = failures(series_log(loss=[2.0, 1.9, 1.8], throughput=[640.0, 610.0, 630.0]))
    assert stalled.get("slow_throughput", 0) >= 0.6 and "slow_throughput" not in running


def test_a_gradient_norm_that_overflows_under_a_finite_loss_is_exploding_not_nan_loss():
    overflow = failures(series_log(loss=[9.57, 8.61, 7.50, 6.87, 1.0e4, 4.8e9],
                                   grad_norm=[2.05, 1.71, 2.75, 1.0e5, 1.5e12, math.inf]))
    dead = failures(series_log(loss=[9.57, 8.61, 7.50, 6.87, math.nan, math.nan],
                               grad_norm=[2.05, 1.71, 2.75, 3.1, math.nan, math.nan]))
    assert overflow.get("exploding_gradients", 0) >= 0.8 and "nan_loss" not in overflow
    assert "nan_loss" in dead


# ------------------------------------------------------------------------------------------------
# Generated samples

def test_the_same_sample_again_and_again_is_mode_collapse():
    (h,) = detect_generated_text("> the film is a lot of .\n> the film is a movie .\n> the film is a lot of .\n"
                                 "> the film is a lot of .\n> the film is a lot of .\n")
    assert h.failure == "mode_collapse" and h.evidence[0].value >= 0.6 and "repetition rate" in h.evidence[0].text


def test_one_token_repeated_is_mode_collapse():
    (h,) = detect_generated_text("Q: god\nA: I n't n't n't n't.\n\nQ: who are you?\nA: I n't n't n't n't.\n")
    assert h.failure == "mode_collapse"


def test_identical_embedding_rows_are_rank_collapse():
    text = "tensor([[-59.7394,   1.0199,   0.6965],\n" + "        [-59.7394,   1.0199,   0.6965],\n" * 4
    (h,) = detect_generated_text(text)
    assert h.failure == "rank_collapse"


def test_varied_samples_and_repeated_log_lines_are_not_collapse():
    varied = ("Generated: a man riding a wave on top of a surfboard\nGenerated: two dogs playing in the snow\n"
              "Generated: a plate of food with broccoli and rice\nGenerated: a red bus parked on the street\n")
    logged = "INFO:tensorflow:Recording summary at step 0.\n" * 4 + "UserWarning: the weights were not initialised\n" * 4
    assert detect_generated_text(varied) == []
    assert detect_generated_text(logged) == []


def test_pasted_samples_reach_the_diagnosis():
    d = classify_text("epoch 9 samples:\n" + "the the the the the the\n" * 5)
    assert d.hypotheses and d.hypotheses[0].failure == "mode_collapse"


def test_error_text_that_is_really_a_log_excerpt_is_read_for_its_metrics():
    d = classify(error_text="\n".join(f"iter {i} step 1: loss {v}" for i, v in
                                       enumerate([1.7019, 11.463, 11.7545, 11.5019, 11.4807, 12.1935])))
    assert d.hypotheses and d.hypotheses[0].failure == "divergence"
    assert math.isfinite(d.hypotheses[0].confidence)


def test_a_loss_frozen_across_epochs_is_a_plateau_even_with_its_accuracy_frozen_too():
    parsed = series_log(loss=[5.7178, 5.7257, 5.7257, 5.7257, 5.7257], accuracy=[0.6446, 0.6448, 0.6448, 0.6448, 0.6448])
    assert "plateau" in failures(parsed)


def test_an_eval_loss_that_never_moves_while_the_train_loss_falls_is_overfitting():
    stuck = series_log(loss=[2.31, 2.05, 1.96, 1.94, 1.88, 1.83], eval_loss=[1.799, 1.861, 1.820, 1.803, 1.820, 1.796])
    learning = series_log(loss=[2.31, 2.05, 1.96, 1.94, 1.88, 1.83], eval_loss=[1.80, 1.70, 1.62, 1.55, 1.50, 1.46])
    assert "overfitting" in failures(stuck)
    assert "overfitting" not in failures(learning)


# ------------------------------------------------------------------------------------------------
# Bad input: a clear answer, never a crash or a silent nothing

@pytest.mark.parametrize("text", ["", "   \n\n", "\x00\x01\x02\xff\xfe" * 4000, "训练的时候模型一切正常，没有报错。\n" * 50,
                                  "I trained the model overnight on my laptop.\nIt finished without any message.\n"
                                  "Should I expect the accuracy to go higher with more data?\n"])
def test_no_evidence_is_said_with_what_to_pass(text: str):
    d = classify(error_text=text)
    assert d.hypotheses == []
    assert "no evidence for any failure" in d.summary and d.needs_more_evidence
    assert any("pass" in note for note in d.needs_more_evidence)


def test_binary_text_is_named_binary():
    d = classify(error_text="\x00\x01\x02\x03\x04\x05\xff\xfe" * 4000)
    assert any("binary" in note for note in d.needs_more_evidence)


def test_a_huge_paste_is_read_from_its_end_and_says_so():
    d = classify(error_text="x" * 9_000_000 + "\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert d.hypotheses[0].failure == "oom"
    assert any("only its last" in note for note in d.input_notes)


def test_several_runs_in_one_log_are_judged_by_the_last():
    healthy = "\n".join(f"step {i}: loss {3.0 - 0.02 * i:.3f}" for i in range(0, 100, 5))
    d = classify_text(healthy + "\n" + healthy)
    assert d.hypotheses[0].failure == "healthy"
    assert any("2 runs" in note for note in d.input_notes)


def test_a_gan_whose_discriminator_wins_outright_starves_the_generator():
    won = failures(series_log(d_loss=[14.96, 14.68, 14.60, 14.7], g_loss=[2.3e-5, 2.2e-4, 2.0e-4, 1e-4]))
    balanced = failures(series_log(d_loss=[0.69, 0.65, 0.70, 0.66], g_loss=[1.2, 1.4, 1.1, 1.3]))
    assert "vanishing_gradients" in won and "vanishing_gradients" not in balanced


# ------------------------------------------------------------------------------------------------
# Throughput from pasted tool output

def test_nvidia_smi_at_low_utilisation_with_memory_held_is_slow_throughput():
    from ml_debug_mcp.core.diagnosis.detectors.throughput_text import detect_throughput_text

    starved = "\n".join(f"| N/A   44C    P0    72W / 300W |   5484MiB / 16130MiB |     {u}%      Default |"
                        for u in (0, 31, 2, 0, 5))
    busy = "\n".join(f"| N/A   71C    P0   290W / 300W |  15484MiB / 16130MiB |     {u}%      Default |"
                     for u in (97, 99, 98))
    idle = "| N/A   30C    P8    20W / 300W |      0MiB / 16130MiB |      0%      Default |"
    (h,) = detect_throughput_text(starved)
    assert h.failure == "slow_throughput" and h.evidence[0].value < 50
    assert detect_throughput_text(busy) == [] and detect_throughput_text(idle) == []


def test_a_throughput_table_that_does_not_scale_is_slow_throughput():
    from ml_debug_mcp.core.diagnosis.detectors.throughput_text import detect_throughput_text

    poor = "1GPU: 5 images/s\n8GPUs: 25 images/s\n32GPUs(4nodes): 80 images/s"
    good = "1 GPU: 100 samples/s\n8 GPUs: 760 samples/s"
    assert detect_throughput_text(poor)[0].failure == "slow_throughput"
    assert detect_throughput_text(good) == []


# ------------------------------------------------------------------------------------------------
# A training objective under another name is read as the loss, and says so

def test_a_loss_under_another_name_is_read_as_the_loss_and_named():
    zeroed = "\n".join(f"Epoch[1] Batch[{10 * i}]\tSpeed: 29.5 samples/sec\t\tMultiLogisticLoss={v:.6f}"
                       for i, v in enumerate([0.100427] + [0.0] * 7, 1))
    diagnosis = classify_text(zeroed)
    assert diagnosis.hypotheses and diagnosis.hypotheses[0].failure != "healthy", diagnosis.summary
    assert any("'multilogisticloss' was read as the loss" in n for n in diagnosis.input_notes), diagnosis.input_notes
    falling = "\n".join(f"Epoch[1] Batch[{10 * i}]\tSpeed: 29.5 samples/sec\t\tMultiLogisticLoss={2.0 / i:.6f}"
                        for i in range(1, 9))
    quiet = classify_text(falling)
    assert quiet.hypotheses and quiet.hypotheses[0].failure == "healthy", quiet.summary


def test_rl_and_gan_parts_are_never_read_as_the_loss():
    log = "\n".join(f"step {i} policy_loss={-0.1 * i:.3f} value_loss={0.0:.3f} d_loss={0.0:.3f}" for i in range(1, 9))
    diagnosis = classify_text(log)
    assert not any("was read as the loss" in n for n in diagnosis.input_notes), diagnosis.input_notes


def test_fairseq_running_averages_and_bracketed_keys_keep_their_loss():
    fairseq = "\n".join(f"| epoch 001:   {i}000 / 37483 loss={9.9 - 0.3 * i:.2f} ({10.5 - 0.2 * i:.2f}), wps=4632, "
                        f"lr=0.25, gnorm=1.02" for i in range(1, 6))
    assert parse_metrics_text(fairseq).get("loss").values == pytest.approx([9.6, 9.3, 9.0, 8.7, 8.4])
    bracketed = "2019-08-07 02:59:37,013 - __main__ - INFO - [epoch]: 199, [batch]: 23900, [loss]: 4.99\n" * 2
    assert parse_metrics_text(bracketed).get("loss") is not None


def test_a_saturated_softmax_loss_is_divergence_even_in_two_lines():
    assert failures(series_log(loss=[3.30735, 87.3366])).get("divergence", 0) >= 0.6
    assert "divergence" not in failures(series_log(loss=[3.30735, 3.1]))


def test_a_gradient_norm_in_the_thousands_is_exploding_even_in_two_lines():
    assert failures(series_log(loss=[2.1, 2.0], grad_norm=[1.4e7, 3.8e12])).get("exploding_gradients", 0) >= 0.7
    assert failures(series_log(loss=[2.1, 2.0], grad_norm=[1000.5, 1012.0])).get("exploding_gradients", 0) >= 0.6
    # early steps of a large model: large, yet not exploding
    assert "exploding_gradients" not in failures(series_log(loss=[9.1, 8.7], grad_norm=[249.0, 13.0]))
