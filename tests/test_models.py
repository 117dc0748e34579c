import pytest
import torch
from torch import nn

from gradleak.errors import GradleakError, UnknownNameError
from gradleak.models import MODELS, build_model, model_options

SHAPES = {"fcn3": [(1, 28, 28), (3, 32, 32)], "mlp": [(1, 8, 8), (3, 32, 32)]}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_runs_and_double_backward_works(name):
    for shape in SHAPES.get(name, [(3, 32, 32), (1, 28, 28)]):
        model = build_model(name, num_classes=7, input_shape=shape, seed=0)
        x = torch.rand(2, *shape, requires_grad=True)
        out = model(x)
        assert out.shape == (2, 7)
        grads = torch.autograd.grad(out.logsumexp(1).mean(), list(model.parameters()), create_graph=True)
        sum((g**2).sum() for g in grads).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = build_model("convnet", num_classes=10, input_shape=(3, 32, 32), seed=1, width=8)
    b = build_model("convnet", num_classes=10, input_shape=(3, 32, 32), seed=1, width=8)
    c = build_model("convnet", num_classes=10, input_shape=(3, 32, 32), seed=2, width=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_lenet_is_dlgs():
    model = build_model("lenet", num_classes=10, input_shape=(3, 32, 32))
    assert model[-1].in_features == 768
    assert all(p.min() >= -0.5 and p.max() <= 0.5 for p in model.parameters())
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 3


def test_rgap_models_have_the_papers_layer_shapes_and_no_biases():
    model = build_model("cnn6", num_classes=1, input_shape=(3, 32, 32))
    x = torch.rand(1, 3, 32, 32)
    shapes = []
    for layer in model:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(12, 17, 17), (36, 9, 9), (36, 9, 9), (36, 9, 9), (64, 5, 5), (128, 5, 5)]
    assert model[-1].in_features == 3200 and x.shape == (1, 1)
    for name in ("cnn6", "cnn6-d", "fcn3"):
        m = build_model(name, num_classes=1, input_shape=(3, 32, 32) if name != "fcn3" else (1, 28, 28))
        assert all(getattr(mod, "bias", None) is None for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear)))
        assert all(mod.negative_slope == 0.2 for mod in m.modules() if isinstance(mod, nn.LeakyReLU))
    d = build_model("cnn6-d", num_classes=1, input_shape=(3, 32, 32))
    assert [m.out_channels for m in d if isinstance(m, nn.Conv2d)][:3] == [12, 20, 36]
    f = build_model("fcn3", num_classes=1, input_shape=(1, 28, 28))
    assert [m.in_features for m in f if isinstance(m, nn.Linear)] == [784, 1000, 100]


def test_convnet_micro_design_switches():
    def build(**kw):
        return build_model("convnet", num_classes=10, input_shape=(3, 32, 32), width=4, **kw)

    kinds = lambda m, t: sum(isinstance(x, t) for x in m.modules())  # noqa: E731
    assert kinds(build(), nn.ReLU) == 8 and kinds(build(), nn.MaxPool2d) == 2
    assert kinds(build(activation="none"), nn.ReLU) == 0
    assert kinds(build(dropout=0.1), nn.Dropout) == 8
    assert kinds(build(maxpool=False), nn.MaxPool2d) == 0
    assert all(c.kernel_size == (5, 5) for c in build(kernel_size=5).modules() if isinstance(c, nn.Conv2d))
    assert all(c.bias is None for c in build(bias=False).modules() if isinstance(c, nn.Conv2d))
    assert all(c.padding == (2, 2) for c in build(padding=2).modules() if isinstance(c, nn.Conv2d))
    assert kinds(build(norm="none"), nn.BatchNorm2d) == 0


def test_resnet_parameter_counts():
    assert sum(p.numel() for p in build_model("resnet18", num_classes=10, input_shape=(3, 32, 32)).parameters()) \
        == 11_173_962
    assert sum(p.numel() for p in build_model("resnet34", num_classes=10, input_shape=(3, 32, 32)).parameters()) \
        == 21_282_122


def test_checkpoint_round_trip_and_shape_mismatch(tmp_path):
    model = build_model("lenet", num_classes=10, input_shape=(3, 32, 32), seed=3)
    path = tmp_path / "m.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = build_model("lenet", num_classes=10, input_shape=(3, 32, 32), seed=4, checkpoint=path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    with pytest.raises(GradleakError, match=r"'7.weight' has shape \(10, 768\), the model expects \(5, 768\)"):
        build_model("lenet", num_classes=5, input_shape=(3, 32, 32), checkpoint=path)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GradleakError, match="cannot be read"):
        build_model("lenet", num_classes=10, input_shape=(3, 32, 32), checkpoint=tmp_path / "bad.pt")


def test_unknown_names_and_options_are_listed():
    with pytest.raises(UnknownNameError, match="known models: cnn6, cnn6-d, convnet"):
        build_model("vgg", num_classes=10, input_shape=(3, 32, 32))
    with pytest.raises(GradleakError, match=r"does not take options \['depth'\]; it takes: width=64"):
        build_model("convnet", num_classes=10, input_shape=(3, 32, 32), depth=3)
    with pytest.raises(GradleakError, match="input_shape"):
        build_model("convnet", num_classes=10, input_shape=(3, 4, 4))
    assert model_options("lenet") == {"activation": "sigmoid", "init": "uniform"}
