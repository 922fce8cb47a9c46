"""The HTML report: escaping, size, CLI, and the page itself in a real (headless) browser.

Browser tests drive the system Chromium (Debian's ``chromium`` package, ``/usr/bin/chromium``)
through Playwright's Python package; ``playwright install`` (a browser download) is never
needed. They skip, saying why, where either is missing; ``.ci/run`` installs both.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splitaudit import AuditConfig, scan
from splitaudit.cli import main
from splitaudit.render import html as html_render
from splitaudit.render.html import _difference_images, _thumbnail_data_uri, render_html
from splitaudit.report import (
    AuditReport,
    CheckResult,
    DuplicatePair,
    SampleRef,
    SplitPairSummary,
    Unreadable,
    decide_verdict,
)
from splitaudit.synth import random_photo, write_copy

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
XSS_LABEL = "<svg onload=window.__xss=1>"
HASH_ONLY = AuditConfig(embeddings=False, workers=0)


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def xss_dataset(leaky_dataset, tmp_path_factory) -> Path:
    """The leaky dataset plus a file and a class folder whose names are HTML."""
    src, _ = leaky_dataset
    root = tmp_path_factory.mktemp("xss") / "data"
    shutil.copytree(src, root)
    shutil.copyfile(root / "train/class_0/train_0_0019.jpg", root / "val/class_0" / XSS_NAME)
    (root / "val" / XSS_LABEL).mkdir()
    shutil.copyfile(root / "train/class_1/train_1_0018.jpg", root / "val" / XSS_LABEL / "copy.jpg")
    return root


@pytest.fixture(scope="module")
def xss_report(xss_dataset) -> AuditReport:
    return scan(xss_dataset, config=HASH_ONLY)


def _data_blob(doc: str) -> dict:
    m = re.search(r'<script type="application/json" id="splitaudit-data">(.*?)</script>', doc, re.S)
    assert m, "data block missing"
    return json.loads(m.group(1))


def _report(pairs: list[DuplicatePair], dataset: str | None, *, splits=None, within=(),
            unreadable=(), checks=None) -> AuditReport:
    """A report built directly from pairs (no scan)."""
    splits = splits or {"train": 1000, "val": 1000}
    summaries = [SplitPairSummary("val", "train", splits["val"],
                                  sum(p.match == "exact" for p in pairs),
                                  sum(p.match == "near" for p in pairs),
                                  sum(p.match == "similar" for p in pairs))]
    verdict = decide_verdict(summaries, pairs, fail_on="near", max_leak_rate=0.0)
    return AuditReport(dataset=dataset, layout="folders", splits=splits, split_pairs=summaries,
                       cross_split_duplicates=list(pairs), within_split_duplicates=list(within),
                       unreadable=list(unreadable), checks=checks or {}, verdict=verdict,
                       settings={"version": "test"}, timings={"fingerprint": 1.0})


def _pair(q: str, r: str, match: str = "near", *, ql="a", rl="a", ncc=0.97, cos=None) -> DuplicatePair:
    return DuplicatePair(SampleRef("val", q, ql), SampleRef("train", r, rl), match, ncc, cos, 4,
                         "flip+crop 10%")


def _photos(root: Path, n: int, size: int = 128, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        rel = f"img/{i:05d}.jpg"
        (root / "img").mkdir(parents=True, exist_ok=True)
        random_photo(rng, size).save(root / rel, "JPEG", quality=90)
        paths.append(rel)
    return paths


# --------------------------------------------------------------------------------------
# Raw HTML (no browser)
# --------------------------------------------------------------------------------------

def test_user_strings_are_escaped_in_the_raw_html(xss_report):
    doc = render_html(xss_report)
    names = [p.query.path for p in xss_report.cross_split_duplicates]
    assert f"val/class_0/{XSS_NAME}" in names  # the malicious file is a pair...
    assert any(p.query.label == XSS_LABEL for p in xss_report.cross_split_duplicates)
    # ... but neither it nor the label appears as markup anywhere in the document.
    assert "<img src=x onerror" not in doc
    assert "<svg onload" not in doc
    assert "\\u003cimg src=x onerror=alert(1)\\u003e.jpg" in doc  # JSON-escaped, in the data block
    rows = _data_blob(doc)["pairs"]
    assert any(r[2] == f"val/class_0/{XSS_NAME}" for r in rows)  # and it round-trips exactly
    # The dataset path (user-controlled) is escaped in the header; the CSP is there.
    assert '<meta http-equiv="Content-Security-Policy"' in doc
    assert "default-src &#x27;none&#x27;; img-src data:" in doc


def test_script_breakouts_and_line_separators_are_escaped(tmp_path):
    evil = "</script><script>window.__xss=1</script>"
    pair = _pair("val/a\u2028b\u2029c.jpg", "train/x.jpg", ql=evil, rl="'\"&amp;")
    report = _report([pair], str(tmp_path), unreadable=[Unreadable(evil, "val", evil)],
                     checks={"x": CheckResult("x", "warn", evil, {evil: evil})})
    doc = render_html(report)
    assert doc.count("</script>") == 2  # the data block's end and the script's end, nothing else
    assert "\u2028" not in doc and "\u2029" not in doc
    assert "<script>window.__xss" not in doc
    assert "&lt;/script&gt;&lt;script&gt;window.__xss=1&lt;/script&gt;" in doc  # server-side text
    row = _data_blob(doc)["pairs"][0]
    assert row[3] == evil and row[2] == "val/a\u2028b\u2029c.jpg" and row[6] == "'\"&amp;"


def test_csp_allows_exactly_the_inline_script(xss_report):
    doc = render_html(xss_report)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', doc).group(1)
    csp = csp.replace("&#x27;", "'")
    assert "default-src 'none'" in csp and "img-src data:" in csp
    scripts = re.findall(r"<script>(.*?)</script>", doc, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    # Fully offline: no URL that a browser would fetch.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", doc)
    assert "@import" not in doc and "url(" not in doc


def test_report_without_pairs_renders(tmp_path):
    report = _report([], str(tmp_path))
    assert report.verdict.status == "ok" and not report.cross_split_duplicates
    doc = render_html(report)
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    assert 'class="verdict good"' in doc and ">OK<" in doc
    blob = _data_blob(doc)
    assert blob["pairs"] == [] and blob["within"] == []
    assert "(no dataset path)" in render_html(_report([], None))


def test_thumbnails_are_cached_per_path_and_bad_files_give_placeholders(tmp_path):
    paths = _photos(tmp_path, 3)
    (tmp_path / "img/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    pairs = [_pair(paths[0], paths[1], "exact") for _ in range(50)]
    pairs += [_pair(paths[2], paths[1], "similar"), _pair("img/broken.jpg", "img/missing.jpg", "similar")]
    pairs.append(DuplicatePair(SampleRef("val", None, None, 7), SampleRef("train", paths[0], "a"),
                               "similar", 0.9, None, 3, "aligned"))
    blob = _data_blob(render_html(_report(pairs, str(tmp_path))))
    # 3 photos + one "unreadable" placeholder (shared by broken and missing) + "no file".
    assert len(blob["thumbs"]) == 5
    assert {r[12] for r in blob["pairs"][:50]} == {blob["pairs"][0][12]}
    broken = blob["pairs"][51]
    assert broken[12] == broken[13]
    assert blob["thumbs"][broken[12]].startswith("data:image/svg+xml;base64,")
    assert blob["pairs"][52][2] == "[7]"


@pytest.mark.parametrize("content", [None, b"", b"GIF89a\x00\x00", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_thumbnail_helper_never_raises(tmp_path, content):
    path = tmp_path / "f.png"
    if content is not None:
        path.write_bytes(content)
    uri = _thumbnail_data_uri(path, 64)
    assert uri.startswith("data:image/svg+xml;base64,")


def test_thumbnail_helper_fits_the_box(tmp_path):
    random_photo(np.random.default_rng(1), 300).crop((0, 0, 300, 150)).save(tmp_path / "w.png")
    uri = _thumbnail_data_uri(tmp_path / "w.png", 96)
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.size == (96, 48)
    Image.new("RGB", (20, 10), "red").save(tmp_path / "small.png")
    with Image.open(io.BytesIO(base64.b64decode(_thumbnail_data_uri(tmp_path / "small.png", 96)
                                                .split(",", 1)[1]))) as im:
        assert im.size == (20, 10)  # never enlarged


@pytest.mark.parametrize("family", ["hflip", "crop", "rotation"])
def test_difference_view_aligns_the_copy(tmp_path, family):
    rng = np.random.default_rng(5)
    random_photo(rng, 160).save(tmp_path / "a.jpg", quality=92)
    write_copy(tmp_path / "a.jpg", tmp_path / "b.jpg", family, rng)
    q, r = (Image.open(tmp_path / n).convert("RGB") for n in ("b.jpg", "a.jpg"))
    aligned = np.asarray(_difference_images([(q, r)], 96)[0], np.float32)
    # Unaligned |q - r| of the same normalisation, for comparison.
    side = aligned.shape[0]
    a = np.asarray(q.resize((side, side)), np.float32)
    b = np.asarray(r.resize((side, side)), np.float32)
    naive = np.asarray(html_render._diff_image(a, b, np.ones((side, side), bool)), np.float32)
    centre = (slice(side // 4, 3 * side // 4),) * 2
    assert aligned[centre].mean() < 0.6 * naive[centre].mean()


def test_200_pair_report_stays_small(tmp_path):
    paths = _photos(tmp_path, 400, size=160)
    kinds = ["exact", "near", "similar", "near"]
    pairs = [_pair(paths[i], paths[200 + i], kinds[i % 4]) for i in range(200)]
    t0 = time.perf_counter()
    doc = render_html(_report(pairs, str(tmp_path)))
    elapsed = time.perf_counter() - t0
    size = len(doc.encode())
    blob = _data_blob(doc)
    assert len(blob["pairs"]) == 200
    assert sum(r[14] is not None for r in blob["pairs"]) == 100  # a difference view per near pair
    assert size < 2_000_000, size
    assert elapsed < 60


def test_max_pairs_truncates_with_a_notice(tmp_path):
    paths = _photos(tmp_path, 2)
    report = _report([_pair(paths[0], paths[1], "similar") for _ in range(30)], str(tmp_path))
    doc = render_html(report, max_pairs=10)
    assert len(_data_blob(doc)["pairs"]) == 10
    assert "Showing the first 10 of 30 pairs" in doc


def test_check_results_render_generically_and_can_add_a_chart(tmp_path):
    checks = {"label_shift": CheckResult("label_shift", "warn", "Classes <differ>.",
                                         {"chi2": 12.5, "per_class": {"cat": 0.1}}),
              "ok_check": CheckResult("ok_check", "pass", "Fine.", {})}
    report = _report([], None, checks=checks)
    doc = render_html(report)
    assert 'data-check="label_shift"' in doc and "Classes &lt;differ&gt;." in doc
    assert "per_class.cat" in doc and 'class="pill warn"' in doc and 'class="pill good"' in doc

    @html_render.register_check_renderer("label_shift")
    def _chart(result, rep):
        return '<svg class="chart" width="10" height="10"></svg>'

    try:
        assert '<svg class="chart"' in render_html(report)
    finally:
        html_render.CHECK_RENDERERS.pop("label_shift")


def test_report_methods(xss_report):
    assert xss_report.to_html() == render_html(xss_report)
    frame = xss_report._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in frame
    assert "<script" not in frame and "<img src=x" not in frame


def test_cli_writes_html(leaky_dataset, tmp_path, capsys):
    root, _ = leaky_dataset
    out = tmp_path / "report.html"
    code = main(["scan", str(root), "--no-embeddings", "--workers", "0", "--quiet",
                 "--format", "html", "-o", str(out)])
    assert code == 1  # leaked: same exit code as the other formats
    captured = capsys.readouterr()
    assert captured.out == ""
    doc = out.read_text(encoding="utf-8")
    assert doc.startswith("<!DOCTYPE html>") and "LEAKED" in doc
    assert main(["scan", str(root), "--no-embeddings", "--workers", "0", "--quiet",
                 "--format", "html", "--fail-on", "never"]) == 0
    assert capsys.readouterr().out.startswith("<!DOCTYPE html>")  # stdout without --output


# --------------------------------------------------------------------------------------
# In a real browser
# --------------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str | None:
    for candidate in (os.environ.get("SPLITAUDIT_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not installed (pip install playwright; no browser download needed)")
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found at /usr/bin/chromium (apt-get install chromium) "
                    "or $SPLITAUDIT_CHROMIUM; the browser tests need one")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class _Page:
    """A page that records dialogs, errors, CSP violations and any network request."""

    def __init__(self, browser, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("request", lambda r: self.requests.append(r.url)
                     if not r.url.startswith(("data:", "file:")) else None)
        t0 = time.perf_counter()
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("html[data-ready]", timeout=30_000)
        self.load_seconds = time.perf_counter() - t0

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def shown(self, prefix: str = "") -> int:
        return int(self.page.locator(f"#{prefix}shown-count").inner_text())

    def wait_images(self) -> None:
        self.page.wait_for_function("() => Array.from(document.images).every(i => i.complete)",
                                    timeout=30_000)

    def close(self) -> None:
        self.page.close()


def test_browser_pairs_thumbnails_filters_and_no_xss(browser, xss_report, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(render_html(xss_report), encoding="utf-8")
    pairs = xss_report.cross_split_duplicates
    n_exact = sum(p.match == "exact" for p in pairs)
    assert 0 < n_exact < len(pairs)
    p = _Page(browser, path)
    try:
        page = p.page
        assert p.shown() == len(pairs)
        page.select_option("#page-size", "0")  # all rows on one page
        assert p.count("tr.pair") == len(pairs)
        p.wait_images()
        widths = page.eval_on_selector_all("tr.pair img.thumb", "els => els.map(e => e.naturalWidth)")
        assert len(widths) >= 2 * len(pairs) and all(w > 0 for w in widths)
        # Near pairs carry a third image, the difference view.
        assert p.count("tr.pair.kind-near figure.diff img") == sum(p.match == "near" for p in pairs)

        page.select_option("#kind-filter", "exact")
        assert p.count("tr.pair") == n_exact and p.shown() == n_exact
        assert p.count("tr.pair.kind-near") == 0
        page.select_option("#kind-filter", "")
        page.check("#conflict-filter")
        assert p.count("tr.pair") == len(xss_report.label_conflicts) >= 1
        assert p.count("tr.pair.conflict .chip.label.bad") == 2 * len(xss_report.label_conflicts)
        page.uncheck("#conflict-filter")
        with_name = sum(XSS_NAME in f"{x.query.path} {x.reference.path}" for x in pairs)
        page.fill("#search", "onerror")
        page.wait_for_function(
            f"() => document.querySelector('#shown-count').textContent === '{with_name}'")
        page.fill("#search", "")
        page.wait_for_function(
            f"() => document.querySelector('#shown-count').textContent === '{len(pairs)}'")

        page.select_option("#sort", "ncc-asc")
        nccs = [float(t) for t in page.eval_on_selector_all(
            "tr.pair td.scores div:first-child span:last-child", "els => els.map(e => e.textContent)")]
        assert nccs == sorted(nccs) and len(nccs) == len(pairs)

        # The malicious names are shown as text and did nothing.
        assert page.get_by_text(XSS_NAME, exact=False).count() >= 1
        assert page.locator("span.chip.label", has_text=XSS_LABEL).count() >= 1
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert page.evaluate("document.querySelectorAll('img[onerror], svg, img[src=x]').length") == 0
        assert p.dialogs == []
        assert p.errors == [] and p.requests == []
    finally:
        p.close()


def test_browser_pagination_with_10000_pairs(browser, tmp_path):
    paths = _photos(tmp_path, 60, size=96)
    rng = np.random.default_rng(0)
    kinds = ("exact", "near", "similar")
    pairs = [DuplicatePair(SampleRef("val", paths[int(rng.integers(0, 30))], f"c{i % 7}"),
                           SampleRef("train", paths[30 + int(rng.integers(0, 30))], f"c{(i * 3) % 7}"),
                           kinds[i % 3], float(rng.uniform(0.85, 1.0)), None, int(i % 20), "aligned")
             for i in range(10_000)]
    report = _report(pairs, str(tmp_path), splits={"train": 20_000, "val": 20_000})
    path = tmp_path / "big.html"
    path.write_text(render_html(report), encoding="utf-8")
    p = _Page(browser, path)
    try:
        page = p.page
        assert p.load_seconds < 10
        assert p.shown() == 10_000
        assert p.count("tr.pair") == html_render.PAGE_SIZE
        page.click(".pager [data-role=next]")
        first = page.locator("tr.pair td.idx").first.inner_text()
        assert first == str(html_render.PAGE_SIZE + 1)
        page.select_option("#kind-filter", "near")
        assert p.shown() == sum(x.match == "near" for x in pairs)
        p.wait_images()
        assert p.errors == [] and p.requests == []
    finally:
        p.close()


def test_browser_empty_report(browser, tmp_path):
    path = tmp_path / "empty.html"
    path.write_text(render_html(_report([], None)), encoding="utf-8")
    p = _Page(browser, path)
    try:
        assert p.shown() == 0 and p.count("tr.pair") == 0
        assert "No pairs." in p.page.locator("#pairs-section tbody").inner_text()
        assert p.errors == []
    finally:
        p.close()
