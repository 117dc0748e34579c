"""R-GAP's rank analysis (Zhu & Blaschko, ICLR 2021, Sec. 4): how well each layer's
input is determined by the equations the recursion has, before any attack is run.

For weight layer i with input x_i (n_i entries, padding excluded) the recursion has
- gradient constraints: one per weight entry (G_i = |W_i|), dW_i = k_i x_i^T for a fully
  connected layer and patch sums weighted by k_i for a convolution;
- forward constraints: one per output entry (F_i = |z_i|), W_i x_i = z_i, usable once the
  layer above has been recovered (the top layer has its logits when they are known);
- padding constraints: one per zero-padding entry (P_i); the paper counts the padded
  input as unknowns and pins these to zero, so they cancel; we report both counts and
  solve over the n_i real entries;
- virtual constraints: the surplus S_{i+1} = G_{i+1} + F_{i+1} + V_{i+1} - n_{i+1} of an
  over-determined layer above, carried down (V_i = max(0, S_{i+1}), V_top = 0), the
  paper's count of how much the upper layers over-determine the chain.

Our definitions where the paper's text could not be consulted offline (documented so
they can be checked): the numerical rank r_i is that of the layer's own gradient and
forward rows at a seeded random input (ranks are generic: the same for almost every
input and weight draw); virtual constraints are reported but add no rank, because
everything the upper layers say about x_i reaches it through z_i = W_i x_i, whose rows
are already the forward constraints. The deficit is d_i = n_i - r_i, and the risk
index is min_i r_i / n_i: 1 means every layer's input is determined and R-GAP
recovers the input exactly (the highest risk); below 1, the worst layer leaves that
fraction of its input undetermined and every layer beneath inherits the error.

Ranks use the convolution's structure: the gradient rows act on each input channel
with the same (O k_h k_w) x (H W) matrix, so rank(G) = C rank(G_c), and
rank([G; F]) = rank(G) + rank(F N) for a basis N of G's null space (I_C (x) null(G_c)):
SVDs of a few thousand columns instead of one of n_i x n_i.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.attacks.rgap import RGAPLayer, rgap_layers
from gradleak.devices import model_device, resolve_device
from gradleak.errors import GradleakError

# Dense blocks above this many entries are not formed (counts are still reported).
MAX_DENSE_ENTRIES = 60_000_000


@dataclass(frozen=True)
class LayerRank:
    """One weight layer's equations (counts), its numerical rank and deficit."""

    name: str
    kind: str  # "conv" or "linear"
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    unknowns: int
    padded_unknowns: int
    gradient: int
    forward: int
    padding: int
    virtual: int
    gradient_rank: int | None
    rank: int | None
    deficit: int | None

    @property
    def count_surplus(self) -> int:
        """Constraints minus unknowns by count (with virtual constraints): >= 0 passes the count test."""
        return self.gradient + self.forward + self.virtual - self.unknowns


@dataclass(frozen=True)
class RankReport:
    """The network's layers bottom to top and its risk index (`rank_analysis`)."""

    input_shape: tuple[int, ...]
    layers: tuple[LayerRank, ...]
    risk_index: float | None  # min over layers of rank / unknowns; None when no rank was affordable
    complete: bool  # every layer's rank was computed
    seed: int

    @property
    def recoverable(self) -> bool:
        return self.complete and all(layer.deficit == 0 for layer in self.layers)

    def to_json(self) -> dict:
        return {"input_shape": list(self.input_shape), "risk_index": self.risk_index, "complete": self.complete,
                "recoverable": self.recoverable, "seed": self.seed,
                "layers": [asdict(layer) | {"input_shape": list(layer.input_shape),
                                            "output_shape": list(layer.output_shape),
                                            "count_surplus": layer.count_surplus} for layer in self.layers]}


def rank_of_singular_values(sigma: torch.Tensor, shape: tuple[int, ...]) -> int:
    """Singular values (descending) above max(shape) * eps * sigma_max (float64), LAPACK's usual cut."""
    if sigma.numel() == 0 or not sigma[0] > 0:
        return 0
    return int((sigma > sigma[0] * max(shape) * torch.finfo(torch.float64).eps).sum())


def numerical_rank(matrix: torch.Tensor) -> int:
    return 0 if matrix.numel() == 0 else rank_of_singular_values(torch.linalg.svdvals(matrix.double()), matrix.shape)


def conv_gradient_matrix(k: torch.Tensor, layer: RGAPLayer) -> torch.Tensor:
    """G_c: the gradient rows of one input channel, (O k_h k_w) x (H W), shared by all channels."""
    conv = layer.module
    _, h, w = layer.input_shape
    eye = torch.eye(h * w, dtype=torch.float64, device=k.device).reshape(h * w, 1, h, w)
    patches = F.unfold(eye, conv.kernel_size, stride=conv.stride, padding=conv.padding)  # (HW, kh kw, P)
    rows = torch.einsum("op,nqp->oqn", k.reshape(k.shape[0], -1).double(), patches)
    return rows.reshape(-1, h * w)


