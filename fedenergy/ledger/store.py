"""The persistent energy ledger (SQLite, standard library).

Tables (documented in the README):
  runs        one row per run: config, fleet, seed, versions, status, and the reason of a failed
              run (``reason``; NULL for a completed one)
  nodes       one row per (run, node): partition, device, link
  energy      one row per (run, round, node, call, phase): joules, bytes, seconds, status;
              ``call`` is the message kind (query, train, evaluate) the phase belongs to
  components  the provenance-tagged parts of each energy row
              (domain, joules, measured/modeled/unmetered, source)
  rounds      one row per (run, round): accuracy, loss, participants, joules; written last, in the
              same transaction as the round's energy rows, so a committed round is complete
  rejections  one row per rejected reply (run, round, node, call, reason): a report or an update
              payload that failed validation (docs/robustness.md)
  flags       one row per outlier of an ACCEPTED report (run, round, node, call, flag)
  resumes     one row per resume of a run: when, and from which committed round
A round (its energy rows, rejections, flags and rounds row) is committed in one transaction; a
crash, SIGKILL included, loses at most the round in flight.

Unmetered energy (a node that cannot say what its compute spent, e.g. a stock Flower app without
the energy mod: docs/robustness.md) is stored as NULL joules, never as 0: its ``components`` row
has provenance ``unmetered`` and ``joules`` NULL, and an ``energy`` row made only of unmetered
components has ``joules`` NULL too. SQL's SUM skips NULLs, so every sum over the ledger is the
metered total, and ``joules IS NULL`` finds what is not known. ``rounds.joules`` is the round's
metered total.

The global models are not in the ledger: they are checkpoints apart from it
(:mod:`fedenergy.ledger.checkpoints`). Ledgers written before that kept them in a ``models``
table; :meth:`Ledger.legacy_model` still reads it, so such a run can be resumed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedenergy.ledger.checkpoints import model_from_npz
from fedenergy.report import UNMETERED, Component, EnergyReport

MAX_REASON = 1000  # characters of a rejection reason or flag kept in the ledger

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL,
  seed INTEGER, config_json TEXT NOT NULL, fleet_json TEXT NOT NULL, versions_json TEXT NOT NULL,
  reason TEXT);
CREATE TABLE IF NOT EXISTS nodes (
  run_id TEXT NOT NULL, node_id TEXT NOT NULL, partition_id INTEGER, device TEXT, link TEXT,
  country TEXT, PRIMARY KEY (run_id, node_id));
CREATE TABLE IF NOT EXISTS energy (
  run_id TEXT NOT NULL, round INTEGER NOT NULL, node_id TEXT NOT NULL, call TEXT NOT NULL,
  phase TEXT NOT NULL, joules REAL, bytes INTEGER NOT NULL, seconds REAL NOT NULL,
  status TEXT NOT NULL, PRIMARY KEY (run_id, round, node_id, call, phase));
CREATE TABLE IF NOT EXISTS components (
  run_id TEXT NOT NULL, round INTEGER NOT NULL, node_id TEXT NOT NULL, call TEXT NOT NULL,
  phase TEXT NOT NULL, domain TEXT NOT NULL, joules REAL, provenance TEXT NOT NULL,
  source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
  run_id TEXT NOT NULL, round INTEGER NOT NULL, accuracy REAL, loss REAL,
  selected INTEGER NOT NULL, succeeded INTEGER NOT NULL, failed INTEGER NOT NULL,
  joules REAL NOT NULL, committed_at REAL NOT NULL, PRIMARY KEY (run_id, round));
CREATE TABLE IF NOT EXISTS rejections (
  run_id TEXT NOT NULL, round INTEGER NOT NULL, node_id TEXT NOT NULL, call TEXT NOT NULL,
  reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS flags (
  run_id TEXT NOT NULL, round INTEGER NOT NULL, node_id TEXT NOT NULL, call TEXT NOT NULL,
  flag TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resumes (
  run_id TEXT NOT NULL, resumed_at REAL NOT NULL, from_round INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS components_key ON components (run_id, round, node_id, call, phase);
"""

# Columns added after the first release of the schema: (table, column, declaration).
ADDED_COLUMNS = (("nodes", "country", "TEXT"), ("runs", "reason", "TEXT"))
# Columns that were NOT NULL in the first release and may now be NULL (unmetered energy).
NULLABLE_SINCE = (("energy", "joules"), ("components", "joules"))

NETWORK_PHASES = ("download", "upload")


