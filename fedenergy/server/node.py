"""What the coordinator is told about a node (NodeInfo) and the profiles it stands for."""

from __future__ import annotations

from dataclasses import dataclass

from fedenergy.physics.catalog import Catalog, packaged_catalog
from fedenergy.physics.devices import DeviceProfile
from fedenergy.physics.network import LinkProfile

UNKNOWN_PARTITION = -1
PRIOR_PROFILE = ("laptop", "wifi")  # forecast of unknown nodes while no node is known


@dataclass(frozen=True)
class NodeInfo:
    """What the server knows of a node: its partition, device, link and fleet behaviour."""

    node_id: int
    partition_id: int
    device: str
    link: str
    num_examples: int = 0
    availability: float = 1.0
    failure_prob: float = 0.0
    battery_initial: float = 1.0
    recharge_per_round: float = 0.0
    country: str = "WORLD"


def profiles(
    device_id: str, link_id: str, catalog: Catalog | None = None
) -> tuple[DeviceProfile, LinkProfile]:
    """The device and link profiles of the ids in ``catalog`` (default: the packaged one; two
    lookups in read-only mappings built once, never a catalog per node)."""
    catalog = packaged_catalog() if catalog is None else catalog
    return catalog.device(device_id), catalog.link(link_id)
