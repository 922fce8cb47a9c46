"""Self-contained HTML rendering of an AuditReport: one file that opens offline.

Layout of the document:

* a header with the verdict (coloured by status) and its reasons, split sizes, the leak
  table per split pair, and the settings and versions used;
* the cross-split pairs, side by side as thumbnails (query | reference | difference), with
  filters (kind, query split, label conflicts, text), sorting and pagination;
* every registered check as a table row (id, status, summary, metrics), with room for a
  chart per check (:func:`register_check_renderer`);
* within-split duplicates (same table as the cross-split pairs) and unreadable files.

Safety: every user-controlled string (paths, labels, split names, reasons, notes) is either
escaped with :func:`html.escape` (server-side HTML) or embedded as JSON in a non-executed
``<script type="application/json">`` block with ``<``, ``>``, ``&``, U+2028 and U+2029
escaped, and put on the page client-side with ``textContent`` only. A Content-Security-Policy
allows no network access at all (images only from ``data:`` URIs) and only the one inline
script (by hash).

Size and speed: each image is decoded and encoded once (a small JPEG data URI, cached per
path) and referenced by id from the rows; rows are rendered client-side, one page at a time,
so 10,000 pairs open quickly. ``render_html`` is a pure function of the report and the image
files: no clock, no network, same output for the same input.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from splitaudit.report import MATCH_KINDS, AuditReport, CheckResult, DuplicatePair

__all__ = ["render_html", "render_notebook", "register_check_renderer", "CHECK_RENDERERS", "esc"]

#: JPEG quality of thumbnails and difference images.
THUMB_QUALITY = 80
#: JPEG quality of difference views (grey, mostly dark for a real copy).
DIFF_QUALITY = 70
#: Rows per page in the pair tables (the reader can change it).
PAGE_SIZE = 100
#: Unreadable files listed in the document (all of them are in the JSON report).
MAX_UNREADABLE = 5000
#: Decoded images kept in memory while rendering (for difference views).
_DECODED_CACHE = 256

#: Check id -> function(result, report) returning trusted HTML shown under that check's row
#: (e.g. an inline SVG chart). The function must escape what it embeds.
CHECK_RENDERERS: dict[str, Callable[[CheckResult, AuditReport], str]] = {}


def register_check_renderer(check_id: str) -> Callable[[Callable], Callable]:
    """Decorator: let a check contribute extra HTML (a chart, a table) to its section.

    Example::

        @register_check_renderer("label_shift")
        def _label_shift_chart(result, report):
            return svg_bar_chart(result.metrics["per_class"])  # escapes its own labels
    """

    def deco(fn: Callable[[CheckResult, AuditReport], str]) -> Callable:
        CHECK_RENDERERS[check_id] = fn
        return fn

    return deco


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------

def _placeholder_uri(text: str, size: int) -> str:
    """A grey SVG square saying ``text`` (an image, so it decodes like a thumbnail)."""
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}"><rect width="100%" height="100%" fill="#e5e7eb"/>'
        f'<text x="50%" y="50%" font-family="sans-serif" font-size="{max(9, size // 9)}" '
        f'fill="#6b7280" text-anchor="middle" dominant-baseline="middle">'
        f"{html.escape(text)}</text></svg>"
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _jpeg_uri(image: Image.Image, quality: int = THUMB_QUALITY) -> str:
    buf = io.BytesIO()
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(buf, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _load_small(path: str | os.PathLike, size: int) -> Image.Image:
    """Decode ``path`` robustly (any format splitaudit reads) to an RGB image, shorter side
    about ``size`` or less. Raises on failure."""
    from splitaudit.imaging import load_rgb

    rgb, _ = load_rgb(path, min_side=max(1, size))
    return Image.fromarray(np.asarray(rgb), mode="RGB")


def _fit(image: Image.Image, size: int) -> Image.Image:
    """A copy that fits in ``size`` x ``size`` (never enlarged)."""
    out = image.copy()
    out.thumbnail((size, size), Image.Resampling.LANCZOS)
    return out


def _thumbnail_data_uri(path: str | os.PathLike, size: int) -> str:
    """A JPEG data URI of the image at ``path`` fitting in ``size`` x ``size``.

    Never raises: a file that cannot be read or decoded gives a placeholder image.
    """
    try:
        return _jpeg_uri(_fit(_load_small(path, size), size))
    except Exception:  # noqa: BLE001 - a report must render whatever the files are
        return _placeholder_uri("unreadable", size)


class _ImageStore:
    """Thumbnails encoded once per path, referenced by integer id from the rows."""

    def __init__(self, root: Path | None, size: int) -> None:
        self.root = root
        self.size = size
        self.uris: list[str] = []
        self._by_key: dict[str, int] = {}
        self._decoded: OrderedDict[str, Image.Image | None] = OrderedDict()

    def _add(self, key: str, make: Callable[[], str]) -> int:
        if key not in self._by_key:
            self._by_key[key] = len(self.uris)
            self.uris.append(make())
        return self._by_key[key]

    def _file(self, path: str | None) -> Path | None:
        if path is None or self.root is None:
            return None
        return self.root / path  # an absolute ``path`` stays absolute

    def decoded(self, path: str | None) -> Image.Image | None:
        """The decoded image (shorter side ~ size), None when unavailable; LRU-cached."""
        if path in self._decoded:
            self._decoded.move_to_end(path)
            return self._decoded[path]
        file = self._file(path)
        image = None
        if file is not None:
            try:
                image = _load_small(file, self.size)
            except Exception:  # noqa: BLE001 - placeholder instead
                image = None
        self._decoded[path] = image
        if len(self._decoded) > _DECODED_CACHE:
            self._decoded.popitem(last=False)
        return image

    def thumb(self, path: str | None) -> int:
        """Id of the thumbnail of ``path`` (relative to the root); placeholders when none."""
        if path is None or self.root is None:
            return self._add("\0no-file", lambda: _placeholder_uri("no file", self.size))

        key = "file:" + path
        if key not in self._by_key:
            image = self.decoded(path)
            if image is None:  # every unreadable file shares one placeholder
                self._by_key[key] = self._add("\0unreadable",
                                              lambda: _placeholder_uri("unreadable", self.size))
            else:
                self._add(key, lambda: _jpeg_uri(_fit(image, self.size)))
        return self._by_key[key]

    def add_uri(self, uri: str) -> int:
        self.uris.append(uri)
        return len(self.uris) - 1


def _warp(moving: Image.Image, mat: np.ndarray, off: np.ndarray, side: int) -> Image.Image:
    """Resample a ``side`` x ``side`` image into the fixed frame (alignment convention:
    normalised moving coords = mat @ normalised fixed coords + off)."""
    s = float(side)
    coeffs = (
        mat[0, 0], mat[0, 1], s * (off[0] + 0.5 - 0.5 * (mat[0, 0] + mat[0, 1])),
        mat[1, 0], mat[1, 1], s * (off[1] + 0.5 - 0.5 * (mat[1, 0] + mat[1, 1])),
    )
    return moving.transform((side, side), Image.Transform.AFFINE, coeffs,
                            resample=Image.Resampling.BILINEAR, fillcolor=None)


def _difference_images(pairs: list[tuple[Image.Image, Image.Image]], size: int) -> list[Image.Image]:
    """|query - reference| per pair, after aligning the two as the matcher does.

    Both images are squashed to squares (the frame the matcher aligns in), the best
    crop/flip/rotation is found with :func:`splitaudit.alignment.align_pairs`, the moving
    image is warped onto the fixed one, both are normalised for brightness and
    contrast (a recoloured copy is still dark) and the absolute difference of luminance is
    amplified.
    Areas the warp does not cover are hatched grey. Falls back to an unaligned difference
    if the alignment cannot be computed.
    """
    if not pairs:
        return []
    sides = [max(8, min(size, max(q.width, q.height, r.width, r.height))) for q, r in pairs]
    transforms: list[tuple[Any, int, int]] | None
    try:
        from splitaudit import alignment
        from splitaudit.fingerprints.hashes import grey_thumbnail

        grey = np.stack([np.asarray(grey_thumbnail(im)) for q, r in pairs for im in (q, r)])
        prepared = alignment.prepare_thumbs(grey)
        wh = np.array([(im.width, im.height) for q, r in pairs for im in (q, r)], float)
        aspects = alignment.aspect_bin(wh[:, 0], wh[:, 1])
        pa, pb = prepared[1::2], prepared[0::2]  # a = reference, b = query (as the matcher)
        aa, ab = aspects[1::2], aspects[0::2]
        # Coarse screen, then the full search near the coarse answer (as the matcher does).
        coarse = alignment.align_pairs(pa, pb, aa, ab, coarse=True)
        scores = alignment.align_pairs(pa, pb, aa, ab, hints=coarse.transform)
        transforms = []
        for i, (t, d) in enumerate(zip(scores.transform, scores.direction)):
            # direction 0: fixed = query (b), moving = reference (a); 1: the other way.
            transforms.append((t, int(d), int(ab[i] if d == 0 else aa[i])))
    except Exception:  # noqa: BLE001 - the unaligned difference is still worth showing
        transforms = None
    out = []
    for i, (q, r) in enumerate(pairs):
        side = sides[i]
        qs = q.resize((side, side), Image.Resampling.BILINEAR)
        rs = r.resize((side, side), Image.Resampling.BILINEAR)
        fixed, moving = qs, rs
        mask = np.ones((side, side), bool)
        if transforms is not None:
            t, direction, fixed_aspect = transforms[i]
            fixed, moving = (qs, rs) if direction == 0 else (rs, qs)
            mat, off = alignment.transform_matrix(t, fixed_aspect)
            moving = _warp(moving, mat, off, side)
            cover = _warp(Image.new("L", (side, side), 255), mat, off, side)
            mask = np.asarray(cover) > 250
        out.append(_diff_image(np.asarray(fixed, np.float32), np.asarray(moving, np.float32), mask))
    return out


def _diff_image(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> Image.Image:
    if mask.sum() < 16:
        mask = np.ones(mask.shape, bool)
    w = mask.astype(np.float32)
    n = float(w.sum())
    luma = np.array([0.299, 0.587, 0.114], np.float32)

    def norm(x: np.ndarray) -> np.ndarray:
        # Luminance, normalised for brightness and contrast: a recoloured, grey or
        # re-exposed copy is still dark; only content differences light up.
        y = x @ luma if x.ndim == 3 else x
        c = y - (y * w).sum() / n
        return c / max(float(np.sqrt((c * c * w).sum() / n)), 8.0)

    d = np.clip(np.abs(norm(a) - norm(b)) * 80.0, 0, 255)
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    hatch = np.where(((xx + yy) // 3) % 2 == 0, 70.0, 40.0)
    d[~mask] = hatch[~mask]
    return Image.fromarray(d.astype(np.uint8), mode="L")


# --------------------------------------------------------------------------------------
# Data for the client-side tables
# --------------------------------------------------------------------------------------

#: Columns of a row in the embedded JSON (documented for the script and for tests).
ROW_COLUMNS = ("kind", "query_split", "query_path", "query_label", "ref_split", "ref_path",
               "ref_label", "ncc", "cosine", "hamming", "evidence", "label_conflict",
               "query_thumb", "ref_thumb", "diff_thumb")


def _display_path(ref: Any) -> str:
    return ref.path if ref.path is not None else f"[{ref.index}]"


def _rows(pairs: list[DuplicatePair], store: _ImageStore, diffs: bool) -> list[list[Any]]:
    rows = []
    need_diff: list[int] = []
    for i, p in enumerate(pairs):
        rows.append([
            p.match, p.query.split, _display_path(p.query), p.query.label,
            p.reference.split, _display_path(p.reference), p.reference.label,
            round(float(p.ncc), 4), None if p.cosine is None else round(float(p.cosine), 4),
            int(p.hamming), p.evidence, 1 if p.label_conflict else 0,
            store.thumb(p.query.path), store.thumb(p.reference.path), None,
        ])
        if diffs and p.match == "near":
            need_diff.append(i)
    # Difference views, in batches (the decoded-image cache is bounded).
    for start in range(0, len(need_diff), 128):
        batch = need_diff[start:start + 128]
        images = [(store.decoded(pairs[i].query.path), store.decoded(pairs[i].reference.path))
                  for i in batch]
        ok = [(i, q, r) for i, (q, r) in zip(batch, images) if q is not None and r is not None]
        try:
            made = _difference_images([(q, r) for _, q, r in ok], store.size)
        except Exception:  # noqa: BLE001 - no difference view rather than no report
            continue
        for (i, _, _), image in zip(ok, made):
            rows[i][-1] = store.add_uri(_jpeg_uri(image, quality=DIFF_QUALITY))
    return rows


def _script_json(value: Any) -> str:
    """JSON safe inside an HTML <script> element."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


