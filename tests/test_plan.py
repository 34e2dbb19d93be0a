"""The run plan (fedenergy.plan): a run's settings resolved once, at its edge, into objects."""

from __future__ import annotations

import dataclasses

import pytest
from flwr.serverapp.strategy import FedProx

import fedenergy.sim.fleet as fleet_module
import fedenergy.sim.tasks as tasks_module
from fedenergy.plan import RunPlan, plan_run
from fedenergy.protocol import CFG_CODEC, CFG_FLEET, CFG_SEED, CFG_TASK
from fedenergy.server.declared import Declaration, parse_declaration
from fedenergy.server.policies import FixedPolicy, PerLinkPolicy
from fedenergy.server.selectors import (
    BatteryAwareSelector,
    RandomSelector,
    UtilityPerJouleSelector,
)
from fedenergy.settings import Settings
from fedenergy.sim.engine import simulate, simulated_names
from fedenergy.sim.fleet import load_fleet
from fedenergy.sim.tasks import DataConfig, get_task

FLEET = """
name = "two"
[[group]]
device = "rpi4"
link = "wifi"
fraction = 0.5
country = "DEU"
[[group]]
device = "phone"
link = "lte"
fraction = 0.5
"""


@pytest.fixture
def fleet_file(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(FLEET)
    return path


def test_plan_holds_the_resolved_objects(fleet_file):
    s = Settings(
        nodes=6,
        seed=4,
        fleet=str(fleet_file),
        codec="topk:0.05",
        downlink="int8",
        selector="utility",
        battery_floor=0.2,
        aggregator="fedprox",
        proximal_mu=0.1,
    )
    plan = plan_run(s)
    assert isinstance(plan, RunPlan) and plan.settings is s and plan.resume_run_id is None
    assert plan.task is get_task("digits")
    assert plan.fleet.name == "two" and plan.fleet.source == str(fleet_file)
    assert plan.profiles == tuple(load_fleet(str(fleet_file)).assign(6, 4))
    assert (plan.uplink.label(), plan.downlink.label()) == ("topk:0.05", "int8")
    assert plan.data == DataConfig(6, 4, "dirichlet", 0.5)
    cfg = plan.message_config
    assert cfg[CFG_TASK] == "digits" and cfg[CFG_SEED] == 4 and cfg[CFG_FLEET] == str(fleet_file)
    assert cfg[CFG_CODEC] == "topk:0.05"
    with pytest.raises(TypeError):
        cfg[CFG_SEED] = 5  # type: ignore[index]  (read-only: every message shares it)
    assert isinstance(plan.aggregator, FedProx) and plan.aggregator.proximal_mu == 0.1
    assert isinstance(plan.selector, BatteryAwareSelector) and plan.selector.floor == 0.2
    assert isinstance(plan.selector.inner, UtilityPerJouleSelector)
    assert plan.eval_selector == RandomSelector(4, 1)
    assert plan.policy == FixedPolicy(plan.uplink, plan.downlink)
    per_link = plan_run(dataclasses.replace(s, compression="per-link"))
    assert isinstance(per_link.policy, PerLinkPolicy)
    for name, p in zip(plan.node_names, plan.profiles, strict=True):
        assert name.startswith(f"sim-node-{p.partition_id} ")
        assert parse_declaration(name) == Declaration(p.device.id, p.link.id, p.country)
    assert simulated_names(plan) == list(plan.node_names)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.task = None  # type: ignore[misc]
    assert plan_run(s, resume_run_id="abc").resume_run_id == "abc"


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"fleet": "nowhere"}, "unknown fleet 'nowhere'"),
        ({"task": "mnist"}, "unknown task 'mnist'"),
        ({"codec": "topk:2"}, "invalid codec 'topk:2'"),
        ({"downlink": "zip"}, "invalid downlink 'zip'"),
        ({"selector": "oracle"}, "unknown selector 'oracle'"),
        ({"checkpoint_keep": -1}, "checkpoint-keep must be a non-negative integer"),
    ],
)
def test_planning_refuses_bad_settings_naming_them(changes, message):
    with pytest.raises(ValueError) as err:
        plan_run(Settings(**changes))
    assert message in str(err.value)


class _CountingTasks(dict):
    """The task registry, recording every lookup by name."""

    def __init__(self, tasks: dict, seen: list) -> None:
        super().__init__(tasks)
        self.seen = seen

    def __getitem__(self, name):
        self.seen.append(name)
        return super().__getitem__(name)


def test_a_simulated_run_reads_its_fleet_once_and_looks_its_task_up_once(
    fleet_file, tmp_path, monkeypatch
):
    """In the driver process (the coordinator's; the virtual nodes run in Ray's workers), a
    whole run parses the fleet file once and looks the task up once: at its edge, the plan."""
    parses, lookups = [], []
    parse = fleet_module.parse_fleet

    def counted_parse(data, source, catalog=None):
        parses.append(source)
        return parse(data, source, catalog)

    monkeypatch.setattr(fleet_module, "parse_fleet", counted_parse)
    monkeypatch.setattr(tasks_module, "TASKS", _CountingTasks(tasks_module.TASKS, lookups))
    settings = Settings(
        nodes=4,
        rounds=2,
        fraction=0.5,
        fraction_evaluate=0.5,
        seed=1,
        fleet=str(fleet_file),
        out=str(tmp_path / "out"),
    )
    summary = simulate(settings, num_cpus=2)
    assert summary["status"] == "completed" and summary["rounds"] == 2
    assert summary["carbon"]["by_country_kg"].get("DEU", 0) > 0  # the fleet's countries used
    assert parses == [str(fleet_file)]
    assert lookups == ["digits"]
