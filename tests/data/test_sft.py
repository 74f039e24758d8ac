"""Fine-tuning data (llm_jax/data/sft.py): the four record layouts, chat templates and their assistant spans, loss
masks, packing with document masks (no example sees another: bit-identical losses), preference records, and an
SFT run from a trained work directory's config.json."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import comparison_sft_file, sft_overrides, small_config
from llm_jax import config as config_lib
from llm_jax.data import sft
from llm_jax.data.tokenizers import CharTokenizer
from llm_jax.data.tokenizers.wordpiece import SPECIAL
from llm_jax.models import build_model
from llm_jax.objectives import get_objective
from llm_jax.train.state import init_params

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TOK = CharTokenizer(list(SPECIAL.values()) + sorted(set("abcdefghijklmnopqrstuvwxyz0123456789 +=?:\n<|>_!.")))
EOS = TOK.eos_id


def trained_text(ids, weights):
    return "".join("#" if i == EOS else TOK.decode([i]) for i, w in zip(ids, weights) if w)


def test_the_four_layouts_become_the_same_conversation():
    messages = [{"role": "user", "content": "add 2 3"}, {"role": "assistant", "content": "5"}]
    records = [{"messages": messages},
               {"conversations": [{"from": "human", "value": "add 2 3"}, {"from": "gpt", "value": "5"}]},
               {"instruction": "add 2 3", "output": "5"}]
    assert [sft.record_layout(r) for r in records] == ["messages", "sharegpt", "alpaca"]
    assert all(sft.to_messages(r, sft.record_layout(r)) == messages for r in records)
    alpaca = sft.to_messages({"instruction": "add", "input": "2 3", "output": "5"}, "alpaca")
    assert alpaca[0]["content"] == "add\n\n2 3"
    assert sft.record_layout({"prompt": "2+3=", "completion": "5"}) == "prompt_completion"
    assert sft.record_layout({"text": "x"}) is None
    assert sft.to_messages({"messages": [{"role": "user", "content": "hi"}]}, "messages") is None  # no reply


def test_assistant_only_masks_with_the_plain_and_a_chatml_template():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "add 2 3"},
                {"role": "assistant", "content": "5"}, {"role": "user", "content": "again"},
                {"role": "assistant", "content": "5 again"}]
    plain = sft.chat_segments(None, messages)
    assert "".join(t for t, _ in plain) == ("system: be brief\nuser: add 2 3\nassistant: 5\nuser: again\n"
                                           "assistant: 5 again\n")
    ids, weights = sft.encode_example(TOK, plain, "completion")
    assert trained_text(ids, weights) == " 5\n# 5 again\n#"  # each reply and the EOS after it
    ids, weights = sft.encode_example(TOK, sft.chat_segments(CHATML, messages), "completion")
    assert trained_text(ids, weights) == "5<|im_end|>\n#5 again<|im_end|>\n#"
    assert trained_text(*sft.encode_example(TOK, plain, "all")) == TOK.decode(ids[:0]) + \
        "".join(t for t, _ in plain).replace("5\n", "5\n#", 1) + "#"
    ids, weights = sft.encode_example(TOK, [("2+3=", False), ("5", True)], "completion")
    assert trained_text(ids, weights) == "5#" and len(ids) == 6


def test_a_template_that_is_not_prefix_stable_is_refused():
    numbered = "{% for m in messages %}{{ messages|length }} {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(sft.SFTDataError, match="prefix by prefix"):
        sft.chat_segments(numbered, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


def test_packing_places_every_example_once_with_restarting_positions():
    lengths = [9, 3, 5, 2, 7, 1]
    rows = sft.pack(lengths, 10)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows) and len(rows) == 3  # 27 positions in 3 rows of 10
    examples = [([1] * (n + 1), [0.0] + [1.0] * n) for n in lengths]
    data = sft.SFTRows(examples, 10, True, pad_id=0)
    for i in range(len(data)):
        row = data[i]
        for seg in range(1, row["segment_ids"].max() + 1):
            at = np.flatnonzero(row["segment_ids"] == seg)
            assert list(row["positions"][at]) == list(range(at.size)) and at.size == at[-1] - at[0] + 1
        assert row["weights"][row["segment_ids"] == 0].sum() == 0
    assert data.fill == pytest.approx(27 / 30)
    assert len(sft.SFTRows(examples, 10, False, pad_id=0)) == 6


@pytest.mark.parametrize("document_mask", [True, False])
def test_packed_examples_never_see_each_other(document_mask):
    """The guide's SFT packing: change one example of a packed row and the others' per-token losses are
    bit-identical; without the document mask they change (the test can fail)."""
    cfg = small_config(vocab_size=TOK.vocab_size, seq_len=32, positions="rope", document_mask=document_mask)
    texts = [("add 2 3", "5"), ("add 10 20", "30"), ("add 1 1", "2")]

    def row(texts):
        examples = [sft.encode_example(TOK, [(p, False), (c, True)], "all") for p, c in texts]
        data = sft.SFTRows(examples, 32, True, pad_id=TOK.pad_id)
        assert len(data) == 1
        return {k: jnp.asarray(v)[None] for k, v in data[0].items()}

    model = build_model(cfg.model, cfg.mesh)
    params = init_params(model, cfg.model.seq_len, jax.random.key(0))
    losses = lambda batch: np.asarray(get_objective("sft").losses(model, params, batch, None, True)[0])[0]  # noqa: E731
    a, b = row(texts), row([texts[0], ("sub 99 77", "22"), texts[2]])  # same lengths, other tokens
    seg_a = np.asarray(a["segment_ids"][0])
    assert (seg_a == np.asarray(b["segment_ids"][0])).all() and not (a["inputs"] == b["inputs"]).all()
    changed = seg_a == seg_a[np.flatnonzero(np.asarray(a["inputs"][0]) != np.asarray(b["inputs"][0]))[0]]
    others = (~changed) & (seg_a > 0)
    identical = np.array_equal(losses(a)[others], losses(b)[others])
    assert identical == document_mask


def test_preference_records_of_three_releases():
    raw = "\n".join(json.dumps(r) for r in [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
        {"prompt": "hi", "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "no"}]},
        {"chosen": "a", "rejected": 3}, "not json"]).encode()
    triples, counts = sft.parse_preferences(raw, "prefs.jsonl")
    assert triples[0] == ("2+2?", "4", "5")
    assert triples[1] == ("\n\nHuman: hi\n\nAssistant:", " hello!", " go away")
    assert triples[2] == ([{"role": "user", "content": "hi"}], "hello", "no")
    assert counts["unusable"] == 1 and counts["not_json"] == 1 and counts["pairs"] == 3


def test_sft_from_a_trained_work_directory(trained, tmp_path):
    """`--config WORKDIR/config.json` + train.objective=sft from its checkpoint: the rows use its tokenizer, the
    held-out loss on the completions falls."""
    from llm_jax.train.loop import train
    _, base = trained
    overrides = sft_overrides(base, comparison_sft_file(tmp_path / "sft.jsonl"), **{"train.steps": 60,
                                                                                   "train.lr": 3e-3})
    cfg = config_lib.load_config(f"{base}/config.json", overrides)
    lines = []
    summary = train(cfg, str(tmp_path / "sft"), log=lines.append)
    first = json.loads(open(tmp_path / "sft" / "metrics.jsonl").readline())
    assert any(line.startswith("data: ") and "prompt_completion" in line and "packed" in line for line in lines)
    assert summary["eval_loss"] < min(0.5 * first["eval_loss"], summary["unigram_entropy"]), (first, summary)
    assert summary["eval_token_accuracy"] > 0.6
    assert (tmp_path / "sft" / "chat_template.jinja").is_file() is False  # plain template: nothing to keep
