"""R-GAP's rank analysis: counts on hand-checkable layers, structured ranks against a dense
reference, and the paper's CNN6 / CNN6-d / FCN3."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradleak.analysis import rank_analysis
from gradleak.analysis.rank import conv_rank
from gradleak.attacks.rgap import rgap_layers
from gradleak.errors import GradleakError
from gradleak.models import build_model


def _chain(conv: nn.Conv2d, shape) -> nn.Sequential:
    torch.manual_seed(0)
    out = conv(torch.zeros(1, *shape, dtype=conv.weight.dtype)).numel()
    return nn.Sequential(conv, nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(out, 1, bias=False))


def test_counts_of_a_one_by_one_convolution_check_by_hand():
    model = _chain(nn.Conv2d(1, 1, 1, bias=False), (1, 3, 3))
    conv, linear = rank_analysis(model, (1, 3, 3)).layers
    # conv: 9 unknowns; 1 gradient row (sum_p k_p x_p = dW), 9 forward rows (w x_p = z_p)
    assert (conv.unknowns, conv.padded_unknowns, conv.gradient, conv.forward, conv.padding) == (9, 9, 1, 9, 0)
    assert (conv.gradient_rank, conv.rank, conv.deficit) == (1, 9, 0)
    # linear top: 9 unknowns, 9 gradient rows k x = dW, 1 forward row (the logit)
    assert (linear.unknowns, linear.gradient, linear.forward, linear.rank, linear.virtual) == (9, 9, 1, 9, 0)
    assert conv.virtual == 1  # the top's surplus: 9 + 1 + 0 - 9, carried down


def test_padding_is_counted_as_unknowns_pinned_to_zero():
    model = _chain(nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), (2, 4, 4))
    conv = rank_analysis(model, (2, 4, 4), ranks=False).layers[0]
    assert (conv.unknowns, conv.padded_unknowns, conv.padding) == (32, 72, 40)
    assert (conv.gradient, conv.forward) == (3 * 2 * 9, 3 * 2 * 2)
    assert conv.rank is None and conv.deficit is None


def _dense_rank(conv: nn.Conv2d, k: torch.Tensor, shape) -> tuple[int, int]:
    w = conv.weight.detach().double()

    def rows(x):
        g = torch.nn.grad.conv2d_weight(x.reshape(1, *shape), w.shape, k[None], stride=conv.stride,
                                        padding=conv.padding)
        return torch.cat([g.reshape(-1), F.conv2d(x.reshape(1, *shape), w, stride=conv.stride,
                                                  padding=conv.padding).reshape(-1)])

    jac = torch.autograd.functional.jacobian(rows, torch.zeros(torch.Size(shape).numel(), dtype=torch.float64))
    grad_rows = w.numel()
    return int(torch.linalg.matrix_rank(jac[:grad_rows])), int(torch.linalg.matrix_rank(jac))


@pytest.mark.parametrize("c_in,c_out,kernel,stride,padding,size", [
    (1, 2, 3, 1, 1, 5), (2, 3, 3, 2, 1, 7), (3, 4, 4, 2, 2, 8), (2, 1, 3, 2, 0, 7), (3, 2, 2, 1, 0, 4),
])
def test_structured_ranks_match_the_dense_matrix(c_in, c_out, kernel, stride, padding, size):
    shape = (c_in, size, size)
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False).double()
    layer = rgap_layers(_chain(conv, shape).double(), shape, logits="any")[0]
    k = torch.randn(c_out, *layer.output_shape[1:], generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    assert conv_rank(k, layer) == _dense_rank(conv, k, shape)


def test_cnn6_d_shows_the_deficiency_cnn6_does_not():
    deficient = rank_analysis(build_model("cnn6-d", num_classes=1, input_shape=(3, 32, 32)), (3, 32, 32))
    by_name = {layer.name: layer for layer in deficient.layers}
    assert by_name["2"].deficit == 280 and by_name["2"].gradient_rank == 12 * 164
    assert sum(layer.deficit for layer in deficient.layers) == 280
    assert deficient.risk_index == pytest.approx(3188 / 3468) and not deficient.recoverable
    fcn3 = rank_analysis(build_model("fcn3", num_classes=1, input_shape=(1, 28, 28)), (1, 28, 28))
    assert fcn3.recoverable and fcn3.risk_index == 1.0
    assert [layer.unknowns for layer in fcn3.layers] == [784, 1000, 100]


@pytest.mark.slow
def test_cnn6_is_full_rank_at_32x32():
    report = rank_analysis(build_model("cnn6", num_classes=1, input_shape=(3, 32, 32)), (3, 32, 32))
    assert report.recoverable and report.layers[1].gradient_rank == 12 * 244


def test_models_outside_rgap_are_refused_by_layer():
    with pytest.raises(GradleakError, match=r"'act0' \(ReLU\)"):
        rank_analysis(build_model("convnet", num_classes=10, input_shape=(3, 32, 32)), (3, 32, 32))
