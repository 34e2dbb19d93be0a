"""Which nodes are online in a round: each with its fleet availability, one seeded draw per
(seed, round, partition), the same draw the simulated node makes (fedenergy.sim.fleet)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedenergy.server.node import NodeInfo
from fedenergy.sim.fleet import is_online


def online_mask(seed: int, server_round: int, infos: Sequence[NodeInfo]) -> np.ndarray:
    """Whether each node of ``infos`` is online in ``server_round`` (a node whose profile is
    not known yet has availability 1: it is not known to be away)."""
    return np.fromiter(
        (is_online(seed, server_round, i.partition_id, i.availability) for i in infos),
        dtype=bool,
        count=len(infos),
    )
