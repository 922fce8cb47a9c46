"""Fingerprint in-memory images (numpy arrays, tf.data streams) into a FingerprintTable.

The in-memory counterpart of :mod:`splitaudit.extract`: images arrive in chunks from
:meth:`splitaudit.sources.arrays.SplitInput.chunks`, each chunk is fingerprinted
(:func:`splitaudit.fingerprints.chunk.fingerprint_chunk`, the digest taken over the sample's
own array bytes), embedded by the same CNN embedder, and reduced to its fingerprint rows before
the next chunk is read. At most one chunk of images is held at a time, so a tf.data pipeline
larger than memory is audited without being materialised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from splitaudit.extract import FingerprintTable, extract
from splitaudit.fingerprints.chunk import ChunkFingerprints, fingerprint_chunk
from splitaudit.sources.arrays import FILES, IMAGES, TFDATA, ImageChunk, Inputs, SplitInput
from splitaudit.sources.base import Sample, SampleSet

ProgressFn = Callable[[str, int, int], None]


def _image_info(width: int, height: int, mode: str, size: int):
    """An :class:`~splitaudit.imaging.ImageInfo` for an array sample (no file, no format)."""
    from splitaudit.imaging import ImageInfo

    known = {"width": width, "height": height, "format": None, "mode": mode, "n_frames": 1,
             "file_size": size}
    # Fields added later without a default get None: an array sample has no such metadata.
    kwargs = {f.name: known.get(f.name) for f in dataclasses.fields(ImageInfo)
              if f.name in known or (f.default is dataclasses.MISSING
                                     and f.default_factory is dataclasses.MISSING)}
    return ImageInfo(**kwargs)


class _Columns:
    """Fingerprint rows of one split, appended chunk by chunk."""

    def __init__(self) -> None:
        self.parts: list[ChunkFingerprints] = []
        self.width: list[int] = []
        self.height: list[int] = []
        self.embeddings: list[np.ndarray] = []

    def table(self, embedding_dim: int | None) -> FingerprintTable:
        n = len(self.width)
        t = FingerprintTable.allocate(n, embedding_dim)
        if n:
            t.ok[:] = True
            for name in ("file_digest", "pixel_digest", "phash", "phash_flip", "thumbs", "properties"):
                getattr(t, name)[:] = np.concatenate([getattr(p, name) for p in self.parts])
            t.width[:] = self.width
            t.height[:] = self.height
            if embedding_dim is not None:
                t.embeddings[:] = np.concatenate(self.embeddings)
        t.content_keys = [d.tobytes() for d in t.file_digest]
        return t


def _fingerprint_chunk(chunk: ImageChunk, cols: _Columns, embedder) -> None:
    from splitaudit.fingerprints.properties import PROPERTY_NAMES

    rgbs = chunk.images
    infos = [_image_info(rgb.shape[1], rgb.shape[0], mode, len(raw))
             for rgb, mode, raw in zip(rgbs, chunk.modes, chunk.raws)]
    fp = fingerprint_chunk(chunk.raws, rgbs, infos,
                           cnn_size=embedder.input_size if embedder is not None else None)
    # An array has no encoded size: its row must not be compared with files' sizes.
    fp.properties[:, PROPERTY_NAMES.index("file_size")] = np.nan
    cols.parts.append(fp)
    cols.width.extend(rgb.shape[1] for rgb in rgbs)
    cols.height.extend(rgb.shape[0] for rgb in rgbs)
    if embedder is not None and fp.cnn is not None:
        cols.embeddings.append(embedder.embed(fp.cnn).astype(np.float16))


def fingerprint_stream(
    src: SplitInput,
    *,
    embedder=None,
    progress: ProgressFn | None = None,
    done0: int = 0,
    total: int = 0,
    chunk_size: int | None = None,
) -> tuple[list[Sample], FingerprintTable]:
    """Fingerprint one in-memory split, chunk by chunk.

    Parameters
    ----------
    src : SplitInput
        An ``images`` or ``tfdata`` split.
    embedder : Embedder or None
        CNN embedder (None: hash-only).
    progress : callable or None
        ``progress("fingerprint", done, total)`` after each chunk.
    done0, total : int
        Offset and total passed to ``progress`` (total 0 when unknown).
    chunk_size : int, optional
        Images per chunk (default :data:`splitaudit.sources.arrays.CHUNK`, at least the
        embedder's batch size).

    Returns
    -------
    samples : list of Sample
        One per image, ``index`` = position in the input, ``path`` = ``"<split>[<index>]"``.
    table : FingerprintTable
    """
    from splitaudit.sources.arrays import CHUNK

    size = chunk_size or max(CHUNK, embedder.batch_size if embedder is not None else 0)
    cols = _Columns()
    samples: list[Sample] = []
    done = done0
    for chunk in src.chunks(size):
        _fingerprint_chunk(chunk, cols, embedder)
        for j, label in enumerate(chunk.labels):
            i = chunk.start + j
            samples.append(Sample(src.split, f"{src.split}[{i}]", None, label, None, i))
        done += len(chunk.images)
        if progress is not None:
            progress("fingerprint", done, total)
    table = cols.table(embedder.dim if embedder is not None else None)
    return samples, table


def concat_tables(tables: list[FingerprintTable]) -> FingerprintTable:
    """Stack fingerprint tables row-wise (errors re-indexed); column sets must agree."""
    if len(tables) == 1:
        return tables[0]
    cols = {}
    for f in dataclasses.fields(FingerprintTable):
        values = [getattr(t, f.name) for t in tables]
        if f.name == "errors":
            merged, offset = {}, 0
            for t in tables:
                merged.update({offset + i: r for i, r in t.errors.items()})
                offset += len(t)
            cols[f.name] = merged
        elif f.name == "content_keys":
            cols[f.name] = [k for t in tables for k in (t.content_keys or [None] * len(t))]
        elif all(v is None for v in values):
            cols[f.name] = None
        elif any(v is None for v in values):
            if f.name == "properties":  # a part without properties: NaN rows
                width = next(v for v in values if v is not None).shape[1]
                values = [v if v is not None else np.full((len(t), width), np.nan, np.float32)
                          for v, t in zip(values, tables)]
                cols[f.name] = np.concatenate(values)
            else:
                raise ValueError(f"column {f.name!r} is missing from some tables")
        else:
            cols[f.name] = np.concatenate(values)
    return FingerprintTable(**cols)


def fingerprint_inputs(
    inputs: Inputs,
    *,
    embedder=None,
    workers: int | None = None,
    max_pixels: int | None = None,
    progress: ProgressFn | None = None,
) -> tuple[SampleSet, FingerprintTable]:
    """Fingerprint every image split of an :func:`~splitaudit.audit` call.

    File splits go through :func:`splitaudit.extract.extract` (worker processes, decoding);
    array and tf.data splits are streamed by :func:`fingerprint_stream`. Rows follow the
    split order of ``inputs``.

    Returns
    -------
    samples : SampleSet
    table : FingerprintTable
    """
    known = [s.n for s in inputs.splits]
    total = sum(known) if all(n is not None for n in known) else 0
    parts: list[tuple[list[Sample], FingerprintTable]] = []
    done = 0
    for src in inputs.splits:
        if src.kind == FILES:
            def file_progress(stage: str, d: int, t: int, base: int = done) -> None:
                if progress is not None:
                    progress(stage, base + d, total)

            table = extract(src.files, embedder=embedder, workers=workers, max_pixels=max_pixels,
                            progress=file_progress)
            parts.append((list(src.files), table))
        elif src.kind in (IMAGES, TFDATA):
            parts.append(fingerprint_stream(src, embedder=embedder, progress=progress, done0=done,
                                            total=total))
        else:
            raise ValueError(f"split {src.split!r} holds {src.kind}, not images")
        done += len(parts[-1][0])
    samples = [s for part, _ in parts for s in part]
    table = concat_tables([t for _, t in parts])
    sample_set = SampleSet(root=inputs.root, splits=[s.split for s in inputs.splits], samples=samples,
                           skipped=list(inputs.skipped), layout=inputs.layout, notes=[])
    return sample_set, table
