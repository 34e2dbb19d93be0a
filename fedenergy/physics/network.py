"""Network energy from exact bytes: device radio (Huang et al., MobiSys 2012) + infrastructure.

Device radio, per transfer: P = alpha_up * tput_up + alpha_down * tput_down + beta (mW, with
tput in Mbit/s) over the transfer time bytes*8 / tput. After a transfer the radio stays in a
high-power tail state for ``tail_s`` seconds at ``tail_mw`` unless the next transfer starts
first. One call of a client is: download, local compute (``gap_s``), upload; so its tail energy
is ``tail_mw * min(gap_s, tail_s)`` after the download plus ``tail_mw * tail_s`` after the upload.

Infrastructure (routers, core, access network), a separate modeled component: bytes x an
energy intensity, by default 0.059 kWh/GB (Sustainable Web Design v4, as used by CO2.js).
Constants and their sources: data/links.toml and docs/constants.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from fedenergy.physics.constants import check_sources, load_table

NUMERIC = (
    "down_mbps",
    "up_mbps",
    "alpha_up_mw_per_mbps",
    "alpha_down_mw_per_mbps",
    "beta_mw",
    "tail_mw",
    "tail_s",
)
INFRA_KWH_PER_GB = 0.059  # Sustainable Web Design v4 operational network intensity (CO2.js)
INFRA_SOURCE = "swd-v4"  # Sustainable Web Design v4 (as used by CO2.js)
J_PER_KWH = 3.6e6
BYTES_PER_GB = 1e9


@dataclass(frozen=True)
class LinkProfile:
    """A link's throughput (Mbit/s) and radio power model (mW per Mbit/s, mW, s)."""

    id: str
    label: str
    kind: str  # "wireless" | "wired"
    down_mbps: float
    up_mbps: float
    alpha_up_mw_per_mbps: float
    alpha_down_mw_per_mbps: float
    beta_mw: float
    tail_mw: float
    tail_s: float
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def download_power_w(self) -> float:
        return (self.alpha_down_mw_per_mbps * self.down_mbps + self.beta_mw) / 1000.0

    def upload_power_w(self) -> float:
        return (self.alpha_up_mw_per_mbps * self.up_mbps + self.beta_mw) / 1000.0

    def download_time_s(self, nbytes: int) -> float:
        return nbytes * 8 / (self.down_mbps * 1e6)

    def upload_time_s(self, nbytes: int) -> float:
        return nbytes * 8 / (self.up_mbps * 1e6)

    def provenance(self) -> str:
        return f"links.toml:{self.id}"  # Huang et al. 2012 model; constants and sources there


@dataclass(frozen=True)
class TransferEnergy:
    """Radio energy of one call, split by direction (J) with transfer times (s)."""

    download_j: float
    upload_j: float
    download_s: float
    upload_s: float


def radio_energy(link: LinkProfile, bytes_down: int, bytes_up: int, gap_s: float) -> TransferEnergy:
    """Device-radio joules for one download, ``gap_s`` of compute, then one upload.

    Tail energy after the download (cut short by the upload when ``gap_s < tail_s``) is charged
    to the download; the full tail after the upload is charged to the upload.
    """
    t_down = link.download_time_s(bytes_down) if bytes_down > 0 else 0.0
    t_up = link.upload_time_s(bytes_up) if bytes_up > 0 else 0.0
    tail_w = link.tail_mw / 1000.0
    e_down = link.download_power_w() * t_down
    e_up = link.upload_power_w() * t_up
    if bytes_down > 0:
        e_down += tail_w * (min(max(gap_s, 0.0), link.tail_s) if bytes_up > 0 else link.tail_s)
    if bytes_up > 0:
        e_up += tail_w * link.tail_s
    return TransferEnergy(e_down, e_up, t_down, t_up)


def infrastructure_energy_j(nbytes: int, kwh_per_gb: float = INFRA_KWH_PER_GB) -> float:
    """Network-infrastructure joules attributed to ``nbytes`` at ``kwh_per_gb``."""
    return nbytes / BYTES_PER_GB * kwh_per_gb * J_PER_KWH


def _build(key: str, e: dict) -> LinkProfile:
    check_sources("link", key, e, NUMERIC)
    prof = LinkProfile(
        id=key,
        label=str(e.get("label", key)),
        kind=str(e.get("kind", "wireless")),
        sources=dict(e["sources"]),
        **{f: float(e[f]) for f in NUMERIC},
    )
    if prof.down_mbps <= 0 or prof.up_mbps <= 0:
        raise ValueError(f"link {key!r}: throughputs must be > 0")
    if min(prof.beta_mw, prof.tail_mw, prof.tail_s) < 0:
        raise ValueError(f"link {key!r}: powers and tail time must be >= 0")
    return prof


@cache
def link_catalog() -> dict[str, LinkProfile]:
    """All shipped link profiles by id (built and validated once per process; read-only)."""
    return {k: _build(k, v) for k, v in load_table("links")["links"].items()}


def get_link(name: str) -> LinkProfile:
    """Look a link profile up by id; a clear error lists the known ids."""
    cat = link_catalog()
    if name not in cat:
        raise ValueError(f"unknown link {name!r}; known links: {', '.join(sorted(cat))}")
    return cat[name]
