"""EnergyAware: the public server-side API, energy accounting around any Flower strategy.

``EnergyAware(strategy, ...)`` takes any Flower Message-API strategy (FedAvg, FedProx, FedAdam,
FedAvgM, a user's own subclass) and a few keyword arguments, each with a default; its
``start`` takes the arguments of Flower's ``Strategy.start`` and returns the same ``Result``,
while every call of the run goes into an energy ledger. By default it only accounts: the
wrapped strategy samples and aggregates exactly as it would alone. A ``selector`` chooses who
trains each round by forecast energy instead; a ``compression`` policy gives each chosen node
its codecs. The wiring is the one the built-in run uses (:mod:`fedenergy.server.session`).

Without a ``ledger`` argument the ledger is ``$FEDENERGY_OUT/ledger.sqlite`` when that variable
is set (``fedenergy simulate --app`` sets it to its ``--out``), else ``DEFAULT_LEDGER``. Each
start logs its run and ledger, and each committed round, on the ``fedenergy`` logger at INFO;
those records carry the run (``RUN_FIELD``) or the round's outcome (``ROUND_FIELD``) as
attributes, which is how the CLI prints a user's app's progress without code in the app.

A ``catalog`` (the user's own devices, links and fleets, docs/catalogs.md) defaults to the
paths in ``$FEDENERGY_CATALOG`` (``fedenergy simulate --app --catalog`` sets it), else the
packaged catalog; its paths also travel to the nodes in every message (``fe-catalog``), so a
simulated node prices its calls with the same user profiles.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedenergy.codecs import parse_codec
from fedenergy.ledger import Ledger
from fedenergy.physics.catalog import Catalog, load_catalog, split_paths
from fedenergy.physics.infra import DEFAULT_MODEL, INFRA_KWH_PER_GB, check_model
from fedenergy.protocol import CFG_CATALOG, CFG_INFRA_KWH_PER_GB, CFG_INFRA_MODEL
from fedenergy.server.build import make_policy, named_selector
from fedenergy.server.local_work import PRICED, PricedWork
from fedenergy.server.policies import POLICIES, CompressionPolicy, FixedPolicy
from fedenergy.server.rounds import RoundOutcome
from fedenergy.server.selectors import Selector
from fedenergy.server.session import (
    admit_fleet,
    base_versions,
    check_discovery,
    commit_round_zero,
    energy_strategy,
    ledger_run,
    new_run_id,
    wait_for_nodes,
)

log = logging.getLogger("fedenergy")
DEFAULT_LEDGER = "runs/fedenergy/ledger.sqlite"
OUT_ENV = "FEDENERGY_OUT"  # a folder: the default ledger is its ledger.sqlite
CATALOG_ENV = "FEDENERGY_CATALOG"  # the default catalog paths, os.pathsep-separated
RUN_FIELD = "fedenergy_run"  # log record attribute: (run id, ledger path) of a start
ROUND_FIELD = "fedenergy_round"  # log record attribute: the RoundOutcome of a committed round


def default_ledger() -> Path:
    """``$FEDENERGY_OUT/ledger.sqlite`` when FEDENERGY_OUT is set (and not empty), else
    ``DEFAULT_LEDGER``."""
    out = os.environ.get(OUT_ENV)
    return Path(out) / "ledger.sqlite" if out else Path(DEFAULT_LEDGER)


def default_catalog() -> tuple[str, ...]:
    """The catalog paths in ``$FEDENERGY_CATALOG`` (``os.pathsep``-separated; none when unset)."""
    return split_paths(os.environ.get(CATALOG_ENV))


def _log_round(outcome: RoundOutcome) -> None:
    """Log a committed round, its outcome attached to the record (``ROUND_FIELD``)."""
    log.info(
        "round %d committed: %.4g J, %d of %d selected succeeded",
        outcome.server_round,
        outcome.joules,
        outcome.succeeded,
        outcome.selected,
        extra={ROUND_FIELD: outcome},
    )


def _label(part: object) -> str | None:
    """How the ledger's run record names a selector or policy given by name or object."""
    return part if part is None or isinstance(part, str) else type(part).__name__


