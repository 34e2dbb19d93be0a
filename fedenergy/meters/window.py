"""Named, nestable measurement windows over cumulative snapshots, and the poll thread that
advances meters while a window is open."""

from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fedenergy.meters.attribution import CpuAccounting
from fedenergy.meters.cputime import default_accounting
from fedenergy.meters.records import Clock, Measurement

if TYPE_CHECKING:
    from fedenergy.meters.base import Meter


class _Poller:
    """One background thread per process that calls ``sample()`` on registered meters.

    Meters register while they have an open window and a finite ``poll_interval_s``; the thread
    exits when nothing is registered.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._meters: dict[int, list[Any]] = {}  # id -> [meter, refcount, next_due]
        self._thread: threading.Thread | None = None

    def register(self, meter: Meter) -> None:
        interval = meter.poll_interval_s
        if not interval or interval <= 0:
            return
        with self._cond:
            entry = self._meters.get(id(meter))
            if entry:
                entry[1] += 1
            else:
                self._meters[id(meter)] = [meter, 1, time.monotonic() + interval]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="fedenergy-meter-poll", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def unregister(self, meter: Meter) -> None:
        with self._cond:
            entry = self._meters.get(id(meter))
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._meters[id(meter)]
            self._cond.notify_all()

    def active(self, meter: Meter) -> bool:
        with self._cond:
            return id(meter) in self._meters

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._meters:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [e for e in self._meters.values() if e[2] <= now]
                if not due:
                    wait = min(e[2] for e in self._meters.values()) - now
                    self._cond.wait(timeout=max(wait, 0.0))
                    continue
                for e in due:
                    e[2] = now + e[0].poll_interval_s
            for e in due:
                with contextlib.suppress(Exception):  # a poll must never kill the thread
                    e[0].sample()


POLLER = _Poller()


class _OpenWindow:
    __slots__ = ("snap", "proc_s", "mach_s")

    def __init__(self, snap: Any, proc_s: float, mach_s: float) -> None:
        self.snap = snap
        self.proc_s = proc_s
        self.mach_s = mach_s


class WindowHandle:
    """Yielded by ``window()``; ``measurement`` is set when the ``with`` block exits."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.measurement: Measurement | None = None


class Windowed(ABC):
    """Named, nestable windows over cumulative snapshots, with CPU-time attribution."""

    clock: Clock
    accounting: CpuAccounting

    def _init_windows(self, clock: Clock | None, accounting: CpuAccounting | None) -> None:
        self.clock = clock or time.monotonic
        self.accounting = accounting or default_accounting()
        self._windows: dict[str, _OpenWindow] = {}
        self._wlock = threading.Lock()

    @abstractmethod
    def _take_snapshot(self) -> Any: ...

    @abstractmethod
    def _build(
        self, name: str, begin: Any, end: Any, attribution: tuple[float, float]
    ) -> Measurement: ...

    @abstractmethod
    def _start_polling(self) -> None: ...

    @abstractmethod
    def _stop_polling(self) -> None: ...

    @property
    def open_windows(self) -> list[str]:
        return list(self._windows)

    def begin(self, name: str) -> None:
        """Open the window ``name`` (names must be unique among open windows)."""
        with self._wlock:
            if name in self._windows:
                raise ValueError(f"window {name!r} is already open")
            first = not self._windows
            self._windows[name] = _OpenWindow(None, 0.0, 0.0)
        try:
            snap = self._take_snapshot()
            proc, mach = self.accounting.process_cpu_s(), self.accounting.machine_cpu_s()
        except BaseException:
            with self._wlock:
                self._windows.pop(name, None)
            raise
        with self._wlock:
            self._windows[name] = _OpenWindow(snap, proc, mach)
        if first:
            self._start_polling()

    def end(self, name: str) -> Measurement:
        """Close the window ``name`` and return its Measurement."""
        with self._wlock:
            w = self._windows.pop(name, None)
            last = not self._windows
        if w is None:
            raise KeyError(f"window {name!r} is not open")
        try:
            snap = self._take_snapshot()
            proc, mach = self.accounting.process_cpu_s(), self.accounting.machine_cpu_s()
        finally:
            if last:
                self._stop_polling()
        return self._build(name, w.snap, snap, (proc - w.proc_s, mach - w.mach_s))

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[WindowHandle]:
        """``with meter.window("train") as w: ...`` then read ``w.measurement``."""
        handle = WindowHandle(name)
        self.begin(name)
        try:
            yield handle
        finally:
            handle.measurement = self.end(name)
