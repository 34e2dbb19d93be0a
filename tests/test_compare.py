"""`fedenergy compare`: one small real federation, then its totals recomputed from the ledgers."""

import json

import pytest

from fedenergy.analysis.carbon import grid_intensity
from fedenergy.analysis.centralized import node_upload_samples
from fedenergy.cli import main
from fedenergy.ledger import Ledger
from fedenergy.physics.call import radio_energy
from fedenergy.physics.devices import get_device
from fedenergy.physics.flops import FlopCache
from fedenergy.physics.infra import infrastructure_energy_j
from fedenergy.physics.network import get_link
from fedenergy.settings import Settings
from fedenergy.sim.fleet import load_fleet
from fedenergy.sim.tasks import DataConfig, get_task

NODES, ROUNDS = 6, 3


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    argv = ["compare", "--nodes", str(NODES), "--rounds", str(ROUNDS), "--seed", "1"]
    assert main([*argv, "--fraction-evaluate", "0", "--no-measure", "--out", str(out)]) == 0
    comp = json.loads((out / "comparison.json").read_text())
    return out, comp


def test_comparison_json_has_both_sides_and_the_ratio(compared):
    out, comp = compared
    for side in ("federated", "centralized"):
        for key in ("total_j", "kwh", "co2e_kg", "accuracy", "compute_j", "network_j",
                    "infrastructure_j", "time_s"):  # fmt: skip
            assert isinstance(comp[side][key], float), (side, key)
    assert comp["federated"]["rounds"] >= 0 and comp["centralized"]["epochs"] >= 1
    r = comp["ratio"]
    assert r["energy"] == pytest.approx(
        comp["federated"]["total_j"] / comp["centralized"]["total_j"]
    )
    assert r["co2e"] == pytest.approx(comp["federated"]["co2e_kg"] / comp["centralized"]["co2e_kg"])
    assert comp["target_source"] == "federated final accuracy"
    for f in ("ledger.sqlite", "report.html", "accuracy_vs_energy.png", "ledger_energy.csv"):
        assert (out / f).is_file()


def test_federated_totals_recomputed_from_its_ledger(compared):
    out, comp = compared
    fed = comp["federated"]
    with Ledger(out / "ledger.sqlite") as ledger:
        rounds = ledger.rounds(fed["run_id"])
        first = next(r["round"] for r in rounds if r["accuracy"] >= comp["target_accuracy"])
        assert fed["rounds"] == first and fed["reached"]
        q = "SELECT SUM(joules) FROM energy WHERE run_id=? AND round<=?"
        total = ledger.conn.execute(q, (fed["run_id"], first)).fetchone()[0]
        q = "SELECT domain, SUM(joules) FROM components WHERE run_id=? AND round<=? GROUP BY domain"
        dom = dict(ledger.conn.execute(q, (fed["run_id"], first)).fetchall())
    assert fed["total_j"] == pytest.approx(total) and fed["pue_overhead_j"] == 0  # edge fleet
    assert fed["network_j"] == pytest.approx(dom["radio"])
    assert fed["infrastructure_j"] == pytest.approx(dom["infrastructure"])
    assert fed["compute_j"] == pytest.approx(total - dom["radio"] - dom["infrastructure"])
    # the mixed fleet has no country: every joule at the world intensity
    assert fed["co2e_kg"] == pytest.approx(total / 3.6e6 * 0.475)
    assert fed["kwh"] == pytest.approx(total / 3.6e6)
    # infrastructure under the other (power) model: every joule still at the world intensity
    assert fed["infra_model_other"] == "power"
    assert fed["total_j_other_infra"] != pytest.approx(fed["total_j"])
    assert fed["co2e_kg_other_infra"] == pytest.approx(fed["total_j_other_infra"] / 3.6e6 * 0.475)


