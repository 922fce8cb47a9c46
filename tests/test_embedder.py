"""Tests of splitaudit.fingerprints.embedder: weights resolution, loading checks and embeddings.

Everything runs on a tiny randomly initialised MobileNetV2 at input size 32 saved by the tests
themselves; only the last test uses the real ImageNet weights from ../shared (skipped without).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from splitaudit.errors import InvalidInputError, MissingWeightsError
from splitaudit.fingerprints import embedder as emb
from splitaudit.fingerprints.embedder import (
    DEFAULT_INPUT_SIZE,
    EMBEDDING_DIM,
    WEIGHTS_FILE_NAME,
    Embedder,
    resolve_weights,
)

SIZE = 32  # smallest input MobileNetV2 accepts: keeps every forward pass in milliseconds
SHARED_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared" / "models" / "mobilenet_v2_1.0_224_no_top.h5"
)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_model():
    """A randomly initialised MobileNetV2 (fixed seed) whose weights the tests save."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(1234)
    model = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, pooling="avg"
    )
    # Untrained BatchNorm statistics are 0/1; make them non-trivial so a loader that skips them
    # would change the embeddings.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    return model


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def new_format_file(source_model, weights_dir) -> Path:
    """What Keras 3 ``model.save_weights`` writes."""
    path = weights_dir / "tiny.weights.h5"
    save_weights(source_model, path)
    return path


def save_weights(model, path: Path) -> None:
    with warnings.catch_warnings():  # Keras' own numpy-2 DeprecationWarning while saving
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save_weights(path)


