"""Synthetic low-quality text made from reference paragraphs: the negatives of the quality classifier's recipe.

Each negative is built from one real paragraph and a seeded `numpy` generator, so it shares the paragraph's topic
and vocabulary and a classifier must learn form, not subject. Kinds (`KINDS`):
- shuffled: the paragraph's words in random order, its line lengths kept (word salad, as spun or scraped text).
- spam: keyword stuffing around 2-4 of the paragraph's longer words: buy / click / free / cheap phrases, URLs.
- boilerplate: cookie notices, navigation menus, share buttons, "all rights reserved" footers and link lists
  titled with the paragraph's words.
- noise: 20-40% of the characters replaced by symbols, digits or mojibake (UTF-8 read as cp1252: "â€™", "Ã©").
- repetitive: one line of the paragraph, or a 2-5 word phrase of it, repeated to about the paragraph's length.

Limits: real junk is more varied (machine translation, SEO prose, templated product pages, code dumps, tables);
these five kinds are what Gopher/C4-style heuristics and FineWeb's filters target, made cheaply. References: Rae et
al. 2021 (Gopher quality rules); Raffel et al. 2020 (C4 boilerplate rules); Penedo et al. 2024 (FineWeb).
"""

from __future__ import annotations

import re

import numpy as np

KINDS = ("shuffled", "spam", "boilerplate", "noise", "repetitive")
_SPAM = ("Buy {k} now!!!", "Best {k} deals - click here: {url}", "FREE shipping on all {k} orders!",
         "Limited time offer: cheap {k} {k} {k}", "Click here to get your FREE {k} today", "Order {k} online {url}",
         "{K} {K} {K} - 100% guaranteed, no prescription", "Visit {url} for the best price on {k}!!!",
         "Earn $$$ from home with {k}. Sign up free!", "Hot {k} discount code: SAVE50 -> {url}")
_BOILER = ("We use cookies to improve your experience. By continuing to browse this site you agree to our use of "
           "cookies. Accept all | Reject | Manage settings",
           "Home | About Us | {K} | Products | Blog | Contact | Login | Register",
           "Skip to main content", "Share on Facebook | Tweet | Pin it | Email this page",
           "Copyright © 20{yy} {K} Ltd. All rights reserved. Privacy Policy | Terms of Use | Sitemap",
           "Subscribe to our newsletter. Enter your email address: [Submit]",
           "Related posts:\n- {K} ({url})\n- {K2} ({url2})\n- More about {k} ({url})",
           "Posted in {K} | Tagged {k}, {k2} | Leave a comment | Read more »",
           "Previous page | 1 | 2 | 3 | Next page »", "This site is protected by reCAPTCHA. Terms apply.",
           "Menu\nHome\n{K}\n{K2}\nShop\nFAQ\nContact us")
_MOJIBAKE = ("â€™", "â€œ", "â€\u009d", "Ã©", "Ã¨", "Ã¼", "Â", "ï»¿", "\ufffd", "Ã\u0083Â")
_SYMBOLS = list("#@%&*{}[]<>|~^_=+\\/0123456789") + list(_MOJIBAKE)


def paragraphs(document: str, min_words: int = 40, max_words: int = 200) -> list[str]:
    """Blank-line-separated blocks merged in order until each has >= `min_words` words (a block longer than
    `max_words` words is cut between lines); a final part shorter than `min_words` // 2 words is dropped."""
    out, lines, count = [], [], 0
    for block in re.split(r"\n\s*\n", document):
        for line in block.strip().splitlines():
            lines.append(line)
            count += len(line.split())
            if count >= max_words:
                out.append("\n".join(lines))
                lines, count = [], 0
        if count >= min_words:
            out.append("\n".join(lines))
            lines, count = [], 0
        elif lines:
            lines.append("")  # keep the blank line between merged blocks
    if count >= min_words // 2:
        out.append("\n".join(lines).strip())
    return out


def _keywords(paragraph: str, rng: np.random.Generator, k: int) -> list[str]:
    words = sorted({w.lower() for w in re.findall(r"[A-Za-z]{5,}", paragraph)}) or ["item"]
    return [words[i] for i in rng.choice(len(words), size=min(k, len(words)), replace=False)]


def _url(rng: np.random.Generator, word: str) -> str:
    tld = ("com", "net", "biz", "info", "xyz")[int(rng.integers(5))]
    return f"http://www.{word}-{int(rng.integers(10, 999))}.{tld}/offer?id={int(rng.integers(1000, 99999))}"


def _fill(template: str, rng: np.random.Generator, words: list[str]) -> str:
    k, k2 = words[int(rng.integers(len(words)))], words[int(rng.integers(len(words)))]
    return template.format(k=k, K=k.capitalize(), k2=k2, K2=k2.capitalize(), url=_url(rng, k), url2=_url(rng, k2),
                           yy=int(rng.integers(10, 27)))


def shuffled(paragraph: str, rng: np.random.Generator) -> str:
    lines = paragraph.splitlines()
    words = paragraph.split()
    order = rng.permutation(len(words))
    out, i = [], 0
    for line in lines:
        n = len(line.split())
        out.append(" ".join(words[j] for j in order[i:i + n]))
        i += n
    return "\n".join(out)


def spam(paragraph: str, rng: np.random.Generator) -> str:
    words, target, out = _keywords(paragraph, rng, int(rng.integers(2, 5))), len(paragraph.split()), []
    while sum(len(s.split()) for s in out) < target:
        out.append(_fill(_SPAM[int(rng.integers(len(_SPAM)))], rng, words))
    return (" " if rng.random() < 0.5 else "\n").join(out)


def boilerplate(paragraph: str, rng: np.random.Generator) -> str:
    words, target, out = _keywords(paragraph, rng, 3), len(paragraph.split()), []
    while sum(len(s.split()) for s in out) < target:
        out.append(_fill(_BOILER[int(rng.integers(len(_BOILER)))], rng, words))
    return "\n".join(out)


def noise(paragraph: str, rng: np.random.Generator) -> str:
    rate = rng.uniform(0.2, 0.4)
    hits = rng.random(len(paragraph)) < rate
    picks = rng.integers(len(_SYMBOLS), size=len(paragraph))
    return "".join(_SYMBOLS[p] if hit and not c.isspace() else c for c, hit, p in zip(paragraph, hits, picks))


def repetitive(paragraph: str, rng: np.random.Generator) -> str:
    lines = [line for line in paragraph.splitlines() if len(line.split()) >= 3]
    words, target = paragraph.split(), len(paragraph.split())
    if lines and rng.random() < 0.5:
        unit, sep = lines[int(rng.integers(len(lines)))], "\n"
    else:
        n = int(rng.integers(2, 6))
        start = int(rng.integers(max(1, len(words) - n)))
        unit, sep = " ".join(words[start:start + n]), " " if rng.random() < 0.5 else "\n"
    return sep.join([unit] * max(3, target // max(1, len(unit.split()))))


def make_negative(paragraph: str, kind: str, rng: np.random.Generator) -> str:
    """One synthetic negative of `kind` (one of `KINDS`) from `paragraph`."""
    return {"shuffled": shuffled, "spam": spam, "boilerplate": boilerplate, "noise": noise,
            "repetitive": repetitive}[kind](paragraph, rng)
