"""Read, decode and fingerprint every sample; run the CNN on the way.

This is the I/O edge of the pipeline: worker processes read and decode files and compute the
per-image fingerprints (:mod:`splitaudit.fingerprints.hashes`), while the main process runs
the CNN on the images they send back. A bounded window of chunks in flight keeps both busy
without buffering the whole dataset in memory.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
import sys
import time
from collections import deque
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from splitaudit._os import available_cores
from splitaudit.errors import DecodeError
from splitaudit.fingerprints.chunk import ChunkFingerprints, fingerprint_chunk
from splitaudit.fingerprints.hashes import DIGEST_BYTES, HASH_BYTES, THUMB_SIZE, file_digest
from splitaudit.fingerprints.properties import PROPERTIES_VERSION, PROPERTY_NAMES
from splitaudit.imaging import _read_file, load_rgb_bytes
from splitaudit.sources.base import Sample

#: Files per task sent to a worker: large enough to amortise inter-process overhead.
CHUNK = 64
#: Below this many samples, work in-process: starting workers costs more than it saves.
MIN_PARALLEL = 256
#: Smallest shorter side decoded for the fingerprints: the 32x32 thumbnail is made from at
#: least twice its size, and the properties are measured at 64 px (``SHARPNESS_SIDE``). For a
#: 256 px JPEG that is libjpeg's 1/4 scale: ~15% less decode time than 1/2, and a smaller image
#: for the thumbnail and the properties.
MIN_DECODE_SIDE = 64
#: Smallest shorter side decoded when the CNN runs too: its 112 px input is resized from at
#: least 128 px, as the CNN's accuracy figures were measured (decoding at 112 px gave the same
#: recall on benchmarks/accuracy.py, 98.34%; it would change every cached CNN fingerprint).
CNN_MIN_DECODE_SIDE = 128
#: Images whose shorter side is below this decode at full size, so that their pixel digests
#: can prove "same pixels" (a PNG and a BMP of one picture); only larger ones are reduced.
FULL_SIZE_BELOW = 256
#: Bytes of CNN inputs decoded ahead while the model is still being built (TensorFlow's import
#: and the weights take seconds of one core; the decoders use the other meanwhile): 192 MB is
#: 5,100 images at the default 112 px. A 20,000-image full scan took 58.5 s with it, 59-61 s
#: with 64 MB (the buffer is drained as soon as the model runs).
EARLY_DECODE_BYTES = 192 << 20

ProgressFn = Callable[[str, int, int], None]


@dataclass
class FingerprintTable:
    """Fingerprints of N samples as column arrays (row i = sample i).

    Rows of samples that could not be decoded hold zeros and ``ok[i]`` is False; their
    reasons are in ``errors``. ``content_keys[i]`` is the BLAKE2b-128 digest of sample i's
    bytes (also for files that do not decode; None when the file could not be read): the key
    of the fingerprint cache and of the incremental matcher. ``properties`` holds one float32
    row per sample, columns named by
    :data:`~splitaudit.fingerprints.properties.PROPERTY_NAMES` (NaN rows for samples that
    did not decode; None in tables made without properties).
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
    content_keys: list[bytes | None] | None = None
    properties: np.ndarray | None = None

    @classmethod
    def allocate(cls, n: int, embedding_dim: int | None) -> "FingerprintTable":
        """Zero-filled table for n samples (NaN-filled properties)."""
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
            properties=np.full((n, len(PROPERTY_NAMES)), np.nan, np.float32),
        )

    def __len__(self) -> int:
        return len(self.ok)


@dataclass
class _ChunkResult:
    indices: list[int]  # table rows of the samples that decoded, in the order of ``fp``
    fp: ChunkFingerprints | None  # None when no sample of the chunk decoded
    sizes: np.ndarray  # (len(indices), 2) int32: original width and height of each
    errors: list[tuple[int, str, bytes | None]]  # (index, reason, digest of the bytes if read)


