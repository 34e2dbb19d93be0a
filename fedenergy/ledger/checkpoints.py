"""Model checkpoints, kept apart from the energy ledger: one ``.npz`` file per round.

A run's checkpoints live in ``OUT/checkpoints/<run_id>/round-<r>.npz`` (the global model after
round ``r``: the state dict's arrays, dtypes kept). The coordinator writes round ``r``'s
checkpoint BEFORE the ledger commits round ``r``, each file atomically (a temporary file,
fsync, ``os.replace``), so the ledger's last committed round always has its checkpoint on disk,
whatever moment a crash (SIGKILL included) strikes. A checkpoint newer than the ledger's last
committed round belongs to a round that never committed: a resume ignores and removes it.

Retention: after each commit, only the checkpoints of the last ``keep_last`` committed rounds
stay (0 keeps all); a checkpoint of a round not committed yet is never removed by retention.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fedenergy.ledger.store import Ledger

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^round-(\d+)\.npz$")
_TMP_SUFFIX = ".tmp"
# the run's own state kept with a round's model (e.g. the radio clock), under this name prefix
STATE_PREFIX = "fe:state:"


def model_to_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """The model's arrays (dtypes kept, names in order) as .npz bytes."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def model_from_npz(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays of .npz bytes written by :func:`model_to_npz`, in their order."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class CheckpointStore:
    """The checkpoints of one run, in one directory, with last-N retention."""

    def __init__(self, directory: str | Path, keep_last: int = 2) -> None:
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
            raise ValueError(f"keep_last must be a non-negative integer, got {keep_last!r}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    @classmethod
    def for_run(cls, out: str | Path, run_id: str, keep_last: int = 2) -> CheckpointStore:
        """The store of run ``run_id`` whose ledger is in directory ``out``."""
        return cls(Path(out) / CHECKPOINT_DIR / run_id, keep_last)

    def path(self, server_round: int) -> Path:
        return self.directory / f"round-{server_round}.npz"

    def rounds(self) -> list[int]:
        """The rounds that have a checkpoint, ascending."""
        if not self.directory.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(
        self,
        server_round: int,
        arrays: dict[str, np.ndarray],
        state: dict[str, np.ndarray] | None = None,
    ) -> Path:
        """Write the global model after ``server_round`` (and the run's ``state`` arrays beside
        it), atomically and durably (a reader sees the old file or the whole new one, never
        part of it)."""
        arrays = {**arrays, **{STATE_PREFIX + k: v for k, v in (state or {}).items()}}
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path(server_round)
        tmp = final.with_name(f".{final.name}.{os.getpid()}{_TMP_SUFFIX}")
        try:
            with open(tmp, "wb") as f:
                f.write(model_to_npz(arrays))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        return final

    def _read(self, server_round: int) -> dict[str, np.ndarray] | None:
        path = self.path(server_round)
        return model_from_npz(path.read_bytes()) if path.is_file() else None

    def load(self, server_round: int) -> dict[str, np.ndarray] | None:
        """The model of ``server_round``'s checkpoint (None if there is none)."""
        arrays = self._read(server_round)
        if arrays is None:
            return None
        return {k: v for k, v in arrays.items() if not k.startswith(STATE_PREFIX)}

    def load_state(self, server_round: int) -> dict[str, np.ndarray]:
        """The run's state arrays saved with ``server_round``'s model (empty: none)."""
        arrays = self._read(server_round) or {}
        n = len(STATE_PREFIX)
        return {k[n:]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}

    def retain(self, committed_round: int) -> list[int]:
        """Remove the checkpoints of committed rounds (<= ``committed_round``) older than the
        last ``keep_last`` of them; return the rounds removed. Newer (uncommitted) ones stay."""
        if self.keep_last == 0:
            return []
        committed = [r for r in self.rounds() if r <= committed_round]
        drop = committed[: max(0, len(committed) - self.keep_last)]
        for r in drop:
            self.path(r).unlink(missing_ok=True)
        return drop

    def discard_after(self, committed_round: int | None) -> list[int]:
        """Remove the checkpoints of rounds after ``committed_round`` (all, if None) — rounds
        whose ledger commit never happened — and any temporary file left by a crash."""
        drop = [r for r in self.rounds() if committed_round is None or r > committed_round]
        for r in drop:
            self.path(r).unlink(missing_ok=True)
        if self.directory.is_dir():
            for p in self.directory.glob(f".round-*{_TMP_SUFFIX}"):
                p.unlink(missing_ok=True)
        return drop


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories can't open)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def committed_model(
    ledger: Ledger, store: CheckpointStore, run_id: str, server_round: int
) -> dict[str, np.ndarray] | None:
    """The global model after committed round ``server_round`` of ``run_id``: its checkpoint,
    or, in a ledger written before checkpoints were kept apart, its ``models`` row; None if
    neither holds it."""
    arrays = store.load(server_round)
    return arrays if arrays is not None else ledger.legacy_model(run_id, server_round)
