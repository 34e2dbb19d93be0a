"""Where the Simulation Engine runs the virtual clients: a Ray in this process, or a Ray cluster.

Flower's Simulation Engine runs every virtual ClientApp call as a task on Ray actors. By default
it starts a local Ray inside the driver process with this machine's CPUs. A :class:`Backend`
says otherwise:

* ``address``: run on an existing Ray cluster (``ray start --head`` on one machine,
  ``ray start --address HEAD:PORT`` on the others). The coordinator (the ServerApp) stays in
  this process; the clients run on the cluster's workers, which must have fedenergy (and a
  user app's code) importable. Ray's own ``RAY_ADDRESS`` is honoured when no address is given.
* ``cpus_per_client`` / ``gpus_per_client``: the resources of each virtual client, Flower's
  ``client_resources``: the engine runs as many clients at once as the resources allow
  (a fractional GPU, e.g. 0.25, puts four clients on one GPU).

These options say where the experiment runs, not what it models: the ledger of a run is the
same on one process or on a cluster (the seeded run's calls are the same), so they are not
part of the run's Settings.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Backend:
    """Ray resources and placement of a simulation (see the module docstring)."""

    address: str | None = None  # an existing Ray cluster (host:port or "auto"); None: local
    num_cpus: int | None = None  # local Ray only: the CPUs it may use (None: all of them)
    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0

    def check(self) -> Backend:
        """Raise ValueError naming the option when a value cannot work."""
        if not self.cpus_per_client > 0:
            raise ValueError(f"--cpus-per-client must be > 0 (got {self.cpus_per_client})")
        if not self.gpus_per_client >= 0:
            raise ValueError(f"--gpus-per-client must be >= 0 (got {self.gpus_per_client})")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1 (got {self.num_cpus})")
        if self.address is not None and not str(self.address).strip():
            raise ValueError("--ray-address must not be empty")
        if self.address is None and self.gpus_per_client > 0:
            have = local_gpus()
            if have == 0:
                raise ValueError(
                    f"--gpus-per-client {self.gpus_per_client:g}: no CUDA GPU is visible on "
                    "this machine (torch.cuda.device_count() is 0); drop the option, or run on "
                    "a Ray cluster that has GPUs (--ray-address)"
                )
        return self

    @property
    def local(self) -> bool:
        """True when the engine starts its own Ray in this process."""
        return self.address is None and not os.environ.get("RAY_ADDRESS")

    def config(self, verbose: bool = False) -> dict[str, Any]:
        """Flower's ``backend_config`` for ``run_simulation``."""
        init: dict[str, Any] = {
            "logging_level": "error",
            "log_to_driver": verbose,
            "include_dashboard": False,
        }
        if self.local:  # a cluster has its own resources: Ray refuses them on connecting
            init["num_cpus"] = self.num_cpus or os.cpu_count() or 1
            init["num_gpus"] = local_gpus() if self.gpus_per_client > 0 else 0
        elif self.address is not None:
            init["address"] = self.address
        return {
            "client_resources": {
                "num_cpus": self.cpus_per_client,
                "num_gpus": self.gpus_per_client,
            },
            "init_args": init,
        }

    def connect(self, verbose: bool = False) -> None:
        """On a cluster: connect this driver before the engine does and check that the cluster
        can hold one client (Ray would otherwise wait for resources forever). The engine then
        uses this connection. A local backend does nothing here."""
        if self.local:
            return
        import ray

        if ray.is_initialized():
            return
        where = self.address or os.environ.get("RAY_ADDRESS", "")
        reachable(where)  # Ray itself retries an unreachable address for minutes
        init = self.config(verbose)["init_args"]
        # the workers import fedenergy and the user's app from the driver's paths, as the
        # engine's own start of Ray arranges
        paths = os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
        try:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": paths}}, **init)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ValueError(f"cannot connect to the Ray cluster at {where!r}: {err}") from err
        have = ray.cluster_resources()
        need = {"CPU": self.cpus_per_client, "GPU": self.gpus_per_client}
        short = {k: v for k, v in need.items() if v > 0 and have.get(k, 0.0) < v}
        if short:
            ray.shutdown()
            wanted = ", ".join(f"{v:g} {k}" for k, v in short.items())
            held = ", ".join(f"{have.get(k, 0.0):g} {k}" for k in short)
            raise ValueError(
                f"the Ray cluster cannot run one client: each needs {wanted}, the cluster has "
                f"{held} (lower --cpus-per-client / --gpus-per-client or add workers)"
            )


def reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raise ValueError unless something listens at ``address`` (``host:port``; other forms,
    e.g. ``auto`` or ``ray://...``, are left to Ray)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise ValueError(
            f"cannot connect to the Ray cluster at {address!r}: {err} (is `ray start --head` "
            "running there?)"
        ) from err


def local_gpus() -> int:
    """CUDA GPUs torch sees on this machine (0 without CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--ray-address``, ``--cpus-per-client`` and ``--gpus-per-client``."""
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="HOST:PORT",
        help="run the virtual clients on this existing Ray cluster (default: a local Ray in "
        "this process; RAY_ADDRESS is honoured)",
    )
    parser.add_argument(
        "--cpus-per-client",
        type=float,
        default=Backend.cpus_per_client,
        help=f"CPUs each virtual client holds (default {Backend.cpus_per_client:g})",
    )
    parser.add_argument(
        "--gpus-per-client",
        type=float,
        default=Backend.gpus_per_client,
        help="GPUs each virtual client holds, e.g. 0.25 puts four on one GPU (default 0)",
    )


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The Backend of parsed ``fedenergy simulate`` options (checked)."""
    return Backend(
        address=getattr(args, "ray_address", None),
        cpus_per_client=getattr(args, "cpus_per_client", Backend.cpus_per_client),
        gpus_per_client=getattr(args, "gpus_per_client", Backend.gpus_per_client),
    ).check()
