"""Registry-wide invariants: every registered attack, defense, metric, model and data set.

A new member is covered the day it is registered: each table below must name exactly the
registry's members (not a subset), so registering something without a case here fails.
Checked for every member: output shapes, the caller's model and inputs untouched, the
same seed giving the same result, and an unknown option naming the accepted ones.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_lenet
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data import DATASETS, load_dataset
from gradleak.defenses import DEFENSES, ClientBatch, TrainingDefense, parse_defense
from gradleak.errors import DatasetNotFoundError, GradleakError
from gradleak.metrics import METRICS
from gradleak.models import MODELS, build_model, model_options
from gradleak.records import AttackerKnowledge, LabelKnowledge, LocalTraining

# --- the caller's objects, untouched ------------------------------------------------------


def snapshot(model: nn.Module) -> dict:
    """Everything an operation could change on the caller's model."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
        "ids": [id(p) for p in model.parameters()],
    }


def untouched(model: nn.Module, before: dict) -> list[str]:
    """What changed since `snapshot` (empty: nothing)."""
    after = snapshot(model)
    changed = [k for k, v in before["state"].items()
               if k not in after["state"] or not torch.equal(v, after["state"][k])]
    for key in ("modes", "grad", "hooks", "ids"):
        if before[key] != after[key]:
            changed.append(key)
    if any((a is None) != (b is None) or (a is not None and not torch.equal(a, b))
           for a, b in zip(before["grads"], after["grads"])):
        changed.append("grads")
    return changed


def tensors_equal(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# --- attacks ------------------------------------------------------------------------------


def _conv():
    return tiny_lenet(channels=3, size=8, classes=4)


def _fc():
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4))


def _chain():  # a bias-free LeakyReLU chain, R-GAP's kind of network
    torch.manual_seed(4)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 256, bias=False), nn.LeakyReLU(0.2),
                         nn.Linear(256, 4, bias=False))


def _imprinted():  # a malicious server's imprint block in front of the tiny LeNet
    from gradleak.server import parse_server

    return parse_server("imprint:bins=8,estimate=gaussian").build(_conv(), (3, 8, 8), seed=0).model


def _trapped():  # a malicious server's trap weights in the tiny MLP's first layer
    from gradleak.server import parse_server

    return parse_server("trap:fire=0.2").build(_fc(), (3, 8, 8), seed=0).model


def _fished():  # a malicious server's class fishing on the tiny LeNet's last layer
    from gradleak.server import parse_server

    return parse_server("fishing:target=2").build(_conv(), (3, 8, 8), seed=0).model
def _conv_fc():  # conv -> flatten -> FC ReLU -> FC: spear-deep's kind of network
    torch.manual_seed(6)
    return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def _latent_generator():  # a tiny DCGAN making the 3x8x8 images the cases attack
    from gradleak.generators import DCGANGenerator

    torch.manual_seed(5)
    return DCGANGenerator(latent_dim=4, image_size=8, channels=3, width=4).eval()


# name -> (model, tiny options); must name every registered attack
ATTACK_CASES = {
    "dlg": (_conv, {"iterations": 3, "restarts": 2}),
    "idlg": (_conv, {"iterations": 3, "restarts": 2}),
    "ig": (_conv, {"iterations": 4, "restarts": 2}),
    "bayes": (_conv, {"iterations": 4, "restarts": 2}),
    "l2": (_conv, {"iterations": 4}),
    "l1": (_conv, {"iterations": 4}),
    "cosine": (_conv, {"iterations": 4}),
    "analytic-fc": (_fc, {}),
    "rgap": (_chain, {}),
    "spear": (_fc, {}),
    "spear-deep": (_conv_fc, {"iterations": 5}),
    "imprint": (_imprinted, {}),
    "trap": (_trapped, {}),
    "dimitrov": (_conv, {"iterations": 3, "restarts": 2}),
    "fishing": (_fished, {"iterations": 4, "restarts": 2}),
    "gias": (_conv, {"generator": _latent_generator(), "latent_iterations": 3, "generator_iterations": 2,
                     "restarts": 2}),
    "ggl": (_conv, {"generator": _latent_generator(), "budget": 12, "restarts": 2}),
}


