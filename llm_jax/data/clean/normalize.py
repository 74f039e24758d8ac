"""Unicode normalisation (`data.clean.normalize`), the first stage after reading, before any deduplication: "NFC"
composes characters (é as one code point, as most text already is), "NFKC" also folds compatibility forms — full-width
letters and digits, ligatures (ﬁ), superscripts, the ellipsis character — so that the same text written with either
dedups as one document and tokenizes alike. "" (the default) keeps the text as read. Documents changed are counted
in the manifest's `counts.input.normalized_documents`."""

from __future__ import annotations

import unicodedata
from typing import Iterable, Iterator

FORMS = ("", "NFC", "NFKC")


def normalize_documents(docs: Iterable[str], form: str, stats) -> Iterator[str]:
    """`docs` in normal form `form` ("" = as they are); counts the changed ones in `stats["normalized_documents"]`."""
    if form not in FORMS:
        raise ValueError(f"normal form {form!r}: one of {FORMS}")
    for doc in docs:
        if form:
            normal = unicodedata.normalize(form, doc)
            if normal != doc:
                stats["normalized_documents"] += 1
                doc = normal
        yield doc
