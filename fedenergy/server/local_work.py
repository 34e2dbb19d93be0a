"""Priced local work: per node, how many local epochs, which uplink codec and whether to train.

Once compute is priced, more local work is not free. For every candidate node and every option
of a small menu — ``epochs`` local epochs from ``epoch_menu`` × an uplink codec from
``codecs`` — the coordinator forecasts the call's joules with the one call model (the fleet's
vectorised forecast, :meth:`FleetState.forecast_many`, its busy compute scaled to the option's
epochs) and the progress the option buys with :class:`ProgressModel`; each node takes the
option of most progress per joule. Who trains is then chosen by a participation selector
handed, as each node's forecast, its best option's joules per unit of progress: ``greedy``
takes the k best by progress per joule, ``utility`` weighs that by Oort's statistical utility
(examples × loss), ``random`` keeps FedAvg's uniform choice. The rule, its inputs, defaults and
assumptions: docs/strategies.md, "Priced local work".

:class:`PricedWork` is at once the run's selector and its compression policy; the strategy
binds it to its outbox (the exact payload and message sizes of each codec this round) and the
outbox writes each node's epochs into its train message (``epochs_key``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from fedenergy.codecs import CodecSpec, parse_codec
from fedenergy.protocol import CFG_EPOCHS
from fedenergy.server.columns import NodeState
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.forecast import Forecast
from fedenergy.server.policies import CompressionPolicy, FixedPolicy
from fedenergy.server.selectors import EnergyGreedySelector, Selector

PRICED, FIXED = "priced", "fixed"
LOCAL_WORK = (FIXED, PRICED)
DEFAULT_EPOCH_MENU = (1, 5, 15, 30)
DEFAULT_CODEC_MENU = ("none", "int8", "stc:0.09")
# ASSUMPTION (docs/strategies.md, "Priced local work"): local progress saturates over ~20
# optimizer steps; loosely fitted to FedAvg in the reference benchmark, which reached its
# target in 8.7 rounds at 30 local epochs against 15 at 5 (1.7x; 20 steps predicts 2.4x,
# 10 steps 1.6x). Not a property of any model: set it for yours.
DEFAULT_TAU_STEPS = 20.0
# A codec's progress relative to an uncompressed update: 1 + (its accuracy difference in points
# after 10 rounds, docs/compression.md's codec table) / 100; codecs measured within noise of
# none (fp16, int8, qsgd) 1. Keyed by label, then by codec family for unmeasured parameters.
# ASSUMPTION: that a point of accuracy lost at round 10 is a per-cent of a round's progress.
DEFAULT_CODEC_FACTORS = {
    "topk:0.01": 1 - 0.1451,
    "stc:0.09": 1 - 0.0170,
    "stcb:0.02": 1 - 0.0189,
    "topk": 1 - 0.1451,
    "stc": 1 - 0.0170,
    "stcb": 1 - 0.0189,
}


class Option(NamedTuple):
    """One choice of local work for a node: local epochs and the uplink codec."""

    epochs: int
    codec: CodecSpec


@dataclass(frozen=True)
class ProgressModel:
    """Expected progress of a call, in units of one node's data fully used:
    ``(1 - exp(-steps / tau_steps)) x codec factor``. Diminishing returns in local steps
    (``steps = epochs x ceil(examples / batch)``); the factor of a codec from
    ``codec_factors`` (by label, then by family; 1 for others)."""

    tau_steps: float = DEFAULT_TAU_STEPS
    codec_factors: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CODEC_FACTORS))

    def __post_init__(self) -> None:
        if not (isinstance(self.tau_steps, (int, float)) and self.tau_steps > 0):
            raise ValueError(f"progress tau-steps must be > 0, got {self.tau_steps!r}")
        for label, f in self.codec_factors.items():
            if not (isinstance(f, (int, float)) and 0 < f <= 1):
                raise ValueError(f"codec factor of {label!r} must be in (0, 1], got {f!r}")

    def factor(self, codec: CodecSpec) -> float:
        """The progress factor of ``codec``."""
        by = self.codec_factors
        return float(by.get(codec.label(), by.get(codec.name, 1.0)))

    def saturation(self, steps: np.ndarray | float) -> np.ndarray | float:
        """``1 - exp(-steps / tau_steps)``: the share of a node's data's progress ``steps``
        local steps reach."""
        return -np.expm1(-np.asarray(steps, dtype=np.float64) / self.tau_steps)


def local_steps(examples: np.ndarray, batch: int, epochs: int) -> np.ndarray:
    """Optimizer steps of ``epochs`` passes over ``examples`` in batches of ``batch`` (0:
    not known, one step an epoch)."""
    per_epoch = -(-examples // batch) if batch > 0 else np.ones_like(examples)
    return epochs * np.maximum(per_epoch, 1)


def best_options(progress: np.ndarray, joules: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decision rule: per node (row), the option (column) of most ``progress`` per
    ``joules`` (ties: the first in menu order), and that best ratio."""
    ratio = progress / np.maximum(joules, 1e-12)
    best = np.argmax(ratio, axis=1)
    return best, ratio[np.arange(len(best)), best]


