"""Text sources for SAE training (offline English, Hugging Face streams, local files), split 80/10/10 by hash."""

from masksae.corpora.config import SOURCES
from masksae.corpora.offline_english import build_offline_corpus, corpus_stats
from masksae.corpora.sources import corpus_fingerprint, iter_documents, validate_data_config
from masksae.corpora.splits import SPLITS, Document, split_of

__all__ = [
    "SOURCES",
    "SPLITS",
    "Document",
    "build_offline_corpus",
    "corpus_fingerprint",
    "corpus_stats",
    "iter_documents",
    "split_of",
    "validate_data_config",
]
