"""NVML meter against a fake pynvml module: counter, power-only, MIG, errors, visibility."""

from __future__ import annotations

import sys

import pytest

from fedenergy.meters.gpu_use import UTIL_POLL_S
from fedenergy.meters.nvml import NvmlMeter, resolve_visible
from tests.fakes.nvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_UNKNOWN,
    FakeGpu,
    FakeNVML,
)
from tests.fakes.sysfs import FakeClock, ManualAccounting

UUIDS = [
    "GPU-aaaa1111-0000-0000-0000-000000000000",
    "GPU-bbbb2222-0000-0000-0000-000000000000",
    "GPU-cccc3333-0000-0000-0000-000000000000",
]


def fleet(n=2, **kw) -> FakeNVML:
    return FakeNVML([FakeGpu(UUIDS[i], **kw) for i in range(n)])


def meter(nv, visible=None, **kw) -> NvmlMeter:
    return NvmlMeter(
        nv,
        visible=visible,
        use_env=False,
        clock=kw.pop("clock", FakeClock()),
        accounting=ManualAccounting(),
        poll=False,
        **kw,
    )


def test_energy_counter(monkeypatch):
    nv = fleet(2, energy_mj=1_000)
    m = meter(nv)
    assert m.probe().available
    # the energy counter needs no thread; the per-process utilization samples are read every
    # UTIL_POLL_S while a window is open (the driver keeps a bounded buffer of them)
    assert m.kind == "counter" and m.poll_interval_s == UTIL_POLL_S
    assert [(d.name, d.provenance) for d in m.domains()] == [
        ("gpu[0]", "measured:nvml:gpu0"),
        ("gpu[1]", "measured:nvml:gpu1"),
    ]
    m.begin("train")
    nv.gpus[0].energy_mj = 5_500
    nv.gpus[1].energy_mj = 2_000
    m.clock.advance(3.0)
    r = m.end("train")
    assert r.joules == {"gpu[0]": 4.5, "gpu[1]": 1.0}
    assert r.total_j == 5.5
    assert r.components["gpu[0]"].kind == "counter"
    assert r.flags == []
    assert nv.calls.get("power", 0) == 0  # a counter GPU never needs a power reading
    assert nv.calls["nvmlInit"] == 1


def test_counter_gpu_without_process_sampling_needs_no_thread():
    nv = fleet(1, energy_mj=0, util_supported=False)
    m = meter(nv)
    assert m.probe().available and m.poll_interval_s is None


def test_power_only_integrated_trapezoidally():
    nv = fleet(1, energy_mj=None, power_mw=100_000)  # pre-Volta: no counter
    m = meter(nv)
    assert m.probe().available
    assert m.kind == "power" and m.poll_interval_s == 0.1
    assert m.domains()[0].provenance == "measured:nvml-power:gpu0"
    m.begin("w")  # t=0, 100 W
    m.clock.advance(1.0)
    nv.gpus[0].power_mw = 200_000
    m.sample()  # t=1, 200 W: 150 J
    m.clock.advance(1.0)
    r = m.end("w")  # t=2, 200 W: +200 J
    assert r.joules == {"gpu[0]": 350.0}
    assert r.components["gpu[0]"].kind == "power"


def test_short_window_estimated_from_power():
    nv = fleet(1, energy_mj=7_000, power_mw=50_000)
    m = meter(nv)
    m.begin("tiny")
    m.clock.advance(0.01)  # counter did not move in 10 ms
    r = m.end("tiny")
    assert r.joules["gpu[0]"] == pytest.approx(0.5)  # 50 W × 0.01 s
    assert r.flags == ["short-window-estimated:gpu[0]"]
    assert any("estimated" in w for w in r.warnings)


def test_mig_measures_whole_gpu_flagged_shared():
    nv = fleet(2, energy_mj=0)
    nv.gpus[1].mig = True
    nv.gpus[1].mig_uuids = ["MIG-1111", "MIG-2222"]
    # two slices of the same GPU are one GPU to measure
    m = meter(nv, visible="MIG-1111,MIG-2222")
    assert m.probe().available
    assert [g.index for g in m.gpus] == [1]
    m.begin("w")
    nv.gpus[1].energy_mj = 9_000
    m.clock.advance(1)
    r = m.end("w")
    assert r.joules == {"gpu[1]": 9.0}
    assert r.flags == ["mig-shared:gpu[1]"]
    # old MIG form names the parent GPU directly
    assert resolve_visible(nv, f"MIG-{UUIDS[0]}/1/0", 2) == ([0], {0})


