"""Tests for fedenergy.codecs (pure numpy update codecs)."""

from __future__ import annotations

import math
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fedenergy.codecs import (
    CODEC_NAMES,
    GLOBAL_CODECS,
    MAX_QSGD_LEVELS,
    Codec,
    CodecSpec,
    Fp16,
    Int8,
    PayloadError,
    Qsgd,
    Stc,
    StcB,
    TopK,
    Uncompressed,
    decode,
    decode_global,
    encode,
    encode_global,
    expected_nbytes,
    expected_ratio,
    pack_payload,
    parse_codec,
    payload_layout,
    payload_nbytes,
    rice_parameter,
    stcb_budget,
    stcb_counts,
    topk_count,
    unpack_payload,
    uses_error_feedback,
)

MLP = {"fc1.weight": (32, 64), "fc1.bias": (32,), "fc2.weight": (10, 32), "fc2.bias": (10,)}
ALL_LABELS = [
    "none",
    "fp16",
    "int8",
    "int8:channel",
    "topk:0.01",
    "topk:0.1",
    "topk:1.0",
    "stc:0.01",
    "stc:0.09",
    "stc:0.5",
    "stcb:0.02",
    "stcb:0.005",
    "qsgd:1",
    "qsgd:4",
    "qsgd:7",
    "qsgd:8",
    "qsgd:16",
    "qsgd:127",
]
ALL_SPECS = [parse_codec(t) for t in ALL_LABELS]


def rand_update(template, seed=0, scale=0.01):
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in template.items()}


def shapes_of(arrays):
    return {k: v.shape for k, v in arrays.items()}


# Edge-case tensors: name -> array (float32).
def edge_tensors():
    rng = np.random.default_rng(42)
    return {
        "zeros_2d": np.zeros((4, 5), np.float32),
        "const_1d": np.full(17, 3.25, np.float32),
        "const_neg_4d": np.full((2, 3, 2, 2), -7.5, np.float32),
        "single": np.array([0.123], np.float32),
        "scalar_0d": np.array(-2.5, np.float32),
        "empty": np.zeros((0,), np.float32),
        "empty_2d": np.zeros((3, 0), np.float32),
        "normal_1d": rng.standard_normal(300).astype(np.float32),
        "normal_2d": rng.standard_normal((16, 33)).astype(np.float32),
        "normal_4d": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "huge": (rng.standard_normal((8, 8)) * 1e30).astype(np.float32),
        "fmax": np.array([3.0e38, -3.0e38, 1.0, 0.0], np.float32),
        "tiny": (rng.standard_normal(50) * 1e-30).astype(np.float32),
        "subnormal": np.array([1e-45, 3e-45, 0.0, -1e-45, 7e-44], np.float32),
        "mixed_mag": np.array([1e-8, -1e4, 3.0, 1e-3, -2e-6, 6e4, 0.0], np.float32),
        "one_outlier": np.concatenate([np.zeros(99), [5.0]]).astype(np.float32),
        "channel_mixed": np.stack(
            [np.full(6, 1.0), np.linspace(-1, 1, 6), np.zeros(6), np.linspace(0, 1e3, 6)]
        ).astype(np.float32),
    }


EDGE = edge_tensors()


# ------------------------------------------------------------------------------------------
# Spec and parsing
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ALL_LABELS + ["topk:0.001", "topk:0.25", "qsgd:2"])
def test_label_roundtrip(text):
    spec = parse_codec(text)
    assert spec.label() == text
    assert parse_codec(spec.label()) == spec


def test_parse_aliases_and_defaults():
    assert parse_codec(" INT8 ") == Int8()
    assert parse_codec("int8:tensor") == Int8()
    assert parse_codec("int8:channel") == Int8(per_channel=True)
    assert parse_codec("topk") == TopK(fraction=0.01)
    assert parse_codec("STC") == Stc(fraction=0.01)
    assert parse_codec("stc:0.09").label() == "stc:0.09"
    assert parse_codec("STCB") == StcB(fraction=0.01)
    assert parse_codec("stcb:0.02").label() == "stcb:0.02"
    assert parse_codec("stcb:2e-2") == StcB(fraction=0.02)
    assert parse_codec("qsgd") == Qsgd(levels=16)
    assert parse_codec("topk:1e-3").fraction == 0.001
    assert TopK(fraction=1).label() == "topk:1.0"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("gzip", "unknown codec"),
        ("", "unknown codec"),
        ("fp16:2", "no parameter"),
        ("none:x", "no parameter"),
        ("int8:row", "channel"),
        ("topk:0", "(0, 1]"),
        ("topk:1.5", "(0, 1]"),
        ("topk:nan", "(0, 1]"),
        ("topk:-0.1", "(0, 1]"),
        ("topk:abc", "not a number"),
        ("stc:0", "(0, 1]"),
        ("stc:abc", "not a number"),
        ("stcb:0", "(0, 1]"),
        ("stcb:50", "(0, 1]"),
        ("stcb:x", "not a number"),
        ("qsgd:0", "1..127"),
        ("qsgd:128", "1..127"),
        ("qsgd:2.5", "not an integer"),
    ],
)
def test_parse_errors(text, fragment):
    with pytest.raises(ValueError) as info:
        parse_codec(text)
    msg = str(info.value)
    assert fragment in msg
    assert "valid forms" in msg and "topk:<fraction" in msg


def test_parse_non_string():
    with pytest.raises(ValueError, match="valid forms"):
        parse_codec(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (TopK, {"fraction": 0.0}),
        (TopK, {"fraction": 2.0}),
        (TopK, {"fraction": float("inf")}),
        (TopK, {"fraction": True}),
        (Qsgd, {"levels": 0}),
        (Qsgd, {"levels": 128}),
        (Qsgd, {"levels": 2.0}),
        (Stc, {"fraction": 0.0}),
        (StcB, {"fraction": 1.5}),
        (Int8, {"per_channel": "yes"}),
    ],
)
def test_spec_validation(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (Fp16, {"per_channel": True}),
        (Int8, {"fraction": 0.5}),
        (Stc, {"levels": 4}),
        (StcB, {"per_channel": True}),
        (Fp16, {"levels": 4}),
        (Uncompressed, {"fraction": 0.5}),
    ],
)
def test_codecs_take_only_their_own_parameters(cls, kwargs):
    with pytest.raises(TypeError):
        cls(**kwargs)


def test_codec_spec_is_the_codec_type():
    assert CodecSpec is Codec
    with pytest.raises(TypeError):
        CodecSpec("int8")  # abstract: a codec is one of the concrete classes
    assert all(isinstance(parse_codec(t), CodecSpec) for t in ALL_LABELS)


@given(st.floats(min_value=1e-9, max_value=1.0, exclude_min=False))
def test_topk_label_roundtrip_property(f):
    spec = TopK(fraction=f)
    assert parse_codec(spec.label()) == spec


@given(st.integers(1, MAX_QSGD_LEVELS))
def test_qsgd_label_roundtrip_property(s):
    spec = Qsgd(levels=s)
    assert parse_codec(spec.label()) == spec


def test_uses_error_feedback():
    assert uses_error_feedback(parse_codec("topk:0.01"))
    assert uses_error_feedback(parse_codec("stc:0.09"))
    assert uses_error_feedback(parse_codec("stcb:0.02"))
    for t in ("none", "fp16", "int8", "int8:channel", "qsgd:16"):
        assert not uses_error_feedback(parse_codec(t))


def test_codec_declarations():
    downlink = {s.label() for s in ALL_SPECS if s.downlink}
    assert downlink == {"none", "fp16", "int8", "int8:channel"}
    assert set(GLOBAL_CODECS) == {"none", "fp16", "int8"} and set(CODEC_NAMES) >= set(GLOBAL_CODECS)
    for spec in ALL_SPECS:
        assert spec.error_feedback == uses_error_feedback(spec)
        assert spec.name in CODEC_NAMES and spec.label().split(":")[0] == spec.name
        bound = spec.error_bound()
        assert isinstance(bound, str) and bound
        assert (bound == "exact") == (spec.label() == "none")  # only none is lossless
    assert "/4" in parse_codec("qsgd:4").error_bound()


