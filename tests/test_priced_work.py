"""Priced local work (fedenergy/server/local_work.py): the decision rule by hand, the option
table against the one call model at each option's work, and a real Flower simulation in which a
node with expensive compute is sent fewer local epochs than a cheap one."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedenergy.codecs import parse_codec
from fedenergy.physics.catalog import load_catalog
from fedenergy.physics.flops import FlopCache
from fedenergy.plan import plan_run
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.local_work import (
    Option,
    PricedWork,
    ProgressModel,
    best_options,
    local_steps,
)
from fedenergy.server.node import NodeInfo
from fedenergy.settings import Settings
from fedenergy.sim.tasks import DataConfig, get_task

# the expensive-compute board of the user catalog below: every step costs 50 ms at 10 W
SLOW_STEP_S, SLOW_W, SLOW_FLOPS = 0.05, 10.0, 1.0e12

SLOW_DEVICE = f"""
schema = 1
[devices.slow-board]
label = "A board whose training steps are slow (test data)"
kind = "edge"
class = "sbc"
train_flops_per_s = {SLOW_FLOPS}
active_power_w = {SLOW_W}
idle_power_w = 2.0
cores = 1
step_overhead_s = {SLOW_STEP_S}
startup_s = 0.0
cpu_cores = 1
pue = 1.0
battery_wh = 0.0
[devices.slow-board.sources]
train_flops_per_s = "ASSUMPTION (test data)."
active_power_w = "ASSUMPTION (test data)."
idle_power_w = "ASSUMPTION (test data)."
cores = "ASSUMPTION (test data): one core."
step_overhead_s = "ASSUMPTION (test data): a slow step."
startup_s = "ASSUMPTION (test data): no start-up."
cpu_cores = "ASSUMPTION (test data): one core."
pue = "Edge board (1.0)."
battery_wh = "Mains powered."
"""

FLEET = """
name = "slowfast"
description = "half slow boards, half phones, all on Wi-Fi"
[[group]]
device = "slow-board"
link = "wifi"
fraction = 0.5
[[group]]
device = "phone"
link = "wifi"
fraction = 0.5
"""


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cat"
    (d / "fleets").mkdir(parents=True)
    (d / "devices.toml").write_text(SLOW_DEVICE)
    (d / "fleets" / "slowfast.toml").write_text(FLEET)
    return d


class Sizes:
    """Fixed call sizes (what the strategy's outbox would give): payload bytes per codec
    label, one train-message size."""

    def __init__(self, payload: dict[str, int], download: int) -> None:
        self.payload, self.download = payload, download

    def payload_bytes(self, spec) -> int:
        return self.payload[spec.label()]

    def download_size(self, spec) -> int:
        return self.download


# -- the rule, by hand ---------------------------------------------------------------------------
def test_the_option_of_most_progress_per_joule_from_a_hand_table():
    progress = np.array([[0.10, 0.40, 0.80], [0.10, 0.40, 0.80], [0.5, 0.5, 0.5]])
    joules = np.array([[2.0, 5.0, 20.0], [10.0, 11.0, 14.0], [3.0, 2.0, 2.0]])
    # by hand: row 0: 0.05, 0.08, 0.04 -> 1; row 1: 0.01, 0.0364, 0.0571 -> 2;
    # row 2: 0.167, 0.25, 0.25 -> 1 (a tie goes to the first in menu order)
    best, ratio = best_options(progress, joules)
    assert best.tolist() == [1, 2, 1]
    assert ratio == pytest.approx([0.08, 0.8 / 14.0, 0.25], rel=1e-15)


def test_progress_saturates_in_steps_and_codecs_cost_their_measured_delta():
    pm = ProgressModel(tau_steps=20.0)
    assert float(pm.saturation(20.0)) == pytest.approx(1 - math.exp(-1), rel=1e-15)
    assert float(pm.saturation(0.0)) == 0.0
    assert pm.factor(parse_codec("int8")) == 1.0
    assert pm.factor(parse_codec("stc:0.09")) == pytest.approx(0.983)  # -1.70 points at 10
    assert pm.factor(parse_codec("stc:0.2")) == pytest.approx(0.983)  # by family
    assert pm.factor(parse_codec("topk:0.01")) == pytest.approx(0.8549)
    assert ProgressModel(codec_factors={"int8": 0.5}).factor(parse_codec("int8")) == 0.5
    assert local_steps(np.array([64, 65, 1]), 32, 5).tolist() == [10, 15, 5]
    assert local_steps(np.array([64]), 0, 5).tolist() == [5]  # batch not known: 1 per epoch
    with pytest.raises(ValueError, match="tau-steps must be > 0"):
        ProgressModel(tau_steps=0.0)
    with pytest.raises(ValueError, match="codec factor of 'int8' must be in"):
        ProgressModel(codec_factors={"int8": 1.5})


# -- the option table on a real fleet state ------------------------------------------------------
def _fleet(catalog_dir: Path, nodes: list[tuple[str, str]], infra: float = 0.059) -> FleetState:
    infos = [NodeInfo(i + 1, i, dev, link, num_examples=64) for i, (dev, link) in enumerate(nodes)]
    fleet = FleetState(infos, 0, infra, load_catalog([catalog_dir]))
    fleet.flops_per_example, fleet.batch_size, fleet.local_epochs = 6 * 2410 * 5, 32, 5
    fleet.threads, fleet.startup = 1, "off"
    return fleet


def test_expensive_compute_gets_fewer_epochs_and_each_option_is_the_call_model_at_its_work(
    catalog_dir,
):
    fleet = _fleet(catalog_dir, [("slow-board", "wifi"), ("phone", "wifi")])
    pw = PricedWork(epoch_menu=(1, 5, 15, 30), codecs=(parse_codec("int8"),))
    pw.bind_sizes(Sizes({"int8": 2442}, 12000))
    cands = [1, 2]
    joules, _, progress = pw.table(fleet, cands)
    # every option's joules: the one call model's forecast of a call with that many epochs
    # (the fleet's FLOPs and steps set for it), not a second formula
    per_epoch_flops = fleet.flops_per_example / fleet.local_epochs
    for j, e in enumerate(pw.epoch_menu):
        fleet.local_epochs, fleet.flops_per_example = e, per_epoch_flops * e
        comp, dl, ul, _ = fleet.forecast_many(fleet.rows(cands), "int8", 2442, 12000)
        assert joules[:, j] == pytest.approx(comp + dl + ul, rel=1e-12)
    fleet.local_epochs, fleet.flops_per_example = 5, per_epoch_flops * 5
    # the slow board's compute by hand: 2 steps an epoch (64 examples, batch 32) of 50 ms at
    # 10 W (one core of one: all of it busy), plus FLOPs at 1e12/s: 1.0 J an epoch and a bit.
    # From 5 to 15 epochs the compute gap (0.5 s, 1.5 s) outlasts the Wi-Fi tail (0.238 s) both
    # times, so the radio is the same and only compute differs (from 1 epoch, 0.1 s, it does
    # not: the tail is cut there)
    slow_epoch_j = SLOW_W * (2 * SLOW_STEP_S + per_epoch_flops * 64 / SLOW_FLOPS)
    assert joules[0, 2] - joules[0, 1] == pytest.approx(10 * slow_epoch_j, rel=1e-9)
    # progress by hand: 1 - exp(-2e/20)
    assert progress[0].tolist() == pytest.approx([-math.expm1(-2 * e / 20) for e in (1, 5, 15, 30)])
    chosen = pw.select(1, cands, 2, fleet, lambda nid: None)
    assert sorted(chosen) == [1, 2]
    # the choice: the argmax of progress / joules computed here, option by option
    for row, nid in enumerate(cands):
        ratios = [progress[row, j] / joules[row, j] for j in range(4)]
        assert pw.plan[nid].epochs == pw.epoch_menu[int(np.argmax(ratios))]
    assert pw.plan[1].epochs == 5  # 0.393 / (5 J + network) beats 0.095 / (1 J + network)
    assert pw.plan[2].epochs == 30  # the phone's epochs cost milli-joules
    assert pw.epochs_for(fleet[1], 1) == 5 and pw.codec_for(fleet[1], 1).label() == "int8"


def test_an_expensive_link_gets_a_stronger_codec(catalog_dir):
    # a ResNet-class update (20 MB raw); no per-byte infrastructure, so only the links differ
    fleet = _fleet(catalog_dir, [("laptop", "ethernet"), ("laptop", "lte")], infra=0.0)
    fleet.startup = "per-call"  # the laptop's 4.25 s start-up: ~37 J a call on either link
    codecs = tuple(parse_codec(c) for c in ("none", "int8", "topk:0.01"))
    pw = PricedWork(epoch_menu=(5,), codecs=codecs)
    pw.bind_sizes(Sizes({"none": 20_000_000, "int8": 5_000_000, "topk:0.01": 400_000}, 5_000_000))
    pw.select(1, [1, 2], 2, fleet, lambda nid: None)
    # Ethernet: int8 (its factor 1, fewer bytes than none); top-k's 14.5 % less progress is
    # not worth its ~0.04 s less transfer (~0.2 J of ~37). LTE: 5 MB of uplink at 6 Mbit/s
    # is ~7 s of radio (3.9 W) and waiting (5 W), ~59 J, against ~0.5 s for top-k: top-k
    joules, _, _ = pw.table(fleet, [1, 2])
    assert (joules[0, 1] - joules[0, 2]) / joules[0, 1] < 0.145 < 1 - joules[1, 2] / joules[1, 1]
    assert pw.plan[1] == Option(5, parse_codec("int8"))
    assert pw.plan[2] == Option(5, parse_codec("topk:0.01"))


def test_participation_takes_the_k_best_by_progress_per_joule(catalog_dir):
    fleet = _fleet(catalog_dir, [("slow-board", "wifi"), ("phone", "wifi"), ("phone", "lte")])
    pw = PricedWork(epoch_menu=(1, 5, 30), codecs=(parse_codec("int8"),))
    pw.bind_sizes(Sizes({"int8": 2442}, 12000))
    joules, _, progress = pw.table(fleet, [1, 2, 3])
    best = (progress / joules).max(axis=1)
    expected = [[1, 2, 3][i] for i in np.argsort(-best, kind="stable")[:2].tolist()]
    assert pw.select(1, [1, 2, 3], 2, fleet, lambda nid: None) == expected
    assert expected[0] == 2  # the phone on Wi-Fi: cheap compute, cheap radio


def test_settings_and_plan_build_it_and_refuse_bad_values():
    plan = plan_run(Settings(local_work="priced", epoch_menu=(2, 4), codec_menu=("int8",)))
    assert isinstance(plan.policy, PricedWork) and plan.selector is plan.policy
    assert plan.policy.epoch_menu == (2, 4) and plan.policy.default_epochs == 5
    assert [c.label() for c in plan.policy.codecs] == ["int8"]
    assert not isinstance(plan_run(Settings()).policy, PricedWork)  # off by default
    for bad, msg in (
        (dict(local_work="cheap"), "unknown local-work 'cheap'"),
        (dict(epoch_menu=(0, 5)), "epoch-menu entries must be positive integers"),
        (dict(epoch_menu=(5, 5)), "epoch-menu has a repeated entry"),
        (dict(codec_menu=("int9",)), "invalid codec-menu entry 'int9'"),
        (dict(progress_tau_steps=-1.0), "progress-tau-steps must be > 0"),
        (dict(local_work="priced", round_budget_j=10.0), "cannot be combined"),
    ):
        with pytest.raises(ValueError, match=msg):
            Settings(**bad).validate()
    s = Settings.from_run_config(
        {"local-work": "priced", "epoch-menu": "1,5", "codec-menu": ["int8"]}
    )
    assert s.epoch_menu == (1, 5) and s.codec_menu == ("int8",)


# -- a real simulation ---------------------------------------------------------------------------
def test_a_priced_simulation_sends_slow_boards_fewer_epochs_and_trains(catalog_dir, tmp_path):
    """4 nodes (2 slow boards, 2 phones, Wi-Fi), 2 rounds in Flower's Simulation Engine with
    --local-work priced: every node trains each round, the slow boards' ledger compute is that
    of 1 local epoch, the phones' of more, and the accuracy rises."""
    from fedenergy.cli import main

    out = tmp_path / "out"
    argv = ["simulate", "--catalog", str(catalog_dir), "--fleet", "slowfast", "--nodes", "4"]
    argv += ["--rounds", "2", "--fraction", "1.0", "--fraction-evaluate", "0", "--partitioner"]
    argv += ["iid", "--local-work", "priced", "--selector", "greedy", "--epoch-menu", "1,5,30"]
    argv += ["--codec-menu", "int8", "--startup", "off", "--out", str(out)]
    assert main(argv) == 0
    conn = sqlite3.connect(out / "ledger.sqlite")
    nodes = dict(conn.execute("SELECT node_id, partition_id FROM nodes"))
    device = dict(conn.execute("SELECT node_id, device FROM nodes"))
    rows = conn.execute(
        "SELECT round, node_id, seconds FROM energy WHERE call='train' AND phase='train' "
        "AND status='ok'"
    ).fetchall()
    accuracy = [a for (a,) in conn.execute("SELECT accuracy FROM rounds ORDER BY round")]
    assert len(rows) == 2 * 4
    task = get_task("digits")
    cfg = DataConfig(4, 0, "iid", 0.5)
    profiles = {"slow-board": (SLOW_FLOPS, SLOW_STEP_S), "phone": (7.3e10 / 8, 1.06e-4)}
    epochs_of: dict[str, set[int]] = {"slow-board": set(), "phone": set()}
    for _, node, seconds in rows:
        train, _ = task.client_data(nodes[node], cfg)
        flops_per_s, step_s = profiles[device[node]]
        # the epochs whose busy time (FLOPs at the device's one-thread rate + steps x its step
        # overhead, by hand) is the ledger's
        match = [
            e
            for e in (1, 5, 30)
            if seconds
            == pytest.approx(
                FlopCache().training(task.make_model(), train.x, len(train), 32, e) / flops_per_s
                + e * math.ceil(len(train) / 32) * step_s,
                rel=1e-9,
            )
        ]
        assert len(match) == 1, (device[node], seconds)
        epochs_of[device[node]].add(match[0])
    assert epochs_of["slow-board"] == {1}
    assert min(epochs_of["phone"]) > 1
    assert accuracy[-1] > accuracy[0] + 0.3


def test_the_wrapper_takes_priced_local_work_and_refuses_other_values():
    from flwr.serverapp.strategy import FedAvg

    from fedenergy import EnergyAware
    from fedenergy.server.policies import PerLinkPolicy
    from fedenergy.server.selectors import EnergyGreedySelector, UtilityPerJouleSelector

    wrapped = EnergyAware(FedAvg(), local_work="priced", selector="utility")
    assert not wrapped.accounting_only
    sel, pol = wrapped._parts()
    assert sel is pol and isinstance(pol, PricedWork)
    assert isinstance(pol.participation, UtilityPerJouleSelector)
    mine = PricedWork(epoch_menu=(2, 8), epochs_key="local-epochs", default_epochs=2)
    sel, pol = EnergyAware(FedAvg(), local_work=mine, compression="per-link")._parts()
    assert isinstance(pol.participation, EnergyGreedySelector)  # its own, no selector given
    assert isinstance(pol.inner, PerLinkPolicy) and pol.epochs_key == "local-epochs"
    assert pol is not mine and pol.epoch_menu == (2, 8)  # a fresh one per run
    with pytest.raises(ValueError, match="local_work must be None, 'priced' or a PricedWork"):
        EnergyAware(FedAvg(), local_work="more")
