"""Loading of the sourced constant tables shipped in ``fedenergy/data/`` (TOML).

Every numeric constant in a table has a same-named entry in its ``sources`` sub-table; loading
fails loudly if one is missing, so no unsourced number can enter the energy model.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

Num = float | np.ndarray  # a scalar, or one value per node (the physics rules take either)


@cache
def load_table(name: str) -> dict[str, Any]:
    """Parse ``fedenergy/data/<name>.toml`` once per process (the files are read-only data)."""
    text = resources.files("fedenergy.data").joinpath(f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def check_sources(kind: str, key: str, entry: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Raise if any of ``fields`` is missing from ``entry`` or from its ``sources`` table."""
    sources = entry.get("sources", {})
    for f in fields:
        if f not in entry:
            raise ValueError(f"{kind} {key!r}: missing field {f!r}")
        if not str(sources.get(f, "")).strip():
            raise ValueError(f"{kind} {key!r}: field {f!r} has no source")
