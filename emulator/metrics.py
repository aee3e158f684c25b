"""Output metrics, one rule each (docs/method.md#error-measures):

* ``ratio(num, den)`` = |num| / |den| with 0/0 = 0, c/0 = inf and NaN = inf (a failed
  value is infinitely wrong), elementwise; ``relative_error(computed, exact)`` is
  ``ratio(computed - exact, exact)``;
* ``predicted_class(logits)``: the class a classifier predicts, decided on its logits
  (the last layer's pre-activation, before any sigmoid or softmax): the arg-max of a row,
  or, for one output unit, 1 where the logit is > 0 (sigmoid > 1/2) and 0 elsewhere; a row
  holding NaN predicts no class, -1;
* ``flip_rate(pred, pred_exact)``: share of samples whose predicted class differs from the
  exact pass's (a row without class counts as flipped);
* ``accuracy(pred, labels, classes)``: share of samples whose predicted class is the label
  (``classes`` maps class indices to labels; a row without class is wrong);
* ``kl_divergence(logits, exact_logits)``: per sample, KL(p* || p) of the softmax
  distributions, p* exact (inf where the computed logits hold NaN);
* ``cosine_similarity(a, b)``: per sample, a.b / (|a| |b|) (NaN rows give -inf: worst);
* ``neighbour_flips(emb, exact_emb)``: per sample, whether its nearest other sample of the
  batch (largest cosine similarity) differs between the computed and the exact
  embeddings.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

__all__ = ["ratio", "relative_error", "predicted_class", "class_labels", "flipped", "flip_rate", "kl_divergence",
           "cosine_similarity", "neighbour_flips", "accuracy", "NO_CLASS"]

NO_CLASS = -1


def ratio(num, den) -> np.ndarray:
    """|num| / |den| elementwise, with 0/0 = 0, c/0 = inf and NaN (in either) = inf."""
    num = np.abs(np.asarray(num, dtype=np.float64))
    den = np.abs(np.asarray(den, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = num / den
    out = np.where(num == 0, 0.0, np.where(den == 0, np.inf, out))
    return np.where(np.isnan(num) | np.isnan(den) | np.isnan(out), np.inf, out)


def relative_error(computed, exact) -> np.ndarray:
    """|computed - exact| / |exact| elementwise (0/0 = 0, c/0 = inf, NaN = inf)."""
    computed = np.asarray(computed, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = computed - exact
    return ratio(np.where(computed == exact, 0.0, diff), exact)


def predicted_class(logits) -> np.ndarray:
    """Class index per row of ``logits`` (N, m) (or one row (m,)): arg-max, or logit > 0
    for one unit; -1 (:data:`NO_CLASS`) for a row holding NaN."""
    z = np.asarray(logits, dtype=np.float64)
    single = z.ndim == 1
    z = np.atleast_2d(z)
    if z.shape[1] == 1:
        index = (z[:, 0] > 0).astype(np.int64)
    else:
        index = np.argmax(np.where(np.isnan(z), -np.inf, z), axis=1).astype(np.int64)
    index = np.where(np.isnan(z).any(axis=1), NO_CLASS, index)
    return index[0] if single else index


def class_labels(index, classes=None) -> np.ndarray:
    """The labels of class indices: ``classes[index]`` (indices themselves without
    ``classes``); :data:`NO_CLASS` stays -1 for numeric labels and becomes None otherwise."""
    index = np.asarray(index, dtype=np.int64)
    if classes is None:
        return index
    table = np.asarray(classes)
    labels = table[np.maximum(index, 0)]
    if table.dtype.kind in "iuf":
        return np.where(index == NO_CLASS, NO_CLASS, labels)
    out = labels.astype(object)
    out[index == NO_CLASS] = None
    return out


def flipped(pred, pred_exact) -> np.ndarray:
    """True for each sample whose predicted class differs from the exact one's (or that
    predicts no class)."""
    pred, pred_exact = np.asarray(pred), np.asarray(pred_exact)
    if pred.shape != pred_exact.shape:
        raise DataError(f"{pred.shape[0]} predictions against {pred_exact.shape[0]} exact ones.")
    return (pred != pred_exact) | (pred == NO_CLASS)


def flip_rate(pred, pred_exact) -> float:
    """Share of samples whose predicted class differs from the exact one's (:func:`flipped`)."""
    flips = flipped(pred, pred_exact)
    return float(np.mean(flips)) if flips.size else 0.0


def accuracy(pred, labels, classes=None) -> float:
    """Share of samples whose predicted class (index, mapped through ``classes``) equals
    its label; a row without class is wrong."""
    pred = np.asarray(pred, dtype=np.int64)
    truth = np.asarray(labels)
    if truth.shape != pred.shape:
        raise DataError(f"{truth.shape[0] if truth.ndim else 0} labels for {pred.shape[0]} samples.")
    hit = (pred != NO_CLASS) & (class_labels(pred, classes) == truth)
    return float(np.mean(hit)) if pred.size else 0.0


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - np.max(z, axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def kl_divergence(logits, exact_logits) -> np.ndarray:
    """KL(softmax(exact) || softmax(logits)) per row (nats), in float64 from the logits
    (one output unit: the Bernoulli distribution of its sigmoid); inf for a NaN row."""
    z, ze = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (logits, exact_logits))
    if z.shape[1] == 1:
        z, ze = np.concatenate([np.zeros_like(z), z], axis=1), np.concatenate([np.zeros_like(ze), ze], axis=1)
    with np.errstate(all="ignore"):
        lp, lq = _log_softmax(ze), _log_softmax(z)
        kl = np.sum(np.exp(lp) * (lp - lq), axis=1)
    return np.where(np.isnan(z).any(axis=1) | np.isnan(kl), np.inf, np.maximum(kl, 0.0))


def cosine_similarity(a, b) -> np.ndarray:
    """a_s . b_s / (|a_s| |b_s|) per row s (1 for two zero rows, -inf where NaN appears)."""
    a, b = (_rows(v) for v in (a, b))
    with np.errstate(all="ignore"):
        dot = np.sum(a * b, axis=1)
        norms = np.sqrt(np.sum(a * a, axis=1)) * np.sqrt(np.sum(b * b, axis=1))
        cos = np.where(norms > 0, dot / norms, np.where(dot == 0, 1.0, 0.0))
    bad = np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1) | np.isnan(cos)
    return np.where(bad, -np.inf, cos)


def _rows(v) -> np.ndarray:
    """``v`` as (samples, features) float64."""
    a = np.atleast_2d(np.asarray(v, dtype=np.float64))
    return a.reshape(a.shape[0], -1)


def _nearest(emb: np.ndarray) -> np.ndarray:
    x = _rows(emb)
    with np.errstate(all="ignore"):
        norms = np.sqrt(np.sum(x * x, axis=1, keepdims=True))
        unit = np.where(norms > 0, x / norms, 0.0)
        sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    sim = np.where(np.isnan(sim), -np.inf, sim)
    return np.argmax(sim, axis=1)


def neighbour_flips(emb, exact_emb) -> np.ndarray:
    """True for each sample whose nearest neighbour among the batch (cosine similarity,
    ties to the lower index) differs between ``emb`` and ``exact_emb``, and for each
    sample whose embedding is not finite (it has no neighbour to keep); otherwise a batch
    of one sample has no neighbour (False)."""
    e, ee = (np.asarray(v, dtype=np.float64) for v in (emb, exact_emb))
    broken = ~np.isfinite(_rows(e)).all(axis=1)
    if e.shape[0] < 2:
        return broken
    return (_nearest(e) != _nearest(ee)) | broken
