"""Benchmark task kinds: metrics against hand-computed values, the harness's tokenization and windows, the readers
of released formats, and the model's batched log-likelihoods against an unbatched forward pass."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from helpers import run_cli
from llm_jax.errors import UserError
from llm_jax.eval import answers, formats, metrics, tasks
from llm_jax.eval.lm import EvalModel, rolling_windows
from llm_jax.infer.decode import generate
from llm_jax.infer.load import load_workdir


class FakeModel:
    """Log-likelihoods from a table: {(context, continuation): logp}."""

    def __init__(self, table):
        self.table, self.asked = table, []

    def loglikelihood(self, requests):
        self.asked += list(requests)
        return [(self.table[r], False) for r in requests]


def test_acc_and_acc_norm_disagree_on_a_constructed_item():
    # choice 0 "a": logp -2 (per char -2); choice 1 "bbbbbbbbbb": logp -5 (per char -0.5); gold = 1.
    items = [{"context": "Q", "choices": ["a", "bbbbbbbbbb"], "label": 1}]
    model = FakeModel({("Q", " a"): -2.0, ("Q", " bbbbbbbbbb"): -5.0})
    out = tasks.score_choice(model, items)
    assert (out["acc"], out["acc_norm"], out["n"]) == (0.0, 1.0, 1)
    assert model.asked == [("Q", " a"), ("Q", " bbbbbbbbbb")]  # the harness's " " target delimiter


def test_stderr_is_the_sample_standard_deviation_over_root_n():
    # [1, 0, 1, 1]: mean 0.75, sample variance (3 * 0.0625 + 0.5625) / 3 = 0.25, stderr 0.5 / 2
    assert tasks.stderr_of_mean([1, 0, 1, 1]) == pytest.approx(0.25)


def test_fewshot_examples_never_include_the_scored_item_and_are_fixed():
    items = [{"context": f"c{i}", "choices": ["x", "y"], "label": i % 2} for i in range(6)]
    requests = tasks.choice_requests(items, 2)
    for i, (prompt, conts) in enumerate(requests):
        shots = prompt.split("\n\n")
        assert len(shots) == 3 and shots[-1] == f"c{i}" and f"c{i} " not in prompt
        assert all(s.endswith((" x", " y")) for s in shots[:2]) and conts == [" x", " y"]
    assert requests == tasks.choice_requests(items, 2)
    with pytest.raises(UserError, match="needs at least 7 items"):
        tasks.choice_requests(items, 6)
    dev = [{"context": f"d{i}", "choices": ["x", "y"], "label": 0} for i in range(5)]  # e.g. MMLU's dev split
    prompt, _ = tasks.choice_requests(items, 3, "About cats.\n\n", 1, dev, "first_n")[0]
    assert prompt == "About cats.\n\nd0 x\n\nd1 x\n\nd2 x\n\nc0"  # the harness's MMLU prompt shape
    with pytest.raises(UserError, match="has only 5 items"):
        tasks.choice_requests(items, 6, "", 1, dev)


def test_exact_match_normalisation_and_answer_extraction():
    assert answers.exact_match("$1,234.", "1234") and answers.exact_match("The total #### 18", "18")
    assert not answers.exact_match("18.5", "18")
    assert answers.gold("48 / 2 = 24 clips.\n#### 72") == "72"
    assert answers.extract_strict("so #### 1,000 done", "plain") == "1,000"
    assert answers.extract_strict("The answer is 42.", "cot") == "42"
    assert answers.extract_strict("no marker 42", "plain") == answers.INVALID
    assert answers.extract_flexible("The answer is 5. Then 7 apples") == "7"
    assert answers.extract_flexible("she paid $12.50 for it") == "$12.50"
    assert answers.extract_flexible("no digits") == answers.INVALID


def test_gsm8k_prompts_for_each_style():
    items = [{"question": f"q{i}", "answer": f"w{i}\n#### {i}"} for i in range(4)]
    plain, until = answers.prompts(items, 2, "plain", 1)
    assert len(plain) == 1 and plain[0].endswith("\n\nQuestion: q0\nAnswer:") and "#### 0" not in plain[0]
    assert plain[0].count("Question:") == 3 and until[0] == "Question:"
    zs, until = answers.prompts(items, 0, "zeroshot-cot")
    assert zs[0] == "Q: q0\nA: Let's think step by step." and until[0] == "Q:"
    with pytest.raises(UserError, match="zero-shot"):
        answers.prompts(items, 1, "zeroshot-cot")


def test_f1_and_matthews_against_hand_computed_values():
    # TP 6, TN 3, FP 1, FN 2: F1 = 12 / 15; MCC = (18 - 2) / sqrt(7 * 8 * 4 * 5)
    labels = [1] * 6 + [0] * 3 + [0] + [1] * 2
    preds = [1] * 6 + [0] * 3 + [1] + [0] * 2
    assert metrics.f1(labels, preds) == pytest.approx(0.8)
    assert metrics.matthews(labels, preds) == pytest.approx(16 / math.sqrt(1120))
    assert metrics.accuracy(labels, preds) == pytest.approx(9 / 12)
    assert metrics.matthews([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)
    assert metrics.matthews([1, 1, 1], [1, 1, 1]) == 0.0  # undefined: one class only


def test_rolling_windows_match_the_harness():
    # the harness's get_rolling_token_windows(ids, prefix 0, max_seq_len 2, context_len 1), made disjoint
    assert rolling_windows([1, 2, 3, 4, 5], 0, 2) == [([0], [1, 2]), ([2], [3, 4]), ([3, 4], [5])]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_readers_of_released_formats(tmp_path):
    hs = write(tmp_path / "hs.jsonl", [{"activity_label": "Cooking", "ctx_a": "He cuts onions.", "ctx_b": "then he",
                                        "endings": ["fries them [title] well.", "sleeps."], "label": "0"}])
    items, _ = formats.read(hs, "choice")
    assert items[0]["context"] == "Cooking: He cuts onions. Then he"
    assert items[0]["choices"] == ["fries them. well.", "sleeps."] and items[0]["label"] == 0
    arc = write(tmp_path / "arc.jsonl", [{"id": "x", "question": {"stem": "Sky?", "choices": [
        {"text": "blue", "label": "A"}, {"text": "red", "label": "B"}]}, "answerKey": "B"}])
    items, _ = formats.read(arc, "choice")
    assert items[0] == {"context": "Question: Sky?\nAnswer:", "choices": ["blue", "red"], "label": 1}
    piqa = write(tmp_path / "valid.jsonl", [{"goal": "open a jar", "sol1": "twist", "sol2": "lick"}])
    (tmp_path / "valid-labels.lst").write_text("0\n")
    items, _ = formats.read(piqa, "choice", "piqa")
    assert items[0]["context"] == "Question: open a jar\nAnswer:" and items[0]["label"] == 0
    mmlu = tmp_path / "anatomy_test.csv"
    mmlu.write_text('"What bone, ""the femur""?",leg,arm,head,foot,A\n"x = 1\nprint(x)",1,2,3,x,B\n')
    items, description = formats.read(str(mmlu), "choice")
    assert items[1]["context"].startswith("x = 1\nprint(x)\nA. 1") and items[1]["label"] == 1
    assert description == "The following are multiple choice questions (with answers) about anatomy.\n\n"
    assert items[0]["context"] == 'What bone, "the femur"?\nA. leg\nB. arm\nC. head\nD. foot\nAnswer:'
    assert items[0]["choices"] == ["A", "B", "C", "D"] and items[0]["label"] == 0
    sst = tmp_path / "dev.tsv"
    sst.write_text("sentence\tlabel\na fine film .\t1\n")
    items, _ = formats.read(str(sst), "choice", "sst2")
    assert items[0]["context"] == "a fine film .\nQuestion: Is this sentence positive or negative?\nAnswer:"
    assert items[0]["choices"] == ["negative", "positive"] and items[0]["label"] == 1
    rte = write(tmp_path / "rte.jsonl", [{"sentence1": "A dog ran.", "sentence2": "An animal ran.",
                                          "label": "entailment"}])
    items, _ = formats.read(rte, "choice", "rte")
    assert items[0]["label"] == 0 and items[0]["text_pair"] == "An animal ran."


def test_reader_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "choices": ["x", "y"], "label": 0}\n{"context": "b", "choices": ["x"], '
                   '"label": 0}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: .*at least 2"):
        formats.read(str(bad), "choice")
    bad.write_text('{"context": "a", "choices": ["x", "y"], "label": 2}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: label 2"):
        formats.read(str(bad), "choice")
    bad.write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: .*####"):
        formats.read(str(bad), "generate")
    bad.write_text('{"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["d", "e"], "label": 0}\n'
                   '{"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["d", "e"], "label": ""}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not a valid hellaswag row \(ValueError"):
        formats.read(str(bad), "choice", "hellaswag")
    bad.write_text('{"sentence": "fine", "label": "pos"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: not a valid sst2 row"):
        formats.read(str(bad), "choice", "sst2")
    bad.write_text('{"question": "q", "answer": "w #### 1"}\n')
    with pytest.raises(UserError, match="eval generate"):
        formats.read(str(bad), "choice")


@pytest.fixture(scope="module")
def eval_model(trained):
    return EvalModel(load_workdir(trained[1]), batch_size=4)


def unbatched_logp(model, context, continuation):
    """log P(continuation | context) from one unpadded forward pass, summed by hand."""
    whole = (context + continuation)[-(model.seq_len + 1):]
    logits = model.model.apply({"params": model.params}, np.asarray([whole[:-1]], np.int32))[0]
    logp = np.asarray(jax.nn.log_softmax(logits.astype(np.float32)))
    n = min(len(continuation), len(whole) - 1)
    return sum(logp[len(whole) - 2 - k, whole[len(whole) - 1 - k]] for k in range(n))


def test_batched_loglikelihoods_equal_unbatched_forward_passes(eval_model):
    requests = [("ROMEO:", " O"), ("ROMEO:", " A"), ("ROMEO:", " B"),  # one-token answers share a row
                ("To be, or not to be", " that is"), ("", "The"), ("KING ", "HENRY:"),
                ("a " * 40, "long one")]  # the last is longer than the 16-token context: truncated on the left
    got = eval_model.loglikelihood(requests)
    for (context, cont), (logp, _) in zip(requests, got):
        c_ids, x_ids = eval_model.encode_pair(context, cont)
        assert logp == pytest.approx(unbatched_logp(eval_model, c_ids, x_ids), abs=1e-4)
    # the harness's pair split: the context's trailing space joins the continuation
    assert eval_model.encode_pair("KING ", "HENRY:") == eval_model.encode_pair("KING", " HENRY:")
    text = "ROMEO: But soft, what light through yonder window breaks? It is the east."
    rolled = eval_model.loglikelihood_rolling([text])[0]
    ids = eval_model.tokenizer.encode(text)
    by_hand = sum(unbatched_logp(eval_model, c, x) for c, x in rolling_windows(ids, eval_model.prefix_id, 16))
    assert len(ids) > 16 and rolled == pytest.approx(by_hand, abs=1e-3)


def test_generate_until_cuts_at_stop_strings_and_equals_greedy_decoding(eval_model):
    prompts = ["ROMEO:", "JULIET: O"]
    full = eval_model.generate_until(prompts, max_new_tokens=6)
    for prompt, text in zip(prompts, full):
        ids = eval_model.tokenizer.encode(prompt)
        ref = generate(eval_model.model, eval_model.params, [ids], 6, 16).new_ids[0]
        assert text == eval_model.tokenizer.decode(ref)
    stop = full[0][2:4]
    cut = eval_model.generate_until(prompts[:1], until=[stop], max_new_tokens=6)[0]
    assert cut == full[0][:full[0].find(stop)]


def test_eval_choice_and_make_tasks_commands(trained, tmp_path):
    proc = run_cli("eval", "make-tasks", "--out", tmp_path, "--n", "20")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "shakespeare_next_line.jsonl"
    items = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(items) == 20 and all(len(x["choices"]) == 4 for x in items)
    proc = run_cli("eval", "choice", "--workdir", trained[1], "--data", path, "--num-fewshot", "1", "--limit", "8",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] == 8 and out["acc"] * 8 == round(out["acc"] * 8) and 0 <= out["acc_norm"] <= 1
    proc = run_cli("eval", "generate", "--workdir", trained[1], "--data", path, "--json")
    assert proc.returncode != 0 and "eval choice" in proc.stderr


def test_scoring_and_generation_over_a_mesh_equal_one_device(trained, tmp_path):
    """--devices: the parameters laid out over the run's mesh (data 2 x tensor 2 on 4 fake devices); every
    log-likelihood and greedy completion equals the one-device model's."""
    import shutil
    import textwrap

    from helpers import run_script
    copy = tmp_path / "run"
    shutil.copytree(trained[1], copy)
    config = json.loads((copy / "config.json").read_text())
    config["mesh"].update(data=2, tensor=2)
    (copy / "config.json").write_text(json.dumps(config))
    proc = run_script(textwrap.dedent(f"""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import jax
        from llm_jax.eval.lm import EvalModel
        requests = [("ROMEO:", " O"), ("ROMEO:", " A"), ("To be, or not", " to be"), ("", "The")]
        one = EvalModel.from_workdir({str(copy)!r}, batch_size=2)  # one device, no mesh
        four = EvalModel.from_workdir({str(copy)!r}, batch_size=2, devices=jax.devices())
        wq = [x for p, x in jax.tree_util.tree_leaves_with_path(four.params) if "query" in jax.tree_util.keystr(p)]
        a, b = one.loglikelihood(requests), four.loglikelihood(requests)
        same = all(abs(x[0] - y[0]) < 1e-4 and x[1] == y[1] for x, y in zip(a, b))
        gen = one.generate_until(["ROMEO:", "O"], max_new_tokens=6) == four.generate_until(["ROMEO:", "O"],
                                                                                          max_new_tokens=6)
        print(same, gen, len(wq[0].sharding.device_set), "tensor" in str(wq[0].sharding.spec))
    """))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == "True True 4 True", proc.stdout
