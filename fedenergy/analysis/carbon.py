"""Carbon: joules -> kWh -> kgCO2e with each node's grid intensity (and PUE for datacenters).

Rules (docs/compare.md):
  * kgCO2e = kWh x grid intensity (gCO2e/kWh, data/grid_intensity.toml) / 1000;
  * a node's own energy (compute, radio) uses the intensity of the node's country (its fleet
    group's ``country``); an unknown country or ``"WORLD"`` uses the table's world fallback, and
    the result says so (``fallback``);
  * datacenter devices (devices.toml ``kind = "datacenter"``) pay their facility overhead:
    energy x ``pue``; edge devices never do (their ``pue`` is 1.0 anyway);
  * network infrastructure energy (routers, core, access network) is not located in one country:
    a transfer crosses the access network of the device, transit networks and the datacenter's
    network. It is converted with the WORLD intensity (``INFRA_COUNTRY``);
  * unmetered energy (NULL joules in the ledger) has no carbon figure: it is counted
    (``unmetered_components``), never converted as 0 J.

A run's devices are those of its catalog: the packaged one, plus the user's catalog files its
run record names (``config_json``'s ``catalog``, :func:`run_catalog`).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from functools import cache

from fedenergy.physics.catalog import Catalog, load_catalog, packaged_catalog, split_paths
from fedenergy.physics.constants import load_table
from fedenergy.physics.devices import DeviceProfile
from fedenergy.physics.infra import J_PER_KWH

log = logging.getLogger("fedenergy")

WORLD = "WORLD"
INFRA_COUNTRY = WORLD  # infrastructure energy spans countries: world-average intensity
INFRA_DOMAIN = "infrastructure"


@dataclass(frozen=True)
class Intensity:
    """Grid carbon intensity of one country (gCO2e/kWh) and where it came from."""

    country: str  # the code asked for
    g_per_kwh: float
    used: str  # the table entry used: the country code, or "WORLD"
    year: int
    fallback: bool  # True when the world fallback stood in for an unknown or "WORLD" country
    source: str


@cache
def _table() -> dict:
    return load_table("grid_intensity")


def grid_intensity(country: str | None) -> Intensity:
    """The intensity for ``country`` (ISO-3166 alpha-3); unknown or WORLD -> the world value."""
    t = _table()
    code = (country or WORLD).strip().upper()
    if code in t["countries"]:
        year = int(t.get("country_year", {}).get(code, t["year"]))
        return Intensity(code, float(t["countries"][code]), code, year, False, str(t["source"]))
    return Intensity(code, float(t["world"]), WORLD, 2018, True, str(t["world_source"]))


def kwh(joules: float) -> float:
    return joules / J_PER_KWH


def facility_factor(device: DeviceProfile | None) -> float:
    """PUE for datacenter devices, 1.0 for everything else."""
    if device is not None and device.kind == "datacenter":
        return device.pue
    return 1.0


def co2e_kg(joules: float, country: str | None, device: DeviceProfile | None = None) -> float:
    """kgCO2e of ``joules`` of IT energy used by ``device`` in ``country`` (PUE if datacenter)."""
    return kwh(joules) * facility_factor(device) * grid_intensity(country).g_per_kwh / 1000.0


def co2e_with_infra(co2e: float, infra_j: float, other_infra_j: float) -> float:
    """kgCO2e ``co2e`` with its infrastructure joules ``infra_j`` replaced by ``other_infra_j``
    (both priced at ``INFRA_COUNTRY``'s intensity, as every infrastructure joule is)."""
    return co2e - co2e_kg(infra_j, INFRA_COUNTRY) + co2e_kg(other_infra_j, INFRA_COUNTRY)


@dataclass
class Carbon:
    """Totals of one side of a comparison (or one run): energy with facility overhead, kWh,
    kgCO2e, and the countries whose intensity was a fallback."""

    it_j: float = 0.0  # energy as accounted (device/IT level)
    facility_j: float = 0.0  # it_j with PUE applied to datacenter energy
    co2e_kg: float = 0.0
    fallbacks: set | None = None
    by_country: dict | None = None  # country used -> kgCO2e

    def add(
        self,
        joules: float,
        country: str | None,
        device: DeviceProfile | None,
        note_fallback: bool = True,
    ) -> None:
        inten = grid_intensity(country)
        fac = facility_factor(device)
        kg = kwh(joules) * fac * inten.g_per_kwh / 1000.0
        self.it_j += joules
        self.facility_j += joules * fac
        self.co2e_kg += kg
        if self.by_country is None:
            self.by_country = defaultdict(float)
        self.by_country[inten.used] += kg
        if inten.fallback and note_fallback:
            if self.fallbacks is None:
                self.fallbacks = set()
            self.fallbacks.add(inten.country)

    @property
    def kwh(self) -> float:
        return kwh(self.facility_j)

    def as_dict(self) -> dict:
        return {
            "it_j": self.it_j,
            "facility_j": self.facility_j,
            "kwh": self.kwh,
            "co2e_kg": self.co2e_kg,
            "by_country_kg": dict(sorted((self.by_country or {}).items())),
            "world_fallback_for": sorted(self.fallbacks or ()),
        }


def run_catalog(run: dict) -> Catalog:
    """The catalog of a ledger run (a row of ``Ledger.runs()``): the packaged one merged with
    the user catalog files its run record names; when those can no longer be read, the packaged
    one (with a warning: the run's own devices are then unknown)."""
    try:
        paths = split_paths(json.loads(run["config_json"]).get("catalog"))
    except (ValueError, TypeError, AttributeError):
        paths = ()
    if not paths:
        return packaged_catalog()
    try:
        return load_catalog(paths)
    except ValueError as err:
        log.warning(
            "run %s: its catalog cannot be read (%s); packaged profiles only",
            run.get("run_id"),
            err,
        )
        return packaged_catalog()


def node_countries(run: dict, catalog: Catalog | None = None) -> dict[int, str]:
    """Country of every partition id of a ledger run (re-derived from the run's fleet).

    ``run`` is a row of ``Ledger.runs()``. The ledger's ``fleet_json`` holds the groups'
    device, link and fraction; the countries are read from the fleet file (its ``source``, else
    the fleet named in ``config_json``) when that file still has the same groups. Otherwise every
    node is WORLD. The assignment is deterministic (``Fleet.assign(nodes, seed)``).
    """
    from fedenergy.sim.fleet import load_fleet

    catalog = run_catalog(run) if catalog is None else catalog
    cfg = json.loads(run["config_json"])
    doc = json.loads(run["fleet_json"])
    recorded = [(g["device"], g["link"], float(g["fraction"])) for g in doc.get("groups", [])]
    fleet = None
    for ref in (doc.get("source"), cfg.get("fleet")):
        if not ref:
            continue
        try:
            cand = load_fleet(str(ref), catalog)
        except ValueError:
            continue
        groups = [(g.device.id, g.link.id, g.fraction) for g in cand.groups]
        if not recorded or groups == recorded:
            fleet = cand
            break
    if fleet is None:
        return {}
    return {n.partition_id: n.country for n in fleet.assign(int(cfg["nodes"]), int(cfg["seed"]))}


def ledger_carbon(
    ledger, run_id: str, up_to_round: int | None = None, catalog: Catalog | None = None
) -> dict:
    """Carbon of a ledger run (rounds 0..``up_to_round``), from its components.

    Compute and radio components use the node's country (PUE for datacenter devices);
    infrastructure components use ``INFRA_COUNTRY``. Returns ``Carbon.as_dict()`` plus the
    per-domain split ``compute_j``, ``radio_j``, ``infrastructure_j`` (IT level),
    ``per_round_facility_j`` (round -> J with PUE) and ``unmetered_components`` (components
    without a figure, left out).
    """
    run = next(r for r in ledger.runs() if r["run_id"] == run_id)
    catalog = run_catalog(run) if catalog is None else catalog
    countries: dict[int, str] | None = None  # from the fleet file, read only if needed
    stored: dict[str, str] = {}  # the country each node reported (or its fleet group's)
    nodes = {}
    for n, p, d, c in ledger.conn.execute(
        "SELECT node_id, partition_id, device, country FROM nodes WHERE run_id=?", (run_id,)
    ):
        nodes[str(n)] = (p, d)
        if c:
            stored[str(n)] = c
    devices: dict[str, DeviceProfile | None] = {}
    out = Carbon()
    split = {"compute_j": 0.0, "radio_j": 0.0, "infrastructure_j": 0.0}
    per_round: dict[int, float] = defaultdict(float)
    unmetered = 0
    for c in ledger.components(run_id):
        if up_to_round is not None and c["round"] > up_to_round:
            continue
        if c["joules"] is None:  # unmetered: not known, so not converted
            unmetered += 1
            continue
        pid, dev_id = nodes.get(str(c["node_id"]), (None, None))
        if dev_id not in devices:
            try:
                devices[dev_id] = catalog.device(dev_id) if dev_id else None
            except ValueError:
                devices[dev_id] = None
        if c["domain"] == INFRA_DOMAIN:
            out.add(c["joules"], INFRA_COUNTRY, None, note_fallback=False)
            split["infrastructure_j"] += c["joules"]
            per_round[c["round"]] += c["joules"]
        else:
            country = stored.get(str(c["node_id"]))
            if not country and pid is not None:
                countries = node_countries(run, catalog) if countries is None else countries
                country = countries.get(pid)
            out.add(c["joules"], country or WORLD, devices[dev_id])
            split["radio_j" if c["domain"] == "radio" else "compute_j"] += c["joules"]
            per_round[c["round"]] += c["joules"] * facility_factor(devices[dev_id])
    return {
        **out.as_dict(),
        **split,
        "per_round_facility_j": dict(per_round),
        "unmetered_components": unmetered,
    }
