"""What the coordinator knows of its fleet between rounds, and the per-node energy forecast.

``FleetState`` is fed by the ledger rows of each committed round (energy per phase, bytes), by
train replies (loss, examples) and by the fleet spec (availability, battery) in simulation.
``forecast`` predicts a node's joules for the coming train call: from its device and link
profile before it has participated, from its own observed history after.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from fedenergy.devices import DeviceProfile, get_device
from fedenergy.ledger import EnergyRow
from fedenergy.network import LinkProfile, get_link, infrastructure_energy_j, radio_energy

WH_TO_J = 3600.0


@lru_cache(maxsize=256)
def _profiles(device_id: str, link_id: str) -> tuple[DeviceProfile, LinkProfile]:
    """get_device/get_link once per id pair (the catalogs are read-only data; building a catalog
    per node made a FleetState of 100,000 nodes take minutes)."""
    return get_device(device_id), get_link(link_id)


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


@dataclass(frozen=True)
class Forecast:
    """Predicted joules of one train call, by phase (network includes infrastructure)."""

    compute_j: float
    download_j: float
    upload_j: float
    device_j: float  # the part drawn from the device itself (compute + radio), for batteries

    @property
    def total_j(self) -> float:
        return self.compute_j + self.download_j + self.upload_j


@dataclass
class NodeState:
    """Mutable per-node history kept by the coordinator."""

    info: NodeInfo
    device: DeviceProfile
    link: LinkProfile
    last_loss: float | None = None
    last_round: int = 0  # last round this node trained in (0: never)
    participations: int = 0
    failures: int = 0
    observed_compute_j: float | None = None
    observed_compute_s: float | None = None
    observed_upload_bytes: dict[str, int] = field(default_factory=dict)  # by codec label
    capacity_j: float | None = None  # None: mains powered
    battery_j: float | None = None

    @property
    def battery_fraction(self) -> float:
        if self.capacity_j is None or self.battery_j is None:
            return 1.0
        return self.battery_j / self.capacity_j


class FleetState:
    """Per-node state, availability draws, battery bookkeeping and forecasts."""

    def __init__(self, nodes: Iterable[NodeInfo], seed: int, infra_kwh_per_gb: float) -> None:
        self.seed = seed
        self.infra_kwh_per_gb = infra_kwh_per_gb
        self.nodes: dict[int, NodeState] = {}
        self.flops_per_example = 0.0  # training FLOPs per local example (set by the strategy)
        self.default_upload_overhead = 1500  # bytes beyond the payload, until one is observed
        self.download_bytes = 0  # exact size of this round's train message (set per round)
        self._order: list[int] | None = None  # cache of ordered(), reset by add()
        self._always = True  # every node has availability >= 1 (set with the order)
        self._online: dict[tuple[int, int], list[int]] = {}  # (seed, round) -> online(round)
        for info in nodes:
            self.add(info)

    def add(self, info: NodeInfo) -> None:
        device, link = _profiles(info.device, info.link)
        st = NodeState(info, device, link)
        self._order, self._online = None, {}
        if device.battery_wh > 0:
            st.capacity_j = device.battery_wh * WH_TO_J
            st.battery_j = st.capacity_j * info.battery_initial
        self.nodes[info.node_id] = st

    def __contains__(self, node_id: int) -> bool:
        return node_id in self.nodes

    def __getitem__(self, node_id: int) -> NodeState:
        return self.nodes[node_id]

    def ordered(self) -> list[int]:
        """Node ids by partition id: a run-independent order (Flower's node ids are random)."""
        if self._order is None or len(self._order) != len(self.nodes):
            pairs = sorted([(st.info.partition_id, n) for n, st in self.nodes.items()])
            self._order = [n for _, n in pairs]  # by (partition id, node id), no key function
            self._always = all(st.info.availability >= 1.0 for st in self.nodes.values())
        return list(self._order)

    def online(self, server_round: int) -> list[int]:
        """Nodes online this round: each with its fleet availability, seeded per round/node
        (computed once per round: configure_train and configure_evaluate both ask)."""
        key = (self.seed, server_round)
        cached = self._online.get(key)
        if cached is not None and self._order is not None and len(self._order) == len(self.nodes):
            return list(cached)
        ordered = self.ordered()
        if self._always:  # every node always online: no draws needed
            self._online[key] = ordered
            return list(ordered)
        out = []
        for nid in ordered:
            info = self.nodes[nid].info
            if info.availability >= 1.0:
                out.append(nid)
                continue
            u = np.random.default_rng([self.seed, 0xA7A1, server_round, info.partition_id]).random()
            if u < info.availability:
                out.append(nid)
        self._online[key] = out
        return list(out)

    # -- forecasts -------------------------------------------------------------------------------
    def expected_upload_bytes(self, st: NodeState, codec_label: str, payload_bytes: int) -> int:
        if codec_label in st.observed_upload_bytes:
            return st.observed_upload_bytes[codec_label]
        return payload_bytes + self.default_upload_overhead

    def forecast(self, node_id: int, codec_label: str = "none", payload_bytes: int = 0) -> Forecast:
        """Joules of one train call of ``node_id`` with the given uplink codec."""
        st = self.nodes[node_id]
        if st.observed_compute_j is not None:
            compute_j, compute_s = st.observed_compute_j, st.observed_compute_s or 0.0
        else:
            flops = self.flops_per_example * max(st.info.num_examples, 1)
            compute_j, compute_s = (
                st.device.compute_energy_j(flops),
                st.device.compute_time_s(flops),
            )
        up = self.expected_upload_bytes(st, codec_label, payload_bytes)
        down = self.download_bytes
        radio = radio_energy(st.link, down, up, gap_s=compute_s)
        dl = radio.download_j + infrastructure_energy_j(down, self.infra_kwh_per_gb)
        ul = radio.upload_j + infrastructure_energy_j(up, self.infra_kwh_per_gb)
        return Forecast(compute_j, dl, ul, compute_j + radio.download_j + radio.upload_j)

    # -- learning from a round -------------------------------------------------------------------
    def observe_train(self, node_id: int, server_round: int, loss: float | None) -> None:
        st = self.nodes[node_id]
        st.last_round, st.participations = server_round, st.participations + 1
        if loss is not None and np.isfinite(loss):
            st.last_loss = float(loss)

    def observe_rows(self, rows: Iterable[EnergyRow], codecs: dict[int, str]) -> None:
        """Learn compute joules and upload bytes from a round's train rows; drain batteries by
        the device-side joules (everything but infrastructure) of every row, failed ones too."""
        for r in rows:
            nid = int(r.node_id)
            if nid not in self.nodes:
                continue
            st = self.nodes[nid]
            if r.status == "ok" and r.call == "train" and r.phase == "train":
                st.observed_compute_j, st.observed_compute_s = r.joules, r.seconds
            if r.status == "ok" and r.call == "train" and r.phase == "upload" and nid in codecs:
                st.observed_upload_bytes[codecs[nid]] = r.bytes
            if r.status == "failed":
                st.failures += 1 if r.phase in ("download", "train") and r.call == "train" else 0
            if st.battery_j is not None:
                device_j = sum(c.joules for c in r.components if c.domain != "infrastructure")
                st.battery_j = max(0.0, st.battery_j - device_j)

    def recharge(self) -> None:
        """End of a round: every battery gains its fleet's recharge fraction (capped at full)."""
        for st in self.nodes.values():
            if st.battery_j is not None and st.capacity_j is not None:
                gain = st.info.recharge_per_round * st.capacity_j
                st.battery_j = min(st.capacity_j, st.battery_j + gain)
