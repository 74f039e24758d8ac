"""`llm-jax eval instruct`: held-out exact match of an instruction-tuned model's replies.

Items are fine-tuning records (`llm_jax/data/sft.py`'s layouts): the prompt is the conversation before its last
assistant turn, rendered with the work directory's chat template and its generation prompt (the built-in plain
template when it has none: what `train.objective=sft` trained with), and the reference is that last turn (for
prompt/completion records: the prompt as is, and the completion). Greedy decoding until EOS (or
--max-new-tokens); a reply counts when it equals the reference after stripping surrounding whitespace. Reported
overall and per record `kind` (the synthetic tasks of `llm-jax data make-sft`), each with its standard error.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from llm_jax import argtypes
from llm_jax.errors import UserError
from llm_jax.fileio import read_bytes

# data.sft and data.chat (tokenizer libraries, ~30 ms) are imported where used: `llm-jax`'s parser imports this
# module for every command, and every command must start fast.


def read_items(path: str) -> list[dict]:
    """[{"prompt_messages" or "prompt", "answer", "kind"}] of a JSON-lines file of fine-tuning records."""
    from llm_jax.data import sft
    records, _ = sft.read_records(read_bytes(path, "instruction test file"), path, "--data")
    items = []
    for n, record in enumerate(records, start=1):
        layout = sft.record_layout(record)
        kind = str(record.get("kind", "all"))
        if layout == "prompt_completion":
            items.append({"prompt": record["prompt"], "answer": record["completion"], "kind": kind})
            continue
        messages = sft.to_messages(record, layout) if layout else None
        if not messages or messages[-1]["role"] != "assistant":
            raise UserError(f"{path}: record {n} is not a conversation ending with the assistant's reply (or a "
                            f"prompt/completion pair)")
        items.append({"prompt_messages": messages[:-1], "answer": messages[-1]["content"], "kind": kind})
    return items


def prompts(items: list[dict], template: str | None, tokenizer) -> list[str]:
    from llm_jax.data import chat, sft
    bos, eos = sft.special_text(tokenizer, "bos"), sft.special_text(tokenizer, "eos")
    return [item["prompt"] if "prompt" in item else chat.render(template, item["prompt_messages"], bos, eos)
            for item in items]


def _rate(hits: list[float]) -> dict:
    n = len(hits)
    mean = float(np.mean(hits)) if n else 0.0
    return {"exact_match": mean, "exact_match_stderr": float(np.sqrt(mean * (1 - mean) / max(n - 1, 1))), "n": n}


def score_instructions(model, items: list[dict], template: str | None, max_new_tokens: int = 32) -> dict:
    """{"exact_match", "exact_match_stderr", "n", "by_kind": {kind: ...}, "completions": [...]}."""
    replies = model.generate_until(prompts(items, template, model.tokenizer), max_new_tokens=max_new_tokens,
                                   progress="instruct")
    rows = [{"kind": item["kind"], "answer": item["answer"], "reply": reply,
             "correct": reply.strip() == item["answer"].strip()} for item, reply in zip(items, replies)]
    kinds = sorted({r["kind"] for r in rows})
    return _rate([float(r["correct"]) for r in rows]) | {
        "by_kind": {k: _rate([float(r["correct"]) for r in rows if r["kind"] == k]) for k in kinds},
        "completions": rows}


def cmd_instruct(args, extra) -> int:
    from llm_jax.data import chat
    from llm_jax.eval.lm import EvalModel
    items = read_items(args.data)[: args.limit]
    model = EvalModel.from_workdir(args.workdir, batch_size=args.batch_size)
    result = score_instructions(model, items, chat.load_chat_template(args.workdir), args.max_new_tokens)
    if args.samples_out:
        with open(args.samples_out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in result["completions"])
    out = {k: v for k, v in result.items() if k != "completions"} | {"step": model.loaded.step}
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        kinds = " | ".join(f"{k} {v['exact_match']:.3f}" for k, v in out["by_kind"].items())
        print(f"exact match {out['exact_match']:.4f} ± {out['exact_match_stderr']:.4f} (n {out['n']})"
              + (f" | {kinds}" if len(out["by_kind"]) > 1 else ""), file=sys.stdout)
    return 0


def add_parser(eval_sub) -> None:
    p = eval_sub.add_parser("instruct", help="held-out exact match of instruction replies (fine-tuning records)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", required=True, help="JSONL of chat / prompt-completion records (e.g. make-sft's "
                                                 "test.jsonl); the last assistant turn is the reference")
    p.add_argument("--limit", type=argtypes.positive_int, help="score only the first N records")
    p.add_argument("--max-new-tokens", type=argtypes.positive_int, default=32)
    p.add_argument("--batch-size", type=argtypes.positive_int, default=16, help="sequences decoded together")
    p.add_argument("--samples-out", help="write each reply here (JSONL)")
    p.add_argument("--json", action="store_true", help="the last line is one JSON object of the metrics")
    p.set_defaults(func=cmd_instruct, overrides=False, parser=p)
