"""A ledger read back for analysis: per-call, per-round and per-node tables as pandas DataFrames.

``read_ledger(path, run_id=None)`` reads one run of a ledger file (by default its latest) and
returns :class:`LedgerTables`; pandas is an optional extra (``pip install 'fedenergy[pandas]'``).
Every figure is a sum of the ledger's energy rows, so a table's totals equal the SQL sums of the
``energy`` table (and ``fedenergy report``'s CSV export of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedenergy.ledger import NETWORK_PHASES, Ledger

if TYPE_CHECKING:
    import pandas as pd

PANDAS_HINT = "fedenergy's ledger tables need pandas: pip install 'fedenergy[pandas]'"
CALL_KEYS = ["round", "node_id", "call"]


def _pandas():
    try:
        import pandas
    except ImportError as err:
        raise ImportError(PANDAS_HINT) from err
    return pandas


@dataclass(frozen=True)
class LedgerTables:
    """One run of a ledger, as read: its energy rows (one per round, node, call and phase, with
    the node's partition, device, link and country), its rounds and its nodes."""

    run_id: str
    energy: tuple[dict, ...]
    round_rows: tuple[dict, ...]
    node_rows: tuple[dict, ...]

    def _energy(self) -> pd.DataFrame:
        df = _pandas().DataFrame(list(self.energy), columns=_ENERGY_COLUMNS)
        network = df["phase"].isin(NETWORK_PHASES)
        df["compute_j"] = df["joules"].where(~network, 0.0)
        df["network_j"] = df["joules"].where(network, 0.0)
        df["bytes_down"] = df["bytes"].where(df["phase"] == "download", 0)
        df["bytes_up"] = df["bytes"].where(df["phase"] == "upload", 0)
        df["wasted_j"] = df["joules"].where(df["status"] != "ok", 0.0)
        return df

    def calls(self) -> pd.DataFrame:
        """One row per call (round, node_id, call): joules (compute_j + network_j), bytes_down,
        bytes_up, seconds of compute, status (``failed`` if any of its phases was) and the
        node's partition_id, device and link."""
        df = self._energy()
        out = df.groupby(CALL_KEYS, as_index=False, sort=True).agg(
            joules=("joules", "sum"),
            compute_j=("compute_j", "sum"),
            network_j=("network_j", "sum"),
            bytes_down=("bytes_down", "sum"),
            bytes_up=("bytes_up", "sum"),
            seconds=("seconds", "sum"),
            status=("status", lambda s: "ok" if (s == "ok").all() else "failed"),
            partition_id=("partition_id", "first"),
            device=("device", "first"),
            link=("link", "first"),
        )
        return out

    def rounds(self) -> pd.DataFrame:
        """One row per committed round: accuracy, loss, selected, succeeded, failed and joules
        (the ledger's rounds table), with the round's compute_j, network_j, bytes and calls."""
        pd = _pandas()
        df = self._energy()
        sums = df.groupby("round").agg(
            compute_j=("compute_j", "sum"), network_j=("network_j", "sum"), bytes=("bytes", "sum")
        )
        sums["calls"] = df.drop_duplicates(CALL_KEYS).groupby("round").size()
        rounds = pd.DataFrame(list(self.round_rows), columns=_ROUND_COLUMNS).drop(
            columns=["run_id", "committed_at"]
        )
        out = rounds.join(sums, on="round")
        fill = {"compute_j": 0.0, "network_j": 0.0, "bytes": 0, "calls": 0}
        return out.fillna(fill).astype({"bytes": "int64", "calls": "int64"})

    def nodes(self) -> pd.DataFrame:
        """One row per node of the run: partition_id, device, link, country (as the ledger
        knows them), its calls, joules, compute_j, network_j, bytes and wasted_j (energy of
        calls whose result was not used)."""
        pd = _pandas()
        df = self._energy()
        sums = df.groupby("node_id").agg(
            joules=("joules", "sum"),
            compute_j=("compute_j", "sum"),
            network_j=("network_j", "sum"),
            bytes=("bytes", "sum"),
            wasted_j=("wasted_j", "sum"),
        )
        sums["calls"] = df.drop_duplicates(CALL_KEYS).groupby("node_id").size()
        nodes = pd.DataFrame(list(self.node_rows), columns=_NODE_COLUMNS)
        out = nodes.merge(sums.reset_index(), on="node_id", how="outer")
        fill = {"joules": 0.0, "compute_j": 0.0, "network_j": 0.0, "bytes": 0, "wasted_j": 0.0}
        out = out.fillna({**fill, "calls": 0}).astype({"bytes": "int64", "calls": "int64"})
        return out.sort_values("node_id", ignore_index=True)


_ENERGY_COLUMNS = [
    "run_id", "round", "node_id", "call", "phase", "joules", "bytes", "seconds", "status",
    "partition_id", "device", "link", "country",
]  # fmt: skip
_ROUND_COLUMNS = [
    "run_id", "round", "accuracy", "loss", "selected", "succeeded", "failed", "joules",
    "committed_at",
]  # fmt: skip
_NODE_COLUMNS = ["node_id", "partition_id", "device", "link", "country"]


def read_ledger(path: str | Path, run_id: str | None = None) -> LedgerTables:
    """Read run ``run_id`` (default: the latest started) of the ledger file at ``path``.
    ImportError naming the extra when pandas is missing; ValueError for an unknown run."""
    _pandas()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ledger at {path}")
    with Ledger(path) as ledger:
        runs = [r["run_id"] for r in ledger.runs()]
        if not runs:
            raise ValueError(f"{path} holds no run")
        run_id = runs[-1] if run_id is None else run_id
        if run_id not in runs:
            raise ValueError(f"{path} has no run {run_id!r}; its runs: {', '.join(runs)}")
        nodes = ledger.conn.execute(
            "SELECT node_id, partition_id, device, link, country FROM nodes WHERE run_id=? "
            "ORDER BY node_id",
            (run_id,),
        ).fetchall()
        return LedgerTables(
            run_id,
            tuple(ledger.energy_rows(run_id)),
            tuple(ledger.rounds(run_id)),
            tuple(dict(zip(_NODE_COLUMNS, n, strict=True)) for n in nodes),
        )
