"""The regime of a saved run: what was trained, on which fleet, under which energy settings.

Read back from the ledger (the run's recorded settings and fleet, the bytes of its calls), so a
report names the regime its figures belong to: task and model (with its parameter count when
the task can still be built here), bytes per message, fleet, nodes, rounds, and the settings of
the energy model (infrastructure model, compute boundary, start-up mode).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from functools import lru_cache

from fedenergy.ledger import Ledger

# settings a regime header lists after the fixed lines (task, fleet, sizes, energy model)
MORE_KEYS = (
    "fraction",
    "local_epochs",
    "discovery",
    "selector",
    "compression",
    "codec",
    "aggregator",
    "seed",
)


@dataclass(frozen=True)
class Regime:
    """What one run was: its settings and the sizes read back from its ledger."""

    run_id: str
    config: dict  # the run's settings as recorded (Settings.as_dict())
    fleet_name: str
    fleet_groups: tuple[tuple[str, str, float], ...]  # (device, link, fraction)
    model: str | None  # the model's class name, None when the task cannot be built here
    parameters: int | None
    download_bytes: float | None  # mean bytes of a train call's download (the global model)
    upload_bytes: float | None  # mean bytes of a train call's upload (the update)
    nodes_seen: int  # nodes with at least one energy row

    def rows(self) -> list[tuple[str, str]]:
        """(name, value) lines of a header block, most telling first."""
        c = self.config
        fleet = ", ".join(f"{d}/{link} {f:g}" for d, link, f in self.fleet_groups)
        out = [
            ("task / model", f"{c.get('task')} / {self.model or 'unknown model'}"),
            ("parameters", "-" if self.parameters is None else f"{self.parameters:,}"),
            (
                "message bytes (train call)",
                f"download {_bytes(self.download_bytes)}, upload {_bytes(self.upload_bytes)}",
            ),
            ("fleet", f"{self.fleet_name} ({fleet})" if fleet else self.fleet_name),
            ("nodes", f"{c.get('nodes')} ({self.nodes_seen} with energy rows)"),
            ("rounds", str(c.get("rounds"))),
            ("infrastructure model", _infra(c)),
            ("energy boundary", str(c.get("boundary"))),
            ("start-up mode", str(c.get("startup"))),
        ]
        out += [(k.replace("_", " "), str(c[k])) for k in MORE_KEYS if k in c]
        return out


def _bytes(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.3g} MB"
    if v >= 1e3:
        return f"{v / 1e3:.3g} kB"
    return f"{v:.0f} B"


def _infra(c: dict) -> str:
    model = str(c.get("infra_model"))
    if model == "per-byte":
        return f"per-byte ({c.get('infra_kwh_per_gb')} kWh/GB)"
    return model


@lru_cache(maxsize=16)
def _model_size(task_name: str, catalog: tuple[str, ...]) -> tuple[str | None, int | None]:
    """The model's class name and parameter count, built from the run's task; (None, None)
    when the task does not build here (a user task whose module is not importable)."""
    try:
        from fedenergy.physics.catalog import load_catalog
        from fedenergy.sim.tasks import get_task

        task = get_task(task_name, load_catalog(catalog))
        model = task.make_model()
        return type(model).__name__, int(sum(p.numel() for p in model.parameters()))
    except Exception:  # any failure to rebuild: the header says "unknown", the run still reports
        return None, None


def read_regime(ledger: Ledger, run_id: str) -> Regime:
    """The regime of ``run_id`` in ``ledger``."""
    run = next(r for r in ledger.runs() if r["run_id"] == run_id)
    config = json.loads(run["config_json"])
    fleet = json.loads(run["fleet_json"] or "{}")
    down, up, nodes = [], [], set()
    for r in ledger.energy_rows(run_id):
        nodes.add(r["node_id"])
        if r["call"] == "train" and r["bytes"]:
            if r["phase"] == "download":
                down.append(r["bytes"])
            elif r["phase"] == "upload":
                up.append(r["bytes"])
    model, params = _model_size(str(config.get("task")), tuple(config.get("catalog") or ()))
    return Regime(
        run_id=run_id,
        config=config,
        fleet_name=str(fleet.get("name", config.get("fleet"))),
        fleet_groups=tuple(
            (g["device"], g["link"], float(g["fraction"])) for g in fleet.get("groups", ())
        ),
        model=model,
        parameters=params,
        download_bytes=statistics.fmean(down) if down else None,
        upload_bytes=statistics.fmean(up) if up else None,
        nodes_seen=len(nodes),
    )


def differing_settings(regimes: list[Regime]) -> list[str]:
    """The setting names whose values differ between the runs (what tells them apart)."""
    if len(regimes) < 2:
        return []
    skip = {"out", "catalog"}
    keys = sorted({k for r in regimes for k in r.config} - skip)
    return [k for k in keys if len({json.dumps(r.config.get(k)) for r in regimes}) > 1]
