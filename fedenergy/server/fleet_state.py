"""What the coordinator knows of its fleet between rounds, and the per-node energy forecast.

``FleetState`` is fed by the ledger rows of each committed round (energy per phase, bytes), by
train replies (loss, examples) and by the fleet spec (availability, battery) in simulation.
``forecast`` predicts a node's joules for the coming train call: from its device and link
profile before it has participated, from its own observed history after.

With lazy discovery the coordinator starts knowing only node ids: such a node is *unknown*
(``NodeState.known`` is False; its device and link are the prior profile, used only for
failed-call estimates) and its forecast is the prior — the mean forecast of the known nodes, or
the prior profile's while none is known — until its first reply's report names its partition,
device and link (``add`` then upgrades it, keeping its history).

For fleets of 100,000 nodes the state is mirrored in numpy columns, one row per node (in the
order nodes were first added): ``ordered`` sorts them, ``forecast_many`` forecasts many nodes
at once with exactly the arithmetic of ``forecast`` (the same floats), and the selectors score
candidates on them. Every attribute assignment on a NodeState held by a FleetState (and every
change of its ``observed_upload_bytes``) marks its row stale; stale rows are re-read before the
columns are next used, so the columns never disagree with the NodeStates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from fedenergy.ledger import EnergyRow
from fedenergy.physics.devices import DeviceProfile, get_device
from fedenergy.physics.network import (
    BYTES_PER_GB,
    J_PER_KWH,
    LinkProfile,
    get_link,
    infrastructure_energy_j,
    radio_energy,
)
from fedenergy.sim.fleet import is_online

WH_TO_J = 3600.0
UNKNOWN_PARTITION = -1
PRIOR_PROFILE = ("laptop", "wifi")  # forecast of unknown nodes while no node is known
_LAST = 1 << 62  # sort key of unknown nodes: after every partition id
_NAN = float("nan")


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


_FIELDS = ("compute_j", "download_j", "upload_j", "device_j")


class _Uploads(dict):
    """``NodeState.observed_upload_bytes``: a dict that marks its node's row stale on change."""

    __slots__ = ("_mark",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._mark: tuple[set[int], int] | None = None

    def _touch(self) -> None:
        if self._mark is not None:
            self._mark[0].add(self._mark[1])

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self._touch()

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self._touch()

    def __ior__(self, other):
        super().update(other)
        self._touch()
        return self

    def update(self, *args, **kwargs) -> None:
        super().update(*args, **kwargs)
        self._touch()

    def pop(self, *args):
        out = super().pop(*args)
        self._touch()
        return out

    def popitem(self):
        out = super().popitem()
        self._touch()
        return out

    def setdefault(self, key, default=None):
        out = super().setdefault(key, default)
        self._touch()
        return out

    def clear(self) -> None:
        super().clear()
        self._touch()


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
    known: bool = True  # False: lazy discovery has not heard from this node yet

    @property
    def battery_fraction(self) -> float:
        if self.capacity_j is None or self.battery_j is None:
            return 1.0
        return self.battery_j / self.capacity_j


class _HeldNodeState(NodeState):
    """A NodeState held by a FleetState (``_attach`` switches its class): every assignment to
    it, and every change of its ``observed_upload_bytes``, marks its row of the columns stale."""

    def __setattr__(self, name: str, value) -> None:
        if name == "observed_upload_bytes" and not (
            type(value) is _Uploads and value._mark is None
        ):
            value = _Uploads(value)  # a copy that reports its changes
        object.__setattr__(self, name, value)
        mark = self.__dict__.get("_mark")
        if mark is not None:
            mark[0].add(mark[1])
            if name == "observed_upload_bytes":
                value._mark = mark


# numpy columns mirroring NodeStates: name -> (dtype, fill of a new row)
_COLUMNS = {
    "part": (np.int64, 0),  # partition id
    "known": (np.bool_, False),
    "avail": (np.float64, 1.0),
    "examples": (np.int64, 0),
    "last_round": (np.int64, 0),
    "participations": (np.int64, 0),
    "has_loss": (np.bool_, False),
    "loss": (np.float64, _NAN),
    "has_batt": (np.bool_, False),  # capacity_j and battery_j both set
    "capacity": (np.float64, _NAN),
    "battery": (np.float64, _NAN),
    "has_obs": (np.bool_, False),  # observed_compute_j set
    "obs_j": (np.float64, _NAN),
    "obs_s": (np.float64, 0.0),  # observed_compute_s or 0.0, as forecast() reads it
    "dev_fps": (np.float64, 1.0),  # device train_flops_per_s
    "dev_w": (np.float64, 0.0),  # device active_power_w
    "link": (np.int64, 0),  # index into the link table
}
_ORDER_COLS = ("part", "known", "avail")  # what ordered()/online() depend on
_FORECAST_COLS = ("known", "examples", "has_obs", "obs_j", "obs_s", "dev_fps", "dev_w", "link")


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
        self._order_rows = np.zeros(0, dtype=np.int64)  # the rows of ordered()
        self._always = True  # every node has availability >= 1 (set with the order)
        self._online: dict[tuple[int, int], list[int]] = {}  # (seed, round) -> online(round)
        self._version = 0  # bumped whenever a forecast input changes (prior cache key)
        self._prior: dict[tuple, Forecast] = {}
        self.known_count = 0
        # columns: one row per node id, in the order ids were first added
        self._row: dict[int, int] = {}
        self._row_node: list[int] = []
        self._cap = 0
        self._cols: dict[str, np.ndarray] = {}
        self._ids = np.zeros(0, dtype=np.uint64)
        self._id_obj = np.zeros(0, dtype=object)  # the node ids' own int objects, by row
        self._rows_memo: list[tuple[list[int], np.ndarray]] = []  # recent rows() answers
        self._exotic_ids = False  # some node id does not fit a uint64: sort in Python
        self._up: dict[str, np.ndarray] = {}  # codec label -> observed upload bytes (-1: none)
        self._links: list[LinkProfile] = []
        self._link_ix: dict[str, int] = {}
        self._link_tab: dict[str, np.ndarray] = {}
        self._dirty: set[int] = set()  # rows whose NodeState changed since the last sync
        self._last_call: tuple | None = None  # (node, codec, payload, download) of forecast()
        for info in nodes:
            self.add(info)
        self._sync()

    # -- columns ---------------------------------------------------------------------------------
    def _grow(self, n: int) -> None:
        if n <= self._cap:
            return
        cap = max(n, 2 * self._cap, 1024)
        for name, (dtype, fill) in _COLUMNS.items():
            col = np.full(cap, fill, dtype=dtype)
            if name in self._cols:
                col[: self._cap] = self._cols[name][: self._cap]
            self._cols[name] = col
        for label, old in self._up.items():
            col = np.full(cap, -1, dtype=np.int64)
            col[: self._cap] = old[: self._cap]
            self._up[label] = col
        ids = np.zeros(cap, dtype=np.uint64)
        ids[: self._cap] = self._ids[: self._cap]
        obj = np.zeros(cap, dtype=object)
        obj[: self._cap] = self._id_obj[: self._cap]
        self._ids, self._id_obj, self._cap = ids, obj, cap

    def _attach(self, st: NodeState) -> None:
        """Give ``st`` its node's row (a new one for a new id) and mark that row stale."""
        nid = st.info.node_id
        row = self._row.get(nid)
        if row is None:
            row = len(self._row_node)
            self._grow(row + 1)
            self._row[nid] = row
            self._row_node.append(nid)
            self._id_obj[row] = nid
        mark = (self._dirty, row)
        if type(st) is NodeState:
            st.__class__ = _HeldNodeState
        uploads = _Uploads(st.observed_upload_bytes)
        uploads._mark = mark
        object.__setattr__(st, "observed_upload_bytes", uploads)
        object.__setattr__(st, "_mark", mark)
        self._dirty.add(row)

    def _link_index(self, link: LinkProfile) -> int:
        ix = self._link_ix.get(link.id)
        if ix is None:
            ix = self._link_ix[link.id] = len(self._links)
            self._links.append(link)
            ls = self._links  # the constants exactly as radio_energy computes them
            self._link_tab = {
                "down": np.array([x.down_mbps * 1e6 for x in ls]),
                "up": np.array([x.up_mbps * 1e6 for x in ls]),
                "p_down": np.array([x.download_power_w() for x in ls]),
                "p_up": np.array([x.upload_power_w() for x in ls]),
                "tail_w": np.array([x.tail_mw / 1000.0 for x in ls]),
                "tail_s": np.array([x.tail_s for x in ls]),
            }
        return ix

    def _sync(self) -> None:
        """Re-read the stale rows from their NodeStates (in bulk)."""
        if len(self.nodes) != len(self._row_node):  # nodes put into ``nodes`` directly
            for nid, st in self.nodes.items():
                if nid not in self._row:
                    self._attach(st)
        if not self._dirty:
            return
        rows = sorted(self._dirty)
        self._dirty.clear()
        idx = np.asarray(rows, dtype=np.int64)
        sts = [self.nodes[self._row_node[r]] for r in rows]
        c = self._cols
        before = {k: c[k][idx].copy() for k in set(_ORDER_COLS) | set(_FORECAST_COLS)}
        ups_before = {k: v[idx].copy() for k, v in self._up.items()}
        try:
            self._ids[idx] = [self._row_node[r] for r in rows]
        except (OverflowError, ValueError, TypeError):
            self._exotic_ids = True
        c["part"][idx] = [s.info.partition_id for s in sts]
        c["known"][idx] = [s.known for s in sts]
        c["avail"][idx] = [s.info.availability for s in sts]
        c["examples"][idx] = [s.info.num_examples for s in sts]
        c["last_round"][idx] = [s.last_round for s in sts]
        c["participations"][idx] = [s.participations for s in sts]
        c["has_loss"][idx] = [s.last_loss is not None for s in sts]
        c["loss"][idx] = [_NAN if s.last_loss is None else s.last_loss for s in sts]
        c["has_batt"][idx] = [s.capacity_j is not None and s.battery_j is not None for s in sts]
        c["capacity"][idx] = [_NAN if s.capacity_j is None else s.capacity_j for s in sts]
        c["battery"][idx] = [_NAN if s.battery_j is None else s.battery_j for s in sts]
        c["has_obs"][idx] = [s.observed_compute_j is not None for s in sts]
        c["obs_j"][idx] = [
            _NAN if s.observed_compute_j is None else s.observed_compute_j for s in sts
        ]
        c["obs_s"][idx] = [s.observed_compute_s or 0.0 for s in sts]
        c["dev_fps"][idx] = [s.device.train_flops_per_s for s in sts]
        c["dev_w"][idx] = [s.device.active_power_w for s in sts]
        c["link"][idx] = [self._link_index(s.link) for s in sts]
        for col in self._up.values():
            col[idx] = -1
        for r, s in zip(rows, sts, strict=True):
            for label, nbytes in s.observed_upload_bytes.items():
                if label not in self._up:
                    self._up[label] = np.full(self._cap, -1, dtype=np.int64)
                self._up[label][r] = nbytes
        if any(not np.array_equal(before[k], c[k][idx]) for k in _ORDER_COLS):
            self._order, self._online = None, {}
        if any(
            not np.array_equal(before[k], c[k][idx], equal_nan=k != "known") for k in _FORECAST_COLS
        ) or any(
            label not in ups_before or not np.array_equal(ups_before[label], col[idx])
            for label, col in self._up.items()
        ):
            self._version += 1

    def rows(self, node_ids: Sequence[int]) -> np.ndarray:
        """The column rows of ``node_ids`` (KeyError for an id not in the fleet). The last few
        answers are kept (``online``'s, typically): a node's row never changes."""
        self._sync()
        for memo_ids, memo_rows in self._rows_memo:
            if len(memo_ids) == len(node_ids) and memo_ids == node_ids:
                return memo_rows.copy()
        out = np.fromiter(map(self._row.__getitem__, node_ids), dtype=np.int64, count=len(node_ids))
        self._remember_rows(list(node_ids), out.copy())
        return out

    def _remember_rows(self, node_ids: list[int], rows: np.ndarray) -> None:
        self._rows_memo = [(node_ids, rows), *self._rows_memo[:3]]

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column ``name`` (see ``_COLUMNS``) at ``rows``: a copy, aligned with ``rows``."""
        self._sync()
        return self._cols[name][rows]

    # -- nodes -----------------------------------------------------------------------------------
    def add(self, info: NodeInfo) -> None:
        """Add a node with its profile; an unknown node with that id is upgraded in place
        (its participation history is kept)."""
        device, link = _profiles(info.device, info.link)
        st = NodeState(info, device, link)
        old = self.nodes.get(info.node_id)
        if old is not None and not old.known:
            for name in ("last_loss", "last_round", "participations", "failures"):
                setattr(st, name, getattr(old, name))
        if old is None or not old.known:
            self.known_count += 1
        self._order, self._online, self._version = None, {}, self._version + 1
        if device.battery_wh > 0:
            st.capacity_j = device.battery_wh * WH_TO_J
            st.battery_j = st.capacity_j * info.battery_initial
        self.nodes[info.node_id] = st
        self._attach(st)

    def add_unknown(self, node_id: int) -> None:
        """A registered node whose profile is not known yet (lazy discovery)."""
        if node_id in self.nodes:
            return
        device, link = _profiles(*PRIOR_PROFILE)
        info = NodeInfo(node_id, UNKNOWN_PARTITION, "", "")
        self.nodes[node_id] = st = NodeState(info, device, link, known=False)
        self._order, self._online, self._version = None, {}, self._version + 1
        self._attach(st)

    def complete(self, info: NodeInfo) -> None:
        """A node known by its declared device and link has replied for the first time: its
        partition, data size and (in simulation) fleet behaviour join what was declared. Its
        device, link and history stay; a declared country stays; a simulated battery is shifted
        by the difference of initial charges (it was assumed full)."""
        st = self.nodes[info.node_id]
        old = st.info
        country = old.country if old.country != "WORLD" else info.country
        st.info = replace(info, device=old.device, link=old.link, country=country)
        if st.capacity_j is not None and st.battery_j is not None:
            shift = st.capacity_j * (old.battery_initial - info.battery_initial)
            st.battery_j = max(0.0, st.battery_j - shift)
        self._order, self._online, self._version = None, {}, self._version + 1

    def set_examples(self, node_id: int, num_examples: int) -> None:
        """Record a node's local training-set size (lazy discovery learns it from a reply)."""
        st = self.nodes[node_id]
        if st.known and st.info.num_examples != num_examples:
            st.info = replace(st.info, num_examples=int(num_examples))
            self._version += 1

    def __contains__(self, node_id: int) -> bool:
        return node_id in self.nodes

    def __getitem__(self, node_id: int) -> NodeState:
        return self.nodes[node_id]

    def ordered(self) -> list[int]:
        """Node ids by partition id: a run-independent order (Flower's node ids are random)."""
        self._sync()
        if self._order is None or len(self._order) != len(self.nodes):
            n, c = len(self._row_node), self._cols
            if self._exotic_ids:
                pairs = sorted(
                    [
                        (st.info.partition_id if st.info.partition_id >= 0 else _LAST, n)
                        for n, st in self.nodes.items()
                    ]
                )
                self._order = [n for _, n in pairs]
                order = self.rows(self._order)
            else:  # by (partition id, node id); nodes whose partition is not known yet (lazy
                # or declared discovery) after the others, by node id
                key = np.where(c["part"][:n] >= 0, c["part"][:n], _LAST)
                order = np.argsort(key)
                ranked = key[order]
                if n > 1 and (ranked[1:] == ranked[:-1]).any():  # ties: by node id within
                    by_id = np.argsort(self._ids[:n])
                    order = by_id[np.argsort(key[by_id], kind="stable")]
                self._order = self._id_obj[order].tolist()
            self._order_rows = order
            self._remember_rows(list(self._order), order)
            self._always = bool((c["avail"][:n] >= 1.0).all())
        return list(self._order)

    def online(self, server_round: int) -> list[int]:
        """Nodes online this round: each with its fleet availability, seeded per round/node
        (computed once per round: configure_train and configure_evaluate both ask)."""
        key = (self.seed, server_round)
        self._sync()
        cached = self._online.get(key)
        if cached is not None and self._order is not None and len(self._order) == len(self.nodes):
            return list(cached)
        ordered = self.ordered()
        if self._always:  # every node always online: no draws needed
            self._online[key] = ordered
            return list(ordered)
        out, keep = [], np.zeros(len(ordered), dtype=bool)
        for i, nid in enumerate(ordered):
            info = self.nodes[nid].info  # unknown nodes: availability 1 (not known to be away)
            if is_online(self.seed, server_round, info.partition_id, info.availability):
                out.append(nid)
                keep[i] = True
        self._online[key] = out
        self._remember_rows(list(out), self._order_rows[keep])
        return list(out)

    # -- forecasts -------------------------------------------------------------------------------
    def expected_upload_bytes(self, st: NodeState, codec_label: str, payload_bytes: int) -> int:
        if codec_label in st.observed_upload_bytes:
            return st.observed_upload_bytes[codec_label]
        return payload_bytes + self.default_upload_overhead

    def forecast(self, node_id: int, codec_label: str = "none", payload_bytes: int = 0) -> Forecast:
        """Joules of one train call of ``node_id`` with the given uplink codec."""
        st = self.nodes[node_id]
        if not st.known:
            out = self.prior_forecast(codec_label, payload_bytes)
        else:
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
            out = Forecast(compute_j, dl, ul, compute_j + radio.download_j + radio.upload_j)
        # what was asked, for selectors that forecast whole fleets (see forecast_many)
        self._last_call = (node_id, codec_label, payload_bytes, self.download_bytes)
        return out

    def forecaster(self, codec_label: str = "none", payload_bytes: int = 0):
        """``forecast`` with a fixed codec and payload as a one-argument function, marked
        per-link so that selectors forecast whole candidate lists at once."""

        def fc(node_id: int) -> Forecast:
            return self.forecast(node_id, codec_label, payload_bytes)

        fc.per_link, fc.fleet = True, self
        return fc

    def forecast_many(
        self, rows: np.ndarray, codec_label: str = "none", payload_bytes: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``forecast`` of the nodes at ``rows`` (see ``rows()``) at once: arrays of compute_j,
        download_j, upload_j and device_j, equal float for float to ``forecast``'s (the same
        operations in the same order, elementwise)."""
        self._sync()
        rows = np.asarray(rows, dtype=np.int64)
        c, lt = self._cols, self._link_tab
        known = c["known"][rows]
        all_known = bool(known.all())
        kr = rows if all_known else rows[known]
        # compute: observed, else the device model (flops / rate, x power)
        flops = self.flops_per_example * np.maximum(c["examples"][kr], 1)
        compute_s = flops / c["dev_fps"][kr]
        compute_j = compute_s * c["dev_w"][kr]
        has_obs = c["has_obs"][kr]
        if has_obs.any():
            compute_j = np.where(has_obs, c["obs_j"][kr], compute_j)
            compute_s = np.where(has_obs, c["obs_s"][kr], compute_s)
        # upload bytes: observed with this codec, else payload + overhead
        up = np.full(len(kr), payload_bytes + self.default_upload_overhead)
        seen = self._up.get(codec_label)
        if seen is not None:
            obs = seen[kr]
            up = np.where(obs >= 0, obs, up)
        # radio (network.radio_energy) and infrastructure (network.infrastructure_energy_j)
        down = self.download_bytes
        li = c["link"][kr]
        t_down = (down * 8) / lt["down"][li] if down > 0 else np.zeros(len(kr))
        has_up = up > 0
        t_up = np.where(has_up, (up * 8) / lt["up"][li], 0.0)
        tail_w, tail_s = lt["tail_w"][li], lt["tail_s"][li]
        e_down = lt["p_down"][li] * t_down
        e_up = lt["p_up"][li] * t_up
        if down > 0:
            gap = np.minimum(np.maximum(compute_s, 0.0), tail_s)
            e_down = e_down + tail_w * np.where(has_up, gap, tail_s)
        e_up = np.where(has_up, e_up + tail_w * tail_s, e_up)
        dl = e_down + infrastructure_energy_j(down, self.infra_kwh_per_gb)
        ul = e_up + up / BYTES_PER_GB * self.infra_kwh_per_gb * J_PER_KWH
        device_j = compute_j + e_down + e_up
        if all_known:
            return compute_j, dl, ul, device_j
        prior = self.prior_forecast(codec_label, payload_bytes)
        out = []
        for name, known_vals in zip(_FIELDS, (compute_j, dl, ul, device_j), strict=True):
            col = np.full(len(rows), getattr(prior, name))
            col[known] = known_vals
            out.append(col)
        return out[0], out[1], out[2], out[3]

    def prior_forecast(self, codec_label: str = "none", payload_bytes: int = 0) -> Forecast:
        """The forecast of a node not heard from yet: the mean forecast of the known nodes (the
        fleet as observed so far), or the prior profile's while none is known."""
        self._sync()
        key = (codec_label, payload_bytes, self.download_bytes, self._version)
        if key in self._prior:
            return self._prior[key]
        n = len(self._row_node)
        known = np.flatnonzero(self._cols["known"][:n])  # in the order of ``nodes``
        if len(known):
            fcs = self.forecast_many(known, codec_label, payload_bytes)
            out = Forecast(*(float(np.mean(v)) for v in fcs))
        else:
            device, link = _profiles(*PRIOR_PROFILE)
            flops = self.flops_per_example
            compute_j, compute_s = device.compute_energy_j(flops), device.compute_time_s(flops)
            up, down = payload_bytes + self.default_upload_overhead, self.download_bytes
            radio = radio_energy(link, down, up, gap_s=compute_s)
            dl = radio.download_j + infrastructure_energy_j(down, self.infra_kwh_per_gb)
            ul = radio.upload_j + infrastructure_energy_j(up, self.infra_kwh_per_gb)
            out = Forecast(compute_j, dl, ul, compute_j + radio.download_j + radio.upload_j)
        if len(self._prior) > 64:
            self._prior.clear()
        self._prior[key] = out
        return out

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
                self._version += 1
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
                charged = min(st.capacity_j, st.battery_j + gain)
                if charged != st.battery_j:  # a full battery is left alone (its row stays clean)
                    st.battery_j = charged
