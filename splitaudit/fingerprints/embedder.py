"""CNN embeddings: ImageNet MobileNetV2 features for near-duplicate matching.

TensorFlow is imported only inside :class:`Embedder` methods (and by
:func:`resolve_weights` when it downloads), so importing this module, resolving a weights file
that is already on disk and computing :meth:`Embedder.identity` stay cheap; a hash-only scan
never loads TensorFlow.
"""

from __future__ import annotations

import contextlib
import sys

import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from splitaudit._os import available_cores
from splitaudit.errors import InvalidInputError, MissingWeightsError, SplitAuditError, invalid_param

#: The only model so far: ImageNet MobileNetV2 (alpha 1.0), include_top=False, global average
#: pooling -> 1280-d features.
DEFAULT_MODEL = "mobilenet_v2"

#: Side of the square RGB input the CNN sees (the caller resizes to it). Chosen by measurement
#: on the 2-core CPU a CIFAR-10 scan targets (real weights, batch 64, median of clean runs over
#: 512 images, spread across sessions): 96 -> 424-515 img/s, 112 -> 372-395, 128 -> 277-321,
#: 160 -> 170-190, 224 -> ~95. Scanning 60,000 images in under 5 minutes with decoding, hashing
#: and matching sharing the same cores needs >= ~300 img/s, which 128 only just reaches on a good
#: run; 112 leaves ~25% headroom. It loses nothing on upscaled 32x32 CIFAR images (cosine 5th
#: percentile of flipped / 90%-cropped copies 0.78 / 0.75 vs 99.9th percentile of different
#: images 0.67, the same as at 128), while 96 collapses there (99.9th percentile 0.92;
#: its last feature map is only 3x3).
DEFAULT_INPUT_SIZE = 112

#: Embedding dimension of MobileNetV2 alpha 1.0 after global average pooling.
EMBEDDING_DIM = 1280

#: Input sizes accepted: 32 is Keras' minimum for MobileNetV2; above 512 the CNN is far too slow
#: on CPU and ImageNet features get no better for duplicate matching.
MIN_INPUT_SIZE = 32
MAX_INPUT_SIZE = 512

#: Name Keras 3 gives the no-top alpha-1.0 weights in its cache
#: (``keras/src/applications/mobilenet_v2.py``: the 224 file serves every input size).
WEIGHTS_FILE_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
#: Official download location, the one ``keras.applications.MobileNetV2`` uses.
WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + WEIGHTS_FILE_NAME
)
#: Keras pins no hash for the MobileNetV2 files (``file_hash=None`` in keras.applications), so
#: neither do we: a wrong or truncated file is caught when its weights are loaded instead.
WEIGHTS_FILE_HASH: str | None = None

# mobilenet_v2.preprocess_input (mode "tf"): x / 127.5 - 1. Part of identity() so a cache never
# mixes embeddings made with different preprocessing.
_PREPROCESSING = "x/127.5-1"

#: Images per part of a forward pass (at most) when TensorFlow runs each op on one thread. A
#: batch is cut into parts that TensorFlow runs side by side on its inter-op threads
#: (``tf.map_fn`` with parallel iterations): MobileNetV2's many small ops then never wait for
#: each other's threads. On the 2-core CPU (112 px, batch 64, medians of clean runs): one part
#: of 64 ran at 269 img/s (one core), 2 parts of 32 at 597, 8 parts of 8 at 620-640; TensorFlow's
#: default (every op split over both cores, one part) at 434-454. Eight explicit branches of 16
#: ran at 650 but cost 3.8 s of tracing and graph optimisation at start-up instead of 1.1 s.
#: With TensorFlow's default threading the best is one part per core: 2 parts of 32 ran at 540
#: img/s, 4 of 16 at 515, 8 of 8 at 436-467 (see :meth:`Embedder._parts`).
PART_SIZE = 8

#: Images per forward pass by default (see ``PART_SIZE``).
DEFAULT_BATCH_SIZE = 64

