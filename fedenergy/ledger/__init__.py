"""Persistence: the SQLite energy ledger."""

from fedenergy.ledger.store import (
    ADDED_COLUMNS,
    MAX_REASON,
    NETWORK_PHASES,
    SCHEMA,
    EnergyRow,
    Ledger,
    model_from_npz,
    model_to_npz,
    rows_from_report,
)

__all__ = [
    "ADDED_COLUMNS",
    "EnergyRow",
    "Ledger",
    "MAX_REASON",
    "NETWORK_PHASES",
    "SCHEMA",
    "model_from_npz",
    "model_to_npz",
    "rows_from_report",
]
