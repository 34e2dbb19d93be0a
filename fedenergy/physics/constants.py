"""Loading of the sourced constant tables shipped in ``fedenergy/data/`` (TOML).

Every numeric constant in a table has a same-named entry in its ``sources`` sub-table; loading
fails loudly if one is missing, so no unsourced number can enter the energy model.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Collection
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
    if not isinstance(sources, dict):
        raise ValueError(f"{kind} {key!r}: field 'sources' must be a table")
    for f in fields:
        if f not in entry:
            raise ValueError(f"{kind} {key!r}: missing field {f!r}")
        if not str(sources.get(f, "")).strip():
            raise ValueError(f"{kind} {key!r}: field {f!r} has no source")


def check_entry(
    kind: str, key: str, entry: object, numeric: tuple[str, ...], allowed: Collection[str]
) -> None:
    """The rules every catalog entry (a device, a link; packaged or the user's) obeys: a table
    whose keys are all ``allowed`` (its ``sources`` naming only ``numeric`` fields), every
    ``numeric`` field present, a finite number (not a string, not a boolean) and sourced.
    ValueError names the entry and the field; range rules are the profile builder's."""
    if not isinstance(entry, dict):
        raise ValueError(f"{kind} {key!r}: must be a table, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(allowed) - set(numeric) - {"sources"})
    if unknown:
        raise ValueError(
            f"{kind} {key!r}: unknown field {unknown[0]!r}; allowed: "
            f"{', '.join(sorted({*allowed, *numeric, 'sources'}))}"
        )
    check_sources(kind, key, entry, numeric)
    extra = sorted(set(entry["sources"]) - set(numeric))
    if extra:
        raise ValueError(
            f"{kind} {key!r}: field 'sources' names unknown field {extra[0]!r} (sources are "
            f"for the numbers: {', '.join(numeric)})"
        )
    for f in numeric:
        v = entry[f]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(
                f"{kind} {key!r}: field {f!r} must be a finite number, got {v!r} "
                f"({type(v).__name__})"
            )
