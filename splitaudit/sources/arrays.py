"""In-memory and file-list inputs of :func:`splitaudit.audit`: arrays, tf.data, paths, folders.

Each split given to ``audit`` is normalised here into a :class:`SplitInput`:

* **images** (numpy ``(N, H, W[, C])``): streamed in chunks of :data:`CHUNK` images converted
  to ``(H, W, 3)`` uint8 RGB, so a float array is never copied whole;
* **tfdata** (a ``tf.data.Dataset``): streamed the same way with ``as_numpy_iterator``;
  batched datasets are split into single images, labels come from ``(x, y)`` elements;
* **tabular** (numpy ``(N, D)``): kept as is for :mod:`splitaudit.tabular`;
* **files** (a list of image paths or a directory): a list of file :class:`Sample` objects,
  fingerprinted by :func:`splitaudit.extract.extract` like a scanned dataset.

TensorFlow is never imported here unless an input already is a ``tf.data.Dataset`` (its type
is recognised by module name, without importing anything).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitaudit.errors import InvalidInputError, invalid_param
from splitaudit.sources.base import Sample, Skipped

#: Images converted and fingerprinted at a time: bounds the memory of a stream (a chunk of
#: 256 images of 224x224x3 is 38 MB) while amortising per-chunk overhead.
CHUNK = 256

IMAGES, TABULAR, TFDATA, FILES = "images", "tabular", "tfdata", "files"
_EXPECTED = ("a numpy array of images (N, H, W[, C]) or tabular rows (N, D), an (x, y) tuple, "
             "a tf.data.Dataset, a list of image paths or a directory")


@dataclass
class ImageChunk:
    """Consecutive images of one split, ready to fingerprint.

    Attributes
    ----------
    start : int
        Index of the first image in its input.
    images : list of numpy.ndarray
        ``(H, W, 3)`` uint8 RGB images.
    raws : list of bytes
        The bytes whose digest identifies each sample ("same bytes"): dtype, shape and the
        sample's values as given, before any conversion.
    labels : list of str or None
    modes : list of str
        Pillow-style mode of the sample as given (``L``, ``RGB``, ``RGBA``).
    """

    start: int
    images: list[np.ndarray]
    raws: list[bytes]
    labels: list[str | None]
    modes: list[str]


@dataclass
class SplitInput:
    """One split of an :func:`~splitaudit.audit` call, normalised.

    Attributes
    ----------
    split : str
        ``train``, ``val`` or ``test``.
    kind : str
        ``images``, ``tfdata``, ``tabular`` or ``files``.
    x : numpy.ndarray or None
        The user's array (images or tabular rows), unconverted.
    y : object or None
        The user's labels as given (for evaluating a model), or None.
    labels : list of str or None
        One label per sample (None entries when unknown); for tf.data filled while streaming.
    dataset : tf.data.Dataset or None
    batched : bool
        Whether the tf.data elements carry a leading batch dimension.
    has_y : bool
        Whether tf.data elements are ``(x, y)`` tuples.
    files : list of Sample or None
        File samples (kind ``files``).
    location : str or list of str or None
        The directory or the path list given (kind ``files``).
    n : int or None
        Number of samples, None for a tf.data input until it was streamed.
    """

    split: str
    kind: str
    x: np.ndarray | None = None
    y: object = None
    labels: list[str | None] | None = None
    dataset: object = None
    batched: bool = False
    has_y: bool = False
    files: list[Sample] | None = None
    location: str | list[str] | None = None
    n: int | None = None

    def chunks(self, size: int = CHUNK) -> Iterator[ImageChunk]:
        """Stream the split's images in chunks of about ``size`` images."""
        if self.kind == IMAGES:
            return _array_chunks(self, size)
        if self.kind == TFDATA:
            return _dataset_chunks(self, size)
        raise ValueError(f"split {self.split!r} holds {self.kind}, not streamed images")


@dataclass
class Inputs:
    """Every split of an :func:`~splitaudit.audit` call, in comparison order."""

    splits: list[SplitInput]
    root: Path | None = None
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def tabular(self) -> bool:
        """True when the splits are tabular rows (then all of them are)."""
        return self.splits[0].kind == TABULAR

    @property
    def layout(self) -> str:
        """``tabular``, ``arrays`` (arrays / tf.data), ``files`` or ``mixed``, for the report."""
        kinds = {s.kind for s in self.splits}
        if kinds == {TABULAR}:
            return "tabular"
        if kinds <= {IMAGES, TFDATA}:
            return "arrays"
        return "files" if kinds == {FILES} else "mixed"

    def get(self, split: str) -> SplitInput | None:
        """The input of ``split``, or None when it was not given."""
        return next((s for s in self.splits if s.split == split), None)