def test_centralized_totals_recomputed_from_the_models(compared):
    _, comp = compared
    cen = comp["centralized"]
    s = Settings(**comp["settings"])
    profiles = load_fleet(s.fleet).assign(NODES, s.seed)
    task = get_task(s.task)
    cfg = DataConfig(NODES, s.seed, s.partitioner, s.dirichlet_alpha)
    pooled = task.pooled_train_data(cfg)
    sizes = node_upload_samples(task, cfg)
    assert sum(n for n, _ in sizes) == len(pooled) == cen["samples"]
    assert [b for _, b in sizes] == [n * (64 * 4 + 8) for n, _ in sizes]  # float32 x 64 + int64
    # each node's upload and tail, and (whole-device boundary, the default) its idle power over
    # the upload's transfer time
    radio = 0.0
    for p, (_, b) in zip(profiles, sizes, strict=True):
        up = radio_energy(get_link(p.link.id), 0, b, 0.0)
        radio += up.upload_j + p.device.idle_power_w * up.upload_s
    infra = infrastructure_energy_j(sum(b for _, b in sizes), s.infra_kwh_per_gb)
    gpu = get_device("gpu-server")
    flops = FlopCache().training(task.make_model(), pooled.x, len(pooled), s.batch_size, 1)
    # gpu-server: 1.28e13 FLOP/s, 1.06e-4 s a step, 500 W busy (150 W idle + 350 W); an epoch is
    # ceil(samples / batch) steps; no start-up (one long-lived process)
    steps = -(-len(pooled) // s.batch_size)
    compute = cen["epochs"] * 500.0 * (flops / 1.28e13 + steps * 1.06e-4)
    assert cen["steps"] == cen["epochs"] * steps
    assert cen["network_j"] == pytest.approx(radio)
    assert cen["infrastructure_j"] == pytest.approx(infra)
    assert cen["compute_j"] == pytest.approx(compute)
    assert cen["pue_overhead_j"] == pytest.approx(compute * (gpu.pue - 1))
    assert cen["total_j"] == pytest.approx(radio + infra + compute * gpu.pue)
    co2 = (radio + infra) / 3.6e6 * 0.475 + compute * gpu.pue / 3.6e6 * 0.3695
    assert cen["co2e_kg"] == pytest.approx(co2)
    # under the other infrastructure model only the uploads' infrastructure joules change, and
    # they are priced at the world intensity (0.475 kg/kWh), not the datacenter's country
    moved = cen["total_j_other_infra"] - cen["total_j"]
    assert moved != 0
    assert cen["co2e_kg_other_infra"] == pytest.approx(co2 + moved / 3.6e6 * 0.475)
    r = comp["ratio"]
    assert r["co2e_other_infra"] == pytest.approx(
        comp["federated"]["co2e_kg_other_infra"] / cen["co2e_kg_other_infra"]
    )
    assert r["energy_other_infra"] == pytest.approx(
        comp["federated"]["total_j_other_infra"] / cen["total_j_other_infra"]
    )
    assert grid_intensity(cen["country"]).g_per_kwh == 369.5
    accs = [e["accuracy"] for e in cen["per_epoch"]]
    assert cen["reached"] and accs[-1] >= comp["target_accuracy"] > max(accs[:-1])
    cum = [e["cumulative_j"] for e in cen["per_epoch"]]
    assert cum == sorted(cum) and cum[-1] == pytest.approx(cen["total_j"])


def test_compare_from_a_saved_run_with_an_unreached_target_is_flagged(compared, tmp_path):
    out, _ = compared
    argv = ["compare", "--from-run", str(out), "--out", str(tmp_path), "--no-measure"]
    code = main([*argv, "--target-accuracy", "0.999", "--max-epochs", "2", "--datacenter",
                 "cpu-server", "--datacenter-country", "FRA"])  # fmt: skip
    assert code == 0
    comp = json.loads((tmp_path / "comparison.json").read_text())
    fed, cen = comp["federated"], comp["centralized"]
    assert not fed["reached"] and fed["rounds"] == fed["rounds_in_run"] == ROUNDS
    assert not cen["reached"] and cen["epochs"] == 2 and cen["device"] == "cpu-server"
    assert any("never reached" in n for n in comp["notes"])
    assert cen["carbon"]["by_country_kg"]["FRA"] == pytest.approx(
        cen["compute_j"] * 1.58 / 3.6e6 * 0.056
    )


def test_compare_rejects_bad_options(tmp_path):
    assert main(["compare", "--datacenter", "phone", "--out", str(tmp_path)]) == 2
    assert main(["compare", "--target-accuracy", "1.5", "--out", str(tmp_path)]) == 2
    assert main(["compare", "--from-run", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2


def _regimes():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "simulations" / "compare_regimes.py"
    spec = importlib.util.spec_from_file_location("compare_regimes", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_regimes_prints_every_what_if_of_a_saved_run(compared, capsys):
    out, comp = compared
    regimes = _regimes()
    got = regimes.print_what_ifs(out, 40)
    lines = capsys.readouterr().out.splitlines()
    assert list(got) == list(regimes.WHAT_IFS) and len(lines) == len(got)
    for (name, r), line in zip(got.items(), lines, strict=True):
        assert line.startswith(name) and f"{r['ratio']['energy']:8.3g}" in line
        assert r["ratio"]["energy"] == pytest.approx(r["federated_j"] / r["centralized_j"])


def test_regimes_what_if_reprices_the_saved_run_by_hand(compared):
    """compare_regimes' analytic what-if: (1, 1) gives the comparison's totals; doubling the
    model adds the training/evaluation joules once more and, per train/evaluate call, the
    transfer time of its recorded bytes again at radio power plus idle base, and the
    infrastructure of its bytes again (start-up, promotions and tails unchanged); samples x2
    adds each raw-data upload's transfer and infrastructure again and the centralized compute
    once more at the datacenter's PUE."""
    out, comp = compared
    regimes = _regimes()
    ledger = out / "ledger.sqlite"
    fed, cen = comp["federated"], comp["centralized"]
    same = regimes.what_if(comp, ledger, 1.0, 1.0)
    assert same["federated_j"] == pytest.approx(fed["total_j"], rel=1e-12)
    assert same["centralized_j"] == pytest.approx(cen["total_j"], rel=1e-12)
    assert same["federated_j_other"] == pytest.approx(fed["total_j_other_infra"], rel=1e-12)
    assert same["centralized_j_other"] == pytest.approx(cen["total_j_other_infra"], rel=1e-12)
    kwh_gb = comp["settings"]["infra_kwh_per_gb"]
    work, add, add_power = 0.0, 0.0, 0.0
    with Ledger(ledger) as led:
        rows = [r for r in led.energy_rows(fed["run_id"]) if r["round"] <= fed["rounds"]]
    for r in rows:
        if r["call"] not in ("train", "evaluate"):
            continue
        if r["phase"] == r["call"]:
            work += r["joules"]
        if r["phase"] not in ("download", "upload"):
            continue
        link, idle = get_link(r["link"]), get_device(r["device"]).idle_power_w
        bps, w = (
            (link.down_mbps * 1e6, link.download_power_w())
            if r["phase"] == "download"
            else (link.up_mbps * 1e6, link.upload_power_w())
        )
        t = r["bytes"] * 8 / bps
        add += (w + idle) * t + r["bytes"] / 1e9 * kwh_gb * 3.6e6
        infra_w, j_per_byte = link.terms.infra_w, link.terms.infra_j_per_byte
        add_power += (w + idle) * t + infra_w * t + j_per_byte * r["bytes"]
    assert work > 0 and add > 0
    big = regimes.what_if(comp, ledger, 2.0, 1.0)
    assert big["federated_j"] == pytest.approx(fed["total_j"] + work + add, rel=1e-9)
    assert big["federated_j_other"] == pytest.approx(
        fed["total_j_other_infra"] + work + add_power, rel=1e-9
    )
    extra = cen["compute_j"] * get_device(cen["device"]).pue
    assert big["centralized_j"] == pytest.approx(cen["total_j"] + extra, rel=1e-9)
    up = 0.0
    for u in cen["uploads"]:
        link = get_link(u["link"])
        t = u["bytes"] * 8 / (link.up_mbps * 1e6)
        up += (link.upload_power_w() + get_device(u["device"]).idle_power_w) * t
        up += u["bytes"] / 1e9 * kwh_gb * 3.6e6
    wide = regimes.what_if(comp, ledger, 1.0, 2.0)
    assert wide["federated_j"] == pytest.approx(fed["total_j"], rel=1e-12)
    assert wide["centralized_j"] == pytest.approx(cen["total_j"] + up + extra, rel=1e-9)


def test_regimes_what_if_refuses_a_comparison_its_ledger_does_not_hold(compared):
    """The --fresh bug: a comparison written for one run re-priced against a ledger that holds
    another run found no rows and printed 0 J for the federated side; now it is an error."""
    out, comp = compared
    stale = {**comp, "federated": {**comp["federated"], "run_id": "not-in-this-ledger"}}
    with pytest.raises(ValueError, match="no rows"):
        _regimes().what_if(stale, out / "ledger.sqlite", 2.0, 1.0)


def test_regimes_tasks_row_matches_its_comparison(tmp_path):
    """compare_regimes --tasks: a real tiny run per workload; its workloads.json row carries the
    task, the size and the comparison's own totals and ratios."""
    regimes = _regimes()
    assert regimes.main(["--tasks", "synthetic:3x1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "workloads.json").read_text())
    name = "task synthetic, 3 nodes x 1 rounds"
    assert list(rows) == [name]
    row = rows[name]
    comp = json.loads((tmp_path / regimes.slug(name) / "comparison.json").read_text())
    assert (row["task"], row["nodes"], row["rounds"]) == ("synthetic", 3, 1)
    assert row["federated_j"] == comp["federated"]["total_j"] > 0
    assert row["centralized_co2e_kg"] == comp["centralized"]["co2e_kg"] > 0
    assert row["ratio"]["energy"] == pytest.approx(row["federated_j"] / row["centralized_j"])
    other = row["federated_j_other_infra"] / row["centralized_j_other_infra"]
    assert row["ratio_other_infra"]["energy"] == pytest.approx(other)
    assert not (tmp_path / "regimes.json").exists()
