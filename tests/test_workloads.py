"""The built-in workloads of docs/workloads.md (``cnn``, ``resnet``, ``chars``): they train in
real Flower simulations, their FLOP counts match counts written by hand from the layer shapes,
their generated data is deterministic by seed, and their sizes are those of their regimes.

FLOP convention (docs/meters.md, as ``torch.utils.flop_counter`` counts): 2 FLOPs per
multiply-add of a convolution, a matrix product or an LSTM gate product; BatchNorm, ReLU,
pooling, embedding look-ups and the loss count 0. The backward pass costs twice the forward
(input and weight gradients), less the input gradient of the first layer that has FLOPs where
its input needs none (the images), and, for the LSTM, less the recurrent input gradient of the
first step (its initial state is a constant). Each optimizer step adds 2 FLOPs per parameter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedenergy.physics.flops import FlopCache
from fedenergy.settings import Settings
from fedenergy.sim.engine import simulate
from fedenergy.sim.tasks import (
    DataConfig,
    Split,
    chars,
    cnn,
    get_task,
    images,
    resnet,
    train_epochs,
)


def conv(c_in: int, c_out: int, k: int, side_out: int) -> int:
    """Forward FLOPs per sample of a convolution (2 x Cin x Cout x k^2 x Hout x Wout)."""
    return 2 * c_in * c_out * k * k * side_out * side_out


# --- the CNN: 28 -> 28 (conv 1) -> 14 (conv 2) -> 7 (conv 3) -> 3 (conv 4), pools between --
CNN_FIRST = conv(1, 32, 3, 28)
CNN_FORWARD = CNN_FIRST + conv(32, 64, 3, 14) + conv(64, 128, 3, 7) + conv(128, 256, 3, 3)
CNN_FORWARD += 2 * 256 * 10
CNN_PARAMS = (1 * 32 + 32 * 64 + 64 * 128 + 128 * 256) * 9  # convolutions, no bias
CNN_PARAMS += 2 * (32 + 64 + 128 + 256) + 256 * 10 + 10  # BatchNorm scale + shift, classifier


# --- the ResNet-18: stem 32 -> 16, stages at 16, 8, 4, 2 pixels ----------------------------
def resnet_layers() -> list[tuple[int, int, int, int]]:
    """(c_in, c_out, k, side_out) of every convolution, stem first."""
    layers = [(3, 64, 3, 16)]
    c_in, side = 64, 16
    for i, width in enumerate((64, 128, 256, 512)):
        side = side if i == 0 else side // 2
        for _ in range(2):
            layers += [(c_in, width, 3, side), (width, width, 3, side)]
            if c_in != width:  # the projection shortcut
                layers.append((c_in, width, 1, side))
            c_in = width
    return layers


RESNET_FIRST = conv(3, 64, 3, 16)
RESNET_FORWARD = sum(conv(*layer) for layer in resnet_layers()) + 2 * 512 * 10
RESNET_PARAMS = sum(ci * co * k * k + 2 * co for ci, co, k, _ in resnet_layers()) + 512 * 10 + 10

# --- the LSTM: 40 steps of an 8 -> 128 LSTM, a 128 -> 28 classifier at every step ----------
T, E, H, V = 40, 8, 128, 28
CHARS_FORWARD = T * 2 * 4 * H * (E + H) + T * 2 * H * V
CHARS_BACKWARD = 2 * CHARS_FORWARD - 2 * 4 * H * H  # no gradient for the initial state
CHARS_PARAMS = V * E + 4 * H * (E + H) + 2 * 4 * H + H * V + V


def train_flops(per_sample_fwd_bwd: int, params: int, n: int, batch: int, epochs: int) -> int:
    batches = [min(batch, n - i) for i in range(0, n, batch)]
    return epochs * sum(b * per_sample_fwd_bwd + 2 * params for b in batches)


CASES = {
    "cnn": (CNN_FORWARD, 3 * CNN_FORWARD - CNN_FIRST, CNN_PARAMS),
    "resnet": (RESNET_FORWARD, 3 * RESNET_FORWARD - RESNET_FIRST, RESNET_PARAMS),
    "chars": (CHARS_FORWARD, CHARS_FORWARD + CHARS_BACKWARD, CHARS_PARAMS),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_flop_counts_match_the_layer_shapes(name):
    """What the ClientApp reports (its FlopCache) against the hand count, training over 100
    samples in batches of 32 (the last one of 4) for 2 epochs, and evaluating 50 samples."""
    forward, fwd_bwd, params = CASES[name]
    task = get_task(name)
    model = task.make_model()
    sample = task.client_data(0, DataConfig(num_partitions=2))[0].x[:1]
    counter = FlopCache()
    assert counter.training(model, sample, 100, 32, 2) == pytest.approx(
        train_flops(fwd_bwd, params, 100, 32, 2), rel=0.02
    )
    model.eval()
    assert counter.evaluation(model, sample, 50) == pytest.approx(50 * forward, rel=0.02)


def message_bytes(model: torch.nn.Module) -> int:
    """Bytes of the arrays a node sends: every parameter and buffer of the state dict."""
    return sum(v.numel() * v.element_size() for v in model.state_dict().values())


def test_sizes_are_those_of_their_regimes():
    sizes = {n: sum(p.numel() for p in get_task(n).make_model().parameters()) for n in CASES}
    assert sizes == {n: case[2] for n, case in CASES.items()}
    assert 100_000 <= sizes["cnn"] <= 1_000_000
    assert sizes["resnet"] >= 5_000_000
    assert message_bytes(resnet.make_model()) >= 20e6
    # float32 parameters and BatchNorm statistics, and one int64 batch counter per BatchNorm
    assert message_bytes(cnn.make_model()) == 4 * (CNN_PARAMS + 2 * 480) + 8 * 4
    assert sizes["chars"] < 100_000  # a small LSTM
    # the heads for the real data sets (docs/workloads.md): FEMNIST's 62 classes, an alphabet
    assert cnn.make_model(62)(torch.zeros(2, 1, 28, 28)).shape == (2, 62)
    assert chars.make_model(80)(torch.zeros(2, 5)).shape == (2, 80, 5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_data_is_deterministic_by_seed(name):
    task = get_task(name)
    a = task.client_data(1, DataConfig(num_partitions=3, seed=4))
    b = task.client_data(1, DataConfig(num_partitions=3, seed=4))
    c = task.client_data(1, DataConfig(num_partitions=3, seed=5))
    for split_a, split_b in zip(a, b, strict=True):
        assert torch.equal(split_a.x, split_b.x) and torch.equal(split_a.y, split_b.y)
    assert a[0].x.shape[1:] == c[0].x.shape[1:]
    assert not (a[0].x.shape == c[0].x.shape and torch.equal(a[0].x, c[0].x))
    test_a = task.server_test_data(DataConfig(num_partitions=3, seed=4))
    test_c = task.server_test_data(DataConfig(num_partitions=3, seed=5))
    assert not (test_a.x.shape == test_c.x.shape and torch.equal(test_a.x, test_c.x))


def test_the_renderings_and_the_text_are_what_the_docs_say():
    style = images.Rendering(size=32, glyph=24, channels=3)
    x, y, xt, yt = images.pool(style, 0)
    assert x.shape == (1438, 3, 32, 32) and xt.shape == (359, 3, 32, 32)
    assert x.dtype == np.float32 and set(np.unique(y)) == set(range(10))
    again = images.render(x[:0], style, np.random.default_rng(0))  # no images: no pixels
    assert again.shape == (0, 3, 32, 32)
    assert chars.speaker_text(0, 0, 500) == chars.speaker_text(0, 0, 500)
    assert chars.speaker_text(0, 0, 500) != chars.speaker_text(1, 0, 500)  # speakers differ
    text = chars.speaker_text(2, 3, 2000)
    assert set(text) <= set(chars.ALPHABET) and text.endswith(".")
    assert all(w in chars.WORDS for w in text.replace(".", "").split())
    train, test = chars.client_data(0, DataConfig(num_partitions=1))
    assert train.y.shape == (len(train), chars.SEQ)
    # the label at each position is the character after it (the window's own next input, and
    # the next window, STRIDE characters on, shows the last ones)
    step = chars.STRIDE
    assert torch.equal(train.y[0, :-1], train.x[0, 1:].long())
    assert torch.equal(train.y[0, step - 1 :], train.x[1, : chars.SEQ - step + 1].long())


def _federate(tmp_path, task: str, **kw) -> dict:
    base = dict(
        task=task,
        nodes=2,
        rounds=3,
        fraction=1.0,
        fraction_evaluate=0.0,
        partitioner="iid",
        local_epochs=1,
        seed=0,
        out=str(tmp_path / task),
    )
    return simulate(Settings(**{**base, **kw}), num_cpus=2)


@pytest.mark.parametrize(("task", "gain"), [("cnn", 0.3), ("chars", 0.05)])
def test_the_small_models_learn_in_a_federation(tmp_path, task, gain):
    """Four nodes, two of them training each round for one epoch, three rounds of FedAvg: the
    server's accuracy rises and its loss falls."""
    summary = _federate(tmp_path, task, nodes=4, fraction=0.5)
    curve = summary["per_round"]
    assert [r["round"] for r in curve] == [0, 1, 2, 3]
    assert curve[-1]["accuracy"] >= curve[0]["accuracy"] + gain
    assert curve[-1]["loss"] < curve[0]["loss"]
    assert summary["compute_j"] > 0