# --------------------------------------------------------------------------------------------
# Recognising what was given
# --------------------------------------------------------------------------------------------


def is_tf_dataset(obj: object) -> bool:
    """True for a ``tf.data.Dataset``, recognised without importing TensorFlow."""
    return any(c.__name__ == "DatasetV2" and c.__module__.startswith("tensorflow")
               for c in type(obj).__mro__)


def _is_path(obj: object) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _as_array(obj: object, name: str, owner: str) -> np.ndarray:
    """A numeric numpy array from an array-like (pandas objects included)."""
    if hasattr(obj, "to_numpy") and not isinstance(obj, np.ndarray):
        obj = obj.to_numpy()
    try:
        arr = np.asarray(obj)
    except (TypeError, ValueError):
        raise invalid_param(name, owner, _EXPECTED, _short(obj)) from None
    if arr.dtype.kind not in "biuf":
        raise invalid_param(name, owner, _EXPECTED + " (numeric values)",
                            Described(f"an array of dtype {arr.dtype}"))
    if arr.dtype.kind == "b":
        raise invalid_param(name, owner, _EXPECTED + " (not booleans)", Described("an array of dtype bool"))
    return arr


class Described(str):
    """A description of a bad value, shown as is (unquoted) in ``invalid_param``'s "Got ..."."""

    def __repr__(self) -> str:
        return str(self)


def _short(obj: object) -> object:
    """A short description of a bad value for an error message (never a huge repr)."""
    if isinstance(obj, np.ndarray):
        return Described(f"an array of shape {obj.shape} and dtype {obj.dtype}")
    text = repr(obj)
    return obj if len(text) <= 80 else Described(f"a {type(obj).__name__}")


def label_strings(y: object, n: int | None, name: str, owner: str) -> list[str | None]:
    """One string label per sample from class ids, names or one-hot / probability rows.

    Examples
    --------
    >>> label_strings([0, 2, 1], 3, "labels", "audit")
    ['0', '2', '1']
    >>> label_strings([[0, 1], [1, 0]], 2, "labels", "audit")
    ['1', '0']
    """
    if hasattr(y, "to_numpy") and not isinstance(y, np.ndarray):
        y = y.to_numpy()
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2 and arr.dtype.kind in "biuf":
        arr = arr.argmax(axis=1)  # one-hot or class probabilities
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        want = f"{n} labels" if n is not None else "labels"
        raise invalid_param(name, owner, f"{want} (a 1-D array or one-hot rows)",
                            Described(f"an array of shape {arr.shape}"))
    return [_label(v) for v in arr.tolist()]


def _label(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, float):
        if v != v:
            return None
        if v.is_integer():
            return str(int(v))
    return str(v)


def load_inputs(
    given: Mapping[str, object], labels: Mapping[str, object] | None = None, *, owner: str = "audit"
) -> Inputs:
    """Normalise the splits given to :func:`splitaudit.audit`.

    Parameters
    ----------
    given : mapping
        ``{"train": ..., "val": ..., "test": ...}``; None values are left out (train and val
        are required).
    labels : mapping, optional
        Labels of splits given without them, by split name.
    owner : str
        Function name for error messages.

    Returns
    -------
    Inputs

    Raises
    ------
    InvalidInputError
        Naming the parameter whose type, shape or dtype is wrong.
    """
    if labels is not None and not isinstance(labels, Mapping):
        raise invalid_param("labels", owner, 'a mapping like {"train": y_train, "val": y_val}',
                            _short(labels))
    labels = dict(labels or {})
    for key in labels:
        if key not in given:
            raise invalid_param("labels", owner, f"a mapping with keys among {', '.join(given)}",
                                Described(f"key {key!r}"))
    splits: list[SplitInput] = []
    for name, value in given.items():
        if value is None:
            if name in ("train", "val"):
                raise invalid_param(name, owner, _EXPECTED, None)
            if labels.get(name) is not None:
                raise invalid_param("labels", owner, f"labels only of the splits given ({name} is not)",
                                    Described(f"key {name!r}"))
            continue
        splits.append(_load_split(name, value, labels.get(name), owner))

    kinds = {s.kind for s in splits}
    if TABULAR in kinds and kinds != {TABULAR}:
        raise InvalidInputError(
            f"The splits of {owner} must all be tabular rows (N, D) or all images. Got "
            + ", ".join(f"{s.split}: {s.kind}" for s in splits) + " instead.")
    if kinds == {TABULAR}:
        dims = {s.split: s.x.shape[1] for s in splits}
        if len(set(dims.values())) > 1:
            bad = next(s for s in splits[1:] if s.x.shape[1] != splits[0].x.shape[1])
            raise invalid_param(bad.split, owner,
                                f"tabular rows with as many columns as train ({dims['train']})",
                                Described(f"{dims[bad.split]} columns"))
    inputs = Inputs(splits)
    _list_files(inputs)
    return inputs


