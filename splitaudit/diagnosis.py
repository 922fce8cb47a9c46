"""Why does validation loss (or accuracy) beat training? Ranked reasons, with the evidence found.

The usual reasons, each checked from what is available:

1. **Regularization active only in training**: Dropout / SpatialDropout / GaussianDropout /
   AlphaDropout / GaussianNoise layers and BatchNormalization batch statistics are on in
   ``fit`` and off in ``evaluate``. L1/L2 weight and activity regularizers are different in
   Keras 3: their penalty is added to ``val_loss`` too (checked against Keras 3.15), so they
   make validation look better only through the penalty falling while ``loss`` is averaged
   over an epoch; that part of reason 2 is credited to them. Label smoothing is applied to both
   losses by the compiled loss, so it is reported as context, not as a share.
2. **Epoch averaging**: ``loss`` is the mean over the batches of an epoch (the model at mid
   epoch, on average) while ``val_loss`` is measured at its end. Comparing at the same time
   means shifting the training curve half an epoch; the part of the gap that shift removes is
   this reason's share.
3. **Augmentation layers** (``RandomFlip``, ``RandomRotation``, ``RandomZoom``, ...): training
   samples are harder than the untouched validation samples.
4. **A leaked, shifted or easier validation split**, from an audit report (or one run on
   ``data``): copies of training samples in validation, failing shift checks, or a model that
   does better on validation than on training samples in inference mode.
5. **Possible over-regularization**: validation stays better even after the shift and both
   losses stay high.

With a compiled model and training data, the training-only mechanisms are *measured*: the loss
of the final model on a sample of training data in training mode (everything on), with the
augmentation layers switched off, with the dropout/noise layers also switched off, and in
inference mode. The differences are the shares of augmentation, dropout/noise and batch
statistics; ``inference train loss - val_loss`` is the share of an easier split.

The core (:func:`load_history`, :func:`shift_half_epoch`, the ranking) is pure; Keras is imported
only when a model is given, matplotlib only by :meth:`Explanation.plot`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from splitaudit.errors import DecodeError, InvalidInputError, invalid_param

#: Layer classes switched on only in training, by kind (matched on the class name so models of
#: any Keras version are recognised without importing Keras here).
DROPOUT_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                  "GaussianDropout", "AlphaDropout")
NOISE_LAYERS = ("GaussianNoise",)
#: Augmentation layers whose names do not start with "Random".
AUGMENTATION_LAYERS = ("RandAugment", "AugMix", "MixUp", "CutMix", "Solarization")
#: Regularizer attributes of Keras layers.
_REGULARIZER_ATTRS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                      "depthwise_regularizer", "pointwise_regularizer", "recurrent_regularizer",
                      "gamma_regularizer", "beta_regularizer", "embeddings_regularizer")
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "iou", "r2")
REASON_IDS = ("regularization", "epoch_averaging", "augmentation", "split", "over_regularization")
#: Leak rate (share of validation samples with a copy in train) that counts as a fully leaked split.
FULL_LEAK_RATE = 0.2


# --------------------------------------------------------------------------------------------
# History


def load_history(history: Any) -> dict[str, list[float]]:
    """Per-epoch metric lists from a Keras ``History``, its ``.history`` dict, a JSON file of it
    or a ``CSVLogger`` CSV.

    Parameters
    ----------
    history : keras.callbacks.History, mapping or path
        A JSON file may hold the dict itself or ``{"history": {...}}``. A CSV needs a header row
        (``epoch,loss,val_loss,...`` as ``CSVLogger`` writes it); ``epoch`` is dropped.

    Returns
    -------
    dict
        Metric name -> list of floats, all of one length (>= 1).

    Raises
    ------
    InvalidInputError
        When the input is none of these or holds no per-epoch numbers.
    """
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        return _validate_history(history.history, "the History object")
    if isinstance(history, Mapping):
        return _validate_history(history, "the history dict")
    if isinstance(history, (str, os.PathLike)):
        return _read_history_file(os.fspath(history))
    raise invalid_param("history", "explain",
                        "a keras History, its .history dict, or a JSON / CSVLogger CSV file path",
                        type(history).__name__)


def _read_history_file(path: str) -> dict[str, list[float]]:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise InvalidInputError(f"history file '{path}' is not a text file (expected History.history "
                                "as JSON, or a CSVLogger CSV)") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read history file '{path}': "
                                f"{exc.strerror or type(exc).__name__}") from None
    stripped = text.lstrip()
    if not stripped:
        raise InvalidInputError(f"history file '{path}' is empty")
    if stripped[0] in "{[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"history file '{path}' is not valid JSON: {exc.msg} "
                                    f"(line {exc.lineno})") from None
        if isinstance(data, Mapping) and isinstance(data.get("history"), Mapping):
            data = data["history"]
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"history file '{path}' must hold a JSON object of per-epoch "
                                    "lists (History.history), not a JSON " + type(data).__name__)
        return _validate_history(data, f"history file '{path}'")
    return _validate_history(_parse_csv(text, path), f"history file '{path}'")


def _parse_csv(text: str, path: str) -> dict[str, list[float]]:
    """CSVLogger format: a header, then one row of numbers per epoch."""
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise InvalidInputError(f"history file '{path}' is neither JSON nor a CSVLogger CSV "
                                "(expected a header like 'epoch,loss,val_loss' and one row per epoch)")
    header = [h.strip() for h in rows[0]]
    out: dict[str, list[float]] = {h: [] for h in header if h and h != "epoch"}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InvalidInputError(f"history file '{path}', line {n}: {len(row)} values for "
                                    f"{len(header)} columns")
        for h, cell in zip(header, row):
            if h in out:
                try:
                    out[h].append(float(cell))
                except ValueError:
                    raise InvalidInputError(f"history file '{path}', line {n}: column {h!r} "
                                            f"is not a number: {cell!r}") from None
    return out


def _validate_history(data: Mapping, what: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for key, values in data.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"{what}: metric names must be strings, got {key!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
            raise InvalidInputError(f"{what}: {key!r} must be a list of per-epoch numbers, "
                                    f"got {type(values).__name__}")
        try:
            out[key] = [float(v) for v in values]
        except (TypeError, ValueError):
            raise InvalidInputError(f"{what}: {key!r} holds values that are not numbers") from None
    lengths = {len(v) for v in out.values()}
    if not out or lengths == {0}:
        raise InvalidInputError(f"{what} holds no epochs")
    if len(lengths) != 1:
        raise InvalidInputError(f"{what}: metrics have different numbers of epochs "
                                f"({', '.join(f'{k}: {len(v)}' for k, v in out.items())})")
    return out


def pick_metric(history: Mapping[str, Sequence[float]]) -> str:
    """The metric to explain: ``loss`` when ``val_loss`` is logged, else the first metric with a
    ``val_`` counterpart."""
    if "loss" in history and "val_loss" in history:
        return "loss"
    for key in history:
        if not key.startswith("val_") and f"val_{key}" in history:
            return key
    raise InvalidInputError("the history has no training metric with a validation counterpart "
                            f"(found: {', '.join(history) or 'nothing'}); fit with validation_data "
                            "or validation_split so that val_loss is logged")


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better (accuracy, AUC, ...), from its name."""
    name = metric.lower()
    return "loss" not in name and "error" not in name and any(t in name for t in _HIGHER_IS_BETTER)