def _work(task: tuple[list[tuple[int, str]], int | None, int, int]) -> _ChunkResult:
    """Decode and fingerprint one chunk of files (runs in a worker process)."""
    items, cnn_size, min_side, max_pixels = task
    indices, raws, digests, rgbs, infos, reduced, errors = [], [], [], [], [], [], []
    for index, path in items:
        # Same as imaging.read_and_decode, split so that a file that does not decode still
        # gets a content digest (its reason is cached by content like any fingerprint).
        try:
            raw = _read_file(path)
        except DecodeError as exc:
            errors.append((index, exc.reason, None))
            continue
        digest = file_digest(raw)
        try:
            rgb, info = load_rgb_bytes(raw, min_side=min_side, max_pixels=max_pixels,
                                       full_size_below=FULL_SIZE_BELOW)
        except DecodeError as exc:
            errors.append((index, exc.reason, digest))
            continue
        indices.append(index)
        raws.append(raw)
        digests.append(digest)
        rgbs.append(rgb)
        infos.append(info)
        reduced.append(rgb.shape[0] != info.height or rgb.shape[1] != info.width)
    fp = None
    if indices:
        fp = fingerprint_chunk(raws, rgbs, infos, reduced=reduced, cnn_size=cnn_size,
                               file_digests=digests)
    sizes = np.array([(info.width, info.height) for info in infos], np.int32).reshape(-1, 2)
    return _ChunkResult(indices, fp, sizes, errors)


#: Scheduling priority decrease of decoding workers while the CNN runs in the main process.
#: TensorFlow splits every op over all cores and waits for its slowest thread: a decoder
#: sharing a core at equal priority stalls each op. At lower priority the decoders take the
#: cores mostly when TensorFlow leaves them idle: on 2,000 256 px JPEGs the fingerprint stage
#: went from 0.69-0.78 to 0.81-0.86 of the CNN's own throughput (nice 19: 0.75-0.77).
CNN_WORKER_NICE = 10


def _lower_priority(increment: int) -> None:
    """Pool initializer: make this worker yield its core to the main process's CNN."""
    try:
        os.nice(increment)
    except (AttributeError, OSError):
        pass  # no nice() on this platform: run at normal priority


def _context() -> multiprocessing.context.BaseContext:
    # fork is cheapest and safe while no TensorFlow threads exist; once TF is loaded in this
    # process a forked child could inherit a held lock, so start clean interpreters instead.
    if sys.platform.startswith("linux") and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def default_workers() -> int:
    """Decoding processes to start: one per core.

    With the CNN too (they then run at lower priority, :data:`CNN_WORKER_NICE`): on 2 cores a
    20,000-image full scan took 60.2 s with two, 62.5 s with one.
    """
    return max(1, available_cores())


@dataclass
class ScanPool:
    """The worker processes of one scan: they decode, then verify candidate pairs."""

    pool: multiprocessing.pool.Pool
    size: int

    def run_ordered(self, fn: Callable, jobs: Iterator, *, window: int | None = None,
                    share: bool = False) -> Iterator:
        """``fn(job)`` of every job, in order.

        At most ``window`` (default two per worker) jobs are in flight, so a stream of large
        jobs is never all held at once. With ``share`` this process computes every
        (size + 1)-th job itself while the workers run the others (when it has nothing else
        to do: not while it feeds the CNN).
        """
        window = window or 2 * self.size
        pending: deque = deque()
        for j, job in enumerate(jobs):
            if share and j % (self.size + 1) == self.size:
                pending.append((None, fn(job)))  # our share, computed while the workers run
            else:
                pending.append((self.pool.apply_async(fn, (job,)), None))
            while len(pending) > window:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())


def _result(item: tuple) -> object:
    future, value = item
    return value if future is None else future.get()


@contextlib.contextmanager
def scan_pool(workers: int | None, n_samples: int, *, with_cnn: bool) -> Iterator[ScanPool | None]:
    """The worker processes of a scan, or None (``workers`` 0, or too few samples to pay off).

    Create it before this process starts any thread (forking is safe only then): a scan
    starts its background work (the CNN build, imports) once the pool exists. With the CNN
    the workers run at lower priority (:data:`CNN_WORKER_NICE`).
    """
    if workers is None:
        workers = default_workers()
    if workers == 0 or n_samples < MIN_PARALLEL:
        yield None
        return
    ctx = _context()
    # Imported once here, not by each worker: phash_batch's DCT, and the verification's
    # sparse products and blur (8 + 26 ms once scipy.fftpack is in).
    import scipy.fftpack  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import scipy.sparse  # noqa: F401

    init = (_lower_priority, (CNN_WORKER_NICE,)) if with_cnn else (None, ())
    with ctx.Pool(workers, initializer=init[0], initargs=init[1]) as pool:
        yield ScanPool(pool, workers)