@dataclass(frozen=True)
class EnergyRow:
    """One (round, node, call, phase) entry with its components."""

    node_id: str
    call: str  # "query" | "train" | "evaluate"
    phase: str
    joules: float | None  # the metered joules; None when every component is unmetered
    bytes: int
    seconds: float
    status: str  # "ok" | "failed" (energy spent by a call whose result was not used)
    components: tuple  # of report.Component


def rows_from_report(
    node_id: int | str, report: EnergyReport, status: str = "ok"
) -> list[EnergyRow]:
    """Group a report's components into one row per phase."""
    rows = []
    for phase in dict.fromkeys(c.phase for c in report.components):
        comps = tuple(c for c in report.components if c.phase == phase)
        nbytes = {"download": report.bytes_down, "upload": report.bytes_up}.get(phase, 0)
        secs = {"startup": report.startup_s}.get(phase, 0.0)
        if phase in ("train", "evaluate", "query"):
            secs = report.compute_s
        rows.append(
            EnergyRow(
                str(node_id),
                report.kind,
                phase,
                metered_joules(comps),
                nbytes,
                secs,
                status,
                comps,
            )
        )
    return rows


def metered_joules(components: Iterable[Component]) -> float | None:
    """The joules of ``components`` that are figures (measured or modeled); None when every one
    is unmetered (the energy is not known, which is not 0 J)."""
    comps = list(components)
    metered = [c.joules for c in comps if c.provenance != UNMETERED]
    return sum(metered) if metered or not comps else None


def rows_joules(rows: Iterable[EnergyRow]) -> float:
    """The metered joules of ``rows`` (rows without any are skipped, not counted as 0 J)."""
    return sum(r.joules for r in rows if r.joules is not None)


