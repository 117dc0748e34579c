"""Text: a federated language model's data, tokenizer, models, client and metrics.

The twins of the image floors, one module each, on the same floors (tests/test_layering.py):
`records` (TextBatch, TextReconstruction) on the records floor, `client` on the client
floor, `models` on the models floor, `corpus` and `tokenizer` on the data floor, `metrics`
on the metrics floor. The attacks that read text updates live in `gradleak.attacks.text`.
Everything here needs the optional `text` extra (transformers, tokenizers, peft,
rouge-score); nothing is downloaded at run time. This package face imports nothing.
"""
