import pytest

from llm_jax.data.corpus import CorpusError, fingerprint, load_documents, shakespeare_scenes, split_documents


def test_embedded_shakespeare_is_plain_text_scenes():
    docs = shakespeare_scenes()
    assert len(docs) > 700 and sum(map(len, docs)) > 4_000_000
    hamlet = next(d for d in docs if d.startswith("HAMLET\nACT I\nSCENE I."))
    assert "BERNARDO:\nWho's there?" in hamlet
    assert not any(marker in hamlet for marker in ("**", "\\[", "### "))


def test_paths_are_read_by_the_sources(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first doc\nline two\n\nsecond doc\n")
    assert load_documents(str(f)) == ["first doc\nline two\n\nsecond doc\n"]
    assert load_documents(str(f), text_unit="paragraph") == ["first doc\nline two", "second doc\n"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("one")
    (tmp_path / "d" / "y.md").write_text("two")
    (tmp_path / "d" / "z.bin").write_text("ignored")
    assert load_documents(str(tmp_path / "d")) == ["one", "two"]
    assert load_documents(f"{tmp_path / 'd' / 'x.txt'},{f}") == ["one", "first doc\nline two\n\nsecond doc\n"]


def test_empty_corpus_is_an_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(CorpusError, match="contains no text"):
        load_documents(str(empty))


def test_split_is_deterministic_by_document_and_stable_under_growth():
    docs = [f"document number {i}" for i in range(400)]
    train, val = split_documents(docs, 0.1)
    assert 20 < len(val) < 60 and len(train) + len(val) == 400
    train2, val2 = split_documents(docs + [f"extra {i}" for i in range(50)], 0.1)
    assert set(val) <= set(val2)  # adding documents never moves an old one across the split
    assert fingerprint(docs) != fingerprint(docs[:-1])


def test_split_of_two_documents_keeps_one_for_validation():
    train, val = split_documents(["a", "b"], 0.01)
    assert len(train) == 1 and len(val) == 1
