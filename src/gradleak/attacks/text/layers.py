"""What the exact text attacks read off a transformer: the first two attention layers'
input projections, their weight gradients in the update, and their inputs for any tokens.

A projection y = x W (GPT-2's fused `c_attn`, a Conv1D of shape (d, 3d)) or y = x W^T
(BERT's `query`, `key`, `value` Linears) has the weight gradient sum_i x_i^T dL/dy_i over
every token i of the batch, so the gradient's rows (in the orientation used here: one
row per output feature, columns the input width d) are combinations of the inputs x_i.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate

SUPPORTED = {"gpt2": "decoder", "bert": "encoder"}


class _Captured(Exception):
    pass


@dataclass(frozen=True)
class Projection:
    """One layer's input projection(s): module paths, and whether its weight is (in, out)."""

    paths: tuple[str, ...]
    transposed: bool  # Conv1D: weight (in, out)
    lora_down: torch.Tensor | None = None  # LoRA: the adapter's A (r, d); the span lives in A's image


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (the same modules, adapters included)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def architecture(model: nn.Module) -> str:
    """"decoder" (GPT-2-like) or "encoder" (BERT-like); anything else is refused."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in SUPPORTED:
        raise GradleakError(f"model must be a transformers GPT-2 or BERT model (model_type 'gpt2' or 'bert'), "
                            f"got {type(model).__name__} with model_type {kind!r}")
    return SUPPORTED[kind]


def projections(model: nn.Module) -> list[Projection]:
    """The input projections of the attention layers, first layer first."""
    kind = architecture(model)
    paths = dict(model.named_modules())
    out = []
    for layer in range(model.config.num_hidden_layers):
        if kind == "decoder":
            found = [p for p in paths if p.endswith(f"transformer.h.{layer}.attn.c_attn")]
            if found:
                out.append(Projection((found[0],), True))
        else:
            found = [p for p in paths for name in ("query", "key", "value")
                     if p.endswith(f"encoder.layer.{layer}.attention.self.{name}")]
            if len(found) == 3:
                out.append(Projection(tuple(found), False))
    return out


def lora_projection(update: ClientUpdate, proj: Projection, model: nn.Module) -> Projection:
    """`proj` read through its LoRA adapter when the update shares only adapters: the
    gradient of B (out, r) at y = B A x has rows spanned by the projected inputs A x_i."""
    grads = update.as_mapping()
    if any(n.endswith(f"{proj.paths[0]}.weight") and "base_layer" not in n for n in grads):
        return proj
    downs = [n for n, _ in unwrap(model).named_parameters() if n.endswith(f"{proj.paths[0]}.lora_A.default.weight")]
    if not downs or len(proj.paths) != 1:
        return proj  # projection_gradient names what is missing
    return Projection(proj.paths, False, dict(unwrap(model).named_parameters())[downs[0]].detach())


def _gradient(grads: dict, suffix: str) -> torch.Tensor | None:
    found = [g for n, g in grads.items() if n.endswith(suffix) and "base_layer" not in n]
    return found[0] if len(found) == 1 else None


def projection_gradient(model: nn.Module, update: ClientUpdate, proj: Projection) -> torch.Tensor:
    """The projection's weight gradient as (outputs, d): rows in the span of its inputs
    (for a LoRA projection: B's gradient (outputs, r), rows in the span of A x_i)."""
    grads = update.as_mapping()
    if proj.lora_down is not None:
        g = _gradient(grads, f"{proj.paths[0]}.lora_B.default.weight")
        if g is None:
            raise GradleakError(f"the update has no LoRA gradient for {proj.paths[0]!r}")
        return g
    parts = []
    for path in proj.paths:
        name = f"{path}.weight"
        g = _gradient(grads, name)
        if g is None:
            raise GradleakError(f"the update has no gradient {name!r}, which this attack reads (a LoRA update "
                                f"shares only adapters; see `dager`'s docstring)")
        parts.append(g.T if proj.transposed else g)
    return torch.cat(parts, 0)


def projection_inputs(model: nn.Module, proj: Projection, input_ids: torch.Tensor,
                      position_ids: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The input (N, T, d) of the projection when the model reads `input_ids` (N, T); the
    forward pass stops there."""
    kwargs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if architecture(model) == "decoder":
        kwargs["use_cache"] = False
    x = _input_of(model, proj.paths[0], kwargs)
    return x if proj.lora_down is None else x @ proj.lora_down.T


def _input_of(model: nn.Module, path: str, kwargs: dict) -> torch.Tensor:
    """The input of module `path` when the model runs on `kwargs`; the forward pass stops there."""
    module = dict(model.named_modules())[path]
    store = {}

    def hook(_m, args):
        store["x"] = args[0].detach()
        raise _Captured

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(**kwargs)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "x" not in store:
        raise GradleakError(f"the forward pass never reached {path!r}")
    return store["x"]


def decoder_step(model: nn.Module, proj: Projection, past: tuple[torch.Tensor, torch.Tensor] | None,
                 tokens: torch.Tensor, position: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A causal model reads one more token per prefix: the input (M, d) of the (later-layer)
    projection `proj` at `position`, given the prefixes' first-layer keys and values `past`
    ((M, heads, position, head_dim) each; None at position 0), and the keys and values
    extended by the new tokens. Only the first layer's cache is used, so `proj` must be
    the second layer's projection."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    if past is not None:
        cache.update(past[0], past[1], 0)
    m = tokens.shape[0]
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    kwargs = {"input_ids": tokens.view(m, 1), name: cache, "use_cache": True,
              "position_ids": torch.full((m, 1), position, dtype=torch.long, device=tokens.device),
              "attention_mask": torch.ones((m, position + 1), dtype=torch.long, device=tokens.device)}
    x = _input_of(model, proj.paths[0], kwargs)[:, -1]
    layer = cache.layers[0]
    return (x if proj.lora_down is None else x @ proj.lora_down.T), (layer.keys, layer.values)


def span_basis(gradient: torch.Tensor, rank_tol: float = 1e-9, gap: float = 20.0, noise: float = 1.0) -> torch.Tensor:
    """An orthonormal basis (d, r) of the gradient's row space (float64 SVD). The rank
    counts the singular values above the rounding noise of the gradient's own dtype:
    `noise` times its unit roundoff times the gradient's Frobenius norm (the norm of a
    matrix of relative rounding errors; for float32 about 6e-8 of it); `rank_tol` times
    the largest is a lower bound, and a drop of at least `gap` between neighbours below
    1e-3 of the largest ends the signal earlier. (A fixed cut at 1e-6 of the largest, the
    rule before, dropped the tokens whose backpropagated errors are small: their
    directions sit between 1e-6 and the noise, and their inputs then failed the span
    test; see experiments/text/README.md.)"""
    eps = torch.finfo(gradient.dtype).eps / 2 if gradient.is_floating_point() else 0.0
    g = gradient.detach().double()
    _, s, vh = torch.linalg.svd(g, full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return vh[:0].T
    thr = max(rank_tol * float(s[0]), noise * eps * float(s.norm()))
    rank = int((s > thr).sum())
    ratios = s[:-1] / s[1:].clamp_min(1e-300)
    tail = (s[1:] < 1e-3 * s[0]) & (torch.arange(s.numel() - 1) < rank)  # drops within the signal or at its end
    if tail.any():
        best = int(torch.where(tail, ratios, torch.zeros_like(ratios)).argmax())
        if ratios[best] >= gap:
            rank = best + 1
    return vh[:rank].T


def span_residual(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Relative distance of each row of x (..., d) to the span of `basis` (d, r)."""
    x = x.double()
    return (x - (x @ basis) @ basis.T).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-30)


__all__ = ["SUPPORTED", "Projection", "architecture", "decoder_step", "lora_projection", "projection_gradient",
           "projection_inputs", "projections", "span_basis", "span_residual", "unwrap"]
