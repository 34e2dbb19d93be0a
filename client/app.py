"""The fedenergy ClientApp, the Flower app component of ``flwr run .`` (pyproject's
``clientapp = "client.app:app"``): the library's built-in ClientApp, nothing else."""

from fedenergy.sim.clientapp import app

__all__ = ["app"]
