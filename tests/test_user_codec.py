"""A codec registered from outside the package (tests/user_codec.py) works like a built-in one:
parse_codec finds it, it round-trips, hostile payloads are refused, and a real federation runs
with it (the Ray workers load it from its dotted label) with its bytes in the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedenergy.codecs import (
    Fp16,
    PayloadError,
    TopK,
    decode,
    encode,
    expected_nbytes,
    pack_payload,
    parse_codec,
    payload_layout,
    payload_nbytes,
    register_codec,
    registered_codecs,
    unpack_payload,
    uses_error_feedback,
)
from fedenergy.ledger import Ledger
from fedenergy.settings import Settings
from tests.user_codec import HalfSign

ROOT = Path(__file__).resolve().parents[1]
NAME = "tests.user_codec.halfsign"
MLP = {"fc1.weight": (32, 64), "fc1.bias": (32,), "fc2.weight": (10, 32), "fc2.bias": (10,)}
EDGE = {"w": (4, 6), "b": (5,), "s": (), "e": (0,)}


def rand_update(template, seed=0, scale=0.01):
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in template.items()}


def test_parse_codec_finds_the_user_codec():
    assert NAME in registered_codecs()
    spec = parse_codec(f"{NAME}:64")
    assert spec == HalfSign(block=64) and spec.name == NAME
    assert spec.label() == f"{NAME}:64" and parse_codec(spec.label()) == spec
    assert parse_codec(" Tests.User_Codec.HalfSign ") == HalfSign()  # case-insensitive
    assert uses_error_feedback(spec) and not spec.downlink
    with pytest.raises(ValueError) as info:
        parse_codec(f"{NAME}:0")
    assert "block must be >= 1" in str(info.value) and f"{NAME}:<block size" in str(info.value)
    with pytest.raises(ValueError) as info:
        parse_codec("halfsign")  # registered under its dotted name only
    assert "unknown codec name" in str(info.value) and NAME in str(info.value)
    assert Settings(codec=f"{NAME}:8").validate().codec == f"{NAME}:8"


def test_a_fresh_process_loads_the_codec_from_its_label():
    """What a Ray worker or a SuperNode does: parse the label without importing the module."""
    code = (
        "import sys\n"
        "from fedenergy.codecs import parse_codec\n"
        "assert 'tests.user_codec' not in sys.modules\n"
        f"print(parse_codec('{NAME}:32').label())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{NAME}:32"


def test_unknown_and_unimportable_dotted_names():
    for text, fragment in [
        ("no_such_pkg.codecs.x:1", "cannot import module 'no_such_pkg.codecs'"),
        ("tests.user_codec.fullsign", "does not register codec 'tests.user_codec.fullsign'"),
        ("tests..x", "unknown codec name"),
    ]:
        with pytest.raises(ValueError) as info:
            parse_codec(text)
        assert fragment in str(info.value) and "valid forms" in str(info.value)


def test_register_codec_rules():
    register_codec(NAME, HalfSign)  # the same class again: a no-op

    @dataclass(frozen=True)
    class Other(HalfSign):
        name = NAME

    with pytest.raises(ValueError, match="already registered"):
        register_codec(NAME, Other)
    with pytest.raises(ValueError, match="has name"):
        register_codec("tests.user_codec.other", HalfSign)
    with pytest.raises(ValueError, match="lower-case"):
        register_codec("Bad Name", HalfSign)
    with pytest.raises(TypeError, match="Codec subclass"):
        register_codec(NAME, object)  # type: ignore[arg-type]
    assert parse_codec(NAME) == HalfSign()


@pytest.mark.parametrize("block", [1, 3, 8, 64, 4096])
def test_roundtrip_error_feedback_and_size(block):
    spec = HalfSign(block=block)
    tmpl = dict(MLP, **EDGE)
    upd = rand_update(tmpl, seed=block)
    old = rand_update(tmpl, seed=block + 1, scale=1e-3)
    payload, new = encode(upd, spec, residual=old)
    assert list(payload) == list(payload_layout(spec, tmpl))
    assert payload_nbytes(payload) == expected_nbytes(spec, tmpl)
    blob = pack_payload(payload, spec, tmpl)
    out = decode(unpack_payload(blob, spec, tmpl), spec, tmpl)
    for k, shape in tmpl.items():
        corrected = (upd[k] + old[k]).astype(np.float64).reshape(-1)
        o, r = out[k].astype(np.float64).reshape(-1), new[k].astype(np.float64).reshape(-1)
        assert out[k].shape == shape and out[k].dtype == np.float32
        np.testing.assert_allclose(o + r, corrected, rtol=1e-6, atol=1e-9)  # EF identity
        assert np.all((o == 0) | (np.sign(o) == np.sign(corrected)) | (corrected == 0))
        for start in range(0, corrected.size, block):  # one magnitude per block: its mean
            part = slice(start, start + block)
            assert np.allclose(np.abs(o[part]), np.abs(corrected[part]).mean(), rtol=1e-6)


def test_hostile_payloads_rejected():
    spec = HalfSign(block=4)
    payload, _ = encode(rand_update(MLP), spec)

    def reject(bad, fragment):
        with pytest.raises(PayloadError, match=fragment):
            decode(bad, spec, MLP)

    reject({k: v for k, v in payload.items() if k != "fc1.bias.mag"}, "missing keys")
    reject(dict(payload, extra=np.zeros(1, np.float32)), "unexpected keys")
    reject(dict(payload, **{"fc1.bias.mag": payload["fc1.bias.mag"][:-1]}), "length")
    reject(dict(payload, **{"fc1.bias.mag": np.zeros(10**7, np.float32)}), "length")
    reject(dict(payload, **{"fc1.bias.sign": payload["fc1.bias.sign"].view(np.int8)}), "dtype")
    for bad, fragment in [(np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (-1.0, "negative")]:
        mag = payload["fc2.weight.mag"].copy()
        mag[0] = bad
        reject(dict(payload, **{"fc2.weight.mag": mag}), fragment)
    sign = payload["fc2.bias.sign"].copy()  # 10 signs in 2 bytes: bits 10..15 are padding
    sign[-1] |= 0x80
    reject(dict(payload, **{"fc2.bias.sign": sign}), "padding")
    for other in (Fp16(), TopK(fraction=0.1), HalfSign(block=8)):  # another codec's payload
        with pytest.raises(PayloadError):
            decode(encode(rand_update(MLP), other)[0], spec, MLP)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2**32 - 1))
def test_fuzz_only_payload_error_or_valid(seed):
    rng = np.random.default_rng(seed)
    spec = HalfSign(block=int(rng.integers(1, 8)))
    payload = dict(encode(rand_update(EDGE, seed % 7, 10.0), spec)[0])
    specials = [np.nan, np.inf, -1.0, 0.0, 255, 3.5e38, 1e-45]
    for key in rng.choice(sorted(payload), size=int(rng.integers(1, 3)), replace=False):
        arr = payload[key].copy()
        choice = int(rng.integers(4))
        if choice == 0 and arr.size:  # a special float, or any byte in the sign bits
            value = specials[int(rng.integers(len(specials)))]
            with np.errstate(over="ignore"):  # 3.5e38 becomes inf in float32
                arr[int(rng.integers(arr.size))] = value if arr.dtype.kind == "f" else 255
        elif choice == 1:
            arr = arr[: int(rng.integers(arr.size + 1))]
        elif choice == 2:
            arr = arr.astype([np.float64, np.int8, np.uint16][int(rng.integers(3))])
        else:
            arr = rng.integers(0, 256, size=arr.size).astype(arr.dtype)
        payload[str(key)] = arr
    try:
        out = decode(payload, spec, EDGE)
    except PayloadError as err:
        assert not str(err).startswith("malformed payload"), str(err)
        return
    for k, shape in EDGE.items():
        assert out[k].shape == shape and np.isfinite(out[k]).all()


def _federation(tmp_path: Path, block: int) -> tuple[dict, list[dict], list[float]]:
    from fedenergy.sim.engine import simulate

    out = tmp_path / f"block{block}"
    codec = f"{NAME}:{block}"
    s = Settings(codec=codec, nodes=4, rounds=2, fraction_evaluate=0.0, seed=2, out=str(out))
    summary = simulate(s)
    with Ledger(out / "ledger.sqlite") as ledger:
        rows = ledger.energy_rows(summary["run_id"])
        comps = ledger.components(summary["run_id"])
    up = [r for r in rows if r["call"] == "train" and r["phase"] == "upload"]
    infra = [
        c["joules"]
        for c in comps
        if (c["call"], c["phase"], c["domain"]) == ("train", "upload", "infrastructure")
    ]
    return summary, up, infra


def test_federation_with_the_user_codec(tmp_path, monkeypatch):
    # Ray workers are other processes: they find tests.user_codec through PYTHONPATH
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), path) if p))
    from fedenergy.sim.tasks import get_task

    model = get_task("digits").make_model()
    template = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    runs = {b: _federation(tmp_path, b) for b in (128, 256)}
    for block, (summary, up, infra) in runs.items():
        assert summary["status"] == "completed"
        assert summary["rejections"] == 0 and summary["rejection_reasons"] == []
        assert [r["failed"] for r in summary["per_round"] if r["round"] > 0] == [0, 0]
        assert len(up) == 2 * 2 and len(infra) == len(up)  # 2 of 4 nodes, 2 rounds
        acc = [r["accuracy"] for r in summary["per_round"]]
        assert acc[-1] != acc[0]  # the decoded updates moved the global model
        nbytes = expected_nbytes(HalfSign(block=block), template)
        # the payload plus the reply's other records (metrics, report) and Flower's object
        # framing (each object's header and id, counted as Flower counts them: ~2.4 KB here)
        assert all(nbytes < r["bytes"] < nbytes + 4096 for r in up), (nbytes, up)
    # same nodes, same labels' length: the uploads differ by exactly the payload sizes
    (_, up_a, infra_a), (_, up_b, infra_b) = runs[128], runs[256]
    diff = expected_nbytes(HalfSign(128), template) - expected_nbytes(HalfSign(256), template)
    assert diff == (16 + 1 + 3 + 1 - 8 - 1 - 2 - 1) * 4
    assert sorted(r["bytes"] for r in up_a) == sorted(r["bytes"] + diff for r in up_b)
    total_a, total_b = sum(r["bytes"] for r in up_a), sum(r["bytes"] for r in up_b)
    assert sum(infra_a) / sum(infra_b) == pytest.approx(total_a / total_b, rel=1e-9)
