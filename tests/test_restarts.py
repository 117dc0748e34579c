"""Batched restarts: same results as one after another, per-restart gradients exact,
loops equal to torch's optimizers, and successive halving keeps a clear winner."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_bn_net, tiny_lenet
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.attacks.engine.adam import run_adam
from gradleak.attacks.engine.batched import NotBatchable, RestartBatcher
from gradleak.attacks.engine.lbfgs import run_lbfgs
from gradleak.attacks.engine.stopping import Halving
from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.records import AttackerKnowledge

BOUNDS = ((-1.0,) * 3, (1.0,) * 3)


def _image(seed=0, n=1, size=16):
    gen = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, size // 4, size // 4, generator=gen) * 2 - 1
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


def _knowledge(n=1, **kw):
    return AttackerKnowledge(num_samples=n, input_shape=(3, 16, 16), num_classes=10, bounds=BOUNDS, **kw)


def _resnet_like():
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return torch.relu(x + self.bn(self.conv(x)))

    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(inplace=True), Block(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 10))


@pytest.fixture
def float64():
    # L-BFGS without line search amplifies rounding: in float32 a 1e-7 relative change of
    # the start moves DLG's loss by ~1e-3 within 60 inner iterations, and even in float64
    # a chaotic start turns 1e-13 into 1e-5 within 40; so the attacks compare in float64
    # after one L-BFGS step, and the loop itself is checked for exact independence below
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("materialize", [True, False])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_per_restart_gradients_equal_autograd_one_restart_at_a_time(materialize, mode):
    model = _resnet_like().train(mode == "train")
    params = list(model.parameters())
    batch, restarts = 2, 3
    labels = torch.tensor([1, 7])
    target = torch.autograd.grad(F.cross_entropy(model(_image(n=batch)), labels), params)
    x = torch.randn(restarts * batch, 3, 16, 16, requires_grad=True)
    stats = RestartBatcher(model, target, materialize=materialize)(x, labels.repeat(restarts), restarts)
    x_grad = torch.autograd.grad((stats.norms - 3 * stats.dots).sum(), x)[0]
    for r in range(restarts):
        xr = x[r * batch:(r + 1) * batch].detach().requires_grad_(True)
        grads = torch.autograd.grad(F.cross_entropy(model(xr), labels), params, create_graph=True)
        norm = sum((g * g).sum() for g in grads)
        dot = sum((g * t).sum() for g, t in zip(grads, target))
        expected = torch.autograd.grad(norm - 3 * dot, xr)[0]
        torch.testing.assert_close(stats.norms[r], norm.detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stats.dots[r], dot.detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(x_grad[r * batch:(r + 1) * batch], expected, rtol=1e-3, atol=1e-5)
        if materialize:
            for g, batched in zip(grads, stats.grads):
                torch.testing.assert_close(batched[r], g.detach(), rtol=1e-4, atol=1e-6)


def test_unsupported_layers_are_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, groups=1), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    target = [torch.zeros_like(p) for p in model.parameters()]
    with pytest.raises(NotBatchable, match="'1'.*GroupNorm"):
        RestartBatcher(model, target, materialize=True)


class _Twice(nn.Module):
    """One linear layer applied twice: its gradient is a sum the stacked pass cannot split."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = nn.Linear(12, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x.flatten(1))))))


def test_models_the_stacked_pass_cannot_split_fall_back_to_interleaved():
    model = _Twice()
    knowledge = AttackerKnowledge(num_samples=1, input_shape=(12,), num_classes=3)
    update = simulate_client(model, torch.randn(1, 12), torch.tensor([1]))
    stacked = ATTACKS.get("dlg")(iterations=3, restarts=2, halving=None).reconstruct(model, update, knowledge)
    interleaved = ATTACKS.get("dlg")(iterations=3, restarts=2, halving=None, restart_mode="interleaved").reconstruct(
        model, update, knowledge)
    assert stacked.restart_mode == "interleaved"
    assert stacked.restart_losses == interleaved.restart_losses


