"""DAGER's encoder step (Petrov et al., NeurIPS 2024): whole sequences of a bidirectional
(BERT-like) model from the per-position token sets C_p of the first layer, filtered by
the second layer's span check. Written from the paper's method description; the search
below is this toolkit's heuristic, not the paper's.

In an encoder every token's second-layer input depends on the whole sequence, so a
sequence can be checked only once it is complete, and the product of the sets is out of
reach beyond a few short sentences: with additive position embeddings the first layer's
span usually holds every batch token at every position (LayerNorm only rescales, so the
span of {tok_t + pos_p} holds tok_t + pos_q as soon as the batch links t to q through
other pairs), so each set is the batch's whole bag of tokens. Two facts make a local
search work: the first layer's keys and values of a token depend only on that token and
its position, so the second-layer input at position p of a sequence with one token
changed is one query's attention over cached keys (exact, and a sequence-length cheaper
than a forward pass); and that input lies in layer 2's span (residual ~0) only with the
right token under the right context, while a wrong token stands out even when many other
positions are still wrong. So for each length L (longest first; then all lengths again,
up to `max_rounds` rounds) `restarts` random sequences from the sets are improved position
by position (each position set to the token of C_p with the lowest layer-2 residual
there, `sweeps` passes; after the first pass only the `keep` best tokens of each position
are retried), and every result is checked exactly, which also fixes its length: the
median of its positions' residuals below `tol2` (not the maximum: a token whose
backpropagated error is small sits near the float32 noise and fails alone, while a wrong
token changes every position's context; measured on a 3 x 256 BERT-like model: true
sequences' medians up to 6e-4, sequences one token away from a true one from 2.6e-3). The search
stops when `wanted` sequences passed, or when lengths or `max_seconds` run out; then it
says so (a sequence no restart reached is missed: a heuristic, not an exhaustive search).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.text.layers import projection_inputs, span_residual


@dataclass(frozen=True)
class EncoderSearch:
    """The outcome: sequences that passed the exact check (lowest residual first), and
    why the search stopped before `wanted` of them passed (None when they did)."""

    sequences: tuple[tuple[int, ...], ...]
    residuals: tuple[float, ...]
    note: str | None


class _Layer:
    """The first encoder layer of a BERT model as a function of cached per-token tensors."""

    def __init__(self, model: nn.Module, proj) -> None:
        mods = dict(model.named_modules())
        prefix = proj.paths[0].split("encoder.layer.")[0]
        self.layer = mods[f"{prefix}encoder.layer.0"]
        att = self.layer.attention.self
        self.heads, self.hd = att.num_attention_heads, att.attention_head_size
        self.down = proj.lora_down

    def tables(self, x1: torch.Tensor):
        """Query, key and value (N, heads, hd) of first-layer inputs x1 (N, d)."""
        att = self.layer.attention.self
        shape = (x1.shape[0], self.heads, self.hd)
        return att.query(x1).view(shape), att.key(x1).view(shape), att.value(x1).view(shape)

    def output(self, x1, q, keys, values):
        """Layer-2 input at one position: x1 (N, d), q (N, h, hd), keys/values (N, T, h, hd)."""
        w = torch.einsum("nhe,nthe->nht", q, keys) * self.hd**-0.5
        ctx = torch.einsum("nht,nthe->nhe", w.softmax(-1), values).reshape(x1.shape[0], -1)
        h = self.layer.attention.output.LayerNorm(self.layer.attention.output.dense(ctx) + x1)
        out = self.layer.output.LayerNorm(self.layer.output.dense(self.layer.intermediate(h)) + h)
        return out if self.down is None else out @ self.down.T


def encoder_search(model, proj1, proj2, basis, sets: list[list[int]], *, wanted: int, tol2: float,
                   restarts: int, sweeps: int, max_seconds: float, seed: int, max_rounds: int = 8, keep: int = 8) -> EncoderSearch:
    """Coordinate search with exact checks (see the module docstring)."""
    start = time.perf_counter()
    device = basis.device
    layer = _Layer(model, proj2)
    pools, tabs = [], []
    with torch.no_grad():
        for p, tokens in enumerate(sets):
            ids = torch.tensor(tokens, device=device).unsqueeze(1)
            x1 = projection_inputs(model, proj1, ids, torch.full_like(ids, p))[:, 0]
            pools.append(ids[:, 0])
            tabs.append((x1, *layer.tables(x1)))
    gen = torch.Generator().manual_seed(seed)
    found: dict[tuple[int, ...], float] = {}
    note = None
    rounds = [length for _ in range(max_rounds) for length in range(len(sets), 0, -1)]
    for i_try, length in enumerate(rounds):
        # seq[r, p]: index into sets[p] of restart r's token at position p
        seq = torch.stack([torch.randint(len(sets[p]), (restarts,), generator=gen) for p in range(length)], 1)
        tops: list[torch.Tensor | None] = [None] * length
        with torch.no_grad():
            for sweep in range(sweeps):
                changed = False
                for p in range(length):
                    keys = torch.stack([tabs[j][2][seq[:, j]] for j in range(length)], 1)  # (R, L, h, hd)
                    values = torch.stack([tabs[j][3][seq[:, j]] for j in range(length)], 1)
                    x1, q, k, v = tabs[p]
                    idx = torch.arange(x1.shape[0]).expand(restarts, -1) if tops[p] is None else tops[p]
                    flat = idx.flatten()
                    kk = keys.repeat_interleave(idx.shape[1], 0)
                    vv = values.repeat_interleave(idx.shape[1], 0)
                    kk[:, p], vv[:, p] = k[flat], v[flat]
                    res = span_residual(layer.output(x1[flat], q[flat], kk, vv), basis).view(idx.shape)
                    if tops[p] is None:  # later sweeps try only each restart's `keep` best tokens here
                        tops[p] = idx.gather(1, res.topk(min(keep, idx.shape[1]), 1, largest=False).indices)
                    best = idx.gather(1, res.argmin(1, keepdim=True))[:, 0]
                    changed |= bool((best != seq[:, p]).any())
                    seq[:, p] = best
                if not changed:
                    break
        cands = torch.stack([pools[p][seq[:, p]] for p in range(length)], 1).unique(dim=0)
        res = span_residual(projection_inputs(model, proj2, cands), basis).median(1).values
        for i in torch.nonzero(res < tol2).flatten().tolist():
            found[tuple(int(t) for t in cands[i])] = float(res[i])
        found = drop_near_copies(found)
        if len(found) >= wanted:
            break
        if time.perf_counter() - start > max_seconds:
            note = (f"max_seconds={max_seconds:g} ran out in round {i_try // len(sets) + 1} of {max_rounds} at "
                    f"length {length}")
            break
    else:
        note = f"{max_rounds} rounds over every length up to {len(sets)} with {restarts} restarts each"
    items = sorted(found.items(), key=lambda kv: kv[1])
    return EncoderSearch(tuple(s for s, _ in items), tuple(r for _, r in items), None if len(found) >= wanted else note)


def drop_near_copies(found: dict[tuple[int, ...], float]) -> dict[tuple[int, ...], float]:
    """Of sequences that are prefixes or reorderings of one another, keep the lowest residual.

    The median check passes near copies of a true sequence: itself less its last token or
    plus one (removing a key barely moves a long sequence's attention), and its own tokens
    with two or more swapped (the keys and values are the same bag, only the position
    embeddings move). Seen on 3 x 256 BERT-like models at batches of 4 and 8, where such
    copies took true sentences' places and the search said "ok"; the true sequence has
    the lower residual. A batch that really holds a sentence and its own prefix or
    reordering loses one of them."""
    kept = dict(found)
    for seq, _ in sorted(found.items(), key=lambda kv: kv[1]):
        if seq not in kept:
            continue
        bag = sorted(seq)
        for other in [o for o in kept if o != seq and (o[: len(seq)] == seq or seq[: len(o)] == o
                                                       or (len(o) == len(seq) and sorted(o) == bag))]:
            del kept[other]
    return kept


__all__ = ["EncoderSearch", "drop_near_copies", "encoder_search"]
