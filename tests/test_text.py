"""Text: the built-in corpus, the tokenizer, the text client and the exact DAGER attack."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("rouge_score")

from gradleak.attacks.text import TEXT_ATTACKS
from gradleak.attacks.text.dager import span_basis, span_residual
from gradleak.attacks.text.layers import projection_gradient, projection_inputs, projections
from gradleak.errors import GradleakError
from gradleak.records import LocalTraining, Protocol
from gradleak.text.client import text_update
from gradleak.text.corpus import builtin_corpus, load_csv, load_lines
from gradleak.text.metrics import text_metrics, token_accuracy
from gradleak.text.models import bert_model, gpt2_model
from gradleak.text.records import TextBatch, TextKnowledge
from gradleak.text.tokenizer import EOS, train_tokenizer


@pytest.fixture(scope="module")
def corpus():
    return builtin_corpus()


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer(corpus.sentences, 1024)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_corpus_labels_are_the_topic_a_sentence_came_from(corpus):
    from pydoc_data.topics import topics

    assert len(corpus) > 1000 and len(set(corpus.sentences)) == len(corpus)
    for i in range(0, len(corpus), 97):
        name = corpus.classes[corpus.labels[i]]
        first_words = corpus.sentences[i].split()[:3]
        assert all(w in topics[name] for w in first_words)
    train, test = corpus.split(0.1, seed=3)
    again = corpus.split(0.1, seed=3)[1]
    assert test.sentences == again.sentences and not set(train.sentences) & set(test.sentences)
    assert len(train) + len(test) == len(corpus)
    assert corpus.split(0.1, seed=4)[1].sentences != test.sentences


def test_user_text_loaders(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n")
    assert load_lines(tmp_path / "a.txt").sentences == ("first line", "second line")
    (tmp_path / "b.csv").write_text("text,kind\nhello there,x\nbye now,y\n")
    c = load_csv(tmp_path / "b.csv", "text", "kind")
    assert c.sentences == ("hello there", "bye now") and c.labels == (0, 1) and c.classes == ("x", "y")
    with pytest.raises(GradleakError, match="column 'nope'"):
        load_csv(tmp_path / "b.csv", "nope")


def test_tokenizer_round_trip_and_determinism(corpus, tok):
    for text in corpus.sentences[:50] + ("Ünïcödé — ∑ 😀 tabs\tand  spaces",):
        assert tok.decode(tok.encode(text)) == text
    again = train_tokenizer(corpus.sentences, 1024)
    assert again.tokenizer.to_str() == tok.tokenizer.to_str()
    b = tok.batch(["a b c", "a"], max_length=8)
    assert b.lengths == (len(tok.encode("a b c")) + 1, 2) and b.input_ids[1, 1] == EOS


def _problem(tok, corpus, n=3, length=10, seed=0):
    model = gpt2_model(vocab_size=tok.vocab_size, size="tiny", seed=seed, max_length=16)
    batch = tok.batch(corpus.sentences[:n], max_length=length)
    return model, batch, text_update(model, batch)


def test_dager_recovers_a_tiny_gpt2_batch_exactly(corpus, tok):
    model, batch, update = _problem(tok, corpus)
    before = snapshot(model)
    attack = TEXT_ATTACKS.create("dager")
    rec = attack.reconstruct(model, update, TextKnowledge(num_sequences=3, end_token=EOS))
    assert rec.status == "ok"
    assert sorted(rec.sequences) == sorted(batch.sequences())
    m = text_metrics(batch.sequences(), rec.sequences, tok.decode)
    assert m.summary() == {"token_accuracy": 1.0, "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "exact": 1.0}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert attack.reconstruct(model, update, TextKnowledge(3, end_token=EOS)).sequences == rec.sequences


def test_dager_returns_no_more_sequences_than_the_batch(corpus, tok):
    """Under noise every token passes and thousands of candidates survive; the attacker keeps
    the batch size's worth of lowest residual, so the metrics never score a best-of-thousands."""
    model, batch, update = _problem(tok, corpus)
    gen = torch.Generator().manual_seed(0)
    noisy = dataclasses.replace(update, tensors=tuple(g + 1e-2 * torch.randn(g.shape, generator=gen)
                                                      for g in update.tensors))
    rec = TEXT_ATTACKS.create("dager", {"max_candidates": 5000}).reconstruct(
        model, noisy, TextKnowledge(num_sequences=3, end_token=EOS))
    assert 0 < len(rec.sequences) <= 3
    assert any("longest (then lowest mean residual)" in n for n in rec.notes)


