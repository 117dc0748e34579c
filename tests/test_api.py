import pytest
import torch
from conftest import tiny_lenet

import gradleak
from gradleak.client import simulate_client
from gradleak.errors import GradleakError


def _case():
    model = tiny_lenet()
    gen = torch.Generator().manual_seed(0)
    small = torch.rand(1, 3, 4, 4, generator=gen) * 2 - 1
    x = torch.nn.functional.interpolate(small, size=(16, 16), mode="bilinear", align_corners=False)
    y = torch.tensor([4])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return model, x, y, grads


def test_reconstruct_from_captured_gradient_list_and_mapping():
    model, x, y, grads = _case()
    rec = gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), attack="idlg", iterations=100,
                               restarts=3)
    assert rec.labels.tolist() == [4]
    metrics = gradleak.evaluate(rec.data.clamp(-1, 1) / 2 + 0.5, x / 2 + 0.5)
    assert metrics.psnr_mean > 30
    named = dict(zip([n for n, _ in model.named_parameters()], grads))
    rec2 = gradleak.reconstruct(model, named, input_shape=(3, 16, 16), attack="idlg", iterations=100, restarts=3)
    assert torch.equal(rec.data, rec2.data)


def test_reconstruct_accepts_given_labels_and_a_client_update():
    model, x, y, _ = _case()
    update = simulate_client(model, x, y)
    rec = gradleak.reconstruct(model, update, input_shape=(3, 16, 16), labels=[4], attack="ig", iterations=5)
    assert rec.label_knowledge is gradleak.LabelKnowledge.GIVEN
    assert rec.labels.tolist() == [4]


def test_gradient_errors_name_parameter_and_shapes():
    model, _, _, grads = _case()
    with pytest.raises(GradleakError, match="hold 3 tensors but the model has 6"):
        gradleak.reconstruct(model, list(grads)[:3], input_shape=(3, 16, 16))
    bad = list(grads)
    bad[1] = torch.zeros(5)
    with pytest.raises(GradleakError, match=r"'0.bias' has shape \(5,\), expected \(8,\)"):
        gradleak.reconstruct(model, bad, input_shape=(3, 16, 16))
    with pytest.raises(GradleakError, match="does not have"):
        gradleak.reconstruct(model, {"nope": grads[0]}, input_shape=(3, 16, 16))
    bad = list(grads)
    bad[0] = bad[0] * float("inf")
    with pytest.raises(GradleakError, match="NaN or inf"):
        gradleak.reconstruct(model, bad, input_shape=(3, 16, 16))
    with pytest.raises(GradleakError, match="does not take \\['tv'\\]"):
        gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), attack="dlg", tv=0.1)


def test_input_shape_and_label_range_errors_are_user_errors():
    model, _, _, grads = _case()
    with pytest.raises(GradleakError, match=r"input_shape \(3, 8, 8\) does not fit the model"):
        gradleak.reconstruct(model, list(grads), input_shape=(3, 8, 8))
    with pytest.raises(GradleakError, match=r"labels must be class indices in \[0, 9\], got \[50\]"):
        gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), labels=[50])
    with pytest.raises(GradleakError, match="seed must be an integer >= 0"):
        gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), seed=-1)


class _SelfAttention(torch.nn.Module):
    """Patches -> nn.MultiheadAttention (through scaled-dot-product attention) -> linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Conv2d(3, 16, 4, 4)
        self.attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.attention(t, t, t, need_weights=False)[0].mean(1))


def _encoder_layer():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 4, 4), torch.nn.Flatten(2), _Transpose(), layer,
                               _Mean(), torch.nn.Linear(16, 4))


class _Transpose(torch.nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class _Mean(torch.nn.Module):
    def forward(self, x):
        return x.mean(1)


@pytest.mark.parametrize("make", [_SelfAttention, _encoder_layer])
def test_attention_models_are_attacked_on_the_math_kernel(make):
    model = make().eval()
    x, y = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([2])
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    rec = gradleak.reconstruct(model, grads, input_shape=(3, 8, 8), labels=[2], attack="ig", iterations=30)
    assert rec.status == "ok" and rec.data.shape == (1, 3, 8, 8)
    assert any("math kernel" in note for note in rec.notes)
    assert rec.gradient_mismatch is not None and rec.gradient_mismatch < 1.5


def test_pixel_box_from_bounds_normalization_or_the_warned_default(caplog):
    from gradleak.api import pixel_box
    from gradleak.data import Normalization

    assert pixel_box((3, 4, 4), None, ((-1, -1, -1), (1, 1, 1))) == ((-1.0,) * 3, (1.0,) * 3)
    low, high = pixel_box((3, 4, 4), Normalization((0.5,) * 3, (0.5,) * 3), None)
    assert low == (-1.0,) * 3 and high == (1.0,) * 3
    assert pixel_box((3, 4, 4), ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), None)[0] == (-2.0,) * 3
    assert pixel_box((3, 4, 4), None, "none") is None
    with caplog.at_level("WARNING", logger="gradleak.api"):
        assert pixel_box((3, 4, 4), None, None) == ((0.0,) * 3, (1.0,) * 3)
    assert "no pixel range given" in caplog.text
    for bad in ("all", ((1,), (0,)), ((0, 0), (1, 1)), 5):
        with pytest.raises(GradleakError, match="bounds"):
            pixel_box((3, 4, 4), None, bad)


def test_reconstruct_clamps_to_the_given_range():
    model, x, y, grads = _case()  # x lies in [-1, 1]
    box = ((-1.0,) * 3, (1.0,) * 3)
    rec = gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), attack="ig", iterations=20, bounds=box)
    assert float(rec.data.min()) >= -1 and float(rec.data.max()) <= 1
    loose = gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), attack="ig", iterations=20,
                                 bounds="none")
    assert float(loose.data.abs().max()) > 1


def test_float_labels_must_be_whole_and_one_output_means_the_logistic_loss():
    model, _, _, grads = _case()
    with pytest.raises(GradleakError, match="whole numbers"):
        gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), labels=[2.7])
    rec = gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), labels=[4.0], attack="ig", iterations=2)
    assert rec.labels.tolist() == [4]
    # R-GAP through the API on a one-logit model: labels 0/1 are the logistic loss's
    from gradleak.models import build_model

    net = build_model("fcn3", num_classes=1, input_shape=(1, 28, 28), seed=0)
    image = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    label = int(net(image)[0, 0] <= 0)  # misclassified on purpose, where R-GAP is exact
    update = simulate_client(net, image, torch.tensor([label]), gradleak.LocalTraining(loss="logistic"))
    rec = gradleak.reconstruct(net, update, input_shape=(1, 28, 28), labels=[label], attack="rgap")
    assert gradleak.evaluate(rec.data.clamp(0, 1), image).psnr_mean > 60
    rec = gradleak.reconstruct(net, list(update.tensors), input_shape=(1, 28, 28), attack="rgap", bounds="none")
    assert rec.gradient_mismatch < 1e-4  # the loss was inferred from the single output


def test_huge_problems_are_refused_before_any_work():
    model, _, _, grads = _case()
    with pytest.raises(GradleakError, match="GiB, more than this machine"):
        gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), num_samples=10**7, labels=[1] * 10**7)
    with pytest.raises(GradleakError, match="GiB, more than this machine"):
        gradleak.reconstruct(model, list(grads), input_shape=(3, 16, 16), attack="ig", restarts=10**8)
