import copy
import math

import pytest
import torch
from conftest import tiny_lenet

from gradleak.attacks import ATTACKS
from gradleak.attacks.engine.labels import batch_labels, idlg_label, recover_labels
from gradleak.attacks.engine.problem import build_problem
from gradleak.client import simulate_client
from gradleak.errors import GradleakError, UnknownNameError
from gradleak.records import AttackerKnowledge, LabelKnowledge, LocalTraining, Protocol

BOUNDS = ((-1.0,) * 3, (1.0,) * 3)


def _image(seed=0, n=1, size=16):
    gen = torch.Generator().manual_seed(seed)
    # smooth images in [-1, 1]: upsampled noise looks more like data than white noise
    small = torch.rand(n, 3, size // 4, size // 4, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


def _knowledge(n=1, size=16, **kw):
    return AttackerKnowledge(num_samples=n, input_shape=(3, size, size), num_classes=10, bounds=BOUNDS, **kw)


def _psnr(a, b):
    # images live in [-1, 1]: map to [0, 1]
    mse = (((a.clamp(-1, 1) - b) / 2) ** 2).mean().item()
    return -10 * math.log10(max(mse, 1e-12))


def test_idlg_label_rule_is_right_on_100_random_single_samples():
    gen = torch.Generator().manual_seed(0)
    for case in range(100):
        model = tiny_lenet(seed=case)
        x = torch.randn(1, 3, 16, 16, generator=gen)
        y = torch.randint(0, 10, (1,), generator=gen)
        update = simulate_client(model, x, y)
        assert idlg_label(update.tensors[-2]).item() == y.item(), case


def test_batch_label_rule_recovers_the_multiset_on_untrained_models():
    gen = torch.Generator().manual_seed(1)
    correct = total = 0
    for case in range(20):
        model = tiny_lenet(seed=100 + case)
        x = torch.randn(4, 3, 16, 16, generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)
        update = simulate_client(model, x, y)
        labels = recover_labels(model, update.tensors, 4, (3, 16, 16))
        assert labels.shape == (4,)
        pred, true = labels.tolist(), y.tolist()
        for c in set(true):
            correct += min(pred.count(c), true.count(c))
        total += 4
    assert correct / total >= 0.9


def test_batch_rule_single_sample_equals_idlg():
    w = torch.randn(10, 5)
    b = torch.randn(10)
    assert batch_labels(w, b, 1).item() == b.argmin().item()


def test_idlg_reconstructs_a_tiny_image():
    model = tiny_lenet()
    x = _image()
    update = simulate_client(model, x, torch.tensor([3]))
    attack = ATTACKS.get("idlg")(iterations=200, restarts=3)
    rec = attack.reconstruct(model, update, _knowledge(), seed=0)
    assert rec.labels.tolist() == [3]
    assert rec.label_knowledge is LabelKnowledge.INFERRED
    assert _psnr(rec.data, x) > 30


def test_dlg_reconstructs_data_and_label_on_a_tiny_case():
    model = tiny_lenet()
    x = _image(1)
    update = simulate_client(model, x, torch.tensor([7]))
    rec = ATTACKS.get("dlg")(iterations=200, restarts=4).reconstruct(model, update, _knowledge(), seed=0)
    assert rec.labels.tolist() == [7]
    assert rec.label_knowledge is LabelKnowledge.UNKNOWN
    assert _psnr(rec.data, x) > 30


def test_ig_reconstructs_a_tiny_image_with_cosine_and_tv():
    model = tiny_lenet()
    x = _image(2)
    update = simulate_client(model, x, torch.tensor([1]))
    rec = ATTACKS.get("ig")(iterations=300, tv=1e-3, lr=0.1).reconstruct(model, update, _knowledge(), seed=0)
    assert _psnr(rec.data, x) > 20
    assert rec.data.min() >= -1 and rec.data.max() <= 1  # clamped to the box


def test_same_seed_same_reconstruction_and_model_untouched():
    model = tiny_lenet()
    state = copy.deepcopy(model.state_dict())
    update = simulate_client(model, _image(), torch.tensor([2]))
    attack = ATTACKS.get("ig")(iterations=20)
    a = attack.reconstruct(model, update, _knowledge(), seed=5)
    b = attack.reconstruct(model, update, _knowledge(), seed=5)
    c = attack.reconstruct(model, update, _knowledge(), seed=6)
    assert torch.equal(a.data, b.data)
    assert not torch.equal(a.data, c.data)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_restarts_keep_the_lowest_loss():
    model = tiny_lenet()
    update = simulate_client(model, _image(), torch.tensor([2]))
    rec = ATTACKS.get("ig")(iterations=10, restarts=3).reconstruct(model, update, _knowledge(), seed=0)
    assert len(rec.restart_losses) == 3
    assert rec.restart_losses[rec.best_restart] == min(rec.restart_losses)


class _Log(torch.nn.Module):
    """log of the input: NaN for the negative values a random start contains."""

    def forward(self, x):
        return torch.log(x)


@pytest.mark.parametrize("name", ["ig", "dlg"])
def test_nonfinite_loss_stops_cleanly_with_a_status(name):
    model = torch.nn.Sequential(_Log(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    update = simulate_client(model, torch.rand(1, 8), torch.tensor([2]))
    knowledge = AttackerKnowledge(num_samples=1, input_shape=(8,), num_classes=3)  # no clamping box
    rec = ATTACKS.get(name)(iterations=50, restarts=2).reconstruct(model, update, knowledge)
    assert rec.status == "nonfinite"
    assert torch.isfinite(rec.data).all()


def test_wall_clock_budget_and_callback_stop():
    model = tiny_lenet()
    update = simulate_client(model, _image(), torch.tensor([2]))
    rec = ATTACKS.get("ig")(iterations=10**6, max_seconds=0.3).reconstruct(model, update, _knowledge())
    assert rec.status == "budget" and rec.seconds < 5
    seen = []

    def callback(p):
        seen.append(p)
        return p.iteration >= 3

    rec = ATTACKS.get("ig")(iterations=100).reconstruct(model, update, _knowledge(), callback=callback)
    assert rec.status == "stopped" and rec.iterations == 3
    assert [p.iteration for p in seen] == [1, 2, 3] and all(math.isfinite(p.loss) for p in seen)


def test_attacker_that_knows_the_local_training_predicts_the_delta_exactly():
    model = tiny_lenet()
    x = _image(n=4)
    y = torch.tensor([0, 1, 2, 3])
    training = LocalTraining(Protocol.FEDAVG, lr=0.1, epochs=2, batch_size=2)
    update = simulate_client(model, x, y, training)
    knowledge = _knowledge(4, knows_training=True, training=training)
    problem = build_problem(model, update, knowledge)
    assert problem.unrolled
    predicted = problem.predict(x, y)
    for p, t in zip(predicted, problem.target):
        torch.testing.assert_close(p, t, rtol=1e-4, atol=1e-7)
    one_step = build_problem(model, update, _knowledge(4))
    assert not one_step.unrolled


def test_update_validation_names_parameter_and_shapes():
    model = tiny_lenet()
    update = simulate_client(model, _image(), torch.tensor([2]))
    bad = type(update)(**{**update.__dict__, "tensors": (torch.zeros(3),) + update.tensors[1:]})
    with pytest.raises(GradleakError, match=r"'0.weight' has shape \(3,\).*\(8, 3, 5, 5\)"):
        ATTACKS.get("ig")(iterations=1).reconstruct(model, bad, _knowledge())
    nan = type(update)(**{**update.__dict__, "tensors": (update.tensors[0] * float("nan"),) + update.tensors[1:]})
    with pytest.raises(GradleakError, match="NaN"):
        ATTACKS.get("ig")(iterations=1).reconstruct(model, nan, _knowledge())


def test_unknown_attack_lists_known_ones_and_bad_hyperparameters_are_named():
    with pytest.raises(UnknownNameError, match="known attacks: analytic-fc, bayes, cosine, dlg, "):
        ATTACKS.get("nope")
    with pytest.raises(GradleakError, match="iterations must be an integer >= 1, got 0"):
        ATTACKS.get("ig")(iterations=0)
    with pytest.raises(GradleakError, match="distance"):
        ATTACKS.get("ig")(distance="l3")


def test_attack_quality_falls_as_local_steps_grow():
    """SoK Tab. 1 on a tiny case: the attacker that reads a FedAvg delta as one step degrades with steps."""
    from gradleak.metrics import evaluate_images

    model = tiny_lenet()
    x = _image(n=2)
    y = torch.tensor([1, 5])
    psnrs = []
    for steps in (1, 2, 4, 8):
        update = simulate_client(model, x, y, LocalTraining(Protocol.FEDAVG, lr=0.5, epochs=steps))
        knowledge = _knowledge(2, label_knowledge="given", labels=y)
        rec = ATTACKS.get("ig")(iterations=300).reconstruct(model, update, knowledge)
        psnrs.append(evaluate_images(rec.data.clamp(-1, 1) / 2 + 0.5, x / 2 + 0.5).psnr_mean)
    assert psnrs[0] > 22 and psnrs[0] > psnrs[-1] + 8, psnrs
    assert all(b <= a + 1.0 for a, b in zip(psnrs, psnrs[1:])), psnrs


def test_label_rules_are_named_strategies():
    from gradleak.attacks.engine.labels import LABEL_RULES

    assert LABEL_RULES.names() == ["auto", "count", "idlg"]
    gen = torch.Generator().manual_seed(3)
    model = tiny_lenet(seed=7)
    y = torch.tensor([2, 5, 8])  # distinct labels: the iDLG batch rule is exact here
    update = simulate_client(model, torch.randn(3, 3, 16, 16, generator=gen), y)
    assert recover_labels(model, update.tensors, 3, rule="idlg").tolist() == [2, 5, 8]
    with pytest.raises(UnknownNameError, match="known label rules: auto, count, idlg"):
        ATTACKS.get("idlg")(label_rule="magic")
    with pytest.raises(GradleakError, match="exceed 10 classes"):
        recover_labels(model, update.tensors, 11, rule="idlg")
