"""splitaudit.keras: the LeakageCheck callback in real model.fit runs, the fit wrapper, and
the ordered-data check for validation_split."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from splitaudit.config import AuditConfig
from splitaudit.errors import InvalidInputError, LeakageError
from splitaudit.keras import (
    LeakageWarning,
    OrderedDataWarning,
    check_validation_split,
    held_out_split,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
import splitaudit.keras as sk  # noqa: E402 - after the Keras skip

HASH_ONLY = AuditConfig(embeddings=False)


def images(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Distinct smooth random colour fields (an 8 x 8 grid upsampled) and random labels: no two
    look alike, so every copy the audit finds is a planted one."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    grids = rng.uniform(0, 255, size=(n, 8, 8, 3)).astype(np.uint8)
    x = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BICUBIC)) for g in grids])
    return x, rng.integers(0, 2, size=n).astype("int64")


def model(size: int = 16):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Rescaling(1 / 255),
                          keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    m.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    return m


@pytest.fixture(scope="module")
def data():
    x, y = images(240, 0)
    xv, yv = images(60, 1)  # distinct images: a clean split
    leaked_x, leaked_y = xv.copy(), yv.copy()
    leaked_x[:12], leaked_y[:12] = x[100:112], y[100:112]  # 12 validation copies of training images
    return (x, y), (xv, yv), (leaked_x, leaked_y)


# ------------------------------------------------------------------------------ the callback


def test_callback_raises_on_leaked_validation_data_before_training(data):
    (x, y), _, leaked = data
    m = model()
    check = sk.LeakageCheck(train=(x, y), validation_data=leaked, config=HASH_ONLY)
    with pytest.raises(LeakageError, match="12 of 60 val samples"):
        m.fit(x, y, validation_data=leaked, epochs=2, verbose=0, callbacks=[check])
    assert int(m.optimizer.iterations.numpy()) == 0  # stopped before the first step
    rows = {(p.query.index, p.reference.index) for p in check.report.cross_split_duplicates
            if p.match == "exact"}
    assert rows == {(i, 100 + i) for i in range(12)}  # exactly the planted copies


def test_callback_passes_a_clean_split_and_training_runs(data):
    (x, y), clean, _ = data
    m = model()
    check = sk.LeakageCheck(train=(x, y), validation_data=clean, config=HASH_ONLY)
    hist = m.fit(x, y, validation_data=clean, epochs=2, verbose=0, callbacks=[check])
    assert len(hist.history["val_loss"]) == 2
    assert check.report.verdict.status == "ok"
    assert not [p for p in check.report.cross_split_duplicates if p.match in ("exact", "near")]


def test_on_leak_warn_trains_on(data):
    (x, y), _, leaked = data
    m = model()
    check = sk.LeakageCheck(train=(x, y), validation_data=leaked, on_leak="warn", config=HASH_ONLY)
    with pytest.warns(LeakageWarning, match="12 of 60"):
        hist = m.fit(x, y, validation_data=leaked, epochs=1, verbose=0, callbacks=[check])
    assert len(hist.history["loss"]) == 1


def test_max_leak_rate_and_fail_on_never(data):
    (x, y), _, leaked = data
    for kwargs in ({"max_leak_rate": 0.25}, {"fail_on": "never"}):
        check = sk.LeakageCheck(train=(x, y), validation_data=leaked, config=HASH_ONLY, **kwargs)
        model().fit(x, y, validation_data=leaked, epochs=1, verbose=0, callbacks=[check])
        exact = [p for p in check.report.cross_split_duplicates if p.match == "exact"]
        assert len(exact) == 12  # found, but allowed


def test_bare_callback_in_model_fit_says_how_to_give_it_the_data(data):
    (x, y), clean, _ = data
    with pytest.raises(InvalidInputError, match="splitaudit.keras.fit"):
        model().fit(x, y, validation_data=clean, epochs=1, verbose=0, callbacks=[sk.LeakageCheck()])


def test_parameters_are_validated():
    with pytest.raises(InvalidInputError, match="'on_leak' parameter of LeakageCheck"):
        sk.LeakageCheck(on_leak="ignore")
    with pytest.raises(InvalidInputError, match="'fail_on' parameter of LeakageCheck"):
        sk.LeakageCheck(fail_on="always")
    with pytest.raises(InvalidInputError, match="'validation_data' parameter"):
        sk.LeakageCheck(train=np.zeros((4, 8, 8, 3)))
    with pytest.raises(InvalidInputError, match="'validation_split' parameter"):
        sk.LeakageCheck.for_fit(np.zeros((4, 8, 8, 3)), validation_split=1.5)


# ------------------------------------------------------------------------------ fit wrapper


def test_fit_wrapper_audits_exactly_the_validation_split_tail(data):
    (x, y), _, _ = data
    # Tail (last 20% = 48 samples) holds 6 copies of head samples; Keras holds these out.
    xs, ys = x.copy(), y.copy()
    xs[-6:], ys[-6:] = x[:6], y[:6]
    with pytest.raises(LeakageError, match="6 of 48 val samples"):
        sk.fit(model(), xs, ys, validation_split=0.2, epochs=1, verbose=0, config=HASH_ONLY)
    hist = sk.fit(model(), x, y, validation_split=0.2, epochs=1, verbose=0, config=HASH_ONLY)
    assert "val_loss" in hist.history


def test_fit_wrapper_binds_a_bare_callback(data):
    (x, y), _, leaked = data
    check = sk.LeakageCheck(on_leak="warn", config=HASH_ONLY)
    with pytest.warns(LeakageWarning):
        sk.fit(model(), x, y, validation_data=leaked, epochs=1, verbose=0, callbacks=[check])
    assert check.report is not None and check.report.verdict.status == "leaked"


def test_fit_wrapper_needs_a_validation_set(data):
    (x, y), _, _ = data
    with pytest.raises(InvalidInputError, match="validation_split > 0"):
        sk.fit(model(), x, y, epochs=1, verbose=0)


def test_held_out_split_is_what_keras_validates_on():
    """Keras' own validation loss (no learning: lr 0) equals the loss on our held-out part."""
    x, y = images(101, 3)  # 101 * 0.7 = 70.7: the floor matters
    m = model()
    m.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    hist = m.fit(x, y, validation_split=0.3, epochs=1, verbose=0, shuffle=False)
    (xt, yt), (xv, yv) = held_out_split(x, y, 0.3)
    assert len(xt) == 70 and len(xv) == 31
    assert np.shares_memory(xv, x)  # a view, not a copy
    assert m.evaluate(xv, yv, verbose=0) == pytest.approx(hist.history["val_loss"][0], rel=1e-5)


