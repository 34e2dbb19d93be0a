"""Fleet specs: which fraction of simulated nodes is which device on which link.

A fleet is a TOML file with one ``[[group]]`` per (device, link) mix::

    name = "mixed"
    description = "..."
    [[group]]
    device = "phone"     # an id of the run's catalog (data/devices.toml, or the user's)
    link = "lte"         # an id of the run's catalog (data/links.toml, or the user's)
    fraction = 0.3       # fractions of all groups sum to 1
    country = "USA"      # optional: ISO-3166 alpha-3 for grid carbon intensity (default "WORLD")
    availability = 0.8   # optional: probability the node is online in a round (default 1.0)
    failure_prob = 0.05  # optional: probability a started call fails before replying (default 0)
    battery_initial = 0.9      # optional: initial charge, fraction of battery_wh (default 1.0)
    recharge_per_round = 0.01  # optional: charge gained per round, fraction of capacity (default 0)

A fleet name is looked up among the user catalog's fleets first
(:mod:`fedenergy.physics.catalog`), then in :func:`fleet_dirs`; its devices and links are the
run's catalog's. Nodes (by partition id) are assigned to groups deterministically for a seed:
group sizes by largest-remainder rounding of fraction x N, then a seeded permutation of
partition ids.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedenergy.physics.catalog import OVERRIDE, Catalog, CatalogError, packaged_catalog
from fedenergy.physics.devices import DeviceProfile
from fedenergy.physics.network import LinkProfile

GROUP_KEYS = {"device", "link", "fraction"}
OPTIONAL_GROUP_KEYS = {
    "country": "WORLD",
    "availability": 1.0,
    "failure_prob": 0.0,
    "battery_initial": 1.0,
    "recharge_per_round": 0.0,
}
TOP_KEYS = {"name", "description", "group"}


def is_online(seed: int, server_round: int, partition_id: int, availability: float) -> bool:
    """Whether a simulated node with ``availability`` is online in ``server_round``: one seeded
    draw per (seed, round, partition), the same on the server and on the node itself."""
    if availability >= 1.0:
        return True
    return bool(
        np.random.default_rng([seed, 0xA7A1, server_round, partition_id]).random() < availability
    )


@dataclass(frozen=True)
class FleetGroup:
    device: DeviceProfile
    link: LinkProfile
    fraction: float
    country: str = "WORLD"
    availability: float = 1.0
    failure_prob: float = 0.0
    battery_initial: float = 1.0
    recharge_per_round: float = 0.0


@dataclass(frozen=True)
class NodeProfile:
    """What a simulated node is: its partition, device and link."""

    partition_id: int
    device: DeviceProfile
    link: LinkProfile
    country: str = "WORLD"
    availability: float = 1.0
    failure_prob: float = 0.0
    battery_initial: float = 1.0
    recharge_per_round: float = 0.0


@dataclass(frozen=True)
class Fleet:
    name: str
    description: str
    groups: tuple[FleetGroup, ...]
    source: str  # file the fleet came from

    def group_sizes(self, num_nodes: int) -> list[int]:
        """Largest-remainder rounding of fraction x num_nodes (sums to num_nodes)."""
        raw = np.array([g.fraction * num_nodes for g in self.groups])
        sizes = np.floor(raw).astype(int)
        for i in np.argsort(-(raw - sizes), kind="stable")[: num_nodes - sizes.sum()]:
            sizes[i] += 1
        return sizes.tolist()

    def assign(self, num_nodes: int, seed: int) -> list[NodeProfile]:
        """Profiles of partition ids 0..num_nodes-1, deterministic for ``seed``."""
        labels = np.repeat(np.arange(len(self.groups)), self.group_sizes(num_nodes))
        labels = np.random.default_rng([seed, 0xF1EE7]).permutation(labels)
        return [
            NodeProfile(
                pid,
                self.groups[g].device,
                self.groups[g].link,
                self.groups[g].country,
                self.groups[g].availability,
                self.groups[g].failure_prob,
                self.groups[g].battery_initial,
                self.groups[g].recharge_per_round,
            )
            for pid, g in enumerate(labels.tolist())
        ]


def fleet_dirs() -> list[Path]:
    """Where named fleets are looked up, first match wins: the working directory's
    simulations/fleets, the project's own simulations/fleets (source checkout or Flower app dir)
    and the installed package's copy, ``fedenergy/fleets`` (the wheel carries the project's
    simulations/fleets there: pyproject's ``force-include``)."""
    here = Path(__file__).resolve().parents[1]  # the fedenergy package
    return [
        Path.cwd() / "simulations" / "fleets",
        here.parent / "simulations" / "fleets",
        here / "fleets",
    ]


def available_fleets(catalog: Catalog | None = None) -> list[str]:
    """Names of the fleets :func:`load_fleet` finds: the packaged ones and ``catalog``'s."""
    names = {p.stem for d in fleet_dirs() if d.is_dir() for p in d.glob("*.toml")}
    return sorted(names | set(catalog.fleets if catalog is not None else ()))


