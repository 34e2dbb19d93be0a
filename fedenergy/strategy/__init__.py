"""Energy-aware strategies: Flower aggregation + pluggable selection, with a per-round ledger."""

from fedenergy.strategy.energy_aware import EnergyAwareStrategy, NodeInfo, RoundOutcome
from fedenergy.strategy.selectors import RandomSelector, Selector

__all__ = ["EnergyAwareStrategy", "NodeInfo", "RandomSelector", "RoundOutcome", "Selector"]