def test_topk_count():
    assert topk_count(0, 0.01) == 0
    assert topk_count(10, 0.01) == 1  # small tensors keep at least one entry
    assert topk_count(100, 0.07) == 7  # no float off-by-one (0.07*100 = 7.000000000000001)
    assert topk_count(2048, 0.01) == 21
    assert topk_count(5, 1.0) == 5
    assert topk_count(3, 0.5) == 2


# ------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_LABELS)
def test_encoded_size_matches_layout(spec):
    upd = rand_update(MLP)
    payload, _ = encode(upd, spec, rng=np.random.default_rng(1))
    layout = payload_layout(spec, MLP)
    assert list(payload) == list(layout)
    for key, (dtype, length) in layout.items():
        assert payload[key].dtype == dtype and payload[key].shape == (length,)
    assert payload_nbytes(payload) == expected_nbytes(spec, MLP)
    ratio = 4 * sum(math.prod(s) for s in MLP.values()) / payload_nbytes(payload)
    assert ratio == pytest.approx(expected_ratio(spec, MLP))


def test_size_promises():
    mlp_raw = 4 * 2410
    big = {"w": (256, 256)}  # 65,536 entries: uint16 indices still fit
    huge = {"w": (1000, 100)}  # 100,000 entries: int32 indices
    assert expected_ratio(parse_codec("none"), MLP) == 1.0
    assert expected_ratio(parse_codec("fp16"), MLP) == 2.0
    assert expected_ratio(parse_codec("int8"), MLP) >= 3.9  # 4 tensors, 8 header bytes each
    assert expected_ratio(parse_codec("int8"), big) >= 3.99
    assert expected_ratio(parse_codec("int8:channel"), big) >= 3.8
    # top-k at f = 0.01: ~1/(f * (2 + 2) / 4) = 100x with uint16 idx + fp16 val
    assert expected_ratio(parse_codec("topk:0.01"), big) == pytest.approx(100, rel=0.01)
    assert expected_ratio(parse_codec("topk:0.01"), huge) == pytest.approx(400 / 6, rel=0.01)
    assert expected_ratio(parse_codec("topk:0.01"), MLP) >= 50  # project goal, even on a tiny MLP
    assert expected_nbytes(parse_codec("topk:0.01"), MLP) == (21 + 1 + 4 + 1) * 4 + 4 * 4
    assert mlp_raw / expected_nbytes(parse_codec("topk:0.01"), MLP) == pytest.approx(77.74, 0.01)
    # qsgd: 2 bits (s=1), 4 bits (s<=7), 8 bits (s>=8) per entry + a 4-byte norm per tensor
    assert expected_ratio(parse_codec("qsgd:1"), big) == pytest.approx(16, rel=0.01)
    assert expected_ratio(parse_codec("qsgd:7"), big) == pytest.approx(8, rel=0.01)
    assert expected_ratio(parse_codec("qsgd:16"), big) == pytest.approx(4, rel=0.01)


def test_topk_index_dtype_boundary():
    spec = parse_codec("topk:0.001")
    p1, _ = encode({"w": np.ones(65536, np.float32)}, spec)
    p2, _ = encode({"w": np.ones(65537, np.float32)}, spec)
    assert p1["w.idx"].dtype == np.uint16
    assert p2["w.idx"].dtype == np.int32
    # the index dtype is part of validation
    bad = dict(p1, **{"w.idx": p1["w.idx"].astype(np.int32)})
    with pytest.raises(PayloadError, match="dtype"):
        decode(bad, spec, {"w": (65536,)})
    bad = dict(p2, **{"w.idx": p2["w.idx"].astype(np.uint16)})
    with pytest.raises(PayloadError, match="dtype"):
        decode(bad, spec, {"w": (65537,)})


def test_small_tensor_keeps_one_entry():
    spec = parse_codec("topk:0.01")
    bias = np.array([0.1, -0.5, 0.2, 0, 0, 0, 0, 0, 0, 0.3], np.float32)
    payload, res = encode({"b": bias}, spec)
    assert payload["b.idx"].tolist() == [1]
    out = decode(payload, spec, {"b": (10,)})["b"]
    assert out[1] == -0.5 and np.count_nonzero(out) == 1
    np.testing.assert_array_equal(res["b"] + out, bias)


# ------------------------------------------------------------------------------------------
# Round-trip error bounds
# ------------------------------------------------------------------------------------------


def ulp32(x):
    return np.spacing(np.abs(np.asarray(x, np.float32))).astype(np.float64)


@pytest.mark.parametrize("name", list(EDGE))
def test_none_exact(name):
    x = EDGE[name]
    spec = parse_codec("none")
    out = decode(encode({"t": x}, spec)[0], spec, {"t": x.shape})["t"]
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("name", list(EDGE))
def test_fp16_bound(name):
    x = EDGE[name]
    spec = parse_codec("fp16")
    out = decode(encode({"t": x}, spec)[0], spec, {"t": x.shape})["t"]
    assert out.dtype == np.float32 and out.shape == x.shape
    xa, oa = x.astype(np.float64), out.astype(np.float64)
    normal = (np.abs(xa) >= 2.0**-14) & (np.abs(xa) <= 65504)
    assert np.all(np.abs(oa - xa)[normal] <= 2.0**-11 * np.abs(xa)[normal])
    small = np.abs(xa) < 2.0**-14  # subnormal half range: absolute error <= half a step
    assert np.all(np.abs(oa - xa)[small] <= 2.0**-25)
    big = np.abs(xa) > 65504  # saturates
    assert np.all(oa[big] == np.sign(xa[big]) * 65504)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("name", list(EDGE))
def test_int8_bound(name, per_channel):
    x = EDGE[name]
    spec = Int8(per_channel=per_channel)
    payload, _ = encode({"t": x}, spec)
    out = decode(payload, spec, {"t": x.shape})["t"]
    assert out.dtype == np.float32 and out.shape == x.shape
    scale = payload["t.scale"].astype(np.float64)
    if per_channel and x.ndim >= 2:
        assert scale.shape == (x.shape[0],)
        s = np.broadcast_to(scale.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape)
    else:
        assert scale.shape == (1,)
        s = np.full(x.shape, scale[0])
    err = np.abs(out.astype(np.float64) - x.astype(np.float64))
    assert np.all(err <= s / 2 + ulp32(x) + ulp32(out))
    if x.size and np.all(x == x.reshape(-1)[0]):
        np.testing.assert_array_equal(out, x)  # constant tensors are exact (scale 0)


def test_int8_per_channel_tighter():
    x = EDGE["channel_mixed"]
    spec_t, spec_c = parse_codec("int8"), parse_codec("int8:channel")
    et = np.abs(decode(encode({"t": x}, spec_t)[0], spec_t, {"t": x.shape})["t"] - x)
    ec = np.abs(decode(encode({"t": x}, spec_c)[0], spec_c, {"t": x.shape})["t"] - x)
    assert ec[:3].max() < et[:3].max()
    assert np.all(ec[0] == 0) and np.all(ec[2] == 0)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("name", list(EDGE))
