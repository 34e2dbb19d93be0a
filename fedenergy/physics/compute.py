"""The compute model: a call's local work on a device profile, in seconds and joules.

Work is stated in hardware-independent terms (:class:`Work`): floating-point operations, steps
(optimizer steps of a train call, forward batches of an evaluation), examples per step and the
threads the client computes on. A device profile (data/devices.toml) gives all-core figures:
``train_flops_per_s`` and ``active_power_w`` with all ``cores`` busy, ``idle_power_w`` with
none, ``step_overhead_s`` per step and ``startup_s`` for a fresh ClientApp process.

* Threads: a client on ``t`` threads uses the share ``u = min(t, cores) / cores`` of the
  device (``t`` unknown, 0: all cores, ``u = 1``). Its FLOP rate is ``u x train_flops_per_s``
  (per-core throughput times the cores it uses) and its power while busy
  ``idle + (active - idle) x u`` (power linear in utilisation, the form of PowerJoular's fitted
  Raspberry Pi models). A GPU profile has ``cores = 1``: its CPU threads do not scale it.
* Busy time: ``FLOPs / (u x train_flops_per_s) + steps x step_overhead_s``: small-model
  training is bound by the framework's per-step cost (Python dispatch, kernel launches,
  optimizer), not by FLOPs; the step term runs on the same threads at the same power. Batch
  size enters through the step count (``steps_for``); the FLOP rate itself is batch-independent.
  An evaluation's forward batches pay the same per-step cost: an upper bound (a forward-only
  batch of the digits MLP costs about an eighth of a training step on the project's host).
* Start-up: Flower's deployment starts a fresh ``flwr-clientapp`` process for each message, whose
  imports keep one core busy for ``startup_s`` before the handler runs (``startup="per-call"``);
  ``"off"`` leaves it out (a long-lived process, as in the Simulation Engine's own workers).
  Start-up is CPU work: its power is the busy power of one of the ``cpu_cores`` (for a CPU
  profile the same cores; for a GPU profile the host CPU's).

Two accounting boundaries (:data:`BOUNDARIES`):

* ``device`` (whole-device, the default): what a wall meter or a battery sees over the call.
  Busy time at the busy power, start-up at one core's busy power, and the idle power over the
  call's network time (``wait_w`` = idle: the device waits on its radio, whose model, Huang et
  al.'s, gives power *above* the device's base). The device's idle power between calls is no
  call's.
* ``marginal`` (above idle): only what the call adds to a device that is on anyway:
  ``(busy power - idle) x busy time``, the start-up likewise, nothing while waiting; the radio as
  its model gives it (already above base).

Scalars (Python floats) and numpy arrays (one entry per node) go through the same expression,
so the floats agree bit for bit. Pure: numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedenergy.physics.constants import Num

DEVICE, MARGINAL = "device", "marginal"
BOUNDARIES = (DEVICE, MARGINAL)
DEFAULT_BOUNDARY = DEVICE
PER_CALL, OFF = "per-call", "off"
STARTUP_MODES = (PER_CALL, OFF)
DEFAULT_STARTUP = PER_CALL


@dataclass(frozen=True)
class Work:
    """The local work of one call. ``steps``: optimizer steps (train) or forward batches
    (evaluate); ``batch``: examples per step; ``threads``: the client's compute threads. 0 in
    any of the three: not known (no step term; all cores)."""

    flops: float = 0.0
    steps: int = 0
    batch: int = 0
    threads: int = 0


class ComputeTerms(NamedTuple):
    """The device constants the compute model reads: scalars for one device, or arrays with
    one entry per node (the fleet's columns)."""

    flops_per_s: Num  # all-core effective training FLOP rate
    active_w: Num  # whole-device power, all cores busy
    idle_w: Num  # whole-device power, idle
    cores: Num  # the cores the all-core figures are for (1: a GPU)
    step_s: Num  # framework overhead per step
    startup_s: Num  # one CPU core busy starting a fresh ClientApp process
    cpu_cores: Num  # the CPU cores (the share of one of them runs the start-up)


class CallCompute(NamedTuple):
    """The compute side of one call, by part (J, s, W)."""

    compute_j: Num  # the handler's busy time, in the boundary's terms
    compute_s: Num  # busy seconds
    startup_j: Num  # the start-up phase
    startup_s: Num
    wait_w: Num  # power charged over the call's network time (device: idle; marginal: 0)


def steps_for(examples: Num, batch: int, epochs: int) -> Num:
    """Optimizer steps of ``epochs`` passes over ``examples`` in batches of ``batch`` (the last
    batch of an epoch may be short); 0 where ``batch`` or ``epochs`` is 0 (not known)."""
    if batch <= 0 or epochs <= 0:
        return examples * 0
    return epochs * (-(-examples // batch))


class _Ops(NamedTuple):
    where: Callable
    minimum: Callable


def _pick(cond, a, b):
    return a if cond else b


_SCALAR = _Ops(_pick, min)
_ARRAYS = _Ops(np.where, np.minimum)


def _compute(
    ops: _Ops,
    t: ComputeTerms,
    flops: Num,
    steps: Num,
    threads: Num,
    boundary: str,
    startup: str,
) -> CallCompute:
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown accounting boundary {boundary!r}; choose {BOUNDARIES}")
    if startup not in STARTUP_MODES:
        raise ValueError(f"unknown start-up mode {startup!r}; choose {STARTUP_MODES}")
    u = ops.where(threads > 0, ops.minimum(threads, t.cores) / t.cores, 1.0)
    busy_s = flops / (t.flops_per_s * u) + steps * t.step_s
    above_w = (t.active_w - t.idle_w) * u  # power above idle while busy
    one_core_w = (t.active_w - t.idle_w) / t.cpu_cores  # ... with one CPU core busy (start-up)
    if boundary == DEVICE:
        busy_w, start_w, wait_w = t.idle_w + above_w, t.idle_w + one_core_w, t.idle_w
    else:
        busy_w, start_w, wait_w = above_w, one_core_w, t.idle_w * 0.0
    start_s = t.startup_s if startup == PER_CALL else t.startup_s * 0.0
    return CallCompute(busy_w * busy_s, busy_s, start_w * start_s, start_s, wait_w)


def call_compute(
    t: ComputeTerms, work: Work, boundary: str = DEFAULT_BOUNDARY, startup: str = DEFAULT_STARTUP
) -> CallCompute:
    """The compute of one call's ``work`` on the device of ``t`` (Python floats)."""
    return _compute(_SCALAR, t, work.flops, work.steps, work.threads, boundary, startup)


def call_compute_many(
    t: ComputeTerms,
    flops: Num,
    steps: Num,
    threads: Num,
    boundary: str = DEFAULT_BOUNDARY,
    startup: str = DEFAULT_STARTUP,
) -> CallCompute:
    """``call_compute`` of many calls at once (arrays over nodes, or scalars shared by all);
    equal, float for float, to ``call_compute`` call by call."""
    return _compute(_ARRAYS, t, flops, steps, threads, boundary, startup)