def test_mig_mode_detected_without_env():
    nv = fleet(1, energy_mj=0, mig=True)
    m = meter(nv)
    m.begin("w")
    nv.gpus[0].energy_mj = 1_000
    assert m.end("w").flags == ["mig-shared:gpu[0]"]


def test_cuda_visible_devices_forms(monkeypatch):
    nv = fleet(3)
    assert resolve_visible(nv, None, 3) == ([0, 1, 2], set())
    assert resolve_visible(nv, "2,0", 3) == ([2, 0], set())
    assert resolve_visible(nv, "0,7,1", 3) == ([0], set())  # CUDA stops at the invalid entry
    assert resolve_visible(nv, "", 3) == ([], set())
    assert resolve_visible(nv, UUIDS[1], 3) == ([1], set())
    assert resolve_visible(nv, "GPU-cccc", 3) == ([2], set())  # unique prefix
    assert resolve_visible(nv, "GPU-", 3) == ([], set())  # ambiguous prefix
    assert resolve_visible(nv, "1,1", 3) == ([1], set())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb2222")
    m = NvmlMeter(nv, clock=FakeClock(), accounting=ManualAccounting(), poll=False)
    assert [d.name for d in m.domains()] == ["gpu[1]"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    m = NvmlMeter(nv, clock=FakeClock(), accounting=ManualAccounting(), poll=False)
    av = m.probe()
    assert av.status == "absent" and "hides every GPU" in av.reason


def test_no_counter_no_power_is_unreadable():
    nv = fleet(1, energy_mj=None, power_mw=None)
    av = meter(nv).probe()
    assert av.status == "unreadable"
    assert "no energy counter" in av.reason and "no power reading" in av.reason


def test_one_bad_gpu_others_measured():
    nv = fleet(2, energy_mj=0)
    nv.gpus[0].lost = True
    m = meter(nv)
    assert m.probe().available
    assert [d.name for d in m.domains()] == ["gpu[1]"]
    assert m.skipped() and "gpu0" in m.skipped()[0]


def test_init_errors():
    av = meter(FakeNVML([], init_error=NVML_ERROR_DRIVER_NOT_LOADED)).probe()
    assert av.status == "absent" and "driver" in av.reason
    av = meter(FakeNVML([], init_error=NVML_ERROR_UNKNOWN)).probe()
    assert av.status == "unreadable" and "NVML initialisation failed" in av.reason
    assert meter(FakeNVML([])).probe().status == "absent"


def test_error_mid_window_is_flagged_not_zeroed():
    nv = fleet(1, energy_mj=0)
    m = meter(nv)
    m.begin("w")
    nv.gpus[0].energy_mj = 2_000
    m.sample()
    nv.gpus[0].lost = True
    m.sample()  # error: series broken
    nv.gpus[0].lost = False
    nv.gpus[0].energy_mj = 10_000
    m.sample()  # restarts
    nv.gpus[0].energy_mj = 11_000
    m.clock.advance(1)
    r = m.end("w")
    assert r.joules["gpu[0]"] == 3.0
    assert "read-error:gpu[0]" in r.flags
    assert not any(f.startswith("short-window") for f in r.flags)


def test_counter_reset_dropped():
    nv = fleet(1, energy_mj=50_000)
    m = meter(nv)
    m.begin("w")
    nv.gpus[0].energy_mj = 1_000  # driver reloaded
    m.sample()
    nv.gpus[0].energy_mj = 4_000
    m.clock.advance(1)
    r = m.end("w")
    assert r.joules["gpu[0]"] == 3.0
    assert r.flags == ["counter-reset:gpu[0]"]


def test_pynvml_missing_is_absent_with_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    av = NvmlMeter(None, poll=False, accounting=ManualAccounting()).probe()
    assert av.status == "absent"
    assert "fedenergy[nvidia]" in av.fix
