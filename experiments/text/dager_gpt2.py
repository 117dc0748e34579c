"""DAGER on GPT-2-like causal LMs (or, with --model bert, BERT-like classifiers), FedSGD: batches of 1, 8 and 32 sentences of up to 32
tokens (31 + "<eos>") from the built-in corpus's test split; random initialization and after
a short training on the train split. Writes one JSON line per batch to results.jsonl.

    cd experiments/text && OMP_NUM_THREADS=1 PYTHONPATH=../../src nice -n 10 \
        python dager_gpt2.py --out dager_gpt2.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradleak.attacks.text import TEXT_ATTACKS
from gradleak.text.client import text_loss, text_update
from gradleak.text.corpus import builtin_corpus
from gradleak.text.metrics import text_metrics
from gradleak.text.models import bert_model, gpt2_model
from gradleak.text.records import TextKnowledge
from gradleak.text.tokenizer import EOS, builtin_tokenizer


def train(model, tok, corpus, steps, task, seed=0, lr=1e-3, batch=16):
    """A short Adam training on the train split (a copy of the model is trained)."""
    import copy

    model = copy.deepcopy(model).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(corpus), (batch,), generator=gen).tolist()
        labels = [corpus.labels[i] for i in idx] if task == "classification" else None
        b = tok.batch([corpus.sentences[i] for i in idx], max_length=32, task=task, labels=labels)
        opt.zero_grad()
        loss = text_loss(model, b)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses


def batches(tok, corpus, size, count, seed, task):
    """`count` batches of `size` test sentences that fit in 31 tokens, chosen under `seed`."""
    fits = [i for i, s in enumerate(corpus.sentences) if len(tok.encode(s)) <= 31]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(count):
        idx = [fits[i] for i in torch.randperm(len(fits), generator=gen)[:size].tolist()]
        labels = [corpus.labels[i] for i in idx] if task == "classification" else None
        yield tok.batch([corpus.sentences[i] for i in idx], max_length=32, task=task, labels=labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="dager_gpt2.jsonl")
    ap.add_argument("--model", default="gpt2", choices=["gpt2", "bert"])
    ap.add_argument("--layers", type=int, default=None, help="default: 2 (gpt2), 3 (bert: dager needs 3)")
    ap.add_argument("--widths", default="256,768")
    ap.add_argument("--sizes", default="1,8,32")
    ap.add_argument("--count", type=int, default=2, help="batches per size")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--max-candidates", type=int, default=100_000)
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--trained-only", action="store_true", help="skip the randomly initialized model")
    only.add_argument("--random-only", action="store_true", help="skip the trained model (and its training)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = builtin_tokenizer()
    train_part, test_part = builtin_corpus().split(0.2, seed=0)
    task = "causal-lm" if args.model == "gpt2" else "classification"
    layers = args.layers or (2 if args.model == "gpt2" else 3)
    attack = TEXT_ATTACKS.create("dager", {"max_candidates": args.max_candidates})
    with open(args.out, "a") as out:
        for width in [int(w) for w in args.widths.split(",")]:
            if args.model == "gpt2":
                base = gpt2_model(vocab_size=tok.vocab_size, layers=layers, width=width, heads=4, seed=0)
            else:
                base = bert_model(vocab_size=tok.vocab_size, num_classes=len(train_part.classes), layers=layers,
                                  width=width, heads=4, seed=0)
            t0 = time.perf_counter()
            trained, losses = (None, []) if args.random_only else train(base, tok, train_part, args.train_steps, task)
            train_s = time.perf_counter() - t0
            states = (("random", base), (f"trained{args.train_steps}", trained))
            states = states[1:] if args.trained_only else states[:1] if args.random_only else states
            for state, model in states:
                for size in [int(s) for s in args.sizes.split(",")]:
                    for i, batch in enumerate(batches(tok, test_part, size, args.count, seed=size, task=task)):
                        update = text_update(model, batch)
                        end = EOS if task == "causal-lm" else None
                        rec = attack.reconstruct(model, update, TextKnowledge(size, end_token=end))
                        m = text_metrics(batch.sequences(), rec.sequences, tok.decode)
                        row = {"model": args.model, "layers": layers, "width": width, "state": state, "batch": size,
                               "index": i, "tokens": sum(batch.lengths), "status": rec.status,
                               "recovered": len(rec.sequences), "seconds": round(rec.seconds, 2),
                               "ranks": list(rec.span_ranks), **{k: round(v, 4) for k, v in m.summary().items()},
                               "notes": list(rec.notes)}
                        if state != "random":
                            row["train_loss"] = [round(losses[0], 3), round(losses[-1], 3)]
                            row["train_seconds"] = round(train_s, 1)
                        print(json.dumps(row), flush=True)
                        out.write(json.dumps(row) + "\n")
                        out.flush()


if __name__ == "__main__":
    main()
