"""Energy-aware strategies: Flower aggregation + pluggable selection and compression."""

from fedenergy.server.fleet_state import FleetState
from fedenergy.server.forecast import Forecast
from fedenergy.server.forecasters import (
    Forecaster,
    FunctionForecaster,
    PlannedForecaster,
    fixed_forecaster,
)
from fedenergy.server.node import NodeInfo
from fedenergy.server.policies import AccuracyAwarePolicy, FixedPolicy, PerLinkPolicy
from fedenergy.server.rounds import RoundOutcome
from fedenergy.server.selectors import (
    BatteryAwareSelector,
    BudgetSelector,
    EnergyGreedySelector,
    RandomSelector,
    Selector,
    UtilityPerJouleSelector,
)
from fedenergy.server.strategy import EnergyAwareStrategy

__all__ = [
    "AccuracyAwarePolicy",
    "BatteryAwareSelector",
    "BudgetSelector",
    "EnergyAwareStrategy",
    "EnergyGreedySelector",
    "FixedPolicy",
    "FleetState",
    "Forecast",
    "Forecaster",
    "FunctionForecaster",
    "NodeInfo",
    "PerLinkPolicy",
    "PlannedForecaster",
    "RandomSelector",
    "RoundOutcome",
    "Selector",
    "UtilityPerJouleSelector",
    "fixed_forecaster",
]
