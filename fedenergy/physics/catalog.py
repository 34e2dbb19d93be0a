"""Catalogs: the device and link profiles a run knows (and where its fleets and tasks are), from
the packaged tables (``fedenergy/data/``) and the user's own files, checked by the same rules.

A **catalog path** is a TOML file or a directory. A directory contributes its ``*.toml`` files
(sorted by name) and the fleet files of its ``fleets/`` folder. A TOML file is either

* a **catalog file**: any of the tables ``[devices.ID]``, ``[links.ID]`` (the fields of the
  packaged ``devices.toml`` / ``links.toml``, each number with its ``sources`` entry),
  ``[fleets.NAME]`` (a fleet: ``description`` and ``[[fleets.NAME.group]]``, as a fleet file)
  and ``[tasks]`` (``NAME = "module:attribute"``), plus an optional ``schema = 1``; or
* a **fleet file** (top-level ``[[group]]``, as ``simulations/fleets/*.toml``), named by its
  ``name`` key, else its file name.

Rules, the same for packaged and user entries (the profile builders ``_build`` of
:mod:`.devices` and :mod:`.network`, :func:`fedenergy.physics.constants.check_entry`): every
field is known (the allowed keys are the profile's own fields, so a field added to a profile
is allowed at once), every number is a finite number (not a string), in range and has a source.
An id defined twice among the user's files is refused; an id that is also a packaged one is
refused unless the entry says ``override = true`` (it then replaces the packaged entry for the
runs given this catalog, and its provenance names the user's file). Every error names the file,
the entry and the field (:class:`CatalogError`).

Fleets and tasks are kept here as entries (where they are and what they say): a fleet's groups
are checked against the catalog's devices and links by :func:`fedenergy.sim.fleet.check_fleets`,
a task is imported by :func:`fedenergy.sim.tasks.get_task`. Pure: no Flower, no global state
except the packaged catalog, built once (read-only), and :func:`cached_catalog`'s memo keyed by
the files' sizes and modification times.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from types import MappingProxyType

from fedenergy.physics import devices as _devices
from fedenergy.physics import network as _network
from fedenergy.physics.devices import DeviceProfile
from fedenergy.physics.network import LinkProfile

TABLES = ("devices", "links", "fleets", "tasks")
FILE_KEYS = {"schema", *TABLES}
SCHEMA = 1
OVERRIDE = "override"  # an entry key: this user entry replaces the packaged one of that id
FLEETS_DIR = "fleets"


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class FleetEntry:
    """A fleet of a user catalog: its table as written (checked by ``sim.fleet``) and where."""

    name: str
    data: Mapping[str, object]
    source: str  # the file (and table) it came from


@dataclass(frozen=True)
class TaskEntry:
    """A user task: ``module:attribute`` and the directory of its catalog file (importable)."""

    name: str
    ref: str
    directory: str
    source: str


def _frozen(d: dict) -> Mapping:
    return MappingProxyType(dict(d))


@dataclass(frozen=True, eq=False)
class Catalog:
    """The profiles a run knows, by id, and its user fleets and tasks (read-only mappings).

    ``paths``: the user's catalog paths it was built from (absolute; empty for the packaged
    catalog), how the catalog travels to the nodes and into the ledger's run record."""

    devices: Mapping[str, DeviceProfile]
    links: Mapping[str, LinkProfile]
    fleets: Mapping[str, FleetEntry] = field(default_factory=lambda: _frozen({}))
    tasks: Mapping[str, TaskEntry] = field(default_factory=lambda: _frozen({}))
    paths: tuple[str, ...] = ()

    def device(self, device_id: str) -> DeviceProfile:
        """The device profile ``device_id``; ValueError listing the known ids."""
        try:
            return self.devices[device_id]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self.devices))
            raise ValueError(f"unknown device {device_id!r}; known devices: {known}") from None

    def link(self, link_id: str) -> LinkProfile:
        """The link profile ``link_id``; ValueError listing the known ids."""
        try:
            return self.links[link_id]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self.links))
            raise ValueError(f"unknown link {link_id!r}; known links: {known}") from None

    @property
    def is_packaged(self) -> bool:
        """True when no user file is in it."""
        return not self.paths


@cache
def packaged_catalog() -> Catalog:
    """The shipped devices and links (built and validated once per process; read-only)."""
    return Catalog(_frozen(_devices.device_catalog()), _frozen(_network.link_catalog()))