def write_legacy_h5(model, path: Path, *, drop_layer: str | None = None) -> Path:
    """Write weights in the legacy Keras 2 HDF5 layout of the keras.applications downloads."""
    import h5py

    layers = [la for la in model.layers if la.name != drop_layer]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([la.name.encode() for la in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in layers:
            group = f.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{w.name}:0".encode() for w in weights]
            group.attrs["weight_names"] = np.array(names)
            for name, w in zip(names, weights):
                group.create_dataset(name.decode(), data=np.asarray(w))
    return path


@pytest.fixture(scope="module")
def legacy_file(source_model, weights_dir) -> Path:
    """Named like Keras' cached download, in the same legacy layout."""
    return write_legacy_h5(source_model, weights_dir / WEIGHTS_FILE_NAME)


@pytest.fixture(scope="module")
def embedder(new_format_file) -> Embedder:
    return Embedder(weights=new_format_file, input_size=SIZE, batch_size=4)


def images(n: int, seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def reference_embeddings(model, x: np.ndarray) -> np.ndarray:
    """mobilenet_v2.preprocess_input + model + L2 normalisation, the slow obvious way."""
    from keras.applications.mobilenet_v2 import preprocess_input

    feats = np.asarray(model(preprocess_input(x.astype("float32")), training=False))
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


# -- import cost -------------------------------------------------------------------------------


def test_import_and_construction_do_not_load_tensorflow(new_format_file):
    code = (
        "import sys\n"
        "from splitaudit.fingerprints.embedder import Embedder\n"
        f"e = Embedder(weights={str(new_format_file)!r}, input_size={SIZE})\n"
        "e.identity()\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'h5py') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


# -- resolve_weights ---------------------------------------------------------------------------


def test_explicit_weights_file_is_returned(new_format_file):
    assert resolve_weights(new_format_file) == new_format_file.absolute()
    assert resolve_weights(str(new_format_file)) == new_format_file.absolute()


@pytest.mark.parametrize("bad", ["x", "no/such/file.h5"])
def test_explicit_missing_file_is_an_input_error(bad):
    with pytest.raises(InvalidInputError) as info:
        resolve_weights(bad, allow_download=True)  # an explicit file is never replaced
    assert str(info.value) == (
        f"The 'weights' parameter of scan must be an existing weights file. Got {bad!r} instead."
    )


def test_explicit_directory_or_wrong_type_is_an_input_error(tmp_path):
    with pytest.raises(InvalidInputError, match="existing weights file"):
        resolve_weights(tmp_path)
    with pytest.raises(InvalidInputError, match="existing weights file. Got 3 instead"):
        resolve_weights(3)  # type: ignore[arg-type]


def test_keras_cache_is_found(tmp_path, monkeypatch):
    cached = tmp_path / "models" / WEIGHTS_FILE_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"placeholder")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert resolve_weights() == cached


def test_missing_weights_message_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as info:
        resolve_weights()
    message = str(info.value)
    assert len(message.splitlines()) > 3
    for hint in ("--weights FILE", "--download-weights", "--no-embeddings", WEIGHTS_FILE_NAME):
        assert hint in message
    assert str(tmp_path / "models") in message
    with pytest.raises(MissingWeightsError):
        Embedder(input_size=SIZE)


def test_download_goes_through_keras_get_file(tmp_path, monkeypatch):
    keras = pytest.importorskip("keras")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    calls = []

    def fake_get_file(**kwargs):
        calls.append(kwargs)
        target = tmp_path / kwargs["cache_subdir"] / kwargs["fname"]
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(b"downloaded")
        return str(target)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    path = resolve_weights(allow_download=True)
    assert path == tmp_path / "models" / WEIGHTS_FILE_NAME
    assert calls[0]["origin"] == emb.WEIGHTS_URL
    assert calls[0]["origin"].endswith("/mobilenet_v2/" + WEIGHTS_FILE_NAME)
    assert calls[0]["cache_subdir"] == "models"
    # Second run: found in the cache, no download.
    assert resolve_weights(allow_download=True) == path
    assert len(calls) == 1


def test_failed_download_is_a_missing_weights_error(tmp_path, monkeypatch):
    keras = pytest.importorskip("keras")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(**kwargs):
        raise Exception("URL fetch failure on https://...: None -- name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(MissingWeightsError, match="name resolution") as info:
        resolve_weights(allow_download=True)
    assert "--no-embeddings" in str(info.value)


# -- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [31, 513, 0, 64.0, True, "64", None])
def test_bad_input_size(size, new_format_file):
    with pytest.raises(InvalidInputError) as info:
        Embedder(weights=new_format_file, input_size=size)
    assert str(info.value) == (
        f"The 'input_size' parameter of scan must be an integer in [32, 512]. Got {size!r} instead."
    )


@pytest.mark.parametrize("batch", [0, -1, 2.5, False])
def test_bad_batch_size(batch, new_format_file):
    expected = r"'batch_size' parameter of scan must be an integer >= 1"
    with pytest.raises(InvalidInputError, match=expected):
        Embedder(weights=new_format_file, batch_size=batch)


def test_default_input_size_is_in_range():
    assert emb.MIN_INPUT_SIZE <= DEFAULT_INPUT_SIZE <= emb.MAX_INPUT_SIZE
    assert emb.DEFAULT_MODEL == "mobilenet_v2"


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, SIZE, SIZE, 3), np.float32),
        np.zeros((2, SIZE + 1, SIZE, 3), np.uint8),
        np.zeros((2, SIZE, SIZE, 4), np.uint8),
        np.zeros((SIZE, SIZE, 3), np.uint8),
        [[0]],
    ],
)
def test_bad_images(bad, embedder):
    expected = r"'images' parameter of Embedder.embed must be a uint8"
    with pytest.raises(InvalidInputError, match=expected):
        embedder.embed(bad)  # type: ignore[arg-type]


# -- embeddings --------------------------------------------------------------------------------


def test_embeddings_match_keras_with_preprocessing(embedder, source_model):
    x = images(10)
    out = embedder.embed(x)
    assert out.shape == (10, EMBEDDING_DIM) and out.dtype == np.float32
    assert embedder.dim == EMBEDDING_DIM and embedder.input_size == SIZE
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, reference_embeddings(source_model, x), atol=1e-5)


