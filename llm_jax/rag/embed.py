"""Text embeddings from any work directory's model: pooled final hidden states, L2-normalised.

The hidden states are the final norm's output (the last block's output where the model has no final norm, as in
a post-LN BERT: Hugging Face's `last_hidden_state`):
- encoder family (a bi-encoder such as all-MiniLM-L6-v2, `rag encoder`): the input is `[CLS] text [SEP]` where
  the vocabulary has them, padding keys hidden from attention (`head="hidden"`);
- decoder family: the text's tokens alone (no BOS: its attention-sink state would dominate a mean); causal, so
  right padding never reaches a real token. The logits are never used, and XLA drops them from the compiled pass.

Pooling: "mean" over the real (non-pad) tokens — sentence-transformers' pooling for MiniLM — or "last", the last
real token's state (the one a causal model has read the whole text into). Texts are cut to `max_tokens`
(default min(model.seq_len, 256): MiniLM's training length), sorted by length and run `batch_size` rows at a time,
right-padded to a multiple of 32 tokens so that few shapes compile. The embedder's `identity` (work directory,
family, step, a sha256 of every parameter, pooling, dimension) is what an index records, so that a query is never
compared with vectors of another model.
"""

from __future__ import annotations

import functools
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.rag.index import POOLINGS

PAD_ROUND = 32
DEFAULT_MAX_TOKENS = 256
FAMILIES = ("decoder", "encoder")


def _hidden(model, family: str, params, tokens_BL, real_BL):
    """The final hidden states (B, L, D), float32."""
    if family == "encoder":
        return model.apply({"params": params}, tokens_BL, padding_BL=real_BL, head="hidden")
    _, state = model.apply({"params": params}, tokens_BL, mutable=["intermediates"],
                           capture_intermediates=lambda module, method: module.name == "norm_final")
    found = state["intermediates"]
    hidden_BLD = found["norm_final"]["__call__"][0] if "norm_final" in found else found["residual"][0]
    return hidden_BLD.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("model", "family", "pooling"))
def _embed(model, family: str, pooling: str, params, tokens_BL, lengths_B):
    """Unit-norm pooled embeddings (B, D) of right-padded rows with `lengths_B` real tokens each."""
    B, L = tokens_BL.shape
    real_BL = jnp.arange(L)[None, :] < lengths_B[:, None]
    hidden_BLD = _hidden(model, family, params, tokens_BL, real_BL)
    if pooling == "mean":
        weights_BL = real_BL.astype(jnp.float32)
        pooled_BD = jnp.einsum("bld,bl->bd", hidden_BLD, weights_BL) / jnp.maximum(weights_BL.sum(-1), 1)[:, None]
    else:
        pooled_BD = hidden_BLD[jnp.arange(B), jnp.maximum(lengths_B - 1, 0)]
    return pooled_BD / jnp.maximum(jnp.linalg.norm(pooled_BD, axis=-1, keepdims=True), 1e-12)


def params_sha256(params) -> str:
    """sha256 over every parameter's path, dtype, shape and bytes (the model's identity, whatever its path)."""
    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


class Embedder:
    """Embeds texts with a loaded work directory's model (`infer.load.load_workdir`); see the module docstring."""

    def __init__(self, loaded, workdir: str, *, pooling: str = "mean", batch_size: int = 32,
                 max_tokens: int | None = None):
        family = loaded.cfg.model.family
        if family not in FAMILIES:
            raise UserError(f"{workdir}: embeddings come from a decoder or an encoder; this model is "
                            f"model.family={family!r}")
        if pooling not in POOLINGS:
            raise UserError(f"--pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        if batch_size < 1 or (max_tokens is not None and max_tokens < 4):
            raise UserError(f"batch size {batch_size} / max tokens {max_tokens}: need >= 1 and >= 4")
        self.loaded, self.workdir, self.family, self.pooling = loaded, workdir, family, pooling
        self.batch_size = batch_size
        self.max_tokens = min(int(loaded.cfg.model.seq_len), max_tokens or DEFAULT_MAX_TOKENS)
        tok = loaded.tokenizer
        wrap = [tok.encode("[CLS]"), tok.encode("[SEP]")] if family == "encoder" else [[], []]
        self.cls, self.sep = wrap if all(len(w) == 1 for w in wrap) else ([], [])
        self._identity = None

    @classmethod
    def from_workdir(cls, workdir: str, **kwargs) -> "Embedder":
        from llm_jax.infer.load import load_workdir
        return cls(load_workdir(workdir), workdir, **kwargs)

    @property
    def dim(self) -> int:
        return int(self.loaded.cfg.model.d_model)

    @property
    def identity(self) -> dict:
        """What an index records about the model its vectors came from (compared on loading: `index.check`)."""
        if self._identity is None:
            m = self.loaded.cfg.model
            self._identity = {"workdir": os.path.abspath(self.workdir), "family": m.family, "step": self.loaded.step,
                              "params_sha256": params_sha256(self.loaded.params), "pooling": self.pooling,
                              "dim": self.dim, "max_tokens": self.max_tokens}
        return self._identity

    def tokens(self, text: str) -> list[int]:
        """The model's input for `text`: its tokens (cut to fit), wrapped in [CLS] ... [SEP] for an encoder."""
        room = self.max_tokens - len(self.cls) - len(self.sep)
        ids = self.cls + self.loaded.tokenizer.encode(text)[:room] + self.sep
        if not ids:
            raise UserError(f"the text {text[:40]!r} has no tokens to embed")
        return ids

    def embed(self, texts: list[str], log=None) -> np.ndarray:
        """(N, D) float32 unit vectors of `texts`, in their order; `log(done, total)` after each batch."""
        rows = [self.tokens(t) for t in texts]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        out_ND = np.zeros((len(rows), self.dim), np.float32)
        model, params = self.loaded.model, self.loaded.params
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            L = min(self.max_tokens, -(-len(rows[batch[0]]) // PAD_ROUND) * PAD_ROUND)
            B = self.batch_size if len(order) > self.batch_size else len(batch)  # one batch shape per length
            tokens_BL, lengths_B = np.zeros((B, L), np.int32), np.ones(B, np.int32)
            for r, i in enumerate(batch):
                tokens_BL[r, :len(rows[i])], lengths_B[r] = rows[i], len(rows[i])
            vectors_BD = _embed(model, self.family, self.pooling, params, jnp.asarray(tokens_BL),
                                jnp.asarray(lengths_B))
            out_ND[batch] = np.asarray(vectors_BD)[:len(batch)]
            if log:
                log(min(start + self.batch_size, len(order)), len(order))
        return out_ND
