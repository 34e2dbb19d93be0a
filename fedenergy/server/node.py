"""What the coordinator is told about a node (NodeInfo) and the profiles it stands for."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fedenergy.physics.devices import DeviceProfile, get_device
from fedenergy.physics.network import LinkProfile, get_link

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


@lru_cache(maxsize=256)
def profiles(device_id: str, link_id: str) -> tuple[DeviceProfile, LinkProfile]:
    """get_device/get_link once per id pair (the catalogs are read-only data; building a catalog
    per node made a FleetState of 100,000 nodes take minutes)."""
    return get_device(device_id), get_link(link_id)
