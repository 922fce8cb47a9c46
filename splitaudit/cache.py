"""Persistent fingerprint, embedding and match cache: one SQLite database per dataset root.

A second scan of an unchanged dataset should cost little more than listing its files. This
module owns every SQL detail; :mod:`splitaudit.extract` and :mod:`splitaudit.api` talk to it
through :class:`FingerprintCache` methods only.

Layout of the database (``PRAGMA application_id`` = :data:`APPLICATION_ID`,
``PRAGMA user_version`` = :data:`SCHEMA_VERSION`):

``files``
    One row per file, keyed by its path relative to the dataset root: size, ``mtime_ns``, when
    it was checked and the BLAKE2b-128 digest of its bytes. A file whose size and mtime still
    match (and whose mtime was already older than :data:`RACY_NS` when the row was written,
    the "racily clean" rule git uses) is trusted without being read.
``contents``
    Fingerprints keyed by content digest (a renamed or copied file reuses them): pixel digest,
    pHashes, the 32x32 thumbnail, size, the image properties (float32 bytes, ordered like
    :data:`splitaudit.fingerprints.properties.PROPERTY_NAMES`), or the reason the bytes do not
    decode. Each row names the fingerprint identity (splitaudit version + decode settings) it
    was made with.
``embeddings``
    CNN embeddings as float16 bytes, keyed by (content digest, model identity): embeddings of
    another model, weights file, input size, preprocessing or splitaudit version are never
    used.
``match_states``
    The verified pairs of a scan, keyed by everything that changes them (fingerprint and
    model identity, matcher thresholds, split order) and stamped with a digest of the ordered
    (split, path, content digest) list, so an unchanged dataset reuses them and a changed one
    is re-matched incrementally (:mod:`splitaudit.incremental`). Each also keeps a *snapshot*:
    a digest of the ordered (split, path) list and every file's (size, mtime) as arrays, so
    checking that nothing changed costs one ``stat`` per file and no per-file query.
``meta``
    Schema and splitaudit version, dataset root, last identities (for clean-up only: every
    read filters on the identity stored in the row itself, so concurrent runs with different
    settings can never mix results).

Safety: WAL journal and ``busy_timeout`` let several processes scan with the same cache at
once; writes are short transactions committed every :data:`COMMIT_ROWS` files, so a killed
scan resumes with what it had committed. A file that is not one of our databases (garbage, a
truncated file, another application's SQLite file, an older schema) is never trusted: it is
moved aside (``*.bad-<time>``), reported, and a fresh cache is built; a cache of the previous
schema (1: no properties column) is upgraded in place instead, its fingerprints dropped (they
lack properties) and its file and embedding rows kept. Any SQLite error during
a scan disables the cache for the rest of that scan (with a notice); the scan itself goes on.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from splitaudit._version import __version__

#: ``PRAGMA application_id`` of a splitaudit cache ("SPLA").
APPLICATION_ID = 0x53504C41
#: ``PRAGMA user_version``: bump when the tables change (2: ``contents.properties``).
SCHEMA_VERSION = 2
#: Changes whenever the content of a fingerprint row changes meaning (with the version).
FINGERPRINT_FORMAT = "fp2"
#: Commit the rows written so far after this many files (or :data:`COMMIT_SECONDS`).
COMMIT_ROWS = 512
COMMIT_SECONDS = 2.0
#: A file modified less than this long before it was checked may change again within the
#: file system's timestamp granularity without its (size, mtime) changing: such a row is
#: re-hashed next time (cheap: no decode when the digest is unchanged).
RACY_NS = 2_000_000_000
#: Match states kept per database (e.g. the hash-only hook and a full CI scan).
MAX_MATCH_STATES = 4
#: Seconds to wait for another process's write lock.
BUSY_TIMEOUT_S = 60.0

_TABLES = ("meta", "files", "contents", "embeddings", "match_states")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    checked_ns INTEGER NOT NULL, digest BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contents (
    digest BLOB PRIMARY KEY, fp TEXT NOT NULL, ok INTEGER NOT NULL,
    pixel_digest BLOB, phash BLOB, phash_flip BLOB, thumb BLOB,
    width INTEGER, height INTEGER, error TEXT, properties BLOB
);
CREATE TABLE IF NOT EXISTS embeddings (
    digest BLOB NOT NULL, model TEXT NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (digest, model)
);
CREATE TABLE IF NOT EXISTS match_states (
    key TEXT PRIMARY KEY, created_ns INTEGER NOT NULL, state_digest BLOB NOT NULL,
    result BLOB NOT NULL, keys BLOB NOT NULL, candidates BLOB NOT NULL,
    paths_digest BLOB NOT NULL, checked_ns INTEGER NOT NULL, stat BLOB NOT NULL
);
"""