class EnergyAware:
    """Energy accounting (and, if asked, energy-aware selection and compression) around
    ``strategy``, any Flower Message-API strategy.

    ``ledger``: the SQLite ledger file (created with its folder; each ``start`` is one run in
    it; default :func:`default_ledger`, read when the wrapper is made). ``selector``: None
    (the wrapped strategy samples, its fractions untouched), or ``"random"``, ``"greedy"``,
    ``"utility"`` or a Selector object choosing ``fraction_train``/``fraction_evaluate`` of the
    nodes (read from ``strategy``). ``compression``: None, ``"per-link"``,
    ``"accuracy-aware"``, a codec label every node encodes its update with (e.g. ``"int8"``,
    ``"topk:0.05"``) or a CompressionPolicy object; the ClientApp must then honour it
    (:mod:`fedenergy.client.compression`). ``discovery``: how each node's device and link are
    learned: ``"declared"`` (a ``fe:DEVICE/LINK`` token in its SuperNode name, else as lazy),
    ``"lazy"`` (its first energy report) or ``"query"`` (a QUERY message to every node before
    round 1). ``seed``: of the selectors' random draws. ``infra_kwh_per_gb``: the network
    infrastructure's energy per byte; ``infra_model``: ``"per-byte"`` (that intensity) or
    ``"power"`` (baseline-plus-marginal power, :mod:`fedenergy.physics.infra`). ``catalog``: the
    user's catalog paths (a path, several separated by ``os.pathsep``, a list) or a Catalog:
    devices and links nodes may be, beside the packaged ones (default :func:`default_catalog`,
    read when the wrapper is made). ``local_work``: None, or ``"priced"`` or a
    :class:`~fedenergy.server.local_work.PricedWork`: each chosen node's local epochs and
    uplink codec from a menu, by forecast progress per joule (docs/strategies.md, "Priced
    local work"); the wrapper then selects (``selector``, else the PricedWork's own
    participation, greedy), ``compression`` gives the downlink codecs, and the ClientApp must
    read its epochs from the train config's ``epochs_key`` (``"fe-epochs"`` unless the
    PricedWork says otherwise; its ``default_epochs``: the epochs of the app's own config).
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        ledger: str | Path | None = None,
        selector: str | Selector | None = None,
        compression: str | CompressionPolicy | None = None,
        discovery: str = "declared",
        seed: int = 0,
        infra_kwh_per_gb: float = INFRA_KWH_PER_GB,
        catalog: str | list[str] | tuple[str, ...] | Catalog | None = None,
        infra_model: str = DEFAULT_MODEL,
        local_work: str | PricedWork | None = None,
    ) -> None:
        self.strategy = strategy
        if not (local_work is None or local_work == PRICED or isinstance(local_work, PricedWork)):
            raise ValueError(
                f"local_work must be None, {PRICED!r} or a PricedWork, got {local_work!r}"
            )
        self.local_work = local_work
        self.ledger_path = default_ledger() if ledger is None else Path(ledger)
        self.selector, self.compression = selector, compression
        self.discovery = check_discovery(discovery)
        self.seed, self.infra_kwh_per_gb = seed, infra_kwh_per_gb
        self.infra_model = check_model(infra_model)
        self.run_id: str | None = None  # the run of the latest ``start``
        if catalog is None:
            catalog = default_catalog()
        self.catalog = (
            catalog if isinstance(catalog, Catalog) else load_catalog(split_paths(catalog))
        )
        self._parts()  # a bad name fails here, not at the start of a run

    @property
    def accounting_only(self) -> bool:
        """True when the wrapped strategy samples and nothing is compressed."""
        return self.selector is None and self.compression is None and self.local_work is None

    def _parts(self) -> tuple[Selector | None, CompressionPolicy | None]:
        """The selector and policy of one run: built afresh from names (they keep state from
        round to round), objects as given."""
        sel, pol = self.selector, self.compression
        if isinstance(sel, str):
            sel = named_selector(sel, self.seed)
        if isinstance(pol, str):
            none = parse_codec("none")
            if pol in POLICIES and pol != "fixed":
                pol = make_policy(pol, none, none)
            else:
                try:
                    pol = make_policy("fixed", parse_codec(pol), none)
                except ValueError as err:
                    raise ValueError(
                        "compression must be None, 'per-link', 'accuracy-aware', a codec label "
                        f"or a CompressionPolicy; {err}"
                    ) from None
        if self.local_work is not None:  # one object selects, plans the epochs and codecs
            given = self.local_work if isinstance(self.local_work, PricedWork) else PricedWork()
            priced = replace(
                given,
                participation=given.participation if sel is None else sel,
                inner=pol if pol is not None else FixedPolicy(),
                plan={},
                _assigned={},
            )
            sel = pol = priced
        return sel, pol

    def _record(self, num_rounds: int, timeout: float) -> dict:
        """The run's settings as the ledger's ``runs.config_json`` keeps them."""
        base = self.strategy
        return {
            "api": "EnergyAware",
            "strategy": type(base).__name__,
            "selector": _label(self.selector),
            "compression": _label(self.compression),
            "discovery": self.discovery,
            "rounds": num_rounds,
            "fraction": getattr(base, "fraction_train", None),
            "fraction_evaluate": getattr(base, "fraction_evaluate", None),
            "seed": self.seed,
            "infra_kwh_per_gb": self.infra_kwh_per_gb,
            "infra_model": self.infra_model,
            "round_timeout_s": timeout,
            "catalog": list(self.catalog.paths),
            # (only when set: the record of an accounting-only run stays as it was)
            **({} if self.local_work is None else {"local_work": _label(self.local_work)}),
        }

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run the wrapped strategy for ``num_rounds`` rounds as Flower's ``Strategy.start``
        does (same arguments, same Result: ``evaluate_fn`` before round 1 and after each),
        with every call's energy committed to the ledger round by round. Before round 1 it
        waits (up to ``timeout``) until the wrapped strategy's ``min_available_nodes`` are
        registered. The run's id is ``self.run_id``. ``evaluate_fn``'s ``accuracy`` and
        ``loss``, when it returns them, go into the ledger's rounds table too."""
        base = self.strategy
        selector, policy = self._parts()
        self.run_id = run_id = new_run_id()
        before, forced = dict(getattr(base, "__dict__", {})), {}
        ledger = Ledger(self.ledger_path)
        try:
            with ledger_run(ledger, run_id):
                ledger.start_run(
                    run_id,
                    self._record(num_rounds, timeout),
                    {"name": "grid", "groups": []},
                    self.seed,
                    base_versions(),
                )
                common = {
                    CFG_INFRA_KWH_PER_GB: self.infra_kwh_per_gb,
                    CFG_INFRA_MODEL: self.infra_model,
                }
                if self.catalog.paths:
                    common[CFG_CATALOG] = list(self.catalog.paths)
                strategy = energy_strategy(
                    base,
                    ledger,
                    run_id,
                    common,
                    discovery=self.discovery,
                    seed=self.seed,
                    infra_kwh_per_gb=self.infra_kwh_per_gb,
                    infra_model=self.infra_model,
                    query_timeout=timeout,
                    fraction_train=getattr(base, "fraction_train", 1.0),
                    fraction_evaluate=getattr(base, "fraction_evaluate", 1.0),
                    selector=selector,
                    policy=policy,
                    base_samples=selector is None,  # (local_work: the wrapper selects)
                    catalog=self.catalog,
                )
                # what selection set on the wrapped strategy (its sampling) goes back after
                forced = {k: v for k, v in before.items() if getattr(base, k, v) is not v}
                wanted = max(int(before.get("min_available_nodes", 1)), 1)
                admit_fleet(strategy, grid, wait_for_nodes(grid, wanted, timeout))
                log.info(
                    "%s with energy accounting: run %s in %s",
                    type(base).__name__,
                    run_id,
                    self.ledger_path,
                    extra={RUN_FIELD: (run_id, str(self.ledger_path))},
                )
                first = commit_round_zero(strategy, initial_arrays, evaluate_fn, _log_round)
                result = strategy.start(
                    grid,
                    initial_arrays,
                    num_rounds,
                    timeout,
                    train_config,
                    evaluate_config,
                    evaluate_fn,
                    on_round=_log_round,
                )
        finally:
            ledger.close()
            for key, value in forced.items():
                setattr(base, key, value)
        if first is not None:
            result.evaluate_metrics_serverapp = {0: first, **result.evaluate_metrics_serverapp}
        return result