def test_span_test_rejects_a_token_not_in_the_batch(corpus, tok):
    model, batch, update = _problem(tok, corpus)
    proj = projections(model)[0]
    basis = span_basis(projection_gradient(model, update, proj))
    present = set(batch.input_ids[:, :-1].flatten().tolist())
    absent = [t for t in range(3, tok.vocab_size) if t not in present][:50]
    ids = torch.tensor([int(batch.input_ids[0, 0])] + absent).unsqueeze(1)
    res = span_residual(projection_inputs(model, proj, ids, torch.zeros_like(ids))[:, 0], basis)
    assert res[0] < 1e-4 and (res[1:] > 1e-2).all()
    # a perturbed gradient (its span no longer the inputs') accepts nothing: the test can fail
    noisy = update.tensors[next(i for i, n in enumerate(update.names) if n.endswith("h.0.attn.c_attn.weight"))]
    noisy_basis = span_basis(noisy.T + 1e-2 * noisy.abs().max() * torch.randn_like(noisy.T), 1e-5)
    assert noisy_basis.shape[1] == noisy_basis.shape[0]  # full rank: every token passes, none is singled out


def test_dager_refusals(corpus, tok):
    model, batch, update = _problem(tok, corpus)
    attack = TEXT_ATTACKS.create("dager")
    with pytest.raises(GradleakError, match="model must be a transformers GPT-2 or BERT"):
        attack.reconstruct(torch.nn.Linear(3, 3), update)
    fedavg = text_update(model, batch, LocalTraining(protocol=Protocol.FEDAVG, lr=0.01))
    with pytest.raises(GradleakError, match="FedSGD"):
        attack.reconstruct(model, fedavg)
    one = gpt2_model(vocab_size=tok.vocab_size, size="tiny", layers=1)
    with pytest.raises(GradleakError, match="at least 2 attention layers"):
        attack.reconstruct(one, text_update(one, batch))
    with pytest.raises(GradleakError, match="does not take"):
        TEXT_ATTACKS.create("dager", {"nope": 1})


def test_text_client_shares_the_mean_loss_gradient(corpus, tok):
    model, batch, update = _problem(tok, corpus, n=2)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                labels=batch.input_ids.masked_fill(batch.attention_mask == 0, -100))
    grads = torch.autograd.grad(out.loss, list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(update.tensors, grads))
    with pytest.raises(GradleakError, match="attention_mask"):
        TextBatch(batch.input_ids, torch.zeros_like(batch.input_ids))


def test_metrics_match_and_score():
    assert token_accuracy([1, 2, 3, 4], [1, 2, 9]) == 0.5
    m = text_metrics([(5, 6), (7, 8)], [(7, 8)], lambda s: " ".join(f"w{t}" for t in s))
    assert m.assignment == (-1, 0) and m.values["exact"] == (0.0, 1.0) and m.mean("rouge1") == 0.5


def test_dager_encoder_recovers_one_bert_sequence_and_its_label(corpus, tok):
    model = bert_model(vocab_size=tok.vocab_size, num_classes=5, size="tiny", layers=3, seed=0, max_length=16)
    batch = tok.batch(corpus.sentences[:1], max_length=12, task="classification", labels=[3])
    rec = TEXT_ATTACKS.create("dager").reconstruct(model, text_update(model, batch))
    assert rec.status == "ok" and rec.sequences == batch.sequences() and rec.labels == (3,)
    two = bert_model(vocab_size=tok.vocab_size, num_classes=5, size="tiny", layers=2)
    with pytest.raises(GradleakError, match="at least 3 layers"):
        TEXT_ATTACKS.create("dager").reconstruct(two, text_update(two, batch))


def test_tag_matches_gradients_and_refuses_causal_lms(corpus, tok):
    model = bert_model(vocab_size=tok.vocab_size, num_classes=3, size="tiny", layers=1, seed=0, max_length=8)
    batch = tok.batch(corpus.sentences[:1], max_length=6, task="classification", labels=[2])
    update = text_update(model, batch)
    before = snapshot(model)
    know = TextKnowledge(1, length=6)
    first = TEXT_ATTACKS.create("tag", {"iterations": 1}).reconstruct(model, update, know, seed=1)
    rec = TEXT_ATTACKS.create("tag", {"iterations": 15}).reconstruct(model, update, know, seed=1)
    assert rec.loss < 0.5 * first.loss and rec.labels == (2,) and len(rec.sequences[0]) == 6
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    again = TEXT_ATTACKS.create("tag", {"iterations": 15}).reconstruct(model, update, know, seed=1)
    assert again.sequences == rec.sequences
    lm = gpt2_model(vocab_size=tok.vocab_size, size="tiny")
    with pytest.raises(GradleakError, match="for a causal LM use dager"):
        TEXT_ATTACKS.create("tag").reconstruct(lm, text_update(lm, tok.batch(["a b"])), TextKnowledge(1, length=3))
    with pytest.raises(GradleakError, match="TextKnowledge.length"):
        TEXT_ATTACKS.create("tag").reconstruct(model, update)