# --------------------------------------------------------------------------------------
# Server-side HTML pieces (everything passes through esc)
# --------------------------------------------------------------------------------------

def esc(value: Any) -> str:
    """HTML-escape anything (quotes included, so also safe inside attribute values)."""
    return html.escape("" if value is None else str(value), quote=True)


def _fmt_num(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None or value == {} or value == []:
        return "–"
    return str(value)


def _flatten(d: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _status_class(status: str) -> str:
    s = (status or "").lower()
    if s in ("leaked", "fail", "failed", "error"):
        return "bad"
    if s in ("warn", "warning", "shifted", "easier"):
        return "warn"
    if s in ("ok", "pass", "passed"):
        return "good"
    return "neutral"


def _header(report: AuditReport) -> str:
    v = report.verdict
    version = report.settings.get("version")
    embedder = report.settings.get("embedder")
    reasons = "".join(f"<li>{esc(r)}</li>" for r in v.reasons)
    meta = [f"splitaudit {esc(version)}", esc(report.layout)]
    meta.append("hash + CNN" if embedder else "hash-only scan")
    sub = " · ".join(meta)
    return f"""
<header class="verdict {_status_class(v.status)}">
  <div class="verdict-top">
    <span class="status">{esc(v.status.upper())}</span>
    <span class="dataset" title="{esc(report.dataset)}">{esc(report.dataset or "(no dataset path)")}</span>
    <span class="brand">SPLITAUDIT REPORT</span>
  </div>
  <div class="sub">{sub} · fail on <b>{esc(v.fail_on)}</b>, max leak rate {esc(f"{v.max_leak_rate:g}")},
    exit code {esc(v.exit_code)}</div>
  <ul class="reasons">{reasons}</ul>
</header>"""


def _cards(report: AuditReport) -> str:
    cards = []
    for name, n in report.splits.items():
        cards.append(("split", name, f"{n:,}", "samples"))
    by_kind = {k: sum(1 for p in report.cross_split_duplicates if p.match == k) for k in MATCH_KINDS}
    detail = " · ".join(f"{by_kind[k]:,} {k}" for k in MATCH_KINDS)
    cards.append(("pairs", "cross-split pairs", f"{len(report.cross_split_duplicates):,}", detail))
    cards.append(("conflict" if report.label_conflicts else "count", "label conflicts",
                  f"{len(report.label_conflicts):,}", "copied pairs, labels differ"))
    cards.append(("count", "within-split", f"{len(report.within_split_duplicates):,}", "duplicate pairs"))
    cards.append(("unreadable" if report.unreadable else "count", "unreadable",
                  f"{len(report.unreadable):,}", "files skipped"))
    out = "".join(
        f'<div class="card {cls}"><div class="card-title">{esc(title)}</div>'
        f'<div class="card-value">{esc(value)}</div><div class="card-detail">{esc(detail)}</div></div>'
        for cls, title, value, detail in cards
    )
    return f'<section class="cards">{out}</section>'


def _leak_table(report: AuditReport) -> str:
    if not report.split_pairs:
        return ""
    rows = []
    for s in report.split_pairs:
        n = max(s.query_samples, 1)
        bar = "".join(
            f'<span class="seg {k}" style="width:{100 * c / n:.3f}%" title="{esc(k)}: {c}"></span>'
            for k, c in (("exact", s.exact), ("near", s.near), ("similar", s.similar)) if c
        )
        rows.append(
            f"<tr><td>{esc(s.query_split)}</td><td>{esc(s.reference_split)}</td>"
            f'<td class="num">{s.query_samples:,}</td><td class="num">{s.exact:,}</td>'
            f'<td class="num">{s.near:,}</td><td class="num">{s.similar:,}</td>'
            f'<td class="num rate {_status_class("leaked" if s.leaked_samples else "ok")}">'
            f"{100 * s.leak_rate:.2f}%</td>"
            f'<td class="barcell"><div class="bar">{bar}</div></td></tr>'
        )
    return f"""
<section class="panel" id="leaks-summary">
  <h2>Leaks per split pair</h2>
  <p class="hint">Query samples with a match in the reference split, each counted at its most
  severe kind; the leak rate counts exact and near copies.</p>
  <table class="grid">
    <thead><tr><th>query</th><th>reference</th><th class="num">samples</th><th class="num">exact</th>
    <th class="num">near</th><th class="num">similar</th><th class="num">leak rate</th>
    <th>share of query samples</th></tr></thead>
    <tbody>{''.join(rows)}</tbody>
  </table>
</section>"""


def _pair_table(prefix: str, data_key: str, row_class: str, title: str, intro: str,
                pairs: list[DuplicatePair], total: int) -> str:
    splits = list(dict.fromkeys(p.query.split for p in pairs))
    split_opts = "".join(f'<option value="{esc(s)}">{esc(s)}</option>' for s in splits)
    kinds = [k for k in MATCH_KINDS if any(p.match == k for p in pairs)] or list(MATCH_KINDS)
    kind_opts = "".join(f'<option value="{k}">{k}</option>' for k in kinds)
    truncated = ""
    if total > len(pairs):
        truncated = (f'<p class="notice">Showing the first {len(pairs):,} of {total:,} pairs '
                     f"(most severe first); the JSON report has all of them.</p>")
    sizes = "".join(f'<option value="{n}"{" selected" if n == PAGE_SIZE else ""}>{n}</option>'
                    for n in (25, 50, 100, 250, 1000))
    return f"""
<section class="panel" id="{prefix}pairs-section">
  <h2>{esc(title)} <span class="muted">({total:,})</span></h2>
  <p class="hint">{intro}</p>{truncated}
  <div class="pairtable" data-pairs="{esc(data_key)}" data-row-class="{esc(row_class)}">
    <div class="toolbar">
      <label>Kind <select id="{prefix}kind-filter" data-role="kind"><option value="">all</option>{kind_opts}</select></label>
      <label>Query split <select id="{prefix}split-filter" data-role="split"><option value="">all</option>{split_opts}</select></label>
      <label class="check"><input type="checkbox" id="{prefix}conflict-filter" data-role="conflict"> label conflicts only</label>
      <label>Find <input type="search" id="{prefix}search" data-role="search" placeholder="path or label"></label>
      <label>Sort <select id="{prefix}sort" data-role="sort">
        <option value="severity">severity (kind, then NCC)</option>
        <option value="ncc-desc">NCC, high to low</option>
        <option value="ncc-asc">NCC, low to high</option>
        <option value="cos-desc">cosine, high to low</option>
        <option value="ham-asc">hash distance, low to high</option>
      </select></label>
      <span class="count"><b id="{prefix}shown-count" data-role="count">0</b> of {len(pairs):,} shown</span>
    </div>
    <table class="pairs">
      <thead><tr><th class="num">#</th><th>query · reference · difference</th><th>match</th>
      <th>scores</th><th>samples</th></tr></thead>
      <tbody></tbody>
    </table>
    <div class="pager">
      <button type="button" data-role="prev">&larr; previous</button>
      <span data-role="page">page 1 of 1</span>
      <button type="button" data-role="next">next &rarr;</button>
      <label>rows per page <select id="{prefix}page-size" data-role="pagesize">{sizes}<option value="0">all</option></select></label>
    </div>
  </div>
  <noscript><p class="notice">The pair table needs JavaScript; the JSON report lists every pair.</p></noscript>
</section>"""


def _shift(report: AuditReport) -> str:
    """The shift tests of the verdict (p, Holm p, effect vs threshold) and leak-adjusted metrics."""
    v = report.verdict
    parts = []
    if v.shift_tests:
        rows = "".join(
            f'<tr><td><code>{esc(t.check)}</code></td>'
            f'<td><span class="pill {_status_class(t.flags if t.holds else "pass")}">'
            f'{esc(t.flags if t.holds else "no")}</span></td>'
            f'<td class="num">{esc(f"{t.p_value:.3g}")}</td><td class="num">{esc(f"{t.p_adjusted:.3g}")}</td>'
            f'<td class="num">{esc(f"{t.effect_size:.3g}")}</td><td class="num">{esc(f"{t.effect_threshold:g}")}</td>'
            f'<td>{esc(report.checks[t.check].summary if t.check in report.checks else "")}</td></tr>'
            for t in v.shift_tests
        )
        parts.append(
            f'<p class="intro">Each test compares train with every later split. A finding holds when '
            f'its p-value, Holm-corrected across the {len(v.shift_tests)} tests, is below alpha '
            f'{esc(f"{v.alpha:g}")} and its effect size reaches the threshold.</p>'
            '<table class="grid"><thead><tr><th>check</th><th>finding</th><th>p</th><th>Holm p</th>'
            f'<th>effect</th><th>threshold</th><th>summary</th></tr></thead><tbody>{rows}</tbody></table>')
    la = report.leak_adjusted
    if la:
        def metrics(d) -> str:
            return ", ".join(f"{esc(k)} {esc(_fmt_num(x))}" for k, x in (d or {}).items()) or "-"

        parts.append(
            f'<h3>Leak-adjusted metrics ({esc(la.get("split", "val"))})</h3>'
            '<table class="grid"><tbody>'
            f'<tr><th>whole split</th><td>{metrics(la.get("full"))}</td></tr>'
            f'<tr><th>leak-free part</th><td>{metrics(la.get("leak_free"))}</td></tr>'
            f'<tr><th>samples removed</th><td class="num">{esc(la.get("removed"))}</td></tr>'
            '</tbody></table>')
    if not parts:
        return ""
    return ('<section class="panel" id="shift"><h2>Shift, difficulty and leak-adjusted scores</h2>'
            + "".join(parts) + "</section>")


def _checks(report: AuditReport) -> str:
    if not report.checks:
        return ""
    titles: dict[str, str] = {}
    try:
        from splitaudit.checks import REGISTRY

        titles = {cid: getattr(cls, "title", "") for cid, cls in REGISTRY.items()}
    except Exception:  # noqa: BLE001 - titles are decoration
        pass
    rows = []
    for cid, result in report.checks.items():
        metrics = "".join(
            f"<li><span class=\"k\">{esc(k)}</span> <span class=\"v\">{esc(_fmt_num(v))}</span></li>"
            for k, v in _flatten(result.metrics or {})
        )
        title = titles.get(cid) or ""
        rows.append(
            f'<tr class="check" data-check="{esc(cid)}"><td><code>{esc(cid)}</code>'
            f'{f"<div class=muted>{esc(title)}</div>" if title else ""}</td>'
            f'<td><span class="pill {_status_class(result.status)}">{esc(result.status)}</span></td>'
            f"<td>{esc(result.summary)}</td><td><ul class=\"metrics\">{metrics}</ul></td></tr>"
        )
        extra = CHECK_RENDERERS.get(cid)
        if extra is not None:
            try:
                body = extra(result, report)
            except Exception as exc:  # noqa: BLE001 - a broken chart must not lose the report
                body = f'<p class="notice">chart unavailable: {esc(exc)}</p>'
            if body:
                rows.append(f'<tr class="check-extra"><td colspan="4">{body}</td></tr>')
    return f"""
<section class="panel" id="checks">
  <h2>Checks</h2>
  <table class="grid checks">
    <thead><tr><th>check</th><th>status</th><th>summary</th><th>metrics</th></tr></thead>
    <tbody>{''.join(rows)}</tbody>
  </table>
</section>"""


def _unreadable(report: AuditReport) -> str:
    if not report.unreadable:
        return ""
    items = report.unreadable[:MAX_UNREADABLE]
    rows = "".join(
        f"<tr><td class=\"path\">{esc(u.path)}</td><td>{esc(u.split)}</td><td>{esc(u.reason)}</td></tr>"
        for u in items
    )
    more = ""
    if len(report.unreadable) > len(items):
        more = (f'<p class="notice">and {len(report.unreadable) - len(items):,} more '
                f"(the JSON report lists all of them)</p>")
    return f"""
<section class="panel" id="unreadable">
  <h2>Unreadable files <span class="muted">({len(report.unreadable):,})</span></h2>
  <p class="hint">Left out of the audit; fix or delete them.</p>
  <table class="grid"><thead><tr><th>path</th><th>split</th><th>reason</th></tr></thead>
  <tbody>{rows}</tbody></table>{more}
</section>"""


def _advice(report: AuditReport) -> str:
    from splitaudit.render.text import next_steps

    steps = "".join(f"<li>{esc(s)}</li>" for s in next_steps(report))
    notes = "".join(f"<li>{esc(n)}</li>" for n in report.notes)
    notes_html = f'<h3>Notes</h3><ul class="notes">{notes}</ul>' if notes else ""
    return f"""
<section class="panel" id="next">
  <h2>What to do next</h2>
  <ul>{steps}</ul>{notes_html}
</section>"""


def _settings(report: AuditReport) -> str:
    items = list(_flatten(report.settings or {}))
    settings = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_fmt_num(v))}</td></tr>" for k, v in items)
    timings = "".join(f"<tr><th>{esc(k)}</th><td>{v:.2f} s</td></tr>" for k, v in report.timings.items())
    return f"""
<section class="panel" id="settings">
  <h2>Settings and versions</h2>
  <div class="two">
    <table class="kv"><tbody>
      <tr><th>dataset</th><td>{esc(report.dataset)}</td></tr>
      <tr><th>layout</th><td>{esc(report.layout)}</td></tr>
      <tr><th>schema_version</th><td>{esc(report.schema_version)}</td></tr>
      {settings}
    </tbody></table>
    <table class="kv"><tbody>{timings or '<tr><td class="muted">no timings</td></tr>'}</tbody></table>
  </div>
</section>"""


