"""Embedded or generated tasks (no downloads): ``digits`` (default) and ``synthetic``."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from fedenergy.sim.tasks import digits, synthetic
from fedenergy.sim.tasks.base import DataConfig, Split, evaluate, train_epochs

__all__ = ["TASKS", "DataConfig", "Split", "Task", "evaluate", "get_task", "train_epochs"]


@dataclass(frozen=True)
class Task:
    """A task: its name and the module that builds its model and data."""

    name: str
    module: ModuleType

    def make_model(self):
        return self.module.make_model()

    def client_data(self, partition_id: int, cfg: DataConfig) -> tuple[Split, Split]:
        return self.module.client_data(partition_id, cfg)

    def server_test_data(self, cfg: DataConfig) -> Split:
        return self.module.server_test_data(cfg)

    def pooled_train_data(self, cfg: DataConfig) -> Split:
        return self.module.pooled_train_data(cfg)


TASKS = {m.NAME: Task(m.NAME, m) for m in (digits, synthetic)}


def get_task(name: str) -> Task:
    """Look a task up by name; a clear error names the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}"
        ) from None
