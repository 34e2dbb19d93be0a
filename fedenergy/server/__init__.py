"""Energy-aware strategies: Flower aggregation + pluggable selection and compression."""

from fedenergy.server.fleet_state import FleetState, Forecast, NodeInfo
from fedenergy.server.policies import AccuracyAwarePolicy, FixedPolicy, PerLinkPolicy
from fedenergy.server.selectors import (
    BatteryAwareSelector,
    BudgetSelector,
    EnergyGreedySelector,
    RandomSelector,
    Selector,
    UtilityPerJouleSelector,
)
from fedenergy.server.strategy import EnergyAwareStrategy, RoundOutcome

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
