"""The rgap attack end to end: exact recovery (logistic and cross-entropy), label recovery,
the paper's batch treatment, one-step FedAvg, and refusals before any work."""

import pytest
import torch
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge, LocalTraining, Protocol


def _case(model_name, shape, classes=1, dtype=torch.float32, seed=0, batch=1, label=None, training=None):
    model = build_model(model_name, num_classes=classes, input_shape=shape, seed=seed).to(dtype)
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    if classes == 1:  # misclassified on purpose, as in the paper
        labels = (model(x).detach()[:, 0] <= 0).long()
        training = training or LocalTraining(loss="logistic")
    else:
        labels = torch.full((batch,), 3 if label is None else label)
        training = training or LocalTraining()
    update = simulate_client(model, x, labels, training)
    return model, x, labels, update


def _knowledge(shape, labels, classes, given=False, training=None):
    return AttackerKnowledge(num_samples=len(labels), input_shape=shape, num_classes=max(classes, 2),
                             label_knowledge=LabelKnowledge.GIVEN if given else LabelKnowledge.UNKNOWN,
                             labels=labels if given else None, knows_training=training is not None,
                             training=training)


def _psnr(a, b):
    return float(-10 * torch.log10(((a.clamp(0, 1) - b) ** 2).mean().clamp_min(1e-20)))


@pytest.mark.parametrize("name,shape", [("fcn3", (1, 8, 8)), ("cnn6", (3, 16, 16))])
def test_single_image_is_exact_in_float64_and_above_40_db_in_float32(name, shape):
    model, x, labels, update = _case(name, shape, dtype=torch.float64)
    rec = ATTACKS.get("rgap")().reconstruct(model, update, _knowledge(shape, labels, 1))
    assert float((rec.data - x).norm() / x.norm()) < 1e-4
    assert rec.labels.tolist() == labels.tolist()  # the label came from gradient consistency
    assert rec.restart_losses[0] < 1e-6 and rec.status == "ok" and rec.restart_mode == "analytic"
    model, x, labels, update = _case(name, shape)
    assert _psnr(ATTACKS.get("rgap")().reconstruct(model, update, _knowledge(shape, labels, 1)).data, x) >= 40


def test_cross_entropy_variant_recovers_k_and_the_label_from_the_softmax():
    shape = (3, 16, 16)
    model, x, labels, update = _case("cnn6", shape, classes=10)
    rec = ATTACKS.get("rgap")().reconstruct(model, update, _knowledge(shape, labels, 10))
    assert rec.labels.tolist() == [3] and _psnr(rec.data, x) >= 40
    # two classes: the sign pattern fits both labels; gradient consistency picks the true one
    from gradleak.attacks.rgap import softmax_top

    for label in (0, 1):
        model, x, labels, update = _case("fcn3", (1, 8, 8), classes=2, label=label, dtype=torch.float64)
        with pytest.raises(GradleakError, match="cannot tell the label"):
            softmax_top(update.tensors[-1], model[-1].weight, None)
        for given in (False, True):
            rec = ATTACKS.get("rgap")().reconstruct(model, update, _knowledge((1, 8, 8), labels, 2, given=given))
            assert rec.labels.tolist() == [label] and float((rec.data - x).norm() / x.norm()) < 1e-6


def test_batch_gives_one_combination_for_every_sample_and_needs_the_labels():
    shape = (1, 8, 8)
    model, x, labels, update = _case("fcn3", shape, batch=3)
    with pytest.raises(GradleakError, match="needs the labels"):
        ATTACKS.get("rgap")().reconstruct(model, update, _knowledge(shape, labels, 1))
    rec = ATTACKS.get("rgap")().reconstruct(model, update, _knowledge(shape, labels, 1, given=True))
    assert rec.status == "combination" and rec.data.shape == (3, *shape)
    assert torch.equal(rec.data[0], rec.data[1]) and torch.equal(rec.data[0], rec.data[2])
    # the combination is closer to the batch than to unrelated images
    other = torch.rand(3, *shape, generator=torch.Generator().manual_seed(99))
    assert ((rec.data[0] - x) ** 2).mean() < ((rec.data[0] - other) ** 2).mean()


def test_one_fedavg_step_with_known_learning_rate_is_a_gradient_and_more_steps_are_refused():
    shape = (1, 8, 8)
    training = LocalTraining(protocol=Protocol.FEDAVG, lr=0.05, loss="logistic")
    model, x, labels, update = _case("fcn3", shape, dtype=torch.float64, training=training)
    rec = ATTACKS.get("rgap")().reconstruct(model, update, _knowledge(shape, labels, 1, training=training))
    assert float((rec.data - x).norm() / x.norm()) < 1e-6
    with pytest.raises(GradleakError, match="learning rate known"):
        ATTACKS.get("rgap")().reconstruct(model, update, _knowledge(shape, labels, 1))
    two = LocalTraining(protocol=Protocol.FEDAVG, lr=0.05, loss="logistic", epochs=2)
    model, x, labels, update = _case("fcn3", shape, training=two)
    with pytest.raises(GradleakError, match="got 2 local steps"):
        ATTACKS.get("rgap")().reconstruct(model, update, _knowledge(shape, labels, 1, training=two))


@pytest.mark.parametrize("name,expected", [
    ("convnet", ["'act0' (ReLU)", "'pool0' (MaxPool2d)", "'norm0' (BatchNorm2d)", "has a bias"]),
    ("resnet18", ["'bn1' (BatchNorm2d)", "not one flat nn.Sequential"]),
])
def test_relu_convnet_and_resnet_are_refused_before_any_work(name, expected, monkeypatch):
    import gradleak.attacks.rgap.attack as module

    model = build_model(name, num_classes=10, input_shape=(3, 32, 32))
    update = simulate_client(model, torch.rand(1, 3, 32, 32), torch.tensor([1]))
    monkeypatch.setattr(module, "validate_update", lambda *a: pytest.fail("work started before the refusal"))
    with pytest.raises(GradleakError) as info:
        ATTACKS.get("rgap")().reconstruct(model, update, _knowledge((3, 32, 32), torch.tensor([1]), 10))
    assert all(text in str(info.value) for text in expected) and "\n" not in str(info.value)


def test_logistic_needs_one_logit_and_cross_entropy_one_sample():
    shape = (1, 8, 8)
    model, x, labels, update = _case("fcn3", shape, classes=10, batch=2)
    with pytest.raises(GradleakError, match="inverts one sample"):
        ATTACKS.get("rgap")().reconstruct(model, update, _knowledge(shape, labels, 10))
    one = nn.Sequential(nn.Flatten(), nn.Linear(64, 4, bias=False), nn.LeakyReLU(0.2), nn.Linear(4, 3, bias=False))
    update = simulate_client(one, x[:1], torch.tensor([1]))
    update = type(update)(**{**update.__dict__, "training": LocalTraining(loss="logistic")})
    with pytest.raises(GradleakError, match="needs one logit"):
        ATTACKS.get("rgap")().reconstruct(one, update, _knowledge(shape, torch.tensor([1]), 3))