def conv_rank(k: torch.Tensor, layer: RGAPLayer) -> tuple[int | None, int | None]:
    """(rank of the gradient rows, rank of gradient and forward rows) of a convolution."""
    conv = layer.module
    c, h, w = layer.input_shape
    g_c = conv_gradient_matrix(k, layer)
    if g_c.numel() > MAX_DENSE_ENTRIES:
        return None, None
    _, sigma, vh = torch.linalg.svd(g_c, full_matrices=True)
    r_c = rank_of_singular_values(sigma, tuple(g_c.shape))
    null = vh[r_c:]  # (m, HW): G_c's null space
    gradient_rank = c * r_c
    m = null.shape[0]
    if m == 0:
        return gradient_rank, gradient_rank
    if c * m * math.prod(layer.output_shape) > MAX_DENSE_ENTRIES:
        return gradient_rank, None
    basis = torch.zeros(c * m, c, h * w, dtype=torch.float64, device=k.device)
    for ch in range(c):
        basis[ch * m:(ch + 1) * m, ch] = null
    images = F.conv2d(basis.reshape(c * m, c, h, w), conv.weight.detach().double(), stride=conv.stride,
                      padding=conv.padding)
    return gradient_rank, gradient_rank + numerical_rank(images.reshape(c * m, -1))


def _probe_ks(model: nn.Module, layers: list[RGAPLayer], input_shape: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    """dl/dz of every weight layer at a seeded random input (logistic loss on one logit, else cross-entropy)."""
    work = copy.deepcopy(model).double().eval()
    device = model_device(work)
    x = torch.rand(1, *input_shape, generator=torch.Generator(device="cpu").manual_seed(seed), dtype=torch.float64,
                   device="cpu").to(device)  # the same probe input on every device
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(work.named_modules())
    handles = [modules[layer.name].register_forward_hook(
        lambda _m, _i, out, name=layer.name: outputs.__setitem__(name, out)) for layer in layers]
    try:
        out = work(x)
    finally:
        for handle in handles:
            handle.remove()
    if out.shape[1] == 1:  # one logit: the label that makes the sample misclassified, as R-GAP's demos do
        y = -1.0 if float(out.detach()) > 0 else 1.0
        loss = F.softplus(-y * out).sum()
    else:
        loss = F.cross_entropy(out, torch.zeros(1, dtype=torch.long, device=device))
    ks = torch.autograd.grad(loss, [outputs[layer.name] for layer in layers])
    return [k[0].detach() for k in ks]


def rank_analysis(model: nn.Module, input_shape: tuple[int, ...], *, seed: int = 0,
                  ranks: bool = True, device: str | torch.device | None = None) -> RankReport:
    """Counts, numerical ranks and deficits of every weight layer, and the network's risk index.

    `model`: a chain R-GAP can invert (bias-free Conv2d/Linear, LeakyReLU, identity); others
    are refused naming the layer. `ranks=False` reports counts only. The ranks are float64
    singular values, computed on `device` (default: the model's; MPS, which has no float64,
    falls back to the CPU).
    """
    target = model_device(model) if device is None else resolve_device(device)
    if target.type == "mps":
        target = torch.device("cpu")
    model = copy.deepcopy(model).to(target)
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(s < 1 for s in shape) or any(isinstance(s, bool) for s in input_shape):
        raise GradleakError(f"input_shape must be a sequence of positive sizes such as (3, 32, 32), got {input_shape!r}")
    input_shape = shape
    layers = rgap_layers(model, input_shape, logits="any")
    ks = _probe_ks(model, layers, input_shape, seed) if ranks else [None] * len(layers)
    rows: list[LayerRank] = []
    virtual = 0
    for layer, k in reversed(list(zip(layers, ks))):
        n = math.prod(layer.input_shape)
        conv = isinstance(layer.module, nn.Conv2d)
        if conv:
            c, h, w = layer.input_shape
            ph, pw = layer.module.padding
            padded = c * (h + 2 * ph) * (w + 2 * pw)
        else:
            padded = n
        grad_rows, fwd_rows = layer.module.weight.numel(), math.prod(layer.output_shape)
        if k is None:
            g_rank = rank = None
        elif conv:
            g_rank, rank = conv_rank(k, layer)
        else:  # dW = k x^T: every row k_j x = dW_j, so any nonzero k_j pins x down
            g_rank = n if bool((k != 0).any()) else 0
            rank = n if g_rank == n else numerical_rank(layer.module.weight.detach())
        rows.append(LayerRank(
            name=layer.name, kind="conv" if conv else "linear", input_shape=layer.input_shape,
            output_shape=layer.output_shape, unknowns=n, padded_unknowns=padded, gradient=grad_rows,
            forward=fwd_rows, padding=padded - n, virtual=virtual, gradient_rank=g_rank, rank=rank,
            deficit=None if rank is None else n - rank))
        virtual = max(0, rows[-1].count_surplus)
    rows.reverse()
    known = [r.rank / r.unknowns for r in rows if r.rank is not None]
    return RankReport(input_shape=input_shape, layers=tuple(rows), risk_index=min(known) if known else None,
                      complete=len(known) == len(rows), seed=seed)