def test_cli_text_attack(capsys):
    import json

    from gradleak.cli.main import main

    assert main(["text-attack", "-n", "2", "--max-length", "8", "--width", "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["metrics"]["exact"] == 1.0
    assert main(["text-attack", "-n", "2", "--max-length", "8", "--width", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    originals = [ln.split(":", 1)[1].strip() for ln in lines if " original:" in ln]
    rebuilt = [ln.split(":", 1)[1].strip() for ln in lines if " reconstructed:" in ln]
    assert len(originals) == 2 and originals == rebuilt  # exact: the two lines read the same, specials included
    assert main(["text-attack", "-a", "nope"]) == 2
    assert "known text attacks: dager, lamp, tag" in capsys.readouterr().err


def test_dager_reads_lora_adapter_updates_while_tokens_fit_the_rank(corpus, tok):
    from gradleak.text.models import lora_model

    base = gpt2_model(vocab_size=tok.vocab_size, size="tiny", seed=0, max_length=16)
    batch = tok.batch(corpus.sentences[:1], max_length=6)  # 5 tokens reach the gradient
    wide = lora_model(base, 16, seed=0)
    update = text_update(wide, batch)
    assert all("lora_" in n for n in update.names)  # adapters only
    rec = TEXT_ATTACKS.create("dager").reconstruct(wide, update, TextKnowledge(1, end_token=EOS))
    assert rec.status == "ok" and rec.sequences == batch.sequences()
    narrow = lora_model(base, 4, seed=0)  # rank 4 < 5 tokens: the span is the whole adapter space
    rec = TEXT_ATTACKS.create("dager", {"max_candidates": 2000}).reconstruct(narrow, text_update(narrow, batch))
    assert rec.sequences != batch.sequences() and "full rank" in rec.notes[0]


# every registered text attack, held to the shared invariants (the image registry's tests
# in test_invariants.py build image problems, so the text registry has its own cases)
TEXT_ATTACK_CASES = {
    "dager": ("gpt2", {}),
    "tag": ("bert", {"iterations": 2}),
    "lamp": ("bert", {"iterations": 3, "every": 1, "candidates": 3}),
}


def test_every_text_attack_has_a_case():
    assert set(TEXT_ATTACK_CASES) == set(TEXT_ATTACKS.names())


@pytest.mark.parametrize("name", sorted(TEXT_ATTACK_CASES))
def test_text_attack_invariants(name, corpus, tok):
    kind, options = TEXT_ATTACK_CASES[name]
    if kind == "gpt2":
        model = gpt2_model(vocab_size=tok.vocab_size, size="tiny", seed=1, max_length=16)
        batch = tok.batch(corpus.sentences[:2], max_length=6)
    else:
        model = bert_model(vocab_size=tok.vocab_size, num_classes=3, size="tiny", layers=3, seed=1, max_length=16)
        batch = tok.batch(corpus.sentences[:1], max_length=6, task="classification", labels=[1])
    update = text_update(model, batch)
    before, tensors = snapshot(model), tuple(t.clone() for t in update.tensors)
    know = TextKnowledge(batch.num_sequences, length=6)
    a = TEXT_ATTACKS.create(name, options).reconstruct(model, update, know, seed=5)
    b = TEXT_ATTACKS.create(name, options).reconstruct(model, update, know, seed=5)
    assert a.sequences == b.sequences and a.sequences
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(x, y) for x, y in zip(update.tensors, tensors))
    with pytest.raises(GradleakError, match="num_sequences"):
        TEXT_ATTACKS.create(name, options).reconstruct(model, update, TextKnowledge(batch.num_sequences + 1, length=6))


def test_lamp_reorderings_are_permutations_that_keep_the_first_position():
    from gradleak.attacks.text.lamp import reorderings

    orders = reorderings(7, 30, torch.Generator().manual_seed(0))
    assert torch.equal(orders[0], torch.arange(7)) and len(orders) == 30
    assert all(sorted(o.tolist()) == list(range(7)) and o[0] == 0 for o in orders)
    assert len({tuple(o.tolist()) for o in orders}) > 10
