"""Run settings shared by the CLI, the ServerApp and the ClientApp, validated before any run.

Settings are raw values (names, numbers). :meth:`Settings.check` validates the values alone;
:meth:`Settings.resolve` turns the names into objects (task, fleet, codecs) once, with errors
naming the setting. A run resolves them once, at its edge, into a plan (:mod:`fedenergy.plan`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

from fedenergy.codecs import CodecSpec, parse_codec
from fedenergy.physics.catalog import Catalog, load_catalog, split_paths
from fedenergy.physics.compute import BOUNDARIES, STARTUP_MODES
from fedenergy.physics.infra import MODELS
from fedenergy.server.local_work import (
    DEFAULT_CODEC_MENU,
    DEFAULT_EPOCH_MENU,
    DEFAULT_TAU_STEPS,
    LOCAL_WORK,
    PRICED,
    check_epoch_menu,
    parse_codec_menu,
)
from fedenergy.sim.fleet import Fleet, check_fleets, load_fleet
from fedenergy.sim.tasks import Task, check_tasks, get_task
from fedenergy.sim.tasks.partition import PARTITIONERS


class Resolved(NamedTuple):
    """The objects a run's names stand for: task, fleet, uplink and downlink codec, and the
    catalog of devices, links, fleets and tasks they were looked up in."""

    task: Task
    fleet: Fleet
    uplink: CodecSpec
    downlink: CodecSpec
    catalog: Catalog


@dataclass(frozen=True)
class Settings:
    """Everything that defines a simulated federation run."""

    task: str = "digits"
    nodes: int = 20
    rounds: int = 5
    fraction: float = 0.5
    fraction_evaluate: float = 0.2
    fleet: str = "mixed"
    seed: int = 0
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 0.5
    local_epochs: int = 5
    batch_size: int = 32
    lr: float = 0.3
    infra_kwh_per_gb: float = 0.059
    # the compute model (fedenergy.physics.compute, docs/energy-model.md): "device" accounts
    # whole-device energy (what a wall meter or battery sees: idle power under the busy time and
    # the network time too), "marginal" only what a call adds above idle
    boundary: str = "device"
    # Flower's deployment starts a fresh ClientApp process per message: "per-call" charges that
    # start-up as its own phase on simulated devices as measured nodes do, "off" leaves it out
    startup: str = "per-call"
    infra_model: str = "per-byte"  # physics.infra: per-byte (kWh/GB) | power (baseline + marginal)
    codec: str = "none"
    downlink: str = "none"  # global-model codec for the fixed policy: none, fp16, int8
    # energy-aware strategy (see fedenergy/strategy/)
    selector: str = "random"  # random | greedy | utility
    compression: str = "fixed"  # fixed (uses codec) | per-link | accuracy-aware
    aggregator: str = "fedavg"  # fedavg | fedprox | fedadam
    proximal_mu: float = 0.01
    exploration: float = 0.2
    max_staleness: int = 20
    energy_weight: float = 1.0  # utility selector: score = utility / forecast_joules**weight
    # how much local work each node does (server/local_work.py, docs/strategies.md "Priced local
    # work"): "fixed" (local_epochs for all, the codec of --compression) or "priced" (per node,
    # the epochs of epoch_menu and uplink codec of codec_menu of most forecast progress per
    # joule; --selector then chooses who trains by that figure)
    local_work: str = "fixed"
    epoch_menu: tuple[int, ...] = DEFAULT_EPOCH_MENU
    codec_menu: tuple[str, ...] = DEFAULT_CODEC_MENU
    progress_tau_steps: float = DEFAULT_TAU_STEPS  # priced: local progress saturates over these
    # how the coordinator learns each node's device and link: "query" asks every node up front
    # (round 0; reproducible, costs one message per node), "lazy" learns a node's profile from
    # its first reply's energy report (no up-front messages; unknown nodes get a prior forecast),
    # "declared" reads the profile each SuperNode declared when it was registered (its name's
    # fe:DEVICE/LINK token; no message at all) and learns undeclared nodes lazily
    discovery: str = "query"
    battery_floor: float = 0.0  # 0: off; else skip nodes that would fall below this charge
    round_budget_j: float = 0.0  # 0: off; else forecast joules per round stay within it
    target_accuracy: float = 0.0  # 0: off; else stop at this server accuracy (rounds = cap)
    round_timeout_s: float = 600.0
    # failures (docs/robustness.md): a round is short when fewer than min(min_nodes, selected)
    # train replies were usable, or when no node is online; after max_short_rounds short rounds
    # in a row the run stops as failed, naming the cause
    min_nodes: int = 1
    max_short_rounds: int = 3
    # replies without an energy report (a stock Flower app, an older client): False accounts
    # them from the coordinator's side (network from bytes, compute unmetered) and aggregates
    # them; True refuses them, as replies with an invalid report (docs/robustness.md)
    strict_reports: bool = False
    # account a deployed SuperNode's keep-alive traffic (its polls and heartbeats between calls)
    # in the radio between a node's calls (physics/radio.py). Off by default: the Simulation
    # Engine's virtual nodes make no such traffic, and a simulated federation models the calls;
    # turn it on for a deployment-style figure (a cellular radio then never idles between calls)
    keepalive: bool = False
    # model checkpoints (OUT/checkpoints/, apart from the ledger): keep those of the last N
    # committed rounds (0: keep all); a resume starts from the last committed round's
    checkpoint_keep: int = 2
    out: str = "runs/latest"
    # the user's catalog paths (TOML files or directories: their own devices, links, fleets
    # and tasks, docs/catalogs.md), merged over the packaged catalog; relative paths are taken
    # from the current directory, and the plan records them absolute
    catalog: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("epoch_menu", "codec_menu"):  # a list (JSON, a run config) as a tuple
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        value = self.catalog
        if isinstance(value, str) or (
            isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value)
        ):
            object.__setattr__(self, "catalog", split_paths(value))

    def validate(self) -> Settings:
        """Raise ValueError naming the first bad setting, its names (task, fleet, codecs)
        included; return self when all are good. A run resolves its names once instead, with
        :meth:`check` and :meth:`resolve` (see :func:`fedenergy.plan.plan_run`)."""
        self.check()
        self.resolve()
        return self

    def resolve(self) -> Resolved:
        """Read the catalog (packaged + the user's files, every user fleet and task checked),
        look the task, the fleet (its file read and validated) and the codecs up in it; raise
        ValueError naming the setting (or the catalog file, entry and field) that does not
        resolve."""
        catalog = load_catalog(self.catalog)
        user_fleets = check_fleets(catalog)  # each read once
        check_tasks(catalog)
        task = get_task(self.task, catalog)
        fleet = user_fleets.get(self.fleet) or load_fleet(self.fleet, catalog)
        specs = []
        for name in ("codec", "downlink"):
            text = getattr(self, name)
            try:
                specs.append(parse_codec(text))
            except ValueError as err:
                raise ValueError(f"invalid {name} {text!r}: {err}") from None
        parse_codec_menu(self.codec_menu)
        return Resolved(task, fleet, *specs, catalog)

    def check(self) -> Settings:
        """Raise ValueError naming the first bad value (types, ranges, choices); names of a
        task, fleet or codec are checked by :meth:`resolve`. Return self when all are good."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(f.default, float) and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            ):
                raise ValueError(f"{f.name.replace('_', '-')} must be a finite number, got {v!r}")
            if isinstance(f.default, str) and not isinstance(v, str):
                raise ValueError(f"{f.name.replace('_', '-')} must be a string, got {v!r}")
            if isinstance(f.default, bool) and not isinstance(v, bool):
                raise ValueError(f"{f.name.replace('_', '-')} must be true or false, got {v!r}")
        if self.partitioner not in PARTITIONERS:
            raise ValueError(
                f"unknown partitioner {self.partitioner!r}; choose {', '.join(PARTITIONERS)}"
            )
        names = ("nodes", "rounds", "local_epochs", "batch_size", "min_nodes", "max_short_rounds")
        for name in names:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")
        if not 0 <= self.fraction_evaluate <= 1:
            raise ValueError(f"fraction-evaluate must be in [0, 1], got {self.fraction_evaluate!r}")
        for name in ("dirichlet_alpha", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)!r}"
                )
        if self.infra_kwh_per_gb < 0:
            raise ValueError(f"infra-kwh-per-gb must be >= 0, got {self.infra_kwh_per_gb!r}")
        choices = {
            "selector": ("random", "greedy", "utility"),
            "compression": ("fixed", "per-link", "accuracy-aware"),
            "aggregator": ("fedavg", "fedprox", "fedadam"),
            "discovery": ("query", "lazy", "declared"),
            "boundary": BOUNDARIES,
            "startup": STARTUP_MODES,
            "infra_model": MODELS,
            "local_work": LOCAL_WORK,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"unknown {name.replace('_', '-')} {getattr(self, name)!r}; "
                    f"choose one of {', '.join(allowed)}"
                )
        ranges = {
            "exploration": (0, 1),
            "battery_floor": (0, 1),
            "target_accuracy": (0, 1),
            "energy_weight": (0, 10),
        }
        for name, (lo, hi) in ranges.items():
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name.replace('_', '-')} must be in [{lo}, {hi}]")
        for name in ("proximal_mu", "round_budget_j"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0")
        check_epoch_menu(self.epoch_menu)
        menu = self.codec_menu
        if not isinstance(menu, tuple) or not menu or not all(isinstance(c, str) for c in menu):
            raise ValueError(f"codec-menu must be a non-empty list of codec labels, got {menu!r}")
        if not self.progress_tau_steps > 0:
            raise ValueError(f"progress-tau-steps must be > 0, got {self.progress_tau_steps!r}")
        if self.local_work == PRICED and self.round_budget_j > 0:
            raise ValueError(
                "local-work priced and round-budget-j cannot be combined: the budget counts "
                "joules at the run's epochs, the priced plan changes them per node"
            )
        if self.round_timeout_s <= 0:
            raise ValueError("round-timeout-s must be > 0")
        if isinstance(self.max_staleness, bool) or self.max_staleness < 1:
            raise ValueError("max-staleness must be a positive integer")
        if not isinstance(self.catalog, tuple) or not all(isinstance(p, str) for p in self.catalog):
            raise ValueError(f"catalog must be a list of paths, got {self.catalog!r}")
        keep = self.checkpoint_keep
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ValueError(
                f"checkpoint-keep must be a non-negative integer (0: keep all), got {keep!r}"
            )
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_run_config(cls, run_config: dict) -> Settings:
        """Build from a Flower run config (``[tool.flwr.app.config]`` keys, dashes for
        underscores); ``num-server-rounds`` and ``fraction-train`` are Flower's usual names."""
        aliases = {
            "num-server-rounds": "rounds",
            "fraction-train": "fraction",
            "num-supernodes": "nodes",
        }
        known = {f.name: f for f in fields(cls)}
        values = {}
        for key, val in run_config.items():
            name = aliases.get(key, key.replace("-", "_"))
            if name not in known:
                raise ValueError(f"unknown run-config key {key!r}")
            default = known[name].default
            if name in ("epoch_menu", "codec_menu"):  # a list, or "1,5,15,30"
                items = val.split(",") if isinstance(val, str) else val
                if not isinstance(items, list):
                    raise ValueError(f"run-config key {key!r} must be a list, got {val!r}")
                items = [i.strip() if isinstance(i, str) else i for i in items]
                if name == "epoch_menu":
                    items = [int(i) if isinstance(i, str) and i.isdigit() else i for i in items]
                values[name] = tuple(items)
                continue
            if name == "catalog":
                try:
                    values[name] = split_paths(val)
                except ValueError:
                    raise ValueError(
                        f"run-config key {key!r} must be a path or paths separated by "
                        f"{os.pathsep!r}, got {val!r}"
                    ) from None
                continue
            if isinstance(default, float) and isinstance(val, int) and not isinstance(val, bool):
                val = float(val)
            if type(val) is not type(default):
                raise ValueError(
                    f"run-config key {key!r} must be {type(default).__name__}, got {val!r}"
                )
            values[name] = val
        return cls(**values)