# Owner named in parameter errors: users reach the embedder through scan.
_OWNER = "scan"


def _one_thread_per_op(tf: Any) -> bool:
    """Whether TensorFlow runs each op on one thread (its configuration, or the environment
    variable it reads at start-up)."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    if configured:
        return configured == 1
    return os.environ.get("TF_NUM_INTRAOP_THREADS", "").strip() == "1"


def _keras_cache_dirs() -> list[Path]:
    """Directories where ``keras.utils.get_file(..., cache_subdir="models")`` stores files.

    Mirrors Keras (``backend/config.py`` and ``utils/file_utils.py``) without importing it:
    ``$KERAS_HOME`` or ``~/.keras`` (``/tmp/.keras`` when the home directory is not writable),
    and ``/tmp/.keras`` again when that directory itself is not writable.
    """
    if "KERAS_HOME" in os.environ:
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        base = Path("~").expanduser()
        home = (base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras"
    dirs = [home / "models"]
    if not os.access(home, os.W_OK):
        tmp = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir())
        dirs.append(tmp / ".keras" / "models")
    return list(dict.fromkeys(dirs))


def _missing_weights_message(looked_in: list[Path], download_error: str | None) -> str:
    lines = ["MobileNetV2 ImageNet weights (needed for CNN embeddings) were not found."]
    lines.append("Looked for " + WEIGHTS_FILE_NAME + " in:")
    lines += [f"  {d}" for d in looked_in]
    if download_error is not None:
        lines.append(f"Downloading it from {WEIGHTS_URL} failed: {download_error}")
    lines += [
        "Do one of the following:",
        "  - pass --weights FILE (a Keras MobileNetV2 alpha 1.0 include_top=False weights file,",
        f"    e.g. {WEIGHTS_FILE_NAME});",
        "  - run once with --download-weights on a machine with internet access: Keras stores",
        f"    the file in its cache ({looked_in[0]}), where later runs find it;",
        "  - use --no-embeddings for a hash-only scan (exact and near-exact copies only).",
    ]
    return "\n".join(lines)


def resolve_weights(
    weights: str | os.PathLike[str] | None = None, *, allow_download: bool = False
) -> Path:
    """Find the MobileNetV2 ImageNet weights file.

    Parameters
    ----------
    weights : str or os.PathLike or None
        An explicit weights file. It must exist; nothing else is tried when it is given.
    allow_download : bool
        When the file is neither given nor in Keras' cache, let Keras download it (official URL,
        stored in its cache exactly as ``keras.applications.MobileNetV2`` would).

    Returns
    -------
    pathlib.Path
        Absolute path of the weights file. It is not opened here: a wrong file is reported by
        :class:`Embedder` when the weights are loaded.

    Raises
    ------
    InvalidInputError
        ``weights`` is given but is not an existing file.
    MissingWeightsError
        No file was given, none is cached and downloading is not allowed or failed.
    """
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise invalid_param("weights", _OWNER, "an existing weights file", weights)
        path = Path(weights).expanduser()
        if not path.is_file():
            raise invalid_param("weights", _OWNER, "an existing weights file", os.fspath(weights))
        return path.absolute()

    looked_in = _keras_cache_dirs()
    for directory in looked_in:
        candidate = directory / WEIGHTS_FILE_NAME
        if candidate.is_file():
            return candidate.absolute()

    download_error = None
    if allow_download:
        import keras  # imports TensorFlow: only when the user asked for a download

        try:
            # get_file draws its progress bar on stdout, which carries the report (JSON).
            with contextlib.redirect_stdout(sys.stderr):
                fetched = keras.utils.get_file(
                    fname=WEIGHTS_FILE_NAME,
                    origin=WEIGHTS_URL,
                    file_hash=WEIGHTS_FILE_HASH,
                    cache_subdir="models",
                )
        except Exception as exc:  # get_file raises a bare Exception on URL errors
            download_error = str(exc) or type(exc).__name__
        else:
            return Path(fetched).absolute()
    raise MissingWeightsError(_missing_weights_message(looked_in, download_error))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _keras_suffix(path: Path) -> str | None:
    """The file name ending Keras' ``load_weights`` needs for this file's actual format.

    Keras picks its loader from the name alone (``.keras``, ``.weights.h5``, ``.h5``), so a
    file saved by ``model.save_weights`` and renamed, or a download with another name, would go
    to the wrong loader. Returns None when the file is neither a zip nor HDF5 (Keras reports it).
    """
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):
        return ".keras"
    if head != b"\x89HDF\r\n\x1a\n":
        return None
    import h5py  # a Keras dependency

    with h5py.File(path, "r") as f:
        # Legacy (Keras 2 / keras.applications downloads): layer names listed in the root attrs
        # or in a "model_weights" group; Keras 3 save_weights writes a "layers"/"vars" tree.
        legacy = "layer_names" in f.attrs or "model_weights" in f
    return ".h5" if legacy else ".weights.h5"


def _quiet_load(model: Any, path: Path) -> None:
    # A mismatched Keras 3 file makes Keras warn once per skipped layer (hundreds of lines)
    # before failing or loading partially; the NaN check after loading reports it in one line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_weights(path)


class Embedder:
    """MobileNetV2 ImageNet embeddings of RGB images, on CPU.

    Parameters
    ----------
    weights : str or os.PathLike or None
        Weights file; None looks in Keras' cache (see :func:`resolve_weights`).
    allow_download : bool
        Let Keras download the weights when they are not found locally.
    input_size : int
        Side of the square input, in [32, 512]. The 224 ImageNet weights are used at every size
        (MobileNetV2 is fully convolutional).
    batch_size : int
        Images per forward pass (>= 1), run as ``parts`` parts side by side.

    Attributes
    ----------
    input_size : int
    batch_size : int
    parts : int or None
        Parts a batch is cut into (:meth:`_parts`), decided when the model is built (None
        before).
    dim : int
        Embedding dimension (1280).
    weights_path : pathlib.Path
        The resolved weights file.

    Raises
    ------
    InvalidInputError
        A parameter is out of range, or the weights file does not exist (checked here), or it
        is not MobileNetV2 alpha-1.0 no-top weights (checked when the model is first built).
    MissingWeightsError
        No weights file could be found or downloaded.

    Notes
    -----
    The model is built on first use. Batches run through one ``tf.function`` traced once with
    an unknown batch dimension, so a last partial batch does not retrace; it is padded to a
    multiple of ``parts`` with blank images (fewer than ``parts`` of extra work).
    TensorFlow releases the GIL while it runs, so callers may decode images in other threads.

    The parts run best with one thread per op (``TF_NUM_INTRAOP_THREADS=1``), which the
    ``splitaudit`` command sets for its own process: 8 parts of 8 on 2 cores. In a user's
    process TensorFlow's threading is left as the user has it, and a batch has one part per
    core.
    """

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        allow_download: bool = False,
        input_size: int = DEFAULT_INPUT_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        # bool is an int subclass; True as a size is always a mistake.
        if (
            not isinstance(input_size, (int, np.integer))
            or isinstance(input_size, bool)
            or not MIN_INPUT_SIZE <= input_size <= MAX_INPUT_SIZE
        ):
            raise invalid_param(
                "input_size",
                _OWNER,
                f"an integer in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}]",
                input_size,
            )
        if (
            not isinstance(batch_size, (int, np.integer))
            or isinstance(batch_size, bool)
            or batch_size < 1
        ):
            raise invalid_param("batch_size", _OWNER, "an integer >= 1", batch_size)
        self.input_size = int(input_size)
        self.batch_size = int(batch_size)
        self.parts: int | None = None
        self.dim = EMBEDDING_DIM
        # Resolved now, so a missing file fails before a long scan starts reading images.
        self.weights_path = resolve_weights(weights, allow_download=allow_download)
        self._weights_digest: str | None = None
        self._model: Any = None
        self._forward: Any = None
        self._lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._build_error: BaseException | None = None

    def __repr__(self) -> str:
        return (
            f"Embedder(model={DEFAULT_MODEL!r}, weights={str(self.weights_path)!r}, "
            f"input_size={self.input_size}, batch_size={self.batch_size})"
        )

    def identity(self) -> str:
        """A short string naming everything that changes the embeddings, for caches.

        Returns
        -------
        str
            Model, weights file digest (first 16 hex digits of its SHA-256), input size,
            preprocessing and normalisation, e.g.
            ``"mobilenet_v2-a1.0-notop-avg|w=sha256:d42a456ded3f5732|s=112|x/127.5-1|l2"``.
            Computing it reads the weights file once but does not load TensorFlow.
        """
        if self._weights_digest is None:
            self._weights_digest = _sha256(self.weights_path)[:16]
        return (
            f"{DEFAULT_MODEL}-a1.0-notop-avg|w=sha256:{self._weights_digest}"
            f"|s={self.input_size}|{_PREPROCESSING}|l2"
        )

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed a stack of images.

        Parameters
        ----------
        images : numpy.ndarray
            ``(N, S, S, 3)`` uint8 RGB with ``S == input_size`` (the caller resizes).

        Returns
        -------
        numpy.ndarray
            ``(N, dim)`` float32, rows L2-normalised (an all-zero feature row stays zero), so
            a dot product is the cosine similarity.

        Raises
        ------
        InvalidInputError
            ``images`` has the wrong type, dtype or shape.
        """
        s = self.input_size
        if (
            not isinstance(images, np.ndarray)
            or images.dtype != np.uint8
            or images.ndim != 4
            or images.shape[1:] != (s, s, 3)
        ):
            got = (
                f"{images.dtype} array of shape {images.shape}"
                if isinstance(images, np.ndarray)
                else type(images).__name__
            )
            raise invalid_param(
                "images", "Embedder.embed", f"a uint8 array of shape (N, {s}, {s}, 3)", got
            )
        n = images.shape[0]
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        forward = self._get_forward()
        for start in range(0, n, self.batch_size):
            batch = images[start : start + self.batch_size]
            m = len(batch)
            pad = -m % self.parts
            if pad:  # the parts are equal: a last partial batch gets blank images
                batch = np.concatenate([batch, np.zeros((pad, s, s, 3), np.uint8)])
            out[start : start + m] = forward(np.ascontiguousarray(batch)).numpy()[:m]
        return out

    @property
    def ready(self) -> bool:
        """True once the model is built (embed() no longer waits for TensorFlow)."""
        return self._forward is not None

    def start_build(self) -> None:
        """Build the model in a background thread; :meth:`embed` waits for it.

        Importing TensorFlow, building MobileNetV2 and loading its weights take seconds of
        mostly single-threaded work; a scan starts this once its decoding processes exist
        (forking after TensorFlow's threads start would be unsafe), so that decoding goes on
        meanwhile. An error of the build is raised by the next :meth:`embed`.
        """
        with self._lock:
            if self._forward is not None or self._builder is not None:
                return

            def build() -> None:
                try:
                    self._get_forward()
                except BaseException as exc:  # handed to the caller's thread by _get_forward
                    self._build_error = exc

            self._builder = threading.Thread(target=build, name="splitaudit-cnn-build", daemon=True)
            self._builder.start()

    # -- model ---------------------------------------------------------------------------

    def wait_build(self) -> None:
        """Wait for a build started by :meth:`start_build`, raising its error if it failed."""
        builder = self._builder
        if builder is not None and builder is not threading.current_thread():
            builder.join()
            with self._lock:
                self._builder = None
                error, self._build_error = self._build_error, None
            if error is not None:
                raise error

    def _get_forward(self) -> Any:
        self.wait_build()
        with self._lock:  # one build even when several threads embed at once
            if self._forward is None:
                self._build()
            return self._forward

    def _build(self) -> None:
        import keras
        import tensorflow as tf

        if keras.backend.backend() != "tensorflow":
            raise SplitAuditError(
                "CNN embeddings need the TensorFlow Keras backend; "
                f"KERAS_BACKEND is {keras.backend.backend()!r}."
            )
        s = self.input_size
        # Built without weights and loaded afterwards, so that the NaN sentinel in _load_weights
        # can prove every array came from the file. (weights=PATH would accept any size too:
        # Keras' "non-standard size" warning only concerns weights="imagenet".)
        model = keras.applications.MobileNetV2(
            input_shape=(s, s, 3), alpha=1.0, include_top=False, weights=None, pooling="avg"
        )
        self._load_weights(model)

        self.parts = parts = self._parts(_one_thread_per_op(tf))
        dim = self.dim

        @tf.function(
            input_signature=[tf.TensorSpec(shape=(None, s, s, 3), dtype=tf.uint8)],
            reduce_retracing=True,
        )
        def forward(x: Any) -> Any:
            x = tf.cast(x, tf.float32) * (1.0 / 127.5) - 1.0
            # Parts side by side (see PART_SIZE); the batch is a multiple of ``parts``.
            features = tf.map_fn(
                lambda p: model(p, training=False),
                tf.reshape(x, (parts, -1, s, s, 3)),
                parallel_iterations=parts,
                fn_output_signature=tf.TensorSpec((None, dim), tf.float32),
            )
            return tf.math.l2_normalize(tf.reshape(features, (-1, dim)), axis=1)

        # Traced here, in the build thread, rather than on the first batch.
        forward.get_concrete_function()
        self._model = model
        self._forward = forward

    def _parts(self, one_thread_per_op: bool) -> int:
        """Parts a batch is cut into (see ``PART_SIZE``).

        With one thread per op, parts of ``PART_SIZE`` images, and at least one per core; with
        ops split over the cores, one part per core. Never more parts than images.
        """
        cores = max(1, available_cores())
        wanted = max(cores, -(-self.batch_size // PART_SIZE)) if one_thread_per_op else cores
        return min(self.batch_size, wanted)

    def _load_weights(self, model: Any) -> None:
        """Load ``weights_path`` into ``model`` and prove every array was loaded.

        Every variable is first filled with NaN: Keras loaders skip some mismatches with only a
        warning, so a NaN left afterwards means the file lacked that array.
        """
        path = self.weights_path
        expected = "a MobileNetV2 (alpha 1.0, include_top=False) Keras weights file"
        model.set_weights([np.full(w.shape, np.nan, dtype=w.dtype) for w in model.weights])
        try:
            suffix = _keras_suffix(path)
            name = path.name
            needs_link = suffix is not None and not (
                name.endswith(suffix) and (suffix != ".h5" or not name.endswith(".weights.h5"))
            )
            if needs_link:
                with tempfile.TemporaryDirectory(prefix="splitaudit-weights-") as tmp:
                    link = Path(tmp) / ("weights" + suffix)
                    try:
                        link.symlink_to(path)
                    except OSError:  # no symlinks (some Windows setups): copy the ~9 MB
                        link.write_bytes(path.read_bytes())
                    _quiet_load(model, link)
            else:
                _quiet_load(model, path)
        except Exception as exc:  # Keras raises ValueError, OSError, KeyError, ... here
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise InvalidInputError(
                str(invalid_param("weights", _OWNER, expected, str(path)))
                + f" Loading it failed: {reason}"
            ) from exc
        missing = [w.path for w in model.weights if not np.isfinite(w.numpy()).all()]
        if missing:
            raise InvalidInputError(
                str(invalid_param("weights", _OWNER, expected, str(path)))
                + f" {len(missing)} of {len(model.weights)} arrays were not in it"
                f" (first: {missing[0]})."
            )
