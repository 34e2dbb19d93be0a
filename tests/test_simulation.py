"""A real Flower simulation (Simulation Engine on Ray) of a small fleet, checked via its ledger."""

import json
from collections import defaultdict

import pytest

from fedenergy.cli import main
from fedenergy.ledger import Ledger
from fedenergy.physics.call import radio_energy
from fedenergy.physics.devices import get_device
from fedenergy.physics.infra import infrastructure_energy_j
from fedenergy.physics.network import get_link

NODES, ROUNDS = 8, 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    code = main(
        [
            "simulate",
            "--nodes",
            str(NODES),
            "--rounds",
            str(ROUNDS),
            "--fraction",
            "0.5",
            "--fraction-evaluate",
            "0.25",
            "--seed",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    ledger = Ledger(out / "ledger.sqlite")
    yield summary, ledger
    ledger.close()


def test_summary_has_the_documented_fields(run):
    summary, _ = run
    for key in (
        "total_j",
        "compute_j",
        "network_j",
        "rounds",
        "final_accuracy",
        "nodes",
        "per_round",
    ):
        assert key in summary
    assert summary["rounds"] == ROUNDS and summary["nodes"] == NODES
    assert summary["status"] == "completed"


def test_every_participant_of_every_round_has_every_phase(run):
    summary, ledger = run
    rows = ledger.energy_rows(summary["run_id"])
    phases = defaultdict(set)
    for r in rows:
        phases[(r["round"], r["node_id"], r["call"])].add(r["phase"])
    for rnd in ledger.rounds(summary["run_id"])[1:]:
        trained = [k for k in phases if k[0] == rnd["round"] and k[2] == "train"]
        assert len(trained) == rnd["succeeded"] == rnd["selected"] == NODES // 2
        assert all(phases[k] == {"train", "download", "upload"} for k in trained)
        evaluated = [k for k in phases if k[0] == rnd["round"] and k[2] == "evaluate"]
        assert len(evaluated) == NODES // 4
    queried = {k[1] for k in phases if k[0] == 0 and k[2] == "query"}
    assert len(queried) == NODES


def test_per_node_rows_and_components_sum_to_the_printed_totals(run):
    summary, ledger = run
    rows = ledger.energy_rows(summary["run_id"])
    per_node = defaultdict(float)
    for r in rows:
        per_node[r["node_id"]] += r["joules"]
    assert sum(per_node.values()) == pytest.approx(summary["total_j"], rel=1e-9)
    comps = ledger.components(summary["run_id"])
    assert sum(c["joules"] for c in comps) == pytest.approx(summary["total_j"], rel=1e-9)
    assert summary["compute_j"] + summary["network_j"] == pytest.approx(summary["total_j"])
    assert sum(r["joules"] for r in summary["per_round"]) == pytest.approx(summary["total_j"])
    assert all(c["provenance"] in ("measured", "modeled") and c["source"] for c in comps)


def test_network_joules_equal_the_link_model_applied_to_recorded_bytes(run):
    summary, ledger = run
    run_id = summary["run_id"]
    calls = defaultdict(dict)
    for r in ledger.energy_rows(run_id):
        calls[(r["round"], r["node_id"], r["call"])][r["phase"]] = r
    radio = defaultdict(float)
    for c in ledger.components(run_id):
        radio[(c["round"], c["node_id"], c["call"], c["phase"], c["domain"])] += c["joules"]
    checked = 0
    for (rnd, node, call), ph in calls.items():
        first = next(iter(ph.values()))
        link, device = get_link(first["link"]), get_device(first["device"])
        compute = ph.get(call)
        gap = compute["seconds"] if compute else 0.0
        e = radio_energy(link, ph["download"]["bytes"], ph["upload"]["bytes"], gap)
        assert radio[(rnd, node, call, "download", "radio")] == pytest.approx(e.download_j)
        assert radio[(rnd, node, call, "upload", "radio")] == pytest.approx(e.upload_j)
        for p in ("download", "upload"):
            assert radio[(rnd, node, call, p, "infrastructure")] == pytest.approx(
                infrastructure_energy_j(ph[p]["bytes"])
            )
        if compute and call == "train":
            assert compute["joules"] == pytest.approx(compute["seconds"] * device.active_power_w)
        assert ph["download"]["bytes"] > 1000 or call == "query"
        checked += 1
    assert checked >= NODES + ROUNDS * NODES // 2


def test_accuracy_rises_over_rounds(run):
    summary, _ = run
    acc = [r["accuracy"] for r in summary["per_round"]]
    assert acc[-1] > acc[0] + 0.2
    assert acc[-1] == summary["final_accuracy"]