def shift_half_epoch(train: Sequence[float]) -> np.ndarray:
    """Training metric moved from mid epoch (where its epoch average sits) to the epoch's end.

    Entry ``e`` of the result estimates the metric at the end of epoch ``e`` as the mean of the
    averages of epochs ``e`` and ``e + 1``; the last epoch is extrapolated linearly. With one
    epoch nothing can be shifted and the input is returned.

    Examples
    --------
    >>> shift_half_epoch([4.0, 2.0, 1.0]).tolist()
    [3.0, 1.5, 0.5]
    """
    t = np.asarray(train, dtype=np.float64)
    if t.size < 2:
        return t.copy()
    end = np.empty_like(t)
    end[:-1] = (t[:-1] + t[1:]) / 2
    end[-1] = t[-1] + (t[-1] - t[-2]) / 2
    return end


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Reason:
    """One possible reason, with what was found for it.

    Attributes
    ----------
    id : str
        One of :data:`REASON_IDS`.
    title : str
        One line for people.
    status : str
        ``found`` (evidence for it), ``possible`` (not checked: says what would check it) or
        ``ruled_out`` (checked, nothing found).
    score : float
        Ranking key in [0, 1]: the share of the gap when known, else a weight of the evidence.
    share : float or None
        Share of the last epoch's gap explained (may be negative or above 1 when measured
        effects overshoot), None when not quantified.
    measured : bool
        True when ``share`` was measured on the model and data, False when estimated.
    kinds : list of str
        Sub-kinds found (``dropout``, ``noise``, ``batchnorm``, ``L1``, ``L2``,
        ``label_smoothing``, ``leak``, ``shift``, ``easier``, layer names for augmentation).
    evidence : list of str
        What was found, one fact a line.
    """

    id: str
    title: str
    status: str
    score: float
    share: float | None = None
    measured: bool = False
    kinds: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"id": self.id, "title": self.title, "status": self.status,
                "score": round(self.score, 4),
                "share": None if self.share is None else round(self.share, 4),
                "measured": self.measured, "kinds": list(self.kinds),
                "evidence": list(self.evidence)}


_STATUS_ORDER = {"found": 0, "possible": 1, "ruled_out": 2}


