"""detect() → MeterSet selection and overlap rules, the CLI report, and start-up cost."""

from __future__ import annotations

import io
import json
import os
import time

import pytest

from fedenergy.meters import Measurement, startup_cost
from fedenergy.meters.cli import run_meters_command
from fedenergy.meters.detect import detect
from tests.fakes.nvml import FakeGpu, FakeNVML
from tests.fakes.sysfs import (
    FakeClock,
    ManualAccounting,
    battery,
    cpuinfo,
    device_tree_model,
    jetson_hwmon,
    proc_stat,
    rapl_zone,
    set_energy,
)


def setup(tmp_path, **kw):
    clock = FakeClock()
    kw.setdefault("nvml", FakeNVML([]))
    ms = detect(
        str(tmp_path),
        clock=clock,
        accounting=kw.pop("accounting", ManualAccounting()),
        poll=False,
        cuda_visible_devices=None,
        **kw,
    )
    return ms, clock


def rapl(root):
    rapl_zone(root, "intel-rapl:0", "package-0", 0)
    rapl_zone(root, "intel-rapl:0:0", "dram", 0)


def test_rapl_plus_gpu_no_fallback(tmp_path):
    rapl(tmp_path)
    # this process is the GPU's only compute process: the GPU's energy is all this tree's
    nv = FakeNVML([FakeGpu("GPU-1", energy_mj=0, procs={os.getpid(): 1 << 30})])
    ms, clock = setup(tmp_path, nvml=nv)
    assert [m.name for m in ms.total] == ["rapl", "nvml"]
    assert ms.fallback is None and ms.total_scope == "machine"
    with ms.window("round") as rnd:
        with ms.window("train") as tr:
            set_energy(tmp_path, "intel-rapl:0", 30_000_000)
            set_energy(tmp_path, "intel-rapl:0:0", 5_000_000)
            nv.gpus[0].energy_mj = 100_000
            clock.advance(2.0)
        with ms.window("upload") as up:
            set_energy(tmp_path, "intel-rapl:0", 31_000_000)
            clock.advance(1.0)
    t, u, r = tr.measurement, up.measurement, rnd.measurement
    assert isinstance(t, Measurement)
    assert t.joules == {"cpu.package[0]": 30.0, "dram[0]": 5.0, "gpu[0]": 100.0}
    assert t.total_j == 135.0 and t.duration_s == 2.0
    assert t.provenance["gpu[0]"] == "measured:nvml:gpu0"
    assert u.total_j == 1.0  # gpu counter unchanged over 1 s (not short): 0 J, no estimate
    assert u.joules["gpu[0]"] == 0.0 and u.flags == []
    assert r.duration_s == 3.0
    assert r.total_j == pytest.approx(t.total_j + 1.0)  # round ⊃ train, upload
    assert r.process_share == 1.0 and r.process_j == r.total_j


def test_battery_is_device_total_rapl_informational(tmp_path):
    rapl(tmp_path)
    battery(tmp_path, power_uw=20_000_000)
    ms, clock = setup(tmp_path)
    assert [m.name for m in ms.total] == ["battery"] and [m.name for m in ms.info] == ["rapl"]
    assert ms.total_scope == "device"
    ms.begin("w")
    set_energy(tmp_path, "intel-rapl:0", 8_000_000)
    clock.advance(1.0)
    r = ms.end("w")
    assert r.total_j == 20.0  # battery only; the package is inside the device
    assert r.joules["cpu.package[0]"] == 8.0 and not r.components["cpu.package[0]"].additive
    roles = {d["name"]: d["role"] for d in ms.describe()}
    assert roles["battery"] == "total" and roles["rapl"] == "informational"
    assert roles["cpu-model"] == "unused"


def test_battery_on_ac_falls_through_to_rapl(tmp_path):
    rapl(tmp_path)
    battery(tmp_path, status="Charging", power_uw=1)
    ms, _ = setup(tmp_path)
    assert [m.name for m in ms.total] == ["rapl"]


def test_jetson_preferred(tmp_path):
    jetson_hwmon(tmp_path, {1: ("VDD_IN", 6000), 2: ("VDD_CPU_GPU_CV", 1000)})
    battery(tmp_path, power_uw=1)
    ms, clock = setup(tmp_path)
    assert [m.name for m in ms.total] == ["jetson"]
    ms.begin("w")
    clock.advance(1.0)
    assert ms.end("w").total_j == 6.0


