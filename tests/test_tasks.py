"""The built-in tasks and their partitions (through Flower Datasets' partitioners)."""

import numpy as np
import pytest

from fedenergy.sim.tasks import DataConfig, get_task
from fedenergy.sim.tasks.partition import partition_indices, partitioning


def iid(n: int, parts: int, seed: int) -> list[np.ndarray]:
    return partition_indices(np.zeros(n, dtype=np.int64), parts, "iid", 0.5, seed)


def test_iid_partition_is_a_deterministic_cover():
    a = iid(100, 7, seed=3)
    b = iid(100, 7, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    assert max(len(p) for p in a) - min(len(p) for p in a) <= 1
    assert not all(np.array_equal(x, y) for x, y in zip(a, iid(100, 7, 4), strict=True))
    # more partitions than rows (bench_scale's 10,000 nodes): one row each, the rest empty
    many = iid(30, 100, seed=0)
    assert [len(p) for p in many] == [1] * 30 + [0] * 70
    assert sorted(np.concatenate(many).tolist()) == list(range(30))


def test_sampled_partitions_hold_data_at_any_node_count():
    """``sampled``: each partition draws max(1, rows // partitions) rows with replacement from
    its own stream (seed, partition id): none empty, even with far more partitions than rows."""
    labels = np.arange(30) % 3
    many = partitioning(labels, 100_000, "sampled", 0.5, seed=4)
    assert many.partitioner is None  # no flwr-datasets partitioner behind it
    for pid in (0, 1, 77_777, 99_999):
        ix = many.indices(pid)
        expected = np.random.default_rng([4, pid]).integers(0, 30, 1)  # 30 // 100,000 -> 1 row
        assert ix.tolist() == expected.tolist()
    few = partitioning(labels, 4, "sampled", 0.5, seed=4).all()
    assert [len(p) for p in few] == [7] * 4  # 30 // 4
    assert all(0 <= i < 30 for p in few for i in p.tolist())
    # with replacement: over many partitions some row is drawn twice
    drawn = np.concatenate([many.indices(p) for p in range(100)])
    assert len(set(drawn.tolist())) < len(drawn)
    again = partitioning(labels, 4, "sampled", 0.5, seed=4).all()
    assert all(np.array_equal(x, y) for x, y in zip(few, again, strict=True))
    other = partitioning(labels, 4, "sampled", 0.5, seed=5).all()
    assert not all(np.array_equal(x, y) for x, y in zip(few, other, strict=True))
    with pytest.raises(ValueError, match="nothing to draw from"):
        partitioning(np.zeros(0), 3, "sampled", 0.5, 0)
    # the digits task: every one of 100,000 nodes trains on one row of the pool
    task, cfg = get_task("digits"), DataConfig(100_000, seed=0, partitioner="sampled")
    train, test = task.client_data(99_999, cfg)
    assert len(train) == 1 and len(test) == 1
    from fedenergy.settings import Settings

    assert Settings(nodes=100_000, partitioner="sampled").validate().partitioner == "sampled"


def test_the_partitions_are_flower_datasets_partitions():
    """What a Flower app gets from flwr_datasets with the same partitioner and seed: IID is
    IidPartitioner over the rows shuffled with the seed; Dirichlet is DirichletPartitioner."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    labels = np.repeat(np.arange(10), 30)
    ds = Dataset.from_dict({"index": np.arange(300), "label": labels})
    flower = IidPartitioner(num_partitions=6)
    flower.dataset = ds.shuffle(seed=5)
    ours = partitioning(labels, 6, "iid", 0.5, seed=5)
    assert isinstance(ours.partitioner, IidPartitioner)
    for p in range(6):
        assert ours.indices(p).tolist() == flower.load_partition(p)["index"]
    flower = DirichletPartitioner(6, "label", 0.3, min_partition_size=2, seed=5)
    flower.dataset = ds
    ours = partitioning(labels, 6, "dirichlet", 0.3, seed=5)
    assert isinstance(ours.partitioner, DirichletPartitioner)
    for p in range(6):
        assert ours.indices(p).tolist() == flower.load_partition(p)["index"]


def test_dirichlet_partition_is_deterministic_skewed_and_complete():
    labels = np.repeat(np.arange(10), 100)
    a = partition_indices(labels, 10, "dirichlet", alpha=0.1, seed=1)
    b = partition_indices(labels, 10, "dirichlet", alpha=0.1, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    assert min(len(p) for p in a) >= 2
    # strong skew: on average a partition's top class holds most of its samples
    top_share = np.mean([np.bincount(labels[p]).max() / len(p) for p in a])
    assert top_share > 0.5
    iid_share = np.mean([np.bincount(labels[p]).max() / len(p) for p in iid(1000, 10, 1)])
    assert iid_share < 0.3


def test_dirichlet_tops_up_where_no_draw_gives_every_node_data():
    """100 nodes at alpha 0.1 over 1,000 labels: flwr-datasets' 10 redraws all leave some
    partition under 2 rows; the last draw is topped up from the largest partitions."""
    labels = np.repeat(np.arange(10), 100)
    part = partitioning(labels, 100, "dirichlet", 0.1, seed=0)
    assert part.fixed is not None  # the top-up path was taken
    parts = part.all()
    assert min(len(p) for p in parts) >= 2
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    again = partitioning(labels, 100, "dirichlet", 0.1, seed=0).all()
    assert all(np.array_equal(x, y) for x, y in zip(parts, again, strict=True))
    # more nodes than rows / 2: no minimum to keep, partitions may be empty, still a cover
    parts = partition_indices(labels[:50], 40, "dirichlet", 0.5, 0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(50))


def test_unknown_partitioner_and_task_are_named():
    with pytest.raises(ValueError, match="unknown partitioner 'x'"):
        partition_indices(np.zeros(4), 2, "x", 0.5, 0)
    with pytest.raises(ValueError, match="dirichlet alpha must be > 0"):
        partition_indices(np.zeros(4), 2, "dirichlet", 0.0, 0)
    with pytest.raises(ValueError, match="fewer partitions than samples"):
        partitioning(np.arange(10) % 2, 11, "dirichlet", 0.5, 0)
    with pytest.raises(ValueError, match="partition 2 of 2 does not exist"):
        partitioning(np.zeros(4), 2, "iid", 0.5, 0).indices(2)
    with pytest.raises(ValueError, match="unknown task 'mnist'.*digits"):
        get_task("mnist")


def test_importing_the_tasks_does_not_load_flower_datasets():
    import subprocess
    import sys

    code = (
        "import sys, fedenergy.settings, fedenergy.sim.tasks; "
        "print('datasets' in sys.modules, 'flwr_datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_digits_partitions_and_server_test_are_disjoint():
    task = get_task("digits")
    cfg = DataConfig(num_partitions=5, seed=0)
    total = sum(
        len(task.client_data(p, cfg)[0]) + len(task.client_data(p, cfg)[1]) for p in range(5)
    )
    assert total == len(task.pooled_train_data(cfg))
    assert len(task.pooled_train_data(cfg)) + len(task.server_test_data(cfg)) == 1797


def test_synthetic_matches_the_fedprox_generator_shape():
    task = get_task("synthetic")
    cfg = DataConfig(num_partitions=4, seed=0)
    train, test = task.client_data(2, cfg)
    assert train.x.shape[1] == 60 and train.y.max() < 10
    n = len(train) + len(test)
    assert 50 <= n <= 1000 and len(test) == n - int(0.9 * n)
    again, _ = task.client_data(2, cfg)
    assert np.array_equal(train.x.numpy(), again.x.numpy())
    # devices differ (per-device u_k, B_k): their label distributions are not all equal
    dists = [np.bincount(task.client_data(k, cfg)[0].y.numpy(), minlength=10) for k in range(4)]
    assert len({d.argmax() for d in dists}) > 1
    # within one device, x ~ N(v_k, Sigma) with Sigma_jj = j^-1.2
    x = task.client_data(2, cfg)[0].x.numpy()
    var = x.var(axis=0)
    assert var[0] == pytest.approx(1.0, rel=0.4)
    assert var[-1] == pytest.approx(60**-1.2, rel=0.4)


def test_fedprox_term_pulls_towards_the_starting_weights():
    import torch

    from fedenergy.sim.tasks import train_epochs

    task = get_task("digits")
    data, _ = task.client_data(0, DataConfig(num_partitions=4, seed=0))
    start = task.make_model()
    w0 = [p.detach().clone() for p in start.parameters()]

    def drift(mu):
        m = task.make_model()
        train_epochs(m, data, epochs=3, batch_size=16, lr=0.3, seed=1, proximal_mu=mu)
        return sum(float(((p - q) ** 2).sum()) for p, q in zip(m.parameters(), w0, strict=True))

    assert drift(1.0) < drift(0.0)
    assert torch.isfinite(torch.tensor(drift(0.01)))