@dataclass
class Explanation:
    """Why validation beats training, reasons ranked most likely first.

    Attributes
    ----------
    metric : str
        Metric explained (``loss`` unless only another metric has a validation counterpart).
    higher_is_better : bool
    epochs : int
    train, val, train_shifted : list of float
        The curves (``train_shifted``: training moved half an epoch later, see
        :func:`shift_half_epoch`).
    gap : float
        How much validation beats training at the last epoch (positive: validation better).
    val_better_epochs : int
        Epochs in which validation beats training.
    reasons : list of Reason
        Found reasons by score, then those not checked, then those ruled out.
    measurements : dict
        Numbers measured on the model and data (losses by mode, sample size), if any.
    notes : list of str
    """

    metric: str
    higher_is_better: bool
    epochs: int
    train: list[float]
    val: list[float]
    train_shifted: list[float]
    gap: float
    val_better_epochs: int
    reasons: list[Reason]
    measurements: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def val_beats_train(self) -> bool:
        """True when validation is better at the last epoch."""
        return self.gap > 0

    @property
    def top(self) -> Reason | None:
        """The most likely reason with evidence, or None."""
        found = [r for r in self.reasons if r.status == "found"]
        return found[0] if found else None

    def reason(self, rid: str) -> Reason:
        """The reason with id ``rid``."""
        for r in self.reasons:
            if r.id == rid:
                return r
        raise KeyError(rid)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "metric": self.metric, "higher_is_better": self.higher_is_better,
            "epochs": self.epochs, "gap": round(self.gap, 6),
            "val_beats_train": self.val_beats_train, "val_better_epochs": self.val_better_epochs,
            "train": self.train, "val": self.val,
            "train_shifted": [round(v, 6) for v in self.train_shifted],
            "reasons": [r.to_dict() for r in self.reasons],
            "measurements": self.measurements, "notes": list(self.notes),
        }

    def to_text(self) -> str:
        """The ranked explanation as plain text (what ``splitaudit explain`` prints)."""
        m, vm = self.metric, f"val_{self.metric}"
        last = self.epochs
        head = (f"Last epoch ({last}): {m} {self.train[-1]:.4g}, {vm} {self.val[-1]:.4g}; "
                f"validation better in {self.val_better_epochs} of {self.epochs} epochs.")
        if self.val_beats_train:
            head += f"\nValidation beats training by {self.gap:.4g}. Reasons, most likely first:"
        else:
            head += ("\nValidation does not beat training at the last epoch; nothing to explain. "
                     "What was checked:")
        lines = [head]
        n = 0
        for r in self.reasons:
            if r.status != "found":
                continue
            n += 1
            share = ""
            if r.share is not None:
                how = "measured" if r.measured else "estimated, not measured"
                share = f" - {100 * r.share:.0f}% of the gap ({how})"
            lines.append(f"{n:2d}. {r.title}{share}")
            lines += [f"      - {e}" for e in r.evidence]
        if n == 0:
            lines.append("    (no evidence for any known reason)")
        other = [r for r in self.reasons if r.status != "found"]
        if other:
            lines.append("Not found or not checked:")
            for r in other:
                label = "not checked" if r.status == "possible" else "ruled out"
                why = f": {r.evidence[0]}" if r.evidence else ""
                lines.append(f"    - {r.title} ({label}){why}")
        lines += [f"Note: {t}" for t in self.notes]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike) -> None:
        """Write a PNG: the curves as logged, and with training shifted half an epoch.

        Needs matplotlib (``pip install 'splitaudit[plot]'``); uses the Agg backend (no GUI).
        """
        write_plot(self, path)


# --------------------------------------------------------------------------------------------
# Model inspection (Keras imported only here, when a model is given)


@dataclass
class ModelFacts:
    """Training-only mechanisms found in a model's structure."""

    dropout: list[tuple[str, str, float]] = field(default_factory=list)  # (layer, class, rate)
    noise: list[tuple[str, str, float]] = field(default_factory=list)
    batchnorm: list[str] = field(default_factory=list)
    augmentation: list[tuple[str, str]] = field(default_factory=list)
    regularizers: list[tuple[str, str, str]] = field(default_factory=list)  # (layer, attr, kind)
    label_smoothing: float = 0.0
    penalty: float | None = None  # current value of the weight penalties in the loss

    @property
    def reg_kinds(self) -> list[str]:
        return sorted({k for _, _, k in self.regularizers})


def _walk_layers(model) -> list:
    out, stack, seen = [], list(getattr(model, "layers", [])), set()
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(layer)
        stack[:0] = list(getattr(layer, "layers", []) or [])
    return out


def _regularizer_kind(reg) -> str:
    cfg = {}
    try:
        cfg = reg.get_config() or {}
    except Exception:  # noqa: BLE001 - a custom regularizer without get_config
        pass
    l1, l2 = float(cfg.get("l1", 0.0) or 0.0), float(cfg.get("l2", 0.0) or 0.0)
    if l1 and l2:
        return "L1+L2"
    if l1:
        return "L1"
    if l2:
        return "L2"
    return type(reg).__name__


def inspect_model(model) -> ModelFacts:
    """Find dropout/noise, batch normalization, augmentation layers, regularizers and label
    smoothing in a Keras model (nested models included)."""
    facts = ModelFacts()
    for layer in _walk_layers(model):
        cls = type(layer).__name__
        name = getattr(layer, "name", cls)
        if cls in DROPOUT_LAYERS:
            facts.dropout.append((name, cls, float(getattr(layer, "rate", 0.0) or 0.0)))
        elif cls in NOISE_LAYERS:
            facts.noise.append((name, cls, float(getattr(layer, "stddev", 0.0) or 0.0)))
        elif cls == "BatchNormalization" and getattr(layer, "trainable", True):
            # A frozen BatchNormalization runs in inference mode in Keras 3, even in fit.
            facts.batchnorm.append(name)
        elif cls.startswith("Random") or cls in AUGMENTATION_LAYERS:
            facts.augmentation.append((name, cls))
        for attr in _REGULARIZER_ATTRS:
            reg = getattr(layer, attr, None)
            if reg is not None:
                facts.regularizers.append((name, attr, _regularizer_kind(reg)))
    loss = getattr(model, "loss", None)
    ls = getattr(loss, "label_smoothing", None)
    if ls is None and hasattr(loss, "get_config"):
        try:
            ls = loss.get_config().get("label_smoothing")
        except Exception:  # noqa: BLE001 - custom loss objects
            ls = None
    facts.label_smoothing = float(ls or 0.0)
    if facts.regularizers:
        try:
            facts.penalty = float(sum(float(np.asarray(v)) for v in model.losses))
        except Exception:  # noqa: BLE001 - models whose losses need a call first
            facts.penalty = None
    return facts


