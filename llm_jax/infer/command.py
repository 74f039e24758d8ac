"""`llm-jax generate` (KV cache, beam search, speculative decoding, encoder-decoder) and `llm-jax serve` (the
OpenAI-compatible server, `infer/server.py`) over a work directory's model."""

from __future__ import annotations

import json
import os

from llm_jax import argtypes
from llm_jax.errors import UserError


def _print_json(obj) -> None:
    print(json.dumps(obj, sort_keys=True))


def add_generate_parser(sub) -> None:
    g = sub.add_parser("generate", help="sample a continuation of a prompt (decoder) or decode a target (encdec)")
    g.add_argument("--workdir", required=True)
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=argtypes.positive_int, default=100)
    g.add_argument("--temperature", type=argtypes.nonneg_number, default=1.0, help="0 = greedy")
    g.add_argument("--top-k", type=argtypes.nonneg_int, default=0, help="0 = no top-k filter")
    g.add_argument("--top-p", type=argtypes.probability, default=1.0, help="in (0, 1]; 1 = no nucleus filter")
    g.add_argument("--seed", type=argtypes.nonneg_int, default=0)
    g.add_argument("--adapter", help="a PEFT run's adapters (`llm-jax export --adapters-only`) on --workdir's base")
    g.add_argument("--draft-workdir", help="speculative decoding (greedy: --temperature 0) with this draft model, "
                                           "one with the same tokenizer (e.g. from convert truncate)")
    g.add_argument("--draft-tokens", type=argtypes.positive_int, default=4,
                   help="with --draft-workdir: tokens the draft proposes per target forward")
    g.add_argument("--num-beams", type=argtypes.positive_int,
                   help="beam search of this width (needs --temperature 0); --json adds every beam")
    g.add_argument("--length-penalty", type=argtypes.number(), default=1.0,
                   help="with --num-beams: beams score log P / new_tokens**A (A > 0 favours longer ones)")
    g.add_argument("--image", help="a vision-language model (model.family=vlm): the RGB image file (PNG) the "
                                   "prompt is about, model.image_size pixels a side")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_generate)


def cmd_generate(args, extra) -> int:
    from llm_jax.infer.decode import Sampling, generate
    from llm_jax.infer.load import load_workdir, read_config, with_adapter
    if not args.prompt:
        raise UserError("--prompt is empty; generation needs at least one token to continue")
    image = _image(args, read_config(args.workdir).model)  # checked before the model is loaded
    loaded = load_workdir(args.workdir)
    if args.adapter:
        loaded = with_adapter(loaded, args.adapter)
    m = loaded.cfg.model
    seq2seq = m.family == "encdec"  # the prompt is the encoder's source; the completion is the decoded target
    if m.family not in ("decoder", "encdec", "vlm"):
        raise UserError(f"generate continues text with a decoder-only model (or a vision-language one) or decodes "
                        f"a target with an encoder-decoder; {args.workdir} holds model.family={m.family!r}")
    if (seq2seq or image is not None) and (args.num_beams or args.draft_workdir):
        raise UserError("--num-beams and --draft-workdir are decoder-only (text-only); an encoder-decoder "
                        "(model.family='encdec') or a vision-language model decodes greedily (--temperature 0) "
                        "or by sampling")
    prompt_ids = loaded.tokenizer.encode(args.prompt)
    if args.num_beams:
        return _generate_beams(args, loaded, prompt_ids)
    speculative = {}
    if args.draft_workdir:
        if args.temperature != 0:
            raise UserError("--draft-workdir (speculative decoding) is greedy only: add --temperature 0")
        from llm_jax.infer.speculative import check_draft, speculative_generate
        draft = load_workdir(args.draft_workdir)
        check_draft(m, draft.cfg.model, args.workdir, args.draft_workdir)
        result = speculative_generate(loaded.model, loaded.params, draft.model, draft.params, [prompt_ids],
                                      args.max_new_tokens, m.seq_len, draft_tokens=args.draft_tokens,
                                      eos_id=loaded.tokenizer.eos_id)
        speculative = {"acceptance_rate": result.acceptance_rate, "draft_tokens": result.draft_tokens,
                       "target_forwards": result.target_forwards}
    elif seq2seq:
        from llm_jax.infer.seq2seq import generate_seq2seq
        from llm_jax.objectives.span_corruption import DECODER_START
        result = generate_seq2seq(loaded.model, loaded.params, [prompt_ids], args.max_new_tokens,
                                  decoder_start_id=DECODER_START, eos_id=loaded.tokenizer.eos_id,
                                  sampling=Sampling(args.temperature, args.top_k, args.top_p), seeds=[args.seed])
    else:
        result = generate(loaded.model, loaded.params, [prompt_ids], args.max_new_tokens, m.seq_len,
                          sampling=Sampling(args.temperature, args.top_k, args.top_p), seeds=[args.seed],
                          eos_id=loaded.tokenizer.eos_id, images=None if image is None else image[None])
    new_ids = result.new_ids[0]
    completion = loaded.tokenizer.decode(new_ids)
    if args.json:
        decode_s = result.total_s - result.ttft_s
        _print_json({"prompt": args.prompt, "completion": completion, "new_tokens": len(new_ids),
                     "step": loaded.step, "prompt_token_ids": prompt_ids, "new_token_ids": new_ids,
                     "ttft_s": result.ttft_s,
                     "tpot_s": decode_s / (len(new_ids) - 1) if len(new_ids) > 1 else None,
                     "tokens_per_sec": len(new_ids) / result.total_s if result.total_s else None, **speculative})
    else:
        print(completion if seq2seq else args.prompt + completion)
    return 0


