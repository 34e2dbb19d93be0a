"""The fleet's per-node state, held in numpy columns (one row per node), and NodeState: the
view of one node's row.

The columns are the only copy of that state: a NodeState reads its fields from its row and
writes every assignment straight into it, so the vectorised forecasts and selectors, which read
whole columns, always see what the per-node code sees. Each write bumps ``forecast_version`` or
``order_version`` when it changes an input of the forecasts or of the node order, which is all
that the caches built on the columns (FleetState's) need to know.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

import numpy as np

from fedenergy.physics.devices import DeviceProfile
from fedenergy.physics.network import LinkProfile, LinkTerms, link_table
from fedenergy.server.node import NodeInfo

_NAN = float("nan")

# column name -> (dtype, value of a fresh row)
COLUMNS = {
    "part": (np.int64, 0),  # partition id
    "known": (np.bool_, False),  # False: lazy discovery has not heard from this node yet
    "avail": (np.float64, 1.0),  # availability
    "examples": (np.int64, 0),  # num_examples
    "recharge": (np.float64, 0.0),  # recharge_per_round (a fraction of capacity)
    "last_round": (np.int64, 0),  # last round this node trained in (0: never)
    "last_tried": (np.int64, 0),  # last round it was sent a train call, answered or not (0: never)
    "participations": (np.int64, 0),
    "failures": (np.int64, 0),
    "has_loss": (np.bool_, False),
    "loss": (np.float64, _NAN),  # last training loss
    "has_batt": (np.bool_, False),  # battery powered (capacity and charge set)
    "capacity": (np.float64, _NAN),
    "battery": (np.float64, _NAN),
    "has_obs": (np.bool_, False),  # observed compute joules set
    "obs_j": (np.float64, _NAN),
    "has_obs_s": (np.bool_, False),
    "obs_s": (np.float64, 0.0),  # observed compute seconds, 0.0 when none (as forecasts read it)
    "dev_fps": (np.float64, 1.0),  # device train_flops_per_s
    "dev_w": (np.float64, 0.0),  # device active_power_w
    "dev_idle": (np.float64, 0.0),  # device idle_power_w
    "dev_cores": (np.float64, 1.0),  # device cores
    "dev_step": (np.float64, 0.0),  # device step_overhead_s
    "dev_start": (np.float64, 0.0),  # device startup_s
    "dev_cpu": (np.float64, 1.0),  # device cpu_cores
    "link": (np.int64, 0),  # index into the link table
    "radio_end": (np.float64, _NAN),  # end of its last transfer on the run's clock (NaN: none)
}
# the device constants of the compute model, column by column (dev_<key>), in ComputeTerms order
DEVICE_KEYS = ("fps", "w", "idle", "cores", "step", "start", "cpu")
HISTORY = (
    "last_round",
    "last_tried",
    "participations",
    "failures",
    "has_loss",
    "loss",
    "radio_end",
)
ORDER_INPUTS = frozenset({"part", "known", "avail"})
FORECAST_INPUTS = frozenset(
    {
        "known",
        "examples",
        "has_obs",
        "obs_j",
        "obs_s",
        "link",
        "radio_end",
        *(f"dev_{k}" for k in DEVICE_KEYS),
    }
)
NO_UPLOAD = -1  # an upload-bytes cell with no observation


class FleetColumns:
    """Numpy columns with one row per node id, in the order ids were first added."""

    def __init__(self) -> None:
        self.size = 0
        self._cap = 0
        self.data: dict[str, np.ndarray] = {}
        self.row: dict[int, int] = {}  # node id -> row
        self.node_ids: list[int] = []  # by row
        self.ids = np.zeros(0, dtype=np.uint64)  # node ids by row, for sorting
        self.id_obj = np.zeros(0, dtype=object)  # the node ids' own int objects, by row
        self.exotic_ids = False  # some node id does not fit a uint64: sort in Python
        self.infos: list[NodeInfo] = []
        self.devices: list[DeviceProfile] = []
        self.links: list[LinkProfile] = []
        self.uploads: dict[str, np.ndarray] = {}  # codec label -> observed upload bytes
        self.link_profiles: list[LinkProfile] = []  # the link table's rows
        self.link_table: LinkTerms = link_table(())  # the call model's constants, by link
        self._link_ix: dict[str, int] = {}
        self.forecast_version = 0
        self.order_version = 0
        self._grow(1)

    def _grow(self, n: int) -> None:
        if n <= self._cap:
            return
        cap = max(n, 2 * self._cap, 1024)
        for name, (dtype, fill) in COLUMNS.items():
            col = np.full(cap, fill, dtype=dtype)
            if name in self.data:
                col[: self._cap] = self.data[name][: self._cap]
            self.data[name] = col
        for label, old in self.uploads.items():
            col = np.full(cap, NO_UPLOAD, dtype=np.int64)
            col[: self._cap] = old[: self._cap]
            self.uploads[label] = col
        ids = np.zeros(cap, dtype=np.uint64)
        ids[: self._cap] = self.ids[: self._cap]
        obj = np.zeros(cap, dtype=object)
        obj[: self._cap] = self.id_obj[: self._cap]
        self.ids, self.id_obj, self._cap = ids, obj, cap

    def new_row(
        self, node_id: int, info: NodeInfo, device: DeviceProfile, link: LinkProfile
    ) -> int:
        """A fresh row for a new node id."""
        row = self.size
        self._grow(row + 1)
        self.size += 1
        self.row[node_id] = row
        self.node_ids.append(node_id)
        self.id_obj[row] = node_id
        try:
            self.ids[row] = node_id
        except (OverflowError, ValueError, TypeError):
            self.exotic_ids = True
        self.infos.append(info)
        self.devices.append(device)
        self.links.append(link)
        self.set_info(row, info)
        self.set_profile(row, device, link)
        return row

    def new_rows(self, infos: list[NodeInfo], device: DeviceProfile, link: LinkProfile) -> None:
        """Fresh rows for new node ids that share one device and link: ``new_row`` for each,
        in order, written column by column (lazy discovery admits a whole fleet this way)."""
        k, start = len(infos), self.size
        if k == 0:
            return
        self._grow(start + k)
        self.size += k
        ids = [i.node_id for i in infos]
        self.row.update(zip(ids, range(start, start + k), strict=True))
        self.node_ids.extend(ids)
        self.id_obj[start : start + k] = ids
        try:
            self.ids[start : start + k] = ids
        except (OverflowError, ValueError, TypeError):  # as new_row does, one id at a time
            for row, node_id in enumerate(ids, start):
                try:
                    self.ids[row] = node_id
                except (OverflowError, ValueError, TypeError):
                    self.exotic_ids = True
        self.infos.extend(infos)
        self.devices.extend([device] * k)
        self.links.extend([link] * k)
        rows = np.arange(start, start + k)
        for name, field in (
            ("part", "partition_id"),
            ("avail", "availability"),
            ("examples", "num_examples"),
            ("recharge", "recharge_per_round"),
        ):
            values = np.array([getattr(i, field) for i in infos], dtype=COLUMNS[name][0])
            self.set_rows(name, rows, values)
        for key, value in zip(DEVICE_KEYS, device.terms, strict=True):
            self.set_rows(f"dev_{key}", rows, np.full(k, value, dtype=np.float64))
        self.set_rows("link", rows, np.full(k, self._link_index(link), dtype=np.int64))

    def reset(self, row: int, keep: tuple[str, ...] = ()) -> None:
        """Every column of ``row`` back to a fresh row's value, except ``keep``."""
        for name, (_, fill) in COLUMNS.items():
            if name not in keep:
                self.set(name, row, fill)
        for label in list(self.uploads):
            self.set_upload(row, label, None)

    # -- cells -----------------------------------------------------------------------------------
    def get(self, name: str, row: int):
        """Column ``name`` at ``row`` as a Python scalar."""
        return self.data[name][row].item()

    def set(self, name: str, row: int, value) -> None:
        self.data[name][row] = value
        if name in FORECAST_INPUTS:
            self.forecast_version += 1
        if name in ORDER_INPUTS:
            self.order_version += 1

    def set_rows(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Column ``name`` at ``rows`` := ``values`` (vectorised ``set``)."""
        self.data[name][rows] = values
        if name in FORECAST_INPUTS:
            self.forecast_version += 1
        if name in ORDER_INPUTS:
            self.order_version += 1

    def column(self, name: str) -> np.ndarray:
        """Column ``name`` over the rows in use (the array itself, not a copy)."""
        return self.data[name][: self.size]

    def set_info(self, row: int, info: NodeInfo) -> None:
        self.infos[row] = info
        self.set("part", row, info.partition_id)
        self.set("avail", row, info.availability)
        self.set("examples", row, info.num_examples)
        self.set("recharge", row, info.recharge_per_round)

    def set_profile(self, row: int, device: DeviceProfile, link: LinkProfile) -> None:
        self.devices[row], self.links[row] = device, link
        for key, value in zip(DEVICE_KEYS, device.terms, strict=True):
            self.set(f"dev_{key}", row, value)
        self.set("link", row, self._link_index(link))

    def _link_index(self, link: LinkProfile) -> int:
        ix = self._link_ix.get(link.id)
        if ix is None:
            ix = self._link_ix[link.id] = len(self.link_profiles)
            self.link_profiles.append(link)
            self.link_table = link_table(self.link_profiles)
        return ix

    def upload(self, row: int, label: str) -> int | None:
        """Observed upload bytes of ``row`` with codec ``label`` (None: none observed)."""
        col = self.uploads.get(label)
        if col is None or col[row] == NO_UPLOAD:
            return None
        return int(col[row])

    def set_upload(self, row: int, label: str, nbytes: int | None) -> None:
        if nbytes is not None and nbytes < 0:
            raise ValueError(f"upload bytes must be >= 0, got {nbytes}")
        col = self.uploads.get(label)
        if col is None:
            if nbytes is None:
                return
            col = self.uploads[label] = np.full(self._cap, NO_UPLOAD, dtype=np.int64)
        col[row] = NO_UPLOAD if nbytes is None else nbytes
        self.forecast_version += 1

    def upload_labels(self, row: int) -> list[str]:
        return [label for label, col in self.uploads.items() if col[row] != NO_UPLOAD]


class Uploads(MutableMapping):
    """``NodeState.observed_upload_bytes``: upload bytes by codec label, read from and written
    to the node's cells of the upload columns."""

    __slots__ = ("_cols", "_row")

    def __init__(self, cols: FleetColumns, row: int) -> None:
        self._cols, self._row = cols, row

    def __getitem__(self, label: str) -> int:
        nbytes = self._cols.upload(self._row, label)
        if nbytes is None:
            raise KeyError(label)
        return nbytes

    def __setitem__(self, label: str, nbytes: int) -> None:
        self._cols.set_upload(self._row, label, int(nbytes))

    def __delitem__(self, label: str) -> None:
        if self._cols.upload(self._row, label) is None:
            raise KeyError(label)
        self._cols.set_upload(self._row, label, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._cols.upload_labels(self._row))

    def __len__(self) -> int:
        return len(self._cols.upload_labels(self._row))

    def __repr__(self) -> str:
        return repr(dict(self))


def _optional(name: str, flag: str, doc: str) -> property:
    """A field that may be unset (None): column ``name``, set where column ``flag`` is."""

    def fget(self: NodeState):
        return self._where(name, flag)

    def fset(self: NodeState, value) -> None:
        self._cols.set(flag, self._row, value is not None)
        self._cols.set(name, self._row, COLUMNS[name][1] if value is None else value)

    return property(fget, fset, doc=doc)


def _plain(name: str, doc: str) -> property:
    def fget(self: NodeState):
        return self._cols.get(name, self._row)

    def fset(self: NodeState, value) -> None:
        self._cols.set(name, self._row, value)

    return property(fget, fset, doc=doc)


class NodeState:
    """One node's state as the coordinator keeps it: a view of its row of the fleet's columns.
    Reading a field reads the column; assigning one writes it."""

    __slots__ = ("_cols", "_row")

    def __init__(self, cols: FleetColumns, row: int) -> None:
        self._cols, self._row = cols, row

    def _where(self, name: str, flag: str):
        """Column ``name`` of this node where its column ``flag`` is set, else None."""
        return self._cols.get(name, self._row) if self._cols.get(flag, self._row) else None

    @property
    def node_id(self) -> int:
        return self._cols.node_ids[self._row]

    @property
    def info(self) -> NodeInfo:
        return self._cols.infos[self._row]

    @property
    def device(self) -> DeviceProfile:
        return self._cols.devices[self._row]

    @property
    def link(self) -> LinkProfile:
        return self._cols.links[self._row]

    @property
    def known(self) -> bool:
        """False while lazy discovery has not heard from this node (its device and link are
        then the prior profile, used only for failed-call estimates)."""
        return self._cols.get("known", self._row)

    last_round = _plain("last_round", "Last round this node trained in (0: never).")
    last_tried = _plain(
        "last_tried", "Last round it was sent a train call, usable reply or not (0: never)."
    )
    participations = _plain("participations", "Train calls it returned a usable update for.")
    failures = _plain("failures", "Failed train-call rows of its download and train phases.")
    last_loss = _optional("loss", "has_loss", "Its last reported training loss.")
    observed_compute_j = _optional("obs_j", "has_obs", "Compute joules of its last train call.")

    @property
    def observed_compute_s(self) -> float | None:
        """Compute seconds of its last train call."""
        return self._where("obs_s", "has_obs_s")

    @observed_compute_s.setter
    def observed_compute_s(self, value: float | None) -> None:
        self._cols.set("has_obs_s", self._row, value is not None)
        self._cols.set("obs_s", self._row, value or 0.0)

    @property
    def observed_upload_bytes(self) -> Uploads:
        """Observed upload bytes of its train calls, by codec label."""
        return Uploads(self._cols, self._row)

    @observed_upload_bytes.setter
    def observed_upload_bytes(self, value: Mapping[str, int]) -> None:
        new = dict(value)  # (``value`` may be this very view)
        uploads = Uploads(self._cols, self._row)
        uploads.clear()
        uploads.update(new)

    @property
    def capacity_j(self) -> float | None:
        """Battery capacity in joules (None: mains powered)."""
        return self._where("capacity", "has_batt")

    @property
    def battery_j(self) -> float | None:
        """Battery charge in joules (None: mains powered)."""
        return self._where("battery", "has_batt")

    @battery_j.setter
    def battery_j(self, value: float) -> None:
        if not self._cols.get("has_batt", self._row):
            raise ValueError(f"node {self.node_id} is mains powered: it has no battery charge")
        self._cols.set("battery", self._row, value)

    @property
    def battery_fraction(self) -> float:
        if not self._cols.get("has_batt", self._row):
            return 1.0
        return self.battery_j / self.capacity_j

    def __repr__(self) -> str:
        profile = f"{self.device.id}/{self.link.id}"
        return f"NodeState(node {self.node_id}, {profile}, known={self.known})"