def _load_model(model):
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise InvalidInputError(f"model file '{path}' does not exist")
        import keras

        try:
            return keras.models.load_model(path, compile=True)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
            raise InvalidInputError(f"cannot load model '{path}': "
                                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return model


# --------------------------------------------------------------------------------------------
# Measurement on data


def _identity_call(inputs, *args, **kwargs):
    return inputs


class _Switched:
    """Temporarily replace the ``call`` of some layers by the identity."""

    def __init__(self, layers: list) -> None:
        self.layers = layers

    _MISSING = object()

    def __enter__(self):
        # Whatever the instance held before (usually nothing: the class's method) comes back.
        self.saved = [layer.__dict__.get("call", self._MISSING) for layer in self.layers]
        for layer in self.layers:
            layer.call = _identity_call
        return self

    def __exit__(self, *exc):
        for layer, old in zip(self.layers, self.saved):
            if old is self._MISSING:
                del layer.call
            else:
                layer.call = old
        return False


def measure_modes(model, x: np.ndarray, y: np.ndarray, *, batch_size: int = 32) -> dict[str, float]:
    """Loss of ``model`` on ``(x, y)`` with the training-only mechanisms switched on one by one.

    Returns ``{"train_mode", "no_augmentation", "no_dropout", "inference"}``: training mode with
    everything on; augmentation layers off; dropout/noise also off (only batch statistics
    left); inference mode. Each includes the model's penalties, as Keras' logged losses do. The
    model's variables (BatchNormalization moving statistics, seed states) are restored after.
    """
    layers = _walk_layers(model)
    aug = [lay for lay in layers
           if type(lay).__name__.startswith("Random") or type(lay).__name__ in AUGMENTATION_LAYERS]
    drop = [lay for lay in layers if type(lay).__name__ in DROPOUT_LAYERS + NOISE_LAYERS]
    saved = [v.numpy() for v in model.non_trainable_variables]

    def restore() -> None:
        for v, value in zip(model.non_trainable_variables, saved):
            v.assign(value)

    def loss(training: bool) -> float:
        # Same start for every pass (seed states, moving statistics): the passes then differ by
        # the switched layers, not by fresh random masks.
        restore()
        total = 0.0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            pred = model(xb, training=training)
            value = model.compute_loss(x=xb, y=yb, y_pred=pred, training=training)
            total += float(np.asarray(value)) * len(xb)
        return total / len(x)

    try:
        out = {"train_mode": loss(True)}
        with _Switched(aug):
            out["no_augmentation"] = loss(True) if aug else out["train_mode"]
            with _Switched(drop):
                out["no_dropout"] = loss(True) if drop else out["no_augmentation"]
        out["inference"] = loss(False)
    finally:
        restore()
    return out


def _sample(x, y, n: int, seed: int = 0):
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise invalid_param("data", "explain", "(x, y) with as many labels as samples",
                            f"{len(x)} samples and {len(y)} labels")
    if len(x) > n:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
        x, y = x[idx], y[idx]
    return x, y


def _load_split_images(root: str, split: str, model, max_samples: int, seed: int = 0):
    """(x, y) of up to ``max_samples`` images of one split of a dataset directory, resized to the
    model's input and labelled like Keras' ``image_dataset_from_directory`` (sorted class names);
    one-hot when the model's loss is a non-sparse categorical cross-entropy."""
    from PIL import Image

    from splitaudit.imaging import load_rgb
    from splitaudit.sources import discover

    samples = discover(root)
    rows = [s for s in samples.samples if s.split == split and s.abspath is not None]
    if not rows:
        return None
    classes = sorted({s.label for s in samples.samples if s.split == "train" and s.label is not None})
    if len(rows) > max_samples:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), max_samples, replace=False))
        rows = [rows[i] for i in pick]
    shape = model.input_shape
    h, w = (shape[1], shape[2]) if len(shape) == 4 else (None, None)
    if h is None or w is None:
        raise InvalidInputError("--data needs a model with a fixed image input shape (batch, H, W, C); "
                                f"this one takes {shape}")
    xs, ys = [], []
    for s in rows:
        try:
            rgb, _ = load_rgb(s.abspath, min_side=max(h, w))
        except DecodeError:  # unreadable files are the audit's business: skip them here
            continue
        xs.append(np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR), np.float32))
        ys.append(classes.index(s.label) if s.label in classes else 0)
    if not xs:
        return None
    x, y = np.stack(xs), np.asarray(ys)
    if shape[-1] == 1:
        x = x.mean(axis=-1, keepdims=True)
    loss = getattr(model, "loss", None)
    loss_name = (loss if isinstance(loss, str) else type(loss).__name__ if loss is not None else "").lower()
    out_dim = model.output_shape[-1] if model.output_shape else 1
    if "categorical" in loss_name and "sparse" not in loss_name and out_dim and out_dim > 1:
        y = np.eye(out_dim, dtype=np.float32)[y]
    elif out_dim == 1:
        y = y.astype(np.float32)[:, None]
    return x, y


# --------------------------------------------------------------------------------------------
# Report evidence


def _report_dict(report) -> dict | None:
    if report is None:
        return None
    if hasattr(report, "to_dict"):
        return report.to_dict()
    if isinstance(report, Mapping):
        return dict(report)
    if isinstance(report, (str, os.PathLike)):
        path = os.fspath(report)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as exc:
            raise InvalidInputError(f"cannot read report '{path}': {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidInputError(f"report '{path}' is not a JSON report "
                                    "(write one with: splitaudit scan DIR --format json -o report.json)") from None
        if not isinstance(data, Mapping) or "split_pairs" not in data:
            raise InvalidInputError(f"report '{path}' is not a splitaudit JSON report (no 'split_pairs')")
        return dict(data)
    raise invalid_param("report", "explain", "an AuditReport, its to_dict() or a JSON report path",
                        type(report).__name__)


