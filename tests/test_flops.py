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
