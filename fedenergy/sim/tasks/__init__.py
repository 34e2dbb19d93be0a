"""Embedded or generated tasks (no downloads): ``digits`` (default) and ``synthetic``; the
workloads of docs/workloads.md, ``cnn``, ``resnet`` and ``chars``; and a user's own, named by
import path.

A user task is any object (a module, an instance) with the four functions of a built-in task
module — ``make_model()``, ``client_data(partition_id, cfg)``, ``server_test_data(cfg)``,
``pooled_train_data(cfg)`` — or a zero-argument callable returning one. It is named by
``"module:attribute"``, either directly (``--task mypkg.tasks:blobs``; the module must be
importable where the server and the nodes run) or under a name in a user catalog's ``[tasks]``
table (``blobs = "mytasks:TASK"``; the catalog file's directory is then importable too,
appended to ``sys.path`` when the task is first looked up).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING

from fedenergy.sim.tasks import chars, cnn, digits, resnet, synthetic
from fedenergy.sim.tasks.base import DataConfig, Split, evaluate, train_epochs

if TYPE_CHECKING:
    from fedenergy.physics.catalog import Catalog

__all__ = [
    "TASKS",
    "DataConfig",
    "Split",
    "Task",
    "check_tasks",
    "evaluate",
    "get_task",
    "import_task",
    "train_epochs",
]


@dataclass(frozen=True)
class Task:
    """A task: its name and the module that builds its model and data."""

    name: str
    module: ModuleType  # (a user task: any object with the four functions)

    def make_model(self):
        return self.module.make_model()

    def client_data(self, partition_id: int, cfg: DataConfig) -> tuple[Split, Split]:
        return self.module.client_data(partition_id, cfg)

    def server_test_data(self, cfg: DataConfig) -> Split:
        return self.module.server_test_data(cfg)

    def pooled_train_data(self, cfg: DataConfig) -> Split:
        return self.module.pooled_train_data(cfg)


TASKS = {m.NAME: Task(m.NAME, m) for m in (digits, synthetic, cnn, resnet, chars)}


FUNCTIONS = ("make_model", "client_data", "server_test_data", "pooled_train_data")


@lru_cache(maxsize=32)
def import_task(name: str, ref: str, directory: str | None = None) -> Task:
    """The user task ``ref`` (``"module:attribute"``) as a Task named ``name``; ``directory``
    is appended to ``sys.path`` first when not on it. ValueError says what is wrong."""
    if ref.count(":") != 1 or not all(ref.split(":")):
        raise ValueError(f"task {ref!r}: expected 'module:attribute'")
    module_name, attr = ref.split(":")
    if directory and directory not in sys.path:
        sys.path.append(directory)
        importlib.invalidate_caches()
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as err:  # any failure of the user's module to import
        raise ValueError(f"task {ref!r} does not import: {type(err).__name__}: {err}") from None
    if not all(callable(getattr(obj, f, None)) for f in FUNCTIONS) and callable(obj):
        obj = obj()  # a factory
    missing = [f for f in FUNCTIONS if not callable(getattr(obj, f, None))]
    if missing:
        raise ValueError(
            f"task {ref!r} has no {', '.join(missing)}: a task provides {', '.join(FUNCTIONS)}"
        )
    return Task(name, obj)


def task_names(catalog: Catalog | None = None) -> list[str]:
    """The built-in task names and ``catalog``'s user tasks."""
    return sorted({*TASKS, *(catalog.tasks if catalog is not None else ())})


def get_task(name: str, catalog: Catalog | None = None) -> Task:
    """Look a task up: a built-in name, a name of ``catalog``'s ``[tasks]``, or an import path
    ``"module:attribute"``; a clear error names the known ones."""
    if name in TASKS:
        return TASKS[name]
    if catalog is not None and name in catalog.tasks:
        entry = catalog.tasks[name]
        try:
            return import_task(name, entry.ref, entry.directory)
        except ValueError as err:
            raise ValueError(f"{entry.source}: {err}") from None
    if ":" in name:
        return import_task(name, name)
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(task_names(catalog))}")


def check_tasks(catalog: Catalog) -> None:
    """Refuse a user task named as a built-in one (ValueError names its file)."""
    for name, entry in catalog.tasks.items():
        if name in TASKS:
            raise ValueError(
                f"{entry.source}: task {name!r} clashes with the built-in task of that name; "
                "choose another name"
            )
