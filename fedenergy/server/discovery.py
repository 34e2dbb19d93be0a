"""How the coordinator learns who its nodes are: an up-front QUERY, the profiles declared in
SuperNode registration names, or (lazily) a node's first energy report."""

from __future__ import annotations

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedenergy.physics.catalog import Catalog
from fedenergy.protocol import CONFIG_RECORD, NUM_EXAMPLES, PARTITION_ID, PROFILE_RECORD
from fedenergy.server.declared import read_declarations
from fedenergy.server.node import UNKNOWN_PARTITION, NodeInfo
from fedenergy.server.strategy import EnergyAwareStrategy


def node_info(
    node_id: int,
    partition_id: int,
    device: str,
    link: str,
    num_examples: int,
    country: str | None,
    profiles: list,
) -> NodeInfo:
    """What the coordinator keeps of a node; in simulation its fleet behaviour (availability,
    failures, battery) comes from the fleet spec by partition id."""
    fp = profiles[partition_id] if 0 <= partition_id < len(profiles) else None
    return NodeInfo(
        node_id,
        partition_id,
        device,
        link,
        num_examples=num_examples,
        availability=fp.availability if fp else 1.0,
        failure_prob=fp.failure_prob if fp else 0.0,
        battery_initial=fp.battery_initial if fp else 1.0,
        recharge_per_round=fp.recharge_per_round if fp else 0.0,
        country=str(country or (fp.country if fp else "WORLD")).upper(),
    )


def query_nodes(
    grid: Grid,
    node_ids: list[int],
    strategy: EnergyAwareStrategy,
    config: dict,
    timeout: float,
    profiles: list,
) -> list[NodeInfo]:
    """Ask nodes who they are (partition, device, link, data size); in simulation their fleet
    behaviour (availability, failures, battery) comes from ``profiles``, the fleet spec's
    assignment by partition. The replies' energy reports go into the current round's rows
    (round 0 at the start). Replies are awaited up to ``timeout`` seconds."""
    msgs = [
        Message(
            RecordDict({CONFIG_RECORD: ConfigRecord(dict(config))}),
            message_type=MessageType.QUERY,
            dst_node_id=n,
        )
        for n in node_ids
    ]
    strategy.record_sent(msgs, "query")
    infos = []
    replies = grid.send_and_receive(msgs, timeout=timeout)
    for reply in strategy.take_reports(replies, "query", count=False):
        if PROFILE_RECORD not in reply.content:
            continue
        prof = reply.content[PROFILE_RECORD]
        infos.append(
            node_info(
                reply.metadata.src_node_id,
                int(prof.get(PARTITION_ID, -1)),
                str(prof["device"]),
                str(prof["link"]),
                int(prof.get(NUM_EXAMPLES, 0)),
                str(prof.get("country") or "") or None,
                profiles,
            )
        )
    return infos


def declared_nodes(
    grid: Grid, node_ids: list[int], profiles: list, catalog: Catalog | None = None
) -> list[NodeInfo]:
    """The nodes among ``node_ids`` that declared a profile when they were registered
    (:mod:`fedenergy.server.declared`), with that device, link and country; their partition and data
    are learned from their first reply."""
    return [
        node_info(nid, UNKNOWN_PARTITION, d.device, d.link, 0, d.country, profiles)
        for nid, d in sorted(read_declarations(grid, node_ids, catalog).items())
    ]
