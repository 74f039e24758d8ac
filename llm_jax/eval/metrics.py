"""Classification metrics for GLUE-style tasks (hand-checkable formulas, no scikit-learn at run time):
accuracy, F1 of the positive class (label 1) and Matthews correlation, binary or multi-class (Gorodkin's R_K)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    y, p = np.asarray(labels), np.asarray(predictions)
    return float(np.mean(y == p)) if len(y) else 0.0


def f1(labels: Sequence[int], predictions: Sequence[int], positive: int = 1) -> float:
    """2TP / (2TP + FP + FN) for class `positive`; 0 when there are no positives either way."""
    y, p = np.asarray(labels), np.asarray(predictions)
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def matthews(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Matthews correlation from the confusion matrix C (rows true, columns predicted):
    (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)), c = trace, s = total; 0 if undefined.
    For two classes it is (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))."""
    y, p = np.asarray(labels), np.asarray(predictions)
    classes = np.union1d(y, p)
    index = {c: i for i, c in enumerate(classes)}
    C = np.zeros((len(classes), len(classes)), np.float64)
    for a, b in zip(y, p):
        C[index[a], index[b]] += 1
    t_k, p_k, c, s = C.sum(axis=1), C.sum(axis=0), np.trace(C), C.sum()
    denominator = math.sqrt((s * s - np.dot(p_k, p_k)) * (s * s - np.dot(t_k, t_k)))
    return float((c * s - np.dot(t_k, p_k)) / denominator) if denominator else 0.0


def classification_report(labels: Sequence[int], predictions: Sequence[int]) -> dict:
    out = {"acc": accuracy(labels, predictions), "mcc": matthews(labels, predictions), "n": len(labels)}
    if set(labels) | set(predictions) <= {0, 1}:
        out["f1"] = f1(labels, predictions)
    return out
