"""`gradleak text-attack`: a text client's FedSGD update, attacked, originals and
reconstructions printed aligned (matched tokens plain, others in [brackets]); `--html`
also writes them as one standalone page (`gradleak.sweep.text_html`)."""

from __future__ import annotations

import argparse
import json

from gradleak.cli.args import add_seed, kv, options


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
    p.add_argument("--html", metavar="PATH", help="also write a standalone HTML page of the run (sentences aligned, "
                                                  "matched tokens marked)")
    p.set_defaults(func=cmd_text_attack)


def _marked(tokens, hits) -> str:
    """A reconstruction's tokens, those not at their original's position in [brackets]."""
    return "".join(t if hit else f"[{t}]" for t, hit in zip(tokens, hits))


def cmd_text_attack(args: argparse.Namespace) -> int:
    import torch

    from gradleak.checks import check_int, check_seed
    from gradleak.cli.args import output_file
    from gradleak.pipelines.text_audit import TextAuditConfig, run_text_audit

    check_seed(args.seed)
    html_path = output_file(args.html, "--html")  # refused before the attack runs, not after
    n = check_int("--batch", args.batch, low=1)
    torch.set_num_threads(1)
    sizes = {"layers": args.layers or (2 if args.model == "gpt2" else 3), "width": args.width,
             "checkpoint": args.checkpoint}
    config = TextAuditConfig(model=args.model, model_options=sizes, attack=args.attack,
                             attack_options=options(args.options, "-o/--option"), batch_size=n,
                             max_length=args.max_length, text=None if args.csv else args.text, csv=args.csv,
                             column=args.column, tokenizer=args.tokenizer, seed=args.seed)
    run = run_text_audit(config)
    rec, m = run.reconstruction, run.metrics
    if html_path is not None:
        _write_html(html_path, run)
    if args.json:
        print(json.dumps({"attack": args.attack, "model": args.model, "status": rec.status,
                          "seconds": round(rec.seconds, 3), "metrics": m.summary(), "notes": list(rec.notes),
                          "originals": list(run.original_texts),
                          "reconstructions": list(run.reconstruction_texts)}, indent=2))
        return 0
    print(f"{args.attack} on {args.model}: {rec.status} in {rec.seconds:.1f} s, {len(rec.sequences)} sequences "
          f"recovered for {n}" + "".join(f"\n  note: {note}" for note in rec.notes))
    for i, pair in enumerate(run.pairs):
        # the original token by token, as the reconstruction below it: special tokens shown alike
        print(f"\n#{i} original:      {''.join(pair.original)}")
        got = _marked(pair.reconstruction, pair.reconstruction_hits) if pair.reconstruction else "(none)"
        print(f"#{i} reconstructed: {got}")
    print("\n" + "  ".join(f"{k}={v:.3f}" for k, v in m.summary().items()))
    return 0


def _write_html(path, run) -> None:
    from gradleak.io import atomic_write_text
    from gradleak.sweep.text_html import text_run_page

    c, rec = run.config, run.reconstruction
    facts = [("attack", c.attack), ("model", f"{c.model} {dict(c.model_options)}"), ("batch", str(c.batch_size)),
             ("max length", str(c.max_length)), ("seed", str(c.seed)),
             ("corpus", c.csv or c.text or "built-in"),
             ("recovered", f"{len(rec.sequences)} sequences in {rec.seconds:.1f} s")]
    atomic_write_text(path, text_run_page(f"gradleak text-attack: {c.attack} on {c.model}", facts,
                                          run.metrics.summary(), run.original_texts, run.pairs,
                                          run.metrics.values, rec.status, rec.notes))