def resolve_fleet_path(name_or_path: str) -> Path:
    """A path to an existing TOML file, or a fleet name looked up in :func:`fleet_dirs`."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or "/" in name_or_path:
        if not p.is_file():
            raise ValueError(f"fleet file {name_or_path!r} does not exist")
        return p
    for d in fleet_dirs():
        if (d / f"{name_or_path}.toml").is_file():
            return d / f"{name_or_path}.toml"
    raise ValueError(
        f"unknown fleet {name_or_path!r}; known fleets: {', '.join(available_fleets()) or 'none'}"
    )


def parse_fleet(data: dict, source: str, catalog: Catalog | None = None) -> Fleet:
    """Validate a parsed fleet table against ``catalog``'s devices and links (default: the
    packaged ones); every problem is named with its key."""
    catalog = packaged_catalog() if catalog is None else catalog
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ValueError(
            f"fleet {source}: unknown key(s) {sorted(unknown)}; allowed {sorted(TOP_KEYS)}"
        )
    raw_groups = data.get("group")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise ValueError(f"fleet {source}: needs at least one [[group]]")
    groups = []
    for i, g in enumerate(raw_groups):
        where = f"fleet {source}: group {i + 1}"
        if not isinstance(g, dict):
            raise ValueError(f"{where}: must be a table")
        missing, extra = GROUP_KEYS - set(g), set(g) - GROUP_KEYS - set(OPTIONAL_GROUP_KEYS)
        if missing:
            raise ValueError(f"{where}: missing key(s) {sorted(missing)}")
        if extra:
            raise ValueError(f"{where}: unknown key(s) {sorted(extra)}")
        frac = g["fraction"]
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
            raise ValueError(f"{where}: fraction must be a number in (0, 1], got {frac!r}")
        opts = {k: g.get(k, d) for k, d in OPTIONAL_GROUP_KEYS.items()}
        if not isinstance(opts["country"], str) or not opts["country"].strip():
            raise ValueError(
                f"{where}: country must be an ISO-3166 alpha-3 code, got {opts['country']!r}"
            )
        spans = {
            "availability": (0, 1, "(0, 1]"),
            "failure_prob": (0, 1, "[0, 1)"),
            "battery_initial": (0, 1, "[0, 1]"),
            "recharge_per_round": (0, 1, "[0, 1]"),
        }
        for key, (lo, hi, span) in spans.items():
            v = opts[key]
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            inside = ok and {"(0, 1]": lo < v <= hi, "[0, 1)": lo <= v < hi}.get(
                span, lo <= v <= hi
            )
            if not inside:
                raise ValueError(f"{where}: {key} must be a number in {span}, got {v!r}")
        profiles = []
        for key in ("device", "link"):
            try:
                profiles.append(getattr(catalog, key)(str(g[key])))
            except ValueError as e:
                raise ValueError(f"{where}: field {key!r}: {e}") from None
        try:
            groups.append(
                FleetGroup(
                    *profiles,
                    float(frac),
                    opts["country"].strip().upper(),
                    float(opts["availability"]),
                    float(opts["failure_prob"]),
                    float(opts["battery_initial"]),
                    float(opts["recharge_per_round"]),
                )
            )
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    total = sum(g.fraction for g in groups)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"fleet {source}: group fractions sum to {total:.6g}, not 1")
    return Fleet(
        str(data.get("name", Path(source).stem)),
        str(data.get("description", "")),
        tuple(groups),
        source,
    )


def load_fleet(name_or_path: str, catalog: Catalog | None = None) -> Fleet:
    """Load and validate a fleet by name (``catalog``'s user fleets first) or path, its groups'
    devices and links from ``catalog`` (default: the packaged one)."""
    if catalog is not None and name_or_path in catalog.fleets:
        entry = catalog.fleets[name_or_path]
        data = {k: v for k, v in entry.data.items() if k != OVERRIDE}
        return parse_fleet(data, entry.source, catalog)
    path = resolve_fleet_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"fleet {path}: malformed TOML: {e}") from None
    return parse_fleet(data, str(path), catalog)


def check_fleets(catalog: Catalog) -> dict[str, Fleet]:
    """Validate every user fleet of ``catalog`` against its devices and links and return them
    by name; a fleet named as a packaged one is refused unless its table says
    ``override = true``. CatalogError names the file, the fleet, the group and the field."""
    packaged, out = set(available_fleets()), {}
    for name, entry in catalog.fleets.items():
        flag = entry.data.get(OVERRIDE, False)
        if not isinstance(flag, bool):
            raise CatalogError(
                f"fleet {entry.source}: field {OVERRIDE!r} must be true or false, got {flag!r}"
            )
        if name in packaged and not flag:
            raise CatalogError(
                f"fleet {entry.source}: fleet {name!r} clashes with the packaged fleet of that "
                f"name; choose another name, or set '{OVERRIDE} = true' to replace it"
            )
        try:
            out[name] = load_fleet(name, catalog)
        except ValueError as err:
            raise CatalogError(str(err)) from None
    return out
