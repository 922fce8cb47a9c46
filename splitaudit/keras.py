"""Keras integration: audit a ``model.fit`` split before training, and check ``validation_split``.

Three ways in, each a one-line change to a training script:

* ``splitaudit.keras.fit(model, x, y, validation_split=0.2, epochs=10)`` instead of
  ``model.fit(...)``: same arguments, same ``History``; the split Keras will use is audited
  first;
* ``callbacks=[LeakageCheck.for_fit(x, y, validation_split=0.2)]`` in ``model.fit``;
* ``callbacks=[LeakageCheck(train=(x, y), validation_data=(x_val, y_val))]``.

Why not a bare ``LeakageCheck()``: Keras 3 does not show a callback the ``x``, ``y`` or
``validation_data`` given to ``fit`` (``callback.params`` holds only epochs, steps and
verbosity), so the callback must be given the data, or be added by :func:`fit`, which sees it.
A bare ``LeakageCheck()`` in ``model.fit`` raises at ``on_train_begin`` and says so.

``validation_split`` is for arrays only (Keras' rule, not ours): Keras holds out the *last*
``floor``-rounded fraction of the samples, before any shuffling. :func:`LeakageCheck.for_fit`
audits exactly those samples, and :func:`check_validation_split` warns
(:class:`OrderedDataWarning`) when the data are ordered (labels sorted or grouped, a trend),
which makes that tail unrepresentative.

The audit runs once, at ``on_train_begin``, on views of the arrays (no copies) or by streaming
the ``tf.data`` inputs once: it costs what :func:`splitaudit.audit` costs, nothing per epoch.

Keras itself is imported only when :class:`LeakageCheck` is first used (this module's name does
not shadow the real ``keras``: imports are absolute).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

from splitaudit.errors import InvalidInputError, LeakageError, invalid_param

__all__ = ["LeakageCheck", "LeakageWarning", "OrderedDataWarning", "check_validation_split",
           "fit", "held_out_split"]

ON_LEAK = ("raise", "warn")
#: ``check_validation_split`` warns when the order test's p-value is below this ...
ORDER_ALPHA = 1e-3
#: ... and its effect (Cramer's V head vs tail, excess adjacency of equal labels, |Spearman rho|
#: of a value against position) is at least this: big samples make tiny, harmless orderings
#: significant.
ORDER_MIN_EFFECT = 0.1


class OrderedDataWarning(UserWarning):
    """The data are ordered, so the tail Keras holds out for ``validation_split`` is not a
    representative validation set. Shuffle before ``fit``."""


class LeakageWarning(UserWarning):
    """``LeakageCheck(on_leak="warn")`` found validation samples copied from training."""


# --------------------------------------------------------------------------------------------
# validation_split


def _check_split(validation_split: Any, owner: str) -> float:
    vs = validation_split
    if not isinstance(vs, (int, float)) or isinstance(vs, bool) or not 0.0 < vs < 1.0:
        raise invalid_param("validation_split", owner, "a float in (0, 1)", vs)
    return float(vs)


def _length(x: Any, owner: str) -> int:
    if isinstance(x, (list, tuple)) and x and hasattr(x[0], "shape"):
        return len(x[0])  # a list of input arrays (multi-input model)
    if not hasattr(x, "shape") or not hasattr(x, "__len__"):
        raise invalid_param("x", owner, "an array (validation_split works on arrays only, as in "
                            "Keras; pass validation_data for tf.data inputs)", type(x).__name__)
    return len(x)


def _slice(x: Any, start: int, stop: int) -> Any:
    if isinstance(x, (list, tuple)):
        return type(x)(_slice(v, start, stop) for v in x)
    if isinstance(x, dict):
        return {k: _slice(v, start, stop) for k, v in x.items()}
    return x[start:stop]


def held_out_split(x: Any, y: Any = None, validation_split: float = 0.2) -> tuple[tuple, tuple]:
    """The ``(train, val)`` parts Keras makes of arrays for ``fit(validation_split=...)``.

    Keras keeps the first ``floor(n * (1 - validation_split))`` samples for training and holds
    out the rest, before any shuffling. Slices are views: nothing is copied.

    Returns
    -------
    tuple
        ``((x_train, y_train), (x_val, y_val))``; the ``y`` parts are None when ``y`` is.

    Examples
    --------
    >>> (xt, _), (xv, _) = held_out_split(np.arange(10), None, 0.25)
    >>> xt.tolist(), xv.tolist()
    ([0, 1, 2, 3, 4, 5, 6], [7, 8, 9])
    """
    vs = _check_split(validation_split, "held_out_split")
    n = _length(x, "held_out_split")
    if y is not None and len(y) != n:
        raise invalid_param("y", "held_out_split", f"{n} labels (one per sample)", len(y))
    split_at = int(math.floor(n * (1.0 - vs)))  # exactly Keras' rule (array_slicing.py)
    if split_at == 0 or split_at == n:
        raise invalid_param("validation_split", "held_out_split",
                            f"a fraction leaving samples on both sides of {n} samples", vs)
    train = (_slice(x, 0, split_at), None if y is None else _slice(y, 0, split_at))
    val = (_slice(x, split_at, n), None if y is None else _slice(y, split_at, n))
    return train, val


def _order_values(x: Any) -> np.ndarray | None:
    """Per-sample mean of ``x`` (brightness for images, a feature level for tables): a cheap
    value whose trend along the input order reveals data sorted by time or source."""
    if isinstance(x, (list, tuple, dict)) or not hasattr(x, "shape"):
        return None
    arr = np.asarray(x)
    if arr.ndim < 1 or not np.issubdtype(arr.dtype, np.number) or len(arr) < 3:
        return None
    return arr.reshape(len(arr), -1).mean(axis=1, dtype=np.float64)


def check_validation_split(x: Any = None, y: Any = None, validation_split: float = 0.2, *,
                           values: Any = None, alpha: float = ORDER_ALPHA,
                           min_effect: float = ORDER_MIN_EFFECT):
    """Warn when Keras' ``validation_split`` tail would not be representative of the data.

    Keras holds out the *last* ``validation_split`` fraction of the arrays before shuffling. If
    the labels are sorted or grouped, or the samples drift along their order (recorded over
    time, concatenated from sources), that tail is a different population: validation scores
    mislead. Tests the head/tail label distributions, the grouping of equal labels, and a trend
    of ``values`` (default: each sample's mean of ``x``) along the order
    (:func:`splitaudit.stats.order_test`), and warns with :class:`OrderedDataWarning` saying how
    to fix it.

    Parameters
    ----------
    x : array, optional
        Inputs in the order given to ``fit`` (used for the default ``values``).
    y : array, optional
        Labels in that order (class ids, names, or one-hot rows).
    validation_split : float
        The fraction given to ``fit``, in (0, 1).
    values : array, optional
        ``(N,)`` or ``(N, P)`` per-sample values to test for a trend (e.g. timestamps).
    alpha : float
        Significance level (the test's p-value is Bonferroni-corrected over its parts).
    min_effect : float
        Smallest effect that warns (see :data:`ORDER_MIN_EFFECT`).

    Returns
    -------
    splitaudit.stats.OrderResult
        The test result, whether or not it warned.
    """
    from splitaudit.stats import order_test

    owner = "check_validation_split"
    vs = _check_split(validation_split, owner)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 < alpha < 1.0:
        raise invalid_param("alpha", owner, "a float in (0, 1)", alpha)
    if not isinstance(min_effect, (int, float)) or isinstance(min_effect, bool) or not 0.0 <= min_effect <= 1.0:
        raise invalid_param("min_effect", owner, "a float in [0, 1]", min_effect)
    if values is None and x is not None:
        values = _order_values(x)
    if y is None and values is None:
        raise invalid_param("y", owner, "labels (or x / values to test for a trend)", None)
    labels = None
    if y is not None:
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim == 1 and np.issubdtype(labels.dtype, np.floating) and \
                len(np.unique(labels)) > max(20, len(labels) // 5):
            # Regression targets: test them as a trend, not as classes.
            values = labels if values is None else np.column_stack([np.asarray(values, np.float64), labels])
            labels = None
    result = order_test(labels, values, vs)
    if result.p_value < alpha and result.effect >= min_effect:
        warnings.warn(_order_message(result, vs), OrderedDataWarning, stacklevel=2)
    return result


def _order_message(result, vs: float) -> str:
    what = []
    ls = result.label_shift
    if ls is not None and ls.cramers_v >= ORDER_MIN_EFFECT:
        what.append(f"the label distribution of the held-out tail differs from the rest "
                    f"(Cramer's V {ls.cramers_v:.2f})")
    if result.adjacency_excess is not None and result.adjacency_excess >= ORDER_MIN_EFFECT:
        what.append(f"equal labels are grouped together ({100 * result.adjacency_excess:.0f}% "
                    "excess of equal neighbours over a random order)")
    for col, rho, p in result.trends:
        if abs(rho) >= ORDER_MIN_EFFECT and p < ORDER_ALPHA:
            what.append(f"value {col} trends along the sample order (Spearman rho {rho:+.2f})")
    if not what:
        what.append(f"{result.effect_name} = {result.effect:.2f}")
    return (f"validation_split={vs:g} holds out the last {100 * vs:g}% of the samples, before "
            f"shuffling, and these data are ordered: {'; '.join(what)} (p={result.p_value:.2g}). "
            f"That tail is not a representative validation set. Fix: {result.hint}")


# --------------------------------------------------------------------------------------------
# LeakageCheck


_NO_DATA = ("LeakageCheck has no data to audit: Keras 3 does not pass fit's x, y or "
            "validation_data to callbacks. Use splitaudit.keras.fit(model, x, y, ...) instead of "
            "model.fit, or LeakageCheck.for_fit(x, y, validation_split=...) / "
            "LeakageCheck(train=(x, y), validation_data=(x_val, y_val)).")


def _as_split(x: Any, y: Any) -> Any:
    return x if y is None else (x, y)


class _LeakageCheckMixin:
    """The callback's logic, kept free of Keras so it can be read (and tested) alone."""

    def _setup(self, train: Any, validation_data: Any, *, fail_on: str, on_leak: str,
               max_leak_rate: float, config: Any, validation_split: float | None,
               y: Any = None) -> None:
        from splitaudit.report import FAIL_ON

        owner = "LeakageCheck"
        if fail_on not in FAIL_ON:
            raise invalid_param("fail_on", owner, f"one of {', '.join(FAIL_ON)}", fail_on)
        if on_leak not in ON_LEAK:
            raise invalid_param("on_leak", owner, "'raise' or 'warn'", on_leak)
        r = max_leak_rate
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0.0 <= r <= 1.0:
            raise invalid_param("max_leak_rate", owner, "a float in [0, 1]", r)
        if config is not None:
            from splitaudit.config import AuditConfig

            if not isinstance(config, AuditConfig):
                raise invalid_param("config", owner, "an AuditConfig or None", config)
        if (train is None) != (validation_data is None):
            raise invalid_param("validation_data" if train is not None else "train", owner,
                                "given together with the other (or neither, with splitaudit.keras.fit)",
                                None)
        self.train, self.validation_data = train, validation_data
        self.fail_on, self.on_leak, self.max_leak_rate = fail_on, on_leak, float(r)
        self.config = config
        self.validation_split = validation_split
        self._order_xy = (None, None)
        self.report = None
        self.order_result = None

    @property
    def bound(self) -> bool:
        """Whether the callback knows the data it will audit."""
        return self.train is not None

    def _bind(self, x: Any, y: Any = None, validation_data: Any = None,
              validation_split: float | None = None) -> None:
        """Give the callback fit's data (what :func:`fit` does for a bare ``LeakageCheck()``)."""
        if validation_data is not None:
            self.train, self.validation_data = _as_split(x, y), validation_data
            self.validation_split = None
        elif validation_split:
            (xt, yt), (xv, yv) = held_out_split(x, y, validation_split)
            self.train, self.validation_data = _as_split(xt, yt), _as_split(xv, yv)
            self.validation_split = float(validation_split)
            self._order_xy = (x, y)
        else:
            raise invalid_param("validation_data", "LeakageCheck",
                                "validation_data, or validation_split > 0 (nothing to audit otherwise)",
                                None)

    def run_audit(self):
        """Audit the split, store the report in ``self.report``, then raise or warn.

        Returns
        -------
        AuditReport

        Raises
        ------
        LeakageError
            With ``on_leak="raise"``, when copies pass ``fail_on`` and ``max_leak_rate``.
        """
        if not self.bound:
            raise InvalidInputError(_NO_DATA)
        from splitaudit.api import audit
        from splitaudit.config import AuditConfig

        x, y = self._order_xy
        if self.validation_split and (x is not None) and (y is not None or hasattr(x, "shape")):
            self.order_result = check_validation_split(x, y, self.validation_split)
        config = self.config or AuditConfig()
        config = dataclasses.replace(config, fail_on=self.fail_on, max_leak_rate=self.max_leak_rate)
        self.report = audit(self.train, self.validation_data, config=config)
        try:
            self.report.raise_for_leakage(self.fail_on, self.max_leak_rate)
        except LeakageError as exc:
            if self.on_leak == "raise":
                raise
            warnings.warn(str(exc), LeakageWarning, stacklevel=3)
        return self.report


_CLASS = None


def _leakage_check_class():
    """Build the Keras callback class on first use (keeps ``import splitaudit.keras`` light)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import keras  # absolute import: the real Keras, not this module

    class LeakageCheck(_LeakageCheckMixin, keras.callbacks.Callback):
        """Keras callback: audit the training data against the validation data at
        ``on_train_begin``, then raise :class:`splitaudit.LeakageError` or warn.

        Parameters
        ----------
        train : array, (x, y) tuple, tf.data.Dataset, optional
            Training data, as given to ``fit`` (anything :func:`splitaudit.audit` accepts).
        validation_data : same, optional
            Validation data, as given to ``fit``. ``train`` and ``validation_data`` go together;
            leave both out only when :func:`splitaudit.keras.fit` adds the callback's data.
        fail_on : {"exact", "near", "similar", "never"}, default "near"
            Least severe match kind that counts.
        on_leak : {"raise", "warn"}, default "raise"
            Stop training with :class:`~splitaudit.LeakageError`, or warn with
            :class:`LeakageWarning` and train on.
        max_leak_rate : float, default 0
            Share of validation samples allowed to have a copy in train.
        config : AuditConfig, optional
            Audit settings (``fail_on`` and ``max_leak_rate`` above override its own).

        Attributes
        ----------
        report : AuditReport or None
            The audit, after ``on_train_begin``.
        order_result : OrderResult or None
            The ordering test, for ``validation_split``.

        Notes
        -----
        Keras 3 callbacks do not see fit's data; see the module docstring for the one-line
        alternatives (:func:`splitaudit.keras.fit`, :meth:`for_fit`).
        """

        def __init__(self, train: Any = None, validation_data: Any = None, *, fail_on: str = "near",
                     on_leak: str = "raise", max_leak_rate: float = 0.0, config: Any = None) -> None:
            super().__init__()
            self._setup(train, validation_data, fail_on=fail_on, on_leak=on_leak,
                        max_leak_rate=max_leak_rate, config=config, validation_split=None)

        @classmethod
        def for_fit(cls, x: Any, y: Any = None, *, validation_data: Any = None,
                    validation_split: float = 0.0, **kwargs: Any) -> LeakageCheck:
            """A check of exactly the split ``model.fit(x, y, validation_data=...,
            validation_split=...)`` will use (same arguments), e.g.
            ``model.fit(x, y, validation_split=0.2, callbacks=[LeakageCheck.for_fit(x, y,
            validation_split=0.2)])``. With ``validation_split``, Keras' tail is audited against
            the head and the order of the data is checked (:func:`check_validation_split`)."""
            check = cls(**kwargs)
            check._bind(x, y, validation_data, validation_split)
            return check

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.run_audit()

    LeakageCheck.__module__ = __name__
    LeakageCheck.__qualname__ = "LeakageCheck"
    _CLASS = LeakageCheck
    return _CLASS


def __getattr__(name: str):
    if name == "LeakageCheck":
        return _leakage_check_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fit(model: Any, x: Any = None, y: Any = None, *, validation_data: Any = None,
        validation_split: float = 0.0, callbacks: list | None = None, fail_on: str = "near",
        on_leak: str = "raise", max_leak_rate: float = 0.0, config: Any = None, **kwargs: Any):
    """``model.fit`` with a leakage audit of the split it uses: replace ``model.fit(`` by
    ``splitaudit.keras.fit(model, `` and keep every argument.

    A :class:`LeakageCheck` is added to ``callbacks`` (or a bare one already there is given the
    data), and the audit runs at ``on_train_begin``.

    Parameters
    ----------
    model : keras.Model
    x, y, validation_data, validation_split, callbacks, **kwargs
        As for ``model.fit``.
    fail_on, on_leak, max_leak_rate, config
        See :class:`LeakageCheck`.

    Returns
    -------
    keras.callbacks.History
        What ``model.fit`` returns.

    Raises
    ------
    LeakageError
        With ``on_leak="raise"`` when the split is leaked (before any training step).
    """
    cls = _leakage_check_class()
    callbacks = list(callbacks or [])
    mine = [c for c in callbacks if isinstance(c, cls)]
    if mine:
        for c in mine:
            if not c.bound:
                c._bind(x, y, validation_data, validation_split)
    else:
        callbacks.append(cls.for_fit(x, y, validation_data=validation_data,
                                     validation_split=validation_split, fail_on=fail_on,
                                     on_leak=on_leak, max_leak_rate=max_leak_rate, config=config))
    return model.fit(x, y, validation_data=validation_data, validation_split=validation_split,
                     callbacks=callbacks, **kwargs)
