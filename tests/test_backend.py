"""The Ray backend options of a simulation: Flower's backend config, and clear refusals."""

from __future__ import annotations

import socket

import pytest

from fedenergy.cli import build_parser
from fedenergy.sim.backend import Backend, backend_from_args, local_gpus, reachable


def test_the_local_backend_gives_ray_this_machines_cpus_and_one_cpu_per_client():
    cfg = Backend(num_cpus=2).config()
    assert cfg["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert cfg["init_args"]["num_cpus"] == 2 and cfg["init_args"]["num_gpus"] == 0
    assert "address" not in cfg["init_args"]


def test_a_cluster_backend_names_the_address_and_no_resources(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = Backend(address="10.0.0.5:6379", cpus_per_client=2, gpus_per_client=0.25).config()
    assert cfg["init_args"]["address"] == "10.0.0.5:6379"
    # Ray refuses num_cpus/num_gpus when it connects to an existing cluster
    assert "num_cpus" not in cfg["init_args"] and "num_gpus" not in cfg["init_args"]
    assert cfg["client_resources"] == {"num_cpus": 2, "num_gpus": 0.25}


def test_ray_address_from_the_environment_makes_it_a_cluster_run(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    b = Backend()
    assert not b.local and "num_cpus" not in b.config()["init_args"]


@pytest.mark.parametrize(
    "kw, text",
    [
        ({"cpus_per_client": 0}, "--cpus-per-client must be > 0"),
        ({"gpus_per_client": -1}, "--gpus-per-client must be >= 0"),
        ({"address": " "}, "--ray-address must not be empty"),
    ],
)
def test_bad_backend_values_are_refused_naming_the_option(kw, text):
    with pytest.raises(ValueError, match=text):
        Backend(**kw).check()


@pytest.mark.skipif(local_gpus() > 0, reason="this machine has a CUDA GPU")
def test_gpus_per_client_without_a_gpu_is_refused_before_anything_runs():
    args = build_parser().parse_args(["simulate", "--gpus-per-client", "0.5"])
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        backend_from_args(args)


def test_an_address_where_nothing_listens_is_refused_quickly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(ValueError, match="cannot connect to the Ray cluster"):
        reachable(f"127.0.0.1:{port}", timeout_s=2.0)


def test_the_cli_options_reach_the_backend():
    args = build_parser().parse_args(
        ["simulate", "--ray-address", "127.0.0.1:6379", "--cpus-per-client", "2"]
    )
    b = backend_from_args(args)
    assert (b.address, b.cpus_per_client, b.gpus_per_client) == ("127.0.0.1:6379", 2.0, 0.0)
