import math

import pytest
import torch
from torch import nn

from gradleak.client.losses import reseed_stochastic_layers
from gradleak.errors import GradleakError, UnknownNameError
from gradleak.models import MODELS, build_model, load_checkpoint, model_options

NAMES = ["cnn6", "cnn6-d", "convnet", "fcn3", "lenet", "mlp", "precode", "resnet18", "resnet34", "vit"]
OTHER_SHAPE = {"fcn3": (3, 32, 32), "cnn6": (1, 28, 28), "cnn6-d": (1, 32, 32)}
# small widths keep the repeated builds fast; the default architectures are tested elsewhere
FAST = {"convnet": {"width": 8}, "resnet18": {"width": 8}, "resnet34": {"width": 8}, "mlp": {"hidden": (32,)}}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def double_backward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What gradient-matching attacks do: a gradient of a function of parameter gradients
    (attention on the math kernel, as the attacks run it)."""
    from gradleak.attacks.engine.attention import has_attention, math_attention

    x = x.clone().requires_grad_(True)
    with math_attention(has_attention(model)):
        out = model(x)
        loss = nn.functional.cross_entropy(out, torch.arange(len(x)) % out.shape[1])
        grads = torch.autograd.grad(loss, [p for p in model.parameters()], create_graph=True)
        sum((g**2).sum() for g in grads).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    return x.grad


def test_registry_holds_exactly_the_documented_models_with_summaries():
    assert MODELS.names() == NAMES
    assert all(entry.summary for entry in MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_builds_for_cifar_and_another_shape_and_double_backward_works(name):
    first = (1, 28, 28) if name == "fcn3" else (3, 32, 32)
    for shape in (first, OTHER_SHAPE.get(name, (1, 28, 28))):
        model = build_model(name, num_classes=7, input_shape=shape)
        assert not model.training
        x = torch.rand(2, *shape)
        assert model(x).shape == (2, 7)
        outputs = []
        for _ in range(2):  # PRECODE samples noise on purpose: seed it
            reseed_stochastic_layers(model, 0)
            outputs.append(model(x))
        assert torch.equal(*outputs)
        double_backward(model, x)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_build_is_deterministic_and_leaves_global_rng_alone(name):
    shape = (1, 28, 28) if name == "fcn3" else (3, 32, 32)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = build_model(name, num_classes=3, input_shape=shape, seed=5, **FAST.get(name, {}))
    b = build_model(name, num_classes=3, input_shape=shape, seed=5, **FAST.get(name, {}))
    c = build_model(name, num_classes=3, input_shape=shape, seed=6, **FAST.get(name, {}))
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    weights = [k for k in sa if k.endswith("weight") and sa[k].dim() > 1]
    assert not any(torch.equal(sa[k], sc[k]) for k in weights)


def test_lenet_is_dlgs():
    model = build_model("lenet", num_classes=10, input_shape=(3, 32, 32))
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 12, (5, 5), (2, 2), (2, 2)), (12, 12, (5, 5), (2, 2), (2, 2)), (12, 12, (5, 5), (1, 1), (2, 2))]
    assert model[-1].in_features == 768 and count(model, nn.Sigmoid) == 3
    params = list(model.parameters())
    assert all(p.min() >= -0.5 and p.max() <= 0.5 for p in params)
    # U(-0.5, 0.5) fills the range; torch's default bounds are far tighter for the head bias
    assert model[-1].bias.abs().max() > 0.3
    default = build_model("lenet", num_classes=10, input_shape=(3, 32, 32), init="default")
    assert default[-1].bias.abs().max() < 1 / math.sqrt(768) + 1e-6
    assert build_model("lenet", num_classes=10, input_shape=(1, 28, 28))[-1].in_features == 12 * 7 * 7
    relu = build_model("lenet", num_classes=10, input_shape=(3, 32, 32), activation="relu")
    assert count(relu, nn.ReLU) == 3 and count(relu, nn.Sigmoid) == 0
    leaky = build_model("lenet", num_classes=10, input_shape=(3, 32, 32), activation="leaky_relu")
    assert count(leaky, nn.LeakyReLU) == 3 and count(build_model(
        "lenet", num_classes=10, input_shape=(3, 32, 32), activation="tanh"), nn.Tanh) == 3
    with pytest.raises(GradleakError, match=r"lenet: option init must be one of uniform, default; got 'xavier'"):
        build_model("lenet", num_classes=10, input_shape=(3, 32, 32), init="xavier")
    with pytest.raises(GradleakError, match=r"option activation must be one of .*relu.*; got 'swish'"):
        build_model("lenet", num_classes=10, input_shape=(3, 32, 32), activation="swish")


def conv_output_shapes(model: nn.Sequential, shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    x, shapes = torch.rand(1, *shape), []
    for layer in model:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            shapes.append(tuple(x.shape[1:]))
    return shapes


def test_rgap_models_match_the_paper():
    cnn6 = build_model("cnn6", num_classes=1, input_shape=(3, 32, 32))
    assert conv_output_shapes(cnn6, (3, 32, 32)) == [
        (12, 17, 17), (36, 9, 9), (36, 9, 9), (36, 9, 9), (64, 5, 5), (128, 5, 5)]
    assert [type(m) for m in cnn6][-2:] == [nn.Flatten, nn.Linear] and cnn6[-1].in_features == 3200
    assert cnn6(torch.rand(3, 3, 32, 32)).shape == (3, 1)
    d = build_model("cnn6-d", num_classes=1, input_shape=(3, 32, 32))
    assert conv_output_shapes(d, (3, 32, 32)) == [
        (12, 17, 17), (20, 9, 9), (36, 9, 9), (36, 9, 9), (64, 5, 5), (128, 5, 5)]
    fcn3 = build_model("fcn3", num_classes=1, input_shape=(1, 28, 28))
    assert [(m.in_features, m.out_features) for m in fcn3 if isinstance(m, nn.Linear)] == [
        (784, 1000), (1000, 100), (100, 1)]
    # 3*12*16 + 12*36*9 + 2*36*36*9 + 36*64*9 + 64*128*9 + 3200
    assert n_params(cnn6) == 125_456
    assert n_params(d) == 576 + 12 * 20 * 9 + 20 * 36 * 9 + 36 * 36 * 9 + 36 * 64 * 9 + 64 * 128 * 9 + 3200
    assert n_params(fcn3) == 784 * 1000 + 1000 * 100 + 100
    for model in (cnn6, d, fcn3):
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert all(m.bias is None for m in layers)
        acts = [m for m in model if not isinstance(m, (nn.Conv2d, nn.Linear, nn.Flatten))]
        # one LeakyReLU(0.2) after every layer but the last, and nothing else
        assert len(acts) == len(layers) - 1
        assert all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in acts)
        assert isinstance(model[-1], nn.Linear)


def convnet(**options) -> nn.Sequential:
    return build_model("convnet", num_classes=10, input_shape=(3, 32, 32), **{"width": 4, **options})


def test_convnet_default_is_geipings():
    model = build_model("convnet", num_classes=10, input_shape=(3, 32, 32))
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 256, 256, 256, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is not None for c in convs)
    assert count(model, nn.BatchNorm2d) == 8 and count(model, nn.ReLU) == 8 and count(model, nn.Dropout) == 0
    names = list(dict(model.named_children()))
    assert names.index("pool0") == names.index("act5") + 1 and names.index("pool1") == names.index("act7") + 1
    assert all(m.kernel_size == 3 for m in model if isinstance(m, nn.MaxPool2d))
    assert model.linear.in_features == 36 * 64
    assert build_model("convnet", num_classes=10, input_shape=(3, 9, 9), width=4)(torch.rand(1, 3, 9, 9)).shape \
        == (1, 10)


def test_convnet_micro_design_switches():
    x = torch.rand(2, 3, 32, 32)
    plain = convnet(activation="none")
    assert count(plain, nn.ReLU) == 0 and not any("act" in n for n, _ in plain.named_children())
    assert count(convnet(activation="sigmoid"), nn.Sigmoid) == 8 and count(convnet(activation="gelu"), nn.GELU) == 8
    dropped = convnet(dropout=0.25)
    assert count(dropped, nn.Dropout) == 1 and dropped.dropout.p == 0.25
    nopool = convnet(maxpool=False)
    assert count(nopool, nn.MaxPool2d) == 0 and nopool.linear.in_features == 4 * 4 * 32 * 32
    big = convnet(kernel_size=5)
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in big if isinstance(c, nn.Conv2d))
    padded = convnet(padding=2)
    assert all(c.padding == (2, 2) for c in padded if isinstance(c, nn.Conv2d))
    # 32 + 6*2 = 44 -> pool 14 -> + 2*2 = 18 -> pool 6
    assert padded.linear.in_features == 16 * 6 * 6
    small = convnet(kernel_size=1)
    assert small.linear.in_features == 16 * 3 * 3 and all(
        c.padding == (0, 0) for c in small if isinstance(c, nn.Conv2d))
    unbiased = convnet(bias=False)
    assert all(m.bias is None for m in unbiased.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert count(convnet(norm="none"), nn.BatchNorm2d) == 0
    assert count(convnet(norm="group"), nn.GroupNorm) == 8
    for model in (plain, dropped, nopool, big, padded, small, unbiased):
        assert model(x).shape == (2, 10)


def test_convnet_and_resnet_double_backward_in_train_mode():
    # clients train with BatchNorm batch statistics; attacks replay that mode
    resnet = build_model("resnet18", num_classes=4, input_shape=(3, 16, 16), width=4)
    for model, shape in ((convnet(dropout=0.1), (3, 32, 32)), (resnet, (3, 16, 16))):
        model.train()
        torch.manual_seed(0)
        double_backward(model, torch.rand(3, *shape))


def test_option_values_are_checked():
    cases = [
        ({"kernel_size": 4}, r"convnet: option kernel_size must be a positive odd integer; got 4"),
        ({"dropout": 1.0}, r"option dropout must be a number in \[0, 1\); got 1.0"),
        ({"width": 0}, r"option width must be a positive integer; got 0"),
        ({"bias": "false"}, r"option bias must be true or false; got 'false'"),
        ({"padding": -1}, r"option padding must be an integer >= 0; got -1"),
        ({"norm": "layer"}, r"option norm must be one of batch, group, none; got 'layer'"),
        ({"activation": "swish"}, r"option activation must be one of relu, sigmoid, .*; got 'swish'"),
    ]
    for options, message in cases:
        with pytest.raises(GradleakError, match=message):
            convnet(**options)
    with pytest.raises(GradleakError, match=r"input_shape \(3, 8, 8\) is too small.*pool1"):
        build_model("convnet", num_classes=10, input_shape=(3, 8, 8))
    with pytest.raises(GradleakError, match=r"input_shape \(3, 4, 4\) is too small.*conv1"):
        build_model("convnet", num_classes=10, input_shape=(3, 4, 4), kernel_size=3, padding=0)
    with pytest.raises(GradleakError, match=r"input_shape must be \(channels, height, width\).*got \(32, 32\)"):
        build_model("lenet", num_classes=10, input_shape=(32, 32))
    with pytest.raises(GradleakError, match=r"num_classes must be an integer >= 1, got 0"):
        build_model("lenet", num_classes=0, input_shape=(3, 32, 32))
    with pytest.raises(GradleakError, match=r"mlp: option hidden must be a positive integer; got -3"):
        build_model("mlp", num_classes=2, input_shape=(1, 8, 8), hidden=(16, -3))


def test_resnet_parameter_counts_and_options():
    assert n_params(build_model("resnet18", num_classes=10, input_shape=(3, 32, 32))) == 11_173_962
    assert n_params(build_model("resnet34", num_classes=10, input_shape=(3, 32, 32))) == 21_282_122
    narrow = build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=16)
    assert narrow.conv1.out_channels == 16 and narrow.conv1.stride == (1, 1) and narrow.linear.in_features == 128
    assert count(narrow, nn.MaxPool2d) == 0 and count(narrow, nn.BatchNorm2d) == 20
    assert count(build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=8, norm="none"),
                 nn.BatchNorm2d) == 0
    assert count(build_model("resnet34", num_classes=10, input_shape=(3, 32, 32), width=8, norm="group"),
                 nn.GroupNorm) == 36


def test_mlp_options():
    model = build_model("mlp", num_classes=3, input_shape=(1, 8, 8), hidden=(16, 8), activation="tanh", bias=False)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 16), (16, 8), (8, 3)]
    assert all(m.bias is None for m in linears) and count(model, nn.Tanh) == 2
    assert [type(m) for m in build_model("mlp", num_classes=3, input_shape=(1, 8, 8), hidden=())] == [
        nn.Flatten, nn.Linear]
    assert build_model("mlp", num_classes=3, input_shape=(1, 8, 8), hidden=12)[1].out_features == 12


def test_checkpoint_round_trip_in_every_accepted_layout(tmp_path):
    model = build_model("convnet", num_classes=10, input_shape=(3, 32, 32), width=4, seed=3)
    with torch.no_grad():  # non-default BN buffers must travel too
        model.norm0.running_mean.add_(0.5)
    x = torch.rand(2, 3, 32, 32)
    layouts = {
        "bare": model.state_dict(),
        "wrapped": {"state_dict": model.state_dict(), "epoch": 3},
        "r-gap": {"model_state_dict": model.state_dict(), "epoch": 3},
        "parallel": {f"module.{k}": v for k, v in model.state_dict().items()},
    }
    for label, payload in layouts.items():
        path = tmp_path / f"{label}.pt"
        torch.save(payload, path)
        loaded = build_model("convnet", num_classes=10, input_shape=(3, 32, 32), width=4, seed=4, checkpoint=path)
        assert not loaded.training
        assert torch.equal(model(x), loaded(x)), label


def test_checkpoint_mismatches_are_refused_without_partial_loading(tmp_path):
    source = build_model("lenet", num_classes=10, input_shape=(3, 32, 32), seed=3)
    path = tmp_path / "lenet.pt"
    torch.save(source.state_dict(), path)
    target = build_model("lenet", num_classes=5, input_shape=(3, 32, 32), seed=4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(GradleakError, match=r"lenet.pt.*'7.weight' has shape \(10, 768\) in the file, "
                                            r"the model expects \(5, 768\)"):
        load_checkpoint(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())

    state = source.state_dict()
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != "4.bias"}, missing)
    with pytest.raises(GradleakError, match=r"missing.pt.*key '4.bias' \(shape \(12,\)\) is missing"):
        build_model("lenet", num_classes=10, input_shape=(3, 32, 32), checkpoint=missing)
    extra = tmp_path / "extra.pt"
    torch.save({**state, "head.weight": torch.zeros(2, 2)}, extra)
    with pytest.raises(GradleakError, match=r"extra.pt.*key 'head.weight' \(shape \(2, 2\)\) is not in the model"):
        build_model("lenet", num_classes=10, input_shape=(3, 32, 32), checkpoint=extra)

    with pytest.raises(GradleakError, match=r"checkpoint '.*nope.pt' does not exist"):
        build_model("lenet", num_classes=10, input_shape=(3, 32, 32), checkpoint=tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GradleakError, match=r"junk.pt' cannot be read"):
        build_model("lenet", num_classes=10, input_shape=(3, 32, 32), checkpoint=tmp_path / "junk.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(GradleakError, match=r"tensor.pt' holds a Tensor; expected a state_dict"):
        build_model("lenet", num_classes=10, input_shape=(3, 32, 32), checkpoint=tmp_path / "tensor.pt")
    torch.save({"0.weight": [1, 2]}, tmp_path / "lists.pt")
    with pytest.raises(GradleakError, match=r"entry '0.weight' is a list, not a tensor"):
        build_model("lenet", num_classes=10, input_shape=(3, 32, 32), checkpoint=tmp_path / "lists.pt")


def test_unknown_names_and_options_are_listed():
    with pytest.raises(UnknownNameError, match="unknown model 'vgg'; known models: " + ", ".join(NAMES)):
        build_model("vgg", num_classes=10, input_shape=(3, 32, 32))
    with pytest.raises(GradleakError, match=r"model 'convnet' does not take \['depth'\]; "
                                            r"it takes: width=64, bias=True, "
                                            r"activation='relu', dropout=0.0, maxpool=True, kernel_size=3, "
                                            r"padding=None, norm='batch'"):
        build_model("convnet", num_classes=10, input_shape=(3, 32, 32), depth=3)
    with pytest.raises(GradleakError, match=r"model 'cnn6' does not take \['width'\]; it takes: nothing"):
        build_model("CNN6", num_classes=1, input_shape=(3, 32, 32), width=3)
    assert model_options("lenet") == {"activation": "sigmoid", "init": "uniform"}
    assert model_options("resnet18") == {"width": 64, "norm": "batch"}
    assert model_options("fcn3") == {}
    with pytest.raises(UnknownNameError):
        model_options("vgg")


def test_a_users_model_file_builds_like_a_registered_model(tmp_path):
    from gradleak.errors import GradleakError

    file = tmp_path / "mine.py"
    file.write_text(
        "from torch import nn\n"
        "def make(num_classes, input_shape, *, hidden=32):\n"
        "    c, h, w = input_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.Sigmoid(),"
        " nn.Linear(hidden, num_classes))\n"
    )
    model = build_model(f"{file}:make", num_classes=3, input_shape=(1, 8, 8), hidden=5)
    assert model[1].out_features == 5 and model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(GradleakError, match="has no callable 'nope'"):
        build_model(f"{file}:nope", num_classes=3, input_shape=(1, 8, 8))
    with pytest.raises(GradleakError, match="does not exist"):
        build_model(f"{tmp_path}/missing.py:make", num_classes=3, input_shape=(1, 8, 8))