def extract(
    samples: Sequence[Sample],
    *,
    embedder=None,
    workers: int | None = None,
    max_pixels: int | None = None,
    progress: ProgressFn | None = None,
    cache=None,
    pool: ScanPool | None = None,
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
    cache : FingerprintCache or None
        Persistent cache (:mod:`splitaudit.cache`), already configured with this scan's
        identities. Samples whose (path, size, mtime) match a cached row are filled from it
        without reading the file; files whose bytes hash to known content are not decoded;
        only the rest go to the workers, and their results are written back every few hundred
        files (so an interrupted scan resumes). When the cache fails it disables itself (with
        a notice) and the scan starts over without it.
    pool : ScanPool or None
        Worker processes to decode with (:func:`scan_pool`), left open for the caller's
        next stage; by default the decoding makes its own (``workers`` of them) and closes
        them, and builds the CNN model beside them.

    Returns
    -------
    FingerprintTable
    """
    if cache is not None and cache.enabled:
        from splitaudit.cache import CacheError

        try:
            return _extract_cached(samples, embedder, workers, max_pixels, progress, cache, pool)
        except CacheError:
            pass  # the cache has said why and disabled itself; start over without it
    n = len(samples)
    table = FingerprintTable.allocate(n, embedder.dim if embedder is not None else None)
    table.content_keys = [None] * n
    _fingerprint(samples, list(range(n)), table, embedder, workers, max_pixels, progress, 0, None,
                 pool)
    return table


def decode_side(cnn_size: int | None) -> int:
    """Smallest shorter side decoded for the fingerprints (and the CNN input, if any)."""
    return MIN_DECODE_SIDE if cnn_size is None else max(CNN_MIN_DECODE_SIDE, cnn_size)


def fingerprint_identity(embedder=None, max_pixels: int | None = None) -> str:
    """Everything besides the file bytes that a fingerprint row depends on (for caches)."""
    from splitaudit.imaging import DEFAULT_MAX_PIXELS

    cnn_size = embedder.input_size if embedder is not None else None
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    return (f"min_side={decode_side(cnn_size)}|full_below={FULL_SIZE_BELOW}"
            f"|max_pixels={limit}|thumb={THUMB_SIZE}|props={PROPERTIES_VERSION}")


class _Sink:
    """Receives results as they are computed (the cache writes them back)."""

    def chunk(self, table: FingerprintTable, res: _ChunkResult) -> None:  # pragma: no cover
        raise NotImplementedError

    def embedded(self, table: FingerprintTable, idx: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError


def _fingerprint(
    samples: Sequence[Sample],
    todo: list[int],
    table: FingerprintTable,
    embedder,
    workers: int | None,
    max_pixels: int | None,
    progress: ProgressFn | None,
    done0: int,
    sink: _Sink | None,
    pool: ScanPool | None = None,
) -> None:
    """Decode, fingerprint (and embed) the samples at indices ``todo`` into ``table``."""
    from splitaudit.imaging import DEFAULT_MAX_PIXELS

    n = len(samples)
    cnn_size = embedder.input_size if embedder is not None else None
    min_side = decode_side(cnn_size)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    # Made chunk by chunk as the workers need them: a list of every path up front was
    # 0.15 KB per sample of peak memory.
    tasks = (([(i, os.fspath(samples[i].abspath)) for i in todo[start:start + CHUNK]],
              cnn_size, min_side, limit) for start in range(0, len(todo), CHUNK))
    pending_idx: list[int] = []
    pending_img: list[np.ndarray] = []
    done = done0
    keys = table.content_keys

    early = max(embedder.batch_size, EARLY_DECODE_BYTES // (3 * cnn_size ** 2)) if embedder else 0

    def flush(force: bool) -> None:
        batch = embedder.batch_size
        if not force and not embedder.ready and len(pending_idx) < early:
            return  # the model is still being built: keep decoding ahead
        while pending_idx and (force or len(pending_idx) >= batch):
            take = len(pending_idx) if force else batch
            imgs = np.concatenate(pending_img) if len(pending_img) > 1 else pending_img[0]
            idx = np.asarray(pending_idx[:take])
            table.embeddings[idx] = embedder.embed(imgs[:take]).astype(np.float16)
            if sink is not None:
                sink.embedded(table, idx)
            rest = imgs[take:]
            pending_idx[:] = pending_idx[take:]
            pending_img[:] = [rest] if len(rest) else []

    def absorb(res: _ChunkResult) -> None:
        nonlocal done
        for index, reason, digest in res.errors:
            table.errors[index] = reason
            if keys is not None:
                keys[index] = digest
        fp = res.fp
        if fp is not None:
            idx = np.asarray(res.indices)
            table.ok[idx] = True
            table.file_digest[idx] = fp.file_digest
            table.pixel_digest[idx] = fp.pixel_digest
            table.phash[idx] = fp.phash
            table.phash_flip[idx] = fp.phash_flip
            table.thumbs[idx] = fp.thumbs
            table.width[idx] = res.sizes[:, 0]
            table.height[idx] = res.sizes[:, 1]
            if fp.properties is not None and table.properties is not None:
                table.properties[idx] = fp.properties
            if keys is not None:
                for index, digest in zip(res.indices, fp.file_digest):
                    keys[index] = digest.tobytes()
        if sink is not None:
            sink.chunk(table, res)
        if fp is not None and fp.cnn is not None:
            pending_idx.extend(res.indices)
            pending_img.append(fp.cnn)
            flush(False)
        done += len(res.indices) + len(res.errors)
        if progress is not None:
            progress("fingerprint", done, n)

    if not todo:
        return
    with scan_pool(workers, len(todo), with_cnn=embedder is not None) if pool is None \
            else contextlib.nullcontext(pool) as workers_pool:
        if workers_pool is None:
            results: Iterator[_ChunkResult] = map(_work, tasks)
        else:
            if embedder is not None:
                embedder.start_build()  # the processes exist: see Embedder.start_build
            # A few chunks per worker in flight: enough to hide latency, few enough that decoded
            # images never pile up faster than the CNN consumes them.
            results = workers_pool.run_ordered(_work, tasks, window=3 * workers_pool.size)
        for res in results:
            absorb(res)
    if embedder is not None:
        flush(True)
        embedder.wait_build()  # even with nothing embedded: no import may still run after this


class _CacheSink(_Sink):
    """Writes fingerprints back to the cache, committing every few hundred files."""

    def __init__(self, cache, samples, probe, with_embeddings: bool) -> None:
        from splitaudit.cache import COMMIT_ROWS, COMMIT_SECONDS, ContentRow

        self.cache, self.probe, self.with_embeddings = cache, probe, with_embeddings
        self.row_type = ContentRow
        self.rows_limit, self.seconds_limit = COMMIT_ROWS, COMMIT_SECONDS
        self.files: list[tuple] = []
        self.contents: list = []
        self.embeddings: list[tuple[bytes, bytes]] = []
        self.last = time.monotonic()
        self.now = time.time_ns()

    def _file(self, index: int, digest: bytes) -> None:
        st = self.probe.stat[index]
        if st is not None:  # stat was taken before the read: a later change shows next time
            self.files.append((self.probe.path_keys[index], st[0], st[1], self.now, digest))

    def chunk(self, table: FingerprintTable, res: _ChunkResult) -> None:
        row = self.row_type
        for index, reason, digest in res.errors:
            if digest is not None:  # read errors (permissions, ...) are not a property of content
                self.contents.append(row(digest, False, error=reason))
                self._file(index, digest)
        fp = res.fp
        for j, index in enumerate(res.indices):
            fd = fp.file_digest[j].tobytes()
            # A chunk made without properties stores none: such rows are fingerprinted again.
            p = None if fp.properties is None else fp.properties[j].tobytes()
            self.contents.append(row(fd, True, fp.pixel_digest[j].tobytes(), fp.phash[j].tobytes(),
                                     fp.phash_flip[j].tobytes(), fp.thumbs[j].tobytes(),
                                     int(res.sizes[j, 0]), int(res.sizes[j, 1]), properties=p))
            self._file(index, fd)
        self.cache.stats.decoded += len(res.indices) + sum(1 for e in res.errors if e[2] is not None)
        self.maybe_commit()

    def embedded(self, table: FingerprintTable, idx: np.ndarray) -> None:
        vecs = table.embeddings[idx]
        for j, index in enumerate(idx.tolist()):
            self.embeddings.append((table.content_keys[index], vecs[j].tobytes()))
        self.cache.stats.embedded += len(idx)
        self.maybe_commit()

    def maybe_commit(self, force: bool = False) -> None:
        pending = len(self.files) + len(self.embeddings)
        if not pending and not self.contents:
            return
        if force or pending >= self.rows_limit or time.monotonic() - self.last >= self.seconds_limit:
            # Contents and embeddings go in before (or with) the file rows that point at them.
            self.cache.store(self.files, self.contents, self.embeddings)
            self.files, self.contents, self.embeddings = [], [], []
            self.last = time.monotonic()


def _extract_cached(samples, embedder, workers, max_pixels, progress, cache,
                    pool=None) -> FingerprintTable:
    """:func:`extract` with a cache: fill what is known, fingerprint the rest, write it back."""
    n = len(samples)
    with_emb = embedder is not None
    table = FingerprintTable.allocate(n, embedder.dim if with_emb else None)
    keys: list[bytes | None] = [None] * n
    table.content_keys = keys
    stats = cache.stats
    stats.files = n
    probe = cache.probe(samples)
    complete = cache.complete(None, embeddings=with_emb)
    ready: dict[int, bytes] = {}
    todo: list[int] = []
    for i, d in enumerate(probe.keys):
        if d is not None and d in complete:
            ready[i] = d
        else:
            todo.append(i)
    stats.reused = len(ready)

    # Files whose (size, mtime) changed or that are new may hold known bytes (touched by a git
    # checkout, renamed, copied): reading and hashing is far cheaper than decoding. When most
    # files are new (first scan, resumed scan) only paths already recorded are re-checked.
    sink = _CacheSink(cache, samples, probe, with_emb)
    if todo and complete:
        check = todo if len(todo) <= n // 2 else [i for i in todo if probe.known[i] is not None]
        hit = set()
        for i in check:
            if probe.stat[i] is None:
                continue
            try:
                raw = _read_file(os.fspath(samples[i].abspath))
            except DecodeError:
                continue  # the decode pass reports it
            d = file_digest(raw)
            if d in complete:
                ready[i] = d
                hit.add(i)
                sink._file(i, d)
        if hit:
            todo = [i for i in todo if i not in hit]
            stats.rehashed += len(hit)

    # Fill the known rows from the cache, column by column.
    if ready:
        n_props = len(PROPERTY_NAMES)
        rows = cache.load_contents(set(ready.values()))
        embs = cache.load_embeddings(set(ready.values())) if with_emb else {}
        ok_idx, ok_rows, missing = [], [], []
        for i, d in ready.items():
            r = rows.get(d)
            if r is None or (with_emb and r.ok and len(embs.get(d, b"")) != 2 * embedder.dim):
                missing.append(i)  # removed meanwhile by a concurrent run: fingerprint again
                continue
            if r.ok and len(r.properties or b"") != n_props * 4:
                missing.append(i)  # a row without (or with other) properties: fingerprint again
                continue
            keys[i] = d
            if r.ok:
                ok_idx.append(i)
                ok_rows.append(r)
            else:
                table.errors[i] = r.error or "unreadable"
        if ok_idx:
            idx = np.asarray(ok_idx)
            table.ok[idx] = True
            table.file_digest[idx] = np.frombuffer(b"".join(r.digest for r in ok_rows), np.uint8).reshape(-1, DIGEST_BYTES)
            table.pixel_digest[idx] = np.frombuffer(b"".join(r.pixel_digest for r in ok_rows), np.uint8).reshape(-1, DIGEST_BYTES)
            table.phash[idx] = np.frombuffer(b"".join(r.phash for r in ok_rows), np.uint8).reshape(-1, HASH_BYTES)
            table.phash_flip[idx] = np.frombuffer(b"".join(r.phash_flip for r in ok_rows), np.uint8).reshape(-1, HASH_BYTES)
            table.thumbs[idx] = np.frombuffer(b"".join(r.thumb for r in ok_rows), np.uint8).reshape(-1, THUMB_SIZE, THUMB_SIZE)
            table.width[idx] = [r.width for r in ok_rows]
            table.height[idx] = [r.height for r in ok_rows]
            table.properties[idx] = np.frombuffer(
                b"".join(r.properties for r in ok_rows), np.float32).reshape(len(ok_rows), n_props)
            if with_emb:
                table.embeddings[idx] = np.frombuffer(
                    b"".join(embs[r.digest] for r in ok_rows), np.float16).reshape(len(ok_rows), -1)
        if missing:
            todo = sorted(set(todo) | set(missing))
            stats.reused -= sum(1 for i in missing if probe.keys[i] is not None)
        if progress is not None:
            progress("fingerprint", n - len(todo), n)

    _fingerprint(samples, todo, table, embedder, workers, max_pixels, progress, n - len(todo), sink,
                 pool)
    sink.maybe_commit(force=True)
    return table
