"""The prepared GPU check (simulations/verify_gpu.py): its parsing and interpolation, and its
refusal on a host without an NVIDIA GPU."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "simulations"))

import verify_gpu  # noqa: E402


def test_parse_smi_line_reads_time_and_millijoules():
    t, j = verify_gpu.parse_smi_line("2026/12/01 12:00:00.250, 123456\n")
    assert t == datetime(2026, 12, 1, 12, 0, 0, 250000).timestamp()
    assert j == 123.456  # 123456 mJ
    assert verify_gpu.parse_smi_line("[N/A], 5") is None
    assert verify_gpu.parse_smi_line("timestamp, total_energy_consumption") is None


def test_window_reading_interpolates_the_counter():
    # counter: 100 J at t=10, 110 J at t=11, 130 J at t=12 (10 W then 20 W)
    samples = [(10.0, 100.0), (11.0, 110.0), (12.0, 130.0)]
    # at t=10.5: 105 J; at t=11.75: 110 + 0.75*20 = 125 J
    assert verify_gpu.window_reading(samples, 10.5, 11.75) == pytest.approx(20.0)
    # a window outside the series is not covered
    assert verify_gpu.window_reading(samples, 9.0, 11.0) is None
    assert verify_gpu.window_reading(samples, 11.0, 12.5) is None


@pytest.mark.skipif(verify_gpu.missing_gpu_reason() is None, reason="this host has a GPU")
def test_refuses_without_a_gpu_with_a_reason():
    r = subprocess.run(
        [sys.executable, str(ROOT / "simulations" / "verify_gpu.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "cannot run here:" in r.stderr
