"""Stock Flower apps against fedenergy's coordinator (docs/robustness.md, "Stock nodes").

The ClientApps below are written as Flower's PyTorch quickstart writes one: their own model and
data (the digits task's, loaded by the app itself), a plain ``@app.train()`` returning an
ArrayRecord and a MetricRecord, an ``@app.evaluate()``, no mod and no fedenergy record. They run
in real Flower simulations (Simulation Engine on Ray).

A run in which no round produced a usable update ends failed: ``simulate`` raises
``RunStopped`` with the reason after the ledger (``runs.status`` 'failed', ``runs.reason``) and
``summary.json`` (status failed, reason) are written; the CLI prints the reason and exits 1.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import fedenergy
from fedenergy.cli import main
from fedenergy.client.mod import energy_mod
from fedenergy.ledger import Ledger
from fedenergy.server.coordinator import RunStopped
from fedenergy.settings import Settings
from fedenergy.sim.engine import simulate
from fedenergy.sim.tasks import DataConfig, get_task

DIGITS = get_task("digits")
MODEL_BYTES = sum(v.numel() * v.element_size() for v in DIGITS.make_model().state_dict().values())
LINKS = tomllib.loads((Path(fedenergy.__file__).parent / "data" / "links.toml").read_text())
INFRA_KWH_PER_GB = 0.059
FLEET = """
name = "stock"
[[group]]
device = "rpi4"
link = "wifi"
fraction = 0.5
[[group]]
device = "phone"
link = "lte"
fraction = 0.5
"""


# -- a stock Flower app (no mod, no fedenergy records) ---------------------------------------
def _data(context: Context):
    pid, n = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    return DIGITS.client_data(pid, DataConfig(num_partitions=n, seed=0, partitioner="iid"))


def _train(msg: Message, context: Context) -> tuple[torch.nn.Module, float, int]:
    torch.set_num_threads(1)
    model = DIGITS.make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    train, _ = _data(context)
    opt = torch.optim.SGD(model.parameters(), lr=float(msg.content["config"]["lr"]))
    gen = torch.Generator().manual_seed(int(context.node_config["partition-id"]))
    model.train()
    total = 0.0
    for _ in range(2):
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(train), 32):
            idx = order[start : start + 32]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(train.x[idx]), train.y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
    return model, total / (2 * len(train)), len(train)


def _evaluate(msg: Message, context: Context) -> Message:
    model = DIGITS.make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    _, test = _data(context)
    model.eval()
    with torch.no_grad():
        out = model(test.x)
        loss = float(torch.nn.functional.cross_entropy(out, test.y))
        acc = float((out.argmax(1) == test.y).float().mean())
    metrics = MetricRecord({"eval_loss": loss, "eval_acc": acc, "num-examples": len(test)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


stock_app = ClientApp()


@stock_app.train()
def stock_train(msg: Message, context: Context) -> Message:
    model, loss, n = _train(msg, context)
    metrics = MetricRecord({"train-loss": loss, "num-examples": n})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content, reply_to=msg)


@stock_app.evaluate()
def stock_evaluate(msg: Message, context: Context) -> Message:
    return _evaluate(msg, context)


# the app: the same stock app given fedenergy's energy mod (its handlers still write no
# fedenergy record)
modded_app = ClientApp(mods=[energy_mod])
modded_app.train()(stock_train)
modded_app.evaluate()(stock_evaluate)

diverging_app = ClientApp()  # a stock app whose training diverges: every update is NaN


@diverging_app.train()
def diverging_train(msg: Message, context: Context) -> Message:
    model, loss, n = _train(msg, context)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.nan)
    metrics = MetricRecord({"train-loss": loss, "num-examples": n})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content, reply_to=msg)


@diverging_app.evaluate()
def diverging_evaluate(msg: Message, context: Context) -> Message:
    return _evaluate(msg, context)


# -- helpers ---------------------------------------------------------------------------------
def _settings(tmp_path: Path, name: str, **kw) -> Settings:
    fleet = tmp_path / "stock-fleet.toml"
    fleet.write_text(FLEET)
    args = dict(
        nodes=4,
        rounds=3,
        fraction=1.0,
        fraction_evaluate=0.5,
        fleet=str(fleet),
        partitioner="iid",
        discovery="declared",
        infra_kwh_per_gb=INFRA_KWH_PER_GB,
        round_timeout_s=120.0,
        out=str(tmp_path / name),
    )
    args.update(kw)
    return Settings(**args)


def _by_hand(calls: dict[tuple, dict[str, dict]], link_of) -> dict[tuple, tuple[float, float]]:
    """Download and upload joules of every stock train/evaluate call, (round, node, call) ->
    (download, upload), and each node's run-end tail under (None, node, "run-end"), worked out
    from links.toml's constants on the run's virtual clock: a round's train messages go out
    when the previous phase's last transfer ended, its evaluate messages when the train
    phase's did. A call's download is charged what leads up to it since the node's previous
    transfer (that tail, cut; a promotion where it ran out or where there was none) plus its
    Huang transfer power x time; the upload follows at once (the server does not know the
    compute time: gap 0, no tail between) with its transfer; the tail after a node's last
    transfer is its run-end row. Infrastructure per byte on both."""
    infra = INFRA_KWH_PER_GB * 3.6e6 / 1e9
    out, end, clock = {}, {}, 0.0
    order = {"train": 0, "evaluate": 1}
    phases = sorted(
        {(k[0], k[2]) for k in calls if k[2] in order}, key=lambda p: (p[0], order[p[1]])
    )
    for rnd, call in phases:
        ends = []
        for key in sorted(k for k in calls if (k[0], k[2]) == (rnd, call)):
            nid = key[1]
            k = LINKS["links"][link_of(calls[key])]
            down_b, up_b = calls[key]["download"]["bytes"], calls[key]["upload"]["bytes"]
            t_down = down_b * 8 / (k["down_mbps"] * 1e6)
            t_up = up_b * 8 / (k["up_mbps"] * 1e6)
            p_down = (k["alpha_down_mw_per_mbps"] * k["down_mbps"] + k["beta_mw"]) / 1000
            p_up = (k["alpha_up_mw_per_mbps"] * k["up_mbps"] + k["beta_mw"]) / 1000
            tail_w, promo_j = k["tail_mw"] / 1000, k["promo_mw"] / 1000 * k["promo_s"]
            idle = clock - end[nid] if nid in end else math.inf
            if idle == math.inf:
                lead_j, lead_s = promo_j, k["promo_s"]
            elif idle >= k["tail_s"]:
                lead_j, lead_s = tail_w * k["tail_s"] + promo_j, k["promo_s"]
            else:
                lead_j, lead_s = tail_w * idle, 0.0
            out[key] = (lead_j + p_down * t_down + down_b * infra, p_up * t_up + up_b * infra)
            end[nid] = clock + lead_s + t_down + t_up
            ends.append(end[nid])
        clock = max([clock, *ends])
    for key in calls:
        if key[2] in order:
            k = LINKS["links"][link_of(calls[key])]
            out[(None, key[1], "run-end")] = (0.0, k["tail_mw"] / 1000 * k["tail_s"])
    return out


def _calls(path: Path) -> dict[tuple, dict[str, dict]]:
    """(round, node, call) -> phase -> energy row (as stored), with the node's ledger link."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = conn.execute(
        "SELECT e.*, n.link FROM energy e LEFT JOIN nodes n "
        "ON e.run_id = n.run_id AND e.node_id = n.node_id"
    ).fetchall()
    conn.close()
    calls: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        calls[(r["round"], r["node_id"], r["call"])][r["phase"]] = dict(r)
    return calls


