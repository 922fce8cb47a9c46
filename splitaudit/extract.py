"""Read, decode and fingerprint every sample; run the CNN on the way.

This is the I/O edge of the pipeline: worker processes read and decode files and compute the
per-image fingerprints (:mod:`splitaudit.fingerprints.hashes`), while the main process runs
the CNN on the images they send back. A bounded window of chunks in flight keeps both busy
without buffering the whole dataset in memory.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from splitaudit.errors import DecodeError
from splitaudit.fingerprints.hashes import DIGEST_BYTES, HASH_BYTES, THUMB_SIZE, fingerprint_image
from splitaudit.imaging import read_and_decode
from splitaudit.sources.base import Sample

#: Files per task sent to a worker: large enough to amortise inter-process overhead.
CHUNK = 64
#: Below this many samples, work in-process: starting workers costs more than it saves.
MIN_PARALLEL = 256
#: Smallest decode size. The 32x32 thumbnail needs far less, but images whose shorter side is
#: under twice this decode at full size, so their pixel digests can prove "same pixels".
MIN_DECODE_SIDE = 128

ProgressFn = Callable[[str, int, int], None]


@dataclass
class FingerprintTable:
    """Fingerprints of N samples as column arrays (row i = sample i).

    Rows of samples that could not be decoded hold zeros and ``ok[i]`` is False; their
    reasons are in ``errors``.
    """

    ok: np.ndarray
    file_digest: np.ndarray
    pixel_digest: np.ndarray
    phash: np.ndarray
    phash_flip: np.ndarray
    thumbs: np.ndarray
    width: np.ndarray
    height: np.ndarray
    embeddings: np.ndarray | None = None
    errors: dict[int, str] = field(default_factory=dict)

    @classmethod
    def allocate(cls, n: int, embedding_dim: int | None) -> "FingerprintTable":
        """Zero-filled table for n samples."""
        return cls(
            ok=np.zeros(n, bool),
            file_digest=np.zeros((n, DIGEST_BYTES), np.uint8),
            pixel_digest=np.zeros((n, DIGEST_BYTES), np.uint8),
            phash=np.zeros((n, HASH_BYTES), np.uint8),
            phash_flip=np.zeros((n, HASH_BYTES), np.uint8),
            thumbs=np.zeros((n, THUMB_SIZE, THUMB_SIZE), np.uint8),
            width=np.zeros(n, np.int32),
            height=np.zeros(n, np.int32),
            # float16 halves memory; cosine needs no more precision than that.
            embeddings=None if embedding_dim is None else np.zeros((n, embedding_dim), np.float16),
        )

    def __len__(self) -> int:
        return len(self.ok)


@dataclass
class _ChunkResult:
    indices: list[int]
    rows: list[tuple]  # (file_digest, pixel_digest, phash, phash_flip, thumb, w, h)
    cnn: np.ndarray | None
    errors: list[tuple[int, str]]


def _work(task: tuple[list[tuple[int, str]], int | None, int, int]) -> _ChunkResult:
    """Decode and fingerprint one chunk of files (runs in a worker process)."""
    items, cnn_size, min_side, max_pixels = task
    indices, rows, cnn, errors = [], [], [], []
    for index, path in items:
        try:
            raw, rgb, info = read_and_decode(path, min_side=min_side, max_pixels=max_pixels)
        except DecodeError as exc:
            errors.append((index, exc.reason))
            continue
        reduced = rgb.shape[0] != info.height or rgb.shape[1] != info.width
        fp = fingerprint_image(raw, rgb, cnn_size=cnn_size, reduced=reduced)
        indices.append(index)
        rows.append(
            (fp.file_digest, fp.pixel_digest, fp.phash, fp.phash_flip, fp.thumb, info.width, info.height)
        )
        if fp.cnn_input is not None:
            cnn.append(fp.cnn_input)
    return _ChunkResult(indices, rows, np.stack(cnn) if cnn else None, errors)


def _context() -> multiprocessing.context.BaseContext:
    # fork is cheapest and safe while no TensorFlow threads exist; once TF is loaded in this
    # process a forked child could inherit a held lock, so start clean interpreters instead.
    if sys.platform.startswith("linux") and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def default_workers(with_cnn: bool) -> int:
    """Decoding processes to start: every core, less one for the CNN when there is one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1) if with_cnn else max(1, cores)


