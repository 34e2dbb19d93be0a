"""RAPL against fake powercap trees: wrap, unreadable range, permissions, AMD dies, psys."""

from __future__ import annotations

import errno
import os

import pytest

from fedenergy.meters.rapl import (
    ASSUMED_MAX_POWER_W,
    MIRROR_SAMPLE_S,
    UNKNOWN_RANGE_POLL_S,
    RaplMeter,
)
from fedenergy.meters.window import POLLER
from tests.fakes.sysfs import (
    UNREADABLE,
    FakeClock,
    ManualAccounting,
    rapl_zone,
    set_energy,
)

AMD_MAX = 65532610987  # AMD package-0-die-* range (CodeCarbon examples/rapl/intel_rapl_show.py)


def meter(root, **kw) -> RaplMeter:
    kw.setdefault("clock", FakeClock())
    kw.setdefault("accounting", ManualAccounting())
    return RaplMeter(str(root), poll=False, **kw)


def intel(root, pkg=1_000_000, dram=500_000):
    rapl_zone(root, "intel-rapl:0", "package-0", pkg)
    rapl_zone(root, "intel-rapl:0:0", "core", 10)
    rapl_zone(root, "intel-rapl:0:1", "uncore", 20)
    rapl_zone(root, "intel-rapl:0:2", "dram", dram)


def test_package_and_dram_window(tmp_path):
    intel(tmp_path)
    m = meter(tmp_path)
    assert m.probe().available
    doms = {d.name: d for d in m.domains()}
    assert set(doms) == {"cpu.package[0]", "dram[0]"}  # core/uncore never read
    assert doms["cpu.package[0]"].provenance == "measured:rapl:package-0"
    assert doms["dram[0]"].provenance == "measured:rapl:dram-0"
    assert all(d.additive for d in doms.values())
    m.begin("train")
    set_energy(tmp_path, "intel-rapl:0", 1_000_000 + 12_500_000)  # +12.5 J
    set_energy(tmp_path, "intel-rapl:0:2", 500_000 + 2_000_000)  # +2 J
    set_energy(tmp_path, "intel-rapl:0:0", 999_999_999)  # core moves: must not count
    m.clock.advance(2.0)
    r = m.end("train")
    assert r.duration_s == 2.0
    assert r.joules == {"cpu.package[0]": 12.5, "dram[0]": 2.0}
    assert r.total_j == 14.5
    assert r.total_scope == "machine"
    assert r.components["cpu.package[0]"].kind == "counter"
    assert r.flags == []
    assert any("core" in s and "subset" in s for s in m.skipped())


def test_wrap_around_adds_range_once(tmp_path):
    mx = 262143328850
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", mx - 1_000_000, max_uj=mx)
    m = meter(tmp_path)
    m.begin("w")
    set_energy(tmp_path, "intel-rapl:0", 2_000_000)  # wrapped: 1 J before max + 2 J after
    r = m.end("w")
    assert r.joules["cpu.package[0]"] == 3.0
    assert r.flags == []


def test_unreadable_max_drops_interval_and_flags(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000, max_uj=UNREADABLE)
    m = meter(tmp_path)
    assert m.probe().available
    assert m.poll_interval_s == UNKNOWN_RANGE_POLL_S
    m.begin("round")
    set_energy(tmp_path, "intel-rapl:0", 9_000_000)  # +4 J, counted
    m.sample()
    set_energy(tmp_path, "intel-rapl:0", 1_000_000)  # wrapped, range unknown: dropped
    m.sample()
    set_energy(tmp_path, "intel-rapl:0", 1_500_000)  # +0.5 J, counted
    r = m.end("round")
    assert r.joules["cpu.package[0]"] == 4.5
    assert r.total_j >= 0
    assert "wrap-dropped:cpu.package[0]" in r.flags
    assert any("dropped" in w for w in r.warnings)


