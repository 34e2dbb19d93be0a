"""fedenergy: energy-accounted federated learning on Flower.

The public API (docs/api.md):

* client: ``energy_mod`` (``ClientApp(mods=[energy_mod])``), ``report_work`` (a handler states
  its FLOPs), ``received_model`` and ``compress_reply`` (a train handler under compression);
* server: ``EnergyAware`` (any Flower strategy, its ``start`` with energy accounting and,
  if asked, energy-aware selection and compression);
* analysis: ``read_ledger`` (a run's per-call, per-round and per-node DataFrames).

The names are imported on first use, so ``import fedenergy`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "energy_mod": "fedenergy.client.mod",
    "report_work": "fedenergy.client.work",
    "received_model": "fedenergy.client.compression",
    "compress_reply": "fedenergy.client.compression",
    "EnergyAware": "fedenergy.server.wrapper",
    "read_ledger": "fedenergy.analysis.tables",
    "LedgerTables": "fedenergy.analysis.tables",
}
__all__ = [
    "EnergyAware",
    "LedgerTables",
    "__version__",
    "compress_reply",
    "energy_mod",
    "read_ledger",
    "received_model",
    "report_work",
]

if TYPE_CHECKING:
    from fedenergy.analysis.tables import LedgerTables, read_ledger
    from fedenergy.client.compression import compress_reply, received_model
    from fedenergy.client.mod import energy_mod
    from fedenergy.client.work import report_work
    from fedenergy.server.wrapper import EnergyAware


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fedenergy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
