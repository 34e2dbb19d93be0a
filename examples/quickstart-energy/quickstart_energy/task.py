"""The model, the data and the train/test loops (plain PyTorch and Flower Datasets: nothing of
fedenergy here).

The images are generated: 32x32 RGB pictures of 10 classes, each class a colour and a stripe
pattern under noise, so the example runs anywhere in seconds without a download. They become a
local ``datasets.Dataset`` that a Flower Datasets partitioner splits across the nodes, as
Flower's quickstart splits CIFAR-10. With access to the Hugging Face hub, the same partitioner
splits a hub data set instead (its images then need a ``ToTensor`` transform, as in Flower's
quickstart-pytorch)::

    from flwr_datasets import FederatedDataset

    fds = FederatedDataset(dataset="uoft-cs/cifar10", partitioners={"train": partitioner})
    partition = fds.load_partition(partition_id)  # instead of partitioner.load_partition
"""

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Array3D, ClassLabel, Dataset, Features
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner
from torch import nn
from torch.utils.data import DataLoader

NUM_CLASSES = 10
TEST_SEED = 12345


class Net(nn.Module):
    """A small CNN: (conv-BatchNorm-ReLU-pool) x 2, dropout, linear (about 26k parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout(0.25)
        self.fc = nn.Linear(32 * 8 * 8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.fc(self.dropout(torch.flatten(x, 1)))


@lru_cache(maxsize=4)
def generate_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled images (float32, N x 3 x 32 x 32) drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(0).uniform(-1, 1, (NUM_CLASSES, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, n)
    rows, cols = np.mgrid[0:32, 0:32]
    freq = 1 + labels % 5  # stripes: frequency and direction by class
    phase = np.where(labels[:, None, None] < 5, rows, cols) * freq[:, None, None]
    stripes = np.sin(phase * np.pi / 8).astype(np.float32)
    images = palette[labels][:, :, None, None] + 0.5 * stripes[:, None, :, :]
    images += rng.normal(0, 0.8, images.shape).astype(np.float32)
    return images.astype(np.float32), labels


@lru_cache(maxsize=4)
def images_dataset(n: int, seed: int) -> Dataset:
    """``n`` generated images as a ``datasets.Dataset`` with an ``img`` and a ``label`` column."""
    x, y = generate_images(n, seed)
    features = Features(
        {"img": Array3D(shape=(3, 32, 32), dtype="float32"), "label": ClassLabel(NUM_CLASSES)}
    )
    return Dataset.from_dict({"img": x, "label": y}, features=features)


@lru_cache(maxsize=4)
def make_partitioner(
    num_partitions: int, examples_per_node: int, partitioning: str, alpha: float
) -> Partitioner:
    """A Flower Datasets partitioner over the generated images, made once per process:
    ``iid`` (IidPartitioner) or ``dirichlet`` (DirichletPartitioner, label skew alpha)."""
    if partitioning == "iid":
        partitioner: Partitioner = IidPartitioner(num_partitions=num_partitions)
    elif partitioning == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions, partition_by="label", alpha=alpha, seed=42
        )
    else:
        raise ValueError(f"partitioning must be 'iid' or 'dirichlet', got {partitioning!r}")
    partitioner.dataset = images_dataset(examples_per_node * num_partitions, seed=0)
    return partitioner


def load_data(
    partition_id: int,
    num_partitions: int,
    batch_size: int,
    examples_per_node: int,
    partitioning: str = "iid",
    alpha: float = 0.5,
) -> tuple[DataLoader, DataLoader]:
    """This node's partition of the generated data: a train and a test loader (80/20)."""
    partitioner = make_partitioner(num_partitions, examples_per_node, partitioning, alpha)
    partition = partitioner.load_partition(partition_id)
    split = partition.train_test_split(test_size=0.2, seed=42).with_format("torch")
    return (
        DataLoader(split["train"], batch_size=batch_size, shuffle=True),
        DataLoader(split["test"], batch_size=batch_size),
    )


def load_centralized_testset(n: int = 500) -> DataLoader:
    """Held-out generated data for the server's evaluation of the global model."""
    return DataLoader(images_dataset(n, seed=TEST_SEED).with_format("torch"), batch_size=100)


def train(net: Net, trainloader: DataLoader, epochs: int, lr: float, device: str) -> float:
    """Train ``net`` on the loader; return the mean training loss."""
    net.to(device)
    criterion = nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    running_loss, batches = 0.0, 0
    for _ in range(epochs):
        for batch in trainloader:
            images, labels = batch["img"].to(device), batch["label"].to(device)
            optimizer.zero_grad()
            loss = criterion(net(images), labels)
            loss.backward()
            optimizer.step()
            running_loss, batches = running_loss + loss.item(), batches + 1
    return running_loss / max(batches, 1)


def test(net: Net, testloader: DataLoader, device: str) -> tuple[float, float]:
    """(mean loss, accuracy) of ``net`` on the loader."""
    net.to(device)
    criterion = nn.CrossEntropyLoss()
    net.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for batch in testloader:
            images, labels = batch["img"].to(device), batch["label"].to(device)
            outputs = net(images)
            loss += criterion(outputs, labels).item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
    n = len(testloader.dataset)
    return loss / n, correct / n
