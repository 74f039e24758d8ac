"""Synthetic scenes for the vision-language model (`train.objective=vlm`, `data.scenes`): no image dataset can be
downloaded here, so the images are generated, with captions and questions whose answers are checkable.

A scene is 1-3 coloured shapes (square, circle, triangle; each type at most once) in distinct cells of a 2 x 2
grid (top left, top right, bottom left, bottom right), drawn on a dark, noisy background at model.image_size
pixels a side with jittered size, place and colour. Each scene gives six examples (prompt -> answer):

    caption   "describe the image ."            -> "a red circle at top left and a blue square at bottom right"
    count     "how many shapes are there ?"     -> "two"
    colour    "what colour is the circle ?"     -> "red"
    where     "where is the square ?"           -> "bottom right"
    exists    "is there a triangle ?"           -> "no"
    what_at   "what is at top right ?"          -> "nothing"

Captions list the shapes in reading order of their cells and `parse_caption` reads one back into the scene, so an
answer is checked by comparison, not by judgement. A scene is a pure function of (seed, split, index). Train and
held-out scenes have disjoint layouts (which shape, colour and cell: `held_out` hashes the caption), so held-out
exact match measures reading new combinations, not recalling seen ones. The words form a fixed vocabulary: the
run's tokenizer is a word tokenizer over exactly them (`scene_tokenizer`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from llm_jax.data.tokenizers import WordTokenizer
from llm_jax.data.tokenizers.wordpiece import SPECIAL, words_of
from llm_jax.errors import UserError

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")
CELLS = ("top left", "top right", "bottom left", "bottom right")
NUMBERS = ("zero", "one", "two", "three")
KINDS = ("caption", "count", "colour", "where", "exists", "what_at")
HELD_OUT_BUCKETS = 10  # one layout in ten is held out
MIN_IMAGE = 16


class SceneError(UserError):
    """An image or scene request that cannot be used; the message names the file or the setting."""


@dataclasses.dataclass(frozen=True)
class Item:
    shape: str
    colour: str
    cell: str


def caption(items: tuple[Item, ...]) -> str:
    return " and ".join(f"a {i.colour} {i.shape} at {i.cell}" for i in sorted(items, key=lambda i: CELLS.index(i.cell)))


def parse_caption(text: str) -> tuple[Item, ...] | None:
    """The items a caption describes (None if it is not one this module writes)."""
    items = []
    for part in text.strip().split(" and "):
        words = part.split()
        if len(words) != 6 or words[0] != "a" or words[3] != "at":
            return None
        item = Item(words[2], words[1], " ".join(words[4:]))
        if item.shape not in SHAPES or item.colour not in COLOURS or item.cell not in CELLS:
            return None
        items.append(item)
    return tuple(items) if caption(tuple(items)) == text.strip() else None


def held_out(items: tuple[Item, ...]) -> bool:
    return int(hashlib.sha256(caption(items).encode()).hexdigest(), 16) % HELD_OUT_BUCKETS == 0


def sample_items(rng: np.random.Generator) -> tuple[Item, ...]:
    n = int(rng.integers(1, 4))
    shapes = rng.permutation(len(SHAPES))[:n]
    cells = rng.permutation(len(CELLS))[:n]
    colours = rng.integers(0, len(COLOURS), n)
    names = list(COLOURS)
    return tuple(Item(SHAPES[s], names[c], CELLS[k]) for s, c, k in zip(shapes, colours, cells))


def _mask(shape: str, s: int) -> np.ndarray:
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    c = (s - 1) / 2
    if shape == "square":
        return np.ones((s, s), bool)
    if shape == "circle":
        return (x - c) ** 2 + (y - c) ** 2 <= (s / 2) ** 2
    return np.abs(x - c) <= (y + 1) / s * (s / 2)  # triangle: apex at the top, base at the bottom


def render(items: tuple[Item, ...], size: int, rng: np.random.Generator) -> np.ndarray:
    """The scene as (size, size, 3) uint8 RGB."""
    image = np.clip(20 + rng.normal(0, 8, (size, size, 3)), 0, 255)
    cell = size // 2
    for item in items:
        s = int(rng.integers(int(cell * 0.55), int(cell * 0.8) + 1))
        row, col = divmod(CELLS.index(item.cell), 2)
        top = row * cell + int(rng.integers(0, cell - s + 1))
        left = col * cell + int(rng.integers(0, cell - s + 1))
        colour = np.clip(np.asarray(COLOURS[item.colour]) + rng.integers(-20, 21, 3), 0, 255)
        image[top:top + s, left:left + s][_mask(item.shape, s)] = colour
    return image.astype(np.uint8)


def questions(items: tuple[Item, ...], rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """[(kind, prompt, answer)] of a scene, one per KINDS entry."""
    shown = {i.shape: i for i in items}
    item = items[int(rng.integers(len(items)))]
    asked = SHAPES[int(rng.integers(len(SHAPES)))]
    cell = CELLS[int(rng.integers(len(CELLS)))]
    at = {i.cell: i.shape for i in items}
    return [("caption", "describe the image .", caption(items)),
            ("count", "how many shapes are there ?", NUMBERS[len(items)]),
            ("colour", f"what colour is the {item.shape} ?", item.colour),
            ("where", f"where is the {item.shape} ?", item.cell),
            ("exists", f"is there a {asked} ?", "yes" if asked in shown else "no"),
            ("what_at", f"what is at {cell} ?", at.get(cell, "nothing"))]


@dataclasses.dataclass(frozen=True)
class Scene:
    items: tuple[Item, ...]
    image: np.ndarray                          # (S, S, 3) uint8
    examples: tuple[tuple[str, str, str], ...]  # (kind, prompt, answer)


def scene(seed: int, split: str, index: int, size: int) -> Scene:
    """Scene `index` of `split` ("train" or "val"): a pure function of its arguments."""
    if size < MIN_IMAGE or size % 2:
        raise SceneError(f"model.image_size={size}: scenes need an even size of at least {MIN_IMAGE} pixels")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    while True:  # train and held-out layouts are disjoint
        items = sample_items(rng)
        if held_out(items) == (split == "val"):
            break
    return Scene(items, render(items, size, rng), tuple(questions(items, rng)))


def scenes(seed: int, split: str, n: int, size: int) -> list[Scene]:
    return [scene(seed, split, i, size) for i in range(n)]


def vocabulary() -> list[str]:
    """Every word a prompt or answer can hold, sorted."""
    text = " ".join(["describe the image . how many shapes are there ? what colour is the where is there a at and",
                     "what is at nothing yes no", *COLOURS, *SHAPES, *CELLS, *NUMBERS])
    return sorted(set(words_of(text)))


def scene_tokenizer() -> WordTokenizer:
    return WordTokenizer(list(SPECIAL.values()) + vocabulary())


# ---------------------------------------------------------------------------------------------------- rows


def encode(tok, prompt: str, answer: str) -> tuple[list[int], list[float]]:
    """(ids, weights): the prompt (weight 0), then the answer and EOS (weight 1)."""
    p, a = tok.encode(prompt), tok.encode(answer) + [tok.eos_id]
    return p + a, [0.0] * len(p) + [1.0] * len(a)


class SceneRows:
    """Row i = one (scene, question): inputs, targets, weights (L each) and images (S, S, 3) float32 in [0, 1];
    with `blank` every image is zeros (the text-only baseline: the same model and text, no picture)."""

    def __init__(self, scene_list: list[Scene], tok, seq_len: int, blank: bool = False):
        self.scenes, self.seq_len, self.blank = scene_list, seq_len, blank
        self.pad_id = tok.special["pad"]
        self.rows = []
        for s, sc in enumerate(scene_list):
            for kind, prompt, answer in sc.examples:
                ids, weights = encode(tok, prompt, answer)
                if len(ids) > seq_len + 1:
                    raise SceneError(f"model.seq_len={seq_len}: a scene example needs {len(ids) - 1} text positions")
                self.rows.append((s, ids, weights))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        s, ids, weights = self.rows[int(i)]
        L, n = self.seq_len, len(ids) - 1
        out = {"inputs": np.full(L, self.pad_id, np.int32), "targets": np.full(L, self.pad_id, np.int32),
               "weights": np.zeros(L, np.float32)}
        out["inputs"][:n], out["targets"][:n], out["weights"][:n] = ids[:-1], ids[1:], weights[1:]
        image = self.scenes[s].image
        out["images"] = np.zeros(image.shape, np.float32) if self.blank else image.astype(np.float32) / 255.0
        return out


@dataclasses.dataclass
class SceneData:
    tokenizer: WordTokenizer
    train: SceneRows
    val: SceneRows
    manifest: dict
    fingerprint: str


VAL_SCENES = 200  # held-out scenes of the training run's evaluation (`llm-jax eval vlm` picks its own count)


def load_scenes(cfg, log=print) -> SceneData:
    """The training and held-out rows of a vlm run (data.scenes training scenes)."""
    tok, size, seed = scene_tokenizer(), cfg.model.image_size, cfg.train.seed
    if tok.vocab_size > cfg.model.vocab_size:
        raise SceneError(f"model.vocab_size={cfg.model.vocab_size}: the scene vocabulary has {tok.vocab_size} words")
    blank = cfg.data.scene_images == "blank"
    train = SceneRows(scenes(seed, "train", cfg.data.scenes, size), tok, cfg.model.seq_len, blank)
    val = SceneRows(scenes(seed, "val", VAL_SCENES, size), tok, cfg.model.seq_len, blank)
    counts = np.bincount([t for _, ids, w in train.rows for t, keep in zip(ids, w) if keep], minlength=tok.vocab_size)
    p = counts[counts > 0] / counts.sum()
    manifest = {"tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size},
                "counts": {"train_scenes": cfg.data.scenes, "val_scenes": VAL_SCENES, "train_rows": len(train),
                           "val_rows": len(val)},
                "unigram_entropy": float(-(p * np.log(p)).sum())}
    key = f"scenes:{seed}:{size}:{cfg.data.scenes}:{cfg.data.scene_images}:{cfg.model.seq_len}"
    log(f"data: {cfg.data.scenes:,} synthetic train scenes ({len(train):,} examples) / {VAL_SCENES} held-out "
        f"({len(val):,}) of {size}x{size} pixels" + (" | images withheld (blank): text-only baseline" if blank else ""))
    return SceneData(tok, train, val, manifest, hashlib.sha256(key.encode()).hexdigest()[:16])


# ------------------------------------------------------------------------------------------------ image files


def _pil():
    """Pillow's Image module (installed with the plots extra, matplotlib's dependency), or a SceneError."""
    try:
        from PIL import Image
    except ImportError:
        raise SceneError("image files need Pillow: pip install pillow (or the plots extra: pip install -e "
                         "'.[plots]')") from None
    return Image


def save_png(path: str, image: np.ndarray) -> None:
    _pil().fromarray(np.asarray(image, np.uint8), "RGB").save(path, format="PNG")


def load_image(path: str, size: int) -> np.ndarray:
    """An RGB image file as (size, size, 3) float32 in [0, 1]; a missing, unreadable or wrongly sized file is one
    SceneError naming it (images are not resized: the model reads exactly model.image_size pixels a side)."""
    if not os.path.isfile(path):
        raise SceneError(f"--image {path}: no such file")
    Image = _pil()
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 (Pillow raises several kinds for a file that is not an image)
        raise SceneError(f"--image {path}: not a readable image ({type(e).__name__}: {e})") from e
    if image.shape[:2] != (size, size):
        raise SceneError(f"--image {path}: {image.shape[1]}x{image.shape[0]} pixels, but the model reads "
                         f"{size}x{size} (model.image_size); resize it first")
    return image.astype(np.float32) / 255.0


def write_scenes(out: str, n: int = 20, seed: int = 0, size: int = 32) -> dict:
    """Held-out scenes 0..n-1 as `scene_NNNN.png` in `out`, with `questions.jsonl` ({"image", "kind", "prompt",
    "answer"} per line): files for `llm-jax generate --image` (a vlm run of train.seed = `seed` never saw them)."""
    import json
    os.makedirs(out, exist_ok=True)
    lines = []
    for i, sc in enumerate(scenes(seed, "val", n, size)):
        name = f"scene_{i:04d}.png"
        save_png(os.path.join(out, name), sc.image)
        lines += [json.dumps({"image": name, "kind": k, "prompt": p, "answer": a}) for k, p, a in sc.examples]
    path = os.path.join(out, "questions.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return {"scenes": n, "questions": len(lines), "path": path}