def test_batches_do_not_change_results_or_retrace(embedder):
    x = images(11, seed=1)  # batch_size 4: two full batches and a partial one
    whole = embedder.embed(x)
    one_by_one = np.concatenate([embedder.embed(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-6)
    np.testing.assert_array_equal(embedder.embed(x), whole)  # deterministic
    assert embedder._forward.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("one_thread_per_op", [False, True])
def test_batch_parts_and_their_padding_do_not_change_results(new_format_file, source_model,
                                                             one_thread_per_op, monkeypatch):
    # 10 and 25 images are padded with blank images to a multiple of the parts, never output.
    from splitaudit.fingerprints import embedder as module

    monkeypatch.setattr(module, "_one_thread_per_op", lambda tf: one_thread_per_op)
    e = Embedder(weights=new_format_file, input_size=SIZE, batch_size=48)
    for n in (10, 25, 1):
        x = images(n, seed=n)
        np.testing.assert_allclose(e.embed(x), reference_embeddings(source_model, x), atol=1e-5)
    assert e._forward.experimental_get_tracing_count() == 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert e.parts == min(48, max(cores, 6) if one_thread_per_op else cores)


def test_parts_follow_tensorflow_threading(new_format_file):
    e = Embedder(weights=new_format_file, input_size=SIZE, batch_size=64)
    assert e.parts is None  # decided when the model is built
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert e._parts(True) == max(cores, 8)  # parts of 8 (PART_SIZE), at least one per core
    assert e._parts(False) == min(64, cores)  # one per core
    assert Embedder(weights=new_format_file, input_size=SIZE, batch_size=1)._parts(True) == 1


def test_empty_and_non_contiguous_input(embedder):
    assert embedder.embed(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0, EMBEDDING_DIM)
    x = images(3, seed=2)
    strided = np.asarray(x[:, ::-1])  # view with negative strides
    np.testing.assert_allclose(
        embedder.embed(x[:, ::-1]), embedder.embed(np.ascontiguousarray(strided)), atol=1e-6
    )


def test_legacy_and_new_weights_files_give_the_same_model(legacy_file, embedder):
    x = images(5, seed=3)
    legacy = Embedder(weights=legacy_file, input_size=SIZE)
    np.testing.assert_allclose(legacy.embed(x), embedder.embed(x), atol=1e-6)


def test_weights_are_recognised_by_content_not_name(
    new_format_file, legacy_file, tmp_path, embedder
):
    x = images(3, seed=4)
    want = embedder.embed(x)
    renamed_new = tmp_path / "weights.bin"
    renamed_new.write_bytes(new_format_file.read_bytes())
    renamed_legacy = tmp_path / "legacy.weights.h5"  # legacy content, Keras 3 name
    renamed_legacy.write_bytes(legacy_file.read_bytes())
    for path in (renamed_new, renamed_legacy):
        got = Embedder(weights=path, input_size=SIZE).embed(x)
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_weights_work_at_another_input_size(new_format_file):
    # Fully convolutional: weights saved from a 32x32 model load at 48x48.
    out = Embedder(weights=new_format_file, input_size=48).embed(images(2, size=48))
    assert out.shape == (2, EMBEDDING_DIM) and np.isfinite(out).all()


def test_not_a_weights_file(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not HDF5" * 10)
    e = Embedder(weights=garbage, input_size=SIZE)  # existence is all __init__ checks
    expected = r"must be a MobileNetV2 \(alpha 1.0, include_top=False\)"
    with pytest.raises(InvalidInputError, match=expected):
        e.embed(images(1))


def test_weights_of_another_architecture(tmp_path):
    keras = pytest.importorskip("keras")
    other = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=0.5, include_top=False, weights=None
    )
    for name in ("half.weights.h5", "half.h5"):
        path = tmp_path / name
        if name.endswith(".weights.h5"):
            save_weights(other, path)
        else:
            write_legacy_h5(other, path)
        with pytest.raises(InvalidInputError, match="Loading it failed"):
            Embedder(weights=path, input_size=SIZE).embed(images(1))


def test_partial_weights_file_is_rejected(source_model, tmp_path, recwarn):
    # A legacy file that lacks one layer fails Keras' layer count check ...
    partial = write_legacy_h5(source_model, tmp_path / "partial.h5", drop_layer="Conv_1")
    with pytest.raises(InvalidInputError, match="weights"):
        Embedder(weights=partial, input_size=SIZE).embed(images(1))
    # ... and so does a Keras 3 file with a layer removed, in one line, not a warning per layer.
    import h5py

    full = tmp_path / "full.weights.h5"
    save_weights(source_model, full)
    with h5py.File(full, "a") as f:
        # Keras 3 keys layers by class-based auto names (conv2d, conv2d_1, ...).
        convs = [k for k in f["layers"] if re.fullmatch(r"conv2d(_\d+)?", k)]
        assert len(convs) > 10, list(f["layers"])
        del f["layers"][convs[-1]]
    recwarn.clear()
    with pytest.raises(InvalidInputError, match=r"objects could not be loaded"):
        Embedder(weights=full, input_size=SIZE).embed(images(1))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_arrays_a_loader_skips_are_detected(new_format_file, monkeypatch):
    # Keras skips some mismatches with only a warning (e.g. nested containers a file lacks);
    # a loader that sets nothing at all must not yield NaN or random embeddings.
    monkeypatch.setattr(emb, "_quiet_load", lambda model, path: None)
    with pytest.raises(InvalidInputError, match=r"(\d+) of \1 arrays were not in it"):
        Embedder(weights=new_format_file, input_size=SIZE).embed(images(1))


def test_identity(new_format_file, legacy_file, embedder):
    ident = embedder.identity()
    assert ident.startswith("mobilenet_v2")
    assert f"s={SIZE}" in ident and "127.5" in ident
    assert ident == Embedder(weights=new_format_file, input_size=SIZE, batch_size=64).identity()
    assert ident != Embedder(weights=new_format_file, input_size=64).identity()
    assert ident != Embedder(weights=legacy_file, input_size=SIZE).identity()
    assert len(ident) < 100


# -- real weights (optional) -------------------------------------------------------------------


@pytest.mark.shared
def test_real_weights_find_jpeg_copies():
    if not SHARED_WEIGHTS.is_file():
        pytest.skip("../shared/models weights not available")
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from PIL import Image

    photos = [Image.fromarray(a) for a in sklearn_datasets.load_sample_images().images]
    china, flower = photos[0], photos[1]
    buf = io.BytesIO()
    china.save(buf, "JPEG", quality=30)
    recoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    size = DEFAULT_INPUT_SIZE
    x = np.stack(
        [np.asarray(im.resize((size, size), Image.BILINEAR)) for im in (china, recoded, flower)]
    )
    embedder = Embedder(weights=SHARED_WEIGHTS, input_size=size)
    out = embedder.embed(x)
    same, different = float(out[0] @ out[1]), float(out[0] @ out[2])
    # The 224 ImageNet arrays really are in the (non-224) model: compare two with the file.
    import h5py

    with h5py.File(SHARED_WEIGHTS, "r") as f:
        for layer_name, index in (("Conv1", 0), ("Conv_1_bn", 3)):
            group = f[layer_name]
            stored = np.asarray(group[group.attrs["weight_names"][index]])
            loaded = embedder._model.get_layer(layer_name).weights[index].numpy()
            np.testing.assert_array_equal(loaded, stored)
    assert same > 0.9
    assert different < 0.6
    assert same - different > 0.4


def test_background_build_gives_the_same_embeddings(new_format_file, embedder):
    e = Embedder(weights=new_format_file, input_size=SIZE, batch_size=4)
    assert not e.ready
    e.start_build()
    e.start_build()  # a second call neither builds twice nor fails
    x = images(5, seed=3)
    np.testing.assert_allclose(e.embed(x), embedder.embed(x), atol=1e-6)  # waits for the build
    assert e.ready and e._builder is None


def test_background_build_error_is_raised_by_embed(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not HDF5" * 10)
    e = Embedder(weights=garbage, input_size=SIZE)
    e.start_build()
    with pytest.raises(InvalidInputError, match=r"must be a MobileNetV2"):
        e.embed(images(1))  # the build thread's error, in the caller's thread
    assert not e.ready