NoticeFn = Callable[[str], None]


class CacheError(Exception):
    """The cache failed during a scan; it has disabled itself and said why."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/splitaudit``, else ``~/.cache/splitaudit``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    if not base or not os.path.isabs(base):  # the XDG spec: relative values are ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "splitaudit"


def cache_file_name(root: str | os.PathLike) -> str:
    """Database name for a dataset root: its folder name plus a hash of its absolute path."""
    absolute = os.path.abspath(os.fspath(root))
    digest = hashlib.blake2b(os.fsencode(absolute), digest_size=8).hexdigest()
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(absolute))
    return f"{base[:40] or 'root'}-{digest}.sqlite3"


def _is_corruption(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return True
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def _is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_READONLY",
                        "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PERM")):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("locked", "busy", "unable to open", "readonly", "disk i/o", "full"))


@dataclass
class CacheStats:
    """What the cache did during one scan (reported under ``settings["cache"]``)."""

    path: str = ""
    files: int = 0
    reused: int = 0  # (size, mtime) matched: not read at all
    rehashed: int = 0  # read and hashed, content already known: not decoded
    decoded: int = 0  # decoded and fingerprinted (written back)
    embedded: int = 0  # CNN embeddings computed (written back)
    matches: str = ""  # "reused", "incremental (N changed)", "full"
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "path": self.path, "files": self.files, "reused": self.reused,
            "rehashed": self.rehashed, "decoded": self.decoded, "embedded": self.embedded,
            "matches": self.matches, "events": list(self.events),
        }


@dataclass
class Probe:
    """Result of :meth:`FingerprintCache.probe`: one entry per sample, in order.

    ``keys[i]`` is the (trusted) content digest of sample i, or None when the file must be read;
    ``stat[i]`` is its (size, mtime_ns) taken before any read, or None when stat failed;
    ``known[i]`` is the digest recorded for the path even when no longer trusted.
    """

    keys: list[bytes | None]
    stat: list[tuple[int, int] | None]
    known: list[bytes | None]
    path_keys: list[bytes]
    started_ns: int = 0

    def snapshot_stat(self) -> bytes:
        """Sizes then mtimes as int64 bytes (empty when a file could not be stat'ed)."""
        if any(st is None for st in self.stat):
            return b""
        import numpy as np

        arr = np.asarray(self.stat, np.int64).reshape(-1, 2)
        return arr[:, 0].tobytes() + arr[:, 1].tobytes()


@dataclass
class ContentRow:
    """Fingerprints of one content digest, as stored."""

    digest: bytes
    ok: bool
    pixel_digest: bytes | None = None
    phash: bytes | None = None
    phash_flip: bytes | None = None
    thumb: bytes | None = None
    width: int = 0
    height: int = 0
    error: str | None = None
    properties: bytes | None = None  # float32 row, PROPERTY_NAMES order


class FingerprintCache:
    """The cache database of one dataset root (see the module docstring).

    Use :meth:`open`; every method either works or raises :class:`CacheError` after disabling
    the cache and reporting why through ``notice``.
    """

    def __init__(self, path: Path, root: Path, conn: sqlite3.Connection, notice: NoticeFn | None) -> None:
        self.path = path
        self.root = root
        self._conn: sqlite3.Connection | None = conn
        self._notice = notice
        self._root_prefix = os.path.join(os.fspath(root), "")
        self.stats = CacheStats(path=os.fspath(path))
        self.fp_identity: str | None = None
        self.model_identity: str | None = None
        self._probe_for: tuple[int, int] | None = None
        self._probe: Probe | None = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        root: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        *,
        notice: NoticeFn | None = None,
    ) -> "FingerprintCache | None":
        """Open (or create) the cache of ``root``; None, with a notice, when impossible.

        Parameters
        ----------
        root : path
            Dataset root; cached paths are relative to it.
        cache_dir : path, optional
            Folder of the database (default :func:`default_cache_dir`).
        notice : callable, optional
            Receives one line per event worth telling the user (a rebuilt cache, ...).
        """
        root = Path(os.path.abspath(os.fspath(root)))
        folder = Path(os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))) if cache_dir else default_cache_dir()
        path = folder / cache_file_name(root)
        events: list[str] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _say(notice, events, f"cache disabled: cannot create {folder} ({exc.strerror or exc})")
            return None
        for attempt in range(2):
            try:
                conn = _connect(path)
                problem = _validate(conn)
                if problem is None:
                    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('root', ?)",
                                 (os.fspath(root),))
                    cache = cls(path, root, conn, notice)
                    cache.stats.events.extend(events)
                    return cache
                conn.close()
            except sqlite3.Error as exc:
                if not _is_corruption(exc) and _is_busy(exc):
                    _say(notice, events, f"cache disabled for this scan: {path} is busy ({exc})")
                    return None
                problem = f"unreadable ({exc})"
            except OSError as exc:
                _say(notice, events, f"cache disabled: cannot open {path} ({exc})")
                return None
            if attempt == 1:
                break
            aside = _move_aside(path)
            where = f"moved to {aside.name}" if aside is not None else "removed"
            _say(notice, events, f"cache {path} was {problem}; it was {where} and a new cache is "
                                 "being built (this scan fingerprints every file again)")
        _say(notice, events, f"cache disabled: could not create a usable cache at {path}")
        return None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    @property
    def enabled(self) -> bool:
        """False once the cache has disabled itself (or was closed)."""
        return self._conn is not None

    def _fail(self, exc: BaseException) -> CacheError:
        """Disable the cache after an error; quarantine the file when it is corrupt."""
        detail = f"{type(exc).__name__}: {exc}"
        corrupt = isinstance(exc, sqlite3.Error) and _is_corruption(exc)
        self.close()
        if corrupt:
            aside = _move_aside(self.path)
            where = f"moved to {aside.name}" if aside is not None else "removed"
            msg = (f"cache {self.path} is corrupt ({detail}); it was {where} and will be rebuilt "
                   "next time; this scan goes on without it")
        else:
            msg = f"cache disabled for the rest of this scan ({detail})"
        _say(self._notice, self.stats.events, msg)
        return CacheError(msg)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CacheError("cache is disabled")
        return self._conn

    def _write(self, body: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``body`` in one write transaction (BEGIN IMMEDIATE ... COMMIT)."""
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                body(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        conn = self._db()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def _write_meta(self, values: dict[str, str], *, only_missing: bool = False) -> None:
        verb = "INSERT OR IGNORE" if only_missing else "INSERT OR REPLACE"

        def body(conn: sqlite3.Connection) -> None:
            conn.executemany(f"{verb} INTO meta (key, value) VALUES (?, ?)", list(values.items()))

        self._write(body)

    def meta(self) -> dict[str, str]:
        """The ``meta`` table as a dict."""
        return dict(self._read("SELECT key, value FROM meta WHERE key NOT LIKE 'checks:%'"))

    def load_checks(self, key: str) -> str | None:
        """The JSON of the check results stored for match state ``key``, or None."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (f"checks:{key}",))
        return rows[0][0] if rows else None

    def store_checks(self, key: str, value: str) -> None:
        """Keep the check results (JSON) of match state ``key`` (one entry per state key)."""
        self._write_meta({f"checks:{key}": value})

    # ------------------------------------------------------------------ identities

    def configure(self, fp_identity: str, model_identity: str | None) -> None:
        """Name the fingerprint and model identities of this scan.

        Rows made with other identities are never read (every query filters on them). When the
        identity differs from the one last recorded, rows of the old one are deleted to keep
        the file small: hashes of another decode setting or splitaudit version, embeddings of
        another model. A hash-only scan (``model_identity=None``) leaves embeddings alone, so
        alternating the hash-only hook and a full scan keeps both.
        """
        self.fp_identity = f"{FINGERPRINT_FORMAT}|splitaudit={__version__}|{fp_identity}"
        self.model_identity = None if model_identity is None else f"splitaudit={__version__}|{model_identity}"
        old = self.meta()
        if old.get("fingerprint_identity") != self.fp_identity:
            if old.get("fingerprint_identity"):
                self.stats.events.append("fingerprint identity changed: old fingerprints dropped")

            def drop_fp(conn: sqlite3.Connection) -> None:
                conn.execute("DELETE FROM contents WHERE fp != ?", (self.fp_identity,))
                conn.execute("DELETE FROM match_states")
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint_identity', ?)", (self.fp_identity,))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('splitaudit_version', ?)", (__version__,))

            self._write(drop_fp)
        if self.model_identity is not None and old.get("model_identity") != self.model_identity:
            if old.get("model_identity"):
                self.stats.events.append("model identity changed: old embeddings dropped")

            def drop_model(conn: sqlite3.Connection) -> None:
                conn.execute("DELETE FROM embeddings WHERE model != ?", (self.model_identity,))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('model_identity', ?)", (self.model_identity,))

            self._write(drop_model)

    # ------------------------------------------------------------------ files

    def path_key(self, abspath: str) -> bytes:
        """Key of a file: its path relative to the root (absolute when outside), as bytes."""
        if abspath.startswith(self._root_prefix):
            abspath = abspath[len(self._root_prefix):]
        return os.fsencode(abspath)

    def names(self, samples: Sequence, *, keys: bool = True) -> tuple[list[str], list[bytes]]:
        """(path to open, cache key) of every sample (no keys when ``keys`` is False)."""
        names: list[str] = []
        out: list[bytes] = []
        prefix, simple = self._root_prefix, os.sep == "/"
        for s in samples:
            rel = s.path
            if simple and "\\" not in rel and rel[:1] != "/":
                # The report path is the file's path below the root unless an undecodable name
                # was escaped (``\xNN``): skip formatting the Path (a third of the cost).
                names.append(prefix + rel)
                if keys:
                    out.append(rel.encode("utf-8", "surrogateescape"))
            else:
                name = str(s.abspath)
                names.append(name)
                if keys:
                    out.append(self.path_key(name))
        return names, out

    def probe(self, samples: Sequence) -> Probe:
        """Stat every sample and look its path up; memoised for the same sample list.

        Parameters
        ----------
        samples : sequence of Sample
            With ``abspath`` set.
        """
        ident = (id(samples), len(samples))
        if self._probe is not None and self._probe_for == ident:
            return self._probe
        started = time.time_ns()
        rows = {r[0]: r[1:] for r in self._read("SELECT path, size, mtime_ns, checked_ns, digest FROM files")}
        keys: list[bytes | None] = []
        stats: list[tuple[int, int] | None] = []
        known: list[bytes | None] = []
        names, path_keys = self.names(samples)
        stat, racy = os.stat, RACY_NS
        for name, pk in zip(names, path_keys):
            try:
                st = stat(name)
            except (OSError, ValueError):
                stats.append(None)
                keys.append(None)
                known.append(None)
                continue
            sig = (st.st_size, st.st_mtime_ns)
            stats.append(sig)
            row = rows.get(pk)
            if row is None:
                keys.append(None)
                known.append(None)
                continue
            size, mtime, checked, digest = row
            known.append(digest)
            fresh = size == sig[0] and mtime == sig[1] and mtime + racy <= checked
            keys.append(digest if fresh else None)
        self._probe = Probe(keys, stats, known, path_keys, started)
        self._probe_for = ident
        return self._probe

    def forget_probe(self) -> None:
        """Drop the memoised probe (after files changed)."""
        self._probe = None
        self._probe_for = None

    # ------------------------------------------------------------------ contents

    def complete(self, digests: Iterable[bytes] | None, *, embeddings: bool) -> set[bytes]:
        """Which of ``digests`` (None: all) have a content row of this identity, and an
        embedding of this model when ``embeddings`` (rows of files that do not decode need
        none)."""
        wanted = None if digests is None else set(digests)
        if wanted is not None and not wanted:
            return set()
        have = {r[0]: bool(r[1]) for r in self._read(
            "SELECT digest, ok FROM contents WHERE fp = ?", (self.fp_identity,))
            if wanted is None or r[0] in wanted}
        if not embeddings:
            return set(have)
        emb = {r[0] for r in self._read(
            "SELECT digest FROM embeddings WHERE model = ?", (self.model_identity,))}
        return {d for d, ok in have.items() if not ok or d in emb}

    def has_contents(self) -> bool:
        """True when any content row of this identity exists."""
        return bool(self._read("SELECT 1 FROM contents WHERE fp = ? LIMIT 1", (self.fp_identity,)))

    def load_contents(self, digests: Iterable[bytes]) -> dict[bytes, ContentRow]:
        """Content rows of this identity for ``digests`` (missing ones are absent)."""
        wanted = set(digests)
        out: dict[bytes, ContentRow] = {}
        if not wanted:
            return out
        sql = ("SELECT digest, ok, pixel_digest, phash, phash_flip, thumb, width, height, error, "
               "properties FROM contents WHERE fp = ?")
        for r in self._read(sql, (self.fp_identity,)):
            if r[0] in wanted:
                out[r[0]] = ContentRow(r[0], bool(r[1]), r[2], r[3], r[4], r[5], r[6] or 0, r[7] or 0, r[8],
                                       r[9])
        return out

    def load_embeddings(self, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        """float16 embedding bytes of this model for ``digests``."""
        wanted = set(digests)
        if not wanted or self.model_identity is None:
            return {}
        return {r[0]: r[1] for r in self._read(
            "SELECT digest, vec FROM embeddings WHERE model = ?", (self.model_identity,)) if r[0] in wanted}

    def store(
        self,
        files: Sequence[tuple[bytes, int, int, int, bytes]] = (),
        contents: Sequence[ContentRow] = (),
        embeddings: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Write rows in one transaction.

        Parameters
        ----------
        files : sequence of (path key, size, mtime_ns, checked_ns, digest)
        contents : sequence of ContentRow
        embeddings : sequence of (digest, float16 bytes)
        """
        if not (files or contents or embeddings):
            return
        fp, model = self.fp_identity, self.model_identity

        def body(conn: sqlite3.Connection) -> None:
            if contents:
                conn.executemany(
                    "INSERT OR REPLACE INTO contents (digest, fp, ok, pixel_digest, phash, phash_flip,"
                    " thumb, width, height, error, properties) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [(c.digest, fp, int(c.ok), c.pixel_digest, c.phash, c.phash_flip, c.thumb,
                      c.width, c.height, c.error, c.properties) for c in contents])
            if embeddings and model is not None:
                conn.executemany("INSERT OR REPLACE INTO embeddings (digest, model, vec) VALUES (?,?,?)",
                                 [(d, model, v) for d, v in embeddings])
            if files:
                conn.executemany("INSERT OR REPLACE INTO files (path, size, mtime_ns, checked_ns, digest)"
                                 " VALUES (?,?,?,?,?)", list(files))

        self._write(body)

    # ------------------------------------------------------------------ match states

    def load_state(self, key: str) -> tuple[bytes, bytes] | None:
        """(state digest, result blob) of the match state ``key``, or None."""
        rows = self._read("SELECT state_digest, result FROM match_states WHERE key = ?", (key,))
        return (rows[0][0], rows[0][1]) if rows else None

    def unchanged_result(self, key: str, samples: Sequence, paths_digest: bytes,
                         rels: list[str] | None = None, joined: str | None = None) -> bytes | None:
        """The result blob of state ``key`` when no file changed since it was stored: same
        ordered (split, path) list, and every file's (size, mtime) as recorded, with mtimes
        older than :data:`RACY_NS` at the time. One ``stat`` per file, no per-file query."""
        rows = self._read("SELECT paths_digest, checked_ns, stat, result FROM match_states WHERE key = ?", (key,))
        if not rows or rows[0][0] != paths_digest or not rows[0][2]:
            return None
        import numpy as np

        _, checked, blob, result = rows[0]
        n = len(samples)
        recorded = np.frombuffer(blob, np.int64)
        if len(recorded) != 2 * n:
            return None
        try:
            now = _stat_arrays(samples, self._root_prefix, lambda: self.names(samples, keys=False)[0],
                               rels, joined)
        except (OSError, ValueError):
            return None
        sizes, mtimes = now[0::2], now[1::2]
        if not (np.array_equal(sizes, recorded[:n]) and np.array_equal(mtimes, recorded[n:])):
            return None
        if n and int(mtimes.max()) + RACY_NS > checked:
            return None
        return result

    def update_snapshot(self, key: str, paths_digest: bytes, checked_ns: int, stat: bytes) -> None:
        """Record new (size, mtime) values for state ``key`` (files touched, content unchanged)."""

        def body(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE match_states SET paths_digest = ?, checked_ns = ?, stat = ? WHERE key = ?",
                         (paths_digest, checked_ns, stat, key))

        self._write(body)

    def load_state_detail(self, key: str) -> tuple[bytes, bytes, bytes] | None:
        """(result, keys, candidates) blobs of the match state ``key``, or None."""
        rows = self._read("SELECT result, keys, candidates FROM match_states WHERE key = ?", (key,))
        return rows[0] if rows else None

    def store_state(self, key: str, state_digest: bytes, result: bytes, keys: bytes, candidates: bytes,
                    snapshot: tuple[bytes, int, bytes] = (b"", 0, b"")) -> None:
        """Save a match state (replacing the one of the same key; keeps the newest few).

        ``snapshot`` is (paths digest, time the files were stat'ed, :meth:`Probe.snapshot_stat`).
        """

        def body(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO match_states (key, created_ns, state_digest, result, keys,"
                         " candidates, paths_digest, checked_ns, stat) VALUES (?,?,?,?,?,?,?,?,?)",
                         (key, time.time_ns(), state_digest, result, keys, candidates, *snapshot))
            conn.execute("DELETE FROM match_states WHERE key NOT IN (SELECT key FROM match_states "
                         "ORDER BY created_ns DESC LIMIT ?)", (MAX_MATCH_STATES,))

        self._write(body)

    # ------------------------------------------------------------------ housekeeping

    def prune(self, seen: Iterable[bytes]) -> int:
        """Delete rows of files that no longer exist (among those not ``seen`` in this scan),
        and content rows no file refers to any more. Returns the number of file rows removed."""
        seen_set = set(seen)
        gone = []
        for (pk,) in self._read("SELECT path FROM files"):
            if pk in seen_set:
                continue
            name = os.fsdecode(pk)
            full = name if os.path.isabs(name) else os.path.join(self._root_prefix, name)
            if not os.path.exists(full):
                gone.append((pk,))
        if not gone:
            return 0

        def body(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM files WHERE path = ?", gone)
            conn.execute("DELETE FROM contents WHERE digest NOT IN (SELECT digest FROM files)")
            conn.execute("DELETE FROM embeddings WHERE digest NOT IN (SELECT digest FROM files)")

        self._write(body)
        return len(gone)


def _stat_arrays(samples: Sequence, root_prefix: str, names: Callable[[], list[str]],
                 rels: list[str] | None = None, joined: str | None = None):
    """Interleaved (size, mtime_ns) int64 array of every sample, in one pass.

    Relative report paths are stat'ed relative to an open descriptor of the root (no absolute
    path strings to build); any other layout goes through ``names()``. ``rels`` (the report
    paths) and ``joined`` (them joined by NUL) may be passed when the caller has them.
    """
    import functools
    import itertools

    import numpy as np

    if rels is None:
        rels = [s.path for s in samples]
    if joined is None:
        joined = "\x00".join(rels)
    # No escaped (undecodable) name and no absolute path: every path is relative to the root.
    simple = (os.sep == "/" and os.stat in os.supports_dir_fd and "\\" not in joined
              and not joined.startswith("/") and "\x00/" not in joined)
    fd = os.open(root_prefix, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if simple else None
    try:
        stat = functools.partial(os.stat, dir_fd=fd) if simple else os.stat
        pairs = ((st.st_size, st.st_mtime_ns) for st in map(stat, rels if simple else names()))
        return np.fromiter(itertools.chain.from_iterable(pairs), np.int64, 2 * len(rels))
    finally:
        if fd is not None:
            os.close(fd)


def _say(notice: NoticeFn | None, events: list[str], text: str) -> None:
    events.append(text)
    if notice is not None:
        notice(text)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(os.fspath(path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # Reading the header first: a file that is not a database fails here, before any write.
        conn.execute("PRAGMA application_id").fetchone()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")  # silently stays 'delete' where unsupported
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable up to the last checkpoint
    except BaseException:
        conn.close()
        raise
    return conn


def _validate(conn: sqlite3.Connection) -> str | None:
    """None when ``conn`` is (or has just been made) a splitaudit cache; else what is wrong."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app == 0 and version == 0 and not tables:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have initialised it meanwhile: check again under the lock.
            if conn.execute("PRAGMA application_id").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('created_by', ?)", (f"splitaudit {__version__}",))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return None
    if app != APPLICATION_ID:
        return "not a splitaudit cache (another application's file or not SQLite)"
    if version == 1 and all(t in tables for t in _TABLES):
        _upgrade_from_1(conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        return f"a splitaudit cache of another schema version ({version}, expected {SCHEMA_VERSION})"
    missing = [t for t in _TABLES if t not in tables]
    if missing:
        return f"a damaged splitaudit cache (missing tables: {', '.join(missing)})"
    return None


def _upgrade_from_1(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2 in place: add ``contents.properties``; drop the fingerprint rows (they
    have no properties) and the match states built on them. File rows and embeddings stay."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have upgraded it meanwhile: check again under the lock.
        if conn.execute("PRAGMA user_version").fetchone()[0] == 1:
            conn.execute("ALTER TABLE contents ADD COLUMN properties BLOB")
            conn.execute("DELETE FROM contents")
            conn.execute("DELETE FROM match_states")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _move_aside(path: Path) -> Path | None:
    """Rename a bad database (and its WAL files) out of the way; None if it vanished."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.bad-{stamp}-{os.getpid()}")
    moved = None
    try:
        os.replace(path, target)
        moved = target
    except FileNotFoundError:
        pass  # another process moved it already
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
    for suffix in ("-wal", "-shm"):
        side = Path(os.fspath(path) + suffix)
        try:
            if moved is not None:
                os.replace(side, os.fspath(moved) + suffix)
            else:
                os.unlink(side)
        except OSError:
            pass
    return moved

