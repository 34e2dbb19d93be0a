import torch

from fedenergy.physics.flops import FlopCache


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def test_forward_flops_match_a_hand_count():
    cache = FlopCache()
    x = torch.zeros(8, 64)
    assert cache.forward(_mlp(), x) == 2 * 8 * (64 * 32 + 32 * 10)


def test_flops_are_counted_once_per_shape_and_reused():
    cache, model = FlopCache(), _mlp()
    x = torch.randn(100, 64)
    first = cache.training(model, x, n=100, batch_size=32, epochs=3)
    assert cache.counted == 2  # one full-batch shape (32) and one remainder shape (4)
    second = cache.training(model, x, n=100, batch_size=32, epochs=3)
    assert second == first and cache.counted == 2
    step32 = cache.train_step(model, x[:32])
    step4 = cache.train_step(model, x[:4])
    assert first == 3 * (3 * step32 + step4)
    cache.evaluation(model, x, 100)
    assert cache.counted == 3


def test_backward_costs_more_than_forward_and_scales_with_batch():
    cache, model = FlopCache(), _mlp()
    f = cache.forward(model, torch.zeros(32, 64))
    t = cache.train_step(model, torch.zeros(32, 64))
    assert 2 * f < t < 4 * f
    assert cache.forward(model, torch.zeros(64, 64)) == 2 * f
    assert all(p.grad is None for p in model.parameters())


def _bn_dropout_model():
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(8 * 8 * 8, 10),
    )


def _snapshot(model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    return state, grads, torch.get_rng_state()


def _assert_same(model, before):
    state, grads, rng = before
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
    assert torch.equal(rng, torch.get_rng_state())


def test_counting_never_touches_the_live_model_or_the_generator():
    """BatchNorm statistics, weights, gradients and the torch RNG state are as before."""
    model = _bn_dropout_model()
    model.train()
    x = torch.randn(20, 3, 8, 8)
    model(x).sum().backward()  # real statistics and gradients to be kept
    before = _snapshot(model)
    cache = FlopCache()
    train = cache.training(model, x, n=20, batch_size=8, epochs=2)
    evaluation = cache.evaluation(model, x, 20)
    _assert_same(model, before)
    assert model.training and int(model[1].num_batches_tracked) == 1
    per_sample = 2 * 3 * 8 * 9 * 64 + 2 * 512 * 10
    assert evaluation == 20 * per_sample
    params = sum(p.numel() for p in model.parameters())
    step = lambda b: b * (3 * per_sample - 2 * 3 * 8 * 9 * 64) + 2 * params  # noqa: E731
    assert train == 2 * (2 * step(8) + step(4))


class _MixesInRealTensors(torch.nn.Module):
    """A forward that cannot run on the meta device (it adds a tensor it makes on the CPU)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 4)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.lin(x)) + torch.ones(4)


def test_a_module_that_cannot_run_on_meta_is_counted_on_a_real_copy():
    torch.manual_seed(0)
    model = _MixesInRealTensors()
    model(torch.randn(3, 16)).sum().backward()
    before = _snapshot(model)
    assert FlopCache().forward(model, torch.zeros(5, 16)) == 2 * 5 * 16 * 4
    _assert_same(model, before)


def test_the_signature_tells_apart_models_with_the_same_parameters():
    """Two convolutions with equal weights shapes but different strides are different work."""
    a = torch.nn.Conv2d(3, 4, 3, stride=1)
    b = torch.nn.Conv2d(3, 4, 3, stride=2)
    cache, x = FlopCache(), torch.zeros(1, 3, 9, 9)
    assert cache.forward(a, x) == 2 * 3 * 4 * 9 * 7 * 7
    assert cache.forward(b, x) == 2 * 3 * 4 * 9 * 4 * 4


def test_a_depthwise_convolution_backward_is_counted_per_group():
    # pointwise 3->96 (1x1), then depthwise 96 channels 3x3 (groups=96), 16 images of 56x56:
    # forward: 2 * C_in/groups * k*k * C_out * H*W * N per layer
    # backward: depthwise input gradient = its forward; each weight gradient = its forward
    # (the pointwise layer is first: no input gradient)
    from fedenergy.physics.flops import count_pass

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 96, 1, bias=False),
        torch.nn.Conv2d(96, 96, 3, padding=1, groups=96, bias=False),
    )
    n, hw = 16, 56 * 56
    pointwise = 2 * 3 * 1 * 96 * hw * n  # 28,901,376
    depthwise = 2 * 1 * 9 * 96 * hw * n  # 86,704,128
    p = count_pass(model, (torch.zeros(n, 3, 56, 56),), backward=True)
    assert p.forward == pointwise + depthwise
    assert (
        p.backward == pointwise + 2 * depthwise
    )  # torch 2.13's own formula: depthwise weight grad x96
