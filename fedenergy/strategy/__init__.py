"""Energy-aware strategies: Flower aggregation + pluggable selection and compression."""

from fedenergy.strategy.energy_aware import EnergyAwareStrategy, RoundOutcome
from fedenergy.strategy.policies import AccuracyAwarePolicy, FixedPolicy, PerLinkPolicy
from fedenergy.strategy.selectors import (
    BatteryAwareSelector,
    BudgetSelector,
    EnergyGreedySelector,
    RandomSelector,
    Selector,
    UtilityPerJouleSelector,
)
from fedenergy.strategy.state import FleetState, Forecast, NodeInfo

__all__ = [
    "AccuracyAwarePolicy",
    "BatteryAwareSelector",
    "BudgetSelector",
    "EnergyAwareStrategy",
    "EnergyGreedySelector",
    "FixedPolicy",
    "FleetState",
    "Forecast",
    "NodeInfo",
    "PerLinkPolicy",
    "RandomSelector",
    "RoundOutcome",
    "Selector",
    "UtilityPerJouleSelector",
]
