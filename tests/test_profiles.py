import pytest

from fedenergy.physics.call import radio_energy
from fedenergy.physics.devices import device_catalog, get_device
from fedenergy.physics.infra import infrastructure_energy_j
from fedenergy.physics.network import get_link, link_catalog


def test_every_constant_has_a_source():
    for prof in list(device_catalog().values()) + list(link_catalog().values()):
        assert prof.sources, prof.id
        assert all(str(v).strip() for v in prof.sources.values()), prof.id


def test_required_catalog_entries_exist():
    assert {"phone", "rpi4", "jetson-orin-nano", "laptop", "gpu-server"} <= set(device_catalog())
    assert {"wifi", "lte", "3g", "5g", "ethernet"} <= set(link_catalog())


def test_device_model_is_flops_over_throughput_times_power():
    d = get_device("rpi4")
    assert d.compute_time_s(1e9) == pytest.approx(1e9 / d.train_flops_per_s)
    assert d.compute_energy_j(1e9) == pytest.approx(1e9 / d.train_flops_per_s * d.active_power_w)


def test_lte_energy_for_known_bytes_matches_a_hand_computation():
    lte = get_link("lte")
    # 1,300,000 B down at 13 Mbit/s = 0.8 s; 600,000 B up at 6 Mbit/s = 0.8 s (Huang et al. 2012)
    e = radio_energy(lte, 1_300_000, 600_000, gap_s=2.0)
    p_down = (51.97 * 13 + 1288.04) / 1000  # W
    p_up = (438.39 * 6 + 1288.04) / 1000
    assert e.download_s == pytest.approx(0.8) and e.upload_s == pytest.approx(0.8)
    # a promotion from idle (1210.7 mW for 260.1 ms, Huang 2012 Table 3) before the download;
    # the upload pays the download's tail, cut 2 s later, and its own full 11.576 s tail after
    promo = 1.2107 * 0.2601
    assert e.download_j == pytest.approx(promo + p_down * 0.8)
    assert e.upload_j == pytest.approx(1.060 * 2.0 + p_up * 0.8 + 1.060 * 11.576)
    long_gap = radio_energy(lte, 1_300_000, 600_000, gap_s=60.0)
    # a 60 s gap outlasts the tail: the full tail, then a second promotion before the upload
    assert long_gap.upload_j == pytest.approx(1.060 * 11.576 + promo + p_up * 0.8 + 1.060 * 11.576)


def test_infrastructure_energy_per_byte():
    # 1 GB at 0.059 kWh/GB = 0.059 * 3.6e6 J
    assert infrastructure_energy_j(10**9) == pytest.approx(0.059 * 3.6e6)
    assert infrastructure_energy_j(10**9, kwh_per_gb=0.0) == 0.0


def test_unknown_profiles_are_named():
    with pytest.raises(ValueError, match="unknown device 'toaster'.*rpi4"):
        get_device("toaster")
    with pytest.raises(ValueError, match="unknown link 'carrier-pigeon'.*lte"):
        get_link("carrier-pigeon")
