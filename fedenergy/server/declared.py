"""Node profiles declared when a SuperNode is registered (``--discovery declared``).

Flower lets the operator of an authenticated federation register each SuperNode with a name
(``flwr supernode register KEY.pub SUPERLINK --name NAME``); the SuperLink stores it, and the
ServerApp reads it back with ``Grid.get_nodes()`` (``NodeInfo.name``). A name that carries a
token ``fe:DEVICE/LINK`` (optionally ``fe:DEVICE/LINK/COUNTRY``) declares that node's profile,
so the coordinator knows what the node is before any message reaches it: no round-0 query, no
costly first contact. The rest of the name stays free text, e.g. ``"kitchen-pi fe:rpi4/wifi"``.

What is learned from the node's first reply is what only the node knows for this run: its
partition and data size. Its energy reports are then checked against the *declared* device and
link (a report naming another profile is rejected, docs/robustness.md). A node whose name
declares nothing (or something unusable, logged once) is learned lazily from its first reply.

In simulation, :func:`fedenergy.sim.engine.simulate` names the virtual SuperNodes from the fleet
spec as ``flwr supernode register --name`` would.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedenergy.physics.catalog import Catalog, packaged_catalog
from fedenergy.protocol import DECLARATION_PREFIX

if TYPE_CHECKING:
    from flwr.serverapp import Grid

log = logging.getLogger("fedenergy")
MAX_NAME_CHARS = 256  # a registration name longer than this is not read
_COUNTRY = re.compile(r"^(?:[A-Z]{3}|WORLD)$")


class DeclarationError(ValueError):
    """A name carries an ``fe:`` token that does not declare a usable profile."""


@dataclass(frozen=True)
class Declaration:
    """The profile a SuperNode's registration name declares."""

    device: str
    link: str
    country: str | None = None

    def token(self) -> str:
        """The ``fe:DEVICE/LINK[/COUNTRY]`` token that declares this profile."""
        tail = f"/{self.country}" if self.country else ""
        return f"{DECLARATION_PREFIX}{self.device}/{self.link}{tail}"


def parse_declaration(name: str | None, catalog: Catalog | None = None) -> Declaration | None:
    """The profile a registration name declares, or None if it declares none (no ``fe:``
    token). Raise DeclarationError when an ``fe:`` token is malformed, names a device or link
    not in ``catalog`` (default: the packaged one), or appears twice."""
    if not name:
        return None
    if len(name) > MAX_NAME_CHARS:
        raise DeclarationError(f"name longer than {MAX_NAME_CHARS} characters")
    tokens = [t for t in re.split(r"[\s,;]+", name) if t.lower().startswith(DECLARATION_PREFIX)]
    if not tokens:
        return None
    if len(tokens) > 1:
        raise DeclarationError(f"{len(tokens)} '{DECLARATION_PREFIX}' tokens; declare one profile")
    parts = tokens[0][len(DECLARATION_PREFIX) :].split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise DeclarationError(
            f"{tokens[0][:60]!r} is not '{DECLARATION_PREFIX}DEVICE/LINK' or "
            f"'{DECLARATION_PREFIX}DEVICE/LINK/COUNTRY'"
        )
    device, link = parts[0].lower(), parts[1].lower()
    catalog = packaged_catalog() if catalog is None else catalog
    devices, links = catalog.devices, catalog.links
    if device not in devices:
        raise DeclarationError(
            f"unknown device {device[:40]!r}; known: {', '.join(sorted(devices))}"
        )
    if link not in links:
        raise DeclarationError(f"unknown link {link[:40]!r}; known: {', '.join(sorted(links))}")
    country = parts[2].upper() if len(parts) == 3 else None
    if country is not None and not _COUNTRY.match(country):
        raise DeclarationError(f"country {parts[2][:20]!r} is not an ISO 3166 alpha-3 code")
    return Declaration(device, link, country)


def read_declarations(
    grid: Grid, node_ids: Iterable[int], catalog: Catalog | None = None
) -> dict[int, Declaration]:
    """Declared profiles of ``node_ids``, from their registration names (``grid.get_nodes()``),
    their devices and links looked up in ``catalog`` (default: the packaged one).

    Nodes without a declaration are left out; a malformed one is logged (once per node) and
    left out too, so that node is learned from its first reply instead. A Grid that cannot list
    node details gives no declarations."""
    wanted = set(node_ids)
    try:
        infos = list(grid.get_nodes())
    except Exception as err:  # an older Flower, or a Grid without node details
        log.warning("cannot read SuperNode registrations (%s): no declared profiles", err)
        return {}
    out: dict[int, Declaration] = {}
    for info in infos:
        nid = int(getattr(info, "node_id", 0))
        if nid not in wanted:
            continue
        name = getattr(info, "name", "") or ""
        try:
            decl = parse_declaration(name, catalog)
        except DeclarationError as err:
            log.warning(
                "node %s: registration name %r declares no usable profile (%s); learning it "
                "from its first reply",
                nid,
                name[:80],
                err,
            )
            continue
        if decl is not None:
            out[nid] = decl
    return out
