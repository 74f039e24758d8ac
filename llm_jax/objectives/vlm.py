"""Vision-language fine-tuning: next-token cross-entropy on the answer tokens, given an image and a prompt.

One example per row (llm_jax/data/scenes.py): `inputs` / `targets` (L each, the text: prompt then answer and
EOS, right-padded), `weights` (1 on the answer and its EOS, 0 on the prompt and the padding) and `images`
(B, S, S, 3), float32 in [0, 1]. The model (family "vlm") reads the image's tokens before the text. Held-out
metric: `token_accuracy` of the answer tokens, teacher-forced.
"""

from __future__ import annotations

import optax

from llm_jax.objectives.base import Objective, apply_with_aux, token_accuracy


def _forward(model, params, batch, rng, deterministic: bool):
    return apply_with_aux(model, params, batch["inputs"], images_BHWC=batch["images"], rng=rng,
                          deterministic=deterministic)


def vlm_losses(model, params, batch, rng, deterministic: bool):
    logits_BLV, sown = _forward(model, params, batch, rng, deterministic)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["targets"]), batch["weights"], sown


def vlm_metrics(model, params, batch):
    logits_BLV, _ = _forward(model, params, batch, None, True)
    return {"token_accuracy": token_accuracy(logits_BLV, batch["targets"], batch["weights"])}


VLM = Objective("vlm", ("inputs", "targets", "weights", "images"), vlm_losses, metrics=vlm_metrics,
                shapes=(("weights", ("B", "L"), "float32"), ("images", ("B", "S", "S", 3), "float32")))
