"""Energy-aware strategies in real Flower simulations."""

import json

import pytest

from fedenergy.cli import main
from fedenergy.ledger import Ledger

# Half the nodes are 3G phones (a ~100x costlier call than an Ethernet laptop once
# infrastructure energy, equal per byte for everyone, is excluded).
OBVIOUS = """
name = "obvious"
[[group]]
device = "phone-midrange"
link = "3g"
fraction = 0.5
[[group]]
device = "laptop"
link = "ethernet"
fraction = 0.5
"""

FLAKY = """
name = "flaky"
[[group]]
device = "rpi4"
link = "wifi"
fraction = 1.0
failure_prob = 0.3
"""


def _run(tmp, name, *args):
    out = tmp / name
    assert (
        main(
            [
                "simulate",
                "--nodes",
                "8",
                "--rounds",
                "6",
                "--fraction",
                "0.5",
                "--fraction-evaluate",
                "0",
                "--seed",
                "2",
                "--out",
                str(out),
                *args,
            ]
        )
        == 0
    )
    return json.loads((out / "summary.json").read_text()), out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("strat")
    fleet = tmp / "obvious.toml"
    fleet.write_text(OBVIOUS)
    flaky = tmp / "flaky.toml"
    flaky.write_text(FLAKY)
    # the radio decides which nodes are dear: no start-up phase (a laptop's per-call ClientApp
    # start-up, 37 J, would outweigh a 3G phone's radio and turn the obvious answer round)
    common = ["--fleet", str(fleet), "--infra-kwh-per-gb", "0", "--startup", "off"]
    return {
        "random": _run(tmp, "random", *common),
        "utility": _run(tmp, "utility", *common, "--selector", "utility", "--max-staleness", "4"),
        "fedprox": _run(tmp, "fedprox", "--aggregator", "fedprox", "--proximal-mu", "0.01"),
        "fedadam": _run(tmp, "fedadam", "--aggregator", "fedadam", "--rounds", "6"),
        "flaky": _run(tmp, "flaky", "--fleet", str(flaky), "--fraction", "1.0"),
    }


def _per_link(out):
    with Ledger(out / "ledger.sqlite") as led:
        run_id = led.runs()[0]["run_id"]
        rows = led.energy_rows(run_id)
    return {r["link"] for r in rows if r["call"] == "train"}, rows


def test_energy_aware_spends_clearly_less_than_random_and_converges(runs):
    rnd, rnd_out = runs["random"]
    util, out = runs["utility"]

    # the profile query (round 0) costs both the same, and so do the run-end rows (the radio
    # tail after each node's last transfer: with max-staleness 4 every node trains at least
    # once); selection acts on the training calls
    def split(o):
        with Ledger(o / "ledger.sqlite") as led:
            rows = led.energy_rows(led.runs()[0]["run_id"])
        calls = sum(r["joules"] for r in rows if r["round"] > 0 and r["call"] != "run-end")
        return calls, sum(r["joules"] for r in rows if r["call"] == "run-end")

    (rnd_calls, rnd_end), (util_calls, util_end) = split(rnd_out), split(out)
    assert util_calls < 0.5 * rnd_calls, (util_calls, rnd_calls)
    assert util_end == pytest.approx(rnd_end)
    saved = rnd["total_j"] - util["total_j"]
    assert saved == pytest.approx(rnd_calls - util_calls, rel=1e-9) and saved > 0
    acc = [r["accuracy"] for r in util["per_round"]]
    assert acc[-1] > acc[0] + 0.2
    assert acc[-1] > rnd["final_accuracy"] - 0.15
    links, _ = _per_link(out)
    assert "ethernet" in links  # it trains, mostly on the cheap nodes


@pytest.mark.parametrize("name", ["fedprox", "fedadam"])
def test_other_flower_aggregators_combine_with_the_wrapper(runs, name):
    summary, _ = runs[name]
    assert summary["status"] == "completed"
    acc = [r["accuracy"] for r in summary["per_round"]]
    assert acc[-1] > acc[0] + 0.1
    assert all(r["succeeded"] == r["selected"] for r in summary["per_round"][1:])


def test_failed_nodes_spend_energy_that_is_counted(runs):
    summary, out = runs["flaky"]
    assert summary["status"] == "completed"
    failed = sum(r["failed"] for r in summary["per_round"])
    assert failed >= 3  # 8 nodes x 6 rounds x 0.3
    _, rows = _per_link(out)
    wasted = [r for r in rows if r["status"] == "failed"]
    assert wasted and all(r["joules"] > 0 for r in wasted)
    assert {r["phase"] for r in wasted} == {"download", "train"}
    assert sum(r["joules"] for r in rows) == pytest.approx(summary["total_j"])
    acc = [r["accuracy"] for r in summary["per_round"]]
    assert acc[-1] > acc[0] + 0.2
