"""LPIPS and ST-LPIPS in plain torch: weight layouts, agreement with the reference code, properties.

Agreement: the real `lpips` 0.1.4 and `stlpips_pytorch` 0.0.2 code runs in a subprocess
with stubs for the modules it imports but does not need (torchvision, IPython,
torchsummary). Tolerance REF_TOL = 1e-5 absolute per image pair (both sides float32).
The standard-LPIPS comparison uses a random torchvision-format backbone checkpoint,
since the ImageNet checkpoints cannot be downloaded here; the heads are the real v0.1
ones from the installed `lpips`. Those tests skip when the packages are not installed
(`pip install --no-deps stlpips-pytorch==0.0.2 lpips==0.1.4`).
"""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from gradleak.errors import CorruptFileError, GradleakError
from gradleak.metrics import METRICS, match, mse
from gradleak.metrics.lpips import (
    LPIPS,
    MIN_SIDE,
    LPIPSNetwork,
    clear_cache,
    get_network,
    load_network,
    locate,
    lpips,
    pairwise_lpips,
)
from gradleak.metrics.lpips import weights as weights_module
from gradleak.metrics.lpips.networks import make_backbone

REF_TOL = 1e-5

HAVE_LPIPS = find_spec("lpips") is not None
HAVE_STLPIPS = find_spec("stlpips_pytorch") is not None
needs_lpips = pytest.mark.skipif(
    not HAVE_LPIPS, reason="lpips not installed (pip install --no-deps lpips==0.1.4)")
needs_stlpips = pytest.mark.skipif(
    not HAVE_STLPIPS, reason="stlpips-pytorch not installed (pip install --no-deps stlpips-pytorch==0.0.2)")

ST = "shift-tolerant"