def split_paths(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Catalog paths from a setting: a sequence of paths, or one string of paths separated by
    ``os.pathsep`` (``:``, as in PATH) — the form a run config or a node config carries."""
    if value is None:
        return ()
    if not isinstance(value, (str, list, tuple)):
        raise ValueError(f"catalog paths must be strings, got {value!r}")
    items = value.split(os.pathsep) if isinstance(value, str) else list(value)
    if not all(isinstance(p, str) for p in items):
        raise ValueError(f"catalog paths must be strings, got {value!r}")
    return tuple(p.strip() for p in items if p.strip())


def catalog_files(paths: Iterable[str | Path]) -> list[Path]:
    """The TOML files the catalog ``paths`` stand for, in load order; CatalogError names a path
    that does not exist or is not a TOML file or directory."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.glob("*.toml") if f.is_file())
            out += sorted(f for f in (p / FLEETS_DIR).glob("*.toml") if f.is_file())
        elif p.is_file() and p.suffix == ".toml":
            out.append(p)
        elif p.exists():
            raise CatalogError(f"catalog {p}: not a .toml file or a directory")
        else:
            raise CatalogError(f"catalog {p}: no such file or directory")
    return out


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CatalogError(f"{path}: not valid TOML: {err}") from None


class _Merge:
    """The user entries of one kind, merged over the packaged ones by the clash rules."""

    def __init__(self, kind: str, packaged: Mapping) -> None:
        self.kind, self.packaged = kind, packaged
        self.items: dict = dict(packaged)
        self.user: dict[str, str] = {}  # id -> the file that defined it

    def add(self, key: str, value: object, where: str, override: bool) -> None:
        if key in self.user:
            raise CatalogError(
                f"{where}: {self.kind} {key!r} is already defined in {self.user[key]}"
            )
        if key in self.packaged and not override:
            raise CatalogError(
                f"{where}: {self.kind} {key!r} clashes with the packaged {self.kind} of that id; "
                f"choose another id, or set '{OVERRIDE} = true' in the entry to replace it"
            )
        self.items[key] = value
        self.user[key] = where


def _override(kind: str, key: str, entry: object, where: Path) -> bool:
    flag = entry.get(OVERRIDE, False) if isinstance(entry, dict) else False
    if not isinstance(flag, bool):
        raise CatalogError(
            f"{where}: {kind} {key!r}: field {OVERRIDE!r} must be true or false, got {flag!r}"
        )
    return flag


def _table(data: dict, name: str, path: Path) -> dict:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise CatalogError(f"{path}: [{name}] must be a table of entries")
    return table


def _task_ref(key: str, ref: object, path: Path) -> str:
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise CatalogError(
            f"{path}: task {key!r}: must be 'module:attribute' (a string), got {ref!r}"
        )
    return ref


def load_catalog(paths: Iterable[str | Path] = ()) -> Catalog:
    """The packaged catalog merged with the user's files at ``paths`` (files or directories,
    see the module docstring); CatalogError names the file, entry and field of the first
    problem. With no paths, the packaged catalog itself."""
    absolute = tuple(str(Path(p).expanduser().resolve()) for p in paths)
    if not absolute:
        return packaged_catalog()
    base = packaged_catalog()
    devices, links = _Merge("device", base.devices), _Merge("link", base.links)
    fleets, tasks = _Merge("fleet", {}), _Merge("task", {})
    for path in catalog_files(absolute):
        data = _read(path)
        if "group" in data:  # a fleet file
            name = data.get("name", path.stem)
            if not isinstance(name, str) or not name.strip():
                raise CatalogError(f"{path}: field 'name' must be a fleet name, got {name!r}")
            fleets.add(name, FleetEntry(name, _frozen(data), str(path)), str(path), False)
            continue
        unknown = sorted(set(data) - FILE_KEYS)
        if unknown:
            raise CatalogError(
                f"{path}: unknown table or key {unknown[0]!r}; a catalog file has "
                f"{', '.join(f'[{t}]' for t in TABLES)} (a fleet file has [[group]])"
            )
        if data.get("schema", SCHEMA) != SCHEMA:
            raise CatalogError(f"{path}: schema {data['schema']!r} (this fedenergy reads {SCHEMA})")
        if not any(t in data for t in TABLES):
            raise CatalogError(f"{path}: no [devices], [links], [fleets] or [tasks] table")
        for kind, merge, build in (
            ("devices", devices, _devices._build),
            ("links", links, _network._build),
        ):
            for key, entry in _table(data, kind, path).items():
                flag = _override(merge.kind, key, entry, path)
                try:
                    prof = build(key, entry, origin=path.name, extra=frozenset({OVERRIDE}))
                except ValueError as err:
                    raise CatalogError(f"{path}: {err}") from None
                merge.add(key, prof, str(path), flag)
        for key, entry in _table(data, "fleets", path).items():
            if not isinstance(entry, dict):
                raise CatalogError(f"{path}: fleet {key!r}: must be a table")
            where = f"{path} [fleets.{key}]"
            fleets.add(key, FleetEntry(key, _frozen(entry), where), str(path), False)
        for key, ref in _table(data, "tasks", path).items():
            entry = TaskEntry(key, _task_ref(key, ref, path), str(path.parent), str(path))
            tasks.add(key, entry, str(path), False)
    return Catalog(
        _frozen(devices.items),
        _frozen(links.items),
        _frozen(fleets.items),
        _frozen(tasks.items),
        absolute,
    )


def _signature(paths: tuple[str, ...]) -> tuple:
    """What the files of ``paths`` are now (path, size, modification time): a changed file
    changes it."""
    try:
        files = catalog_files(paths)
    except CatalogError:
        return (paths, None)
    sig = []
    for f in files:
        st = f.stat()
        sig.append((str(f), st.st_size, st.st_mtime_ns))
    return (paths, tuple(sig))


@lru_cache(maxsize=16)
def _cached(signature: tuple) -> Catalog:
    return load_catalog(signature[0])


def cached_catalog(paths: str | Sequence[str] | None) -> Catalog:
    """:func:`load_catalog` of ``paths`` (as :func:`split_paths` reads them), built once per
    state of its files: what a node calls per message. The packaged catalog when empty."""
    absolute = tuple(str(Path(p).expanduser().resolve()) for p in split_paths(paths))
    if not absolute:
        return packaged_catalog()
    return _cached(_signature(absolute))