def _image(args, model_cfg):
    """--image as (S, S, 3) float32 for a vlm (None for a text model); a missing or unusable image, one given to a
    text-only model or none given to a vlm is one UserError naming the problem."""
    if model_cfg.family != "vlm":
        if args.image:
            raise UserError(f"--image {args.image}: {args.workdir} holds a text-only model (model.family="
                            f"{model_cfg.family!r}); images need a vision-language model (model.family='vlm')")
        return None
    if not args.image:
        raise UserError(f"{args.workdir} holds a vision-language model (model.family='vlm'): give the image the "
                        f"prompt is about with --image FILE.png ({model_cfg.image_size}x{model_cfg.image_size} RGB)")
    from llm_jax.data.scenes import load_image
    return load_image(args.image, model_cfg.image_size)


def _generate_beams(args, loaded, prompt_ids) -> int:
    """`generate --num-beams N`: beam search (deterministic), all N hypotheses best first."""
    from llm_jax.infer.beam import beam_search
    if args.temperature != 0 or args.top_k or args.top_p < 1.0 or getattr(args, "draft_workdir", None):
        raise UserError("--num-beams (beam search) is deterministic: add --temperature 0 and drop --top-k, --top-p "
                        "and --draft-workdir")
    result = beam_search(loaded.model, loaded.params, prompt_ids, args.max_new_tokens, loaded.cfg.model.seq_len,
                         num_beams=args.num_beams, length_penalty=args.length_penalty,
                         eos_id=loaded.tokenizer.eos_id, num_return=args.num_beams)
    beams = [{"text": loaded.tokenizer.decode(b.token_ids), "token_ids": b.token_ids, "score": b.score}
             for b in result.beams]
    if not args.json:
        print(args.prompt + beams[0]["text"])
        return 0
    new_ids = result.beams[0].token_ids
    _print_json({"prompt": args.prompt, "completion": beams[0]["text"], "new_tokens": len(new_ids),
                 "step": loaded.step, "prompt_token_ids": prompt_ids, "new_token_ids": new_ids,
                 "ttft_s": result.ttft_s,
                 "tpot_s": (result.total_s - result.ttft_s) / (result.steps - 1) if result.steps > 1 else None,
                 "tokens_per_sec": len(new_ids) / result.total_s if result.total_s else None,
                 "num_beams": args.num_beams, "length_penalty": args.length_penalty, "search_steps": result.steps,
                 "beams": beams})
    return 0


def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP API (completions, chat, streaming) for a model")
    s.add_argument("--workdir", required=True, help="a trained, converted or quantized work directory")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only; there is no "
                                                       "authentication)")
    s.add_argument("--port", type=argtypes.integer(1, 65535, "a port number"), default=8000)
    s.add_argument("--max-batch", type=argtypes.positive_int, default=8,
                   help="decode rows: requests generated together (continuous batching)")
    s.add_argument("--max-len", type=argtypes.positive_int,
                   help="tokens per sequence (prompt + output; default min(model.seq_len, 2048))")
    s.add_argument("--max-pending", type=argtypes.positive_int, default=64,
                   help="requests running or waiting at once; more get HTTP 429")
    s.add_argument("--steps-per-sync", type=argtypes.positive_int, default=4,
                   help="decode steps per engine call between admitting new requests")
    s.add_argument("--name", help="the model's name in the API (default: the work directory's name)")
    s.add_argument("--adapter", help="a PEFT run's adapters (`llm-jax export --adapters-only`) on --workdir's base")
    s.set_defaults(func=cmd_serve)


def cmd_serve(args, extra) -> int:
    from llm_jax.data.chat import load_chat_template
    from llm_jax.infer.engine import Engine
    from llm_jax.infer.load import load_workdir, with_adapter
    from llm_jax.infer.server import serve
    loaded = load_workdir(args.workdir)
    if args.adapter:
        loaded = with_adapter(loaded, args.adapter)
    m = loaded.cfg.model
    if m.family != "decoder":
        raise UserError(f"serve runs decoder-only models; {args.workdir} holds model.family={m.family!r}")
    engine = Engine(loaded.model, loaded.params, m.seq_len, rows=args.max_batch,
                    max_len=args.max_len or min(m.seq_len, 2048), steps_per_sync=args.steps_per_sync)
    name = args.name or os.path.basename(os.path.normpath(args.workdir))
    serve(engine, loaded.tokenizer, name, host=args.host, port=args.port,
          chat_template=(args.adapter and load_chat_template(args.adapter)) or load_chat_template(args.workdir),
          max_pending=args.max_pending)
    return 0