# --------------------------------------------------------------------------------------
# Document
# --------------------------------------------------------------------------------------

_CSS = """
:root{--bg:#f5f6f8;--panel:#fff;--line:#e2e5ea;--text:#1f2430;--muted:#6b7280;
--bad:#b42318;--bad-bg:#fef3f2;--bad-line:#f3b8b2;--good:#067647;--good-bg:#ecfdf3;--good-line:#a6e4c1;
--warn:#b54708;--warn-bg:#fffaeb;--warn-line:#f5d08a;
--exact:#b42318;--near:#dc6803;--similar:#5b6b7f;--thumb:96px}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1320px;margin:0 auto;padding:20px 24px 48px}
h2{font-size:17px;margin:0 0 6px}
h3{font-size:14px;margin:14px 0 4px}
code,.path,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.muted{color:var(--muted);font-weight:400}
.hint{color:var(--muted);margin:0 0 10px;font-size:13px}
.notice{background:var(--warn-bg);border:1px solid var(--warn-line);padding:6px 10px;border-radius:6px;font-size:13px}
nav{display:flex;gap:14px;flex-wrap:wrap;margin:10px 2px 0;font-size:13px}
nav a{color:#3b5bdb;text-decoration:none}nav a:hover{text-decoration:underline}
.verdict{border-radius:12px;padding:16px 20px;border:1px solid var(--line);border-left-width:8px;background:var(--panel)}
.verdict.bad{background:var(--bad-bg);border-color:var(--bad-line);border-left-color:var(--bad)}
.verdict.good{background:var(--good-bg);border-color:var(--good-line);border-left-color:var(--good)}
.verdict.warn{background:var(--warn-bg);border-color:var(--warn-line);border-left-color:var(--warn)}
.verdict-top{display:flex;align-items:baseline;gap:16px;flex-wrap:wrap}
.verdict-top .brand{margin-left:auto;font-size:12px;color:var(--muted);font-weight:600;letter-spacing:.03em}
.status{font-size:28px;font-weight:800;letter-spacing:.04em}
.verdict.bad .status{color:var(--bad)}.verdict.good .status{color:var(--good)}.verdict.warn .status{color:var(--warn)}
.dataset{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px;word-break:break-all}
.sub{color:var(--muted);font-size:13px;margin-top:2px}
.reasons{margin:10px 0 0;padding-left:20px;font-size:15px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:12px 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:8px 14px}
.card-title{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.card-value{font-size:20px;font-weight:700;line-height:1.3}
.card-detail{font-size:12px;color:var(--muted)}
.card.conflict .card-value,.card.unreadable .card-value{color:var(--bad)}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:12px;padding:14px 18px;margin:12px 0}
table{border-collapse:collapse;width:100%}
.grid th,.grid td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
.grid th{font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
.num{text-align:right!important;font-variant-numeric:tabular-nums}
.rate.bad{color:var(--bad);font-weight:700}
.barcell{width:32%;vertical-align:middle!important}
.bar{display:flex;height:10px;background:#eef0f3;border-radius:5px;overflow:hidden;min-width:120px}
.seg.exact{background:var(--exact)}.seg.near{background:var(--near)}.seg.similar{background:#aab4c0}
.toolbar{display:flex;flex-wrap:wrap;gap:10px 16px;align-items:center;padding:10px 12px;background:#f8f9fb;border:1px solid var(--line);border-radius:10px;margin-bottom:8px;font-size:13px}
.toolbar label{display:flex;align-items:center;gap:6px;color:#374151}
.toolbar select,.toolbar input[type=search],.pager select{font:inherit;padding:3px 6px;border:1px solid #cfd4dc;border-radius:6px;background:#fff}
.toolbar input[type=search]{width:160px}
.toolbar .count{margin-left:auto;color:var(--muted)}.toolbar .count b{color:var(--text)}
.pairs th{font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em;text-align:left;padding:6px 8px;border-bottom:2px solid var(--line)}
.pairs td{padding:8px;border-bottom:1px solid var(--line);vertical-align:top}
tr.pair:hover td,tr.wpair:hover td{background:#fafbfc}
tr.conflict td:first-child{box-shadow:inset 4px 0 0 var(--bad)}
.idx{color:var(--muted);font-variant-numeric:tabular-nums;width:44px}
.pairs td.thumbcell{width:1%}
.pairs td.match{width:150px}
.pairs td.scores{width:130px}
.thumbs{display:flex;gap:8px;white-space:nowrap}
figure{margin:0;text-align:center}
figcaption{font-size:11px;color:var(--muted);margin-top:2px}
.frame{width:var(--thumb);height:var(--thumb);display:flex;align-items:center;justify-content:center;background:#f1f3f5;border:1px solid var(--line);border-radius:6px;overflow:visible}
.frame img{max-width:100%;max-height:100%;width:100%;height:100%;object-fit:contain;border-radius:5px;transition:transform .12s ease;position:relative}
.frame img.px{image-rendering:pixelated}
.frame img:hover{transform:scale(2.4);z-index:10;box-shadow:0 6px 24px rgba(0,0,0,.35);background:#fff}
.diff .frame{background:#111}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:700;color:#fff;text-transform:uppercase;letter-spacing:.04em}
.badge.exact{background:var(--exact)}.badge.near{background:var(--near)}.badge.similar{background:var(--similar)}
.badge.lc{background:#fff;color:var(--bad);border:1px solid var(--bad);margin-top:6px}
.evidence{font-size:12px;color:#374151;margin-top:4px}
.scores{font-size:12px;font-variant-numeric:tabular-nums;white-space:nowrap}
.scores div{display:flex;justify-content:space-between;gap:10px}
.scores span:first-child{color:var(--muted)}
.sample{margin-bottom:6px;min-width:0}
.sample .role{font-size:11px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;margin-right:6px}
.chip{display:inline-block;padding:0 7px;border-radius:5px;background:#eef0f3;font-size:12px;margin-right:4px}
.chip.label{background:#e8eefc;color:#1d3f9e}
.chip.label.bad{background:var(--bad-bg);color:var(--bad);font-weight:700;border:1px solid var(--bad-line)}
.chip.label.differs{background:#f3f4f6;color:#6b7280;border:1px dashed #c5cad3}
.sample .path{display:block;word-break:break-all;color:#374151;margin-top:2px}
td.samples{width:40%}
.empty td{text-align:center;color:var(--muted);padding:24px}
.pager{display:flex;gap:12px;align-items:center;justify-content:flex-end;margin-top:10px;font-size:13px;color:var(--muted)}
.pager button{font:inherit;padding:4px 12px;border-radius:6px;border:1px solid #cfd4dc;background:#fff;cursor:pointer}
.pager button:disabled{opacity:.4;cursor:default}
.pill{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:700;text-transform:uppercase;border:1px solid}
.pill.bad{color:var(--bad);background:var(--bad-bg);border-color:var(--bad-line)}
.pill.good{color:var(--good);background:var(--good-bg);border-color:var(--good-line)}
.pill.warn{color:var(--warn);background:var(--warn-bg);border-color:var(--warn-line)}
.pill.neutral{color:var(--muted);background:#f3f4f6;border-color:#d1d5db}
.metrics{list-style:none;margin:0;padding:0;font-size:12px}
.metrics .k{color:var(--muted)}
.checks td:nth-child(3){width:45%}
.two{display:grid;grid-template-columns:2fr 1fr;gap:16px}
.kv th,.kv td{text-align:left;padding:3px 10px;border-bottom:1px solid #f0f1f4;font-size:12px;vertical-align:top}
.kv th{color:var(--muted);font-weight:500;white-space:nowrap;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.kv td{word-break:break-all}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
@media (max-width:900px){.two{grid-template-columns:1fr}td.samples{width:auto}}
"""