def test_wrap_flag_only_on_windows_that_saw_it(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000, max_uj=None)
    m = meter(tmp_path)
    m.begin("round")
    m.begin("train")
    set_energy(tmp_path, "intel-rapl:0", 6_000_000)
    train = m.end("train")
    m.begin("upload")
    set_energy(tmp_path, "intel-rapl:0", 100)  # wrap inside upload
    upload = m.end("upload")
    rnd = m.end("round")
    assert train.flags == [] and train.joules["cpu.package[0]"] == 1.0
    assert upload.flags == ["wrap-dropped:cpu.package[0]"]
    assert upload.joules["cpu.package[0]"] == 0.0
    assert rnd.flags == ["wrap-dropped:cpu.package[0]"]
    assert rnd.joules["cpu.package[0]"] == 1.0


def _deny_energy(path, flags):
    if path.endswith("energy_uj"):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return os.open(path, flags)


def test_permission_denied_is_unreadable_with_fix(tmp_path):
    intel(tmp_path)
    m = meter(tmp_path, opener=_deny_energy)
    av = m.probe()
    assert av.status == "unreadable"
    assert "permission denied" in av.reason and "CVE-2020-8694" in av.reason
    assert "sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj" in av.fix
    assert m.domains() == []
    with pytest.raises(RuntimeError, match="permission denied"):
        m.begin("w")  # never a silent zero


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files anyway")
def test_permission_denied_real_mode_000(tmp_path):
    intel(tmp_path)
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").chmod(0)
    assert meter(tmp_path).probe().status == "unreadable"


