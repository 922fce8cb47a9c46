"""splitaudit.audit() on tf.data pipelines (streamed, never materialised) and leak-adjusted
metrics of a tiny Keras model (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from splitaudit import AuditConfig, InvalidInputError, audit  # noqa: E402
from splitaudit.render.text import render_text  # noqa: E402
from splitaudit.sources.arrays import CHUNK  # noqa: E402
from splitaudit.synth import photo_array  # noqa: E402

HASH_ONLY = AuditConfig(embeddings=False)


photos = photo_array


@pytest.fixture(scope="module")
def images():
    train = photos(300, seed=1)
    val = photos(80, seed=2)
    val[4] = train[250]
    val[33] = train[7, :, ::-1]  # mirrored copy
    val[79] = train[123]
    return train, val, {(4, 250): "exact", (33, 7): "near", (79, 123): "exact"}


def _leaks(report) -> dict[tuple[int, int], str]:
    return {(p.query.index, p.reference.index): p.match
            for p in report.cross_split_duplicates if p.match in ("exact", "near")}


def test_batched_xy_dataset_with_one_hot_labels(images):
    train, val, planted = images
    y_train = np.arange(len(train)) % 5
    y_val = np.arange(len(val)) % 5
    ds_train = tf.data.Dataset.from_tensor_slices((train, y_train)).batch(32)
    ds_val = tf.data.Dataset.from_tensor_slices((val.astype(np.float32) / 255,
                                                 tf.one_hot(y_val, 5))).batch(16)
    report = audit(ds_train, ds_val, config=HASH_ONLY)
    assert _leaks(report) == planted
    assert report.splits == {"train": 300, "val": 80}
    pair = next(p for p in report.cross_split_duplicates if p.query.index == 4)
    assert (pair.query.label, pair.reference.label) == (str(y_val[4]), str(y_train[250]))
    assert pair.query.path is None and pair.to_dict()["query"]["index"] == 4
    assert "val[4]" in render_text(report)


def test_unbatched_x_only_and_grey_datasets(images):
    train, val, planted = images
    report = audit(tf.data.Dataset.from_tensor_slices(train), tf.data.Dataset.from_tensor_slices(val),
                   config=HASH_ONLY)
    assert _leaks(report) == planted
    grey = np.array([0.299, 0.587, 0.114], np.float32)
    g_train = (train @ grey).round().astype(np.uint8)
    g_val = (val @ grey).round().astype(np.uint8)
    report = audit(tf.data.Dataset.from_tensor_slices(g_train).batch(50),  # (B, H, W) batches
                   tf.data.Dataset.from_tensor_slices(g_val[..., None]),    # (H, W, 1) elements
                   config=HASH_ONLY)
    assert set(_leaks(report)) == set(planted)


def test_generator_pipeline_is_streamed_in_bounded_chunks(images):
    """A generator-backed dataset far larger than a chunk: the audit never pulls more than
    about one chunk ahead of what it has fingerprinted (it never materialises the dataset)."""
    train, val, _ = images
    n, batch = 1400, 25
    rng = np.random.default_rng(5)
    state = {"yielded": 0, "fingerprinted": 0, "ahead": 0, "passes": 0}

    def make(i: int) -> np.ndarray:
        # Distinct smooth images, cheap to make: 6x6 random colours, upsampled.
        small = (np.random.default_rng(1000 + i).random((6, 6, 3)) * 255).astype(np.uint8)
        return np.asarray(Image.fromarray(small).resize((32, 32), Image.Resampling.BICUBIC))

    planted_at = {1234: 17, 1399: 250}  # generator index -> train index it copies

    def gen():
        state["passes"] += 1
        for i in range(n):
            state["ahead"] = max(state["ahead"], state["yielded"] - state["fingerprinted"])
            state["yielded"] += 1
            img = train[planted_at[i]] if i in planted_at else make(i)
            yield img, np.int64(rng.integers(0, 3))

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=(tf.TensorSpec((32, 32, 3), tf.uint8), tf.TensorSpec((), tf.int64)),
    ).batch(batch)
    # TF's own prefetching (autotuned, injected by default) would pull batches ahead in a
    # background thread; turn it off so the bound below measures splitaudit's buffering only.
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    ds = ds.with_options(options)

    def progress(stage, done, total):
        if stage == "fingerprint" and done > len(train):
            state["fingerprinted"] = done - len(train)

    report = audit(train, ds, config=HASH_ONLY, progress=progress, checks=["cross_split_duplicates"])
    found = {(p.query.index, p.reference.index) for p in report.cross_split_duplicates
             if p.match == "exact"}
    assert found == {(1234, 17), (1399, 250)}
    assert report.splits == {"train": 300, "val": n}
    assert state["yielded"] == n and state["passes"] == 1
    # Never more than one chunk plus a batch or two ahead of the fingerprinting.
    assert state["ahead"] <= CHUNK + 2 * batch
    assert n > 4 * (CHUNK + 2 * batch)  # so holding everything would have broken the bound


def test_tabular_dataset_of_rows():
    rng = np.random.default_rng(6)
    train = rng.normal(size=(800, 6)).astype(np.float32)
    val = rng.normal(size=(100, 6)).astype(np.float32)
    val[9] = train[321]
    val[10] = train[5] + 0.01
    labels = rng.integers(0, 2, 100)
    report = audit(train, tf.data.Dataset.from_tensor_slices((val, labels)).batch(32))
    assert _leaks(report) == {(9, 321): "exact", (10, 5): "near"}
    assert report.layout == "tabular"
    assert report.cross_split_duplicates[0].query.label == str(labels[9])


def test_bad_datasets_get_one_clear_message(images):
    train, _, _ = images
    dict_ds = tf.data.Dataset.from_tensor_slices({"image": train[:10]})
    with pytest.raises(InvalidInputError, match="The 'val' parameter of audit must be a tf.data.Dataset "
                                                "of x or \\(x, y\\) elements"):
        audit(train, dict_ds, config=HASH_ONLY)
    with pytest.raises(InvalidInputError, match="The 'labels' parameter of audit"):
        audit(train, tf.data.Dataset.from_tensor_slices(train[:10]), labels={"val": np.zeros(10)},
              config=HASH_ONLY)
    neg = tf.data.Dataset.from_tensor_slices(train[:10].astype(np.float32) - 128.0)
    with pytest.raises(InvalidInputError, match="The 'val' parameter of audit must be images with values"):
        audit(train, neg, config=HASH_ONLY)
    str_ds = tf.data.Dataset.from_tensor_slices(["a", "b"])
    with pytest.raises(InvalidInputError, match="dtype"):
        audit(train, str_ds, config=HASH_ONLY)


# --------------------------------------------------------------------------------------------
# Leak-adjusted metrics
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leaked_model_data():
    """A model that memorised random labels; val holds 30 copies of train samples + 50 new."""
    keras.utils.set_random_seed(0)
    train = photos(120, seed=11, size=16)
    fresh = photos(50, seed=12, size=16)
    rng = np.random.default_rng(0)
    y_train = rng.integers(0, 4, len(train))
    copied = np.arange(0, 120, 4)  # 30 train samples copied into val
    x_val = np.concatenate([train[copied], fresh])
    y_val = np.concatenate([y_train[copied], rng.integers(0, 4, len(fresh))])
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, y_train, epochs=60, batch_size=32, verbose=0)
    return model, train, y_train, x_val, y_val, len(copied)


def test_leak_adjusted_metrics_on_arrays(leaked_model_data):
    model, train, y_train, x_val, y_val, n_copied = leaked_model_data
    report = audit((train, y_train), (x_val, y_val), config=HASH_ONLY, model=model)
    adj = report.leak_adjusted
    assert adj["removed"] == n_copied
    assert adj["evaluated"] == {"full": len(x_val), "leak_free": len(x_val) - n_copied}
    # The memorised copies inflate the full score; the leak-free score is that of new samples.
    assert adj["leak_free"]["accuracy"] < adj["full"]["accuracy"] - 0.2
    direct = model.evaluate(x_val[n_copied:], y_val[n_copied:], verbose=0, return_dict=True)
    assert adj["leak_free"]["accuracy"] == pytest.approx(direct["accuracy"], abs=1e-6)
    assert report.to_dict()["leak_adjusted"]["removed"] == n_copied
    text = render_text(report)
    assert "Leak-adjusted metrics: 30 leaked val samples removed" in text and "accuracy" in text


def test_leak_adjusted_metrics_on_tf_data(leaked_model_data):
    model, train, y_train, x_val, y_val, n_copied = leaked_model_data
    ds_val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(16)
    report = audit((train, y_train), ds_val, config=HASH_ONLY, model=model)
    adj = report.leak_adjusted
    assert adj["removed"] == n_copied
    direct = model.evaluate(x_val[n_copied:], y_val[n_copied:], verbose=0, return_dict=True)
    assert adj["leak_free"]["accuracy"] == pytest.approx(direct["accuracy"], abs=1e-6)
    assert adj["full"]["accuracy"] > adj["leak_free"]["accuracy"]


def test_model_needs_labelled_val(leaked_model_data):
    model, train, y_train, x_val, _, _ = leaked_model_data
    with pytest.raises(InvalidInputError, match="The 'val' parameter of audit must be \\(x_val, y_val\\)"):
        audit(train, x_val, config=HASH_ONLY, model=model)
    with pytest.raises(InvalidInputError, match="compiled Keras model"):
        audit(train, (x_val, np.zeros(len(x_val))), config=HASH_ONLY,
              model=keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten()]))


def test_with_cnn_embeddings(images, random_weights):
    """The CNN path: embeddings computed per chunk, same planted pairs found."""
    train, val, planted = images
    config = AuditConfig(weights=str(random_weights), input_size=32, require_embeddings=True,
                         checks=("cross_split_duplicates",))
    report = audit(train, tf.data.Dataset.from_tensor_slices(val).batch(8), config=config)
    assert _leaks(report) == planted
    assert report.settings["embedder"] is not None
    assert all(p.cosine is not None for p in report.cross_split_duplicates)
