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


def clean_documents(docs: list[str], c, log=print) -> tuple[list[str], dict]:
    """(kept and rewritten documents, counts) under the `data.clean` section `c`."""
    counts: dict = {}
    languages = [code.strip() for code in c.languages.split(",") if code.strip()]
    if languages:
        report, kept = collections.Counter(), []
        for doc in docs:
            code, prob = langid.identify(doc)
            code = code if prob >= c.min_language_prob else langid.UNKNOWN
            report[code] += 1
            if code in languages:
                kept.append(doc)
        counts["languages"], counts["removed_language"] = dict(sorted(report.items())), len(docs) - len(kept)
        docs = kept
        log(f"data: languages {dict(report.most_common(5))}; kept {', '.join(languages)}: {len(docs):,} documents")
    if c.quality_model:
        try:
            model = QualityClassifier.load(c.quality_model)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"data.clean.quality_model={c.quality_model!r} is not a quality classifier "
                            f"(experiments/quality/run.py --save writes one): {e}") from e
        kept = [doc for doc in docs if model.score(doc) >= c.min_quality]
        counts["removed_quality"], docs = len(docs) - len(kept), kept
    if c.max_toxicity:
        kept = [doc for doc in docs if toxicity.toxicity(doc) <= c.max_toxicity]
        counts["removed_toxicity"], docs = len(docs) - len(kept), kept
    if c.redact_pii:
        found, redacted = collections.Counter(), []
        for doc in docs:
            text, per_kind = pii.redact(doc)
            found.update(per_kind)
            redacted.append(text)
        counts["pii_redacted"], docs = {kind: found[kind] for kind in pii.KINDS}, redacted
    if c.substring_ngram:
        dedup, kept = SubstringDedup(c.substring_ngram), []
        for doc in docs:
            text, _ = dedup.process_text(doc)
            if text.strip():
                kept.append(text)
        stats = dedup.stats()
        counts["substring_removed_words"], counts["substring_removed_spans"] = (stats["removed_tokens"],
                                                                                stats["removed_spans"])
        counts["substring_emptied_documents"], docs = len(docs) - len(kept), kept
    return docs, counts