@pytest.mark.parametrize("history", [100, 3])  # 3: the ring of pairs overflows
def test_lbfgs_rows_follow_torch_lbfgs(history):
    # one smooth non-quadratic problem, three starts; each row must follow torch.optim.LBFGS
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=gen)
    start = torch.randn(3, 6, generator=gen) * 2

    def f(z):
        return ((z @ a.t()).tanh() ** 2).sum(-1) + 0.1 * (z ** 4).sum(-1) + (z[..., 0] - 1) ** 2

    result = run_lbfgs(f, start, steps=4, history=history)
    for i in range(3):
        z = start[i].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([z], lr=1.0, history_size=history)

        def closure():
            opt.zero_grad()
            loss = f(z)
            loss.backward()
            return loss

        losses = [float(opt.step(closure).detach()) for _ in range(4)]
        # float32 reductions in another order: agreement to rounding, amplified by L-BFGS
        torch.testing.assert_close(torch.tensor(result.histories[i]), torch.tensor(losses), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("loop", ["lbfgs", "lbfgs-backtracking", "adam"])
def test_rows_optimized_together_follow_their_path_alone(loop, float64):
    # rows leave L-BFGS's inner loop at different iterations; none may disturb another
    # (a matrix product over 4 rows rounds differently from one over 1, and L-BFGS
    # amplifies that: float64, 1e-7; a coupling bug shows as O(1) differences)
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(5, 5, generator=gen)
    start = torch.randn(4, 5, generator=gen) * torch.tensor([[0.1], [1.0], [3.0], [10.0]])

    def f(z):
        return ((z @ a.t()).sin() ** 2).sum(-1) + 0.05 * (z ** 4).sum(-1)

    def run(rows):
        if loop.startswith("lbfgs"):
            return run_lbfgs(f, rows, steps=6, backtrack=10 if loop.endswith("backtracking") else 0)
        return run_adam(f, rows, iterations=40, lr=0.1, signed=True, milestones=[20])

    together = run(start)
    for i in range(4):
        alone = run(start[i:i + 1])
        torch.testing.assert_close(torch.tensor(together.histories[i]), torch.tensor(alone.histories[0]),
                                   rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(together.best[i], alone.best[0], rtol=1e-7, atol=1e-10)


def test_adam_rows_follow_torch_adam_with_milestones():
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(2, 5, generator=gen)
    start = torch.randn(2, 5, generator=gen)
    result = run_adam(lambda rows: ((rows - target) ** 4).sum(1), start, iterations=12, lr=0.1, signed=False,
                      milestones=[4, 8])
    for i in range(2):
        z = start[i].clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.1)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[4, 8], gamma=0.1)
        losses = []
        for _ in range(12):
            opt.zero_grad()
            loss = ((z - target[i]) ** 4).sum()
            losses.append(float(loss.detach()))
            loss.backward()
            opt.step()
            sched.step()
        torch.testing.assert_close(torch.tensor(result.histories[i]), torch.tensor(losses), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,options", [
    ("dlg", dict(iterations=1, restarts=3, tol=0.0, patience=0, halving=None)),
    ("idlg", dict(iterations=1, restarts=3, tol=0.0, patience=0, halving=None)),
    ("ig", dict(iterations=30, restarts=3)),
])
@pytest.mark.parametrize("other", ["sequential", "interleaved"])
def test_stacked_restarts_agree_with_sequential_and_interleaved(name, options, other, float64):
    model = tiny_lenet()
    update = simulate_client(model, _image(n=2), torch.tensor([2, 5]))
    batched = ATTACKS.get(name)(**options).reconstruct(model, update, _knowledge(n=2), seed=3)
    sequential = ATTACKS.get(name)(restart_mode=other, **options).reconstruct(model, update, _knowledge(n=2), seed=3)
    assert (batched.restart_mode, sequential.restart_mode) == ("stacked", other)
    assert batched.data.dtype == torch.float64
    torch.testing.assert_close(torch.tensor(batched.restart_losses), torch.tensor(sequential.restart_losses),
                               rtol=1e-9, atol=1e-12)
    assert batched.best_restart == sequential.best_restart
    torch.testing.assert_close(batched.data, sequential.data, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_in_training_mode_keeps_restarts_apart(affine):
    model = tiny_bn_net()
    if not affine:
        model[1] = nn.BatchNorm2d(4, affine=False)
    knowledge = AttackerKnowledge(num_samples=2, input_shape=(1, 8, 8), num_classes=4)
    update = simulate_client(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 3]), model_mode="train")
    options = dict(iterations=20, restarts=3)
    batched = ATTACKS.get("ig")(**options).reconstruct(model, update, knowledge, seed=1)
    sequential = ATTACKS.get("ig")(restart_mode="sequential", **options).reconstruct(model, update, knowledge, seed=1)
    assert batched.restart_mode == "stacked"
    torch.testing.assert_close(torch.tensor(batched.restart_losses), torch.tensor(sequential.restart_losses),
                               rtol=1e-3, atol=1e-6)


def test_halving_keeps_a_restart_that_is_clearly_best_early():
    # row 0 starts next to the minimum; halving at 20% and 50% must keep it to the end
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(8, generator=gen)
    start = torch.randn(6, 8, generator=gen) * 3
    start[0] = target + 0.01
    result = run_adam(lambda rows: ((rows - target) ** 2).sum(1), start, iterations=50, lr=0.05, signed=True,
                      halving=Halving(at=(0.2, 0.5)))
    assert result.statuses[0] == "ok" and result.iterations[0] == 50
    assert result.statuses.count("halved") == 4  # 6 -> 3 -> 2 running
    assert min(range(6), key=lambda i: result.losses[i]) == 0
    dropped = [i for i, s in enumerate(result.statuses) if s == "halved"]
    assert all(result.iterations[i] < 50 for i in dropped)


def test_restart_options_are_checked():
    with pytest.raises(GradleakError, match="restart_mode must be one of stacked, interleaved, sequential"):
        ATTACKS.get("ig")(restart_mode="parallel")
    with pytest.raises(GradleakError, match="halving compares restarts"):
        ATTACKS.get("ig")(restart_mode="sequential", halving=(0.5,))
    with pytest.raises(GradleakError, match="halving must be None or budget fractions"):
        ATTACKS.get("dlg")(halving=(1.5,))


def test_halving_is_reported_and_spends_less():
    model = tiny_lenet()
    update = simulate_client(model, _image(), torch.tensor([2]))
    full = ATTACKS.get("ig")(iterations=40, restarts=4).reconstruct(model, update, _knowledge(), seed=0)
    halved = ATTACKS.get("ig")(iterations=40, restarts=4, halving=(0.25, 0.5)).reconstruct(
        model, update, _knowledge(), seed=0)
    assert halved.restart_statuses.count("halved") == 3
    assert halved.iterations < full.iterations == 160
    assert halved.peak_memory_bytes is not None and halved.peak_memory_bytes > 10 * 2**20  # the interpreter alone


def test_peak_memory_sees_a_large_allocation():
    from gradleak.memory import PeakMemory

    with PeakMemory() as baseline:
        pass
    with PeakMemory() as memory:
        block = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched: more than any allocator cache here
        import time

        time.sleep(0.05)
        del block
    assert memory.bytes >= baseline.bytes + 200 * 2**20
