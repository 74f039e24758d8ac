"""`llm-jax SUBCOMMAND`: train, generate, eval, estimate, compile, convert, bench, data, tokenizer, scaling, sweep,
quantize, prune, rag, tools, serve.

Config overrides follow the config file: `llm-jax train --config configs/tiny.py --config.model.n_layers=2`.
Every command with `--json` prints one JSON object as its last line of output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings

from llm_jax import allocator, argtypes, fileio
from llm_jax.errors import EXIT_BUG, EXIT_USAGE, LlmJaxError, Preempted, UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line (`error: llm-jax generate: ...`) with exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def split_overrides(extra: list[str]) -> dict[str, str]:
    """['--config.a.b=1', '--config.c', '2'] -> {'a.b': '1', 'c': '2'}; anything else is an error."""
    from llm_jax.config import ConfigError
    out, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            raise ConfigError(f"unrecognised argument {arg!r} (config overrides look like --config.model.n_layers=4)")
        key, eq, value = arg[len("--config."):].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                raise ConfigError(f"{arg} needs a value (--config.{key}=VALUE)")
            value, i = extra[i + 1], i + 1
        out[key] = value
        i += 1
    return out


def _load_cfg(args, extra):
    import jax

    from llm_jax.config import load_config
    return load_config(args.config, split_overrides(extra), n_devices=jax.device_count())


def _print_json(obj) -> None:
    print(json.dumps(obj, sort_keys=True))


def cmd_train(args, extra) -> int:
    from llm_jax.parallel import agent, distributed
    if agent.should_supervise():  # multi-process: this process watches a worker running the same command
        return agent.supervise(args.argv)
    distributed.initialize()
    cfg = _load_cfg(args, extra)
    workdir = args.workdir or os.path.join("runs", cfg.name)
    from llm_jax.eval.in_training import task_runner
    from llm_jax.eval.perplexity import workdir_scorer
    from llm_jax.train.loop import train
    summary = train(cfg, workdir, restart=args.restart, workdir_scorer=workdir_scorer, task_runner=task_runner)
    if args.json:
        _print_json(summary)
    return 0


def cmd_estimate(args, extra) -> int:
    import jax

    from llm_jax.config import load_config
    from llm_jax.models.accounting import summary
    if not (args.devices or args.topology):
        cfg = _load_cfg(args, extra)
        out = {"config": cfg.name, **summary(cfg.model), "tokens_per_step": cfg.train.batch_size * cfg.model.seq_len}
        out["training_flops"] = out["flops_per_token"] * out["tokens_per_step"] * cfg.train.steps
    else:
        from llm_jax.hardware import table_peak
        from llm_jax.scaling.memory import estimate, parse_topology
        target = parse_topology(args.topology) if args.topology else {}
        devices = target.get("chips") or args.devices
        cfg = load_config(args.config, split_overrides(extra), n_devices=devices)
        peak = target.get("peak_flops") or table_peak(args.device_kind or jax.devices()[0].device_kind)
        hbm = target.get("hbm_bytes") or (args.device_memory_gib * 2**30 if args.device_memory_gib else None)
        out = {"config": cfg.name, **target, **estimate(cfg, devices, peak, hbm, args.mfu,
                                                           platform="tpu" if args.topology else jax.default_backend())}
        if args.price_per_device_hour is not None and "device_hours" in out:
            from llm_jax.models.accounting import training_cost
            out["cost"] = training_cost(out["device_hours"], args.price_per_device_hour)
    from llm_jax.hardware import table_bandwidth, table_peak
    from llm_jax.infer.cost import inference_estimate
    kind = out.get("device_kind") or args.device_kind
    out["inference"] = inference_estimate(
        cfg.model, args.infer_batch, args.infer_context or cfg.model.seq_len, kind and table_peak(kind),
        kind and table_bandwidth(kind), args.price_per_device_hour, args.infer_weights, args.infer_cache)
    if args.json:
        _print_json(out)
    else:
        _print_estimate(out)
    return 0


def _print_estimate(out: dict) -> None:
    gib = lambda b: f"{b / 2**30:,.2f} GiB"
    for key, value in out.items():
        if key == "per_device_bytes":
            for part, size in value.items():
                print(f"{'per device ' + part:>28}: {gib(size)}")
        elif key == "inference":
            print(f"{'inference':>28}: batch {value['batch']}, context {value['context']:,}")
            for part in ("weights_bytes", "kv_cache_bytes"):
                sizes = ", ".join(f"{name} {gib(size)}" for name, size in value[part].items())
                print(f"{part.replace('_bytes', '').replace('_', ' '):>28}: {sizes}")
            for k in ("decode_step_s", "decode_bound", "decode_tokens_per_sec", "prefill_s_per_sequence",
                      "cost_per_million_output_tokens"):
                if k in value:
                    shown = f"{value[k]:,.4g}" if isinstance(value[k], float) else value[k]
                    print(f"{k:>28}: {shown}")
        elif isinstance(value, float):
            print(f"{key:>28}: {value:,.4g}")
        elif isinstance(value, int) and not isinstance(value, bool):
            print(f"{key:>28}: {value:,}")
        else:
            print(f"{key:>28}: {value}")


def cmd_compile(args, extra) -> int:
    from llm_jax.scaling import aot
    cfg, hlo_text, out = aot.compile_for(args.config, split_overrides(extra), args.topology, args.num_slices,
                                          args.unroll)
    target = f"{args.topology}{f'x{args.num_slices}' if args.num_slices > 1 else ''}" if args.topology else "local"
    directory = args.out or os.path.join("runs", "compile", f"{cfg.name}-{target}")
    os.makedirs(directory, exist_ok=True)
    if hlo_text is not None:
        fileio.atomic_write(os.path.join(directory, "hlo.txt"), hlo_text)
    fileio.atomic_write_json(os.path.join(directory, "summary.json"), out, indent=2, sort_keys=True)
    gib = lambda b: f"{b / 2**30:,.3f} GiB"  # noqa: E731
    if args.json:
        _print_json(out)
    elif hlo_text is not None:
        print(f"{cfg.name} on {target} ({out['devices']} chips, {out['device_kind']}), mesh "
              f"{ {k: v for k, v in out['mesh'].items() if v > 1} }")
        for key in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "generated_code_bytes",
                    "bytes_per_chip"):
            print(f"{key:>22}: {gib(out[key])}")
        if out["hbm_bytes"]:
            print(f"{'chip HBM':>22}: {gib(out['hbm_bytes'])} -> {'fits' if out['fits'] else 'DOES NOT FIT'} "
                  f"({gib(out['headroom_bytes'])} headroom)")
        scope = " (the layer loop's body counted once; --unroll for all)" if out["layers_scanned"] else ""
        print(f"{'compiled FLOPs':>22}: {out['compiled_flops']:,.4g}{scope} | analytic {out['analytic_flops']:,.4g}")
        for op, c in out["collectives"].items():
            print(f"{op:>22}: {c['per_step_count']:,} per step ({c['count']} in the HLO), "
                  f"{gib(c['per_step_bytes'])} per step")
        print(f"HLO and summary in {directory}")
    if out.get("fits") is False:
        print(f"error: {aot.advice(cfg, out)}", file=sys.stderr)
        return 1
    return 0


def _convert(args) -> tuple[dict, str]:
    """(the report, its one-line summary) of `llm-jax convert DIRECTION`."""
    if args.direction == "truncate":
        if args.layers is None:
            args.parser.error("convert truncate needs --layers (how many of the model's first layers the draft keeps)")
        from llm_jax.infer.draft import truncate_workdir
        info = truncate_workdir(args.workdir, args.layers, args.out)
        return info, (f"kept the first {info['layers']} of {info['of_layers']} layers ({info['params']:,} of "
                      f"{info['source_params']:,} parameters) -> {info['out']}")
    if args.direction == "to-peft":
        from llm_jax.interop.peft import to_peft
        info = to_peft(args.workdir, args.out, base=args.hf_dir or "")
        return info, (f"wrote the rank-{info['rank']} LoRA adapters of step {info['step']} "
                      f"({', '.join(info['targets'])}) in the PEFT format -> {info['out']}")
    if args.direction == "from-peft":
        from llm_jax.interop.peft import from_peft
        info = from_peft(args.workdir, args.peft_dir, args.out)
        return info, (f"read the rank-{info['rank']} PEFT LoRA adapters of {args.peft_dir} -> {info['out']} "
                      f"(generate/serve --workdir {args.workdir} --adapter {info['out']})")
    from llm_jax.interop import hf
    if args.direction == "from-hf":
        info = hf.from_hf(args.hf_dir, args.out)
    elif args.direction == "from-gguf":
        from llm_jax.interop.gguf import from_gguf
        info = from_gguf(args.gguf, args.out)
    else:
        info = hf.to_hf(args.workdir, args.out)
    return info, f"converted {info['family']} ({info['params']:,} parameters) -> {info['out']}"


def cmd_convert(args, extra) -> int:
    needed = {"from-hf": ["--hf-dir"], "from-gguf": ["--gguf"], "to-hf": ["--workdir"], "to-peft": ["--workdir"],
              "from-peft": ["--workdir", "--peft-dir"], "truncate": ["--workdir"]}[args.direction]
    for flag in needed:
        if getattr(args, flag[2:].replace("-", "_")) is None:
            args.parser.error(f"convert {args.direction} needs {' and '.join(needed)}")
    info, line = _convert(args)
    if args.json:
        _print_json(info)
    else:
        print(line)
    return 0


def cmd_export(args, extra) -> int:
    from llm_jax.infer.export import export_params
    if args.merge_lora and args.adapters_only:
        args.parser.error("--merge-lora and --adapters-only exclude each other")
    info = export_params(args.workdir, args.out, args.step, merge_lora=args.merge_lora,
                         adapters_only=args.adapters_only)
    if args.json:
        _print_json(info)
    else:
        print(f"exported the parameters of step {info['step']} ({info['bytes'] / 2**20:.1f} MiB) -> {info['out']}")
    return 0


def cmd_bench(args, extra) -> int:
    args.config = args.config or ("configs/gpt2_small.py" if args.what == "checkpoint" else "configs/bench_cpu.py")
    if args.what == "checkpoint":
        import jax
        if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
            jax.config.update("jax_num_cpu_devices", args.devices)  # only affects CPU, before JAX starts
        from llm_jax.train.bench_checkpoint import bench_checkpoint
        result = bench_checkpoint(_load_cfg(args, extra))
    elif args.what == "attention":
        from llm_jax.train.bench_attention import IMPLS, MASKS, bench_attention
        impls, masks = args.impls.split(","), args.masks.split(",")
        for name, given, known in (("--impls", impls, IMPLS), ("--masks", masks, MASKS)):
            if set(given) - set(known):
                args.parser.error(f"{name}: unknown {', '.join(sorted(set(given) - set(known)))} "
                                  f"(choose from {', '.join(known)})")
        result = bench_attention(args.seq_lens, impls, masks, args.dtype,
                                 log=(lambda _: None) if args.json else print)
    elif args.what == "generate":
        if not args.workdir:
            args.parser.error("bench generate needs --workdir (a trained or converted model)")
        from llm_jax.infer.bench import bench_generate
        from llm_jax.infer.load import load_workdir
        result = bench_generate(load_workdir(args.workdir), args.batch, args.prompt_len, args.new_tokens)
        if not args.json:
            print(f"batch {result['batch']}, prompt {result['prompt_len']}, {result['new_tokens']} new tokens: "
                  f"TTFT {result['ttft_s'] * 1e3:.1f} ms | TPOT {result['tpot_s'] * 1e3:.2f} ms cached, "
                  f"{result['uncached_tpot_s'] * 1e3:.2f} ms uncached ({result['cached_speedup']:.1f}x) | "
                  f"{result['decode_tokens_per_sec']:,.0f} tokens/s | decode reads "
                  f"{result['decode_bytes_per_sec'] / 1e9:.1f} GB/s of a {result['bandwidth_ceiling_bytes_per_sec'] / 1e9:.1f} "
                  f"GB/s ceiling")
    elif args.what == "batching":
        if not args.workdir:
            args.parser.error("bench batching needs --workdir (a trained or converted model)")
        for flag, pair in (("--prompt-range", args.prompt_range), ("--output-range", args.output_range)):
            if len(pair) != 2:
                args.parser.error(f"{flag} takes LOW,HIGH")
        from llm_jax.infer.bench_batching import bench_batching
        from llm_jax.infer.load import load_workdir
        result = bench_batching(load_workdir(args.workdir), args.requests, tuple(args.prompt_range),
                                tuple(args.output_range), args.batch, log=(lambda _: None) if args.json else print)
        if not args.json:
            s, c = result["static"], result["continuous"]
            print(f"{args.requests} requests, {result['new_tokens']} new tokens, {args.batch} rows: static "
                  f"{s['tokens_per_sec']:.1f} tokens/s, mean TTFT {s['mean_ttft_s']:.2f} s | continuous "
                  f"{c['tokens_per_sec']:.1f} tokens/s, mean TTFT {c['mean_ttft_s']:.2f} s | throughput "
                  f"{result['throughput_ratio']:.2f}x, TTFT {result['mean_ttft_ratio']:.2f}x")
    elif args.what == "speculative":
        if not args.workdir or not args.draft_workdir:
            args.parser.error("bench speculative needs --workdir (the target) and --draft-workdir (the draft)")
        from llm_jax.infer.bench import SPECULATIVE_PROMPT, bench_speculative
        from llm_jax.infer.load import load_workdir
        from llm_jax.infer.speculative import check_draft
        target, draft = load_workdir(args.workdir), load_workdir(args.draft_workdir)
        check_draft(target.cfg.model, draft.cfg.model, args.workdir, args.draft_workdir)
        result = bench_speculative(target, draft, args.new_tokens, args.draft_tokens, args.prompt or SPECULATIVE_PROMPT)
        if not args.json:
            print(f"{result['new_tokens']} greedy tokens, draft {result['draft_layers']} layers, k = "
                  f"{result['draft_tokens']}: acceptance {result['acceptance_rate']:.2f} "
                  f"({result['tokens_per_target_forward']:.2f} tokens per target forward) | target alone "
                  f"{result['target_tokens_per_sec']:.1f} tokens/s, draft alone {result['draft_tokens_per_sec']:.1f}, "
                  f"speculative {result['speculative_tokens_per_sec']:.1f} | speed-up {result['speedup']:.2f}x | "
                  f"identical: {result['identical']}")
    else:
        from llm_jax.train.bench import bench_train
        result = bench_train(_load_cfg(args, extra), steps=args.steps)
    if args.json:
        _print_json(result)
    return 0


def cmd_distill(args, extra) -> int:
    from llm_jax.train.teacher import dump
    cfg = _load_cfg(args, extra)
    if cfg.train.objective != "distill":
        args.parser.error("distill dump needs a distillation config: --config.train.objective=distill and "
                          "--config.train.teacher=TEACHER_WORKDIR")
    info = dump(cfg, args.out, log=(lambda _: None) if args.json else print)
    if args.json:
        _print_json(info)
    else:
        print(f"teacher top-{info['top_k']} of {info['train_steps']} steps and {info['val_batches']} evaluation "
              f"batches ({info['bytes'] / 2**20:.1f} MiB) -> {info['out']}; train with "
              f"--config.train.teacher={info['out']}")
    return 0


def cmd_rlhf(args, extra) -> int:
    from llm_jax.train.rlhf import rlhf
    cfg = _load_cfg(args, extra)
    history = rlhf(cfg, args.workdir, args.rounds, prompts=args.prompts, group=args.group,
                   reward_steps=args.reward_steps, log=(lambda _: None) if args.json else print)
    for h in history:
        if not args.json:
            print(f"round {h['round']}: PPO held-out reward {h.get('ppo_eval_reward', float('nan')):.4f}, KL "
                  f"{h.get('ppo_eval_kl', float('nan')):.4f} | {h['pairs']} new pairs | reward model "
                  f"{h['reward_model']}")
    if args.json:
        _print_json({"rounds": history})
    return 0


def cmd_tokenizer(args, extra) -> int:
    from llm_jax.data.corpus import load_documents, split_documents
    from llm_jax.data.tokenizers import train_tokenizer
    from llm_jax.data.tokenizers.report import compression_report, format_table
    if args.action == "train":
        if not args.out:
            args.parser.error("tokenizer train needs --out")
        train_docs, _ = split_documents(load_documents(args.corpus), args.val_fraction)
        tok = train_tokenizer(args.kind, train_docs, args.vocab_size, args.out, log=print)
        info = {"kind": tok.kind, "vocab_size": tok.vocab_size, "out": args.out, "special": tok.special}
        print(json.dumps(info, sort_keys=True) if args.json else f"trained {args.kind} ({tok.vocab_size} tokens) -> {args.out}")
        return 0
    kinds = args.kinds.split(",") if args.kinds else None
    report = compression_report(args.corpus, args.vocab_size, **({"kinds": kinds} if kinds else {}),
                                tokenizers=args.tokenizer or (), val_fraction=args.val_fraction,
                                log=(lambda _: None) if args.json else print)
    print(json.dumps(report, sort_keys=True) if args.json else format_table(report))
    return 0


def cmd_data(args, extra) -> int:
    if args.action == "make-scenes":
        if not args.output:
            args.parser.error("data make-scenes needs --output DIR")
        from llm_jax.data.scenes import write_scenes
        info = write_scenes(args.output, n=args.n or 20, seed=args.seed, size=args.size)
        print(json.dumps(info, sort_keys=True) if args.json else f"{info['scenes']} held-out scenes ({args.size}x"
              f"{args.size} PNG) and {info['questions']} questions: {info['path']}")
        return 0
    if args.action == "make-sft":
        if not args.output:
            args.parser.error("data make-sft needs --output DIR")
        from llm_jax.data.instruct import write_sft_tasks
        info = write_sft_tasks(args.output, n_train=args.n or 3000, seed=args.seed)
        if args.json:
            _print_json(info)
        else:
            print(f"{info['train']:,} training / {info['test']:,} held-out records ({', '.join(info['kinds'])}) and "
                  f"their preference pairs: {', '.join(info['paths'].values())}")
        return 0
    cfg = _load_cfg(args, extra)
    if args.action == "bench" and args.scale:
        from llm_jax.data.beam.bench import bench_scale, format_report
        result = bench_scale(cfg, args.scale, args.bench_dir, workers=(args.workers,) if args.workers else (1, 2),
                             log=(lambda _: None) if args.json else print)
        if args.json:
            _print_json(result)
        else:
            print(format_report(result))
        return 0
    if args.action == "bench":
        from llm_jax.train.bench_data import bench_data
        result = bench_data(cfg, log=(lambda _: None) if args.json else print)
        if args.json:
            _print_json(result)
        return 0
    if not args.input or (not args.output and not args.dry_run):
        args.parser.error("data prepare needs --input PATH [PATH ...] and --output DIR")
    log = (lambda _: None) if args.json else print
    tokenizer = args.tokenizer or cfg.data.tokenizer
    if args.engine == "beam":
        from llm_jax.data.beam.pipeline import BeamSettings, plan, prepare as beam_prepare
        settings = BeamSettings(runner=args.runner, workers=args.workers or os.cpu_count() or 1,
                                options=tuple(args.beam_option or ()), unit_mb=args.unit_mb)
        if args.dry_run:
            _print_json(plan(args.input, cfg.data, settings))
            return 0
        manifest = beam_prepare(args.input, args.output, cfg.data, cfg.model.vocab_size, settings, cfg.model.seq_len,
                                tokenizer=tokenizer, log=log)
        counts = dict(manifest["counts"], seconds=sum(manifest["seconds"].values()))
    else:
        if args.dry_run:
            args.parser.error("--dry-run prints the plan of the Beam pipeline: add --engine beam")
        from llm_jax.data.prepare import prepare
        from llm_jax.eval.perplexity import workdir_scorer
        manifest = prepare(args.input, args.output, cfg.data, cfg.model.vocab_size, cfg.model.seq_len,
                           workdir_scorer=workdir_scorer, tokenizer=tokenizer, log=log)
        counts = dict(manifest["counts"])
        counts["tokens_per_sec_per_core"] = counts["tokens_out"] / manifest["seconds"]["tokenize_and_pack"] / (
            os.cpu_count() or 1)
    if args.json:
        _print_json(counts)
    else:
        rows = [(key, counts[key]) for key in ("documents_in", "exact_duplicates_removed", "near_duplicates_removed",
                                               "filtered", "documents_out", "tokens_out")]
        rows += [(f"input.{key}", value) for key, value in sorted(counts["input"].items())]
        width = max(len(key) for key, _ in rows)
        for key, value in rows:
            print(f"{key:>{width}}: {value:,}")
    return 0


def _command(sub, name: str, func, overrides: bool = False, **kwargs) -> ArgumentParser:
    """A subcommand parser; `overrides` says whether it takes `--config.KEY=VALUE` arguments after its flags."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(func=func, overrides=overrides, parser=parser)
    return parser


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="llm-jax", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = _command(sub, "train", cmd_train, overrides=True,
                 help="train (or resume) a model; no --config trains the embedded default")
    t.add_argument("--config", help="configs/NAME.py (default: the tiny Shakespeare run)")
    t.add_argument("--workdir", help="output directory (default: runs/<config name>)")
    t.add_argument("--restart", action="store_true", help="move a previous run in --workdir to previous/<time>/ "
                                                          "and start from step 0 instead of resuming")
    t.add_argument("--json", action="store_true")

    from llm_jax.infer import command as infer_command
    infer_command.add_generate_parser(sub)

    from llm_jax.eval import command as eval_command
    eval_command.add_eval_parser(sub, _command)

    s = _command(sub, "estimate", cmd_estimate, overrides=True,
                 help="parameters, FLOPs, per-device memory and step time of a config")
    s.add_argument("--config")
    s.add_argument("--devices", type=argtypes.positive_int, help="size the run for this many devices")
    s.add_argument("--topology", help="or a named slice/cluster: v4-128, v5p-256, v5e-64, v6e-256, h100-16, ...")
    s.add_argument("--device-kind", help="with --devices: the chip, for its peak FLOP/s (default: this machine's)")
    s.add_argument("--device-memory-gib", type=argtypes.positive_number,
                   help="with --devices: memory per device, to check the fit")
    s.add_argument("--mfu", type=argtypes.probability, default=0.4,
                   help="assumed model FLOPs utilisation for the step time, in (0, 1]")
    s.add_argument("--price-per-device-hour", type=argtypes.nonneg_number,
                   help="the training run's cost (with --devices/--topology) and inference cost per 1M tokens")
    s.add_argument("--infer-batch", type=argtypes.positive_int, default=1, help="inference: sequences decoded together")
    s.add_argument("--infer-context", type=argtypes.positive_int, help="inference: tokens per sequence (default "
                                                                       "model.seq_len)")
    s.add_argument("--infer-weights", choices=["float32", "bfloat16", "int8", "int4"], default="bfloat16",
                   help="inference: weight precision for the decode time and cost")
    s.add_argument("--infer-cache", choices=["float32", "bfloat16", "int8"], default="bfloat16",
                   help="inference: KV cache precision for the decode time and cost")
    s.add_argument("--json", action="store_true")

    k = _command(sub, "compile", cmd_compile, overrides=True,
                 help="compile the real train step ahead of time (a TPU slice without a TPU): memory, FLOPs, "
                      "collectives")
    k.add_argument("--config", required=True)
    k.add_argument("--topology", help="a TPU target: v4-N, v5p-N (N TensorCores), v5e-N, v6e-N (N chips); "
                                      "default: this machine's devices")
    k.add_argument("--num-slices", type=argtypes.positive_int, default=1,
                   help="with --topology: that many slices (the config's mesh.dcn_* must multiply to it)")
    k.add_argument("--unroll", action="store_true",
                   help="compile the layer loop unrolled, so the compiled FLOPs cover every layer (slower)")
    k.add_argument("--out", help="where hlo.txt and summary.json go (default: runs/compile/<config>-<target>)")
    k.add_argument("--json", action="store_true")

    c = _command(sub, "convert", cmd_convert, help="Hugging Face GPT-2 / Llama checkpoints <-> work directories; "
                                                   "to-peft / from-peft: LoRA adapters to / from the PEFT format; "
                                                   "truncate: a draft model of a work directory's first layers")
    c.add_argument("direction", choices=["from-hf", "from-gguf", "to-hf", "to-peft", "from-peft", "truncate"])
    c.add_argument("--hf-dir", help="from-hf: a directory with config.json, *.safetensors, tokenizer.json; "
                                    "to-peft: the base model's name or path recorded in adapter_config.json")
    c.add_argument("--gguf", help="from-gguf: a Llama-family .gguf file (any quantization gguf can dequantize)")
    c.add_argument("--workdir", help="to-hf: the work directory to export (a LoRA run: adapters merged); to-peft: "
                                     "a LoRA run (model.peft=lora); from-peft: the base model the adapters are for; "
                                     "truncate: the model to cut")
    c.add_argument("--peft-dir", help="from-peft: a PEFT LoRA directory (adapter_config.json + "
                                      "adapter_model.safetensors)")
    c.add_argument("--layers", type=argtypes.positive_int, help="truncate: the first layers the draft keeps")
    c.add_argument("--out", required=True, help="from-hf/from-gguf/truncate: the new work directory; to-hf: the "
                                                "new HF directory; from-peft: the new adapters-only directory")
    c.add_argument("--json", action="store_true")

    x = _command(sub, "export", cmd_export, help="a parameters-only copy of a run (inference, fine-tuning elsewhere)")
    x.add_argument("--workdir", required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--step", type=argtypes.nonneg_int, help="default: the latest intact checkpoint")
    x.add_argument("--merge-lora", action="store_true",
                   help="fold a LoRA run's adapters into its weights: a plain model (model.peft=none)")
    x.add_argument("--adapters-only", action="store_true",
                   help="only a PEFT run's added parameters (LoRA, prefixes, adapters): `generate/serve --adapter`")
    x.add_argument("--json", action="store_true")

    dp = _command(sub, "data", cmd_data, overrides=True, help="prepare corpora into shards; benchmark the data path; "
                                                              "make-sft: synthetic instruction tasks; "
                                                              "make-scenes: synthetic images with questions")
    dp.add_argument("action", choices=["prepare", "bench", "make-sft", "make-scenes"])
    dp.add_argument("--input", nargs="+", help="files, directories, tfds:NAME[:SPLIT], or 'shakespeare'")
    dp.add_argument("--output", help="the new prepared-data directory")
    dp.add_argument("--tokenizer", help="an existing tokenizer (default: train data.tokenizer_kind)")
    dp.add_argument("--config", help="a config file whose data.* and model.vocab_size/seq_len apply")
    dp.add_argument("--engine", choices=["memory", "beam"], default="memory",
                    help="prepare: one process holding the corpus (memory), or the Apache Beam pipelines (beam: "
                         "bounded memory, resumable, any runner; docs/data.md)")
    dp.add_argument("--runner", default="DirectRunner", help="--engine beam: DirectRunner, DataflowRunner, FlinkRunner...")
    dp.add_argument("--workers", type=argtypes.nonneg_int, default=0,
                    help="--engine beam: DirectRunner worker processes (0 = one per CPU); bench --scale: run only "
                         "this worker count (default 1 then 2)")
    dp.add_argument("--beam-option", action="append", metavar="--OPT=VALUE",
                    help="--engine beam: a further pipeline option (repeatable), e.g. --beam-option=--project=P")
    dp.add_argument("--unit-mb", type=argtypes.positive_number, default=64, help="--engine beam: input MB per work unit")
    dp.add_argument("--dry-run", action="store_true", help="--engine beam: print the plan (units, partitions, "
                                                           "pipeline options) and exit")
    dp.add_argument("--scale", type=argtypes.positive_number, metavar="GB",
                    help="bench: build a synthetic corpus of GB gigabytes and prepare it with --engine beam on 1 and 2 "
                         "workers (tokens/s and peak memory per worker, speed-up)")
    dp.add_argument("--bench-dir", default="runs/data_bench", help="bench --scale: where the corpus and outputs go")
    dp.add_argument("--n", type=argtypes.positive_int,
                    help="make-sft: training records per kind (default 3000); make-scenes: held-out scenes (20)")
    dp.add_argument("--seed", type=argtypes.nonneg_int, default=0,
                    help="make-sft, make-scenes: the draw (make-scenes: a vlm run's train.seed gives its held-out scenes)")
    dp.add_argument("--size", type=argtypes.positive_int, default=32, help="make-scenes: pixels a side "
                                                                           "(model.image_size)")
    dp.add_argument("--json", action="store_true")

    dd = _command(sub, "distill", cmd_distill, overrides=True,
                  help="dump: the teacher's top-k distributions of a distillation run's batches (offline distillation)")
    dd.add_argument("action", choices=["dump"])
    dd.add_argument("--config", help="the student's config (train.objective=distill, train.teacher=its teacher)")
    dd.add_argument("--out", required=True, help="the new dump directory (then --config.train.teacher=it)")
    dd.add_argument("--json", action="store_true")

    rl = _command(sub, "rlhf", cmd_rlhf, overrides=True,
                  help="RLHF rounds: PPO -> sample pairs -> label by rule -> train the reward model further -> again")
    rl.add_argument("--config", required=True, help="a PPO config with train.reward_model (configs/ppo_tiny.py)")
    rl.add_argument("--workdir", required=True, help="round<N>/{policy,prefs.jsonl,reward} go here")
    rl.add_argument("--rounds", type=argtypes.positive_int, default=2)
    rl.add_argument("--prompts", type=argtypes.positive_int, default=256, help="prompts labelled per round")
    rl.add_argument("--group", type=argtypes.positive_int, default=4, help="replies sampled per labelled prompt")
    rl.add_argument("--reward-steps", type=argtypes.positive_int, default=50,
                    help="steps of reward-model training per round")
    rl.add_argument("--json", action="store_true")

    k = _command(sub, "tokenizer", cmd_tokenizer, help="train tokenizers and compare their compression")
    k.add_argument("action", choices=["train", "report"])
    k.add_argument("--corpus", default="shakespeare", help="an embedded corpus name or a text file/directory")
    k.add_argument("--vocab-size", type=argtypes.integer(2, what="an integer >= 2"), default=2048)
    k.add_argument("--kind", default="bytelevel_bpe", help="train: the kind to train")
    k.add_argument("--kinds", help="report: comma-separated kinds (default: all)")
    k.add_argument("--tokenizer", action="append", help="report: also measure this existing tokenizer")
    k.add_argument("--out", help="train: the output directory")
    k.add_argument("--val-fraction", type=argtypes.fraction_open, default=0.05,
                   help="documents held out of training, in (0, 1)")
    k.add_argument("--json", action="store_true")

    b = _command(sub, "bench", cmd_bench, overrides=True, help="benchmarks that print their figures")
    b.add_argument("what", choices=["train", "checkpoint", "attention", "generate", "speculative", "batching"])
    b.add_argument("--config", help="default: configs/bench_cpu.py (train), configs/gpt2_small.py (checkpoint)")
    b.add_argument("--devices", type=argtypes.positive_int, default=8,
                   help="checkpoint: fake CPU devices for sharded states")
    b.add_argument("--steps", type=argtypes.positive_int, default=20, help="timed steps (after warm-up)")
    b.add_argument("--seq-lens", type=argtypes.int_list, default=[1024, 4096, 16384],
                   help="attention: comma-separated sequence lengths")
    b.add_argument("--impls", default="xla,blockwise,cudnn", help="attention: implementations")
    b.add_argument("--masks", default="causal,document,window_512", help="attention: masks")
    b.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="attention: compute dtype")
    b.add_argument("--workdir", help="generate, batching: the model's work directory; speculative: the target's")
    b.add_argument("--requests", type=argtypes.positive_int, default=64, help="batching: requests in the workload")
    b.add_argument("--prompt-range", type=argtypes.int_list, default=[16, 512],
                   help="batching: LOW,HIGH prompt tokens (uniform)")
    b.add_argument("--output-range", type=argtypes.int_list, default=[8, 256],
                   help="batching: LOW,HIGH new tokens per request (uniform)")
    b.add_argument("--draft-workdir", help="speculative: the draft model's work directory")
    b.add_argument("--draft-tokens", type=argtypes.positive_int, default=4,
                   help="speculative: tokens the draft proposes per target forward")
    b.add_argument("--prompt", help="speculative: the text to continue (default: a fixed English sentence)")
    b.add_argument("--batch", type=argtypes.positive_int, default=1,
                   help="generate: prompts decoded together; batching: decode rows of both schedulers")
    b.add_argument("--prompt-len", type=argtypes.positive_int, default=128, help="generate: prompt tokens")
    b.add_argument("--new-tokens", type=argtypes.positive_int, default=128,
                   help="generate/speculative: new tokens per prompt")
    b.add_argument("--json", action="store_true")

    from llm_jax.scaling import command as scaling_command
    scaling_command.add_parser(sub)
    infer_command.add_serve_parser(sub)
    from llm_jax.sweep import command as sweep_command
    sweep_command.add_parser(sub)
    from llm_jax.quant import command as quant_command
    quant_command.add_parser(sub)
    from llm_jax.prune import command as prune_command
    prune_command.add_parser(sub)
    from llm_jax.rag import command as rag_command
    rag_command.add_parser(sub)
    from llm_jax.tools import command as tools_command
    tools_command.add_parser(sub)
    for name, parser in sub.choices.items():  # the packages' own commands take no config overrides
        parser.set_defaults(**{k: v for k, v in (("overrides", False), ("parser", parser))
                               if parser.get_default(k) is None})
    return p


