"""Simulation: fleets of virtual devices on Flower's Simulation Engine, their faults, the
built-in tasks, and resuming a simulated run."""
