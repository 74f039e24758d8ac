"""The muP coordinate check (Yang et al., Tensor Programs V): train a few steps at growing widths and watch the
size of activations. Under muP they stay flat in width; under the standard parametrization with Adam the
logits (and the residual stream) grow with width — the reason a learning rate tuned small does not transfer.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from llm_jax import config as config_lib
from llm_jax.models import build_model
from llm_jax.train.optimizer import make_optimizer


def _config(width: int, mup: bool, head_dim: int, base_width: int, lr: float, **model):
    cfg = config_lib.default_config()
    cfg.model.update(dict(dict(vocab_size=256, seq_len=32, d_model=width, n_layers=2, n_heads=width // head_dim,
                               head_dim=head_dim, mup=mup, mup_base_width=base_width), **model))
    cfg.train.update(lr=lr, warmup_steps=1, steps=1000, schedule="constant", grad_clip=0.0, weight_decay=0.0)
    return config_lib.resolve(cfg)


def coordinate_check(widths, *, mup: bool, steps: int = 5, lr: float = 1e-2, head_dim: int = 16,
                     base_width: int | None = None, batch: int = 8, seed: int = 0, **model) -> dict[int, dict]:
    """Mean |activation| of the last hidden state and of the logits after `steps` Adam steps, per width.

    The data (one random batch, trained on repeatedly) and the seed are the same for every width."""
    base_width = base_width or min(widths)
    out = {}
    for width in widths:
        cfg = _config(width, mup, head_dim, base_width, lr, **model)
        net = build_model(cfg.model)
        tokens = jax.random.randint(jax.random.key(seed + 1), (batch, cfg.model.seq_len + 1), 0,
                                    cfg.model.vocab_size)
        params = nn.unbox(net.init(jax.random.key(seed), tokens[:, :-1])["params"])
        tx = make_optimizer(cfg.train, cfg.model)
        opt_state = tx.init(params)

        def loss_fn(p):
            logits = net.apply({"params": p}, tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        @jax.jit
        def step(p, s):
            grads = jax.grad(loss_fn)(p)
            updates, s = tx.update(grads, s, p)
            return optax.apply_updates(p, updates), s

        for _ in range(steps):
            params, opt_state = step(params, opt_state)
        logits, state = net.apply({"params": params}, tokens[:, :-1], mutable=["intermediates"])
        hidden = state["intermediates"]["residual"][0]
        out[width] = {"logits": float(jnp.mean(jnp.abs(logits))), "hidden": float(jnp.mean(jnp.abs(hidden))),
                      "loss": float(loss_fn(params))}
    return out


def width_slope(check: dict[int, dict], key: str) -> float:
    """d log(activation size) / d log(width): 0 is flat; 1 means the activation doubles with the width."""
    widths = sorted(check)
    return float(np.polyfit(np.log(widths), np.log([check[w][key] for w in widths]), 1)[0])