def _load_split(name: str, value: object, y_given: object, owner: str) -> SplitInput:
    x, y = value, None
    if isinstance(value, tuple) and len(value) in (2, 3) and not _is_path(value[0]):
        x, y = value[0], value[1]  # (x, y) or (x, y, sample_weight), as Keras takes them
        if y_given is not None:
            raise invalid_param("labels", owner, f"labels only of splits given without them "
                                f"({name} is an (x, y) tuple)", Described(f"key {name!r}"))
    else:
        y = y_given
    if is_tf_dataset(x):
        if y is not None:
            raise invalid_param("labels", owner, "labels of array or path inputs only (a tf.data "
                                "dataset carries its own as (x, y) elements)",
                                Described(f"key {name!r}"))
        return _tf_split(name, x, owner)
    if _is_path(x):
        path = os.fspath(x)
        if not os.path.isdir(path):
            raise invalid_param(name, owner, _EXPECTED + " (an existing directory)", path)
        if y is not None:
            raise invalid_param("labels", owner, "labels of array or path-list inputs only (a "
                                "directory's labels are its class folders)", Described(f"key {name!r}"))
        return SplitInput(name, FILES, location=path)  # listed by _list_files
    if isinstance(x, (list, tuple)) and x and all(_is_path(p) for p in x):
        paths = [os.fspath(p) for p in x]
        lab = label_strings(y, len(paths), "labels" if y_given is not None else name, owner) \
            if y is not None else [None] * len(paths)
        return SplitInput(name, FILES, labels=lab, location=paths, n=len(paths))
    arr = _as_array(x, name, owner)
    if arr.ndim < 2 or len(arr) == 0:
        raise invalid_param(name, owner, _EXPECTED + " with at least one sample", _short(arr))
    lab = None
    if y is not None:
        lab = label_strings(y, len(arr), "labels" if y_given is not None else name, owner)
    if arr.ndim == 2:
        return SplitInput(name, TABULAR, x=arr, y=y, labels=lab, n=len(arr))
    if arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4):
        raise invalid_param(name, owner, "images with 1, 3 or 4 channels (N, H, W, C)",
                            Described(f"an array of shape {arr.shape}"))
    if arr.ndim > 4:
        raise invalid_param(name, owner, _EXPECTED, Described(f"an array of shape {arr.shape}"))
    _check_value_range(arr, name, owner)
    return SplitInput(name, IMAGES, x=arr, y=y, labels=lab, n=len(arr))


# --------------------------------------------------------------------------------------------
# Files: path lists and directories
# --------------------------------------------------------------------------------------------


def _list_files(inputs: Inputs) -> None:
    """Turn path lists and directories into file Samples relative to one common root."""
    from splitaudit.sources.directory import _collect, non_image_reason, printable_path

    file_splits = [s for s in inputs.splits if s.kind == FILES]
    if not file_splits:
        return
    places = []
    for s in file_splits:
        if isinstance(s.location, str):
            places.append(os.path.abspath(s.location))
        else:
            places.extend(os.path.dirname(os.path.abspath(p)) for p in s.location)
    try:
        root = os.path.commonpath(places)
    except ValueError:  # different drives on Windows
        root = os.path.dirname(places[0])
    dirs = [os.path.abspath(s.location) for s in file_splits if isinstance(s.location, str)]
    if root in dirs:  # keep each directory's own name in the paths ("train/cat/1.png")
        root = os.path.dirname(root)
    inputs.root = Path(root)
    for s in file_splits:
        if isinstance(s.location, str):
            full = os.path.abspath(s.location)
            prefix = printable_path(Path(os.path.relpath(full, root)).as_posix())
            found = _collect(root, [(s.split, full, prefix)], "explicit", inputs.notes)
            s.files = found.samples
            inputs.skipped.extend(found.skipped)
        else:
            files = []
            for i, (p, label) in enumerate(zip(s.location, s.labels)):
                full = os.path.abspath(p)
                rel = printable_path(Path(os.path.relpath(full, root)).as_posix())
                reason = non_image_reason(os.path.basename(p))
                if reason:
                    inputs.skipped.append(Skipped(s.split, rel, reason))
                else:
                    files.append(Sample(s.split, rel, Path(full), label, None, i))
            s.files = files
        s.n = len(s.files)
        s.labels = [f.label for f in s.files]