def extract(
    samples: Sequence[Sample],
    *,
    embedder=None,
    workers: int | None = None,
    max_pixels: int | None = None,
    progress: ProgressFn | None = None,
) -> FingerprintTable:
    """Fingerprint every sample (and embed it, when an embedder is given).

    Parameters
    ----------
    samples : sequence of Sample
        Samples with ``abspath`` set.
    embedder : Embedder or None
        CNN embedder; None for a hash-only scan (TensorFlow is then never imported).
    workers : int or None
        Decoding processes; None picks :func:`default_workers`, 0 works in-process.
    max_pixels : int or None
        Decompression-bomb limit passed to the decoder (None: the decoder's default).
    progress : callable or None
        Called as ``progress("fingerprint", done, total)`` after each chunk.

    Returns
    -------
    FingerprintTable
    """
    from splitaudit.imaging import DEFAULT_MAX_PIXELS

    n = len(samples)
    table = FingerprintTable.allocate(n, embedder.dim if embedder is not None else None)
    cnn_size = embedder.input_size if embedder is not None else None
    min_side = max(MIN_DECODE_SIDE, cnn_size or 0)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    items = [(i, os.fspath(s.abspath)) for i, s in enumerate(samples)]
    tasks = [(items[i:i + CHUNK], cnn_size, min_side, limit) for i in range(0, n, CHUNK)]
    if workers is None:
        workers = default_workers(embedder is not None)
    if n < MIN_PARALLEL:
        workers = 0

    pending_idx: list[int] = []
    pending_img: list[np.ndarray] = []
    done = 0

    def flush(force: bool) -> None:
        batch = embedder.batch_size
        while pending_idx and (force or len(pending_idx) >= batch):
            take = len(pending_idx) if force else batch
            imgs = np.concatenate(pending_img) if len(pending_img) > 1 else pending_img[0]
            idx = np.asarray(pending_idx[:take])
            table.embeddings[idx] = embedder.embed(imgs[:take]).astype(np.float16)
            rest = imgs[take:]
            pending_idx[:] = pending_idx[take:]
            pending_img[:] = [rest] if len(rest) else []

    def absorb(res: _ChunkResult) -> None:
        nonlocal done
        for index, reason in res.errors:
            table.errors[index] = reason
        if res.indices:
            idx = np.asarray(res.indices)
            cols = list(zip(*res.rows))
            table.ok[idx] = True
            table.file_digest[idx] = np.frombuffer(b"".join(cols[0]), np.uint8).reshape(-1, DIGEST_BYTES)
            table.pixel_digest[idx] = np.frombuffer(b"".join(cols[1]), np.uint8).reshape(-1, DIGEST_BYTES)
            table.phash[idx] = np.frombuffer(b"".join(cols[2]), np.uint8).reshape(-1, HASH_BYTES)
            table.phash_flip[idx] = np.frombuffer(b"".join(cols[3]), np.uint8).reshape(-1, HASH_BYTES)
            table.thumbs[idx] = np.stack(cols[4])
            table.width[idx] = cols[5]
            table.height[idx] = cols[6]
            if res.cnn is not None:
                pending_idx.extend(res.indices)
                pending_img.append(res.cnn)
                flush(False)
        done += len(res.indices) + len(res.errors)
        if progress is not None:
            progress("fingerprint", done, n)

    if workers == 0:
        for task in tasks:
            absorb(_work(task))
    else:
        ctx = _context()
        with ctx.Pool(workers) as pool:
            # Keep a few chunks per worker in flight: enough to hide latency, few enough that
            # decoded images never pile up faster than the CNN consumes them.
            window: deque = deque()
            it = iter(tasks)
            for task in it:
                window.append(pool.apply_async(_work, (task,)))
                if len(window) >= 3 * workers:
                    absorb(window.popleft().get())
            while window:
                absorb(window.popleft().get())
    if embedder is not None:
        flush(True)
    return table
