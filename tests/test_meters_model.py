"""Modeled fallbacks: PowerJoular Raspberry Pi fits and the CodeCarbon-style TDP model."""

from __future__ import annotations

import pytest

from fedenergy.meters.model import (
    CpuTdpModelMeter,
    RpiModelMeter,
    load_tdp_table,
    match_tdp,
    normalize_cpu_name,
    pi_model_for,
)
from tests.fakes.sysfs import FakeClock, ManualAccounting, cpuinfo, device_tree_model, proc_stat


def kw():
    return {"clock": FakeClock(), "accounting": ManualAccounting(), "poll": False}


@pytest.mark.parametrize(
    "model,key,a,b",
    [
        ("Raspberry Pi 5 Model B Rev 1.0", "rpi5", 3.4579, 4.4032),
        ("Raspberry Pi 4 Model B Rev 1.4", "rpi4", 4.5344, 2.2857),
        ("Raspberry Pi 400 Rev 1.0", "rpi400", 5.0254, 1.8221),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", "rpi3b+", 3.2983, 2.0022),
        ("Raspberry Pi Zero W Rev 1.1", "rpizerow", 0.4733, 0.9201),
    ],
)
def test_pi_boards(tmp_path, model, key, a, b):
    device_tree_model(tmp_path, model)
    proc_stat(tmp_path, busy=0, idle=0)
    m = RpiModelMeter(str(tmp_path), **kw())
    assert m.probe().available
    assert m.domains()[0].provenance == f"modeled:powerjoular-{key}"
    m.begin("train")
    proc_stat(tmp_path, busy=150, idle=50)  # u = 0.75 over the window
    m.clock.advance(4.0)
    r = m.end("train")
    assert r.joules["board.modeled"] == pytest.approx((a * 0.75 + b) * 4.0, rel=1e-12)
    assert r.total_scope == "device"
    assert "modeled:board.modeled" in r.flags
    assert any("PowerJoular" in w for w in r.warnings)


def test_pi_model_detection_edge_cases(tmp_path):
    assert pi_model_for("Raspberry Pi Zero 2 W Rev 1.0") is None  # no published fit
    assert pi_model_for("Raspberry Pi Compute Module 4 Rev 1.0") is None
    assert RpiModelMeter(str(tmp_path), **kw()).probe().status == "absent"
    device_tree_model(tmp_path, "NVIDIA Jetson Nano Developer Kit")
    assert "no PowerJoular fit" in RpiModelMeter(str(tmp_path), **kw()).probe().reason


def test_pi_utilization_varies_between_samples(tmp_path):
    device_tree_model(tmp_path, "Raspberry Pi 4 Model B Rev 1.4")
    proc_stat(tmp_path, 0, 0)
    m = RpiModelMeter(str(tmp_path), **kw())
    m.begin("w")
    proc_stat(tmp_path, 100, 0)  # u = 1 for 1 s
    m.clock.advance(1.0)
    m.sample()
    proc_stat(tmp_path, 100, 100)  # u = 0 for 1 s
    m.clock.advance(1.0)
    r = m.end("w")
    assert r.total_j == pytest.approx((4.5344 + 2.2857) + 2.2857)


def test_tdp_table_match_and_sockets(tmp_path):
    cpuinfo(tmp_path, "Intel(R) Xeon(R) CPU E5-2620 v3 @ 2.40GHz", logical=24, sockets=2)
    proc_stat(tmp_path, 0, 0)
    m = CpuTdpModelMeter(str(tmp_path), **kw())
    assert m.tdp_w == 170.0  # 85 W × 2 sockets (cpu_tdp.json)
    assert m.domains()[0].provenance == "modeled:cpu-tdp(170W, cubic)"
    m.begin("w")
    proc_stat(tmp_path, 50, 50)  # u = 0.5
    m.clock.advance(10.0)
    r = m.end("w")
    assert r.total_j == pytest.approx(170.0 * (0.1 + 0.9 * 0.125) * 10.0)
    assert r.components["cpu.modeled"].kind == "model"
    assert any("−41 % to +11 %" in w for w in r.warnings)


def test_tdp_override_and_default(tmp_path):
    cpuinfo(tmp_path, "AMD EPYC", logical=2)
    proc_stat(tmp_path, 0, 0)
    m = CpuTdpModelMeter(str(tmp_path), **kw())
    assert m.tdp_w == 8.0 and "4 W × 2 logical CPUs" in m.tdp_source  # CodeCarbon default
    m.begin("idle")
    proc_stat(tmp_path, 0, 100)
    m.clock.advance(5.0)
    assert m.end("idle").total_j == pytest.approx(0.8 * 5.0)  # 10 % of TDP at u = 0
    m = CpuTdpModelMeter(str(tmp_path), tdp_w=65, **kw())
    assert m.tdp_w == 65.0 and m.tdp_source == "user override (tdp_w)"
    with pytest.raises(ValueError):
        CpuTdpModelMeter(str(tmp_path), tdp_w=0, **kw())


def test_cpu_name_matching():
    table = load_tdp_table()
    assert len(table) >= 12
    assert match_tdp("AMD Ryzen 9 5950X 16-Core Processor", table) == ("AMD Ryzen 9 5950X", 105)
    assert match_tdp("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", table)[1] == 15
    assert match_tdp("AMD EPYC 7763 64-Core Processor", table)[1] == 280
    assert match_tdp("Intel(R) Xeon(R) CPU E5-2620 @ 2.00GHz", table) is None  # v1 ≠ v3
    assert match_tdp("AMD EPYC", table) is None
    assert normalize_cpu_name("Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz") == "intel core i5-8250u"


def test_short_window_without_tick_change_uses_last_utilization(tmp_path):
    cpuinfo(tmp_path, "AMD EPYC", logical=1)
    proc_stat(tmp_path, 0, 0)
    m = CpuTdpModelMeter(str(tmp_path), **kw())
    m.begin("a")
    proc_stat(tmp_path, 10, 0)  # u = 1
    m.clock.advance(1.0)
    m.end("a")
    m.begin("b")  # no jiffy elapses: keep u = 1
    m.clock.advance(0.001)
    assert m.end("b").total_j == pytest.approx(4.0 * 0.001)
