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
