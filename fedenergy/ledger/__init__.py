"""Persistence: the SQLite energy ledger and, apart from it, the model checkpoints."""

from fedenergy.ledger.checkpoints import (
    CHECKPOINT_DIR,
    CheckpointStore,
    committed_model,
    model_from_npz,
    model_to_npz,
)
from fedenergy.ledger.store import (
    ADDED_COLUMNS,
    MAX_REASON,
    NETWORK_PHASES,
    NULLABLE_SINCE,
    SCHEMA,
    EnergyRow,
    Ledger,
    metered_joules,
    rows_from_report,
    rows_joules,
)

__all__ = [
    "ADDED_COLUMNS",
    "CHECKPOINT_DIR",
    "CheckpointStore",
    "EnergyRow",
    "Ledger",
    "MAX_REASON",
    "NETWORK_PHASES",
    "NULLABLE_SINCE",
    "SCHEMA",
    "committed_model",
    "metered_joules",
    "model_from_npz",
    "model_to_npz",
    "rows_from_report",
    "rows_joules",
]
