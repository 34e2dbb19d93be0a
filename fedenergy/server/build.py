"""Build a strategy's parts (aggregator, selector, compression policy); the run plan
(:func:`fedenergy.plan.plan_run`) calls these once per run."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from fedenergy.codecs import CodecSpec
from fedenergy.server.local_work import PricedWork, ProgressModel, parse_codec_menu
from fedenergy.server.policies import (
    AccuracyAwarePolicy,
    CompressionPolicy,
    FixedPolicy,
    PerLinkPolicy,
)
from fedenergy.server.selectors import (
    BatteryAwareSelector,
    BudgetSelector,
    EnergyGreedySelector,
    RandomSelector,
    Selector,
    UtilityPerJouleSelector,
)

AGGREGATORS = ("fedavg", "fedprox", "fedadam")


def make_aggregator(name: str, proximal_mu: float = 0.01) -> Strategy:
    """Flower's own aggregation: FedAvg, FedProx (client-side proximal term) or FedAdam."""
    if name == "fedavg":
        return FedAvg()
    if name == "fedprox":
        return FedProx(proximal_mu=proximal_mu)
    if name == "fedadam":
        return FedAdam(eta=0.05, eta_l=0.1, tau=1e-3)
    raise ValueError(f"unknown aggregator {name!r}; choose one of {', '.join(AGGREGATORS)}")


def named_selector(name: str, seed: int = 0, **utility) -> Selector:
    """The train selector ``name``: ``random`` (seeded), ``greedy`` or ``utility`` (utility per
    joule; ``utility``: its keyword arguments, e.g. ``exploration``, else its defaults)."""
    if name == "random":
        return RandomSelector(seed, 0)
    if name == "greedy":
        return EnergyGreedySelector()
    if name == "utility":
        return UtilityPerJouleSelector(seed=seed, **utility)
    raise ValueError(f"unknown selector {name!r}; choose random, greedy or utility")


def make_selector(settings) -> Selector:
    """The train selector named in ``settings`` (a :class:`fedenergy.settings.Settings`),
    wrapped by battery floor and budget."""
    sel = named_selector(
        settings.selector,
        settings.seed,
        exploration=settings.exploration,
        max_staleness=settings.max_staleness,
        energy_weight=settings.energy_weight,
    )
    if settings.battery_floor > 0:
        sel = BatteryAwareSelector(sel, settings.battery_floor)
    if settings.round_budget_j > 0:
        sel = BudgetSelector(sel, settings.round_budget_j)
    return sel


def make_policy(name: str, uplink: CodecSpec, downlink: CodecSpec) -> CompressionPolicy:
    """The compression policy ``name``; ``fixed`` uses ``uplink`` and ``downlink`` for all."""
    if name == "fixed":
        return FixedPolicy(uplink, downlink)
    if name == "per-link":
        return PerLinkPolicy()
    if name == "accuracy-aware":
        return AccuracyAwarePolicy(PerLinkPolicy())
    raise ValueError(
        f"unknown compression policy {name!r}; choose fixed, per-link or accuracy-aware"
    )


def make_priced(settings, participation: Selector, inner: CompressionPolicy) -> PricedWork:
    """The priced local work of ``settings`` (``local_work="priced"``): its epoch and codec
    menus and progress model; ``participation`` (the run's selector) chooses who trains,
    ``inner`` (the run's policy) gives the downlink codecs and unknown nodes' uplink."""
    return PricedWork(
        epoch_menu=settings.epoch_menu,
        codecs=parse_codec_menu(settings.codec_menu),
        progress=ProgressModel(settings.progress_tau_steps),
        participation=participation,
        inner=inner,
        default_epochs=settings.local_epochs,
    )