def test_energy_file_is_a_directory_is_unreadable(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    p = tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj"
    p.unlink()
    p.mkdir()
    av = meter(tmp_path).probe()
    assert av.status == "unreadable" and "cannot read" in av.reason


def advance_both(root, d0, d1):
    """A sleep for the probe's second sample: die 0 grows by d0 µJ, die 1 by d1 µJ."""
    slept = []

    def sleep(s):
        slept.append(s)
        for zone, d in (("intel-rapl:0", d0), ("intel-rapl:1", d1)):
            p = root / "sys/class/powercap" / zone / "energy_uj"
            set_energy(root, zone, int(p.read_text()) + d)

    return sleep, slept


def test_amd_mirrored_dies_counted_once(tmp_path):
    # Same socket counter reported twice (values from CodeCarbon's AMD sample).
    rapl_zone(tmp_path, "intel-rapl:0", "package-0-die-0", 10360237493, max_uj=AMD_MAX)
    rapl_zone(tmp_path, "intel-rapl:1", "package-0-die-1", 10359908363, max_uj=AMD_MAX)
    # second sample MIRROR_SAMPLE_S later: both moved by the same 4 J (one counter)
    sleep, slept = advance_both(tmp_path, 4_000_000, 4_000_000)
    m = meter(tmp_path, sleep=sleep)
    assert m.probe().available
    assert slept == [MIRROR_SAMPLE_S]
    assert [d.name for d in m.domains()] == ["cpu.package[0]"]
    assert any("mirrors package-0-die-0" in s for s in m.skipped())
    m.begin("w")
    set_energy(tmp_path, "intel-rapl:0", 10360237493 + 11_000_000)
    set_energy(tmp_path, "intel-rapl:1", 10359908363 + 11_000_000)
    r = m.end("w")
    assert r.total_j == 7.0
    assert r.provenance == {"cpu.package[0]": "measured:rapl:package-0-die-0"}
    # 65.5 kJ counter, 3 kW bound: read every ~10.9 s so no counter wraps twice between reads
    assert m.poll_interval_s == pytest.approx(AMD_MAX / 1e6 / (2 * ASSUMED_MAX_POWER_W))


def test_dies_with_close_totals_but_unequal_deltas_are_not_merged(tmp_path):
    # Two separate dies whose cumulative counters happen to be within 0.1 % (CodeCarbon's
    # values), evenly loaded: 4.0 J vs 3.6 J over the second sample (10 % apart) → two counters.
    rapl_zone(tmp_path, "intel-rapl:0", "package-0-die-0", 10360237493, max_uj=AMD_MAX)
    rapl_zone(tmp_path, "intel-rapl:1", "package-0-die-1", 10359908363, max_uj=AMD_MAX)
    sleep, slept = advance_both(tmp_path, 4_000_000, 3_600_000)
    m = meter(tmp_path, sleep=sleep)
    assert m.probe().available and slept == [MIRROR_SAMPLE_S]
    assert [d.name for d in m.domains()] == ["cpu.package[0].die[0]", "cpu.package[0].die[1]"]
    assert not any("mirrors" in s for s in m.skipped())
    m.begin("w")
    set_energy(tmp_path, "intel-rapl:0", 10360237493 + 4_000_000 + 5_000_000)
    set_energy(tmp_path, "intel-rapl:1", 10359908363 + 3_600_000 + 4_000_000)
    r = m.end("w")
    assert r.joules == {"cpu.package[0].die[0]": 5.0, "cpu.package[0].die[1]": 4.0}
    assert r.total_j == 9.0  # summed, not halved


def test_mirror_candidates_that_do_not_move_are_kept_apart_and_noted(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0-die-0", 10360237493, max_uj=AMD_MAX)
    rapl_zone(tmp_path, "intel-rapl:1", "package-0-die-1", 10359908363, max_uj=AMD_MAX)
    m = meter(tmp_path, sleep=lambda s: None)
    assert m.probe().available and len(m.domains()) == 2
    assert any("no change seen" in n for n in m.notes())


def test_distant_dies_need_no_second_sample(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0-die-0", 1_000_000_000, max_uj=AMD_MAX)
    rapl_zone(tmp_path, "intel-rapl:1", "package-0-die-1", 3_000_000_000, max_uj=AMD_MAX)
    slept = []
    m = meter(tmp_path, sleep=slept.append)
    assert m.probe().available and slept == []  # probing costs no sleep unless levels match


def test_amd_independent_dies_are_summed(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0-die-0", 1_000_000_000, max_uj=AMD_MAX)
    rapl_zone(tmp_path, "intel-rapl:1", "package-0-die-1", 3_000_000_000, max_uj=AMD_MAX)
    m = meter(tmp_path)
    m.begin("w")
    set_energy(tmp_path, "intel-rapl:0", 1_002_000_000)
    set_energy(tmp_path, "intel-rapl:1", 3_001_000_000)
    r = m.end("w")
    assert r.joules == {"cpu.package[0].die[0]": 2.0, "cpu.package[0].die[1]": 1.0}
    assert r.total_j == 3.0


def test_psys_beside_package_is_the_total(tmp_path):
    intel(tmp_path)
    rapl_zone(tmp_path, "intel-rapl:1", "psys", 0)
    m = meter(tmp_path)
    doms = {d.name: d.additive for d in m.domains()}
    assert doms == {"cpu.package[0]": False, "dram[0]": False, "platform.psys": True}
    m.begin("w")
    set_energy(tmp_path, "intel-rapl:0", 1_000_000 + 10_000_000)
    set_energy(tmp_path, "intel-rapl:0:2", 500_000 + 1_000_000)
    set_energy(tmp_path, "intel-rapl:1", 25_000_000)
    r = m.end("w")
    assert r.total_j == 25.0  # psys only; package and dram are inside it
    assert r.joules["cpu.package[0]"] == 10.0 and not r.components["cpu.package[0]"].additive
    assert r.provenance["platform.psys"] == "measured:rapl:psys"


def test_two_sockets_and_mmio_duplicate(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    rapl_zone(tmp_path, "intel-rapl:0:0", "dram", 0)
    rapl_zone(tmp_path, "intel-rapl:1", "package-1", 0)
    rapl_zone(tmp_path, "intel-rapl:1:0", "dram", 0)
    rapl_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 0)
    m = meter(tmp_path)
    assert [d.name for d in m.domains()] == [
        "cpu.package[0]",
        "dram[0]",
        "cpu.package[1]",
        "dram[1]",
    ]
    assert any("MMIO copy" in s for s in m.skipped())
    m.begin("w")
    for z, uj in [
        ("intel-rapl:0", 1e6),
        ("intel-rapl:0:0", 2e6),
        ("intel-rapl:1", 3e6),
        ("intel-rapl:1:0", 4e6),
        ("intel-rapl-mmio:0", 1e6),
    ]:
        set_energy(tmp_path, z, int(uj))
    assert m.end("w").total_j == 10.0


def test_devices_virtual_layout_and_zeus_mount(tmp_path):
    base = "sys/devices/virtual/powercap/intel-rapl"
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0, base=base)
    rapl_zone(tmp_path, "intel-rapl:0/intel-rapl:0:0", "dram", 0, base=base)
    m = meter(tmp_path)
    assert [d.name for d in m.domains()] == ["cpu.package[0]", "dram[0]"]
    zeus = tmp_path / "zeus"
    rapl_zone(zeus, "intel-rapl:0", "package-0", 0, base="class/powercap")
    assert meter(zeus).probe().available


def test_absent_when_no_powercap(tmp_path):
    av = meter(tmp_path).probe()
    assert av.status == "absent" and "no intel-rapl zones" in av.reason


def test_read_error_mid_window_is_flagged(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    m = meter(tmp_path)
    m.begin("w")
    set_energy(tmp_path, "intel-rapl:0", 1_000_000)
    m.sample()
    p = tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj"
    m.used[0].file.close()  # force a reopen that fails
    p.unlink()
    m.sample()
    set_energy(tmp_path, "intel-rapl:0", 5_000_000)
    m.sample()  # restarts the series
    set_energy(tmp_path, "intel-rapl:0", 6_000_000)
    r = m.end("w")
    assert r.joules["cpu.package[0]"] == 2.0
    assert r.flags == ["read-error:cpu.package[0]"]


def test_attribution_share(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    acct = ManualAccounting(proc=10.0, mach=100.0, step=0.0)
    m = meter(tmp_path, accounting=acct)
    m.begin("w")
    set_energy(tmp_path, "intel-rapl:0", 40_000_000)
    acct.proc += 1.0
    acct.mach += 4.0
    r = m.end("w")
    assert r.process_share == 0.25
    assert r.process_j == 10.0 and r.total_j == 40.0
    assert (r.process_cpu_s, r.machine_cpu_s) == (1.0, 4.0)


def test_window_api_errors_and_context_manager(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    m = meter(tmp_path)
    with pytest.raises(KeyError):
        m.end("nope")
    m.begin("a")
    with pytest.raises(ValueError):
        m.begin("a")
    m.end("a")
    with pytest.raises(RuntimeError, match="boom"), m.window("cm") as w:
        set_energy(tmp_path, "intel-rapl:0", 3_000_000)
        raise RuntimeError("boom")
    assert w.measurement is not None and w.measurement.total_j == 3.0
    assert m.open_windows == []


def test_poll_thread_registered_only_while_a_window_is_open(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    m = RaplMeter(str(tmp_path), clock=FakeClock(), accounting=ManualAccounting(), poll=True)
    assert m.probe().available
    assert not POLLER.active(m)
    m.begin("round")
    m.begin("train")
    assert POLLER.active(m)
    m.end("train")
    assert POLLER.active(m)
    m.end("round")
    assert not POLLER.active(m)


def test_poll_thread_really_samples(tmp_path):
    import threading

    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    hit = threading.Event()

    class Probe(RaplMeter):
        def sample(self):
            super().sample()
            hit.set()

    m = Probe(str(tmp_path), accounting=ManualAccounting(), poll=True)
    assert m.probe().available
    m.poll_interval_s = 0.001
    m.begin("w")
    try:
        assert hit.wait(timeout=10.0)  # bounded wait; passes as soon as the thread samples
    finally:
        m.end("w")
    assert not POLLER.active(m)