_VAL_NAMES = ("val", "valid", "validation", "dev")
_LEAK_CHECKS = ("cross_split_duplicates", "within_split_duplicates", "unreadable_files", "label_conflicts")


def _split_evidence(rep: dict) -> tuple[float, list[str], list[str]]:
    """(severity in [0, 1], kinds, evidence lines) of a leaked, shifted or easier split."""
    severity, kinds, evidence = 0.0, [], []
    pairs = [p for p in rep.get("split_pairs", []) if p.get("reference_split") == "train"]
    pairs.sort(key=lambda p: (p.get("query_split") not in _VAL_NAMES, p.get("query_split", "")))
    for p in pairs[:1]:
        leaked, n = int(p.get("leaked_samples", 0) or 0), int(p.get("query_samples", 0) or 0)
        rate = leaked / n if n else 0.0
        if leaked:
            severity = max(severity, min(1.0, 0.3 + 0.7 * rate / FULL_LEAK_RATE))
            kinds.append("leak")
            evidence.append(f"audit: {leaked} of {n} {p.get('query_split')} samples ({100 * rate:.1f}%) "
                            f"copy a training sample ({p.get('exact', 0)} exact, {p.get('near', 0)} near): "
                            "the model has seen them, so they score like training data in inference mode")
        else:
            evidence.append(f"audit: no {p.get('query_split')} sample copies a training sample")
    for cid, check in (rep.get("checks") or {}).items():
        if cid in _LEAK_CHECKS or not isinstance(check, Mapping):
            continue
        status = check.get("status")
        if status in ("fail", "warn"):
            severity = max(severity, 0.6 if status == "fail" else 0.3)
            kind = "easier" if "difficult" in cid or "easier" in cid else "shift"
            if kind not in kinds:
                kinds.append(kind)
            evidence.append(f"audit check {cid} ({status}): {check.get('summary', '')}".rstrip(": "))
    return severity, kinds, evidence


# --------------------------------------------------------------------------------------------
# Ranking


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def explain(
    history: Any,
    model: Any = None,
    report: Any = None,
    *,
    data: Any = None,
    validation_data: Any = None,
    max_samples: int = 1024,
    batch_size: int = 32,
    config: Any = None,
) -> Explanation:
    """Rank the reasons why validation beats training, with the evidence found for each.

    Parameters
    ----------
    history : keras.callbacks.History, dict or path
        See :func:`load_history` (JSON file or ``CSVLogger`` CSV).
    model : keras.Model or path, optional
        The trained model (a ``.keras`` file is loaded): its layers, regularizers and loss are
        inspected; with ``data`` the training-only mechanisms are measured.
    report : AuditReport, dict or path, optional
        An audit of the same split (``splitaudit scan DIR --format json``).
    data : (x, y) or dataset directory, optional
        Training data. A directory (``train/``, ``val/`` with class folders) is also audited,
        hash-only, when no ``report`` is given; its ``val`` split then serves as
        ``validation_data``.
    validation_data : (x, y), optional
        Validation data, to check that ``model`` is the one whose last epoch is in ``history``.
    max_samples : int, default 1024
        Training samples used for the measurement (a random subset with a fixed seed).
    batch_size : int, default 32
        Batch size of the measurement (batch statistics depend on it; use fit's).
    config : AuditConfig, optional
        Settings of the audit run on a ``data`` directory (default: hash-only).

    Returns
    -------
    Explanation
    """
    if not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1:
        raise invalid_param("max_samples", "explain", "a positive int", max_samples)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise invalid_param("batch_size", "explain", "a positive int", batch_size)
    hist = load_history(history)
    metric = pick_metric(hist)
    hib = higher_is_better(metric)
    sign = -1.0 if hib else 1.0
    train = np.asarray(hist[metric], np.float64)
    val = np.asarray(hist[f"val_{metric}"], np.float64)
    shifted = shift_half_epoch(train)
    raw_gap = sign * (train - val)
    shift_gap = sign * (shifted - val)
    n = len(train)
    notes: list[str] = []
    if n < 2:
        notes.append("one epoch only: the half-epoch shift cannot be estimated")

    # Reason 2 from the curves alone, over the last third of training (at least one epoch).
    window = slice(n - max(1, math.ceil(n / 3)), n)
    mean_raw = float(raw_gap[window].mean())
    avg_share = 0.0
    if n >= 2 and mean_raw > 0:
        avg_share = float(np.clip((raw_gap[window] - shift_gap[window]).mean() / mean_raw, 0.0, 1.0))
    gap = float(raw_gap[-1])

    # Inputs beyond the history.
    model = _load_model(model) if model is not None else None
    facts = inspect_model(model) if model is not None else None
    train_xy = val_xy = None
    if isinstance(data, (str, os.PathLike)):
        root = os.fspath(data)
        if not os.path.isdir(root):
            raise InvalidInputError(f"data directory '{root}' does not exist")
        if report is None:
            from splitaudit.api import scan
            from splitaudit.config import AuditConfig

            report = scan(root, config=config or AuditConfig(embeddings=False))
            notes.append(f"audited {root} (hash-only) for reason 4")
        if model is not None:
            train_xy = _load_split_images(root, "train", model, max_samples)
            val_xy = _load_split_images(root, "val", model, max_samples)
    elif data is not None:
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise invalid_param("data", "explain", "(x, y) training arrays or a dataset directory",
                                type(data).__name__)
        train_xy = _sample(data[0], data[1], max_samples)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise invalid_param("validation_data", "explain", "(x, y) arrays", type(validation_data).__name__)
        val_xy = _sample(validation_data[0], validation_data[1], max_samples)
    rep = _report_dict(report)

    measurements: dict[str, Any] = {}
    if model is not None and train_xy is not None:
        if metric != "loss":
            notes.append(f"measurements need the loss; the history logs {metric} only")
        elif getattr(model, "loss", None) is None:
            notes.append("the model is not compiled (no loss): training-only effects are not measured")
        else:
            modes = measure_modes(model, *train_xy, batch_size=batch_size)
            measurements = {"samples": int(len(train_xy[0])), "batch_size": batch_size,
                            **{k: round(v, 6) for k, v in modes.items()}}
            if val_xy is not None:
                measurements["val_inference"] = round(measure_val(model, *val_xy, batch_size=batch_size), 6)

    reasons = _rank(metric, hib, train, val, shifted, gap, avg_share, facts, rep, measurements, notes)
    return Explanation(
        metric=metric, higher_is_better=hib, epochs=n, train=train.tolist(), val=val.tolist(),
        train_shifted=shifted.tolist(), gap=gap, val_better_epochs=int((raw_gap > 0).sum()),
        reasons=reasons, measurements=measurements, notes=notes,
    )