# --------------------------------------------------------------------------------------------
# Pixels: any supported image array -> (H, W, 3) uint8
# --------------------------------------------------------------------------------------------


def _check_value_range(arr: np.ndarray, name: str, owner: str) -> None:
    """Reject values that no image scale explains (negative, above 255)."""
    if arr.dtype == np.uint8:
        return
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))  # one pass each, no copy
    if not (lo >= 0 and hi <= 255):
        raise invalid_param(name, owner, "images with values in [0, 1] (float) or [0, 255]",
                            Described(f"{arr.dtype} values in [{lo:g}, {hi:g}]"))


def _mode(channels: int | None) -> str:
    return {None: "L", 1: "L", 3: "RGB", 4: "RGBA"}[channels]


class _Scale:
    """Whether float pixels are in [0, 1] or [0, 255], decided once per input.

    For a numpy array the decision uses the whole array; for a stream, its first chunk
    (a chunk of real images whose values all stay under 1 on a 0-255 scale does not occur).
    """

    def __init__(self, name: str, owner: str, unit: bool | None = None) -> None:
        self.name, self.owner, self.unit = name, owner, unit

    def to_uint8(self, batch: np.ndarray) -> np.ndarray:
        """``(B, H, W[, C])`` pixels -> ``(B, H, W, 3)`` uint8 RGB."""
        if batch.ndim == 4 and batch.shape[-1] == 4:
            batch = batch[..., :3]  # alpha dropped: the picture is in the colour channels
        if batch.dtype != np.uint8:
            lo, hi = (float(np.nanmin(batch)), float(np.nanmax(batch))) if batch.size else (0.0, 0.0)
            if batch.dtype.kind == "f":
                if self.unit is None:
                    self.unit = hi <= 1.0
                top = 1.0 if self.unit else 255.0
            else:
                top = 255.0
            if not (lo >= 0 and hi <= top) or batch.dtype.kind not in "uif":
                scale = "[0, 1]" if top == 1.0 else "[0, 255]"
                raise invalid_param(self.name, self.owner,
                                    f"images with values in {scale} like its first images",
                                    Described(f"{batch.dtype} values in [{lo:g}, {hi:g}]"))
            if batch.dtype.kind == "f":
                batch = np.nan_to_num(batch, nan=0.0) * (255.0 if self.unit else 1.0)
                batch = np.clip(np.rint(batch), 0, 255)
            batch = batch.astype(np.uint8)
        if batch.ndim == 3:
            batch = batch[..., None]
        if batch.shape[-1] == 1:
            batch = np.repeat(batch, 3, axis=-1)
        return np.ascontiguousarray(batch)


def _raw(sample: np.ndarray) -> bytes:
    """What "same bytes" means for an array sample: same dtype, shape and values."""
    head = f"{sample.dtype.str}{sample.shape}".encode()
    return head + np.ascontiguousarray(sample).tobytes()


def _array_chunks(src: SplitInput, size: int) -> Iterator[ImageChunk]:
    x = src.x
    channels = x.shape[-1] if x.ndim == 4 else None
    scale = _Scale(src.split, "audit", unit=None if x.dtype.kind != "f" else float(np.nanmax(x)) <= 1.0)
    mode = _mode(channels)
    for start in range(0, len(x), size):
        part = x[start:start + size]
        rgb = scale.to_uint8(part)
        labels = src.labels[start:start + size] if src.labels is not None else [None] * len(part)
        yield ImageChunk(start, list(rgb), [_raw(s) for s in part], list(labels), [mode] * len(part))


# --------------------------------------------------------------------------------------------
# tf.data
# --------------------------------------------------------------------------------------------


def _spec_shape(spec) -> tuple:
    return tuple(spec.shape.as_list()) if spec.shape.rank is not None else ()


