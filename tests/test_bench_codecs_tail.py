"""bench_codecs.py's accuracy summaries: last-round and tail-mean paired deltas (no federation)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[1] / "simulations"


def _bench():
    if str(SIM) not in sys.path:
        sys.path.insert(0, str(SIM))
    spec = importlib.util.spec_from_file_location("bench_codecs", SIM / "bench_codecs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tail_mean_and_paired_deltas():
    b = _bench()
    none = {0: {1: 0.5, 2: 0.9, 3: 0.4}, 1: {1: 0.6, 2: 0.8, 3: 0.7}}
    codec = {0: {1: 0.3, 2: 0.6, 3: 0.6}, 1: {1: 0.6, 2: 0.7, 3: 0.7}, 2: {1: 0.1, 2: 0.2, 3: 0.3}}
    assert b.tail_accuracy(none[0], 3) == 0.4
    assert b.tail_accuracy(none[0], 3, 2) == pytest.approx(0.65)
    assert b.tail_accuracy(none[0], 1, 2) is None  # round 0 is not in the curve
    # last round: seed 0 +20 points, seed 1 0; seed 2 has no partner
    assert b.paired_deltas(codec, none, 3) == pytest.approx([20.0, 0.0])
    # mean of rounds 2-3: seed 0 (0.6 - 0.65) = -5 points, seed 1 (0.7 - 0.75) = -5 points
    assert b.paired_deltas(codec, none, 3, tail=2) == pytest.approx([-5.0, -5.0])