def test_topk_roundtrip_and_ef_identity(name, fraction):
    x = EDGE[name]
    spec = TopK(fraction=fraction)
    rng = np.random.default_rng(3)
    old_res = (rng.standard_normal(x.shape) * 1e-3).astype(np.float32)
    if name in ("huge", "fmax"):
        old_res = np.zeros_like(x)  # keep update + residual finite
    payload, new_res = encode({"t": x}, spec, residual={"t": old_res})
    out = decode(payload, spec, {"t": x.shape})["t"]
    assert out.dtype == np.float32 and out.shape == x.shape
    assert new_res["t"].dtype == np.float32 and new_res["t"].shape == x.shape
    corrected = (x + old_res).astype(np.float64).reshape(-1)
    o = out.astype(np.float64).reshape(-1)
    r = new_res["t"].astype(np.float64).reshape(-1)
    # update + old_residual == decoded + new_residual
    np.testing.assert_allclose(o + r, corrected, rtol=1e-6, atol=1e-30)
    idx = payload["t.idx"].astype(np.int64)
    k = topk_count(x.size, fraction)
    assert idx.size == k
    dropped = np.ones(x.size, bool)
    dropped[idx] = False
    assert np.all(o[dropped] == 0)
    assert np.all(r[dropped] == corrected[dropped].astype(np.float32))  # dropped mass -> residual
    if k and dropped.any():  # kept entries are the largest ones
        assert np.abs(corrected[idx]).min() >= np.abs(corrected[dropped]).max()
    if k:  # kept entries are fp16-exact relative to the per-tensor scale
        m = np.abs(corrected[idx]).max()
        assert np.all(
            np.abs(o[idx] - corrected[idx])
            <= 2.0**-11 * np.abs(corrected[idx]) + m * 2.0**-24 + ulp32(corrected[idx])
        )


@pytest.mark.parametrize("levels", [1, 3, 7, 8, 16, 127])
@pytest.mark.parametrize("name", list(EDGE))
def test_qsgd_bound(name, levels):
    x = EDGE[name]
    spec = Qsgd(levels=levels)
    payload, res = encode({"t": x}, spec, rng=np.random.default_rng(7))
    assert res is None
    out = decode(payload, spec, {"t": x.shape})["t"]
    assert out.dtype == np.float32 and out.shape == x.shape
    norm = float(payload["t.norm"][0])
    assert norm == (float(np.abs(x).max()) if x.size else 0.0)
    err = np.abs(out.astype(np.float64) - x.astype(np.float64))
    assert np.all(err <= norm / levels * (1 + 1e-6) + ulp32(out))
    assert np.all((out == 0) | (np.sign(out) == np.sign(x)))


@pytest.mark.parametrize("levels", [1, 4, 16])
def test_qsgd_unbiased(levels):
    x = np.array([0.3, -0.7, 1.0, 0.05, 0.0, -0.001, 0.5, 0.99], np.float32)
    spec = Qsgd(levels=levels)
    rng = np.random.default_rng(11)
    draws = 4000
    total = np.zeros(x.size)
    for _ in range(draws):
        total += decode(encode({"t": x}, spec, rng=rng)[0], spec, {"t": x.shape})["t"]
    mean = total / draws
    sigma = 1.0 / levels / 2 / math.sqrt(draws)  # per-element std <= (norm/s)/2, norm = 1
    assert np.all(np.abs(mean - x) <= 5 * sigma + 1e-7)


def test_qsgd_default_rng_and_packing_padding():
    x = np.linspace(-1, 1, 7).astype(np.float32)  # odd length -> padding nibble
    for levels in (1, 5):
        spec = Qsgd(levels=levels)
        payload, _ = encode({"t": x}, spec)  # rng=None -> fresh default generator
        assert payload["t.lvl"].dtype == np.uint8
        out = decode(payload, spec, {"t": (7,)})["t"]
        assert np.all(np.abs(out - x) <= 1 / levels + 1e-6)


# ------------------------------------------------------------------------------------------
# Error feedback
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["topk:0.05", "stc:0.05", "stcb:0.01"])
def test_ef_constant_update_sums_exactly(label):
    rng = np.random.default_rng(5)
    tmpl = {"w": (20, 30), "b": (10,)}
    u = {k: rng.standard_normal(s).astype(np.float32) for k, s in tmpl.items()}
    spec = parse_codec(label)
    residual = None
    total = {k: np.zeros(s) for k, s in tmpl.items()}
    rounds = 40
    for _ in range(rounds):
        payload, residual = encode(u, spec, residual=residual)
        dec = decode(payload, spec, tmpl)
        for k in tmpl:
            total[k] += dec[k]
    for k in tmpl:
        np.testing.assert_allclose(
            total[k] + residual[k], rounds * u[k].astype(np.float64), rtol=1e-5, atol=1e-4
        )


def test_ef_small_entry_eventually_sent():
    u = {"w": np.array([10.0] * 9 + [0.01], np.float32)}
    spec = parse_codec("topk:0.1")  # one entry per round
    residual = None
    sent_round = None
    for r in range(1, 20_000):
        payload, residual = encode(u, spec, residual=residual)
        if r == 1:
            assert 9 not in payload["w.idx"].tolist()
        if 9 in payload["w.idx"].tolist():
            sent_round = r
            break
    assert sent_round is not None and sent_round > 1
    assert residual["w"][9] == 0.0  # released: the accumulated mass went out


def test_ef_without_residual_equals_zero_residual():
    upd = rand_update(MLP, seed=9)
    spec = parse_codec("topk:0.01")
    p1, r1 = encode(upd, spec)
    p2, r2 = encode(upd, spec, residual={k: np.zeros_like(v) for k, v in upd.items()})
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    for k in r1:
        np.testing.assert_array_equal(r1[k], r2[k])


def test_residual_rules():
    upd = rand_update(MLP)
    with pytest.raises(ValueError, match="error feedback"):
        encode(upd, parse_codec("int8"), residual={k: np.zeros_like(v) for k, v in upd.items()})
    assert encode(upd, parse_codec("fp16"))[1] is None
    spec = parse_codec("topk:0.01")
    with pytest.raises(ValueError, match="same tensor names"):
        encode(upd, spec, residual={"fc1.weight": np.zeros((32, 64), np.float32)})
    bad = {k: np.zeros_like(v) for k, v in upd.items()}
    bad["fc1.bias"] = np.zeros(31, np.float32)
    with pytest.raises(ValueError, match="shape"):
        encode(upd, spec, residual=bad)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_rejects_non_finite_update(bad):
    upd = rand_update(MLP)
    upd["fc2.bias"][3] = bad
    for spec in ALL_SPECS:
        with pytest.raises(ValueError, match="NaN/inf"):
            encode(upd, spec)


def test_encode_rejects_bad_inputs():
    with pytest.raises(ValueError):
        encode({"w": np.array(["a"])}, parse_codec("none"))
    with pytest.raises(ValueError):
        encode({"w": np.array([1e300])}, parse_codec("none"))  # overflows float32
    with pytest.raises(TypeError):
        encode({"w": np.ones(3, np.float32)}, "fp16")  # type: ignore[arg-type]


def test_encode_accepts_float64_and_keeps_order():
    upd = {"z": np.ones((2, 2)), "a": np.arange(3.0)}
    payload, _ = encode(upd, parse_codec("fp16"))
    assert list(payload) == ["z.f16", "a.f16"]
    out = decode(payload, parse_codec("fp16"), {"z": (2, 2), "a": (3,)})
    assert list(out) == ["z", "a"] and out["a"].tolist() == [0.0, 1.0, 2.0]


# ------------------------------------------------------------------------------------------
# Downlink codec
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["none", "fp16", "int8", "int8:channel"])
def test_global_codec_roundtrip(text):
    spec = parse_codec(text)
    g = rand_update(MLP, seed=2, scale=0.3)
    payload = encode_global(g, spec)
    out = decode_global(payload, spec, shapes_of(g))
    for k in g:
        assert out[k].dtype == np.float32 and out[k].shape == g[k].shape
        assert np.max(np.abs(out[k] - g[k])) <= 0.01


@pytest.mark.parametrize("text", ["topk:0.01", "qsgd:16"])
def test_global_codec_rejects_uplink_only(text):
    with pytest.raises(ValueError, match="downlink"):
        encode_global(rand_update(MLP), parse_codec(text))
    with pytest.raises(ValueError, match="downlink"):
        decode_global({}, parse_codec(text), MLP)


