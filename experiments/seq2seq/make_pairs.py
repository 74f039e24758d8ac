"""Writes a synthetic seq2seq task from the embedded Shakespeare corpus: each input is a verse line of 4-8
words, its target the same words in reverse order ("to be or not" -> "not or be to"). Synthetic, and checkable:
a model that solves it gets every target right, one that copies the input gets almost none.

Run:   python experiments/seq2seq/make_pairs.py --out runs/pairs/reverse_words.jsonl
Then:  llm-jax train --config configs/t5_seq2seq_tiny.py --workdir runs/t5_seq2seq_tiny
"""

from __future__ import annotations

import argparse
import json
import os

from llm_jax.data.corpus import load_documents


def reverse_word_pairs(min_words: int = 4, max_words: int = 8) -> list[dict]:
    seen, pairs = set(), []
    for doc in load_documents("shakespeare"):
        for line in doc.splitlines():
            words = line.split()
            if min_words <= len(words) <= max_words and not line.endswith(":") and line not in seen:
                seen.add(line)
                pairs.append({"input": " ".join(words), "target": " ".join(reversed(words))})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/pairs/reverse_words.jsonl")
    args = parser.parse_args()
    pairs = reverse_word_pairs()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in pairs)
    print(f"{len(pairs):,} pairs -> {args.out}")


if __name__ == "__main__":
    main()
