"""Link profiles and the per-link rules of the device radio.

Device radio (Huang et al., MobiSys 2012): a transfer draws P = alpha * tput + beta (mW, with
tput in Mbit/s) over its time bytes*8 / tput, then the radio stays in a high-power tail state
for ``tail_s`` seconds at ``tail_mw`` unless the next transfer starts first, and a transfer
from idle waits ``promo_s`` at ``promo_mw`` for the promotion to connected (the state machine
per node: :mod:`fedenergy.physics.radio`). How one call
composes them (download, compute gap, upload, and the tails between) is
:mod:`fedenergy.physics.call`, the one call-energy model.

Infrastructure (routers, core, access network) is a separate modeled component,
:mod:`fedenergy.physics.infra`; a link names its access network (``access``: fixed broadband
or mobile), whose power-model constants its ``terms`` carry. Constants and their sources:
data/links.toml and docs/constants.md. Every rule here takes scalars or numpy arrays alike
(elementwise: the same floats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import cache, cached_property
from typing import NamedTuple

import numpy as np

from fedenergy.physics.constants import Num, check_entry, load_table
from fedenergy.physics.infra import ACCESS, power_terms

NUMERIC = (
    "down_mbps",
    "up_mbps",
    "alpha_up_mw_per_mbps",
    "alpha_down_mw_per_mbps",
    "beta_mw",
    "tail_mw",
    "tail_s",
    "promo_mw",
    "promo_s",
)


def transfer_time_s(nbytes: Num, bits_per_s: Num) -> Num:
    """Seconds to move ``nbytes`` at ``bits_per_s``."""
    return nbytes * 8 / bits_per_s


def radio_power_w(alpha_mw_per_mbps: Num, mbps: Num, beta_mw: Num) -> Num:
    """Radio power (W) while transferring at ``mbps``: (alpha * mbps + beta) mW."""
    return (alpha_mw_per_mbps * mbps + beta_mw) / 1000.0


class LinkTerms(NamedTuple):
    """The link constants the call model reads: scalars for one link (``LinkProfile.terms``),
    or arrays (``link_table``: one entry per link; ``take``: one entry per node)."""

    down_bps: Num
    up_bps: Num
    down_w: Num  # radio power while downloading
    up_w: Num
    tail_w: Num
    tail_s: Num
    promo_w: Num  # idle -> connected promotion (physics/radio.py)
    promo_s: Num
    infra_w: Num  # infrastructure power model (physics.infra): baseline W of the access network
    infra_j_per_byte: Num  # and its marginal joules per byte

    def take(self, index: np.ndarray) -> LinkTerms:
        """The entries at ``index`` of a table (e.g. each node's link index): per node."""
        return LinkTerms(*(col[index] for col in self))


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
    promo_mw: float
    promo_s: float
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    access: str = "mobile"  # the access network, for infrastructure: "fixed" | "mobile"
    # the file whose entry this is, as provenance names it (a user catalog's file name)
    origin: str = field(default="links.toml", compare=False, repr=False)

    @cached_property
    def terms(self) -> LinkTerms:
        """The constants the call model reads, in its units (bit/s, W, s); computed once."""
        return LinkTerms(
            self.down_mbps * 1e6,
            self.up_mbps * 1e6,
            self.download_power_w(),
            self.upload_power_w(),
            self.tail_mw / 1000.0,
            self.tail_s,
            self.promo_mw / 1000.0,
            self.promo_s,
            *power_terms(self.access),
        )

    def download_power_w(self) -> float:
        return radio_power_w(self.alpha_down_mw_per_mbps, self.down_mbps, self.beta_mw)

    def upload_power_w(self) -> float:
        return radio_power_w(self.alpha_up_mw_per_mbps, self.up_mbps, self.beta_mw)

    def download_time_s(self, nbytes: int) -> float:
        return transfer_time_s(nbytes, self.terms.down_bps)

    def upload_time_s(self, nbytes: int) -> float:
        return transfer_time_s(nbytes, self.terms.up_bps)

    def provenance(self) -> str:
        return f"{self.origin}:{self.id}"  # Huang et al. 2012 model; constants and sources there


def link_table(links: Sequence[LinkProfile]) -> LinkTerms:
    """LinkTerms of arrays, entry ``i`` for ``links[i]`` (the same floats as its ``terms``)."""
    rows = [link.terms for link in links]
    return LinkTerms(
        *(np.array([r[i] for r in rows], dtype=np.float64) for i in range(len(LinkTerms._fields)))
    )


# the keys of a catalog entry: the profile's own fields
ENTRY_KEYS = frozenset({f.name for f in fields(LinkProfile)} - {"id", "origin"})


def _build(
    key: str, e: dict, origin: str = "links.toml", extra: frozenset = frozenset()
) -> LinkProfile:
    """The profile of entry ``key`` of a links table (packaged or a user's: the same rules);
    ValueError names the entry and the field. ``extra``: keys the caller reads itself."""
    check_entry("link", key, e, NUMERIC, ENTRY_KEYS | extra)
    for name in ("label", "kind"):
        if name in e and not isinstance(e[name], str):
            raise ValueError(f"link {key!r}: field {name!r} must be a string, got {e[name]!r}")
    prof = LinkProfile(
        id=key,
        label=str(e.get("label", key)),
        kind=str(e.get("kind", "wireless")),
        sources=dict(e["sources"]),
        origin=origin,
        access=str(e.get("access", "fixed" if e.get("kind") == "wired" else "mobile")),
        **{f: float(e[f]) for f in NUMERIC},
    )
    if prof.access not in ACCESS:
        raise ValueError(f"link {key!r}: field 'access' must be one of {', '.join(ACCESS)}")
    for f in NUMERIC:
        positive = f in ("down_mbps", "up_mbps")
        v = getattr(prof, f)
        if (v <= 0) if positive else (v < 0):
            rule = "> 0" if positive else ">= 0"
            raise ValueError(f"link {key!r}: field {f!r} must be {rule}, got {e[f]!r}")
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
