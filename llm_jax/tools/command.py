"""`llm-jax tools ...`: ask with tools (the loop), write the calculator recipe's data, score a model on it.

    llm-jax tools ask --workdir W --question "..." [--tools calculator,corpus_search --index I] [--max-calls 4]
    llm-jax tools make-data --output runs/tool_data      # arithmetic word problems: train.jsonl, test.jsonl
    llm-jax tools score --workdir W --data runs/tool_data/test.jsonl   # accuracy with and without the calculator
"""

from __future__ import annotations

import json

from llm_jax import argtypes
from llm_jax.errors import UserError

TOOL_NAMES = ("calculator", "corpus_search")


def _tools(names: str, index: str | None, embedder: str | None) -> list:
    from llm_jax.tools.builtin import CALCULATOR, corpus_search
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(TOOL_NAMES))
    if unknown:
        raise UserError(f"--tools: unknown {', '.join(unknown)}; choose from {', '.join(TOOL_NAMES)}")
    if "corpus_search" in chosen and not index:
        raise UserError("--tools corpus_search needs --index (a directory written by `llm-jax rag index`)")
    return [CALCULATOR if n == "calculator" else corpus_search(index, embedder) for n in chosen]


def _turns(workdir: str, max_tokens: int, temperature: float):
    from llm_jax.data.chat import load_chat_template
    from llm_jax.infer.load import load_workdir
    from llm_jax.tools.loop import ModelTurns
    return ModelTurns(load_workdir(workdir), load_chat_template(workdir), max_tokens=max_tokens,
                      temperature=temperature)


def cmd_tools(args, extra) -> int:
    if args.action == "make-data":
        from llm_jax.tools.arith import write_data
        info = write_data(args.output, args.train, args.test, args.seed)
        line = (f"{info['train_records']:,} training records ({info['train_problems']:,} problems, with and "
                f"without the calculator), {info['test_problems']} held-out problems -> {args.output}")
    elif args.action == "score":
        from llm_jax.tools.arith import read_test, score
        items = read_test(args.data)[:args.limit or None]
        info = score(_turns(args.workdir, args.max_tokens, 0.0), items, max_calls=args.max_calls)
        line = (f"{info['problems']} problems: accuracy {info['accuracy_with_tool']:.3f} with the calculator, "
                f"{info['accuracy_without_tool']:.3f} without; {info['calls_per_problem']:.2f} calls per problem, "
                f"{info['calls_succeeded']:.0%} ran, {info['right_call_result']:.0%} of problems got the right result "
                f"from a call\n" + "\n".join(
                    f"  {k}: {v['with_tool']:.2f} with, {v['without_tool']:.2f} without"
                    for k, v in info["by_kind"].items()))
    else:
        from llm_jax.tools.loop import run_tools, transcript
        tools = _tools(args.tools, args.index, args.embedder)
        result = run_tools(_turns(args.workdir, args.max_tokens, args.temperature),
                           [{"role": "user", "content": args.question}], tools, max_calls=args.max_calls)
        info = {"answer": result.answer, "calls": result.calls, "stop": result.stop, "messages": result.messages}
        line = transcript(result)
    print(json.dumps(info, sort_keys=True) if args.json else line)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("tools", help="tool use: ask with a calculator / corpus search, the calculator recipe")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("ask", help="the tool loop: the model calls tools until it answers")
    a.add_argument("--workdir", required=True)
    a.add_argument("--question", required=True)
    a.add_argument("--tools", default="calculator", help=f"comma-separated, of {', '.join(TOOL_NAMES)}")
    a.add_argument("--index", help="corpus_search: a directory written by `llm-jax rag index`")
    a.add_argument("--embedder", help="corpus_search: the query embedder (default: the index's)")
    a.add_argument("--temperature", type=argtypes.number(0.0), default=0.0)
    m = actions.add_parser("make-data", help="arithmetic word problems with and without calculator calls")
    m.add_argument("--output", required=True, help="the new data directory")
    m.add_argument("--train", type=argtypes.positive_int, default=4000, help="training problems")
    m.add_argument("--test", type=argtypes.positive_int, default=200, help="held-out problems")
    m.add_argument("--seed", type=int, default=0)
    s = actions.add_parser("score", help="accuracy on held-out problems with and without the calculator")
    s.add_argument("--workdir", required=True)
    s.add_argument("--data", required=True, help="test.jsonl from `tools make-data`")
    s.add_argument("--limit", type=argtypes.integer(0), default=0, help="score the first N problems (0: all)")
    for parser in (a, s):
        parser.add_argument("--max-calls", type=argtypes.integer(0), default=2, help="tool calls before the model "
                                                                                      "must answer")
        parser.add_argument("--max-tokens", type=argtypes.positive_int, default=96, help="new tokens per turn")
    for parser in (a, m, s):
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=cmd_tools, overrides=False, parser=parser)
