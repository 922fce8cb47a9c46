"""Leak-adjusted metrics: a model's score on the whole val split and on its leak-free part.

A validation score measured partly on copies of training samples rewards memory. Barz and
Denzler (ciFAIR) found published CIFAR error rates rise by 7-14% (relative) once the test
images with near-duplicates in train are replaced. Here the model is evaluated twice with
Keras' own ``evaluate`` and compiled metrics: on every val sample, and on val minus the samples
that have an exact or near copy in train.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from splitaudit.errors import invalid_param
from splitaudit.report import AuditReport
from splitaudit.sources.arrays import IMAGES, TABULAR, TFDATA, Described, Inputs


def check_model(model: object, inputs: Inputs, *, owner: str = "audit") -> None:
    """Fail early (before any fingerprinting) when the model or the val input cannot be used."""
    if not callable(getattr(model, "evaluate", None)):
        raise invalid_param("model", owner, "a compiled Keras model (with an evaluate method)",
                            Described(f"a {type(model).__name__}"))
    if getattr(model, "compiled", True) is False:
        raise invalid_param("model", owner, "a compiled Keras model (call model.compile first)",
                            Described("an uncompiled model"))
    val = inputs.get("val")
    if val.kind not in (IMAGES, TABULAR, TFDATA):
        raise invalid_param("model", owner, "None when val is a list of paths or a directory "
                            "(leak-adjusted metrics need val as arrays or a tf.data.Dataset)",
                            Described(f"a {type(model).__name__}"))
    if val.dataset is not None and not val.has_y:
        raise invalid_param("val", owner, "a tf.data.Dataset of (x, y) elements when a model is given",
                            Described("a dataset of x elements"))
    if val.dataset is None and val.y is None:
        raise invalid_param("val", owner, "(x_val, y_val) or an array with labels['val'] when a "
                            "model is given", Described("an array without labels"))


def leaked_indices(report: AuditReport, split: str = "val", reference: str = "train") -> list[int]:
    """Positions of the ``split`` samples that have an exact or near copy in ``reference``."""
    return sorted({p.query.index for p in report.cross_split_duplicates
                   if p.query.split == split and p.reference.split == reference
                   and p.match in ("exact", "near") and p.query.index is not None})


def _evaluate(model, *args, **kw) -> dict[str, float]:
    out = model.evaluate(*args, verbose=0, return_dict=True, **kw)
    return {str(k): float(v) for k, v in out.items()}


def leak_adjusted_metrics(model: Any, inputs: Inputs, report: AuditReport) -> dict[str, Any]:
    """Evaluate ``model`` on all of val and on val without its leaked samples.

    Returns
    -------
    dict
        ``{"split": "val", "full": {metric: value}, "leak_free": {metric: value} or None
        (when every val sample is leaked), "removed": n, "evaluated": {"full": N,
        "leak_free": N - n}}``.
    """
    val = inputs.get("val")
    removed = leaked_indices(report)
    n = val.n
    keep = np.ones(n, bool)
    keep[removed] = False
    if val.dataset is None:
        x, y = val.x, val.y
        if hasattr(y, "to_numpy") and not isinstance(y, np.ndarray):
            y = y.to_numpy()
        y = np.asarray(y)
        full = _evaluate(model, x, y)
        leak_free = _evaluate(model, x[keep], y[keep]) if keep.any() else None
    else:
        full = _evaluate(model, val.dataset if val.batched else val.dataset.batch(32))
        leak_free = _evaluate(model, _filtered(val, keep)) if keep.any() else None
    return {"split": "val", "full": full, "leak_free": leak_free, "removed": len(removed),
            "evaluated": {"full": int(n), "leak_free": int(keep.sum())}}


def _filtered(val, keep: np.ndarray):
    """The val dataset without the rows where ``keep`` is False, streamed (never materialised)."""
    import tensorflow as tf

    ds = val.dataset
    batch = None
    if val.batched:
        batch = next(iter(ds.take(1)))[0].shape[0] or 32  # re-batch at the user's batch size
        ds = ds.unbatch()
    mask = tf.constant(keep)
    ds = ds.enumerate().filter(lambda i, elem: tf.gather(mask, i)).map(lambda i, elem: elem)
    size = batch or 32
    # A filter hides the length; state it so Keras knows when the epoch ends.
    steps = -(-int(keep.sum()) // size)
    return ds.batch(size).apply(tf.data.experimental.assert_cardinality(steps))