def _components(path: Path) -> list[dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    out = [dict(r) for r in conn.execute("SELECT * FROM components")]
    conn.close()
    return out


# -- the tests -------------------------------------------------------------------------------
def test_a_stock_flower_app_trains_and_is_accounted_from_the_coordinator_side(tmp_path, caplog):
    settings = _settings(tmp_path, "declared")
    with caplog.at_level(logging.WARNING, logger="fedenergy"):
        summary = simulate(settings, client_app=stock_app)
    assert summary["status"] == "completed" and summary["reason"] is None
    accuracy = {r["round"]: r["accuracy"] for r in summary["per_round"]}
    assert accuracy[3] > accuracy[0] + 0.3, accuracy  # it trained
    assert summary["rejections"] == 0
    assert all(r["succeeded"] == 4 for r in summary["per_round"] if r["round"] > 0)
    # one warning per stock node, not per call
    warned = [r for r in caplog.records if "replies without an energy report" in r.getMessage()]
    assert len(warned) == 4
    assert all("(declared)" in r.getMessage() for r in warned)

    path = Path(settings.out) / "ledger.sqlite"
    calls = _calls(path)
    train = {k: v for k, v in calls.items() if k[2] == "train"}
    assert len(train) == 3 * 4
    want = _by_hand(calls, lambda phases: phases["download"]["link"])
    for key, phases in calls.items():  # evaluate calls too, each on the run's clock
        if key[2] == "evaluate":
            assert phases["download"]["joules"] == pytest.approx(want[key][0], rel=1e-9)
            assert phases["upload"]["joules"] == pytest.approx(want[key][1], rel=1e-9)
    ends = {k[1]: v["upload"] for k, v in calls.items() if k[2] == "run-end"}
    assert set(ends) == {k[1] for k in train}  # every node's last tail, charged once
    for nid, row in ends.items():
        assert row["joules"] == pytest.approx(want[(None, nid, "run-end")][1], rel=1e-9)
    links = set()
    for key, phases in train.items():
        assert set(phases) == {"train", "download", "upload"}
        # compute: unmetered, stored as NULL joules (not 0 J)
        assert phases["train"]["joules"] is None and phases["train"]["status"] == "ok"
        # network: the coordinator-side bytes through the node's declared link, by hand
        down, up = phases["download"], phases["upload"]
        assert down["bytes"] > MODEL_BYTES and up["bytes"] > MODEL_BYTES  # the model, both ways
        assert down["joules"] == pytest.approx(want[key][0], rel=1e-9)
        assert up["joules"] == pytest.approx(want[key][1], rel=1e-9)
        links.add(down["link"])
    assert links == {"wifi", "lte"}
    comps = _components(path)
    unmetered = [c for c in comps if c["provenance"] == "unmetered"]
    assert {(c["round"], c["node_id"]) for c in unmetered if c["call"] == "train"} == {
        (k[0], k[1]) for k in train
    }
    assert all(c["joules"] is None and c["domain"] == "compute" for c in unmetered)
    network = [c for c in comps if c["phase"] in ("download", "upload")]
    assert network and all(c["provenance"] == "modeled" for c in network)
    calls_net = [c for c in network if c["call"] != "run-end"]  # (run-end: the last tails)
    assert calls_net and all("declared" in c["source"] for c in calls_net)
    assert all("last transfer of the run" in c["source"] for c in network if c not in calls_net)

    # the summary: metered totals, unmetered counted in calls, never as joules
    assert summary["unmetered"]["train_calls"] == 12 and summary["unmetered"]["nodes"] == 4
    assert summary["by_provenance"]["unmetered"] == {"calls": summary["unmetered"]["calls"]}
    assert "train" not in summary["by_phase"] and summary["compute_j"] == 0
    with Ledger(path) as ledger:
        assert summary["total_j"] == pytest.approx(ledger.totals(summary["run_id"])["total_j"])
    metered = sum(p["joules"] for ph in calls.values() for p in ph.values() if p["joules"])
    assert summary["total_j"] == pytest.approx(metered) and summary["total_j"] > 0
    assert summary["co2e_kg"] > 0 and summary["carbon"]["unmetered_components"] == len(unmetered)


def test_stock_nodes_under_query_discovery_are_admitted_unknown_on_the_default_link(
    tmp_path, caplog
):
    # a stock app has no query handler: Flower answers the QUERY with an error reply
    settings = _settings(tmp_path, "query", discovery="query", rounds=2, fraction_evaluate=0.0)
    with caplog.at_level(logging.WARNING, logger="fedenergy"):
        summary = simulate(settings, client_app=stock_app)
    assert "4 of 4 nodes gave no profile to the query" in caplog.text
    assert "link unknown, default wifi" in caplog.text
    assert summary["status"] == "completed"
    accuracy = {r["round"]: r["accuracy"] for r in summary["per_round"]}
    assert accuracy[2] > accuracy[0] + 0.2, accuracy
    path = Path(settings.out) / "ledger.sqlite"
    calls = _calls(path)
    train = {k: v for k, v in calls.items() if k[2] == "train"}
    assert len(train) == 2 * 4
    want = _by_hand(calls, lambda phases: "wifi")
    for key, phases in train.items():
        assert phases["train"]["joules"] is None
        assert phases["download"]["link"] is None  # never learned: not in the nodes table
        assert phases["download"]["joules"] == pytest.approx(want[key][0], rel=1e-9)
        assert phases["upload"]["joules"] == pytest.approx(want[key][1], rel=1e-9)
    sources = {c["source"] for c in _components(path) if c["phase"] == "download"}
    assert sources and all("link unknown, default wifi" in s for s in sources)


def test_a_stock_app_given_the_energy_mod_trains_too(tmp_path):
    settings = _settings(tmp_path, "modded", rounds=2, fraction_evaluate=0.0)
    summary = simulate(settings, client_app=modded_app)
    assert summary["status"] == "completed" and summary["rejections"] == 0
    accuracy = {r["round"]: r["accuracy"] for r in summary["per_round"]}
    assert accuracy[2] > accuracy[0] + 0.2, accuracy
    assert all(r["succeeded"] == 4 for r in summary["per_round"] if r["round"] > 0)
    assert summary["network_j"] > 0


def test_strict_reports_refuse_a_stock_app_and_the_run_ends_failed(tmp_path):
    settings = _settings(tmp_path, "strict", rounds=2, strict_reports=True)
    with pytest.raises(RunStopped) as err:
        simulate(settings, client_app=stock_app)
    reason = str(err.value)
    assert reason.startswith("no round produced a usable update (8 replies rejected: ")
    assert "reply carries no energy report (strict-reports" in reason
    out = Path(settings.out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["reason"] == reason
    with Ledger(out / "ledger.sqlite") as ledger:
        (run,) = ledger.runs()
        assert run["status"] == "failed" and run["reason"] == reason
        assert run["finished_at"] is not None
        rejections = ledger.rejections(run["run_id"])
        rows = ledger.energy_rows(run["run_id"])
    assert {x["reason"] for x in rejections} == {
        "reply carries no energy report (strict-reports: a reply must carry one)"
    }
    assert len([x for x in rejections if x["call"] == "train"]) == 8
    # refused, yet spent: the server's estimate of each call, marked failed, nothing unmetered
    train_rows = [r for r in rows if r["call"] == "train" and r["round"] > 0]
    assert train_rows and all(r["status"] == "failed" for r in train_rows)
    assert all(r["joules"] is not None for r in rows)
    assert summary["unmetered"]["calls"] == 0 and summary["wasted_j"] > 0


def test_every_update_refused_for_another_reason_ends_the_run_failed(tmp_path, capsys):
    settings = _settings(tmp_path, "nan", rounds=2, fraction_evaluate=0.0)
    with pytest.raises(RunStopped, match=r"no round produced a usable update \(8 replies "):
        simulate(settings, client_app=diverging_app)
    out = Path(settings.out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "is malformed or not finite" in summary["reason"]
    # the report of a failed run says why
    capsys.readouterr()
    assert main(["report", str(out), "--no-files"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "Energy of run" in printed and "(failed)" in printed
    assert f"run failed: {summary['reason']}" in printed


def test_the_cli_exits_non_zero_with_the_reason_when_nothing_trained(tmp_path, capsys):
    fleet = tmp_path / "broken.toml"
    fleet.write_text('name = "broken"\n[[group]]\ndevice = "rpi4"\nlink = "wifi"\n')
    fleet.write_text(fleet.read_text() + "fraction = 1.0\nfailure_prob = 0.999\n")
    out = tmp_path / "cli"
    args = ["simulate", "--nodes", "4", "--rounds", "2", "--fraction", "1.0"]
    args += ["--fraction-evaluate", "0", "--fleet", str(fleet), "--max-short-rounds", "5"]
    code = main([*args, "--out", str(out)])
    printed = " ".join(capsys.readouterr().out.split())
    assert code == 1
    assert "run failed: no round produced a usable update (8 train calls failed)" in printed
    with Ledger(out / "ledger.sqlite") as ledger:
        (run,) = ledger.runs()
    assert run["status"] == "failed"
    assert run["reason"] == "no round produced a usable update (8 train calls failed)"
    assert main(["report", str(out), "--no-files"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "run failed: no round produced a usable update (8 train calls failed)" in printed