def measure_val(model, x: np.ndarray, y: np.ndarray, *, batch_size: int = 32) -> float:
    """Inference-mode loss of ``model`` on ``(x, y)`` (as ``val_loss`` is computed)."""
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        pred = model(xb, training=False)
        total += float(np.asarray(model.compute_loss(x=xb, y=yb, y_pred=pred, training=False))) * len(xb)
    return total / len(x)


def _structure_evidence(facts: ModelFacts | None, ev: dict, kinds: dict) -> float:
    """Fill evidence and kinds from the model's structure; return the dropout/noise weight
    used to attribute an unmeasured gap."""
    drop_w = 0.0
    if facts is None:
        return drop_w
    for name, cls, rate in facts.dropout:
        ev["regularization"].append(f"{cls}(rate={rate:g}) layer '{name}': drops units in fit, not in evaluation")
        drop_w += rate
    if facts.dropout:
        kinds["regularization"].append("dropout")
    for name, cls, std in facts.noise:
        ev["regularization"].append(f"{cls}(stddev={std:g}) layer '{name}': noise in fit only")
    if facts.noise:
        kinds["regularization"].append("noise")
        drop_w += 0.3 * len(facts.noise)
    if facts.batchnorm:
        kinds["regularization"].append("batchnorm")
        ev["regularization"].append(
            f"{len(facts.batchnorm)} BatchNormalization layer(s): batch statistics in fit, "
            "moving statistics in evaluation")
    for k in facts.reg_kinds:
        kinds["regularization"].append(k)
        where = [f"{lay}.{attr}" for lay, attr, kk in facts.regularizers if kk == k]
        pen = f"; penalty now {facts.penalty:.4g}" if facts.penalty is not None else ""
        ev["regularization"].append(
            f"{k} regularizer on {', '.join(where[:4])}{' ...' if len(where) > 4 else ''}{pen}. "
            "Keras 3 adds the penalty to val_loss too, so it lowers val_loss only by falling "
            "while loss is averaged over the epoch")
    if facts.label_smoothing:
        kinds["regularization"].append("label_smoothing")
        ev["regularization"].append(
            f"label smoothing {facts.label_smoothing:g} in the loss: raises the loss floor of "
            "both curves (Keras applies it to val_loss too)")
    for name, cls in facts.augmentation:
        ev["augmentation"].append(f"{cls} layer '{name}': transforms samples in fit only")
    kinds["augmentation"] = sorted({cls for _, cls in facts.augmentation})
    return drop_w


def _over_regularization(m: str, hib: bool, train, val, shifted, gap: float,
                         facts: ModelFacts | None, ev: dict, scores: dict, found: dict) -> None:
    """Reason 5: validation still better after the shift, and little progress."""
    n = len(train)
    vm = f"val_{m}"
    sgap = (-1.0 if hib else 1.0) * (shifted - val)
    win = sgap[n - max(1, math.ceil(n / 3)):]
    still = n >= 2 and gap > 0 and float((win > 0).mean()) >= 2 / 3
    # "Still high": the loss has not halved since the first epoch (for a score such as
    # accuracy: it has not come half way from the first epoch to 1).
    if hib:
        high = float(train[-1] - train[0]) < 0.5 * (1.0 - float(train[0]))
    else:
        high = float(val[-1]) > 0.5 * float(train[0])
    reg_present = facts is not None and bool(facts.dropout or facts.noise or facts.regularizers)
    if still and high:
        found["over_regularization"] = True
        scores["over_regularization"] = 0.25 + (0.15 if reg_present else 0.0)
        ev["over_regularization"].append(
            f"{vm} stays better than the half-epoch-shifted {m} in {int((win > 0).sum())} of the last "
            f"{len(win)} epoch(s)")
        ev["over_regularization"].append(
            f"{m} is still high: {train[-1]:.4g} at the end vs {train[0]:.4g} after the first epoch"
            + ("; weaker dropout/penalties may fit better" if reg_present else ""))
    elif still:
        ev["over_regularization"].append(f"the losses fell well ({train[0]:.4g} -> {train[-1]:.4g})")
    else:
        ev["over_regularization"].append(f"the gap does not persist once {m} is shifted half an epoch")