# ------------------------------------------------------------------------------------------
# Hostile payloads
# ------------------------------------------------------------------------------------------


def valid(text, template=MLP, seed=0):
    spec = parse_codec(text)
    payload, _ = encode(rand_update(template, seed), spec, rng=np.random.default_rng(seed))
    return spec, dict(payload)


def reject(payload, spec, fragment, template=MLP):
    with pytest.raises(PayloadError) as info:
        decode(payload, spec, template)
    assert fragment in str(info.value), str(info.value)
    return str(info.value)


@pytest.mark.parametrize("text", ALL_LABELS)
def test_valid_payload_decodes(text):
    spec, payload = valid(text)
    out = decode(payload, spec, MLP)
    assert list(out) == list(MLP)
    for k, s in MLP.items():
        assert out[k].dtype == np.float32 and out[k].shape == s


@pytest.mark.parametrize("text", ALL_LABELS)
def test_missing_and_extra_keys(text):
    spec, payload = valid(text)
    key = next(iter(payload))
    missing = {k: v for k, v in payload.items() if k != key}
    reject(missing, spec, "missing keys")
    reject(dict(payload, **{"fc3.weight.q": np.zeros(3, np.int8)}), spec, "unexpected keys")
    reject(dict(payload, **{key + "x": payload[key]}), spec, "unexpected keys")
    odd = dict(payload)
    odd[7] = np.zeros(1, np.float32)  # non-string key
    reject(odd, spec, "unexpected keys")
    reject({}, spec, "missing keys")


@pytest.mark.parametrize("text", ALL_LABELS)
def test_wrong_dtype_shape_length(text):
    spec, payload = valid(text)
    for key, arr in payload.items():
        for dt in (np.float64, np.int64, np.uint8, np.int8, np.float16, np.bool_, object):
            if np.dtype(dt) == arr.dtype:
                continue
            reject(dict(payload, **{key: arr.astype(dt)}), spec, "dtype")
        reject(dict(payload, **{key: arr.reshape(1, -1)}), spec, "1-D")
        reject(
            dict(payload, **{key: np.array(arr[0]) if arr.size else np.array(0, arr.dtype)}),
            spec,
            "1-D",
        )  # 0-d array where a 1-D array is expected
        if arr.size:  # (an empty part, e.g. a dense STC tensor's .pos, cannot be truncated)
            reject(dict(payload, **{key: arr[:-1]}), spec, "length")  # truncated
        one = np.zeros(1, arr.dtype)
        reject(dict(payload, **{key: np.concatenate([arr, one])}), spec, "length")  # padded
        reject(dict(payload, **{key: arr.tolist()}), spec, "numpy.ndarray")
        reject(dict(payload, **{key: np.ma.masked_array(arr)}), spec, "numpy.ndarray")
        if arr.dtype.itemsize > 1:  # non-native byte order
            reject(dict(payload, **{key: arr.astype(arr.dtype.newbyteorder())}), spec, "dtype")


def test_not_a_mapping():
    spec, payload = valid("int8")
    for bad in (None, [1, 2], "w.q", list(payload.items())):
        reject(bad, spec, "mapping")


@pytest.mark.parametrize(
    "text",
    ["none", "fp16", "int8", "int8:channel", "topk:0.1", "stc:0.09", "stcb:0.02", "qsgd:16"],
)
def test_non_finite_values(text):
    spec, payload = valid(text)
    for key, arr in payload.items():
        if arr.dtype.kind != "f":
            continue
        for bad in (np.nan, np.inf, -np.inf):
            a = arr.copy()
            a[0] = bad
            reject(dict(payload, **{key: a}), spec, "NaN or inf")


@pytest.mark.parametrize(
    "text, key",
    [
        ("int8", "fc1.weight.scale"),
        ("int8:channel", "fc2.weight.scale"),
        ("topk:0.1", "fc1.bias.scale"),
        ("stc:0.09", "fc1.weight.mu"),
        ("stcb:0.02", "fc2.weight.mu"),
        ("qsgd:16", "fc2.weight.norm"),
        ("qsgd:3", "fc1.bias.norm"),
    ],
)
def test_negative_scale(text, key):
    spec, payload = valid(text)
    a = payload[key].copy()
    a[0] = -abs(a[0]) - 1.0
    reject(dict(payload, **{key: a}), spec, "negative scale")


def test_topk_index_attacks():
    spec, payload = valid("topk:0.1")
    idx = payload["fc1.weight.idx"]  # uint16, 205 entries of 2048
    assert idx.dtype == np.uint16 and idx.size == 205
    a = idx.copy()
    a[-1] = 2048
    reject(dict(payload, **{"fc1.weight.idx": a}), spec, "out of range")
    a[-1] = 65535
    reject(dict(payload, **{"fc1.weight.idx": a}), spec, "out of range")
    a = idx.copy()
    a[5] = a[4]
    reject(dict(payload, **{"fc1.weight.idx": a}), spec, "no duplicates")
    reject(dict(payload, **{"fc1.weight.idx": idx[::-1].copy()}), spec, "strictly increasing")
    # negative indices need a signed index dtype: a > 65536-entry tensor uses int32
    tmpl = {"w": (70000,)}
    spec2, p2 = valid("topk:0.001", tmpl)
    assert p2["w.idx"].dtype == np.int32
    a = p2["w.idx"].copy()
    a[0] = -1
    reject(dict(p2, **{"w.idx": a}), spec2, "negative index", tmpl)
    a[0] = 70000
    reject(dict(p2, **{"w.idx": np.sort(a)}), spec2, "out of range", tmpl)
    v = p2["w.val"].copy()
    v[0] = np.float16(2.0)
    reject(dict(p2, **{"w.val": v}), spec2, "|value| > 1", tmpl)


def test_qsgd_level_attacks():
    spec, payload = valid("qsgd:16")
    a = payload["fc1.bias.lvl"].copy()
    a[0] = 17
    reject(dict(payload, **{"fc1.bias.lvl": a}), spec, "exceeds s=16")
    a[0] = -128
    reject(dict(payload, **{"fc1.bias.lvl": a}), spec, "exceeds s=16")
    spec, payload = valid("qsgd:3")  # 4-bit packed, offset 8: nibbles 5..11 are valid
    a = payload["fc2.bias.lvl"].copy()
    a[0] = (a[0] & 0xF0) | 0x0F
    reject(dict(payload, **{"fc2.bias.lvl": a}), spec, "exceeds s=3")
    tmpl = {"w": (7,)}  # odd length: last nibble is padding and must encode level 0
    spec, payload = valid("qsgd:3", tmpl)
    a = payload["w.lvl"].copy()
    a[-1] = (a[-1] & 0x0F) | 0x90
    reject(dict(payload, **{"w.lvl": a}), spec, "padding", tmpl)
    spec, payload = valid("qsgd:1", tmpl)  # 2-bit packed: value 0 (level -2) is invalid
    a = payload["w.lvl"].copy()
    a[0] = a[0] & 0xFC
    reject(dict(payload, **{"w.lvl": a}), spec, "exceeds s=1", tmpl)


@pytest.mark.parametrize("src", ALL_LABELS)
def test_wrong_codec_payload(src):
    _, payload = valid(src)
    for dst in ALL_SPECS:
        if dst.label() == src:
            continue
        if payload_layout(dst, MLP) == payload_layout(parse_codec(src), MLP):
            continue  # identical wire layout (e.g. qsgd:8 vs qsgd:16): levels are range-checked
        with pytest.raises(PayloadError):
            decode(payload, dst, MLP)


