"""Downstream tasks that the tiny CPU models can show progress on, generated from the embedded Shakespeare corpus
(multiple choice, scored by `eval choice` like any benchmark):

- `shakespeare_next_line`: a speech's opening lines as context; which of 4 lines comes next — the true next line
  or one of 3 lines drawn from other speeches of held-out scenes (chance 25 %).
- `shakespeare_speaker`: a speech as context followed by a blank line; which of 4 speaker names comes next (the
  speaker of the following speech, or another character of the same scene) — chance 25 %, and a model must know
  the scene's turn-taking to beat it.

Items come only from the scenes the default run holds out for validation (`data.val_fraction` = 0.05 of documents
by a hash of their text, as `data/corpus.py` splits them), so a model trained on the default corpus never saw
them; the draw is seeded and the files are identical on every machine.
"""

from __future__ import annotations

import json
import os
import random
import re

from llm_jax.data.corpus import shakespeare_scenes, split_documents
from llm_jax.errors import UserError

SPEAKER = re.compile(r"^([A-Z][A-Za-z '.,-]{1,38}):$")
TASKS = ("shakespeare_next_line", "shakespeare_speaker")


def _speeches(scene: str) -> list[tuple[str, list[str]]]:
    """(speaker, lines) of each speech of a scene, stage directions ("Enter ...") left out."""
    out, speaker, lines = [], None, []
    for line in scene.splitlines():
        m = SPEAKER.match(line.strip())
        words = m.group(1).split() if m else []
        if m and len(words) <= 4 and all(w[0].isupper() for w in words):  # not a verse line ending in ":"
            if speaker and lines:
                out.append((speaker, lines))
            speaker, lines = m.group(1).title(), []
        elif speaker and line.strip() and not line.strip().startswith(("[", "Enter ", "Exit", "Exeunt", "Re-enter")):
            lines.append(line.strip())
    if speaker and lines:
        out.append((speaker, lines))
    return out


def held_out_scenes(val_fraction: float = 0.05) -> list[str]:
    return split_documents(shakespeare_scenes(), val_fraction)[1]


def next_line_items(scenes: list[str], n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    speeches = [lines for scene in scenes for _, lines in _speeches(scene)]
    all_lines = [line for lines in speeches for line in lines if len(line) > 12]
    candidates = [lines for lines in speeches if len(lines) >= 3]
    items = []
    for lines in rng.sample(candidates, min(n, len(candidates))):
        cut = rng.randint(2, len(lines) - 1)
        true = lines[cut]
        distractors = []
        while len(distractors) < 3:
            d = rng.choice(all_lines)
            if d != true and d not in distractors and d not in lines:
                distractors.append(d)
        choices = distractors + [true]
        rng.shuffle(choices)
        items.append({"context": "\n".join(lines[:cut]) + "\n", "choices": choices, "label": choices.index(true)})
    return items


def speaker_items(scenes: list[str], n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    pool = []
    for scene in scenes:
        speeches = _speeches(scene)
        names = sorted({s for s, _ in speeches})
        if len(names) < 4:
            continue
        for (speaker, lines), (following, _) in zip(speeches, speeches[1:]):
            if following != speaker:
                pool.append((speaker, lines, following, names))
    items = []
    for speaker, lines, following, names in rng.sample(pool, min(n, len(pool))):
        others = [x for x in names if x != following]
        choices = rng.sample(others, 3) + [following]
        rng.shuffle(choices)
        context = f"{speaker.upper()}:\n" + "\n".join(lines[-4:]) + "\n\n"
        items.append({"context": context, "choices": [c.upper() + ":" for c in choices],
                      "label": choices.index(following)})
    return items


def write_tasks(out_dir: str, n: int = 200, seed: int = 0) -> dict[str, str]:
    """Writes both tasks as choice JSONL files into `out_dir`: {task name: path}."""
    if n < 1:
        raise UserError(f"--n {n}: need at least one item per task")
    scenes = held_out_scenes()
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, items in (("shakespeare_next_line", next_line_items(scenes, n, seed)),
                        ("shakespeare_speaker", speaker_items(scenes, n, seed))):
        path = os.path.join(out_dir, f"{name}.jsonl")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(item) + "\n" for item in items)
        os.replace(tmp, path)
        paths[name] = path
    return paths