def _no_tpu_runtime_without_a_tpu() -> None:
    """With libtpu installed (the `tpu` extra, for `llm-jax compile`) JAX tries to start a TPU runtime in every
    process and logs its failure on a machine without TPUs; where no accelerator device node exists at all,
    JAX_PLATFORMS=cpu (unless set) skips that. Compiling for a TPU target does not need the runtime."""
    import glob
    import importlib.util
    accelerators = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")
    if ("JAX_PLATFORMS" not in os.environ and importlib.util.find_spec("libtpu") is not None
            and not any(glob.glob(pattern) for pattern in accelerators)):
        os.environ["JAX_PLATFORMS"] = "cpu"


def _quiet_library_logs() -> None:
    """Keeps library chatter off the console, so that a failure reaches the user as the project's one-line error
    (which names the root cause) instead of pages of tracebacks: orbax logs routine checkpoint I/O as warnings
    and every failed background write as an error with a traceback; asyncio reports the failed write tasks
    again; tensorstore's callbacks raise "Event loop is closed" as unraisable exceptions at exit, and the
    abandoned write coroutines warn that they were never awaited.
    LLM_JAX_LIBRARY_LOGS=1 shows all of it."""
    import logging

    from absl import logging as absl_logging
    if os.environ.get("LLM_JAX_LIBRARY_LOGS", "") not in ("", "0"):
        absl_logging.set_verbosity(absl_logging.WARNING)
        return
    absl_logging.set_verbosity(absl_logging.FATAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)