def test_wrong_template():
    spec, payload = valid("int8")
    tmpl = dict(MLP, **{"fc1.weight": (64, 32)})  # same size, different shape: q length fine
    out = decode(payload, spec, tmpl)
    assert out["fc1.weight"].shape == (64, 32)
    reject(payload, spec, "length", dict(MLP, **{"fc1.weight": (32, 65)}))
    reject(payload, spec, "missing keys", dict(MLP, extra=(3,)))


def test_huge_arrays_rejected_without_allocation():
    spec, payload = valid("topk:0.01")
    huge_idx = np.zeros(4_000_000, np.uint16)  # "declared count" far beyond the template
    huge_q = np.zeros(8_000_000, np.int8)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(PayloadError, match="length"):
            decode(dict(payload, **{"fc1.weight.idx": huge_idx}), spec, MLP)
        spec8, p8 = valid("int8")
        tracemalloc.reset_peak()
        with pytest.raises(PayloadError, match="length"):
            decode(dict(p8, **{"fc1.weight.q": huge_q}), spec8, MLP)
        _, peak = tracemalloc.get_traced_memory()
        assert time.perf_counter() - t0 < 1.0
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


@pytest.mark.parametrize("text", ALL_LABELS)
def test_decode_allocation_bounded_by_template(text):
    spec, payload = valid(text, {"w": (500, 500)})
    tracemalloc.start()
    try:
        decode(payload, spec, {"w": (500, 500)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # output (4 B/entry) plus bounded temporaries; top-k at f=1 needs intp indices (16 B/entry);
    # STC's position decoder needs ~16 B per kept entry (int64 gaps and one temporary)
    per_entry = {"topk:1.0": 16}.get(text, 5)
    if spec.name in ("stc", "stcb"):
        per_entry = 5 + 16 * (8 * payload["w.sign"].size) / 250_000  # ~16 B per kept entry
    assert peak <= per_entry * 250_000 + (1 << 20)


def test_decode_bad_template_and_spec_are_caller_errors():
    spec, payload = valid("fp16")
    with pytest.raises(ValueError) as info:
        decode(payload, spec, {"w": (-1, 3)})
    assert not isinstance(info.value, PayloadError)
    with pytest.raises(TypeError):
        decode(payload, "fp16", MLP)  # type: ignore[arg-type]


def test_empty_template():
    for spec in ALL_SPECS:
        payload, _ = encode({}, spec)
        assert payload == {}
        assert decode({}, spec, {}) == {}
        assert expected_ratio(spec, {}) == 1.0


def test_flower_arrayrecord_roundtrip():
    flwr_app = pytest.importorskip("flwr.app")
    for spec in ALL_SPECS:
        upd = rand_update(MLP, seed=4)
        payload, _ = encode(upd, spec, rng=np.random.default_rng(0))
        record = flwr_app.ArrayRecord({k: flwr_app.Array(v) for k, v in payload.items()})
        back = {k: record[k].numpy() for k in record}
        direct = decode(payload, spec, MLP)
        via = decode(back, spec, MLP)
        for k in MLP:
            np.testing.assert_array_equal(direct[k], via[k])


@pytest.mark.parametrize("text", ALL_LABELS)
def test_pack_unpack_roundtrip(text):
    spec, payload = valid(text)
    blob = pack_payload(payload, spec, MLP)
    assert blob.dtype == np.uint8 and blob.shape == (expected_nbytes(spec, MLP),)
    back = unpack_payload(blob, spec, MLP)
    assert list(back) == list(payload)
    for k in payload:
        np.testing.assert_array_equal(back[k], payload[k])
        assert back[k].dtype == payload[k].dtype
    direct, via = decode(payload, spec, MLP), decode(back, spec, MLP)
    for k in MLP:
        np.testing.assert_array_equal(direct[k], via[k])


def test_unpack_hostile_blobs():
    spec, payload = valid("topk:0.01")
    blob = pack_payload(payload, spec, MLP)
    for bad, fragment in [
        (blob[:-1], "bytes"),
        (np.concatenate([blob, blob[:1]]), "bytes"),
        (np.zeros(10**7, np.uint8), "bytes"),
        (blob.astype(np.int8), "uint8"),
        (blob.reshape(1, -1), "1-D"),
        (np.array(5, np.uint8), "1-D"),
        (blob.tolist(), "ndarray"),
    ]:
        with pytest.raises(PayloadError, match=fragment):
            unpack_payload(bad, spec, MLP)
    corrupt = blob.copy()
    corrupt[0:2] = 0xFF  # first index of fc1.weight -> 65535, out of range
    with pytest.raises(PayloadError, match="out of range|strictly increasing"):
        decode(unpack_payload(corrupt, spec, MLP), spec, MLP)
    with pytest.raises(PayloadError, match="missing keys"):
        pack_payload({}, spec, MLP)


def test_pack_cuts_flower_overhead():
    flwr_app = pytest.importorskip("flwr.app")
    serde = pytest.importorskip("flwr.common.serde")
    spec, payload = valid("topk:0.01")
    upd = rand_update(MLP)
    raw = serde.array_record_to_proto(
        flwr_app.ArrayRecord({k: flwr_app.Array(v) for k, v in upd.items()})
    ).ByteSize()
    flat = serde.array_record_to_proto(
        flwr_app.ArrayRecord({k: flwr_app.Array(v) for k, v in payload.items()})
    ).ByteSize()
    record = flwr_app.ArrayRecord({"update": flwr_app.Array(pack_payload(payload, spec, MLP))})
    packed = serde.array_record_to_proto(record).ByteSize()
    assert packed < flat / 5
    assert raw / packed > 30  # vs 77.7x on raw bytes: ~170 B of Array metadata remain
    out = decode(unpack_payload(record["update"].numpy(), spec, MLP), spec, MLP)
    assert all(out[k].shape == s for k, s in MLP.items())


# ------------------------------------------------------------------------------------------
# STC (sparse ternary compression with Golomb-Rice coded positions)
# ------------------------------------------------------------------------------------------


def rice_bytes(gaps, b, nbytes, extra_bits=()):
    """Independent reference encoder: remainders (b bits each, LSB first), then unary quotients
    (q ones + a zero), then ``extra_bits``; little-endian bit order, zero-padded to nbytes."""
    bits = []
    for g in gaps:
        bits += [(g >> j) & 1 for j in range(b)]
    for g in gaps:
        bits += [1] * (g >> b) + [0]
    bits += list(extra_bits)
    assert len(bits) <= 8 * nbytes, "does not fit the layout"
    bits += [0] * (8 * nbytes - len(bits))
    return np.packbits(np.array(bits, np.uint8), bitorder="little")


def stc_bound_bits(n, k):
    return min(k * (b + 1) + ((n - k) >> b) for b in range(40))


def test_rice_parameter_minimises_the_bound():
    for n in (2, 10, 32, 100, 320, 2048, 65536, 10**6):
        for f in (0.001, 0.01, 0.09, 0.2, 0.5, 0.9):
            k = topk_count(n, f)
            if k >= n:
                continue
            b = rice_parameter(n, k)
            assert k * (b + 1) + ((n - k) >> b) == stc_bound_bits(n, k)
    assert rice_parameter(10, 10) == 0 and rice_parameter(0, 0) == 0


def test_stc_exact_sizes():
    spec = parse_codec("stc:0.09")
    # per tensor: mu (4 B) + ceil(k/8) sign bytes + ceil((k*b + k + ((n-k) >> b)) / 8) bytes
    expected = 0
    for shape in MLP.values():
        n = math.prod(shape)
        k = topk_count(n, 0.09)
        expected += 4 + -(-k // 8) + -(-stc_bound_bits(n, k) // 8)
    assert expected_nbytes(spec, MLP) == expected == 190
    assert expected_ratio(spec, MLP) == pytest.approx(9640 / 190) and 9640 / 190 >= 50
    assert expected_nbytes(parse_codec("stc:0.01"), MLP) == 51
    # dense STC (f = 1): no positions, one sign bit per entry
    assert expected_nbytes(parse_codec("stc:1.0"), MLP) == 4 * 4 + 256 + 4 + 40 + 2
    big = {"w": (256, 256)}
    assert expected_nbytes(parse_codec("stc:0.01"), big) == 4 + 82 + -(
        -stc_bound_bits(65536, 656) // 8
    )
    # positions cost ~log2(1/f) + 2 bits, within 15% of the entropy bound log2 C(n, k)
    n, k = 65536, 656
    log2_binom = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
    assert log2_binom < stc_bound_bits(n, k) < 1.15 * log2_binom


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("name", list(EDGE))
def test_stc_roundtrip_and_ef_identity(name, fraction):
    x = EDGE[name]
    spec = Stc(fraction=fraction)
    rng = np.random.default_rng(3)
    old_res = (rng.standard_normal(x.shape) * 1e-3).astype(np.float32)
    if name in ("huge", "fmax"):
        old_res = np.zeros_like(x)
    payload, new_res = encode({"t": x}, spec, residual={"t": old_res})
    assert payload_nbytes(payload) == expected_nbytes(spec, {"t": x.shape})
    out = decode(payload, spec, {"t": x.shape})["t"]
    assert out.dtype == np.float32 and out.shape == x.shape
    corrected = (x + old_res).astype(np.float32).astype(np.float64).reshape(-1)
    o = out.astype(np.float64).reshape(-1)
    r = new_res["t"].astype(np.float64).reshape(-1)
    # EF identity, up to the float32 rounding of new_residual = corrected - decoded
    assert np.all(np.abs(o + r - corrected) <= ulp32(np.maximum(np.abs(corrected), np.abs(o))))
    k = topk_count(x.size, fraction)
    if not k:
        return
    order = np.argsort(-np.abs(corrected), kind="stable")
    kept_mag = np.abs(corrected[order[:k]])
    mu = float(payload["t.mu"][0])
    assert mu == pytest.approx(kept_mag.mean(), rel=1e-6)
    nz = o != 0
    assert np.count_nonzero(nz) == (k if mu > 0 else 0)
    assert np.all(np.abs(o[nz]) == np.float32(mu))  # ternary: every sent value is +-mu
    sent_nonzero = nz & (corrected != 0)
    assert np.all(np.sign(o[sent_nonzero]) == np.sign(corrected[sent_nonzero]))
    if k < x.size and mu > 0:  # kept entries are the largest ones; dropped ones go to residual
        assert np.abs(corrected[nz]).min() >= np.abs(corrected[~nz]).max()
        assert np.all(r[~nz] == corrected[~nz])
    # error bound of a kept entry: ||x| - mu| <= max(max|kept| - mu, mu - min|kept|)
    bound = max(kept_mag.max() - mu, mu - kept_mag.min())
    err = np.abs(o[nz] - corrected[nz])
    assert np.all(err <= bound * (1 + 1e-6) + ulp32(corrected[nz]))


def test_stc_positions_match_topk_and_known_stream():
    x = np.zeros(100, np.float32)
    picks = [0, 1, 7, 50, 98, 99, 3, 20, 64, 33]  # 10 of 100 -> b = 3
    x[picks] = np.linspace(1, 2, 10) * np.where(np.arange(10) % 2, -1, 1)
    spec = parse_codec("stc:0.1")
    payload, res = encode({"t": x}, spec)
    idx = sorted(picks)
    gaps = np.diff([-1] + idx) - 1
    b = rice_parameter(100, 10)
    assert b == 3 and payload["t.pos"].size == -(-(10 * 4 + (90 >> 3)) // 8)
    np.testing.assert_array_equal(payload["t.pos"], rice_bytes(gaps, b, payload["t.pos"].size))
    out = decode(payload, spec, {"t": (100,)})["t"]
    assert sorted(np.flatnonzero(out).tolist()) == idx
    np.testing.assert_array_equal(np.sign(out[idx]), np.sign(x[idx]))
    np.testing.assert_allclose(out + res["t"], x, atol=1e-6)


def test_stc_hostile_positions_and_signs():
    n, b = 100, 3  # k = 10 entries
    tmpl = {"t": (n,)}
    spec, payload = valid("stc:0.1", tmpl)
    size = payload["t.pos"].size

    def with_pos(pos):
        return dict(payload, **{"t.pos": pos})

    ok = rice_bytes([0] * 9 + [90], b, size)  # last index = 99: valid
    assert decode(with_pos(ok), spec, tmpl)["t"][99] != 0
    reject(with_pos(rice_bytes([0] * 9 + [91], b, size)), spec, "out of range", tmpl)
    reject(
        with_pos(rice_bytes([88, 0, 0, 0, 0, 0, 0, 0, 0, 3], b, size)), spec, "out of range", tmpl
    )
    # 9 terminators, then ones up to the end of the unary part (21 bits): fewer than 10 gaps
    # (trailing zero padding is not a loophole: it is read as gaps of 0, i.e. valid indices)
    short = rice_bytes([0] * 9, b, size, [0, 0, 0] + [1] * 12)
    reject(with_pos(short), spec, "truncated", tmpl)
    ones = np.full(size, 0xFF, np.uint8)  # no terminators at all...
    ones[-1] = 0x07  # ...in the 51 bits of the layout (the last 5 bits are padding)
    reject(with_pos(ones), spec, "truncated", tmpl)
    reject(with_pos(np.full(size, 0xFF, np.uint8)), spec, "padding", tmpl)
    reject(with_pos(rice_bytes([0] * 10, b, size, [1, 0])), spec, "more than 10 gaps", tmpl)
    padded = rice_bytes([0] * 10, b, size)
    padded[-1] |= 0x80  # a bit beyond the layout's k*b + U bits
    reject(with_pos(padded), spec, "padding", tmpl)
    # duplicate / decreasing indices are not expressible (gaps >= 0), and a wrong-length stream
    # (truncated, padded, huge) or dtype is rejected before it is parsed
    reject(with_pos(payload["t.pos"][:-1]), spec, "length", tmpl)
    reject(with_pos(np.zeros(10**7, np.uint8)), spec, "length", tmpl)
    reject(with_pos(payload["t.pos"].view(np.int8)), spec, "dtype", tmpl)
    sign = payload["t.sign"].copy()  # 10 signs in 2 bytes: bits 10..15 are padding
    sign[-1] |= 0x10
    reject(dict(payload, **{"t.sign": sign}), spec, "padding", tmpl)
    for mu in (-1.0, np.nan, np.inf):
        bad = dict(payload, **{"t.mu": np.array([mu], np.float32)})
        reject(bad, spec, "negative scale" if mu == -1.0 else "NaN or inf", tmpl)
    reject(dict(payload, **{"t.mu": np.array([1.0])}), spec, "dtype", tmpl)  # float64 mu
    reject(payload, spec, "length", {"t": (200,)})  # shape against the global model
    with pytest.raises(PayloadError):  # same lengths for 101 entries, but not a valid code
        decode(payload, spec, {"t": (101,)})


def test_stc_small_entry_eventually_sent():
    u = {"w": np.array([10.0] * 9 + [0.01], np.float32)}
    spec = parse_codec("stc:0.1")  # one entry per round
    residual, sent_round = None, None
    for r in range(1, 20_000):
        payload, residual = encode(u, spec, residual=residual)
        out = decode(payload, spec, {"w": (10,)})["w"]
        if out[9] != 0:
            sent_round = r
            break
    assert sent_round is not None and sent_round > 1
    assert residual["w"][9] == 0.0  # one kept entry: mu is exactly its magnitude


# ------------------------------------------------------------------------------------------
# STC-b (STC with a layer-aware byte budget)
# ------------------------------------------------------------------------------------------


def stc_tensor_bytes(n, k):
    """Independent size formula of one STC tensor: mu + sign bytes + Rice-bound position bytes."""
    return 4 + -(-k // 8) + (-(-stc_bound_bits(n, k) // 8) if 0 < k < n else 0)


def stcb_counts_of(label, template):
    """Kept entries per tensor, read back from the wire layout (8 sign bits per sign byte)."""
    spec = parse_codec(label)
    sizes = tuple(math.prod(s) for s in template.values())
    counts = dict(zip(template, stcb_counts(sizes, spec.fraction), strict=True))
    layout = payload_layout(spec, template)
    for name, k in counts.items():
        assert layout[f"{name}.sign"] == (np.dtype(np.uint8), -(-k // 8))
    return counts


def test_stcb_exact_sizes_on_the_mlp():
    spec = parse_codec("stcb:0.02")
    assert stcb_budget(2410, 0.02) == 192  # floor(0.02 * 9640)
    counts = stcb_counts_of("stcb:0.02", MLP)
    # the biases go dense ternary (1 bit per entry), fc2.weight keeps 28%, fc1.weight 7%
    assert counts == {"fc1.weight": 144, "fc1.bias": 32, "fc2.weight": 91, "fc2.bias": 10}
    sizes = {k: math.prod(s) for k, s in MLP.items()}
    total = sum(stc_tensor_bytes(sizes[t], k) for t, k in counts.items())
    assert expected_nbytes(spec, MLP) == total == 191
    assert expected_ratio(spec, MLP) == pytest.approx(9640 / 191) and 9640 / 191 >= 50
    # one more fc1.weight entry would not fit the budget
    assert total - stc_tensor_bytes(2048, 144) + stc_tensor_bytes(2048, 145) > 192
    # fc2.weight could be sent dense ternary in 44 B, but only k <= n - 1 is "sparse enough"
    assert stc_tensor_bytes(320, 320) == 44 < stc_tensor_bytes(320, 91) + 2 * 8
    layout = payload_layout(spec, MLP)
    assert layout["fc2.bias.pos"][1] == 0 and layout["fc2.weight.pos"][1] > 0
    # same parts and dtypes as stc, only the lengths differ
    stc = payload_layout(parse_codec("stc:0.09"), MLP)
    assert [(k, dt) for k, (dt, _) in layout.items()] == [(k, dt) for k, (dt, _) in stc.items()]
    # a tighter budget makes the small tensors sparse too, and still fits
    counts = stcb_counts_of("stcb:0.005", MLP)
    assert counts == {"fc1.weight": 15, "fc1.bias": 3, "fc2.weight": 7, "fc2.bias": 2}
    assert expected_nbytes(parse_codec("stcb:0.005"), MLP) <= stcb_budget(2410, 0.005) == 48


def test_stcb_counts_depend_on_sizes_only():
    a = {"x.w": (32, 64), "x.b": (32,), "y.w": (10, 32), "y.b": (10,)}
    b = {"q": (2048,), "r": (4, 8), "s": (320,), "t": (10,)}
    assert [n for _, n in payload_layout(parse_codec("stcb:0.02"), a).values()] == [
        n for _, n in payload_layout(parse_codec("stcb:0.02"), b).values()
    ]
    # model order does not matter either: the rule visits tensors by size
    rev = dict(reversed(list(MLP.items())))
    assert stcb_counts_of("stcb:0.02", rev) == stcb_counts_of("stcb:0.02", MLP)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 5000), min_size=0, max_size=8),
    st.floats(min_value=1e-4, max_value=1.0),
)
def test_stcb_budget_property(sizes, fraction):
    sizes = tuple(sizes)
    counts = stcb_counts(sizes, fraction)
    assert len(counts) == len(sizes)
    for n, k in zip(sizes, counts, strict=True):
        assert (0 if n == 0 else 1) <= k <= n
    nbytes = sum(stc_tensor_bytes(n, k) for n, k in zip(sizes, counts, strict=True))
    template = {f"t{i}": (n,) for i, n in enumerate(sizes)}
    assert expected_nbytes(StcB(fraction=fraction), template) == nbytes
    budget = stcb_budget(sum(sizes), fraction)
    minimum = sum(stc_tensor_bytes(n, min(n, 1)) for n in sizes)
    assert nbytes <= max(budget, minimum)
    if budget >= minimum:
        assert nbytes <= budget
        # the largest tensor cannot take one more entry within the budget
        if sizes and max(sizes) > 0:
            i = max(range(len(sizes)), key=lambda j: (sizes[j], j))
            n, k = sizes[i], counts[i]
            if k < n:
                assert nbytes - stc_tensor_bytes(n, k) + stc_tensor_bytes(n, k + 1) > budget
        # dense ternary only where the sparse code could keep all but one entry as well
        for n, k in zip(sizes, counts, strict=True):
            if k == n > 1 and budget >= minimum:
                assert stc_tensor_bytes(n, n - 1) - stc_tensor_bytes(n, 1) <= budget


@pytest.mark.parametrize("label", ["stcb:0.02", "stcb:0.005", "stcb:0.05", "stcb:1.0"])
def test_stcb_roundtrip_and_ef_identity(label):
    spec = parse_codec(label)
    tmpl = dict(MLP, empty=(0,), scalar=())
    counts = stcb_counts_of(label, tmpl)
    rng = np.random.default_rng(7)
    upd = rand_update(tmpl, seed=7)
    old_res = {k: (rng.standard_normal(s) * 1e-3).astype(np.float32) for k, s in tmpl.items()}
    payload, new_res = encode(upd, spec, residual=old_res)
    assert payload_nbytes(payload) == expected_nbytes(spec, tmpl)
    blob = pack_payload(payload, spec, tmpl)
    out = decode(unpack_payload(blob, spec, tmpl), spec, tmpl)
    assert list(out) == list(tmpl)
    for name, shape in tmpl.items():
        corrected = (upd[name] + old_res[name]).astype(np.float64).reshape(-1)
        o = out[name].astype(np.float64).reshape(-1)
        r = new_res[name].astype(np.float64).reshape(-1)
        assert out[name].shape == shape and new_res[name].shape == shape
        bound = ulp32(np.maximum(np.abs(corrected), np.abs(o)))
        assert np.all(np.abs(o + r - corrected) <= bound)  # EF identity
        k = counts[name]
        nz = o != 0
        assert np.count_nonzero(nz) == k
        if not k:
            continue
        mu = float(payload[f"{name}.mu"][0])
        kept = np.abs(corrected[nz])
        assert mu == pytest.approx(kept.mean(), rel=1e-6)
        assert np.all(np.abs(o[nz]) == np.float32(mu))
        assert np.all(np.sign(o[nz]) == np.sign(corrected[nz]))
        if k < corrected.size:
            assert kept.min() >= np.abs(corrected[~nz]).max()
            assert np.all(r[~nz] == corrected[~nz])


def test_stcb_hostile_payloads():
    spec, payload = valid("stcb:0.005")  # fc1.bias: 3 of 32 entries, Golomb-Rice coded
    n, k = 32, 3
    b = rice_parameter(n, k)
    size = payload["fc1.bias.pos"].size
    assert size == -(-stc_bound_bits(n, k) // 8)

    def with_pos(pos):
        return dict(payload, **{"fc1.bias.pos": pos})

    assert decode(with_pos(rice_bytes([0, 0, 29], b, size)), spec, MLP)["fc1.bias"][31] != 0
    reject(with_pos(rice_bytes([0, 0, 30], b, size)), spec, "out of range")
    assert b == 3 and stc_bound_bits(n, k) == 3 * 3 + 3 + (29 >> 3) == 15  # 2 bytes
    short = [0] * (k * b) + [0, 0, 1, 1, 1, 1]  # 2 terminators, then ones to the end
    short = np.packbits(np.array(short + [0], np.uint8), bitorder="little")
    reject(with_pos(short), spec, "truncated")
    reject(with_pos(rice_bytes([0, 0, 0], b, size, [1, 0])), spec, "more than 3 gaps")
    reject(with_pos(np.full(size, 0xFF, np.uint8)), spec, "padding")
    reject(with_pos(np.zeros(size + 1, np.uint8)), spec, "length")
    sign = payload["fc1.bias.sign"].copy()
    sign[-1] |= 0x08  # bit 3 of 3 signs is padding
    reject(dict(payload, **{"fc1.bias.sign": sign}), spec, "padding")
    # dense tensors (fc2.bias: 10 of 10 at stcb:0.02) carry no positions at all
    spec, payload = valid("stcb:0.02")
    reject(dict(payload, **{"fc2.bias.pos": np.zeros(1, np.uint8)}), spec, "length")
    sign = payload["fc2.bias.sign"].copy()
    sign[-1] |= 0x04  # 10 signs in 2 bytes: bits 10..15 are padding
    reject(dict(payload, **{"fc2.bias.sign": sign}), spec, "padding")
    mu = dict(payload, **{"fc2.weight.mu": np.array([np.inf], np.float32)})
    reject(mu, spec, "NaN or inf")
    # an stc payload (same parts) is rejected by stcb and vice versa, on the lengths
    _, stc_payload = valid("stc:0.09")
    reject(stc_payload, spec, "length")
    reject(payload, parse_codec("stc:0.09"), "length")
    blob = pack_payload(payload, spec, MLP)
    with pytest.raises(PayloadError, match="requires 191"):
        unpack_payload(blob[:-1], spec, MLP)


def test_stcb_small_entry_eventually_sent():
    # stcb:0.03 on 100 entries: a 12-byte budget keeps 9 of the 100 entries per round
    u = {"w": np.array([10.0] * 99 + [0.01], np.float32)}
    spec = parse_codec("stcb:0.03")
    assert stcb_counts((100,), 0.03) == (9,)
    residual, sent_round = None, None
    for r in range(1, 20_000):
        payload, residual = encode(u, spec, residual=residual)
        out = decode(payload, spec, {"w": (100,)})["w"]
        if out[99] != 0:
            sent_round = r
            break
    assert sent_round is not None and sent_round > 1


# ------------------------------------------------------------------------------------------
# Property test: random hostile payloads only ever yield PayloadError or a valid result
# ------------------------------------------------------------------------------------------

FUZZ_TEMPLATE = {"w": (4, 6), "b": (5,), "s": (), "e": (0,)}
FUZZ_SPECS = [
    parse_codec(t)
    for t in (
        "none",
        "fp16",
        "int8",
        "int8:channel",
        "topk:0.2",
        "topk:1.0",
        "stc:0.2",
        "stc:0.5",
        "stc:1.0",
        "stcb:0.1",
        "qsgd:1",
        "qsgd:5",
        "qsgd:16",
    )
]
FUZZ_DTYPES = [
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.uint8,
    np.uint16,
    np.int16,
    np.int32,
    np.int64,
    np.bool_,
    np.complex64,
    object,
    "<U3",
    ">f4",
    ">u2",
]
SPECIAL = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    2.0,
    65504.0,
    1e38,
    -1e38,
    3.5e38,
    1e-45,
    np.nan,
    np.inf,
    -np.inf,
    127,
    128,
    -128,
    255,
    256,
    65535,
    65536,
    -1,
    23,
    24,
    5,
    4,
]
ALL_FUZZ_KEYS = sorted({k for sp in FUZZ_SPECS for k in payload_layout(sp, FUZZ_TEMPLATE)})


def _fuzz_base():
    out = {}
    for spec in FUZZ_SPECS:
        for seed in range(3):
            rng = np.random.default_rng(seed)
            upd = {
                k: (rng.standard_normal(s) * 10.0 ** (seed - 1)).astype(np.float32)
                for k, s in FUZZ_TEMPLATE.items()
            }
            out[(spec.label(), seed)] = encode(upd, spec, rng=rng)[0]
    return out


FUZZ_BASE = _fuzz_base()


def random_array(rng, like=None):
    """A random (often hostile) array; mutates ``like`` (a valid array) half of the time."""
    if like is not None and rng.random() < 0.5:
        arr = like.copy()
        if arr.size and rng.random() < 0.5:
            with np.errstate(all="ignore"):
                try:
                    arr[rng.integers(arr.size)] = SPECIAL[rng.integers(len(SPECIAL))]
                except (OverflowError, ValueError):
                    pass
        choice = rng.integers(5)
        if choice == 1:
            arr = arr[: rng.integers(arr.size + 1)]
        elif choice == 2:
            arr = np.concatenate([arr, arr[:1]])
        elif choice == 3:
            arr = arr[::-1].copy()
        elif choice == 4 and arr.size:
            arr = arr.reshape(1, -1) if rng.random() < 0.5 else np.array(arr[0])
        return arr
    dtype = np.dtype(FUZZ_DTYPES[rng.integers(len(FUZZ_DTYPES))])
    ndim = int(rng.choice([0, 1, 1, 1, 2]))
    shape = tuple(int(d) for d in rng.integers(0, 31, size=ndim))
    values = [SPECIAL[i] for i in rng.integers(len(SPECIAL), size=rng.integers(1, 5))]
    n = math.prod(shape)
    flat = [values[i % len(values)] for i in range(n)]
    with np.errstate(all="ignore"):
        try:
            return np.array(flat, dtype=np.float64).astype(dtype).reshape(shape)
        except (OverflowError, ValueError, TypeError):
            return np.zeros(shape, dtype=dtype)


@st.composite
def random_payload(draw):
    """Hypothesis picks the codec, base payload, mode and a seed; numpy generates the content."""
    spec = draw(st.sampled_from(FUZZ_SPECS))
    base = FUZZ_BASE[(spec.label(), draw(st.integers(0, 2)))]
    mode = draw(st.sampled_from([0, 1, 1, 1, 1, 1, 2, 2, 2, 2]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if mode == 1:  # valid structure, hostile values in a few entries
        payload = dict(base)
        keys = sorted(base)
        for i in rng.choice(len(keys), size=rng.integers(1, 4), replace=False):
            arr = base[keys[i]].copy()
            with np.errstate(all="ignore"):
                for j in rng.integers(arr.size, size=rng.integers(1, 4)) if arr.size else []:
                    try:
                        arr[j] = SPECIAL[rng.integers(len(SPECIAL))]
                    except (OverflowError, ValueError):
                        pass
            payload[keys[i]] = arr
    elif mode == 0:  # random subset of all keys any codec could use
        keys = rng.choice(ALL_FUZZ_KEYS, size=rng.integers(0, 13), replace=False)
        payload = {str(k): random_array(rng, base.get(str(k))) for k in keys}
    else:  # start from the valid payload and corrupt a few entries
        payload = dict(base)
        keys = sorted(base)
        for i in rng.choice(len(keys), size=rng.integers(0, 4), replace=False):
            payload[keys[i]] = random_array(rng, base[keys[i]])
        if payload and rng.random() < 0.2:
            payload.pop(keys[rng.integers(len(keys))], None)
        if rng.random() < 0.1:
            odd = ALL_FUZZ_KEYS + ["w", "w.", ".q", "w.q.q"]
            payload[odd[rng.integers(len(odd))]] = random_array(rng)
    return spec, payload


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_payload())
def test_fuzz_decode_only_payload_error_or_valid(case):
    spec, payload = case
    try:
        out = decode(payload, spec, FUZZ_TEMPLATE)
    except PayloadError as err:
        assert str(err)
        assert not str(err).startswith("malformed payload"), str(err)  # no safety-net hits
        event("rejected: " + str(err).split(": ", 1)[-1].split(" ")[0])
        return
    event("accepted")
    assert list(out) == list(FUZZ_TEMPLATE)
    for k, shape in FUZZ_TEMPLATE.items():
        assert type(out[k]) is np.ndarray
        assert out[k].dtype == np.float32 and out[k].shape == shape
        assert np.isfinite(out[k]).all()
