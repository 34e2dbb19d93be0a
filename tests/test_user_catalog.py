"""User catalogs: a user's own device, link, fleet and task from files, in a real simulation
and refused with the file, entry and field named when malformed (docs/catalogs.md)."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from fedenergy.client.mod import build_report
from fedenergy.physics.catalog import CatalogError, load_catalog, packaged_catalog
from fedenergy.physics.flops import FlopCache
from fedenergy.report import Expected, ReportError, validate_report
from fedenergy.server.declared import DeclarationError, parse_declaration
from fedenergy.settings import Settings
from fedenergy.sim.fleet import load_fleet
from fedenergy.sim.tasks import DataConfig, get_task

# The user's constants (the hand computations below use these numbers, not the profiles)
FLOPS_PER_S, ACTIVE_W, IDLE_W, STARTUP_S = 2.5e9, 3.2, 1.1, 2.0  # one core, no step term
DOWN_MBPS, UP_MBPS = 8.0, 4.0
ALPHA_UP, ALPHA_DOWN, BETA_MW = 300.0, 100.0, 500.0
TAIL_MW, TAIL_S = 400.0, 0.0  # no tail (and no promotion): each transfer costs its own time
KWH_PER_GB = 0.059

DEVICES = f"""
schema = 1
[devices.lab-board]
label = "Our lab's board"
kind = "edge"
class = "sbc"
train_flops_per_s = {FLOPS_PER_S}
active_power_w = {ACTIVE_W}
idle_power_w = {IDLE_W}
cores = 1
step_overhead_s = 0.0
startup_s = {STARTUP_S}
cpu_cores = 1
pue = 1.0
battery_wh = 0.0
[devices.lab-board.sources]
train_flops_per_s = "ASSUMPTION. Measured on our bench (test data)."
active_power_w = "ASSUMPTION. Wall meter on our bench (test data)."
idle_power_w = "ASSUMPTION. Wall meter, idle (test data)."
cores = "ASSUMPTION (test data): one core."
step_overhead_s = "ASSUMPTION (test data): no per-step term."
startup_s = "ASSUMPTION (test data)."
cpu_cores = "ASSUMPTION (test data): one core."
pue = "Edge board (1.0)."
battery_wh = "Mains powered."
"""

LINKS = f"""
[links.lab-radio]
label = "Our lab's radio"
kind = "wireless"
down_mbps = {DOWN_MBPS}
up_mbps = {UP_MBPS}
alpha_up_mw_per_mbps = {ALPHA_UP}
alpha_down_mw_per_mbps = {ALPHA_DOWN}
beta_mw = {BETA_MW}
tail_mw = {TAIL_MW}
tail_s = {TAIL_S}
promo_mw = 0.0
promo_s = 0.0
[links.lab-radio.sources]
down_mbps = "ASSUMPTION (test data)."
up_mbps = "ASSUMPTION (test data)."
alpha_up_mw_per_mbps = "ASSUMPTION (test data)."
alpha_down_mw_per_mbps = "ASSUMPTION (test data)."
beta_mw = "ASSUMPTION (test data)."
tail_mw = "ASSUMPTION (test data)."
tail_s = "ASSUMPTION (test data)."
promo_mw = "ASSUMPTION (test data): no promotion."
promo_s = "ASSUMPTION (test data): no promotion."
"""

FLEET = """
name = "lab"
description = "three lab boards on the lab radio, one packaged phone on Wi-Fi"
[[group]]
device = "lab-board"
link = "lab-radio"
fraction = 0.75
[[group]]
device = "phone"
link = "wifi"
fraction = 0.25
"""

TASK_MODULE = """
# a user task: the synthetic task's four functions, under the user's own name
from fedenergy.sim.tasks import synthetic as TASK  # noqa: F401
"""


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    d = tmp_path / "my-catalog"
    (d / "fleets").mkdir(parents=True)
    (d / "devices.toml").write_text(DEVICES)
    (d / "links.toml").write_text(LINKS)
    (d / "fleets" / "lab.toml").write_text(FLEET)
    (d / "tasks.toml").write_text('[tasks]\nlab-task = "labtask_mod:TASK"\n')
    (d / "labtask_mod.py").write_text(TASK_MODULE)
    return d


def test_a_catalog_directory_merges_over_the_packaged_one(catalog_dir):
    cat = load_catalog([catalog_dir])
    board, radio = cat.device("lab-board"), cat.link("lab-radio")
    assert board.train_flops_per_s == FLOPS_PER_S and board.active_power_w == ACTIVE_W
    assert radio.tail_s == TAIL_S and radio.beta_mw == BETA_MW
    assert board.provenance() == "devices.toml:lab-board" and board.origin == "devices.toml"
    assert cat.device("phone") is packaged_catalog().device("phone")  # packaged ones stay
    assert cat.paths == (str(catalog_dir.resolve()),)
    assert set(cat.fleets) == {"lab"} and set(cat.tasks) == {"lab-task"}
    fleet = load_fleet("lab", cat)
    assert [(g.device.id, g.link.id) for g in fleet.groups] == [
        ("lab-board", "lab-radio"),
        ("phone", "wifi"),
    ]
    with pytest.raises(ValueError, match="unknown fleet 'lab'"):
        load_fleet("lab")  # without the catalog there is no such fleet
    with pytest.raises(ValueError, match="group 1: field 'device': unknown device 'lab-board'"):
        load_fleet(str(catalog_dir / "fleets" / "lab.toml"))  # nor such a device
    with pytest.raises(ValueError, match="unknown device 'lab-board'; known devices: .*rpi4"):
        packaged_catalog().device("lab-board")
    # a single catalog file holding every table works the same
    one = catalog_dir.parent / "one.toml"
    one.write_text(DEVICES + LINKS)
    assert load_catalog([one]).link("lab-radio").up_mbps == UP_MBPS


def test_a_user_task_by_catalog_name_or_import_path(catalog_dir):
    cat = load_catalog([catalog_dir])
    task = get_task("lab-task", cat)
    assert task.name == "lab-task"
    cfg = DataConfig(4, 0, "iid", 0.5)
    train, _ = task.client_data(0, cfg)
    reference, _ = get_task("synthetic").client_data(0, cfg)
    assert (train.x == reference.x).all()  # the user's module is the synthetic task
    direct = get_task("fedenergy.sim:tasks.synthetic")  # an import path, no catalog needed
    assert direct.name == "fedenergy.sim:tasks.synthetic"
    with pytest.raises(ValueError, match="has no .*client_data"):
        get_task("fedenergy.sim.tasks.synthetic:make_model")  # a factory of the wrong thing
    with pytest.raises(ValueError, match="unknown task 'nope'.*lab-task"):
        get_task("nope", cat)
    with pytest.raises(ValueError, match="does not import"):
        get_task("no_such_module_xyz:TASK")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


MALFORMED = [
    (  # a number without its source
        "devices.toml",
        DEVICES.replace('battery_wh = "Mains powered."\n', ""),
        ["devices.toml", "device 'lab-board'", "field 'battery_wh' has no source"],
    ),
    (  # an unknown field (a typo)
        "devices.toml",
        DEVICES.replace("idle_power_w = 1.1", "idle_power_w = 1.1\nidle_powr_w = 1.0"),
        ["devices.toml", "device 'lab-board'", "unknown field 'idle_powr_w'"],
    ),
    (  # a number written as a string
        "links.toml",
        LINKS.replace(f"down_mbps = {DOWN_MBPS}", 'down_mbps = "fast"'),
        ["links.toml", "link 'lab-radio'", "field 'down_mbps' must be a finite number", "'fast'"],
    ),
    (  # a number out of range
        "devices.toml",
        DEVICES.replace(f"active_power_w = {ACTIVE_W}", "active_power_w = -3.0"),
        ["devices.toml", "device 'lab-board'", "field 'active_power_w' must be > 0", "-3.0"],
    ),
    (  # a boolean is not a number
        "links.toml",
        LINKS.replace(f"tail_s = {TAIL_S}", "tail_s = true"),
        ["links.toml", "link 'lab-radio'", "field 'tail_s' must be a finite number"],
    ),
    (  # a source for a field that does not exist
        "links.toml",
        LINKS + 'tail_ms = "a typo in the sources table"\n',
        ["links.toml", "link 'lab-radio'", "'sources' names unknown field 'tail_ms'"],
    ),
    (  # a packaged id, not marked as an override
        "devices.toml",
        DEVICES.replace("lab-board", "rpi4"),
        ["devices.toml", "device 'rpi4' clashes with the packaged device", "override = true"],
    ),
    (  # an unknown table
        "devices.toml",
        DEVICES + "\n[gadgets.x]\nlabel = 'x'\n",
        ["devices.toml", "unknown table or key 'gadgets'"],
    ),
]


@pytest.mark.parametrize("name,text,needles", MALFORMED)
def test_malformed_user_catalogs_name_the_file_entry_and_field(tmp_path, name, text, needles):
    path = _write(tmp_path, name, text)
    with pytest.raises(CatalogError) as err:
        load_catalog([path])
    message = str(err.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message
    # the settings refuse it too, before any run
    with pytest.raises(ValueError, match="has no source|unknown|must be|clashes"):
        Settings(catalog=(str(path),)).validate()


def test_a_fleet_naming_an_unknown_device_is_refused_with_file_fleet_and_field(catalog_dir):
    bad = FLEET.replace('device = "lab-board"', 'device = "lab-bord"')
    (catalog_dir / "fleets" / "lab.toml").write_text(bad)
    with pytest.raises(ValueError) as err:
        Settings(catalog=(str(catalog_dir),), fleet="mixed").validate()
    message = str(err.value)
    assert str(catalog_dir.resolve() / "fleets" / "lab.toml") in message
    assert "group 1: field 'device': unknown device 'lab-bord'" in message
    assert "lab-board" in message  # the known ids, the user's among them


def test_a_duplicate_id_across_user_files_and_an_explicit_override(tmp_path, catalog_dir):
    again = _write(tmp_path, "more.toml", DEVICES)
    with pytest.raises(CatalogError, match="device 'lab-board' is already defined in .*devices"):
        load_catalog([catalog_dir, again])
    override = _write(
        tmp_path,
        "phone.toml",
        DEVICES.replace("[devices.lab-board]", "[devices.phone]\noverride = true").replace(
            "[devices.lab-board.sources]", "[devices.phone.sources]"
        ),
    )
    cat = load_catalog([override])
    assert cat.device("phone").active_power_w == ACTIVE_W
    assert cat.device("phone").provenance() == "phone.toml:phone"
    assert packaged_catalog().device("phone").active_power_w == 4.0  # the package is unchanged


def test_report_validation_accepts_a_user_device_only_in_the_runs_catalog(catalog_dir):
    cat = load_catalog([catalog_dir])
    report = build_report(
        "train", 1, 0, "lab-board", "lab-radio", 10**9, 20_000, 30_000, 0.059, catalog=cat
    )
    rec = report.to_record()
    back, _ = validate_report(rec, Expected(kind="train", catalog=cat))
    assert back.device == "lab-board" and back.link == "lab-radio"
    with pytest.raises(ReportError, match="unknown device 'lab-board'"):
        validate_report(rec, Expected(kind="train"))  # the packaged catalog alone
    # the compute figure is the user's constants: 1e9 / 2.5e9 s at 3.2 W, and the 1.1 W idle
    # base over the transfers (20 kB at 8 Mbit/s, 30 kB at 4 Mbit/s: 0.02 + 0.06 s)
    want = 1e9 / FLOPS_PER_S * ACTIVE_W + IDLE_W * (20_000 * 8 / 8e6 + 30_000 * 8 / 4e6)
    assert report.phase_j("train") == pytest.approx(want)


def test_a_declared_user_profile_parses_with_the_runs_catalog(catalog_dir):
    cat = load_catalog([catalog_dir])
    decl = parse_declaration("bench-3 fe:lab-board/lab-radio/DEU", cat)
    assert (decl.device, decl.link, decl.country) == ("lab-board", "lab-radio", "DEU")
    with pytest.raises(DeclarationError, match="unknown device 'lab-board'"):
        parse_declaration("bench-3 fe:lab-board/lab-radio")


def _radio_w(alpha_mw_per_mbps: float, mbps: float) -> float:
    return (alpha_mw_per_mbps * mbps + BETA_MW) / 1000.0


def _check_user_calls(conn: sqlite3.Connection, users: set[str]) -> dict:
    """Every call of the ``users`` nodes (no report rejected): compute joules at the user's
    active power, download and upload joules by the user's link constants; returns the calls,
    {(round, node, call): {phase: row}}."""
    assert not conn.execute("SELECT * FROM rejections").fetchall()
    calls: dict[tuple, dict] = {}
    for r in conn.execute("SELECT * FROM energy WHERE status = 'ok'"):
        if r["node_id"] in users and r["call"] != "run-end":
            calls.setdefault((r["round"], r["node_id"], r["call"]), {})[r["phase"]] = r
    assert calls
    for (_, _, call), phases in calls.items():
        compute, down, up = phases[call], phases["download"], phases["upload"]
        down_s = down["bytes"] * 8 / (DOWN_MBPS * 1e6)
        up_s = up["bytes"] * 8 / (UP_MBPS * 1e6)
        # compute: busy at the active power (one core: the client uses all of it), and the
        # idle base over both transfers (whole-device boundary); the start-up: one core busy
        want = compute["seconds"] * ACTIVE_W + IDLE_W * (down_s + up_s)
        assert compute["joules"] == pytest.approx(want, rel=1e-9)
        assert phases["startup"]["joules"] == pytest.approx(STARTUP_S * ACTIVE_W, rel=1e-12)
        # each transfer at its power (no tail, no promotion); infrastructure at 0.059 kWh/GB
        infra_down = down["bytes"] / 1e9 * KWH_PER_GB * 3.6e6
        infra_up = up["bytes"] / 1e9 * KWH_PER_GB * 3.6e6
        want_down = _radio_w(ALPHA_DOWN, DOWN_MBPS) * down_s + infra_down
        want_up = _radio_w(ALPHA_UP, UP_MBPS) * up_s + infra_up
        assert down["joules"] == pytest.approx(want_down, rel=1e-9)
        assert up["joules"] == pytest.approx(want_up, rel=1e-9)
    sources = {
        r["source"]
        for r in conn.execute("SELECT source FROM components")
        if "lab-board" in r["source"] or "lab-radio" in r["source"]
    }
    assert any(x.startswith("devices.toml:lab-board") for x in sources), sources
    assert any(x.startswith("links.toml:lab-radio") for x in sources), sources
    return calls


def test_a_simulation_on_a_user_fleet_prices_user_nodes_with_the_user_constants(
    catalog_dir, tmp_path, monkeypatch
):
    """``fedenergy simulate --catalog DIR --fleet lab --task lab-task``: 4 nodes, 2 rounds in
    Flower's Simulation Engine; the ledger rows of the user's nodes carry the user's device and
    link, and their joules equal the user's constants applied by hand."""
    from fedenergy.cli import main

    monkeypatch.chdir(tmp_path)  # the catalog is given relative to the working directory
    out = tmp_path / "out"
    code = main(
        [
            "simulate",
            "--catalog",
            catalog_dir.name,
            "--fleet",
            "lab",
            "--task",
            "lab-task",
            "--nodes",
            "4",
            "--rounds",
            "2",
            "--fraction",
            "1.0",
            "--fraction-evaluate",
            "0.5",
            "--local-epochs",
            "1",
            "--partitioner",
            "iid",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    conn = sqlite3.connect(out / "ledger.sqlite")
    conn.row_factory = sqlite3.Row
    (run,) = conn.execute("SELECT * FROM runs").fetchall()
    assert run["status"] == "completed"
    assert json.loads(run["config_json"])["catalog"] == [str(catalog_dir.resolve())]
    nodes = {r["node_id"]: r for r in conn.execute("SELECT * FROM nodes")}
    users = {n for n, r in nodes.items() if r["device"] == "lab-board"}
    assert len(users) == 3 and all(nodes[n]["link"] == "lab-radio" for n in users)
    assert {r["device"] for r in nodes.values()} == {"lab-board", "phone"}
    user_calls = _check_user_calls(conn, users)
    assert {"query", "train", "evaluate"} <= {k[2] for k in user_calls}
    # the user's compute: a train call's FLOPs (counted here on that node's own data) at the
    # user's throughput
    task = get_task("lab-task", load_catalog([catalog_dir]))
    cfg = DataConfig(4, 0, "iid", 0.5)
    checked_train = 0
    for (_, node, call), phases in user_calls.items():
        if call == "train":
            train, _ = task.client_data(nodes[node]["partition_id"], cfg)
            flops = FlopCache().training(task.make_model(), train.x, len(train), 32, 1)
            assert phases["train"]["seconds"] == pytest.approx(flops / FLOPS_PER_S, rel=1e-12)
            checked_train += 1
    assert checked_train == 2 * 3  # every user node trained in both rounds


def test_a_users_flower_app_runs_on_a_user_fleet(catalog_dir, tmp_path):
    """``fedenergy simulate --app examples/quickstart-energy --catalog DIR --fleet lab``: the
    app's own EnergyAware (no catalog argument: FEDENERGY_CATALOG) and its nodes' energy mod
    (the catalog recorded with each virtual node's profile) know the user's device and link."""
    from fedenergy.cli import main

    app = Path(__file__).resolve().parents[1] / "examples" / "quickstart-energy"
    out = tmp_path / "out"
    argv = ["simulate", "--app", str(app), "--catalog", str(catalog_dir), "--fleet", "lab"]
    argv += ["--nodes", "4", "--rounds", "1", "--out", str(out)]
    assert main([*argv, "--run-config", "examples-per-node=64"]) == 0
    conn = sqlite3.connect(out / "ledger.sqlite")
    conn.row_factory = sqlite3.Row
    (run,) = conn.execute("SELECT * FROM runs").fetchall()
    assert run["status"] == "completed"
    assert json.loads(run["config_json"])["catalog"] == [str(catalog_dir.resolve())]
    nodes = {r["node_id"]: r for r in conn.execute("SELECT * FROM nodes")}
    users = {n for n, r in nodes.items() if (r["device"], r["link"]) == ("lab-board", "lab-radio")}
    assert len(users) == 3  # declared in their registration names, from the user's fleet
    calls = _check_user_calls(conn, users)
    assert {k[2] for k in calls} == {"train", "evaluate"}


def test_the_api_and_the_run_config_take_a_catalog(catalog_dir, tmp_path, monkeypatch):
    from flwr.serverapp.strategy import FedAvg

    from fedenergy import EnergyAware
    from fedenergy.plan import plan_run
    from fedenergy.server.wrapper import CATALOG_ENV

    wrapped = EnergyAware(FedAvg(), ledger=tmp_path / "l.sqlite", catalog=str(catalog_dir))
    assert wrapped.catalog.link("lab-radio").tail_s == TAIL_S
    monkeypatch.setenv(CATALOG_ENV, str(catalog_dir))  # the default, as `simulate --app` sets
    assert "lab-board" in EnergyAware(FedAvg(), ledger=tmp_path / "l.sqlite").catalog.devices
    monkeypatch.delenv(CATALOG_ENV)
    assert EnergyAware(FedAvg(), ledger=tmp_path / "l.sqlite").catalog.is_packaged
    bad = _write(tmp_path, "bad.toml", DEVICES.replace("pue = 1.0", "pue = 0.5"))
    with pytest.raises(
        CatalogError, match="bad.toml: device 'lab-board': field 'pue' must be >= 1"
    ):
        EnergyAware(FedAvg(), ledger=tmp_path / "l.sqlite", catalog=[str(bad)])
    # the run config: one string, paths separated by os.pathsep; relative to the working
    # directory, recorded absolute by the plan and sent to the nodes
    monkeypatch.chdir(catalog_dir.parent)
    other = _write(tmp_path, "extra.toml", LINKS.replace("lab-radio", "lab-radio-2"))
    settings = Settings.from_run_config(
        {"catalog": f"{catalog_dir.name}:{other}", "fleet": "lab", "nodes": 4}
    )
    assert settings.catalog == (catalog_dir.name, str(other))
    plan = plan_run(settings)
    assert plan.settings.catalog == (str(catalog_dir.resolve()), str(other.resolve()))
    assert plan.message_config["fe-catalog"] == list(plan.settings.catalog)
    assert plan.catalog.link("lab-radio-2").up_mbps == UP_MBPS
    assert "fe-catalog" not in plan_run(Settings()).message_config  # nothing new on the wire
    with pytest.raises(ValueError, match="run-config key 'catalog'"):
        Settings.from_run_config({"catalog": 3})


def test_the_example_catalog_of_the_docs_resolves():
    """examples/catalog (docs/catalogs.md): its device, link and fleet pass every rule."""
    root = Path(__file__).resolve().parents[1]
    resolved = Settings(catalog=(str(root / "examples" / "catalog"),), fleet="bench").resolve()
    groups = [(g.device.id, g.link.id, g.fraction) for g in resolved.fleet.groups]
    assert groups == [("bench-board", "bench-wifi", 0.5), ("phone", "lte", 0.5)]
    assert resolved.catalog.device("bench-board").provenance() == "devices.toml:bench-board"


def test_a_node_finds_its_catalog_and_a_deployed_one_reads_only_its_own(catalog_dir, monkeypatch):
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedenergy.client.mod import node_catalog

    for name in ("_run_id", "_node_id", "_task_id"):  # a message is made inside a task
        monkeypatch.setattr(TaskIdentity, name, 1)

    def ctx(node_config: dict) -> Context:
        return Context(
            run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={}
        )

    def msg(config: dict) -> Message:
        record = RecordDict({"config": ConfigRecord(config)})
        return Message(record, message_type=MessageType.TRAIN, dst_node_id=7)

    sent = msg({"fe-catalog": [str(catalog_dir.resolve())]})
    simulated = node_catalog(sent, ctx({"partition-id": 0, "num-partitions": 4}))
    assert simulated.device("lab-board").active_power_w == ACTIVE_W  # the run's, as sent
    assert node_catalog(sent, ctx({"partition-id": 0, "num-partitions": 4})) is simulated  # once
    deployed = node_catalog(sent, ctx({"device": "rpi4", "link": "wifi"}))
    assert deployed.is_packaged  # a deployed node ignores paths a server names
    own = node_catalog(msg({}), ctx({"device": "lab-board", "catalog": str(catalog_dir)}))
    assert own.device("lab-board").train_flops_per_s == FLOPS_PER_S  # its node config's
    assert node_catalog(msg({}), ctx({})).is_packaged
    # an edited file is read again
    (catalog_dir / "devices.toml").write_text(DEVICES.replace(f"= {ACTIVE_W}", "= 19.5"))
    again = node_catalog(sent, ctx({"partition-id": 0, "num-partitions": 4}))
    assert again.device("lab-board").active_power_w == 19.5
