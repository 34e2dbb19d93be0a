"""BatchNorm running statistics travel raw through every codec (fedenergy.codecs.raw): exact
values, honest bytes, no error feedback on them, and a BN federation that stays finite."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedenergy import codecs as C
from fedenergy.cli import main
from fedenergy.codecs.raw import travels_raw
from fedenergy.protocol import ARRAYS_RECORD, CODEC_RECORD, PAYLOAD_KEY
from fedenergy.sim.tasks import get_task

LOSSY = ("topk:0.01", "stc:0.02", "stcb:0.02", "int8", "int8:channel", "qsgd:4", "fp16")


def _bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 300), torch.nn.BatchNorm1d(300), torch.nn.ReLU(), torch.nn.Linear(300, 3)
    )


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _train(model: torch.nn.Module, scale: float, steps: int = 30) -> None:
    """A few SGD steps on inputs of spread ``scale``: running_var moves towards ~scale**2."""
    gen = torch.Generator().manual_seed(int(scale * 1000))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        x = scale * torch.randn(64, 8, generator=gen)
        y = torch.randint(0, 3, (64,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_rule_keys_on_buffer_names_not_sizes():
    assert travels_raw("1.running_var") and travels_raw("layer1.0.bn1.running_mean")
    assert travels_raw("bn.num_batches_tracked") and travels_raw("running_var")
    assert not travels_raw("1.weight") and not travels_raw("1.bias")
    assert not travels_raw("my_running_var") and not travels_raw("running_var.weight")
    # the digits MLP has small bias tensors but no buffers: nothing of it travels raw
    digits = get_task("digits").make_model().state_dict()
    assert not any(travels_raw(k) for k in digits)


def test_mlp_payload_bytes_are_unchanged():
    """Hand count for the 64-32-10 MLP (no buffers), as before the rule: top-k 0.01 keeps
    ceil(0.01 n) entries per tensor (uint16 index + float16 value) and one float32 scale."""
    template = C.template_of(_state(get_task("digits").make_model()))
    kept = [math.ceil(0.01 * n) for n in (64 * 32, 32, 32 * 10, 10)]  # 21, 1, 4, 1
    assert C.expected_nbytes(C.parse_codec("topk:0.01"), template) == sum(4 * k + 4 for k in kept)
    # int8: one byte per entry + float32 scale and zero per tensor
    assert C.expected_nbytes(C.parse_codec("int8"), template) == 2410 + 4 * 8
    layout = C.payload_layout(C.parse_codec("stc:0.02"), template)
    assert not any(key.endswith(".raw") for key in layout)


@pytest.mark.parametrize("codec", LOSSY)
def test_layout_sends_buffers_as_float32_and_counts_them(codec):
    spec = C.parse_codec(codec)
    template = C.template_of(_state(_bn_model()))
    layout = C.payload_layout(spec, template)
    for name in ("1.running_mean", "1.running_var"):
        assert layout[f"{name}.raw"] == (np.dtype(np.float32), 300)
    assert layout["1.num_batches_tracked.raw"] == (np.dtype(np.float32), 1)
    # the trainable tensors keep the codec's own format; the buffers add 4 bytes per entry
    coded = {k: s for k, s in template.items() if not travels_raw(k)}
    assert C.expected_nbytes(spec, template) == C.expected_nbytes(spec, coded) + 4 * 601


@pytest.mark.parametrize("codec", LOSSY)
def test_bn_statistics_round_trip_exactly_over_rounds(codec):
    """Three rounds of client encode / server decode with error feedback: the server gets each
    round's running_var, running_mean and counter bit for bit, and the variance stays >= 0
    although it shrinks by orders of magnitude (which made top-k's residual overshoot)."""
    spec = C.parse_codec(codec)
    model = _bn_model()
    state = RecordDict()
    global_ = _state(model)
    means = []
    for scale in (3.0, 0.01, 0.001):
        _train(model, scale)
        new = _state(model)
        arrays, label = C.encode_reply_arrays(new, global_, spec, state, np.random.default_rng(0))
        content = RecordDict({ARRAYS_RECORD: arrays, CODEC_RECORD: label})
        full = C.numpy_arrays(C.decode_reply_content(content, spec, global_)[ARRAYS_RECORD])
        for name in ("1.running_var", "1.running_mean", "1.num_batches_tracked"):
            np.testing.assert_array_equal(full[name], new[name])
            assert full[name].dtype == new[name].dtype
        assert (full["1.running_var"] >= 0).all()
        means.append(float(full["1.running_var"].mean()))
        if C.uses_error_feedback(spec):  # no residual is kept for the statistics
            residual = C.numpy_arrays(state["fedenergy.residual"])
            assert not residual["1.running_var"].any()
            assert residual["0.weight"].any()  # but the weights' residual is there
        global_ = full
        model.load_state_dict({k: torch.from_numpy(v) for k, v in full.items()})
    assert means[1] < means[0] / 5 and means[2] < means[1] / 5  # the variance fell steeply


@pytest.mark.parametrize("codec", ["int8", "int8:channel", "fp16"])
def test_downlink_sends_bn_statistics_exactly(codec):
    spec = C.parse_codec(codec)
    model = _bn_model()
    _train(model, 0.01)
    arrays = {k: v.astype(np.float32) for k, v in _state(model).items()}
    template = C.template_of(arrays)
    decoded = C.decode_global(C.encode_global(arrays, spec), spec, template)
    for name in ("1.running_var", "1.running_mean", "1.num_batches_tracked"):
        np.testing.assert_array_equal(decoded[name], arrays[name])
    assert not np.array_equal(decoded["0.weight"], arrays["0.weight"])  # still lossy elsewhere


def _content_with(spec, new, global_, edit) -> RecordDict:
    template = C.template_of(global_)
    update = {k: v if travels_raw(k) else v - global_[k] for k, v in new.items()}
    payload, _ = C.encode(update, spec, None, np.random.default_rng(0))
    payload = {k: np.array(v) for k, v in payload.items()}
    edit(payload)
    blob = C.pack_payload(payload, spec, template)
    return RecordDict(
        {
            ARRAYS_RECORD: ArrayRecord({PAYLOAD_KEY: Array(blob)}),
            CODEC_RECORD: ConfigRecord({"codec": spec.label()}),
        }
    )


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda p: p["1.running_var.raw"].__setitem__(5, -0.5), "negative running variance"),
        (lambda p: p["1.running_mean.raw"].__setitem__(0, np.nan), "NaN or inf"),
        (lambda p: p["1.num_batches_tracked.raw"].__setitem__(0, 2.5), "whole number"),
        (lambda p: p["1.num_batches_tracked.raw"].__setitem__(0, 1e30), "whole number"),
    ],
)
def test_server_refuses_hostile_statistics(edit, reason):
    spec = C.parse_codec("topk:0.01")
    model = _bn_model()
    global_ = _state(model)
    _train(model, 1.0)
    content = _content_with(spec, _state(model), global_, edit)
    with pytest.raises(C.PayloadError, match=reason):
        C.decode_reply_content(content, spec, global_)


def test_cnn_federation_with_topk_and_int8_downlink_stays_finite(tmp_path):
    """The reported failure: cnn with topk:0.01 up and int8 down had a NaN loss from round 2
    (the aggregated running_var went negative). Now every round evaluates to a finite loss."""
    out = tmp_path / "run"
    args = ["simulate", "--task", "cnn", "--nodes", "2", "--rounds", "2", "--fraction", "1"]
    args += ["--fraction-evaluate", "0", "--codec", "topk:0.01", "--downlink", "int8"]
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    rounds = [r for r in summary["per_round"] if r["round"] > 0]
    assert len(rounds) == 2 and all(r["failed"] == 0 for r in rounds)
    assert all(r["loss"] is not None and math.isfinite(r["loss"]) for r in rounds)
