"""The `data.clean` stage of `data prepare`: each filter on planted documents, its counts in the manifest."""

import json

import pytest

from llm_jax import config as config_lib
from llm_jax.data.clean.apply import clean_documents
from llm_jax.data.prepare import prepare
from llm_jax.errors import UserError

ENGLISH = ("The old ferryman rowed the travellers across the river every morning, and in the evening he mended "
           "his nets by the fire while his daughter read aloud from a book of sea stories.")
REPEATED = ("this paragraph of boilerplate text was copied from one page of the site onto every other page of the "
            "same site without a single change")
DOCS = [
    ENGLISH + " " + REPEATED,
    "Der alte Fährmann ruderte jeden Morgen die Reisenden über den Fluss, und am Abend flickte er seine Netze.",
    "Write to jane.doe@example.com or call (202) 555-0143 about the boat; " + ENGLISH,
    "you stupid idiot, you moron, shut up you bastard " * 3,
    "A second page.\nIt begins differently, then " + REPEATED + "\nand ends on its own line.",
]


def clean_cfg(**sets):
    cfg = config_lib.load_config(None, {f"data.clean.{k}": str(v) for k, v in sets.items()})
    return cfg.data


def test_each_stage_on_planted_documents():
    docs, counts = clean_documents(DOCS, clean_cfg(languages="en", max_toxicity=0.2, redact_pii="true",
                                                   substring_ngram=8).clean, log=lambda _: None)
    assert counts["removed_language"] == 1 and counts["languages"]["de"] == 1
    assert counts["removed_toxicity"] == 1
    assert counts["pii_redacted"]["email"] == 1 and counts["pii_redacted"]["phone"] == 1
    assert counts["substring_removed_spans"] == 2 and counts["substring_emptied_documents"] == 0
    assert len(docs) == 3 and docs[0] == ENGLISH + " " + REPEATED  # the first copy stays
    assert docs[1].startswith("Write to <EMAIL> or call <PHONE> about the boat;")
    assert docs[2] == "A second page.\nIt begins differently, then \nand ends on its own line."  # lines kept
    assert ENGLISH not in docs[1]  # its copy of the first document's paragraph is cut too


def test_off_by_default_and_counted_in_the_manifest(tmp_path):
    data = config_lib.load_config(None, {}).data
    assert clean_documents(DOCS, data.clean, log=lambda _: None) == (DOCS, {})
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d * 20}) + "\n" for d in DOCS))
    data = clean_cfg(languages="en", redact_pii="true")
    data.update(val_fraction=0.4)
    prepare([str(corpus)], str(tmp_path / "out"), data, vocab_size=300, log=lambda _: None)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["clean"]["removed_language"] == 1
    assert manifest["counts"]["clean"]["pii_redacted"]["email"] == 20


def test_a_file_that_is_not_a_quality_model_is_one_clear_error(tmp_path):
    bogus = tmp_path / "model.npz"
    bogus.write_text("not a model")
    with pytest.raises(UserError, match="is not a quality classifier"):
        clean_documents(DOCS, clean_cfg(quality_model=bogus).clean, log=lambda _: None)
