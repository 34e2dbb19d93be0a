"""A real Flower simulation (Simulation Engine on Ray) of a small fleet, checked via its ledger."""

import json
import math
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

import fedenergy
from fedenergy.cli import main
from fedenergy.ledger import Ledger
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
        # every call pays the start-up of its ClientApp process (settings.startup = "per-call";
        # 0 J on phones, whose client runs inside the app)
        assert all(phases[k] == {"train", "startup", "download", "upload"} for k in trained)
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


def _radio_by_hand(calls) -> dict[tuple, float]:
    """The radio joules of every (round, node, call, phase), and of each node's run-end tail
    under (None, node, "run-end", "upload"), worked out from links.toml's constants on the run's
    virtual clock (README, "the radio over the run"): a round's train messages go out when the
    previous phase's last transfer ended, its evaluate messages when the train phase's did; the
    profile query has no clock (each query call stands alone). A transfer is charged what leads
    up to it since the node's previous transfer: that tail, cut, or where it ran out (or there
    was none) a full tail and a promotion, which also delays the transfer."""
    toml = tomllib.loads((Path(fedenergy.__file__).parent / "data" / "links.toml").read_text())

    def consts(link_id):
        k = toml["links"][link_id]
        return dict(
            down_w=(k["alpha_down_mw_per_mbps"] * k["down_mbps"] + k["beta_mw"]) / 1000,
            up_w=(k["alpha_up_mw_per_mbps"] * k["up_mbps"] + k["beta_mw"]) / 1000,
            down_bps=k["down_mbps"] * 1e6,
            up_bps=k["up_mbps"] * 1e6,
            tail_w=k["tail_mw"] / 1000,
            tail_s=k["tail_s"],
            promo_j=k["promo_mw"] / 1000 * k["promo_s"],
            promo_s=k["promo_s"],
        )

    def before(c, idle):  # (joules, delay) between a transfer's end and the next's start
        if idle == math.inf:
            return c["promo_j"], c["promo_s"]
        if idle >= c["tail_s"]:
            return c["tail_w"] * c["tail_s"] + c["promo_j"], c["promo_s"]
        return c["tail_w"] * idle, 0.0

    out, end, clock = {}, {}, 0.0
    order = {"query": -1, "train": 0, "evaluate": 1}
    phases = sorted({(k[0], k[2]) for k in calls}, key=lambda p: (p[0], order[p[1]]))
    for rnd, call in phases:
        ends = []
        for key in [k for k in calls if (k[0], k[2]) == (rnd, call)]:
            ph, node = calls[key], key[1]
            c = consts(ph["download"]["link"])
            t_down = ph["download"]["bytes"] * 8 / c["down_bps"]
            standalone = call == "query"
            idle = math.inf if standalone or node not in end else clock - end[node]
            lead_j, lead_s = before(c, idle)
            out[key + ("download",)] = lead_j + c["down_w"] * t_down
            t = clock + lead_s + t_down
            if "upload" in ph:
                # the gap: the ClientApp's start-up, then the handler's compute
                gap = (ph[call]["seconds"] if call in ph else 0.0) + (
                    ph["startup"]["seconds"] if "startup" in ph else 0.0
                )
                mid_j, mid_s = before(c, max(gap, 0.0))
                t_up = ph["upload"]["bytes"] * 8 / c["up_bps"]
                up_j = mid_j + c["up_w"] * t_up
                out[key + ("upload",)] = up_j + (c["tail_w"] * c["tail_s"] if standalone else 0)
                t += gap + mid_s + t_up
            if not standalone:
                end[node] = t
                ends.append(t)
                out[(None, node, "run-end", "upload")] = c["tail_w"] * c["tail_s"]
        clock = max([clock, *ends])
    return out


def test_network_joules_equal_the_link_model_applied_to_recorded_bytes(run):
    summary, ledger = run
    run_id = summary["run_id"]
    calls = defaultdict(dict)
    for r in ledger.energy_rows(run_id):
        if r["call"] != "run-end":
            calls[(r["round"], r["node_id"], r["call"])][r["phase"]] = r
    radio = defaultdict(float)
    for c in ledger.components(run_id):
        radio[(c["round"], c["node_id"], c["call"], c["phase"], c["domain"])] += c["joules"]
    by_hand = _radio_by_hand(calls)
    checked = 0
    for (rnd, node, call), ph in calls.items():
        device = get_device(next(iter(ph.values()))["device"])
        compute = ph.get(call)
        for p in ("download", "upload"):
            if p not in ph:
                continue
            got = radio[(rnd, node, call, p, "radio")]
            assert got == pytest.approx(by_hand[(rnd, node, call, p)], rel=1e-9), (rnd, call, p)
            assert radio[(rnd, node, call, p, "infrastructure")] == pytest.approx(
                infrastructure_energy_j(ph[p]["bytes"])
            )
        idle, above = device.idle_power_w, device.active_power_w - device.idle_power_w
        if compute and call == "train" and ph[call]["status"] == "ok":
            # one thread (the built-in ClientApp): 1/cores of the power above idle while busy;
            # whole-device boundary: the idle base over the two transfers too
            link = get_link(ph["download"]["link"])
            moving_s = ph["download"]["bytes"] * 8 / (link.down_mbps * 1e6) + ph["upload"][
                "bytes"
            ] * 8 / (link.up_mbps * 1e6)
            want = compute["seconds"] * (idle + above / device.cores) + idle * moving_s
            assert compute["joules"] == pytest.approx(want)
        if "startup" in ph:  # the start-up: startup_s on one of the device's CPU cores
            want = device.startup_s * (idle + above / device.cpu_cores)
            assert ph["startup"]["joules"] == pytest.approx(want)
        assert ph["download"]["bytes"] > 1000 or call == "query"
        checked += 1
    assert checked >= NODES + ROUNDS * NODES // 2
    # each node's last tail, once, with the run's last round
    ends = {r["node_id"]: r for r in ledger.energy_rows(run_id) if r["call"] == "run-end"}
    assert ends and {r["round"] for r in ends.values()} == {ROUNDS}
    for node, r in ends.items():
        assert r["joules"] == pytest.approx(by_hand[(None, node, "run-end", "upload")], rel=1e-12)


def test_accuracy_rises_over_rounds(run):
    summary, _ = run
    acc = [r["accuracy"] for r in summary["per_round"]]
    assert acc[-1] > acc[0] + 0.2
    assert acc[-1] == summary["final_accuracy"]
