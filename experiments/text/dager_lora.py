"""DAGER on adapter-only LoRA updates (peft, rank r on c_attn, B = 0 at init) of the 2x256 GPT-2-like model,
FedSGD. One JSON line per run:

    cd experiments/text && OMP_NUM_THREADS=1 PYTHONPATH=../../src nice -n 10 python dager_lora.py
"""
import json

import torch

from gradleak.attacks.text import TEXT_ATTACKS
from gradleak.text.client import text_update
from gradleak.text.corpus import builtin_corpus
from gradleak.text.metrics import text_metrics
from gradleak.text.models import gpt2_model, lora_model
from gradleak.text.records import TextKnowledge
from gradleak.text.tokenizer import EOS, builtin_tokenizer

torch.set_num_threads(1)
c=builtin_corpus(); tok=builtin_tokenizer()
base=gpt2_model(vocab_size=tok.vocab_size, seed=0)
for rank, n, L in [(8,1,6),(8,1,32),(64,1,32),(256,1,32),(256,8,32)]:
    m=lora_model(base, rank, seed=0)
    b=tok.batch(c.sentences[:n], max_length=L)
    u=text_update(m,b)
    r=TEXT_ATTACKS.create("dager",{"max_candidates":20000}).reconstruct(m,u,TextKnowledge(n,end_token=EOS))
    row = {"lora_rank": rank, "batch": n, "tokens": sum(b.lengths), "status": r.status, "ranks": list(r.span_ranks), **{k: round(v, 4) for k, v in text_metrics(b.sequences(), r.sequences, tok.decode).summary().items()}, "seconds": round(r.seconds, 1), "notes": list(r.notes)}
    print(json.dumps(row), flush=True)
    with open("dager_lora.jsonl", "a") as out:
        out.write(json.dumps(row) + "\n")
