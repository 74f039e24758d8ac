"""Passkey retrieval and loss by position: the generator builds what it says (exact length, the needle at its
depth, the key as the answer, tokens equal to the text's tokenization), the scorer credits exactly the rows
whose greedy tokens spell the key, and per-position losses of a uniform model are ln V in every bucket."""

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax.data.corpus import shakespeare_scenes
from llm_jax.data.tokenizers import train_tokenizer
from llm_jax.errors import UserError
from llm_jax.eval import passkey
from llm_jax.eval.perplexity import loss_by_position

TEXT = "\n".join(shakespeare_scenes()[:40])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer("sentencepiece_bpe", [TEXT], 512, str(tmp_path_factory.mktemp("tok")))


def test_training_documents_hide_the_key_and_ask_for_it():
    docs = passkey.training_documents(TEXT, 20, (300, 700), seed=1)
    for doc in docs:
        key = doc.split("The pass key is ")[1][:5]
        assert key.isdigit() and doc.count(key) == 3 and doc.endswith(f"What is the pass key? The pass key is {key}.")
        assert 250 < len(doc) < 700 + len(passkey.NEEDLE) + len(passkey.QUESTION) + 20
    assert len({d.split("The pass key is ")[1][:5] for d in docs}) > 15  # random keys


def test_examples_have_the_length_depth_and_answer_they_claim(tokenizer):
    ex = passkey.examples(tokenizer, TEXT, 256, (0.0, 0.5, 1.0), per_depth=3, seed=0)
    assert ex.tokens_NL.shape == (9, 256)
    for row, start, n, depth in zip(ex.tokens_NL, ex.answer_N, ex.answer_len_N, ex.depth_N):
        text = tokenizer.decode(row.tolist())
        key = text.split("The pass key is ")[1][:5]
        assert tokenizer.decode(row[start:start + n].tolist()).strip() == key
        assert text.rstrip().endswith(f"What is the pass key? The pass key is {key}")
        needle_at = text.index("The pass key is") / len(text)
        assert abs(needle_at - depth * 0.85) < 0.15  # the filler is ~85% of the row; the question is last
    with pytest.raises(UserError, match="need more room or filler"):
        passkey.examples(tokenizer, TEXT, 20, (0.5,), per_depth=1)


class Oracle(nn.Module):
    """Logits that put all mass on the true next token of whichever `rows` entry the input is, except that
    `wrong` rows predict token 0 at their last position."""
    rows: tuple
    wrong: tuple
    vocab: int

    def __call__(self, inputs_BL):
        table = jnp.asarray(self.rows)
        idx = jnp.argmax((inputs_BL[:, None, :] == table[None, :, :-1]).all(-1), axis=1)
        nxt = table[idx, 1:]
        bad = jnp.isin(idx, jnp.asarray(self.wrong))[:, None] & (jnp.arange(nxt.shape[1]) == nxt.shape[1] - 1)[None]
        return nn.one_hot(jnp.where(bad, 0, nxt), self.vocab) * 10.0


def test_retrieved_credits_exactly_the_rows_whose_greedy_tokens_spell_the_key(tokenizer):
    ex = passkey.examples(tokenizer, TEXT, 128, (0.25, 0.75), per_depth=3, seed=2)
    rows = tuple(tuple(int(t) for t in r) for r in ex.tokens_NL)
    model = Oracle(rows, (1, 4), tokenizer.vocab_size)
    hits = passkey.retrieved(model, {}, ex, batch_size=4)  # 6 rows: a full and a padded batch
    assert hits.tolist() == [True, False, True, True, False, True]
    assert passkey.accuracy_by_depth(model, {}, ex) == {0.25: pytest.approx(2 / 3), 0.75: pytest.approx(2 / 3)}


class Uniform(nn.Module):
    vocab: int

    def __call__(self, inputs_BL):
        return jnp.zeros(inputs_BL.shape + (self.vocab,))


def test_loss_by_position_buckets():
    ids = np.arange(3 * 64 + 5) % 50
    out = loss_by_position(Uniform(50), {}, ids, 64, (0, 16, 32, 64), batch_size=2)
    assert out["windows"] == 3
    for bucket in ("0-16", "16-32", "32-64"):
        assert out[bucket] == pytest.approx(math.log(50), rel=1e-6)
