"""Text data for training and labelling SAEs: the offline corpus built by ``scripts/build_corpus.py``."""

from saesteer.data.corpus import (
    CorpusNotFoundError,
    corpus_path,
    iter_corpus,
    iter_records,
    load_manifest,
)

__all__ = ["CorpusNotFoundError", "corpus_path", "iter_corpus", "iter_records", "load_manifest"]