class Sizes(Protocol):
    """What a train call moves this round (the strategy's Outbox)."""

    def payload_bytes(self, spec: CodecSpec) -> int: ...

    def download_size(self, spec: CodecSpec) -> int: ...


class PricedForecaster:
    """The forecaster a participation selector is handed: each candidate's best option, its
    ``total_j`` the joules per unit of progress, its ``device_j`` the option's own (for a
    battery floor)."""

    def __init__(self, fleet: FleetState, per_progress: np.ndarray, device: np.ndarray) -> None:
        self.fleet, self._total, self._device = fleet, per_progress, device  # by fleet row

    def __call__(self, node_id: int) -> Forecast:
        return self.forecast(node_id)

    def forecast(self, node_id: int) -> Forecast:
        row = self.fleet.cols.row[node_id]
        return Forecast(float(self._total[row]), 0.0, 0.0, float(self._device[row]))

    def forecast_columns(
        self, candidates: Sequence[int], rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._total[rows], self._device[rows]


@dataclass
class PricedWork:
    """Selector and compression policy of priced local work (module docstring).

    ``participation``: who trains among the candidates, by their priced forecasts (default
    ``greedy``: the k best progress per joule); ``inner``: the downlink codec of every node and
    the whole call of a node not known yet (its uplink codec; its epochs stay the run's);
    ``default_epochs``: the epochs of calls not planned here (0: the fleet's ``local_epochs``),
    which an observed compute is taken to be of; ``epochs_key``: the train-config key a
    ClientApp reads its local epochs from."""

    per_link = False  # a node's codec depends on its plan, not only on its link

    epoch_menu: tuple[int, ...] = DEFAULT_EPOCH_MENU
    codecs: tuple[CodecSpec, ...] = field(
        default_factory=lambda: tuple(parse_codec(c) for c in DEFAULT_CODEC_MENU)
    )
    progress: ProgressModel = field(default_factory=ProgressModel)
    participation: Selector = field(default_factory=EnergyGreedySelector)
    inner: CompressionPolicy = field(default_factory=FixedPolicy)
    default_epochs: int = 0
    epochs_key: str = CFG_EPOCHS
    sizes: Sizes | None = None
    plan: dict[int, Option] = field(default_factory=dict)  # this round's option per node
    _assigned: dict[int, int] = field(default_factory=dict)  # epochs last sent to each node

    def __post_init__(self) -> None:
        self.epoch_menu = check_epoch_menu(self.epoch_menu)
        if not self.codecs:
            raise ValueError("codec menu must name at least one codec")

    def bind_sizes(self, sizes: Sizes) -> None:
        """Take the call sizes from ``sizes`` (the strategy's outbox)."""
        self.sizes = sizes

    @property
    def options(self) -> list[Option]:
        """The menu: every (epochs, codec), epochs first."""
        return [Option(e, c) for e in self.epoch_menu for c in self.codecs]

    # -- the table -------------------------------------------------------------------------------
    def _ref_epochs(self, fleet: FleetState, cands: list[int]) -> np.ndarray:
        """The epochs each candidate's forecast compute is of: those last sent to it where its
        compute was observed, else the run's."""
        base = self.default_epochs or fleet.local_epochs or 1
        has_obs = fleet.column("has_obs", fleet.rows(cands))
        pairs = zip(cands, has_obs.tolist(), strict=True)
        return np.array([self._assigned.get(c, base) if o else base for c, o in pairs], float)

    def _examples(self, fleet: FleetState, rows: np.ndarray) -> np.ndarray:
        """Local examples per row; not known yet (0): the mean of the known, else a batch."""
        ex = fleet.column("examples", rows).astype(np.float64)
        known = fleet.column("examples", np.arange(fleet.cols.size))
        fill = float(known[known > 0].mean()) if (known > 0).any() else max(fleet.batch_size, 1)
        return np.where(ex > 0, ex, fill)

    def table(self, fleet: FleetState, cands: list[int]) -> tuple[np.ndarray, ...]:
        """Forecast joules, device joules and progress of every option (columns, ``options``
        order) for the known ``cands`` (rows)."""
        if self.sizes is None:
            raise RuntimeError("PricedWork is not bound to a strategy's outbox (bind_sizes)")
        rows = fleet.rows(cands)
        opts = self.options
        joules = np.empty((len(cands), len(opts)))
        device = np.empty_like(joules)
        ref = self._ref_epochs(fleet, cands)
        by_down: dict[str, list[int]] = {}
        downs: dict[str, CodecSpec] = {}
        for i, c in enumerate(cands):
            spec = self.inner.downlink_for(fleet[c], 0)
            by_down.setdefault(spec.label(), []).append(i)
            downs[spec.label()] = spec
        for label, pos_list in by_down.items():
            pos = np.array(pos_list)
            down = self.sizes.download_size(downs[label])
            for j, o in enumerate(opts):
                comp, dl, ul, dev = fleet.forecast_many(
                    rows[pos],
                    o.codec.label(),
                    self.sizes.payload_bytes(o.codec),
                    down,
                    work_scale=o.epochs / ref[pos],
                )
                joules[pos, j] = comp + dl + ul
                device[pos, j] = dev
        examples = self._examples(fleet, rows)
        progress = np.empty_like(joules)
        for j, o in enumerate(opts):
            steps = local_steps(examples, fleet.batch_size, o.epochs)
            progress[:, j] = self.progress.saturation(steps) * self.progress.factor(o.codec)
        return joules, device, progress

    # -- Selector --------------------------------------------------------------------------------
    def select(self, server_round, candidates, k, fleet, forecast) -> list[int]:
        """Plan each candidate's best option, then let ``participation`` choose ``k`` of them
        by their joules per unit of progress."""
        cands = list(candidates)
        rows = fleet.rows(cands)
        known = fleet.column("known", rows)
        per_progress = np.full(fleet.cols.size, np.nan)
        device_j = np.full(fleet.cols.size, np.nan)
        self.plan = {}
        kc = [c for c, kn in zip(cands, known.tolist(), strict=True) if kn]
        if kc:
            joules, device, progress = self.table(fleet, kc)
            best, ratio = best_options(progress, joules)
            krows = fleet.rows(kc)
            pick = np.arange(len(kc))
            per_progress[krows] = 1.0 / np.maximum(ratio, 1e-300)
            device_j[krows] = device[pick, best]
            opts = self.options
            self.plan = {c: opts[b] for c, b in zip(kc, best.tolist(), strict=True)}
        unknown = [c for c, kn in zip(cands, known.tolist(), strict=True) if not kn]
        for c in unknown:  # the run's epochs and the inner codec, at the prior forecast
            spec = self.inner.codec_for(fleet[c], server_round)
            f = forecast(c)
            e = self.default_epochs or fleet.local_epochs or 1
            ex = self._examples(fleet, fleet.rows([c]))
            q = float(self.progress.saturation(local_steps(ex, fleet.batch_size, e))[0])
            row = fleet.cols.row[c]
            per_progress[row] = f.total_j / max(q * self.progress.factor(spec), 1e-300)
            device_j[row] = f.device_j
        priced = PricedForecaster(fleet, per_progress, device_j)
        return self.participation.select(server_round, cands, k, fleet, priced)

    # -- CompressionPolicy -----------------------------------------------------------------------
    def codec_for(self, node: NodeState, server_round: int) -> CodecSpec:
        option = self.plan.get(node.node_id)
        return option.codec if option is not None else self.inner.codec_for(node, server_round)

    def downlink_for(self, node: NodeState, server_round: int) -> CodecSpec:
        return self.inner.downlink_for(node, server_round)

    def epochs_for(self, node: NodeState, server_round: int) -> int | None:
        """The local epochs planned for ``node`` this round (None: not planned, the run's);
        recorded as what its next observed compute is of."""
        option = self.plan.get(node.node_id)
        if option is None:
            return None
        self._assigned[node.node_id] = option.epochs
        return option.epochs

    def observe(self, server_round: int, accuracy: float | None) -> None:
        self.inner.observe(server_round, accuracy)


def check_epoch_menu(menu: object) -> tuple[int, ...]:
    """``menu`` as a tuple of distinct positive integers; ValueError naming the problem."""
    if isinstance(menu, (str, bytes)) or not isinstance(menu, (list, tuple)) or not menu:
        raise ValueError(f"epoch-menu must be a non-empty list of positive integers, got {menu!r}")
    for e in menu:
        if isinstance(e, bool) or not isinstance(e, int) or e <= 0:
            raise ValueError(f"epoch-menu entries must be positive integers, got {e!r}")
    if len(set(menu)) != len(menu):
        raise ValueError(f"epoch-menu has a repeated entry: {list(menu)!r}")
    return tuple(menu)


def parse_codec_menu(menu: object) -> tuple[CodecSpec, ...]:
    """Codec labels as CodecSpecs; ValueError naming the label that does not parse."""
    if isinstance(menu, (str, bytes)) or not isinstance(menu, (list, tuple)) or not menu:
        raise ValueError(f"codec-menu must be a non-empty list of codec labels, got {menu!r}")
    out = []
    for label in menu:
        try:
            out.append(parse_codec(label))
        except (ValueError, TypeError) as err:
            raise ValueError(f"invalid codec-menu entry {label!r}: {err}") from None
    if len({s.label() for s in out}) != len(out):
        raise ValueError(f"codec-menu has a repeated codec: {list(menu)!r}")
    return tuple(out)
