"""What the coordinator knows of its fleet between rounds: the registry of its nodes.

``FleetState`` is fed by the ledger rows of each committed round (energy per phase, bytes), by
train replies (loss, examples) and by the fleet spec (availability, battery) in simulation. It
keeps every node's state in numpy columns (:mod:`fedenergy.server.columns`), one row per node
in the order nodes were first added; ``fleet[node_id]`` is a NodeState, a view of that row.
``ordered`` sorts the nodes, ``online`` draws who is online (:mod:`.availability`),
``forecast`` / ``forecast_many`` / ``prior_forecast`` predict the joules of a train call
(:mod:`.forecast`), batteries drain and recharge (:mod:`.battery`).

With lazy discovery the coordinator starts knowing only node ids: such a node is *unknown*
(``NodeState.known`` is False; its device and link are the prior profile, used only for
failed-call estimates) and its forecast is the prior — the mean forecast of the known nodes, or
the prior profile's while none is known — until its first reply's report names its partition,
device and link (``add`` then upgrades it, keeping its history).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace

import numpy as np

from fedenergy.ledger import EnergyRow
from fedenergy.physics.catalog import Catalog, packaged_catalog
from fedenergy.physics.compute import DEFAULT_BOUNDARY, DEFAULT_STARTUP
from fedenergy.physics.infra import DEFAULT_MODEL, check_model
from fedenergy.physics.radio import KeepAlive
from fedenergy.server.availability import online_mask
from fedenergy.server.battery import drain, install, recharge_all, shift_initial
from fedenergy.server.columns import HISTORY, FleetColumns, NodeState
from fedenergy.server.forecast import (
    Columns4,
    Forecast,
    Model,
    TrainCall,
    fill_unknown,
    known_forecast,
    mean_forecast,
    profile_forecast,
    rows_forecast,
)
from fedenergy.server.node import PRIOR_PROFILE, UNKNOWN_PARTITION, NodeInfo, profiles

_LAST = 1 << 62  # sort key of nodes whose partition is not known: after every partition id


class Nodes(Mapping):
    """``FleetState.nodes``: node id -> NodeState, in the order nodes were first added."""

    def __init__(self, cols: FleetColumns) -> None:
        self._cols = cols

    def __getitem__(self, node_id: int) -> NodeState:
        return NodeState(self._cols, self._cols.row[node_id])

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._cols.row

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._cols.node_ids))

    def __len__(self) -> int:
        return self._cols.size


class FleetState:
    """Per-node state, availability draws, battery bookkeeping and forecasts."""

    def __init__(
        self,
        nodes: Iterable[NodeInfo],
        seed: int,
        infra_kwh_per_gb: float,
        catalog: Catalog | None = None,
        *,
        infra_model: str = DEFAULT_MODEL,
    ) -> None:
        # the devices and links node profiles are looked up in (default: the packaged ones)
        self.catalog = packaged_catalog() if catalog is None else catalog
        self.seed = seed
        self.infra_kwh_per_gb = infra_kwh_per_gb
        self.infra_model = check_model(infra_model)  # physics.infra: per-byte | power
        self.flops_per_example = 0.0  # training FLOPs per local example (set by the coordinator)
        # the steps of a train call (0: not known) and the clients' threads (0: not known, all
        # cores), set by the coordinator like flops_per_example; the compute model's boundary
        # and start-up mode (fedenergy.physics.compute)
        self.batch_size, self.local_epochs, self.threads = 0, 0, 0
        self.boundary, self.startup = DEFAULT_BOUNDARY, DEFAULT_STARTUP
        self.default_upload_overhead = 1500  # bytes beyond the payload, until one is observed
        self.download_bytes = 0  # size of a train message, where a forecast is not told one
        self.known_count = 0
        # the run's clock (s) at which the coming calls are sent, None: no clock (each call
        # stands alone); the keep-alive accounted between calls (server/radio_clock.py)
        self.clock_s: float | None = None
        self.keepalive: KeepAlive | None = None
        self.cols = FleetColumns()
        self.nodes = Nodes(self.cols)
        # caches, valid while the columns' versions they were built at stand
        self._order: tuple[int, list[int], np.ndarray, bool] | None = None
        self._online: dict[tuple[int, int], list[int]] = {}  # (seed, round) -> online(round)
        self._online_at = -1  # the order version of _online
        self._prior: dict[tuple, Forecast] = {}
        self._rows_memo: list[tuple[list[int], np.ndarray]] = []  # recent rows() answers
        for info in nodes:
            self.add(info)

    # -- nodes -----------------------------------------------------------------------------------
    def add(self, info: NodeInfo) -> None:
        """Add a node with its profile; an unknown node with that id is upgraded in place
        (its participation history is kept)."""
        device, link = profiles(info.device, info.link, self.catalog)
        cols, row = self.cols, self.cols.row.get(info.node_id)
        if row is None:
            row = cols.new_row(info.node_id, info, device, link)
            self.known_count += 1
        else:
            was_known = cols.get("known", row)
            cols.reset(row, keep=() if was_known else HISTORY)
            cols.set_info(row, info)
            cols.set_profile(row, device, link)
            self.known_count += 0 if was_known else 1
        cols.set("known", row, True)
        install(cols, row, device, info.battery_initial)

    def add_unknown(self, node_id: int) -> None:
        """A registered node whose profile is not known yet (lazy discovery)."""
        if node_id in self.cols.row:
            return
        device, link = profiles(*PRIOR_PROFILE, self.catalog)
        self.cols.new_row(node_id, NodeInfo(node_id, UNKNOWN_PARTITION, "", ""), device, link)

    def add_unknown_many(self, node_ids: Iterable[int]) -> None:
        """``add_unknown`` for each of ``node_ids`` in order, in one write per column (ids
        already in the fleet, or repeated, are skipped as ``add_unknown`` skips them)."""
        fresh = [n for n in dict.fromkeys(node_ids) if n not in self.cols.row]
        device, link = profiles(*PRIOR_PROFILE, self.catalog)
        infos = [NodeInfo(n, UNKNOWN_PARTITION, "", "") for n in fresh]
        self.cols.new_rows(infos, device, link)

    def missing(self, node_ids: Iterable[int]) -> list[int]:
        """The ids of ``node_ids`` the fleet does not hold, in order."""
        row = self.cols.row
        return [n for n in node_ids if n not in row]

    def complete(self, info: NodeInfo) -> None:
        """A node known by its declared device and link has replied for the first time: its
        partition, data size and (in simulation) fleet behaviour join what was declared. Its
        device, link and history stay; a declared country stays; a simulated battery is shifted
        by the difference of initial charges (it was assumed full)."""
        row = self.cols.row[info.node_id]
        old = self.cols.infos[row]
        country = old.country if old.country != "WORLD" else info.country
        self.cols.set_info(row, replace(info, device=old.device, link=old.link, country=country))
        shift_initial(self.cols, row, old.battery_initial, info.battery_initial)

    def set_examples(self, node_id: int, num_examples: int) -> None:
        """Record a node's local training-set size (lazy discovery learns it from a reply)."""
        row = self.cols.row[node_id]
        info = self.cols.infos[row]
        if self.cols.get("known", row) and info.num_examples != num_examples:
            self.cols.set_info(row, replace(info, num_examples=int(num_examples)))

    def __contains__(self, node_id: int) -> bool:
        return node_id in self.cols.row

    def __getitem__(self, node_id: int) -> NodeState:
        return NodeState(self.cols, self.cols.row[node_id])

    # -- rows and columns ------------------------------------------------------------------------
    def rows(self, node_ids: Sequence[int]) -> np.ndarray:
        """The column rows of ``node_ids`` (KeyError for an id not in the fleet). The last few
        answers are kept (``online``'s, typically): a node's row never changes."""
        for memo_ids, memo_rows in self._rows_memo:
            if len(memo_ids) == len(node_ids) and memo_ids == node_ids:
                return memo_rows.copy()
        row = self.cols.row
        out = np.fromiter(map(row.__getitem__, node_ids), dtype=np.int64, count=len(node_ids))
        self._remember_rows(list(node_ids), out.copy())
        return out

    def _remember_rows(self, node_ids: list[int], rows: np.ndarray) -> None:
        self._rows_memo = [(node_ids, rows), *self._rows_memo[:3]]

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column ``name`` (see ``columns.COLUMNS``) at ``rows``: a copy, aligned with ``rows``."""
        return self.cols.data[name][rows]

    # -- order and availability ------------------------------------------------------------------
    def _ordering(self) -> tuple[list[int], np.ndarray, bool]:
        """Node ids by partition id, their rows, and whether every node is always online."""
        cols = self.cols
        if self._order is not None and self._order[0] == cols.order_version:
            return self._order[1], self._order[2], self._order[3]
        n = cols.size
        if cols.exotic_ids:
            part = cols.column("part")
            keys = [int(p) if p >= 0 else _LAST for p in part.tolist()]
            pairs = sorted(zip(keys, cols.node_ids, strict=True))
            order_ids = [nid for _, nid in pairs]
            order = np.fromiter(map(cols.row.__getitem__, order_ids), dtype=np.int64, count=n)
        else:  # by (partition id, node id); nodes whose partition is not known yet (lazy or
            # declared discovery) after the others, by node id
            key = np.where(cols.column("part") >= 0, cols.column("part"), _LAST)
            order = np.argsort(key)
            ranked = key[order]
            if n > 1 and (ranked[1:] == ranked[:-1]).any():  # ties: by node id within
                by_id = np.argsort(cols.ids[:n])
                order = by_id[np.argsort(key[by_id], kind="stable")]
            order_ids = cols.id_obj[order].tolist()
        always = bool((cols.column("avail") >= 1.0).all())
        self._order = (cols.order_version, order_ids, order, always)
        self._remember_rows(list(order_ids), order)
        return order_ids, order, always

    def ordered(self) -> list[int]:
        """Node ids by partition id: a run-independent order (Flower's node ids are random)."""
        return list(self._ordering()[0])

    def online(self, server_round: int) -> list[int]:
        """Nodes online this round: each with its fleet availability, seeded per round/node
        (computed once per round: configure_train and configure_evaluate both ask)."""
        order_ids, order, always = self._ordering()
        if self._online_at != self.cols.order_version:
            self._online, self._online_at = {}, self.cols.order_version
        key = (self.seed, server_round)
        if key not in self._online:
            if always:  # every node always online: no draws needed
                self._online[key] = order_ids
            else:
                infos = self.cols.infos
                keep = online_mask(self.seed, server_round, [infos[r] for r in order.tolist()])
                self._online[key] = [n for n, k in zip(order_ids, keep.tolist(), strict=True) if k]
                self._remember_rows(list(self._online[key]), order[keep])
        return list(self._online[key])

    # -- forecasts -------------------------------------------------------------------------------
    def _call(self, codec_label: str, payload_bytes: int, download_bytes: int | None) -> TrainCall:
        down = self.download_bytes if download_bytes is None else download_bytes
        return TrainCall(codec_label, payload_bytes, down)

    def _model(self) -> Model:
        return Model(
            self.flops_per_example,
            self.default_upload_overhead,
            self.infra_kwh_per_gb,
            batch_size=self.batch_size,
            epochs=self.local_epochs,
            threads=self.threads,
            boundary=self.boundary,
            startup=self.startup,
            clock_s=self.clock_s,
            keepalive=self.keepalive,
            infra_model=self.infra_model,
        )

    def expected_upload_bytes(self, st: NodeState, codec_label: str, payload_bytes: int) -> int:
        """What ``st`` will upload with ``codec_label``: as observed, else payload + overhead."""
        if codec_label in st.observed_upload_bytes:
            return st.observed_upload_bytes[codec_label]
        return payload_bytes + self.default_upload_overhead

    def forecast(
        self,
        node_id: int,
        codec_label: str = "none",
        payload_bytes: int = 0,
        download_bytes: int | None = None,
    ) -> Forecast:
        """Joules of one train call of ``node_id`` with the given uplink codec, its raw payload
        bytes and the train message's bytes (None: ``self.download_bytes``)."""
        row = self.cols.row[node_id]
        if not self.cols.get("known", row):
            return self.prior_forecast(codec_label, payload_bytes, download_bytes)
        call = self._call(codec_label, payload_bytes, download_bytes)
        return known_forecast(self.cols, row, call, self._model())

    def forecast_many(
        self,
        rows: np.ndarray,
        codec_label: str = "none",
        payload_bytes: int = 0,
        download_bytes: int | None = None,
        work_scale: np.ndarray | float | None = None,
    ) -> Columns4:
        """``forecast`` of the nodes at ``rows`` (see ``rows()``) at once: arrays of compute_j,
        download_j, upload_j and device_j, equal float for float to ``forecast``'s.
        ``work_scale``: each known node's busy compute times this (an array aligned with
        ``rows``, or one factor; see ``forecast.rows_forecast``); unknown nodes get the prior."""
        rows = np.asarray(rows, dtype=np.int64)
        call = self._call(codec_label, payload_bytes, download_bytes)
        known = self.cols.data["known"][rows]
        if known.all():
            return rows_forecast(self.cols, rows, call, self._model(), work_scale)
        if isinstance(work_scale, np.ndarray):
            work_scale = work_scale[known]
        columns = rows_forecast(self.cols, rows[known], call, self._model(), work_scale)
        prior = self.prior_forecast(codec_label, payload_bytes, download_bytes)
        return fill_unknown(known, columns, prior)

    def prior_forecast(
        self, codec_label: str = "none", payload_bytes: int = 0, download_bytes: int | None = None
    ) -> Forecast:
        """The forecast of a node not heard from yet: the mean forecast of the known nodes (the
        fleet as observed so far), or the prior profile's while none is known."""
        call, model = self._call(codec_label, payload_bytes, download_bytes), self._model()
        key = (call, model, self.cols.forecast_version)
        if key in self._prior:
            return self._prior[key]
        known = np.flatnonzero(self.cols.column("known"))  # in the order of ``nodes``
        if len(known):
            out = mean_forecast(rows_forecast(self.cols, known, call, model))
        else:
            out = profile_forecast(*profiles(*PRIOR_PROFILE, self.catalog), 1, call, model)
        if len(self._prior) > 64:
            self._prior.clear()
        self._prior[key] = out
        return out

    # -- learning from a round -------------------------------------------------------------------
    def observe_train(self, node_id: int, server_round: int, loss: float | None) -> None:
        """A usable train reply of ``node_id`` in ``server_round``, with its training loss."""
        st = self[node_id]
        st.last_round, st.participations = server_round, st.participations + 1
        if loss is not None and np.isfinite(loss):
            st.last_loss = float(loss)

    def observe_tried(self, node_ids: Iterable[int], server_round: int) -> None:
        """``node_ids`` were sent a train call in ``server_round`` (whatever came back: a usable
        update, a failure, an offline reply or nothing)."""
        row = self.cols.row
        rows = np.fromiter((row[n] for n in node_ids if n in row), dtype=np.int64)
        if len(rows):
            self.cols.set_rows("last_tried", rows, np.full(len(rows), server_round))

    def observe_rows(self, rows: Iterable[EnergyRow], codecs: dict[int, str]) -> None:
        """Learn compute joules and upload bytes from a round's train rows; drain batteries by
        the device-side joules (everything but infrastructure) of every row, failed ones too."""
        cols = self.cols
        for r in rows:
            row = cols.row.get(int(r.node_id))
            if row is None:
                continue
            st = NodeState(cols, row)
            if r.status == "ok" and r.call == "train" and r.phase == "train":
                st.observed_compute_j, st.observed_compute_s = r.joules, r.seconds
            if r.status == "ok" and r.call == "train" and r.phase == "upload":
                if (label := codecs.get(int(r.node_id))) is not None:
                    st.observed_upload_bytes[label] = r.bytes
            if r.status == "failed" and r.phase in ("download", "train") and r.call == "train":
                st.failures += 1
            if cols.get("has_batt", row):
                device_j = sum(c.joules for c in r.components if c.domain != "infrastructure")
                drain(cols, row, device_j)

    def recharge(self) -> None:
        """End of a round: every battery gains its fleet's recharge fraction (capped at full)."""
        recharge_all(self.cols)
