"""DAGER: exact recovery of a batch of token sequences from a transformer's gradient
(Petrov, Dimitrov, Baader, Müller and Vechev, NeurIPS 2024), written from the paper's
method description.

Threat model: honest-but-curious server, FedSGD, knows the model (white box) and its
vocabulary; no prior on the text. The weight gradient of an attention layer's input
projection is a sum of outer products of that layer's inputs with their backpropagated
errors, so its row space is spanned by the inputs of the batch's tokens (low rank while
the batch holds fewer tokens than the model's width). A candidate is in the batch when
its input lies in that span (relative residual below `tol`).

1. Layer 1: the input of a token at a position depends on that token and position only,
   so every vocabulary token is tested at every position (the candidate sets C_p).
2. Decoder (GPT-2-like, causal): a sequence's layer-2 input at position p depends on its
   tokens 0..p only, so sequences grow one position at a time: every prefix is extended by
   every token of C_p, and the extensions whose layer-2 input lies in layer 2's span are
   kept; a prefix no token extends is finished.
   Encoder (BERT-like, bidirectional): the layer-2 inputs depend on the whole sequence, so
   only whole candidate sequences can be tested; `dager_encoder` searches them (a seeded
   coordinate search over the sets C_p with exact single-position updates, every length,
   each result checked exactly; a heuristic under `max_seconds` that says when it found
   fewer sequences than the batch holds). The encoder needs at least 3 layers: the last
   layer of a classifier reads only the first token's query, so its gradient spans only
   a few attention-weighted mixtures, not every token's input.
The client's end token (knowledge.end_token), which never reaches the gradient, is
appended to every recovered sequence. LoRA (peft, adapter-only updates, GPT-2): the
gradient of an adapter's B (out, r) in y = W x + B A x has rows spanned by the projected
inputs A x_i, so the same tests run in the r-dimensional image of A (known to the server):
they single tokens out only while the batch holds fewer tokens than the rank r (with B = 0
at initialization, A's gradient is zero and B's is all there is). Refused: models other
than transformers GPT-2/BERT, FedAvg updates, models of one layer, and updates without the
projections' weight gradients.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from gradleak.attacks.text.base import TextAttack
from gradleak.attacks.text.dager_encoder import encoder_search
from gradleak.attacks.text.layers import (
    architecture,
    decoder_step,
    lora_projection,
    projection_gradient,
    projection_inputs,
    projections,
    span_basis,
    span_residual,
    unwrap,
)
from gradleak.checks import check_positive_float, check_positive_int
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate, Protocol
from gradleak.text.records import TextKnowledge, TextReconstruction

log = logging.getLogger(__name__)


def class_labels(update: ClientUpdate) -> tuple[int, ...] | None:
    """A classifier's labels from its output bias gradient (mean of softmax - one-hot over
    the batch): the classes whose entry is negative, each once (iDLG's rule, exact for
    one sequence; a batch may hide a label whose negative part other sequences' softmax
    mass outweighs). None without a `classifier.bias` gradient."""
    grads = update.as_mapping()
    name = next((n for n in grads if n.endswith("classifier.bias")), None)
    if name is None:
        return None
    return tuple(int(i) for i in torch.nonzero(grads[name] < 0).flatten())


class Dager(TextAttack):
    """DAGER (Petrov et al., NeurIPS 2024): exact batch recovery by span checks.

    Args: tol (relative residual accepting a candidate at layer 1), tol2 (at layer 2),
    tol2_encoder (an encoder's whole sequences: the median over positions, see
    `dager_encoder`), noise (the rank's noise floor, see `span_basis`),
    rank_tol and gap (how the span's rank is read, see `span_basis`), max_length (positions
    tried), max_candidates (decoder: prefixes tested per step before giving up: "partial");
    encoder only: restarts, sweeps and max_seconds of the search in `dager_encoder`.
    """

    name = "dager"

    def __init__(self, *, tol: float = 1e-3, tol2: float = 1e-3, tol2_encoder: float = 1e-3, rank_tol: float = 1e-9, gap: float = 20.0,
                 noise: float = 1.0, max_length: int = 64, max_candidates: int = 100_000, chunk: int = 2048,
                 restarts: int = 16, sweeps: int = 4, max_seconds: float = 120.0) -> None:
        self.tol = check_positive_float("tol", tol)
        self.tol2 = check_positive_float("tol2", tol2)
        self.tol2_encoder = check_positive_float("tol2_encoder", tol2_encoder)
        self.rank_tol = check_positive_float("rank_tol", rank_tol)
        self.gap = check_positive_float("gap", gap)
        self.max_length = check_positive_int("max_length", max_length)
        self.max_candidates = check_positive_int("max_candidates", max_candidates)
        self.chunk = check_positive_int("chunk", chunk)
        self.noise = check_positive_float("noise", noise)
        self.restarts = check_positive_int("restarts", restarts)
        self.sweeps = check_positive_int("sweeps", sweeps)
        self.max_seconds = check_positive_float("max_seconds", max_seconds)

    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: TextKnowledge, *,
                     seed: int) -> TextReconstruction:
        start = time.perf_counter()
        model = unwrap(model)
        kind = architecture(model)
        if update.protocol is not Protocol.FEDSGD:
            raise GradleakError(f"dager reads FedSGD gradients, got a {update.protocol.value} update")
        projs = [lora_projection(update, p, model) for p in projections(model)]
        if len(projs) < 2:
            raise GradleakError(f"dager needs a model of at least 2 attention layers, got {len(projs)}")
        if kind == "encoder" and len(projs) < 3:
            raise GradleakError(f"dager on an encoder classifier needs at least 3 layers (the last layer's gradient "
                                f"spans only the first token's attention mixtures), got {len(projs)}")
        bases = [span_basis(projection_gradient(model, update, p), self.rank_tol, self.gap, self.noise) for p in projs[:2]]
        ranks = tuple(int(b.shape[1]) for b in bases)
        width = int(bases[0].shape[0])  # the input width (LoRA: the adapter's rank)
        if ranks[0] == 0:
            return TextReconstruction((), time.perf_counter() - start, "failed", span_ranks=ranks,
                                      notes=("the first layer's gradient is zero",))
        notes = []
        if ranks[0] >= width - 1:  # LayerNorm outputs span at most d - 1 directions... or the whole width
            notes.append(f"layer 1's gradient has full rank {ranks[0]} of width {width}: the batch holds too many "
                         f"tokens for the span test, which then accepts every token")
        limit = min(self.max_length, getattr(model.config, "max_position_embeddings", self.max_length))
        sets = self._position_sets(model, projs[0], bases[0], limit)
        if not sets:
            return TextReconstruction((), time.perf_counter() - start, "failed", span_ranks=ranks,
                                      notes=tuple(notes) + ("no token passed layer 1's span test at position 0",))
        if kind == "decoder":
            sequences, complete = self._grow(model, projs[1], bases[1], sets)
            if not complete:
                notes.append(f"stopped at max_candidates={self.max_candidates}")
            if len(sequences) > knowledge.num_sequences:
                notes.append(f"{len(sequences)} sequences passed layer 2's test; the {knowledge.num_sequences} of "
                             f"longest (then lowest mean residual) are kept")
                sequences = self._lowest(model, projs[1], bases[1], sequences, knowledge.num_sequences)
        else:
            sequences, complete, note = self._encoder(model, projs, bases[1], sets, knowledge.num_sequences, seed)
            notes += [note] if note else []
        if knowledge.end_token is not None:
            sequences = [s + (knowledge.end_token,) for s in sequences]
        status = "ok" if complete and sequences else ("partial" if sequences else "failed")
        return TextReconstruction(tuple(sequences), time.perf_counter() - start, status, span_ranks=ranks,
                                  labels=class_labels(update), notes=tuple(notes))

    def _position_sets(self, model, proj, basis, limit: int) -> list[list[int]]:
        """C_p for p = 0, 1, ... until a position where no token passes."""
        device = basis.device
        vocab = model.get_input_embeddings().weight.shape[0]
        ids = torch.arange(vocab, device=device).unsqueeze(1)
        sets = []
        for p in range(limit):
            x = projection_inputs(model, proj, ids, torch.full_like(ids, p))[:, 0]
            found = torch.nonzero(span_residual(x, basis) < self.tol).flatten().tolist()
            if not found:
                break
            sets.append(found)
        return sets

    def _encoder(self, model, projs, basis, sets, wanted: int, seed: int) -> tuple[list, bool, str | None]:
        """Encoder: `dager_encoder.encoder_search`; "ok" when `wanted` sequences passed the
        exact check (more: the `wanted` of lowest residual are kept), else "partial"."""
        out = encoder_search(model, projs[0], projs[1], basis, sets, wanted=wanted, tol2=self.tol2_encoder,
                             restarts=self.restarts, sweeps=self.sweeps, max_seconds=self.max_seconds, seed=seed)
        found = list(out.sequences)
        if len(found) >= wanted:
            note = None if len(found) == wanted else (f"{len(found)} sequences passed layer 2's check; the {wanted} "
                                                      f"of lowest residual are kept")
            return found[:wanted], True, note
        return found, False, f"encoder search found {len(found)} of {wanted} sequences: {out.note}"

    def _lowest(self, model, proj, basis, sequences: list[tuple[int, ...]], wanted: int) -> list[tuple[int, ...]]:
        """The `wanted` longest sequences, ties broken by the mean layer-2 residual over
        positions: a reconstruction holds no more sequences than the batch, so a
        best-of-thousands match never reaches the metrics. Length first because every
        position of a survivor passed the test, and the spurious survivors are mostly dead
        ends (on a trained 2 x 768 model: 7 of 15, 2-10 tokens, against true sentences of
        12-17; their mean residual is as low as the true ones')."""
        device = basis.device
        scores = torch.empty(len(sequences), dtype=torch.float64)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for lo in range(0, len(order), self.chunk):
            rows = order[lo: lo + self.chunk]
            width = max(len(sequences[i]) for i in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
            mask = torch.zeros_like(ids)
            for j, i in enumerate(rows):
                ids[j, : len(sequences[i])] = torch.tensor(sequences[i], device=device)
                mask[j, : len(sequences[i])] = 1
            res = span_residual(projection_inputs(model, proj, ids, attention_mask=mask), basis)
            scores[rows] = ((res * mask).sum(1) / mask.sum(1)).double().cpu()
        best = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), float(scores[i])))
        return [sequences[i] for i in best[:wanted]]

    def _grow(self, model, proj, basis, sets) -> tuple[list[tuple[int, ...]], bool]:
        """Decoder: extend prefixes position by position (see the module docstring); each
        step runs only the new token through layer 1, reading the prefixes' cached keys
        and values."""
        device = basis.device
        prefixes: list[tuple[int, ...]] = [()]
        past = None
        finished: list[tuple[int, ...]] = []
        for p, tokens in enumerate(sets):
            n, k = len(prefixes), len(tokens)
            if n * k > self.max_candidates:
                return finished + [s for s in prefixes if s], False
            pool = torch.tensor(tokens, device=device)
            keep_rows, keys, values = [], [], []
            for lo in range(0, n * k, self.chunk):
                rows = torch.arange(lo, min(n * k, lo + self.chunk), device=device)
                chunk_past = None if past is None else (past[0][rows // k], past[1][rows // k])
                x, (kk, vv) = decoder_step(model, proj, chunk_past, pool[rows % k], p)
                ok = span_residual(x, basis) < self.tol2
                keep_rows.append(rows[ok])
                keys.append(kk[ok])
                values.append(vv[ok])
            kept = torch.cat(keep_rows).tolist()
            extended = {r // k for r in kept}
            finished += [s for i, s in enumerate(prefixes) if s and i not in extended]
            prefixes = [prefixes[r // k] + (tokens[r % k],) for r in kept]
            past = (torch.cat(keys), torch.cat(values))
            if not prefixes:
                break
        return finished + prefixes, True


__all__ = ["Dager", "class_labels", "span_basis", "span_residual"]