def test_the_resnet_learns_locally_and_runs_in_a_federation(tmp_path):
    """Local SGD steps through the ClientApp's training loop lower the ResNet's training loss;
    one round of a two-node federation runs end to end (a 44.7 MB message each way)."""
    model = resnet.make_model()
    data, _ = resnet.client_data(0, DataConfig(num_partitions=2, partitioner="iid"))
    data = Split(data.x[:32], data.y[:32])
    first, _ = train_epochs(model, data, 1, 16, 0.3, seed=0)
    last = first
    for epoch in range(1, 4):
        last, _ = train_epochs(model, data, 1, 16, 0.3, seed=epoch)
    assert last < first - 0.3
    summary = _federate(tmp_path, "resnet", rounds=1)
    assert summary["rounds"] == 1 and summary["per_round"][-1]["succeeded"] == 2
    assert summary["bytes"] >= 4 * 20e6  # two nodes, the model down and the update up


@pytest.mark.parametrize("label", ["topk:0.01", "int8", "qsgd:16"])
def test_batchnorm_updates_decode_through_the_codecs(label):
    """A BatchNorm model's update holds 0-d arrays (the batch counters): an encoded reply
    decodes to every array of the state dict, the counters' updates included."""
    from flwr.app import RecordDict

    from fedenergy.codecs import encode_reply_arrays, parse_codec
    from fedenergy.codecs.messages import decode_reply_content
    from fedenergy.protocol import ARRAYS_RECORD, CODEC_RECORD

    spec = parse_codec(label)
    old = {k: v.numpy() for k, v in cnn.make_model().state_dict().items()}
    new = {k: v + (0.01 if v.dtype == np.float32 else 3) for k, v in old.items()}
    arrays, codec = encode_reply_arrays(new, old, spec, RecordDict(), np.random.default_rng(0))
    reply = RecordDict({ARRAYS_RECORD: arrays, CODEC_RECORD: codec})
    decoded = decode_reply_content(reply, spec, old)[ARRAYS_RECORD]
    assert list(decoded.keys()) == list(old)
    assert float(decoded["1.num_batches_tracked"].numpy()) == 3.0