def test_every_attack_has_a_case():
    assert set(ATTACK_CASES) == set(ATTACKS.names())


def _attack_problem(name):
    make, _ = ATTACK_CASES[name]
    model = make()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(1, 3, 8, 8, generator=gen)
    labels = torch.tensor([2])
    update = simulate_client(model, images, labels)
    knowledge = AttackerKnowledge(num_samples=1, input_shape=(3, 8, 8), num_classes=4,
                                  label_knowledge=LabelKnowledge.GIVEN, labels=labels.clone())
    return model, update, knowledge


def check_attack(attack, model, update, knowledge) -> list[str]:
    """The shared invariants of one attack on one problem; returns what broke."""
    problems = []
    before = snapshot(model)
    update_before = tuple(t.clone() for t in update.tensors)
    labels_before = knowledge.labels.clone()
    a = attack.reconstruct(model, update, knowledge, seed=7)
    if tuple(a.data.shape) != (knowledge.num_samples, *knowledge.input_shape):
        problems.append(f"shape {tuple(a.data.shape)}")
    if a.labels is not None and tuple(a.labels.shape) != (knowledge.num_samples,):
        problems.append(f"labels shape {tuple(a.labels.shape)}")
    problems += [f"model {c}" for c in untouched(model, before)]
    if not tensors_equal(update.tensors, update_before):
        problems.append("update tensors")
    if not torch.equal(knowledge.labels, labels_before):
        problems.append("knowledge labels")
    b = attack.reconstruct(model, update, knowledge, seed=7)
    if not torch.equal(a.data, b.data):
        problems.append("same seed, different result")
    return problems


@pytest.mark.parametrize("name", sorted(ATTACK_CASES))
def test_attack_invariants(name):
    _, options = ATTACK_CASES[name]
    model, update, knowledge = _attack_problem(name)
    attack = ATTACKS.create(name, options)
    assert check_attack(attack, model, update, knowledge) == []


def _attention():
    return build_model("vit", num_classes=4, input_shape=(3, 8, 8), seed=1, dim=16, depth=1, heads=2)


@pytest.mark.parametrize("name", sorted(n for n, (make, _) in ATTACK_CASES.items() if make is _conv))
def test_attack_invariants_on_an_attention_model(name):
    # fused attention kernels have no double backward: the attacks must run (on the math kernel) and say so
    _, options = ATTACK_CASES[name]
    model = _attention()
    images, labels = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([2])
    update = simulate_client(model, images, labels)
    knowledge = AttackerKnowledge(num_samples=1, input_shape=(3, 8, 8), num_classes=4,
                                  label_knowledge=LabelKnowledge.GIVEN, labels=labels.clone())
    attack = ATTACKS.create(name, options)
    assert check_attack(attack, model, update, knowledge) == []
    result = attack.reconstruct(model, update, knowledge, seed=0)
    assert any("math kernel" in note for note in result.notes)
    assert result.gradient_mismatch is not None and result.gradient_mismatch >= 0


@pytest.mark.parametrize("name", sorted(ATTACK_CASES))
def test_unknown_attack_option_lists_the_accepted_ones(name):
    with pytest.raises(GradleakError, match=r"does not take \['bogus'\]; it takes: "):
        ATTACKS.create(name, {"bogus": 1})


def test_the_invariant_check_catches_an_attack_that_touches_the_callers_model():
    # a mutation of the kind the check exists for: an attack that scales the caller's weights
    class Scaling(type(ATTACKS.create("l2", {"iterations": 2}))):
        def reconstruct(self, model, update, knowledge, **kwargs):
            with torch.no_grad():
                next(model.parameters()).mul_(1.0001)
            return super().reconstruct(model, update, knowledge, **kwargs)

    class Hooking(type(ATTACKS.create("l2", {"iterations": 2}))):
        def reconstruct(self, model, update, knowledge, **kwargs):
            model.register_forward_hook(lambda *a: None)
            return super().reconstruct(model, update, knowledge, **kwargs)

    model, update, knowledge = _attack_problem("l2")
    assert "model 0.weight" in check_attack(Scaling(iterations=2), model, update, knowledge)
    model, update, knowledge = _attack_problem("l2")
    assert "model hooks" in check_attack(Hooking(iterations=2), model, update, knowledge)