_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("splitaudit-data").textContent);
  var C = {};
  data.columns.forEach(function (name, i) { C[name] = i; });
  var thumbs = data.thumbs;
  var KIND_RANK = {exact: 0, near: 1, similar: 2};

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(x, digits) { return x === null || x === undefined ? "\u2013" : x.toFixed(digits); }

  function figure(id, caption, extraClass) {
    var f = el("figure", extraClass || "");
    var frame = el("div", "frame");
    if (id !== null && id !== undefined) {
      var img = new Image();
      img.className = "thumb";
      img.decoding = "async";
      img.alt = caption;
      img.addEventListener("load", function () {
        if (img.naturalWidth * 2 <= frame.clientWidth) img.classList.add("px");
      });
      img.src = thumbs[id];
      frame.appendChild(img);
    }
    f.appendChild(frame);
    f.appendChild(el("figcaption", "", caption));
    return f;
  }

  function sample(role, split, path, label, labelClass) {
    var d = el("div", "sample");
    d.appendChild(el("span", "role", role));
    d.appendChild(el("span", "chip split", split));
    if (label !== null && label !== undefined) d.appendChild(el("span", "chip label " + labelClass, label));
    var p = el("span", "path", path);
    p.title = path;
    d.appendChild(p);
    return d;
  }

  function renderRow(r, index, rowClass) {
    var kind = r[C.kind];
    var conflict = r[C.label_conflict] === 1;
    var realConflict = conflict && kind !== "similar";
    var tr = el("tr", rowClass + " kind-" + kind + (realConflict ? " conflict" : ""));
    tr.appendChild(el("td", "idx num", index + 1));

    var t = el("td", "thumbcell");
    var box = el("div", "thumbs");
    box.appendChild(figure(r[C.query_thumb], "query"));
    box.appendChild(figure(r[C.ref_thumb], "reference"));
    if (r[C.diff_thumb] !== null) box.appendChild(figure(r[C.diff_thumb], "difference", "diff"));
    t.appendChild(box);
    tr.appendChild(t);

    var m = el("td", "match");
    m.appendChild(el("span", "badge " + kind, kind));
    m.appendChild(el("div", "evidence", r[C.evidence]));
    if (realConflict) m.appendChild(el("span", "badge lc", "label conflict"));
    tr.appendChild(m);

    var s = el("td", "scores");
    [["NCC", num(r[C.ncc], 3)], ["cosine", num(r[C.cosine], 3)], ["hash dist.", r[C.hamming]]]
      .forEach(function (kv) {
        var line = el("div");
        line.appendChild(el("span", "", kv[0]));
        line.appendChild(el("span", "", kv[1]));
        s.appendChild(line);
      });
    tr.appendChild(s);

    var labelClass = realConflict ? "bad" : (conflict ? "differs" : "");
    var sm = el("td", "samples");
    sm.appendChild(sample("query", r[C.query_split], r[C.query_path], r[C.query_label], labelClass));
    sm.appendChild(sample("reference", r[C.ref_split], r[C.ref_path], r[C.ref_label], labelClass));
    tr.appendChild(sm);
    return tr;
  }

  var SORTS = {
    "severity": null,
    "ncc-desc": function (a, b) { return b[C.ncc] - a[C.ncc]; },
    "ncc-asc": function (a, b) { return a[C.ncc] - b[C.ncc]; },
    "cos-desc": function (a, b) {
      var x = a[C.cosine], y = b[C.cosine];
      if (x === null && y === null) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      return y - x;
    },
    "ham-asc": function (a, b) { return a[C.hamming] - b[C.hamming]; }
  };

  function PairTable(root, rows, rowClass) {
    function role(name) { return root.querySelector('[data-role="' + name + '"]'); }
    var tbody = root.querySelector("tbody");
    var filtered = [];
    var page = 0;
    var timer = null;

    function apply() {
      var kind = role("kind").value, split = role("split").value;
      var conflictOnly = role("conflict").checked;
      var needle = role("search").value.trim().toLowerCase();
      var out = [];
      for (var i = 0; i < rows.length; i++) {
        var r = rows[i];
        if (kind && r[C.kind] !== kind) continue;
        if (split && r[C.query_split] !== split) continue;
        if (conflictOnly && !(r[C.label_conflict] === 1 && r[C.kind] !== "similar")) continue;
        if (needle) {
          var hay = [r[C.query_path], r[C.ref_path], r[C.query_label], r[C.ref_label], r[C.evidence]]
            .join("\n").toLowerCase();
          if (hay.indexOf(needle) < 0) continue;
        }
        out.push(i);
      }
      var cmp = SORTS[role("sort").value];
      if (cmp) out.sort(function (a, b) { return cmp(rows[a], rows[b]) || a - b; });
      filtered = out;
      page = 0;
      draw();
    }

    function draw() {
      var size = parseInt(role("pagesize").value, 10) || Math.max(filtered.length, 1);
      var pages = Math.max(1, Math.ceil(filtered.length / size));
      page = Math.min(Math.max(page, 0), pages - 1);
      var frag = document.createDocumentFragment();
      var end = Math.min(filtered.length, (page + 1) * size);
      for (var j = page * size; j < end; j++) {
        frag.appendChild(renderRow(rows[filtered[j]], filtered[j], rowClass));
      }
      if (!filtered.length) {
        var tr = el("tr", "empty");
        var td = el("td", "", rows.length ? "No pairs match these filters." : "No pairs.");
        td.colSpan = 5;
        tr.appendChild(td);
        frag.appendChild(tr);
      }
      tbody.replaceChildren(frag);
      role("count").textContent = String(filtered.length);
      role("page").textContent = "page " + (page + 1) + " of " + pages;
      role("prev").disabled = page === 0;
      role("next").disabled = page >= pages - 1;
    }

    ["kind", "split", "conflict", "sort"].forEach(function (name) {
      role(name).addEventListener("change", apply);
    });
    role("search").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(apply, 120);
    });
    role("pagesize").addEventListener("change", function () { page = 0; draw(); });
    role("prev").addEventListener("click", function () { page -= 1; draw(); });
    role("next").addEventListener("click", function () { page += 1; draw(); });
    apply();
  }

  var tables = document.querySelectorAll("[data-pairs]");
  for (var i = 0; i < tables.length; i++) {
    var root = tables[i];
    PairTable(root, data[root.getAttribute("data-pairs")] || [], root.getAttribute("data-row-class"));
  }
  document.documentElement.setAttribute("data-ready", "1");
})();
"""


def render_html(
    report: AuditReport,
    *,
    image_root: str | os.PathLike | None = None,
    thumb_size: int = 96,
    max_pairs: int | None = None,
) -> str:
    """The report as one self-contained HTML document (no network access when opened).

    Parameters
    ----------
    report : AuditReport
    image_root : path, optional
        Folder the report's sample paths are relative to; default ``report.dataset``.
        Images that cannot be read show as a placeholder.
    thumb_size : int
        Thumbnails fit in ``thumb_size`` x ``thumb_size`` pixels (never enlarged).
    max_pairs : int, optional
        Embed at most this many cross-split (and within-split) pairs, most severe first.

    Returns
    -------
    str
        The HTML document.
    """
    if thumb_size < 8:
        raise ValueError(f"thumb_size must be at least 8, got {thumb_size}")
    root = image_root if image_root is not None else report.dataset
    root_path = Path(root) if root is not None else None
    if root_path is not None and root_path.is_file():  # a CSV manifest: paths are relative to its folder
        root_path = root_path.parent
    store = _ImageStore(root_path, thumb_size)

    cross = report.cross_split_duplicates
    within = report.within_split_duplicates
    if max_pairs is not None:
        cross, within = cross[:max_pairs], within[:max_pairs]
    payload = {
        "columns": list(ROW_COLUMNS),
        "pairs": _rows(cross, store, diffs=True),
        "within": _rows(within, store, diffs=True),
        "thumbs": store.uris,
    }
    cross_intro = (
        "Every validation/test sample that matches a sample of an earlier split: query on the "
        "left, reference on the right and, for near copies, their difference after alignment "
        "(dark = same picture). Hover a thumbnail to enlarge it. Labels in red differ on a copy."
    )
    within_intro = "Copies inside one split (informational: they do not leak, but they weigh twice)."
    body = [
        _header(report),
        '<nav><a href="#pairs-section">Cross-split pairs</a>'
        + ('<a href="#shift">Shift</a>' if report.verdict.shift_tests or report.leak_adjusted else "")
        + ('<a href="#checks">Checks</a>' if report.checks else "")
        + '<a href="#within-pairs-section">Within-split duplicates</a>'
        + ('<a href="#unreadable">Unreadable files</a>' if report.unreadable else "")
        + '<a href="#next">What to do next</a><a href="#settings">Settings and versions</a></nav>',
        _cards(report),
        _leak_table(report),
        _pair_table("", "pairs", "pair", "Cross-split pairs", cross_intro, cross,
                    len(report.cross_split_duplicates)),
        _shift(report),
        _checks(report),
        _pair_table("within-", "within", "wpair", "Within-split duplicates", within_intro, within,
                    len(report.within_split_duplicates)),
        _unreadable(report),
        _advice(report),
        _settings(report),
        f"<footer>splitaudit {esc(report.settings.get('version'))} · self-contained report: "
        "no network access, images embedded as thumbnails</footer>",
    ]
    script_hash = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
           f"script-src 'unsafe-inline' 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'")
    title = f"splitaudit: {report.verdict.status.upper()} - {report.dataset or ''}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f'<body style="--thumb:{int(thumb_size)}px">\n<main>\n' + "\n".join(body) + "\n</main>\n"
        f'<script type="application/json" id="splitaudit-data">{_script_json(payload)}</script>\n'
        f"<script>{_JS}</script>\n</body>\n</html>\n"
    )


def render_notebook(report: AuditReport, *, height: int = 760, **kw: Any) -> str:
    """The HTML report in a sandboxed ``<iframe srcdoc>`` (for Jupyter's ``_repr_html_``).

    The iframe keeps the report's styles, script and Content-Security-Policy apart from the
    notebook's page. ``kw`` goes to :func:`render_html` (``max_pairs`` defaults to 1000).
    """
    kw.setdefault("max_pairs", 1000)
    doc = render_html(report, **kw)
    return (f'<iframe srcdoc="{html.escape(doc, quote=True)}" sandbox="allow-scripts" '
            f'style="width:100%;height:{int(height)}px;border:1px solid #e2e5ea;border-radius:8px">'
            "</iframe>")