def test_pi_model_fallback(tmp_path):
    device_tree_model(tmp_path, "Raspberry Pi 4 Model B Rev 1.4")
    proc_stat(tmp_path, 0, 0)
    ms, clock = setup(tmp_path)
    assert ms.fallback == "rpi-model" and ms.total_scope == "device"
    ms.begin("w")
    proc_stat(tmp_path, 0, 100)
    clock.advance(1.0)
    r = ms.end("w")
    assert r.provenance == {"board.modeled": "modeled:powerjoular-rpi4"}
    assert r.total_j == pytest.approx(2.2857)


def test_tdp_fallback_with_gpu_beside(tmp_path):
    cpuinfo(tmp_path, "AMD EPYC", logical=2)
    proc_stat(tmp_path, 0, 0)
    nv = FakeNVML([FakeGpu("GPU-1", energy_mj=0)])
    ms, clock = setup(tmp_path, nvml=nv, tdp_w=50)
    assert [m.name for m in ms.total] == ["cpu-model", "nvml"]
    assert ms.fallback == "cpu-model"
    ms.begin("w")
    proc_stat(tmp_path, 100, 100)  # u = 0.5
    nv.gpus[0].energy_mj = 3_000
    clock.advance(2.0)
    r = ms.end("w")
    assert r.joules["cpu.modeled"] == pytest.approx(50 * (0.1 + 0.9 * 0.125) * 2)
    assert r.joules["gpu[0]"] == 3.0
    assert r.provenance["cpu.modeled"] == "modeled:cpu-tdp(50W, cubic)"


def test_attribution_on_shared_machine(tmp_path):
    rapl(tmp_path)
    acct = ManualAccounting(proc=0.0, mach=0.0, step=0.0)
    ms, clock = setup(tmp_path, accounting=acct)
    ms.begin("train")
    set_energy(tmp_path, "intel-rapl:0", 60_000_000)
    acct.proc, acct.mach = 3.0, 12.0
    clock.advance(6.0)
    r = ms.end("train")
    assert r.total_j == 60.0 and r.process_share == 0.25 and r.process_j == 15.0


def test_cli_json_on_real_host_names_fallback():
    buf = io.StringIO()
    assert run_meters_command(as_json=True, out=buf) == 0
    rep = json.loads(buf.getvalue())
    names = [m["name"] for m in rep["meters"]]
    assert set(names) >= {"rapl", "nvml", "jetson", "battery", "rpi-model", "cpu-model"}
    for m in rep["meters"]:
        assert {"name", "available", "reason", "domains", "provenance", "sampled_j"} <= set(m)
    if not rep["measured"]:  # this 2-core VM: no RAPL, GPU or battery
        assert rep["fallback"]["name"] in ("cpu-model", "rpi-model")
        assert rep["fallback"]["provenance"][0].startswith("modeled:")


def test_cli_text_and_sample_on_fake_tree(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    buf = io.StringIO()
    assert run_meters_command(sample_s=0.01, sysfs_root=str(tmp_path), out=buf) == 0
    text = buf.getvalue()
    assert "rapl" in text and "cpu.package[0]" in text and "Measured: rapl" in text
    buf = io.StringIO()
    run_meters_command(sample_s=0.01, as_json=True, sysfs_root=str(tmp_path), out=buf)
    rep = json.loads(buf.getvalue())
    rp = next(m for m in rep["meters"] if m["name"] == "rapl")
    assert rp["available"] and rp["sampled_j"] == {"cpu.package[0]": 0.0}
    assert rep["fallback"] is None and rep["sample"]["total_j"] == 0.0


def test_cli_text_on_empty_root_explains(tmp_path):
    buf = io.StringIO()
    run_meters_command(sysfs_root=str(tmp_path), out=buf)
    text = buf.getvalue()
    assert "No sensor on this host measures energy" in text
    assert "Modeled fallback in use: cpu-model" in text


def test_startup_cost():
    s = startup_cost()
    assert s.cpu_s > 0.0  # importing pytest alone costs CPU
    assert 0.0 <= s.wall_s and s.started_at <= time.time()
    assert s.energy_j(10.0) == pytest.approx(s.cpu_s * 10.0)


def test_process_tree_cpu_includes_live_children():
    import subprocess
    import sys

    from fedenergy.meters.attribution import PsutilAccounting

    acct = PsutilAccounting()
    before = acct.process_cpu_s()
    code = (
        "import sys, time\n"
        "while time.process_time() < 0.2: pass\n"
        "print('ready', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        # the child burned ≥ 0.2 s; /proc/<pid>/stat counts in 10 ms ticks
        assert acct.process_cpu_s() - before >= 0.15
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert acct.machine_cpu_s() > 0