# --- defenses -----------------------------------------------------------------------------

# name -> a spec that changes the update; must name every registered defense
DEFENSE_CASES = {
    "ats": "ats:policy=3-1-7",
    "dpsgd": "dpsgd:noise_multiplier=0.5,max_grad_norm=0.1",
    "gaussian": "gaussian:sigma=0.01",
    "laplacian": "laplacian:b=0.01",
    "normclip": "normclip:max_norm=0.01",
    "prune": "prune:rate=0.5",
    "qsgd": "qsgd:bits=2",
    "signsgd": "signsgd:scale=mean",
    "soteria": "soteria:rate=0.5",
    "topk": "topk:keep=0.1,scope=tensor",
    "valueclip": "valueclip:bound=0.001",
}


def test_every_defense_has_a_case():
    assert set(DEFENSE_CASES) == set(DEFENSES.names())


@pytest.mark.parametrize("name", sorted(DEFENSE_CASES))
def test_defense_invariants(name):
    model = tiny_lenet(channels=3, size=8, classes=4)
    gen = torch.Generator().manual_seed(2)
    images, labels = torch.rand(2, 3, 8, 8, generator=gen), torch.tensor([0, 3])
    update = simulate_client(model, images, labels)
    client = ClientBatch(model, images, labels, LocalTraining(), "eval", seed=1)
    defense = parse_defense(DEFENSE_CASES[name])
    before, tensors, pixels = snapshot(model), tuple(t.clone() for t in update.tensors), images.clone()
    out = defense.transform(update, seed=3, client=client)
    assert out is not update and out.names == update.names
    assert [t.shape for t in out.tensors] == [t.shape for t in update.tensors]
    assert out.defenses == (defense.spec(),)
    assert not tensors_equal(out.tensors, update.tensors)  # the case does change the update
    assert untouched(model, before) == []
    assert tensors_equal(update.tensors, tensors) and torch.equal(images, pixels)
    again = defense.transform(update, seed=3, client=client)
    assert tensors_equal(out.tensors, again.tensors)
    assert parse_defense(defense.spec()).spec() == defense.spec()  # specs round-trip
    with pytest.raises(GradleakError, match=r"does not take \['bogus'\]; it takes: "):
        DEFENSES.create(name, {"bogus": 1})
    if isinstance(defense, TrainingDefense):  # it recomputes the update, so only first in a chain
        noisy = parse_defense("gaussian:sigma=0.1").transform(update, seed=0)
        with pytest.raises(GradleakError, match="must come first"):
            defense.transform(noisy, client=client)


# --- metrics ------------------------------------------------------------------------------

METRIC_CASES = {"mse", "psnr", "ssim", "lpips", "lpips-vgg", "stlpips", "stlpips-vgg"}


def test_every_metric_has_a_case():
    assert METRIC_CASES == set(METRICS.names())


@pytest.mark.parametrize("name", sorted(METRIC_CASES))
def test_metric_invariants(name):
    metric = METRICS.get(name)
    try:
        metric.check()
    except GradleakError as exc:
        pytest.skip(f"weights missing here: {str(exc).splitlines()[0][:100]}")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=gen)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    xc, yc = x.clone(), y.clone()
    per = metric.per_sample(y, x)
    pair = metric.pairwise(y, x[:2])
    assert per.shape == (3,) and pair.shape == (3, 2)
    torch.testing.assert_close(pair.diagonal().double(), per[:2].double(), rtol=1e-5, atol=1e-6)
    assert torch.equal(x, xc) and torch.equal(y, yc)
    same, other = metric.per_sample(x, x), metric.per_sample(y, x)
    closer = (same > other) if metric.higher_is_better else (same < other)
    assert bool(closer.all())  # an image is closest to itself, in the metric's own direction
    cost = metric.cost(y, x)
    assert cost.shape == (3, 3) and bool((cost.argmin(1) == torch.arange(3)).all())


# --- models -------------------------------------------------------------------------------

MODEL_SHAPES = {"fcn3": (1, 28, 28)}  # the rest take 3x32x32
MODEL_CASES = {"lenet", "convnet", "mlp", "precode", "resnet18", "resnet34", "cnn6", "cnn6-d", "fcn3", "vit"}


