"""Text data that needs no download: the Python language reference every installation
holds (`pydoc_data.topics`, about 465,000 characters in 79 topics), and loaders for a
user's own text.

The built-in corpus is cut into sentences by a rule a reader can check: each topic's text
is split into paragraphs at blank lines; paragraphs that look like code or grammar (an
indented first line, `>>>`, `::=`) and headings (a line underlined with `*`, `=` or `-`)
are dropped; the rest is joined into one
line and split after ".", "!" or "?" followed by a space and a capital letter; sentences
of 4 to 60 words are kept, the first occurrence of each (deduplicated across topics, in
topic order). The classification label of a sentence is the topic it came from (its
index in `Corpus.classes`, the topics in sorted order), so labels are checked by looking
the sentence up in `pydoc_data.topics.topics[name]`. The exact sentences depend on the
Python version (the reference changes between releases).
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from gradleak.checks import check_fraction, check_seed, check_str
from gradleak.errors import DatasetNotFoundError, GradleakError

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
_CODE = re.compile(r"\A\s|>>>|::=")


@dataclass(frozen=True)
class Corpus:
    """Sentences with one label each (an index into `classes`)."""

    sentences: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.sentences) != len(self.labels):
            raise GradleakError(f"Corpus needs one label per sentence: {len(self.sentences)} vs {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.sentences)

    def subset(self, indices) -> Corpus:
        idx = [int(i) for i in indices]
        return Corpus(tuple(self.sentences[i] for i in idx), tuple(self.labels[i] for i in idx), self.classes,
                      self.source)

    def split(self, test_fraction: float = 0.1, seed: int = 0) -> tuple[Corpus, Corpus]:
        """(train, test): a seeded permutation, the first `test_fraction` of it the test part."""
        check_fraction("test_fraction", test_fraction, high_open=True)
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(check_seed(seed))).tolist()
        n_test = max(1, round(test_fraction * len(self)))
        return self.subset(sorted(perm[n_test:])), self.subset(sorted(perm[:n_test]))


def sentences_of(text: str, min_words: int = 4, max_words: int = 60) -> list[str]:
    """The sentences of one topic's text, by the rule in the module docstring."""
    out = []
    lines = text.splitlines()
    paragraphs, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    for para in paragraphs:
        block = "\n".join(para)
        if len(para) >= 2 and re.fullmatch(r"[*=\-]+", para[-1].strip()):
            continue  # a heading with its underline
        if _CODE.search(block):
            continue
        joined = " ".join(line.strip() for line in para)
        for sentence in _SPLIT.split(joined):
            sentence = sentence.strip()
            if sentence[-1:] in ".!?" and min_words <= len(sentence.split()) <= max_words:
                out.append(sentence)
    return out


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> Corpus:
    """The Python language reference's sentences, labelled by topic (see the module docstring)."""
    import sys
    from pydoc_data.topics import topics

    classes = tuple(sorted(topics))
    seen: set[str] = set()
    sentences, labels = [], []
    for label, name in enumerate(classes):
        for s in sentences_of(topics[name]):
            if s not in seen:
                seen.add(s)
                sentences.append(s)
                labels.append(label)
    return Corpus(tuple(sentences), tuple(labels), classes, f"pydoc_data.topics (Python {sys.version.split()[0]})")


def load_lines(path: str | Path) -> Corpus:
    """One sequence per non-empty line of a UTF-8 text file (label 0 for all)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError(f"text file {str(p)!r} does not exist")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise GradleakError(f"text file {str(p)!r} has no non-empty line")
    return Corpus(tuple(lines), (0,) * len(lines), ("all",), str(p))


def load_csv(path: str | Path, column: str, label_column: str | None = None) -> Corpus:
    """The `column` of a CSV file with a header row; labels from `label_column` (its
    distinct values, sorted, are the classes) or 0 for all."""
    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError(f"CSV file {str(p)!r} does not exist")
    check_str("column", column)
    with open(p, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0]) if rows else []
    for name in (column, label_column):
        if name is not None and name not in header:
            raise GradleakError(f"CSV column {name!r} is not in {str(p)!r}; its columns: {header}")
    rows = [r for r in rows if (r[column] or "").strip()]
    texts = tuple(r[column].strip() for r in rows)
    if label_column is None:
        return Corpus(texts, (0,) * len(texts), ("all",), str(p))
    classes = tuple(sorted({r[label_column] for r in rows}))
    return Corpus(texts, tuple(classes.index(r[label_column]) for r in rows), classes, str(p))


def load_saved_dataset(path: str | Path, column: str = "text", label_column: str | None = None) -> Corpus:
    """A data set saved with `datasets.Dataset.save_to_disk` (needs the `datasets` package)."""
    try:
        import datasets
    except ImportError:
        raise GradleakError("loading a saved data set needs the `datasets` package (pip install datasets)") from None
    ds = datasets.load_from_disk(str(path))
    if column not in ds.column_names:
        raise GradleakError(f"column {column!r} is not in the data set at {str(path)!r}; its columns: {ds.column_names}")
    texts = tuple(str(t).strip() for t in ds[column])
    if label_column is None:
        return Corpus(texts, (0,) * len(texts), ("all",), str(path))
    raw = [str(v) for v in ds[label_column]]
    classes = tuple(sorted(set(raw)))
    return Corpus(texts, tuple(classes.index(v) for v in raw), classes, str(path))


__all__ = ["Corpus", "builtin_corpus", "load_csv", "load_lines", "load_saved_dataset", "sentences_of"]
