"""Causal LM (decoder-only) vs span corruption (encoder-decoder) vs masked LM (encoder-only) on the same corpus.

All three on configs/ablation.py's data and schedule (Shakespeare, vocab 1024, windows of 128, 400 steps of 16
windows = the same 819,200 training tokens), width 96, pre-LN, learned positions: 4 decoder layers, 2 + 2
encoder-decoder layers, 4 encoder layers (about the same parameters). Each objective's own held-out loss is
reported (they are different quantities: next-token, span, and masked-token cross-entropy), plus the probe all
three can answer: `llm-jax eval cloze` — one hidden token per held-out window (the decoder sees only its left).

Run:    llm-jax sweep run experiments/objectives/compare.py
Report: llm-jax sweep report experiments/objectives/compare.py   # -> experiments/objectives/results/compare/
Probe:  for m in runs/sweeps/compare/*/; do llm-jax eval cloze --workdir $m --json; done
"""

from llm_jax.sweep import Sweep


def get_sweep():
    return Sweep(
        name="compare",
        description=("Causal LM (decoder, 4 layers) vs span corruption (encoder-decoder, 2 + 2 layers) vs masked LM "
                     "(encoder, 4 layers), d=96, same data and tokens; each objective's own held-out loss."),
        base="configs/ablation.py",
        variants={"causal_lm": {},
                  "span_corruption": {"model.family": "encdec", "train.objective": "span_corruption",
                                      "model.n_layers": 2},
                  "mlm": {"model.family": "encoder", "train.objective": "mlm"}},
        overrides={"model.n_layers": 4, "model.scan_unroll": 1},
        seeds=[0, 1],
    )
