"""`llm-jax eval vlm`: held-out caption exact match and VQA accuracy of a vision-language model on the synthetic
scenes (llm_jax/data/scenes.py), by greedy decoding with the KV cache (`infer/decode.py`, the generate path).

Every held-out scene (layouts never seen in training) is asked its six questions; an answer counts when the decoded
text equals the reference exactly. Reported: `caption_exact_match`, `vqa_accuracy` (the five question kinds
together), each kind's accuracy, and `blind_*`: the best any model can do without the image — for each prompt,
the answer most frequent for it in the training scenes (what a text-only model can at most learn). With
`--blank` (or a run trained with data.scene_images=blank) the images are withheld: the text-only baseline.
"""

from __future__ import annotations

import collections
import json

import numpy as np

from llm_jax import argtypes


def blind_answers(seed: int, size: int, n_train: int) -> dict[str, str]:
    """{prompt: its most frequent answer over the training scenes} (ties: the first seen)."""
    from llm_jax.data import scenes as scenes_lib
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for sc in scenes_lib.scenes(seed, "train", n_train, size):
        for _, prompt, answer in sc.examples:
            counts[prompt][answer] += 1
    return {p: c.most_common(1)[0][0] for p, c in counts.items()}


def evaluate(loaded, n_scenes: int = 300, batch_size: int = 128, blank: bool | None = None,
             blind_scenes: int = 2000, max_new_tokens: int = 24) -> dict:
    from llm_jax.data import scenes as scenes_lib
    from llm_jax.infer.decode import Sampling, generate
    cfg, tok = loaded.cfg, loaded.tokenizer
    seed, size, L = cfg.train.seed, cfg.model.image_size, cfg.model.seq_len
    blank = cfg.data.scene_images == "blank" if blank is None else blank
    rows = [(sc, kind, prompt, answer) for sc in scenes_lib.scenes(seed, "val", n_scenes, size)
            for kind, prompt, answer in sc.examples]
    predictions = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        n_real = len(chunk)
        chunk = chunk + [chunk[-1]] * (batch_size - n_real)  # one batch shape: one compilation
        prompts = [tok.encode(prompt) for _, _, prompt, _ in chunk]
        images = np.stack([np.zeros(sc.image.shape, np.float32) if blank else sc.image.astype(np.float32) / 255.0
                           for sc, _, _, _ in chunk])
        budgets = [min(max_new_tokens, L - len(p)) for p in prompts]
        result = generate(loaded.model, loaded.params, prompts, budgets, L, sampling=Sampling(),
                          eos_id=tok.eos_id, images=images)
        predictions += [tok.decode(ids).strip() for ids in result.new_ids[:n_real]]
    blind = blind_answers(seed, size, blind_scenes)
    hits, blind_hits, totals = collections.Counter(), collections.Counter(), collections.Counter()
    samples = []
    for (sc, kind, prompt, answer), predicted in zip(rows, predictions):
        totals[kind] += 1
        hits[kind] += predicted == answer
        blind_hits[kind] += blind.get(prompt) == answer
        samples.append({"kind": kind, "prompt": prompt, "answer": answer, "predicted": predicted})
    vqa = [k for k in scenes_lib.KINDS if k != "caption"]
    out = {"n_scenes": n_scenes, "n": len(rows), "images": "blank" if blank else "pixels",
           "caption_exact_match": hits["caption"] / totals["caption"],
           "caption_parses": sum(scenes_lib.parse_caption(s["predicted"]) is not None for s in samples
                                 if s["kind"] == "caption") / totals["caption"],
           "vqa_accuracy": sum(hits[k] for k in vqa) / sum(totals[k] for k in vqa),
           "blind_caption_exact_match": blind_hits["caption"] / totals["caption"],
           "blind_vqa_accuracy": sum(blind_hits[k] for k in vqa) / sum(totals[k] for k in vqa)}
    out |= {f"acc_{k}": hits[k] / totals[k] for k in vqa} | {f"blind_acc_{k}": blind_hits[k] / totals[k] for k in vqa}
    return out | {"samples": samples}


def cmd_vlm(args, extra) -> int:
    from llm_jax.data import scenes as scenes_lib
    from llm_jax.errors import UserError
    from llm_jax.infer.load import load_workdir
    loaded = load_workdir(args.workdir)
    if loaded.cfg.model.family != "vlm":
        raise UserError(f"eval vlm scores a vision-language model; {args.workdir} holds model.family="
                        f"{loaded.cfg.model.family!r}")
    result = evaluate(loaded, args.scenes, args.batch_size, blank=True if args.blank else None)
    samples = result.pop("samples")
    if args.samples_out:
        with open(args.samples_out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(s) + "\n" for s in samples)
    result["step"] = loaded.step
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        kinds = [k for k in scenes_lib.KINDS if k != "caption"]
        print(f"images {result['images']} | caption exact match {result['caption_exact_match']:.4f} (blind "
              f"{result['blind_caption_exact_match']:.4f}) | VQA accuracy {result['vqa_accuracy']:.4f} (blind "
              f"{result['blind_vqa_accuracy']:.4f}) | " + " ".join(f"{k} {result['acc_' + k]:.3f}" for k in kinds)
              + f" | n {result['n']}")
    return 0


def add_parser(eval_sub) -> None:
    p = eval_sub.add_parser("vlm", help="vision-language model: held-out caption exact match and VQA accuracy on "
                                        "the synthetic scenes")
    p.add_argument("--workdir", required=True)
    p.add_argument("--scenes", type=argtypes.positive_int, default=300, help="held-out scenes (six questions each)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=128, help="sequences decoded together")
    p.add_argument("--blank", action="store_true", help="withhold the images (blank pictures)")
    p.add_argument("--samples-out", help="write each answer here (JSONL)")
    p.add_argument("--json", action="store_true", help="the last line is one JSON object of the metrics")
    p.set_defaults(func=cmd_vlm, overrides=False, parser=p)