def _rank(metric, hib, train, val, shifted, gap, avg_share, facts: ModelFacts | None,
          rep: dict | None, meas: dict, notes: list[str]) -> list[Reason]:
    m, vm = metric, f"val_{metric}"
    n = len(train)
    measured = bool(meas) and gap > 0
    reasons: dict[str, Reason] = {}
    # Evidence lines per reason, filled below.
    ev: dict[str, list[str]] = {r: [] for r in REASON_IDS}
    kinds: dict[str, list[str]] = {r: [] for r in REASON_IDS}

    drop_w = _structure_evidence(facts, ev, kinds)

    # Share of the averaging effect carried by a falling weight penalty (estimate: its share
    # of the end-of-training loss). Only meaningful for the loss.
    pen_frac = 0.0
    if facts is not None and facts.penalty is not None and metric == "loss":
        end_loss = meas.get("train_mode", float(shifted[-1]))
        if end_loss > 0:
            pen_frac = float(np.clip(facts.penalty / end_loss, 0.0, 1.0))

    split_sev, split_kinds, split_ev = (0.0, [], [])
    if rep is not None:
        split_sev, split_kinds, split_ev = _split_evidence(rep)
    kinds["split"] = list(split_kinds)
    ev["split"] = list(split_ev)

    shares: dict[str, float | None] = {r: None for r in REASON_IDS}
    scores: dict[str, float] = {r: 0.0 for r in REASON_IDS}
    found: dict[str, bool] = {r: False for r in REASON_IDS}

    a_line = (f"half-epoch shift: {m} moved to the epoch's end is {shifted[-1]:.4g} at the last epoch "
              f"(logged {train[-1]:.4g}) vs {vm} {val[-1]:.4g}")
    if measured:
        g = gap
        a = float(train[-1] - shifted[-1])
        a_pen = a * pen_frac
        t_aug = meas["train_mode"] - meas["no_augmentation"]
        t_drop = meas["no_augmentation"] - meas["no_dropout"]
        t_bn = meas["no_dropout"] - meas["inference"]
        s = meas["inference"] - float(val[-1])
        closure = g - (a + t_aug + t_drop + t_bn + s)
        shares.update(epoch_averaging=(a - a_pen) / g, augmentation=t_aug / g,
                      regularization=(t_drop + t_bn + a_pen) / g, split=s / g)
        ev["epoch_averaging"].insert(0, a_line)
        size = f"{meas['samples']} training samples"
        line = (f"measured on {size}: loss {meas['train_mode']:.4g} in training mode, "
                f"{meas['no_augmentation']:.4g} without augmentation, {meas['no_dropout']:.4g} "
                f"also without dropout/noise, {meas['inference']:.4g} in inference mode")
        if facts is not None and (facts.dropout or facts.noise or facts.batchnorm):
            ev["regularization"].append(line + f" (dropout/noise {t_drop:+.4g}, batch statistics {t_bn:+.4g})")
        if facts is not None and facts.augmentation:
            ev["augmentation"].append(line + f" (augmentation {t_aug:+.4g})")
        if a_pen:
            ev["regularization"].append(f"estimated {a_pen:.4g} of the epoch-averaging effect is the "
                                        f"penalty falling ({_pct(pen_frac)} of the loss is penalty)")
        ev["split"].append(f"final model, inference mode: training loss {meas['inference']:.4g} vs "
                           f"{vm} {val[-1]:.4g} ({'validation easier' if s > 0 else 'validation harder'})")
        if "val_inference" in meas:
            vi = meas["val_inference"]
            ok = abs(vi - val[-1]) <= 0.1 * max(abs(val[-1]), 1e-6)
            notes.append(f"the model's {vm} on the validation data is {vi:.4g} (logged {val[-1]:.4g}): "
                         + ("it is the model of the last epoch" if ok else
                            "not the last epoch's model (restored best weights?): shares are approximate"))
        if abs(closure) > 0.25 * abs(g):
            notes.append(f"{_pct(closure / g)} of the gap is not accounted for by the measurements "
                         "(sampling noise, or the model is not the last epoch's)")
        for r in ("epoch_averaging", "augmentation", "regularization"):
            scores[r] = float(np.clip(shares[r], 0.0, 1.0))
        found["epoch_averaging"] = shares["epoch_averaging"] > 0.05
        found["augmentation"] = bool(facts and facts.augmentation) and shares["augmentation"] > 0.05
        found["regularization"] = shares["regularization"] > 0.05 and bool(
            facts and (facts.dropout or facts.noise or facts.batchnorm or facts.regularizers))
        scores["split"] = max(split_sev, float(np.clip(shares["split"], 0.0, 1.0)))
        found["split"] = split_sev > 0 or shares["split"] > 0.2
        if shares["split"] > 0.2 and "easier" not in kinds["split"]:
            kinds["split"].append("easier")
    else:
        # From the curves and the structure only: reason 2 is measured on the curves, the rest
        # of the gap is attributed to the mechanisms present, in proportion to rough weights.
        a_share = avg_share * (1.0 - pen_frac)
        shares["epoch_averaging"] = a_share
        scores["epoch_averaging"] = a_share
        found["epoch_averaging"] = a_share > 0.05
        mean_shift = float(train[-1] - shifted[-1])
        ev["epoch_averaging"].insert(0, a_line)
        if n >= 2 and gap > 0:
            ev["epoch_averaging"].append(
                f"the shift removes {_pct(avg_share)} of the gap over the last {max(1, math.ceil(n / 3))} "
                "epoch(s)" + (f"; {_pct(pen_frac)} of that is credited to the weight penalty falling "
                              "(regularization)" if pen_frac else ""))
        residual = max(0.0, 1.0 - avg_share)
        weights: dict[str, float] = {}
        if facts is not None:
            w = drop_w + (0.5 if facts.batchnorm else 0.0)
            if w > 0:
                weights["regularization"] = 1.0 + w
            if facts.augmentation:
                weights["augmentation"] = 1.0 + 0.2 * (len(facts.augmentation) - 1)
        if split_sev > 0:
            weights["split"] = 1.0 + 4.0 * split_sev
        total = sum(weights.values())
        for r, w in weights.items():
            # Attributed, not measured: the gap left after the shift, split by rough weights.
            scores[r] = residual * w / total
            if gap > 0:
                shares[r] = scores[r]
        if pen_frac:
            shares["regularization"] = (shares["regularization"] or 0.0) + avg_share * pen_frac
            scores["regularization"] += avg_share * pen_frac
            ev["regularization"].append(f"estimated: {_pct(pen_frac)} of the loss is the weight penalty, "
                                        f"so about that part of the epoch-averaging effect "
                                        f"({mean_shift:.4g} at the last epoch) is the penalty falling")
        if facts is not None:
            found["regularization"] = bool(facts.dropout or facts.noise or facts.batchnorm or facts.regularizers)
            found["augmentation"] = bool(facts.augmentation)
        found["split"] = split_sev > 0
        if split_sev > 0:
            scores["split"] = max(scores["split"], split_sev)

    _over_regularization(m, hib, train, val, shifted, gap, facts, ev, scores, found)

    titles = {
        "regularization": "Regularization active only in training",
        "epoch_averaging": f"{m} is averaged over each epoch while {vm} is measured at its end",
        "augmentation": "Augmentation layers transform training samples only",
        "split": "Leaked, shifted or easier validation split",
        "over_regularization": "Possible over-regularization (gap persists, both losses high)",
    }
    for r in REASON_IDS:
        title = titles[r]
        if kinds[r] and r in ("regularization", "augmentation", "split"):
            title += f" ({', '.join(kinds[r])})"
        if found[r]:
            status = "found"
        elif r == "split" and rep is None:
            # A measurement cannot rule out copies: they score like training samples.
            status = "possible"
            ev[r] = ["pass an audit report (--report) or the dataset (--data)"] + ev[r]
        elif r in ("regularization", "augmentation") and facts is None:
            status = "possible"
            ev[r] = ["pass the model (--model) to inspect its layers"]
        else:
            status = "ruled_out"
            if not ev[r]:
                ev[r] = ["no such layers in the model" if r in ("regularization", "augmentation")
                         else "nothing found"]
        reasons[r] = Reason(id=r, title=title, status=status,
                            score=float(scores[r]) if status == "found" else 0.0,
                            share=shares[r], measured=_is_measured(r, measured, shares[r], facts),
                            kinds=kinds[r], evidence=ev[r])
    # Ties: a leaked split first (its validation score means nothing), the cause of the
    # curves' shape before their timing.
    return sorted(reasons.values(), key=lambda r: (_STATUS_ORDER[r.status], -r.score,
                                                   _TIE_ORDER.index(r.id)))