# torchvision.models.alexnet().features and vgg16().features, as published
ALEXNET_FEATURES = [
    ("features.0.weight", (64, 3, 11, 11)), ("features.0.bias", (64,)),
    ("features.3.weight", (192, 64, 5, 5)), ("features.3.bias", (192,)),
    ("features.6.weight", (384, 192, 3, 3)), ("features.6.bias", (384,)),
    ("features.8.weight", (256, 384, 3, 3)), ("features.8.bias", (256,)),
    ("features.10.weight", (256, 256, 3, 3)), ("features.10.bias", (256,)),
]
VGG16_FEATURES = [
    ("features.0.weight", (64, 3, 3, 3)), ("features.0.bias", (64,)),
    ("features.2.weight", (64, 64, 3, 3)), ("features.2.bias", (64,)),
    ("features.5.weight", (128, 64, 3, 3)), ("features.5.bias", (128,)),
    ("features.7.weight", (128, 128, 3, 3)), ("features.7.bias", (128,)),
    ("features.10.weight", (256, 128, 3, 3)), ("features.10.bias", (256,)),
    ("features.12.weight", (256, 256, 3, 3)), ("features.12.bias", (256,)),
    ("features.14.weight", (256, 256, 3, 3)), ("features.14.bias", (256,)),
    ("features.17.weight", (512, 256, 3, 3)), ("features.17.bias", (512,)),
    ("features.19.weight", (512, 512, 3, 3)), ("features.19.bias", (512,)),
    ("features.21.weight", (512, 512, 3, 3)), ("features.21.bias", (512,)),
    ("features.24.weight", (512, 512, 3, 3)), ("features.24.bias", (512,)),
    ("features.26.weight", (512, 512, 3, 3)), ("features.26.bias", (512,)),
    ("features.28.weight", (512, 512, 3, 3)), ("features.28.bias", (512,)),
]
FEATURES = {"alex": ALEXNET_FEATURES, "vgg": VGG16_FEATURES}
HEAD_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_backbone(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-format checkpoint (He-scaled random weights) with one classifier key to ignore."""
    g = _gen(seed)
    state = {}
    for key, shape in FEATURES[net]:
        if key.endswith("weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.01
    state["classifier.6.bias"] = torch.zeros(1000)
    return state


def random_heads(net: str, seed: int = 1) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(HEAD_CHANNELS[net])}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lpips_weights")
    out = {}
    for net in ("alex", "vgg"):
        out[f"{net}-backbone"] = root / f"{net}-backbone.pth"
        torch.save(random_backbone(net), out[f"{net}-backbone"])
        out[f"{net}-heads"] = root / f"{net}-heads.pth"
        torch.save(random_heads(net), out[f"{net}-heads"])
    return out


def photos(n: int = 8) -> torch.Tensor:
    from gradleak.data import load_dataset

    return load_dataset("photos").images[:n].to(torch.float64)


def test_standard_backbones_have_torchvision_feature_keys():
    for net, expected in FEATURES.items():
        got = [(k, tuple(v.shape)) for k, v in make_backbone("standard", net).state_dict().items()]
        assert got == expected


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_random_torchvision_checkpoint_loads_and_wrong_ones_fail(files, tmp_path, net):
    backbone, heads = files[f"{net}-backbone"], files[f"{net}-heads"]
    model = load_network(locate(net, "standard", backbone=backbone, heads=heads))
    state = random_backbone(net)
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    broken = dict(state)
    first = FEATURES[net][0][0]
    broken.pop(first)
    broken["features.99.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(broken, bad)
    with pytest.raises(CorruptFileError, match=r"bad\.pth.*missing keys: " + first + r".*unexpected keys: features\.99"):
        load_network(locate(net, "standard", backbone=bad, heads=heads))
    reshaped = dict(state, **{first: state[first][:1]})
    torch.save(reshaped, bad)
    with pytest.raises(CorruptFileError, match="wrong shapes: " + first):
        load_network(locate(net, "standard", backbone=bad, heads=heads))
    torch.save(random_heads("vgg" if net == "alex" else "alex"), bad)
    with pytest.raises(CorruptFileError, match=r"bad\.pth is not a valid LPIPS .* heads.*wrong shapes: lin1"):
        load_network(locate(net, "standard", backbone=backbone, heads=bad))
    torch.save([1, 2, 3], bad)
    with pytest.raises(CorruptFileError, match="must hold a state dict"):
        load_network(locate(net, "standard", backbone=bad, heads=heads))
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError, match=r"bad\.pth cannot be read"):
        load_network(locate(net, "standard", backbone=bad, heads=heads))


def test_shift_tolerant_state_dict_round_trip(tmp_path):
    for net in ("alex", "vgg"):
        torch.manual_seed(0)
        state = LPIPSNetwork(ST, net).state_dict()
        path = tmp_path / f"{net}.pth"
        torch.save(state, path)
        model = load_network(locate(net, ST, weights=path))
        assert list(model.state_dict()) == list(state)
        state.pop("lin4.model.1.weight")
        torch.save(state, path)
        with pytest.raises(CorruptFileError, match=r"missing keys: lin4\.model\.1\.weight"):
            load_network(locate(net, ST, weights=path))


@needs_stlpips
def test_shipped_shift_tolerant_files_load_strictly():
    for net in ("alex", "vgg"):
        files = locate(net, ST)
        assert files.paths[0].name == f"{net}_shift_tolerant.pth"
        state = torch.load(files.paths[0], weights_only=True, map_location="cpu")
        model = load_network(files)
        assert set(model.state_dict()) == set(state)


@pytest.mark.parametrize("variant,net", list(MIN_SIDE))
def test_min_side_is_the_smallest_with_every_tap_non_empty(variant, net):
    backbone = make_backbone(variant, net).eval()
    side = MIN_SIDE[(variant, net)]
    with torch.no_grad():
        taps = backbone(torch.rand(1, 3, side, side + 7))
        assert len(taps) == 5 and all(t.numel() > 0 for t in taps)
        try:
            smaller = backbone(torch.rand(1, 3, side - 1, side))
        except RuntimeError:  # reflect padding wider than the map
            return
    assert any(t.numel() == 0 for t in smaller)


# --- agreement with the reference implementations ---------------------------------------

STUBS = textwrap.dedent('''
    import sys, types
    import torch
    from torch import nn

    def _module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    CKPT = sys.argv[3] if len(sys.argv) > 3 else None

    def _tv_alexnet():
        return nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2))

    def _tv_vgg16():
        layers, c = [], 3
        for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c = v
        return nn.Sequential(*layers)

    class _Classifier(nn.Module):
        def __init__(self, features):
            super().__init__()
            self.features = features
            state = torch.load(CKPT, weights_only=True, map_location="cpu")
            self.features.load_state_dict(
                {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}, strict=True)

    models = _module("torchvision.models",
                     alexnet=lambda pretrained=False, **kw: _Classifier(_tv_alexnet()),
                     vgg16=lambda pretrained=False, **kw: _Classifier(_tv_vgg16()))
    _module("torchvision", models=models)
    _module("IPython", embed=lambda *a, **k: None)
    _module("torchsummary", summary=lambda *a, **k: None)
    _module("tqdm", tqdm=lambda iterable=None, *a, **k: iterable)  # lpips.trainer imports it; unused here
''')

REFERENCE = STUBS + textwrap.dedent('''
    kind, net = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    pairs = torch.load(sys.argv[4], weights_only=True)
    if kind == "stlpips":
        from stlpips_pytorch import stlpips
        model = stlpips.LPIPS(net=net, variant="shift_tolerant", verbose=False)
    else:
        import lpips
        model = lpips.LPIPS(net=net, verbose=False)
    with torch.no_grad():
        out = [model(x.float(), y.float(), normalize=True).flatten().double() for x, y in pairs]
    torch.save(out, sys.argv[5])
''')


def reference_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = _gen(3)
    img = photos(6)
    ramp = torch.linspace(0, 1, 48, dtype=torch.float64)
    ramps = torch.stack([ramp.view(1, -1).expand(40, 48), ramp.view(-1, 1)[:40].expand(40, 48),
                         torch.full((40, 48), 0.3, dtype=torch.float64)]).unsqueeze(0)
    checker = ((torch.arange(40).view(-1, 1) // 4 + torch.arange(48) // 4) % 2).to(torch.float64)
    return [
        (torch.rand(3, 3, 32, 32, generator=g, dtype=torch.float64),
         torch.rand(3, 3, 32, 32, generator=g, dtype=torch.float64)),
        (img, (img + 0.1 * torch.randn(img.shape, generator=g, dtype=torch.float64)).clamp(0, 1)),
        (img, img.roll(1, dims=3)),
        (img, img.flip(0)),
        (ramps.expand(2, -1, -1, -1), torch.stack([checker.expand(3, -1, -1), ramps[0].flip(2)])),
    ]


def run_reference(kind: str, net: str, tmp_path: Path, backbone: Path | None = None) -> list[torch.Tensor]:
    pairs = reference_pairs()
    script, data, result = tmp_path / "reference.py", tmp_path / "pairs.pt", tmp_path / "result.pt"
    script.write_text(REFERENCE)
    torch.save(pairs, data)
    args = [sys.executable, str(script), kind, net, str(backbone or ""), str(data), str(result)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"reference run failed:\n{proc.stderr[-3000:]}")
    return torch.load(result, weights_only=True)


@needs_stlpips
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_stlpips_agrees_with_reference(tmp_path, net):
    expected = run_reference("stlpips", net, tmp_path)
    pkg = Path(find_spec("stlpips_pytorch").submodule_search_locations[0])
    assert locate(net, ST).paths[0] == (pkg / f"weights/vST0.0/{net}_shift_tolerant.pth").resolve()
    errors = []
    for (x, y), ref in zip(reference_pairs(), expected):
        ours = lpips(x, y, net=net, variant=ST)
        errors.append(float((ours - ref).abs().max()))
        assert ours.shape == ref.shape and ours.dtype == torch.float64
    assert max(errors) <= REF_TOL, errors


@needs_lpips
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_standard_lpips_agrees_with_reference(files, tmp_path, net):
    backbone = files[f"{net}-backbone"]
    expected = run_reference("lpips", net, tmp_path, backbone)
    errors = []
    for (x, y), ref in zip(reference_pairs(), expected):
        ours = lpips(x, y, net=net, backbone=backbone)  # heads: the installed lpips v0.1 file
        errors.append(float((ours - ref).abs().max()))
    assert max(errors) <= REF_TOL, errors
    assert max(float(r.max()) for r in expected) > 0.01  # not a vacuous comparison


# --- properties --------------------------------------------------------------------------

@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_identity_symmetry_gray_and_pairwise(files, net):
    kw = {"net": net, "backbone": files[f"{net}-backbone"], "heads": files[f"{net}-heads"]}
    g = _gen(5)
    x, y = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    assert lpips(x, x, **kw).abs().max() <= 1e-6
    d = lpips(x, y, **kw)
    assert d.dtype == torch.float64 and d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(lpips(y, x, **kw), d, rtol=0, atol=1e-6)
    gray = x[:, :1]
    torch.testing.assert_close(lpips(gray, y[:, :1], **kw), lpips(gray.expand(-1, 3, -1, -1),
                                                                  y[:, :1].expand(-1, 3, -1, -1), **kw))
    table = pairwise_lpips(x, torch.cat([y, x[:1]]), **kw)
    assert table.shape == (3, 4) and table.dtype == torch.float64
    torch.testing.assert_close(table[:, :3].diagonal(), d, rtol=0, atol=1e-6)
    assert table[0, 3].abs() <= 1e-6


def test_small_images_are_upsampled_to_the_minimum_side(files):
    kw = {"net": "alex", "backbone": files["alex-backbone"], "heads": files["alex-heads"]}
    g = _gen(6)
    x, y = torch.rand(2, 1, 28, 20, generator=g), torch.rand(2, 1, 28, 20, generator=g)
    size = (44, 31)  # short side 20 -> 31, aspect kept: 28 * 31 / 20 = 43.4 -> 44
    up = [torch.nn.functional.interpolate(t.expand(-1, 3, -1, -1), size=size, mode="bilinear",
                                          align_corners=False) for t in (x, y)]
    torch.testing.assert_close(lpips(x, y, **kw), lpips(*up, **kw))


def test_no_gradient_and_module_twin(files):
    kw = {"backbone": files["vgg-backbone"], "heads": files["vgg-heads"]}
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    y = torch.rand(2, 3, 16, 16)
    d = lpips(x, y, net="vgg", **kw)
    assert not d.requires_grad
    module = LPIPS("vgg", **kw)
    torch.testing.assert_close(module(x, y), d)
    torch.testing.assert_close(module.pairwise(x, y).diagonal(), d, rtol=0, atol=1e-6)
    assert "vgg" in repr(module)


def test_networks_are_cached(files):
    kw = {"backbone": files["alex-backbone"], "heads": files["alex-heads"]}
    first = get_network("alex", **kw)
    assert get_network("alex", **kw) is first
    clear_cache()
    assert get_network("alex", **kw) is not first


@needs_stlpips
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_stlpips_grows_with_noise(net):
    img = photos(4)
    noise = torch.randn(img.shape, generator=_gen(7), dtype=torch.float64)
    values = torch.stack([lpips(img + s * noise, img, net=net, variant=ST) for s in (0.01, 0.03, 0.1, 0.3)])
    assert (values[1:] > values[:-1]).all(), values


@needs_stlpips
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_stlpips_tolerates_a_one_pixel_shift(net):
    img = photos(8)
    original, shifted = img[..., :, :31], img[..., :, 1:]
    err = mse(shifted, original)
    noise = torch.randn(original.shape, generator=_gen(8), dtype=torch.float64)
    noise *= (err / mse(noise, torch.zeros_like(noise))).sqrt().view(-1, 1, 1, 1)
    noisy = original + noise  # unclamped: exactly the MSE of the shift
    torch.testing.assert_close(mse(noisy, original), err)
    d_shift = lpips(shifted, original, net=net, variant=ST)
    d_noise = lpips(noisy, original, net=net, variant=ST)
    assert (d_shift < 0.35 * d_noise).all(), (d_shift, d_noise)
    assert (d_shift / d_noise).mean() < 0.15


# --- errors ------------------------------------------------------------------------------

def test_missing_weights_error_names_files_places_and_hints(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    empty = tmp_path / "site"
    (empty / "lpips").mkdir(parents=True)

    def fake_find_spec(name):
        if name == "lpips":  # installed, but without its weights
            return importlib.machinery.ModuleSpec(name, None, is_package=True)
        return None

    def with_location(name):
        spec = fake_find_spec(name)
        if spec is not None:
            spec.submodule_search_locations = [str(empty / name)]
        return spec

    monkeypatch.setattr(weights_module, "find_spec", with_location)
    with pytest.raises(GradleakError) as info:
        lpips(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    msg = str(info.value)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    for part in ("alexnet-owt-7be5be79.pth", str(checkpoints / "alexnet-owt-7be5be79.pth"),
                 "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "backbone=PATH",
                 "weights/v0.1/alex.pth", str(empty / "lpips" / "weights" / "v0.1" / "alex.pth"),
                 "pip install --no-deps lpips==0.1.4", "heads=PATH"):
        assert part in msg, (part, msg)
    with pytest.raises(GradleakError) as info:
        LPIPS("vgg", ST)
    msg = str(info.value)
    for part in ("weights/vST0.0/vgg_shift_tolerant.pth", "'stlpips_pytorch' package (not installed)",
                 "pip install --no-deps stlpips-pytorch==0.0.2", "weights=PATH"):
        assert part in msg, (part, msg)
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(GradleakError, match="xdg/torch/hub/checkpoints/vgg16-397923af.pth"):
        locate("vgg", "standard")


def test_bad_arguments(files, tmp_path):
    kw = {"backbone": files["alex-backbone"], "heads": files["alex-heads"]}
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(GradleakError, match="net must be one of 'alex', 'vgg', got 'squeeze'"):
        lpips(x, x, net="squeeze")
    with pytest.raises(GradleakError, match="variant must be one of"):
        lpips(x, x, variant="st")
    with pytest.raises(GradleakError, match="weights= is the single ST-LPIPS file"):
        lpips(x, x, weights=files["alex-heads"], **kw)
    with pytest.raises(GradleakError, match="backbone= and heads= are for standard LPIPS"):
        lpips(x, x, variant=ST, **kw)
    with pytest.raises(GradleakError, match="backbone must be an existing weight file"):
        lpips(x, x, backbone=tmp_path / "nope.pth", heads=kw["heads"])
    with pytest.raises(GradleakError, match="1 or 3 channels"):
        lpips(torch.rand(2, 2, 32, 32), torch.rand(2, 2, 32, 32), **kw)
    with pytest.raises(GradleakError, match="same shape"):
        lpips(x, x[:1], **kw)
    with pytest.raises(GradleakError, match="same shape"):
        pairwise_lpips(x, x[..., :16], **kw)
    assert lpips(x[:0], x[:0], **kw).shape == (0,)
    assert pairwise_lpips(x[:0], x, **kw).shape == (0, 2)


# --- registration ------------------------------------------------------------------------

def test_registered_metrics_and_matching_cost():
    assert {"lpips", "lpips-vgg", "stlpips", "stlpips-vgg"} <= set(METRICS.names())
    assert all(METRICS.get(m).pairwise is not None and not METRICS.get(m).higher_is_better
               for m in ("lpips", "stlpips"))  # matching costs derive from the same entries
    summary = METRICS.entry("stlpips").summary
    assert "shift-tolerant" in summary.lower() and "not" in summary
    if not HAVE_STLPIPS:
        pytest.skip("stlpips-pytorch not installed (pip install --no-deps stlpips-pytorch==0.0.2)")
    img = photos(5).to(torch.float32)
    noisy = (img + 0.05 * torch.randn(img.shape, generator=_gen(9))).clamp(0, 1)
    torch.testing.assert_close(METRICS.get("stlpips").per_sample(noisy, img), lpips(noisy, img, variant=ST))
    torch.testing.assert_close(METRICS.get("stlpips-vgg").per_sample(noisy, img),
                               lpips(noisy, img, net="vgg", variant=ST))
    order = torch.tensor([3, 0, 4, 1, 2])
    assignment = match(noisy[order], img, cost="stlpips")
    torch.testing.assert_close(order[assignment], torch.arange(5))
    cost = METRICS.get("stlpips").cost(img, noisy[:3])
    assert cost.shape == (5, 3)
