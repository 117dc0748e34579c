"""`gradleak text-attack`: a text client's FedSGD update, attacked, originals and
reconstructions printed aligned (matched tokens plain, others in [brackets])."""

from __future__ import annotations

import argparse
import json

from gradleak.cli.args import add_seed, kv, options
from gradleak.errors import GradleakError


def add_parser(sub) -> None:
    p = sub.add_parser("text-attack", help="attack a text client's update (dager, tag) on a GPT-2/BERT-like model",
                       description="Sample sentences (the built-in Python-reference corpus, or your text), compute "
                                   "the client's FedSGD gradient on a transformers model, and reconstruct them.")
    p.add_argument("-a", "--attack", default="dager", help="text attack: dager, tag (default dager)")
    p.add_argument("-m", "--model", default="gpt2", choices=["gpt2", "bert"],
                   help="gpt2: causal LM; bert: sequence classifier (default gpt2)")
    p.add_argument("-n", "--batch", type=int, default=4, help="sentences in the client's batch (default 4)")
    p.add_argument("--max-length", type=int, default=32, help="tokens per sequence, special tokens included")
    p.add_argument("--layers", type=int, help="transformer layers (default 2 for gpt2, 3 for bert)")
    p.add_argument("--width", type=int, help="hidden width (default 256)")
    p.add_argument("--checkpoint", help="a local folder with config.json and model.safetensors")
    p.add_argument("--text", help="a UTF-8 file, one sequence per line (default: the built-in corpus)")
    p.add_argument("--csv", help="a CSV file with a header row; --column names the text column")
    p.add_argument("--column", default="text", help="the CSV's text column (default text)")
    p.add_argument("--tokenizer", help="a tokenizer.json (tokens 0, 1, 2: <pad>, <eos>, <cls>)")
    p.add_argument("-o", "--option", dest="options", action="append", type=kv, metavar="KEY=VALUE",
                   help="attack option (repeatable), e.g. -o iterations=300")
    add_seed(p, help="seed of the model and the sentence draw (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of aligned text")
    p.set_defaults(func=cmd_text_attack)


def _marked(tokens: list[str], original: list[int], recovered: list[int]) -> str:
    return "".join(t if i < len(original) and original[i] == r else f"[{t}]"
                   for i, (t, r) in enumerate(zip(tokens, recovered)))


def cmd_text_attack(args: argparse.Namespace) -> int:
    import torch

    from gradleak.attacks.text import TEXT_ATTACKS
    from gradleak.checks import check_int, check_seed
    from gradleak.text.client import text_update
    from gradleak.text.corpus import builtin_corpus, load_csv, load_lines
    from gradleak.text.metrics import text_metrics
    from gradleak.text.models import TEXT_MODELS
    from gradleak.text.records import TextKnowledge
    from gradleak.text.tokenizer import EOS, builtin_tokenizer, load_tokenizer

    check_seed(args.seed)
    n = check_int("--batch", args.batch, low=1)
    torch.set_num_threads(1)
    attack = TEXT_ATTACKS.create(args.attack, options(args.options, "-o/--option"))
    corpus = load_csv(args.csv, args.column) if args.csv else load_lines(args.text) if args.text else builtin_corpus()
    if n > len(corpus):
        raise GradleakError(f"--batch must be at most the corpus's {len(corpus)} sequences, got {n}")
    tok = load_tokenizer(args.tokenizer) if args.tokenizer else builtin_tokenizer()
    idx = torch.randperm(len(corpus), generator=torch.Generator().manual_seed(args.seed))[:n].tolist()
    task = "causal-lm" if args.model == "gpt2" else "classification"
    sizes = {"layers": args.layers or (2 if args.model == "gpt2" else 3), "width": args.width,
             "max_length": max(64, args.max_length), "seed": args.seed, "checkpoint": args.checkpoint}
    if task == "classification":
        sizes["num_classes"] = max(2, len(corpus.classes))
    model = TEXT_MODELS.create(args.model, sizes, vocab_size=tok.vocab_size)
    labels = [corpus.labels[i] for i in idx] if task == "classification" else None
    batch = tok.batch([corpus.sentences[i] for i in idx], max_length=args.max_length, task=task, labels=labels)
    knowledge = TextKnowledge(n, length=int(batch.input_ids.shape[1]), end_token=EOS if task == "causal-lm" else None)
    rec = attack.reconstruct(model, text_update(model, batch), knowledge, seed=args.seed)
    originals = batch.sequences()
    m = text_metrics(originals, rec.sequences, tok.decode)
    if args.json:
        print(json.dumps({"attack": args.attack, "model": args.model, "status": rec.status,
                          "seconds": round(rec.seconds, 3), "metrics": m.summary(), "notes": list(rec.notes),
                          "originals": [tok.decode(s) for s in originals],
                          "reconstructions": [tok.decode(s) for s in rec.sequences]}, indent=2))
        return 0
    print(f"{args.attack} on {args.model}: {rec.status} in {rec.seconds:.1f} s, {len(rec.sequences)} sequences "
          f"recovered for {n}" + "".join(f"\n  note: {note}" for note in rec.notes))
    for i, (orig, j) in enumerate(zip(originals, m.assignment)):
        print(f"\n#{i} original:      {tok.decode(orig)}")
        got = list(rec.sequences[j]) if j >= 0 else []
        print(f"#{i} reconstructed: {_marked(tok.tokens(got), list(orig), got) if got else '(none)'}")
    print("\n" + "  ".join(f"{k}={v:.3f}" for k, v in m.summary().items()))
    return 0
