"""The `data.clean.*` stage of `llm-jax data prepare`: the filters of this package over a list of documents.

Order (after exact and near deduplication and the heuristic / perplexity filters of `data.filter`): language
identification (keep `languages`), the quality classifier (drop below `min_quality`), toxicity (drop above
`max_toxicity`), PII redaction (`redact_pii`: the text is rewritten, never dropped), then repeated-substring removal
across documents (`substring_ngram` words; a document left empty is dropped). Every stage is off by default and
counts what it did; the counts go into the prepared data's manifest under "clean".
"""

from __future__ import annotations

import collections
import zipfile

from llm_jax.data.clean import langid, pii, toxicity
from llm_jax.data.clean.quality import QualityClassifier
from llm_jax.data.clean.substring import SubstringDedup
from llm_jax.errors import UserError


class DocumentCleaner:
    """The per-document decisions of `data.clean` (one code path for `llm-jax data prepare` and its Beam pipeline):
    `verdict(doc)` -> (why it is dropped: "language" | "quality" | "toxicity" | None, its language code or "");
    `redact(doc)` -> (text, PII counts)."""

    REASONS = ("language", "quality", "toxicity")

    def __init__(self, c):
        self.c = c
        self.languages = [code.strip() for code in c.languages.split(",") if code.strip()]
        self.model = None
        if c.quality_model:
            try:
                self.model = QualityClassifier.load(c.quality_model)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                raise UserError(f"data.clean.quality_model={c.quality_model!r} is not a quality classifier "
                                f"(experiments/quality/run.py --save writes one): {e}") from e

    def verdict(self, doc: str) -> tuple[str | None, str]:
        code = ""
        if self.languages:
            code, prob = langid.identify(doc)
            code = code if prob >= self.c.min_language_prob else langid.UNKNOWN
            if code not in self.languages:
                return "language", code
        if self.model is not None and self.model.score(doc) < self.c.min_quality:
            return "quality", code
        if self.c.max_toxicity and toxicity.toxicity(doc) > self.c.max_toxicity:
            return "toxicity", code
        return None, code

    def redact(self, doc: str) -> tuple[str, dict[str, int]]:
        return pii.redact(doc) if self.c.redact_pii else (doc, {})

    def counts(self, reasons: list, codes: list, pii_found: collections.Counter) -> dict:
        """The manifest's `clean` counts from the verdicts of the documents that reached this stage and the PII
        found in those kept."""
        counts: dict = {}
        if self.languages:
            counts["languages"] = dict(sorted(collections.Counter(codes).items()))
            counts["removed_language"] = reasons.count("language")
        if self.model is not None:
            counts["removed_quality"] = reasons.count("quality")
        if self.c.max_toxicity:
            counts["removed_toxicity"] = reasons.count("toxicity")
        if self.c.redact_pii:
            counts["pii_redacted"] = {kind: pii_found[kind] for kind in pii.KINDS}
        return counts


def clean_documents(docs: list[str], c, log=print) -> tuple[list[str], dict]:
    """(kept and rewritten documents, counts) under the `data.clean` section `c`."""
    cleaner = DocumentCleaner(c)
    verdicts = [cleaner.verdict(doc) for doc in docs]
    found, kept = collections.Counter(), []
    for doc, (reason, _) in zip(docs, verdicts):
        if reason is None:
            text, per_kind = cleaner.redact(doc)
            found.update(per_kind)
            kept.append(text)
    counts = cleaner.counts([r for r, _ in verdicts], [code for _, code in verdicts], found)
    if cleaner.languages:
        log(f"data: languages {dict(collections.Counter(code for _, code in verdicts).most_common(5))}; kept "
            f"{', '.join(cleaner.languages)}: {len(docs) - counts['removed_language']:,} documents")
    docs = kept
    if c.substring_ngram:
        dedup, kept = SubstringDedup(c.substring_ngram), []
        for doc in docs:
            text, _ = dedup.process_text(doc)
            if text.strip():
                kept.append(text)
        stats = dedup.stats()
        counts.update(substring_counts(stats["removed_tokens"], stats["removed_spans"], len(docs) - len(kept)))
        docs = kept
    return docs, counts


def substring_counts(words: int, spans: int, emptied: int) -> dict:
    return {"substring_removed_words": words, "substring_removed_spans": spans, "substring_emptied_documents": emptied}
