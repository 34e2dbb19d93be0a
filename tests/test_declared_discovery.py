"""Declared discovery: each SuperNode declares its device and link in its registration name
(``fe:DEVICE/LINK[/COUNTRY]``), the coordinator reads it with ``Grid.get_nodes()`` and knows the
node before any message reaches it; partition and data come with the node's first reply."""

import json
import logging
from types import SimpleNamespace

import pytest

import fedenergy.sim.engine as sim
from fedenergy.cli import main
from fedenergy.ledger import Ledger
from fedenergy.server.declared import (
    MAX_NAME_CHARS,
    Declaration,
    DeclarationError,
    parse_declaration,
    read_declarations,
)
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.node import UNKNOWN_PARTITION, NodeInfo
from fedenergy.settings import Settings
from fedenergy.sim.fleet import load_fleet
from tests.test_strategy_simulation import OBVIOUS  # half 3G phones: the answer is obvious


# -- names -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, want",
    [
        ("fe:rpi4/wifi", Declaration("rpi4", "wifi")),
        ("kitchen-pi fe:rpi4/wifi", Declaration("rpi4", "wifi")),
        ("FE:Phone/LTE/usa", Declaration("phone", "lte", "USA")),
        ("lab,fe:laptop/ethernet/DEU;rack 3", Declaration("laptop", "ethernet", "DEU")),
        ("fe:jetson-orin-nano/5g/WORLD", Declaration("jetson-orin-nano", "5g", "WORLD")),
        ("rpi4-wifi", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_declaration(name, want):
    assert parse_declaration(name) == want


@pytest.mark.parametrize(
    "name, reason",
    [
        ("fe:rpi4", "is not 'fe:DEVICE/LINK'"),
        ("fe:/wifi", "is not 'fe:DEVICE/LINK'"),
        ("fe:rpi4/wifi/DEU/x", "is not 'fe:DEVICE/LINK'"),
        ("fe:toaster/wifi", "unknown device 'toaster'"),
        ("fe:rpi4/carrier-pigeon", "unknown link 'carrier-pigeon'"),
        ("fe:rpi4/wifi/Germany", "not an ISO 3166 alpha-3 code"),
        ("fe:rpi4/wifi fe:phone/lte", "2 'fe:' tokens"),
        ("x" * (MAX_NAME_CHARS + 1), "longer than"),
    ],
)
def test_malformed_declarations_are_refused_with_a_reason(name, reason):
    with pytest.raises(DeclarationError, match=reason):
        parse_declaration(name)


def test_a_token_parses_back_to_its_declaration():
    for d in (Declaration("rpi5", "wifi"), Declaration("phone", "3g", "BRA")):
        assert parse_declaration(d.token()) == d
        assert parse_declaration(f"node-7 {d.token()}") == d


def _grid(names: dict[int, str]):
    nodes = [SimpleNamespace(node_id=n, name=v) for n, v in names.items()]
    return SimpleNamespace(get_nodes=lambda: nodes)


def test_read_declarations_keeps_the_usable_ones_and_logs_the_rest(caplog):
    grid = _grid({1: "fe:rpi4/wifi", 2: "fe:toaster/wifi", 3: "plain name", 4: "fe:phone/lte"})
    with caplog.at_level(logging.WARNING, logger="fedenergy"):
        got = read_declarations(grid, [1, 2, 3])  # node 4 is not asked for
    assert got == {1: Declaration("rpi4", "wifi")}
    assert "node 2" in caplog.text and "unknown device 'toaster'" in caplog.text


def test_a_grid_without_node_details_declares_nothing(caplog):
    def boom():
        raise RuntimeError("GetNodes unavailable")

    with caplog.at_level(logging.WARNING, logger="fedenergy"):
        assert read_declarations(SimpleNamespace(get_nodes=boom), [1]) == {}
    assert "GetNodes unavailable" in caplog.text


# -- FleetState ------------------------------------------------------------------------------
def test_completing_a_declared_node_keeps_its_profile_and_history():
    st = FleetState([], seed=0, infra_kwh_per_gb=0.059)
    st.add(NodeInfo(7, UNKNOWN_PARTITION, "phone", "lte", country="USA"))
    st.add(NodeInfo(5, 1, "rpi4", "wifi"))
    st.add_unknown(3)
    assert st.ordered() == [5, 3, 7]  # partition not known yet: after the others, by node id
    st.observe_train(7, 1, 0.9)
    full = st[7].battery_j
    st.complete(NodeInfo(7, 0, "phone", "lte", num_examples=40, battery_initial=0.8))
    node = st[7]
    assert node.known and (node.device.id, node.link.id) == ("phone", "lte")
    assert node.info.partition_id == 0 and node.info.num_examples == 40
    assert node.info.country == "USA"  # the declared country stays
    assert node.participations == 1 and node.last_loss == 0.9
    assert node.battery_j == pytest.approx(full - 0.2 * node.capacity_j)
    assert st.ordered() == [7, 5, 3]


def test_simulated_names_declare_each_partitions_fleet_profile(tmp_path):
    fleet = tmp_path / "obvious.toml"
    fleet.write_text(OBVIOUS)
    s = Settings(nodes=6, fleet=str(fleet), seed=3, discovery="declared")
    names = sim.simulated_names(s)
    for name, p in zip(names, load_fleet(str(fleet)).assign(6, 3), strict=True):
        assert name.startswith(f"sim-node-{p.partition_id} ")
        assert parse_declaration(name) == Declaration(p.device.id, p.link.id, p.country)


# -- real simulations ------------------------------------------------------------------------
def _simulate(tmp, name, *extra):
    out = tmp / name
    args = ["simulate", "--nodes", "8", "--rounds", "3", "--fraction", "0.25"]
    args += ["--fraction-evaluate", "0", "--seed", "2", "--out", str(out), *extra]
    assert main(args) == 0
    return json.loads((out / "summary.json").read_text()), out


def _ledger(out):
    led = Ledger(out / "ledger.sqlite")
    try:
        run_id = led.runs()[0]["run_id"]
        nodes = led.conn.execute(
            "SELECT node_id, partition_id, device, link, country FROM nodes WHERE run_id=?",
            (run_id,),
        ).fetchall()
        rejections = led.conn.execute(
            "SELECT node_id, reason FROM rejections WHERE run_id=?", (run_id,)
        ).fetchall()
        return nodes, led.energy_rows(run_id), rejections
    finally:
        led.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("declared")
    fleet = tmp / "obvious.toml"
    fleet.write_text(OBVIOUS)
    # the radio decides which nodes are dear: no start-up phase (a laptop's per-call ClientApp
    # start-up, 37 J, would outweigh a 3G phone's radio)
    greedy = ("--fleet", str(fleet), "--selector", "greedy", "--startup", "off")
    return {
        "declared": _simulate(tmp, "declared", *greedy, "--discovery", "declared"),
        "lazy": _simulate(tmp, "lazy", *greedy, "--discovery", "lazy"),
        "fleet": fleet,
        "tmp": tmp,
    }


def test_declared_run_knows_every_node_without_any_message(runs):
    summary, out = runs["declared"]
    assert summary["per_round"][0]["joules"] == 0.0  # no round-0 query
    nodes, rows, rejections = _ledger(out)
    assert not [r for r in rows if r["call"] == "query"]
    assert not rejections
    truth = {p.partition_id: p for p in load_fleet(str(runs["fleet"])).assign(8, 2)}
    assert len(nodes) == 8  # all known from the start, trained or not
    trained = {r["node_id"] for r in rows if r["call"] == "train" and r["status"] == "ok"}
    declared = {(p.device.id, p.link.id, p.country) for p in truth.values()}
    for node_id, pid, device, link, country in nodes:
        assert (device, link, country) in declared
        if node_id in trained:  # its first reply taught its partition: the profile matches
            assert (device, link, country) == (
                truth[pid].device.id,
                truth[pid].link.id,
                truth[pid].country,
            )
        else:
            assert pid == UNKNOWN_PARTITION


def test_declared_profiles_keep_greedy_off_costly_nodes_from_round_one(runs):
    """Greedy with declared profiles never contacts a 3G phone; lazily it cannot tell them
    apart before their first reply and pays for some."""

    def spent_on_3g(out):
        nodes, rows, _ = _ledger(out)
        link = {n[0]: n[3] for n in nodes}
        return sum(r["joules"] for r in rows if link.get(r["node_id"]) == "3g")

    declared, lazy = spent_on_3g(runs["declared"][1]), spent_on_3g(runs["lazy"][1])
    assert declared == 0.0
    assert lazy > 10.0  # at least one 3G first contact (radio tail) with this seed
    assert runs["declared"][0]["total_j"] < runs["lazy"][0]["total_j"] - 10.0


def test_a_wrong_declaration_is_caught_by_the_nodes_own_reports(runs, monkeypatch):
    """A node registered as a laptop on Ethernet that is really a 3G phone: its reports name
    its real profile, so each is rejected (its energy kept as failed) — declarations are not
    trusted over what a node reports of its own hardware."""
    names = sim.simulated_names(Settings(nodes=8, fleet=str(runs["fleet"]), seed=2))
    liar = next(i for i, n in enumerate(names) if "fe:phone-midrange/3g" in n)
    names[liar] = f"sim-node-{liar} fe:laptop/ethernet"
    monkeypatch.setattr(sim, "simulated_names", lambda settings: names)
    _, out = _simulate(
        runs["tmp"],
        "liar",
        *("--fleet", str(runs["fleet"]), "--discovery", "declared", "--fraction", "1.0"),
    )
    nodes, rows, rejections = _ledger(out)
    reasons = [r for _, r in rejections]
    assert reasons and all("device 'phone-midrange' does not match" in r for r in reasons)
    (liar_id,) = {n for n, _ in rejections}
    assert {r["status"] for r in rows if r["node_id"] == liar_id} == {"failed"}
    assert [n for n in nodes if n[0] == liar_id][0][1] == UNKNOWN_PARTITION  # never learned