def _tf_split(name: str, ds: object, owner: str) -> SplitInput:
    """Read a tf.data.Dataset's element structure: x or (x, y[, w]); batched or not."""
    spec = ds.element_spec
    has_y = False
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3) or isinstance(spec[0], (tuple, dict)):
            raise invalid_param(name, owner, "a tf.data.Dataset of x or (x, y) elements",
                                Described(f"elements of structure {spec}"))
        spec, has_y = spec[0], True
    elif isinstance(spec, dict) or not hasattr(spec, "shape"):
        raise invalid_param(name, owner, "a tf.data.Dataset of x or (x, y) elements",
                            Described(f"elements of structure {spec}"))
    shape = _spec_shape(spec)
    rank = len(shape)
    dtype = spec.dtype.as_numpy_dtype
    if np.dtype(dtype).kind not in "uif":
        raise invalid_param(name, owner, "a tf.data.Dataset of numeric images or rows",
                            Described(f"elements of dtype {np.dtype(dtype)}"))
    # Images are (H, W), (H, W, C) unbatched or (B, H, W[, C]) batched; rows (D,) or (B, D).
    if rank == 1:
        kind, batched = TABULAR, False
    elif rank == 2 and shape[0] is None and shape[1] is not None:
        kind, batched = TABULAR, True
    elif rank == 2:
        kind, batched = IMAGES, False
    elif rank == 3:
        kind, batched = IMAGES, shape[-1] not in (1, 3, 4)
    elif rank == 4 and shape[-1] in (None, 1, 3, 4):
        kind, batched = IMAGES, True
    else:
        raise invalid_param(name, owner, "a tf.data.Dataset of images (H, W[, C]) or rows (D,), "
                            "batched or not", Described(f"elements of shape {shape}"))
    src = SplitInput(name, TFDATA, dataset=ds, batched=batched, has_y=has_y, labels=[])
    if kind == TABULAR:
        # Rows are small: the tabular path needs them all at once anyway (scaler, k-NN).
        xs, ys = [], []
        for elem in ds.as_numpy_iterator():
            x, y = (elem[0], elem[1]) if has_y else (elem, None)
            xs.append(np.atleast_2d(x) if batched else np.asarray(x)[None])
            if has_y:
                ys.append(np.atleast_1d(y) if batched else np.asarray(y)[None])
        if not xs:
            raise invalid_param(name, owner, "a tf.data.Dataset with at least one element",
                                Described("an empty one"))
        arr = np.concatenate(xs)
        labels = label_strings(np.concatenate(ys), len(arr), name, owner) if has_y else None
        return SplitInput(name, TABULAR, x=arr, y=np.concatenate(ys) if has_y else None,
                          labels=labels, dataset=ds, batched=batched, has_y=has_y, n=len(arr))
    return src


def _dataset_chunks(src: SplitInput, size: int) -> Iterator[ImageChunk]:
    """Stream a tf.data input as chunks of single images (labels collected on the way)."""
    scale = _Scale(src.split, "audit")
    labels_out: list[str | None] = []
    src.labels = labels_out
    pending: list[tuple[np.ndarray, bytes, str | None, str]] = []
    count = 0
    for elem in src.dataset.as_numpy_iterator():
        x, y = (elem[0], elem[1]) if src.has_y else (elem, None)
        batch = x if src.batched else x[None]
        if batch.ndim not in (3, 4) or (batch.ndim == 4 and batch.shape[-1] not in (1, 3, 4)):
            raise invalid_param(src.split, "audit", "a tf.data.Dataset of images (H, W[, C])",
                                Described(f"an element of shape {x.shape}"))
        if src.has_y:
            ys = y if src.batched else np.asarray(y)[None]
            labs = label_strings(ys, len(batch), src.split, "audit")
        else:
            labs = [None] * len(batch)
        rgb = scale.to_uint8(batch)
        mode = _mode(batch.shape[-1] if batch.ndim == 4 else None)
        for j in range(len(batch)):
            pending.append((rgb[j], _raw(batch[j]), labs[j], mode))
        while len(pending) >= size:
            yield _chunk(pending[:size], count)
            labels_out.extend(p[2] for p in pending[:size])
            count += size
            del pending[:size]
    if pending:
        yield _chunk(pending, count)
        labels_out.extend(p[2] for p in pending)
        count += len(pending)
    if count == 0:
        raise invalid_param(src.split, "audit", "a tf.data.Dataset with at least one image",
                            Described("an empty one"))
    src.n = count


def _chunk(items: Sequence[tuple], start: int) -> ImageChunk:
    return ImageChunk(start, [i[0] for i in items], [i[1] for i in items], [i[2] for i in items],
                      [i[3] for i in items])