class Ledger:
    """Append-only writer and reader of one SQLite ledger file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path))
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)
        self._migrate()
        self.conn.commit()

    def _migrate(self) -> None:
        """Bring a ledger written by an older fedenergy up to this schema: added columns, and
        the joules columns that may now be NULL (a table rebuilt once, in one transaction)."""
        for table, column, decl in ADDED_COLUMNS:
            have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        for table, column in NULLABLE_SINCE:
            info = self.conn.execute(f"PRAGMA table_info({table})").fetchall()
            if any(row[1] == column and row[3] for row in info):
                self._rebuild(table)

    def _rebuild(self, table: str) -> None:
        """Recreate ``table`` with this schema's declaration, keeping its rows (SQLite cannot
        drop a NOT NULL constraint in place); its columns are those of the first release."""
        create = next(
            stmt for stmt in SCHEMA.split(";") if f"CREATE TABLE IF NOT EXISTS {table} (" in stmt
        )
        self.conn.commit()
        self.conn.execute("BEGIN")
        try:
            self.conn.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
            self.conn.execute(create)
            self.conn.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
            self.conn.execute(f"DROP TABLE {table}_old")  # its indexes go with it
            for stmt in SCHEMA.split(";"):
                if stmt.strip().startswith("CREATE INDEX") and f" ON {table} (" in stmt:
                    self.conn.execute(stmt)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------
    def start_run(self, run_id: str, config: dict, fleet: dict, seed: int, versions: dict) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO runs (run_id, started_at, finished_at, status, seed, config_json, "
                "fleet_json, versions_json) VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    time.time(),
                    None,
                    "running",
                    seed,
                    json.dumps(config, sort_keys=True),
                    json.dumps(fleet, sort_keys=True),
                    json.dumps(versions, sort_keys=True),
                ),
            )

    def add_nodes(self, run_id: str, nodes: Iterable[tuple]) -> None:
        """Record (node_id, partition_id, device, link[, country]) for nodes of this run."""
        rows = [(run_id, str(n[0]), n[1], n[2], n[3], n[4] if len(n) > 4 else None) for n in nodes]
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO nodes VALUES (?,?,?,?,?,?)", rows)

    def commit_round(
        self,
        run_id: str,
        server_round: int,
        rows: list[EnergyRow],
        accuracy: float | None,
        loss: float | None,
        selected: int,
        succeeded: int,
        failed: int,
        rejections: Iterable[tuple] = (),
        flags: Iterable[tuple] = (),
    ) -> None:
        """Write a round's rows, its rejections ``(node_id, call, reason)``, its flags
        ``(node_id, call, flag)`` and its summary in ONE transaction."""
        with self.conn:
            self.conn.executemany(
                "INSERT INTO rejections VALUES (?,?,?,?,?)",
                [(run_id, server_round, str(n), c, str(t)[:MAX_REASON]) for n, c, t in rejections],
            )
            self.conn.executemany(
                "INSERT INTO flags VALUES (?,?,?,?,?)",
                [(run_id, server_round, str(n), c, str(t)[:MAX_REASON]) for n, c, t in flags],
            )
            for r in rows:
                self.conn.execute(
                    "INSERT OR REPLACE INTO energy VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        run_id,
                        server_round,
                        r.node_id,
                        r.call,
                        r.phase,
                        r.joules,
                        r.bytes,
                        r.seconds,
                        r.status,
                    ),
                )
                self.conn.executemany(
                    "INSERT INTO components VALUES (?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            run_id,
                            server_round,
                            r.node_id,
                            r.call,
                            r.phase,
                            c.domain,
                            None if c.provenance == UNMETERED else c.joules,
                            c.provenance,
                            c.source,
                        )
                        for c in r.components
                    ],
                )
            self.conn.execute(
                "INSERT OR REPLACE INTO rounds VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    server_round,
                    accuracy,
                    loss,
                    selected,
                    succeeded,
                    failed,
                    rows_joules(rows),
                    time.time(),
                ),
            )

    def reopen_run(self, run_id: str, from_round: int) -> None:
        """Mark a run running again for a resume from ``from_round`` (recorded in resumes)."""
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET finished_at=NULL, status='running', reason=NULL WHERE run_id=?",
                (run_id,),
            )
            self.conn.execute(
                "INSERT INTO resumes VALUES (?,?,?)", (run_id, time.time(), from_round)
            )

    def finish_run(self, run_id: str, status: str = "completed", reason: str | None = None) -> None:
        """Mark the run ``status`` ("completed" | "failed"), with the ``reason`` of a failure."""
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET finished_at=?, status=?, reason=? WHERE run_id=?",
                (time.time(), status, None if reason is None else reason[:MAX_REASON], run_id),
            )

    # -- reading -------------------------------------------------------------------------------
    def runs(self) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM runs ORDER BY started_at")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur]

    def rounds(self, run_id: str) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM rounds WHERE run_id=? ORDER BY round", (run_id,))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur]

    def energy_rows(self, run_id: str) -> list[dict]:
        cur = self.conn.execute(
            "SELECT e.*, n.partition_id, n.device, n.link, n.country FROM energy e "
            "LEFT JOIN nodes n ON e.run_id=n.run_id AND e.node_id=n.node_id WHERE e.run_id=? "
            "ORDER BY e.round, e.node_id, e.call, e.phase",
            (run_id,),
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur]

    def components(self, run_id: str) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM components WHERE run_id=?", (run_id,))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur]

    def rejections(self, run_id: str) -> list[dict]:
        cur = self.conn.execute(
            "SELECT * FROM rejections WHERE run_id=? ORDER BY round, rowid", (run_id,)
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur]

    def flags(self, run_id: str) -> list[dict]:
        cur = self.conn.execute(
            "SELECT * FROM flags WHERE run_id=? ORDER BY round, rowid", (run_id,)
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur]

    def resumes(self, run_id: str) -> list[dict]:
        cur = self.conn.execute(
            "SELECT * FROM resumes WHERE run_id=? ORDER BY resumed_at", (run_id,)
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur]

    def last_round(self, run_id: str) -> int | None:
        """The last committed round of ``run_id`` (None: not even round 0)."""
        row = self.conn.execute(
            "SELECT MAX(round) FROM rounds WHERE run_id=?", (run_id,)
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def legacy_model(self, run_id: str, server_round: int) -> dict[str, np.ndarray] | None:
        """The global model a ledger written before checkpoints were kept apart committed with
        ``server_round`` (its ``models`` table); None if there is no such table or row."""
        has = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='models'"
        ).fetchone()
        if has is None:
            return None
        row = self.conn.execute(
            "SELECT npz FROM models WHERE run_id=? AND round=?", (run_id, server_round)
        ).fetchone()
        return None if row is None else model_from_npz(row[0])

    def totals(self, run_id: str) -> dict[str, float]:
        """Total metered joules split compute (train/evaluate/query/startup) and network (a phase
        with no metered joules at all is left out of ``by_phase``)."""
        q = "SELECT phase, SUM(joules) FROM energy WHERE run_id=? GROUP BY phase"
        by_phase = {p: float(j) for p, j in self.conn.execute(q, (run_id,)) if j is not None}
        network = sum(j for p, j in by_phase.items() if p in NETWORK_PHASES)
        compute = sum(j for p, j in by_phase.items() if p not in NETWORK_PHASES)
        return {
            "total_j": compute + network,
            "compute_j": compute,
            "network_j": network,
            "by_phase": by_phase,
        }
