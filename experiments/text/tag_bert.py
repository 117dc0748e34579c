"""TAG (or, with --attack lamp, LAMP with a GPT-2-like prior trained --prior-steps Adam steps on
the corpus's train split) on the BERT-like classifier (3 layers, width 256 by default), FedSGD, one sequence of
16 and of 32 tokens ("<cls>" + sentence) from the built-in corpus's test split; label
read off the output bias gradient. One JSON line per run.

    cd experiments/text && OMP_NUM_THREADS=1 PYTHONPATH=../../src nice -n 10 \
        python tag_bert.py --out tag_bert.jsonl
        python tag_bert.py --attack lamp --out lamp_bert.jsonl
"""

from __future__ import annotations

import argparse
import json

import torch

from gradleak.attacks.text import TEXT_ATTACKS
from gradleak.text.client import text_update
from gradleak.text.corpus import builtin_corpus
from gradleak.text.metrics import text_metrics
from gradleak.text.models import bert_model
from gradleak.text.records import TextKnowledge
from gradleak.text.tokenizer import builtin_tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tag_bert.jsonl")
    ap.add_argument("--attack", default="tag", choices=["tag", "lamp"])
    ap.add_argument("--prior-steps", type=int, default=200)
    ap.add_argument("--lm-weight", type=float, default=0.02, help="lamp only")
    ap.add_argument("--emb-weight", type=float, default=1.0, help="lamp only")
    ap.add_argument("--lengths", default="16,32")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = builtin_tokenizer()
    train_part, test = builtin_corpus().split(0.2, seed=0)
    model = bert_model(vocab_size=tok.vocab_size, num_classes=len(test.classes), layers=args.layers,
                       width=args.width, heads=4, seed=0)
    options = {"iterations": args.iterations, "lr": args.lr}
    if args.attack == "lamp":
        from dager_gpt2 import train

        from gradleak.text.models import gpt2_model

        lm = gpt2_model(vocab_size=tok.vocab_size, layers=2, width=256, heads=4, seed=0)
        options.update(lm_weight=args.lm_weight, emb_weight=args.emb_weight)
        options["prior"], _ = train(lm, tok, train_part, args.prior_steps, "causal-lm")
    attack = TEXT_ATTACKS.create(args.attack, options)
    with open(args.out, "a") as out:
        for length in [int(n) for n in args.lengths.split(",")]:
            # the first test sentence that fills the length exactly ("<cls>" + length - 1 tokens)
            i = next(i for i, s in enumerate(test.sentences) if len(tok.encode(s)) >= length - 1)
            batch = tok.batch([test.sentences[i]], max_length=length, task="classification",
                              labels=[test.labels[i]])
            rec = attack.reconstruct(model, text_update(model, batch), TextKnowledge(1, length=length),
                                     seed=args.seed)
            m = text_metrics(batch.sequences(), rec.sequences, tok.decode)
            row = {"attack": args.attack, "model": "bert", "layers": args.layers, "width": args.width, "length": length,
                   "iterations": args.iterations, "lr": args.lr,
                   **({"lm_weight": args.lm_weight, "emb_weight": args.emb_weight} if args.attack == "lamp" else {}),
                   "seconds": round(rec.seconds, 1),
                   "loss": rec.loss, "label_ok": rec.labels == (test.labels[i],),
                   **{k: round(v, 4) for k, v in m.summary().items()},
                   "original": tok.decode(batch.sequences()[0]), "recovered": tok.decode(rec.sequences[0])}
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