def test_tf_data_inputs(data):
    tf = pytest.importorskip("tensorflow")
    (x, y), clean, leaked = data
    train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    leaked_ds = tf.data.Dataset.from_tensor_slices(leaked).batch(32)
    clean_ds = tf.data.Dataset.from_tensor_slices(clean).batch(32)
    with pytest.raises(LeakageError, match="12 of 60"):
        sk.fit(model(), train_ds, validation_data=leaked_ds, epochs=1, verbose=0, shuffle=False,
               config=HASH_ONLY)
    hist = sk.fit(model(), train_ds, validation_data=clean_ds, epochs=1, verbose=0, shuffle=False,
                  config=HASH_ONLY)
    assert len(hist.history["val_loss"]) == 1


# ------------------------------------------------------------------------------ validation_split order


def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [w for w in caught if issubclass(w.category, OrderedDataWarning)]


def test_label_sorted_arrays_are_flagged_and_shuffled_are_not():
    x, y = images(600, 5)
    order = np.argsort(y, kind="stable")
    _, flagged = _caught(lambda: check_validation_split(x[order], y[order], 0.2))
    assert len(flagged) == 1
    msg = str(flagged[0].message)
    assert "last 20%" in msg and "shuffle" in msg.lower()
    perm = np.random.default_rng(0).permutation(len(y))
    result, clean = _caught(lambda: check_validation_split(x[perm], y[perm], 0.2))
    assert clean == [] and result.p_value > 1e-3


def test_grouped_labels_and_one_hot_are_flagged():
    # Blocks of 20 equal labels cycling through 5 classes: the tail is representative in its
    # class mix but the grouping still marks ordered data (e.g. concatenated files).
    y = np.repeat(np.tile(np.arange(5), 6), 20)
    onehot = np.eye(5)[y]
    _, flagged = _caught(lambda: check_validation_split(None, onehot, 0.2))
    assert len(flagged) == 1 and "grouped" in str(flagged[0].message)


def test_a_trend_along_the_order_is_flagged():
    x, y = images(600, 6)
    rng = np.random.default_rng(1)
    drift = np.linspace(0, 80, len(x)).astype(np.uint8)  # e.g. recorded as the light changed
    x = np.clip(x.astype(int) - 80 + drift[:, None, None, None], 0, 255).astype(np.uint8)
    y = rng.permutation(y)
    _, flagged = _caught(lambda: check_validation_split(x, y, 0.2))
    assert len(flagged) == 1 and "trends" in str(flagged[0].message)


def test_for_fit_with_validation_split_checks_the_order(data):
    (x, y), _, _ = data
    order = np.argsort(y, kind="stable")
    check = sk.LeakageCheck.for_fit(x[order], y[order], validation_split=0.2, config=HASH_ONLY)
    with pytest.warns(OrderedDataWarning):
        model().fit(x[order], y[order], validation_split=0.2, epochs=1, verbose=0, callbacks=[check])
    assert check.order_result is not None and check.order_result.p_value < 1e-3


def test_splitaudit_exports():
    import splitaudit

    assert splitaudit.check_validation_split is check_validation_split
    assert splitaudit.OrderedDataWarning is OrderedDataWarning
    assert issubclass(OrderedDataWarning, UserWarning)
