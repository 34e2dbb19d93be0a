"""Jetson INA3221 rails (new hwmon and old iio layouts) and batteries, on fake sysfs trees."""

from __future__ import annotations

from fedenergy.meters.battery import BatteryMeter
from fedenergy.meters.jetson import JetsonMeter
from tests.fakes.sysfs import (
    FakeClock,
    ManualAccounting,
    ac_adapter,
    battery,
    jetson_hwmon,
    jetson_iio,
    set_jetson_hwmon_power,
    write,
)


def jm(root) -> JetsonMeter:
    return JetsonMeter(str(root), clock=FakeClock(), accounting=ManualAccounting(), poll=False)


def bm(root) -> BatteryMeter:
    return BatteryMeter(str(root), clock=FakeClock(), accounting=ManualAccounting(), poll=False)


# --- Jetson ----------------------------------------------------------------------------------
def test_jetson_hwmon_power_files_input_rail_is_total(tmp_path):
    # Orin-style: VDD_IN total, CPU/GPU/CV and SOC sub-rails; channel 7 and NC skipped.
    jetson_hwmon(
        tmp_path,
        {
            1: ("VDD_IN", 5000),
            2: ("VDD_CPU_GPU_CV", 2000),
            3: ("VDD_SOC", 1000),
            4: ("NC", 999),
            7: ("sum of shunt voltages", 1234),
        },
    )
    m = jm(tmp_path)
    assert m.probe().available
    doms = {d.name: (d.provenance, d.additive) for d in m.domains()}
    assert doms == {
        "soc.total": ("measured:jetson:VDD_IN", True),
        "soc.rail[VDD_CPU_GPU_CV]": ("measured:jetson:VDD_CPU_GPU_CV", False),
        "soc.rail[VDD_SOC]": ("measured:jetson:VDD_SOC", False),
    }
    assert m.poll_interval_s == 0.1
    m.begin("train")  # t=0: 5 W
    m.clock.advance(1.0)
    set_jetson_hwmon_power(tmp_path, 1, 7000)
    m.sample()  # t=1: 7 W → 6 J
    m.clock.advance(1.0)
    r = m.end("train")  # t=2: 7 W → +7 J
    assert r.joules["soc.total"] == 13.0
    assert r.joules["soc.rail[VDD_CPU_GPU_CV]"] == 4.0
    assert r.total_j == 13.0  # rails never added to the input rail
    assert r.total_scope == "device"
    assert r.components["soc.total"].kind == "power"


def test_jetson_hwmon_voltage_times_current(tmp_path):
    jetson_hwmon(tmp_path, {1: ("VDD_IN", 5000, 1200), 2: ("VDD_CPU_GPU_CV", 5000, 400)})
    m = jm(tmp_path)
    m.begin("w")
    m.clock.advance(2.0)
    r = m.end("w")
    assert r.joules == {"soc.total": 12.0, "soc.rail[VDD_CPU_GPU_CV]": 4.0}  # 6 W, 2 W
    assert r.total_j == 12.0


def test_jetson_old_iio_layout_power_and_vi(tmp_path):
    # Nano-style: POM_5V_IN total, POM_5V_GPU and POM_5V_CPU informational.
    jetson_iio(
        tmp_path,
        {0: ("POM_5V_IN", 4000), 1: ("POM_5V_GPU", 5000, 100), 2: ("POM_5V_CPU", 5000, 200)},
    )
    m = jm(tmp_path)
    assert m.probe().available
    m.begin("w")
    m.clock.advance(0.5)
    r = m.end("w")
    assert r.joules == {"soc.total": 2.0, "soc.rail[POM_5V_GPU]": 0.25, "soc.rail[POM_5V_CPU]": 0.5}
    assert r.total_j == 2.0
    assert r.provenance["soc.total"] == "measured:jetson:POM_5V_IN"


def test_jetson_found_via_i2c_devices_name_and_no_input_rail(tmp_path):
    jetson_hwmon(tmp_path, {1: ("GPU", 3000), 2: ("CPU", 2000)}, dev="0-0041", via_devices=True)
    m = jm(tmp_path)
    assert m.probe().available
    assert all(d.additive for d in m.domains())  # no input rail: sum of rails (jtop's rule)
    assert any("no VDD_IN" in n for n in m.notes())
    m.begin("w")
    m.clock.advance(1.0)
    assert m.end("w").total_j == 5.0


def test_jetson_absent_and_unreadable_input(tmp_path):
    assert jm(tmp_path).probe().status == "absent"
    jetson_hwmon(tmp_path, {1: ("VDD_IN", 5000), 2: ("VDD_SOC", 1000)})
    write(tmp_path, "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3/power1_input", "garbage")
    av = jm(tmp_path).probe()
    assert av.status == "unreadable" and "power1_input" in av.reason


# --- battery ---------------------------------------------------------------------------------
def test_battery_on_ac_is_unreadable_with_reason(tmp_path):
    ac_adapter(tmp_path, 1)
    battery(tmp_path, status="Charging", power_uw=15_000_000)
    av = bm(tmp_path).probe()
    assert av.status == "unreadable"
    assert "on AC power" in av.reason and "Charging" in av.reason
    battery(tmp_path, status="Full", power_uw=0)
    assert "Full" in bm(tmp_path).probe().reason


def test_battery_discharging_power_now(tmp_path):
    battery(tmp_path, power_uw=10_000_000)  # 10 W
    m = bm(tmp_path)
    assert m.probe().available
    assert [(d.name, d.provenance) for d in m.domains()] == [
        ("battery[BAT0]", "measured:battery:BAT0")
    ]
    assert m.poll_interval_s == 1.0
    m.begin("w")
    m.clock.advance(1.0)
    battery(tmp_path, power_uw=14_000_000)
    m.sample()  # 12 J
    m.clock.advance(2.0)
    r = m.end("w")  # +28 J
    assert r.joules == {"battery[BAT0]": 40.0}
    assert r.total_j == 40.0 and r.total_scope == "device"


def test_battery_voltage_times_current_negative_current(tmp_path):
    battery(tmp_path, voltage_uv=12_000_000, current_ua=-1_500_000)  # 12 V × 1.5 A = 18 W
    m = bm(tmp_path)
    m.begin("w")
    m.clock.advance(10.0)
    assert m.end("w").joules == {"battery[BAT0]": 180.0}


def test_battery_plugged_in_mid_window_drops_and_flags(tmp_path):
    battery(tmp_path, power_uw=10_000_000)
    m = bm(tmp_path)
    m.begin("w")
    m.clock.advance(1.0)
    m.sample()  # 10 J
    battery(tmp_path, status="Charging", power_uw=30_000_000)
    m.clock.advance(1.0)
    m.sample()  # on AC: dropped
    battery(tmp_path, status="Discharging", power_uw=10_000_000)
    m.clock.advance(1.0)
    m.sample()  # series restarts here
    m.clock.advance(1.0)
    r = m.end("w")  # +10 J
    assert r.joules == {"battery[BAT0]": 20.0}
    assert r.flags == ["not-discharging:battery[BAT0]"]


def test_two_batteries_summed_and_absent(tmp_path):
    assert bm(tmp_path).probe().status == "absent"
    battery(tmp_path, "BAT0", power_uw=4_000_000)
    battery(tmp_path, "BAT1", power_uw=6_000_000)
    m = bm(tmp_path)
    m.begin("w")
    m.clock.advance(1.0)
    r = m.end("w")
    assert r.joules == {"battery[BAT0]": 4.0, "battery[BAT1]": 6.0} and r.total_j == 10.0
