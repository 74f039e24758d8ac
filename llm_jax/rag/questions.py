"""The shipped question set (`data/shakespeare_questions.jsonl`): questions whose answers are in the embedded plays,
generated deterministically, and the answer normalisation the evaluation scores them with.

Two kinds, half each, over the plays of `PLAYS` (scenes with clean play / act / scene headers):
- "speaker": `Which character says: "<line>"?` — the answer is the speaker whose name heads the speech the line
  opens (the name is on the line above it in the scene's text);
- "play": `Which play has the line: "<line>"?` — the answer is the play's title.
A line qualifies if it opens a speech, has 7 to 16 words (so a chunk overlap of 30 words always holds it whole in
some chunk), occurs once in all 38 plays (after normalisation), and its speaker has at least 20 speeches in the
play and an upper-case name (not "Messenger", "Clown"). Lines are drawn with a fixed seed.

`normalize` is SQuAD's answer normalisation (lower case, no punctuation or articles, single spaces) after
dropping citations ("[2]") and keeping the answer's first line.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import string

SEED = 0
PER_KIND = 50
PLAYS = ("HAMLET", "OTHELLO", "ROMEO AND JULIET", "KING LEAR", "JULIUS CAESAR", "A MIDSUMMER NIGHT'S DREAM",
         "THE TEMPEST", "TWELFTH NIGHT")
MIN_WORDS, MAX_WORDS, MIN_SPEECHES = 7, 16, 20
SPEAKER = re.compile(r"^([A-Z][A-Z .'\-]*[A-Z]):$")
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "shakespeare_questions.jsonl")
NOTES = {"speaker": "Answer with the character's name only.", "play": "Answer with the play's title only."}


def normalize(text: str) -> str:
    """SQuAD's normalisation of an answer's first line, citations removed."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    text = re.sub(r"\[\d+\]", " ", lines[0] if lines else "").lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def play_of(title: str) -> str:
    return title.split(", ACT")[0]


def _speech_openings(doc) -> list[tuple[str, str]]:
    """(speaker, first line) of every speech in a scene."""
    out, lines = [], doc.text.splitlines()
    for i, line in enumerate(lines[:-1]):
        m = SPEAKER.match(line.strip())
        if m and lines[i + 1].strip():
            out.append((m.group(1), lines[i + 1].strip()))
    return out


def generate_questions(docs) -> list[dict]:
    """PER_KIND questions of each kind from `docs` (`chunk.shakespeare_documents()`); see the module docstring."""
    counts = collections.Counter(normalize(line) for d in docs for line in d.text.splitlines() if line.strip())
    speeches = collections.Counter((play_of(d.title), s) for d in docs for s, _ in _speech_openings(d))
    candidates = []
    for d in docs:
        play = play_of(d.title)
        if play not in PLAYS:
            continue
        for speaker, line in _speech_openings(d):
            if (MIN_WORDS <= len(line.split()) <= MAX_WORDS and counts[normalize(line)] == 1
                    and speeches[(play, speaker)] >= MIN_SPEECHES):
                candidates.append({"play": play, "source": d.id, "speaker": speaker, "line": line})
    picked = random.Random(SEED).sample(candidates, 2 * PER_KIND)
    out = []
    for n, c in enumerate(picked):
        kind = "speaker" if n < PER_KIND else "play"
        question = (f'Which character says: "{c["line"]}"?' if kind == "speaker"
                    else f'Which play has the line: "{c["line"]}"?')
        out.append({"id": f"{kind}-{n % PER_KIND:02d}", "kind": kind, "question": question, "note": NOTES[kind],
                    "answer": c["speaker"] if kind == "speaker" else c["play"], "play": c["play"],
                    "source": c["source"], "line": c["line"]})
    return out


def load_questions(path: str = PATH) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_questions(path: str = PATH) -> list[dict]:
    """Regenerates the shipped file from the embedded plays; returns its questions."""
    from llm_jax.fileio import atomic_write
    from llm_jax.rag.chunk import shakespeare_documents
    questions = generate_questions(shakespeare_documents())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))
    return questions