def test_every_model_has_a_case():
    assert MODEL_CASES == set(MODELS.names())


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_model_invariants(name):
    shape = MODEL_SHAPES.get(name, (3, 32, 32))
    classes = 1 if name in ("cnn6", "cnn6-d", "fcn3") else 10
    rng = torch.get_rng_state()
    a = build_model(name, num_classes=classes, input_shape=shape, seed=3)
    assert torch.equal(rng, torch.get_rng_state())  # building never moves the global stream
    b = build_model(name, num_classes=classes, input_shape=shape, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not a.training
    with torch.no_grad():
        assert a(torch.rand(2, *shape)).shape == (2, classes)
    with pytest.raises(GradleakError, match=r"does not take \['bogus'\]; it takes: "):
        build_model(name, num_classes=classes, input_shape=shape, bogus=1)
    assert isinstance(model_options(name), dict)


# --- data sets ----------------------------------------------------------------------------

BUILT_IN = {"photos", "faces", "digits"}
FROM_FILES = {"cifar10", "cifar100", "mnist", "fashion-mnist", "folder"}


def test_every_dataset_has_a_case():
    assert BUILT_IN | FROM_FILES == set(DATASETS.names())


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_datasets(name):
    for split in ("train", "test"):
        data = load_dataset(name, split=split)
        assert data.images.dim() == 4 and data.images.dtype == torch.float32
        assert 0 <= float(data.images.min()) and float(data.images.max()) <= 1
        assert int(data.labels.min()) >= 0 and int(data.labels.max()) < data.num_classes
        x, _ = data.batch([0])
        x.mul_(0)  # batches are copies
        assert float(load_dataset(name, split=split).images[0].abs().sum()) > 0
    again = load_dataset(name)
    assert torch.equal(again.images, load_dataset(name).images)


@pytest.mark.parametrize("name", sorted(FROM_FILES))
def test_file_datasets_name_what_is_missing(name, tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_dataset(name, tmp_path / "empty")


def test_snapshot_sees_every_kind_of_change():
    model = _conv().eval()
    before = snapshot(model)
    copy.deepcopy(model).train()
    assert untouched(model, before) == []
    model.train()
    assert "modes" in untouched(model, before)
    model.eval()
    model(torch.rand(1, 3, 8, 8)).sum().backward()
    assert "grads" in untouched(model, before)


# --- devices ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ATTACK_CASES))
def test_attacks_create_nothing_off_the_models_device(name):
    """With the default device set to `meta`, any tensor an attack creates without naming a
    device lands there and breaks (or changes) the result: attacks must follow the model's
    device. The result must equal the plain run's, bit for bit, and live on the CPU."""
    _, options = ATTACK_CASES[name]
    model, update, knowledge = _attack_problem(name)
    plain = ATTACKS.create(name, options).reconstruct(model, update, knowledge, seed=3)
    with torch.device("meta"):
        guarded = ATTACKS.create(name, options).reconstruct(model, update, knowledge, seed=3)
    assert guarded.data.device.type == "cpu" and torch.equal(guarded.data, plain.data)
    assert guarded.gradient_mismatch == plain.gradient_mismatch


@pytest.mark.parametrize("name", sorted(DEFENSE_CASES))
def test_defenses_create_nothing_off_the_updates_device(name):
    model = tiny_lenet(channels=3, size=8, classes=4)
    images, labels = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 3])
    update = simulate_client(model, images, labels)
    client = ClientBatch(model, images, labels, LocalTraining(), "eval", seed=1)
    defense = parse_defense(DEFENSE_CASES[name])
    plain = defense.transform(update, seed=3, client=client)
    with torch.device("meta"):
        guarded = defense.transform(update, seed=3, client=client)
    assert all(t.device.type == "cpu" for t in guarded.tensors)
    assert tensors_equal(plain.tensors, guarded.tensors)


def test_the_device_guard_catches_a_tensor_made_without_a_device():
    def careless(model):
        return torch.zeros(2) + next(model.parameters()).sum().detach()

    model = _conv()
    with torch.device("meta"), pytest.raises(Exception):
        careless(model).tolist()
