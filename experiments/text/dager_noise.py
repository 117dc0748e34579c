"""DAGER against defended updates: Gaussian noise (sigma relative to the update's RMS
entry) and top-k sparsification, on the 2x256 GPT-2-like model at random initialization,
FedSGD, one batch of 8 test sentences (up to 32 tokens). One JSON line per setting:

    cd experiments/text && OMP_NUM_THREADS=1 PYTHONPATH=../../src nice -n 10 python dager_noise.py
"""

from __future__ import annotations

import json

import torch
from dager_gpt2 import batches

from gradleak.attacks.text import TEXT_ATTACKS
from gradleak.defenses import DEFENSES
from gradleak.text.client import text_update
from gradleak.text.corpus import builtin_corpus
from gradleak.text.metrics import text_metrics
from gradleak.text.models import gpt2_model
from gradleak.text.records import TextKnowledge
from gradleak.text.tokenizer import EOS, builtin_tokenizer


def main():
    torch.set_num_threads(1)
    tok = builtin_tokenizer()
    _, test = builtin_corpus().split(0.2, seed=0)
    model = gpt2_model(vocab_size=tok.vocab_size, layers=2, width=256, heads=4, seed=0)
    batch = next(batches(tok, test, 8, 1, seed=8, task="causal-lm"))
    update = text_update(model, batch)
    rms = float(torch.sqrt(sum((t ** 2).sum() for t in update.tensors) / sum(t.numel() for t in update.tensors)))
    attack = TEXT_ATTACKS.create("dager", {"max_candidates": 20_000})
    settings = [("none", {}, 0.0)] + [("gaussian", {"sigma": r * rms}, r) for r in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)]
    settings += [("topk", {"keep": k}, k) for k in (0.9, 0.5, 0.1)]
    with open("dager_noise.jsonl", "a") as out:
        for name, options, level in settings:
            shared = update if name == "none" else DEFENSES.create(name, options).transform(update, seed=0)
            rec = attack.reconstruct(model, shared, TextKnowledge(8, end_token=EOS))
            m = text_metrics(batch.sequences(), rec.sequences, tok.decode)
            unit = {"gaussian": "rms entry", "topk": "fraction kept"}.get(name, "-")
            row = {"defense": name, "level": level, "relative_to": unit, "update_rms": rms, "status": rec.status, "recovered": len(rec.sequences),
                   "ranks": list(rec.span_ranks), "seconds": round(rec.seconds, 1),
                   **{k: round(v, 4) for k, v in m.summary().items()}, "notes": list(rec.notes)}
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