def report(e: LlmJaxError) -> int:
    """Prints the one line a user sees for a project error; returns its exit status."""
    sys.stdout.flush()
    print(f"{'preempted' if isinstance(e, Preempted) else 'error'}: {e}", file=sys.stderr, flush=True)
    return e.exit_status


def run_command(args, extra) -> tuple[int, str]:
    """(exit status, one-line reason) of a parsed command; a bug outside a multi-process run propagates."""
    from llm_jax.parallel import distributed
    try:
        return args.func(args, extra), ""
    except KeyboardInterrupt:
        error = Preempted(None, "SIGINT")
    except OSError as e:  # the environment failed under a library (disk full, I/O error): one line, not a bug
        error = e if isinstance(e, LlmJaxError) else fileio.os_error(e, "use", e.filename or "a file")
    except LlmJaxError as e:
        error = e
    except Exception as e:  # noqa: BLE001 (a dead peer surfaces as a failed collective; the rest are bugs)
        error = distributed.peer_failure(e)
        if error is None:
            if not distributed.active():
                raise
            traceback.print_exc()  # a bug in a multi-process run: shown, then the other processes are told
            return EXIT_BUG, f"a bug: {type(e).__name__}: {str(e)[:200]}"
    return report(error), str(error)[:300]


def main(argv: list[str] | None = None) -> int:
    allocator.tune()  # before jax starts its threads (llm_jax/allocator.py)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not args.overrides:
        args.parser.error(f"unrecognised arguments: {' '.join(extra)}")
    args.argv = argv
    _no_tpu_runtime_without_a_tpu()
    _quiet_library_logs()
    from llm_jax.parallel import distributed
    status, reason = run_command(args, extra)
    return distributed.finish(status, reason)


if __name__ == "__main__":
    sys.exit(main())