_TIE_ORDER = ("split", "regularization", "augmentation", "epoch_averaging", "over_regularization")


def _is_measured(rid: str, measured: bool, share: float | None, facts: ModelFacts | None) -> bool:
    if not measured or share is None or rid == "over_regularization":
        return False
    if rid == "regularization":
        # The weight-penalty part is an estimate; only layer effects are measured.
        return facts is not None and bool(facts.dropout or facts.noise or facts.batchnorm)
    return True


# --------------------------------------------------------------------------------------------
# Plot


def write_plot(expl: Explanation, path: str | os.PathLike) -> None:
    """PNG of the curves as logged and with training shifted half an epoch (matplotlib, Agg)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError:
        raise InvalidInputError("--plot needs matplotlib: pip install 'splitaudit[plot]' "
                                "(or pip install matplotlib)") from None
    m = expl.metric
    epochs = np.arange(1, expl.epochs + 1)
    fig = Figure(figsize=(10, 4), dpi=100)
    left, right = fig.subplots(1, 2, sharey=True)
    left.plot(epochs, expl.train, "o-", label=f"{m} (epoch mean)")
    left.plot(epochs, expl.val, "s-", label=f"val_{m} (epoch end)")
    left.set_title("as logged")
    right.plot(epochs - 0.5, expl.train, "o-", alpha=0.35, label=f"{m} at mid epoch")
    right.plot(epochs, expl.train_shifted, "o--", label=f"{m} shifted to epoch end")
    right.plot(epochs, expl.val, "s-", label=f"val_{m}")
    right.set_title("training shifted half an epoch")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel(m)
    top = expl.top
    if top is not None:
        fig.suptitle(f"most likely: {top.title}", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(os.fspath(path), format="png")
    except OSError as exc:
        raise InvalidInputError(f"cannot write plot '{os.fspath(path)}': {exc.strerror}") from None
