"""Tests for dataset discovery: split folders, explicit splits and CSV manifests."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from splitaudit.errors import InvalidInputError
from splitaudit.sources import Sample, SampleSet, Skipped, discover, parse_split_arg, read_manifest


def touch(root: Path, *relpaths: str) -> None:
    """Create tiny files (content is irrelevant: discovery never opens them)."""
    for rel in relpaths:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def paths(ss: SampleSet, split: str | None = None) -> list[str]:
    return [s.path for s in ss.samples if split is None or s.split == split]


def write_csv(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------------
# Folder layout
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train", "val", "test"),
    [
        ("train", "val", "test"),
        ("training", "valid", "testing"),
        ("Train", "Validation", "TEST"),
        ("TRAINING", "dev", "Testing"),
    ],
)
def test_aliases_map_to_canonical_names(tmp_path: Path, train: str, val: str, test: str) -> None:
    touch(tmp_path, f"{test}/c.jpg", f"{val}/b.jpg", f"{train}/a.jpg")
    ss = discover(tmp_path)
    assert ss.splits == ["train", "val", "test"]
    assert [(s.split, s.path) for s in ss.samples] == [
        ("train", f"{train}/a.jpg"),
        ("val", f"{val}/b.jpg"),
        ("test", f"{test}/c.jpg"),
    ]
    assert ss.layout == "folders"
    assert ss.root == tmp_path.absolute()
    s = ss.samples[0]
    assert s.abspath == tmp_path.absolute() / train / "a.jpg"
    assert s.abspath.is_absolute() and s.abspath.is_file()
    assert s.label is None and s.group is None and s.index is None


def test_only_present_splits_in_order(tmp_path: Path) -> None:
    touch(tmp_path, "test/a.jpg", "train/a.jpg")
    ss = discover(str(tmp_path))
    assert ss.splits == ["train", "test"]
    assert ss.counts() == {"train": 1, "test": 1}


def test_class_subfolders_and_nested_files(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "train/cat/1.jpg",
        "train/cat/deep/er/2.png",
        "train/dog/3.jpeg",
        "val/cat/4.jpg",
        "val/dog/sub/5.webp",
    )
    ss = discover(tmp_path)
    assert ss.layout == "folders+classes"
    got = [(s.split, s.path, s.label) for s in ss.samples]
    assert got == [
        ("train", "train/cat/1.jpg", "cat"),
        ("train", "train/cat/deep/er/2.png", "cat"),
        ("train", "train/dog/3.jpeg", "dog"),
        ("val", "val/cat/4.jpg", "cat"),
        ("val", "val/dog/sub/5.webp", "dog"),
    ]
    deep = ss.samples[1]
    assert deep.abspath == tmp_path.absolute() / "train" / "cat" / "deep" / "er" / "2.png"


def test_flat_splits(tmp_path: Path) -> None:
    touch(tmp_path, "train/b.jpg", "train/a.jpg", "test/z.jpg")
    ss = discover(tmp_path)
    assert ss.layout == "folders"
    assert paths(ss) == ["train/a.jpg", "train/b.jpg", "test/z.jpg"]
    assert all(s.label is None for s in ss.samples)


def test_mixed_loose_files_get_no_label(tmp_path: Path) -> None:
    touch(tmp_path, "train/cat/1.jpg", "train/loose.jpg", "val/2.jpg")
    ss = discover(tmp_path)
    assert ss.layout == "folders+classes"
    labels = {s.path: s.label for s in ss.samples}
    assert labels == {"train/cat/1.jpg": "cat", "train/loose.jpg": None, "val/2.jpg": None}
    assert any("no label" in n and "'train'" in n for n in ss.notes)


def test_hidden_and_junk_are_ignored_silently(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "train/cat/a.jpg",
        "train/.DS_Store",
        "train/.hidden/x.jpg",
        "train/cat/.secret.jpg",
        "train/__MACOSX/y.jpg",
        "train/Thumbs.db",
        "train/desktop.ini",
        "val/b.jpg",
        ".git/config",
        "__MACOSX/train/z.jpg",
    )
    ss = discover(tmp_path)
    assert paths(ss) == ["train/cat/a.jpg", "val/b.jpg"]
    assert ss.skipped == []
    assert ss.notes == []  # hidden/junk top-level folders are not even noted


def test_non_image_extensions_are_skipped_with_reason(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "train/a.jpg",
        "train/notes.txt",
        "train/cat/meta.JSON",
        "train/cat/arr.npy",
        "train/noext",
        "train/scan.dcm",
        "val/b.jpg",
    )
    ss = discover(tmp_path)
    # Unknown or missing extensions are kept: the decoder decides later.
    assert paths(ss, "train") == ["train/a.jpg", "train/noext", "train/scan.dcm"]
    assert ss.skipped == [
        Skipped("train", "train/cat/arr.npy", "not an image file (.npy)"),
        Skipped("train", "train/cat/meta.JSON", "not an image file (.json)"),
        Skipped("train", "train/notes.txt", "not an image file (.txt)"),
    ]


def test_other_folders_and_top_files_are_noted(tmp_path: Path) -> None:
    touch(tmp_path, "train/a.jpg", "val/b.jpg", "extra/c.jpg", "README.md")
    ss = discover(tmp_path)
    assert "ignored folder 'extra' (not a split name)" in ss.notes
    assert any("README.md" in n for n in ss.notes)
    assert paths(ss) == ["train/a.jpg", "val/b.jpg"]


def test_duplicate_aliases_error_names_both(tmp_path: Path) -> None:
    touch(tmp_path, "train/a.jpg", "val/b.jpg", "valid/c.jpg")
    with pytest.raises(InvalidInputError) as err:
        discover(tmp_path)
    msg = str(err.value)
    assert "'val'" in msg and "'valid'" in msg


def test_unknown_layout_error_lists_layouts_and_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    touch(data, "a/x.jpg", "b/y.jpg", ".hidden/z.jpg", "labels.csv")
    with pytest.raises(InvalidInputError) as err:
        discover(data)
    msg = str(err.value)
    assert msg.startswith(f"No splits found in {str(data)!r}. splitaudit understands: ")
    assert "DIR/train/" in msg and "--split NAME=PATH" in msg
    assert "path,split[,label][,group]" in msg
    assert "Found folders: a, b." in msg
    assert ".hidden" not in msg
    assert "labels.csv" in msg  # hint: this may be the manifest


def test_unknown_layout_exact_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "data/a/x.jpg", "data/b/y.jpg")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError) as err:
        discover("data")
    assert str(err.value) == (
        "No splits found in 'data'. splitaudit understands: DIR/train/ + DIR/val/ and/or "
        "DIR/test/ (aliases training, valid, validation, dev, testing), each with class "
        "subfolders or files; --split NAME=PATH (repeatable); or a CSV manifest with columns "
        "path,split[,label][,group]. Found folders: a, b."
    )


def test_empty_root_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="Found folders: none"):
        discover(tmp_path)


def test_single_split_error(tmp_path: Path) -> None:
    touch(tmp_path, "train/a.jpg", "other/b.jpg")
    with pytest.raises(InvalidInputError, match="at least two splits"):
        discover(tmp_path)


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(InvalidInputError) as err:
        discover(missing)
    assert str(err.value) == f"Dataset directory {str(missing)!r} does not exist."


def test_root_is_non_csv_file(tmp_path: Path) -> None:
    touch(tmp_path, "x.jpg")
    with pytest.raises(InvalidInputError, match="is a file"):
        discover(tmp_path / "x.jpg")


def test_nothing_given() -> None:
    with pytest.raises(InvalidInputError, match="No dataset given"):
        discover()


def test_empty_split_is_allowed_with_note(tmp_path: Path) -> None:
    touch(tmp_path, "train/a.jpg", "val/readme.txt")
    (tmp_path / "test").mkdir()
    ss = discover(tmp_path)
    assert ss.splits == ["train", "val", "test"]
    assert ss.counts() == {"train": 1, "val": 0, "test": 0}
    assert "split 'test' has no usable files" in ss.notes
    assert "split 'val' has no usable files (1 skipped)" in ss.notes


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX byte file names")
def test_non_utf8_file_name(tmp_path: Path) -> None:
    touch(tmp_path, "val/ok.jpg")
    (tmp_path / "train").mkdir()
    fd = os.open(os.fsencode(str(tmp_path)) + b"/train/bad\xff.jpg", os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    ss = discover(tmp_path)
    bad = ss.samples[0]
    assert bad.path == "train/bad\\xff.jpg"
    json.dumps(bad.path)
    bad.path.encode("utf-8")  # printable
    assert bad.abspath.exists()
    with open(bad.abspath, "rb") as fh:
        assert fh.read() == b""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX byte file names")
def test_non_utf8_class_folder_label_is_printable(tmp_path: Path) -> None:
    touch(tmp_path, "val/ok.jpg")
    os.makedirs(os.fsencode(str(tmp_path)) + b"/train/caf\xe9")
    fd = os.open(os.fsencode(str(tmp_path)) + b"/train/caf\xe9/1.jpg", os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    ss = discover(tmp_path)
    s = ss.samples[0]
    assert s.label == "caf\\xe9" and s.path == "train/caf\\xe9/1.jpg"
    assert s.abspath.exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinks(tmp_path: Path) -> None:
    touch(tmp_path, "train/cat/a.jpg", "val/b.jpg", "elsewhere/real.jpg", "elsewhere/sub/s.jpg")
    os.symlink(tmp_path / "elsewhere" / "real.jpg", tmp_path / "val" / "link.jpg")
    # A loop back to the split folder must not be followed.
    os.symlink(tmp_path / "train", tmp_path / "train" / "cat" / "loop")
    os.symlink(tmp_path / "elsewhere" / "sub", tmp_path / "val" / "dirlink")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "val" / "dangling.jpg")
    ss = discover(tmp_path)
    assert paths(ss) == ["train/cat/a.jpg", "val/b.jpg", "val/link.jpg"]
    reasons = {s.path: s.reason for s in ss.skipped}
    assert reasons == {
        "train/cat/loop": "directory symlink not followed",
        "val/dirlink": "directory symlink not followed",
        "val/dangling.jpg": "broken symlink",
    }


@pytest.mark.skipif(
    sys.platform == "win32" or (hasattr(os, "geteuid") and os.geteuid() == 0),
    reason="root can read any directory",
)
def test_unreadable_directory_is_skipped(tmp_path: Path) -> None:
    touch(tmp_path, "train/a.jpg", "train/locked/b.jpg", "val/c.jpg")
    locked = tmp_path / "train" / "locked"
    locked.chmod(0)
    try:
        ss = discover(tmp_path)
    finally:
        locked.chmod(0o755)
    assert paths(ss) == ["train/a.jpg", "val/c.jpg"]
    assert ss.skipped == [
        Skipped("train", "train/locked/", "directory not readable (permission denied)")
    ]


def test_unreadable_directory_via_monkeypatch(tmp_path: Path, monkeypatch) -> None:
    # Same as above but also runs as root: make scandir refuse one folder.
    touch(tmp_path, "train/a.jpg", "train/locked/b.jpg", "val/c.jpg")
    real = os.scandir
    locked = str(tmp_path / "train" / "locked")

    def fake(path):  # type: ignore[no-untyped-def]
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", fake)
    ss = discover(tmp_path)
    assert paths(ss) == ["train/a.jpg", "val/c.jpg"]
    assert ss.skipped == [
        Skipped("train", "train/locked/", "directory not readable (permission denied)")
    ]


def test_discovery_modifies_nothing(tmp_path: Path) -> None:
    touch(tmp_path, "train/cat/a.jpg", "val/b.txt", "val/c.jpg")
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    discover(tmp_path)
    after = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert before == after


def test_ten_thousand_files(tmp_path: Path) -> None:
    expected: list[str] = []
    for split, n in (("train", 7000), ("val", 1500), ("test", 1500)):
        for c in range(10):
            d = tmp_path / split / f"class_{c}"
            d.mkdir(parents=True)
            for i in range(n // 10):
                (d / f"img_{i:05d}.jpg").write_bytes(b"")
                expected.append(f"{split}/class_{c}/img_{i:05d}.jpg")
    t0 = time.perf_counter()
    ss = discover(tmp_path)
    elapsed = time.perf_counter() - t0
    assert ss.counts() == {"train": 7000, "val": 1500, "test": 1500}
    assert paths(ss) == expected  # split order, then path order
    assert all(s.label == s.path.split("/")[1] for s in ss.samples)
    assert len({s.abspath for s in ss.samples}) == 10_000
    assert elapsed < 5.0  # generous: a loaded CI box; typical is well under 0.1 s


# --------------------------------------------------------------------------------------------
# Explicit splits
# --------------------------------------------------------------------------------------------


def test_explicit_splits_relative_to_root(tmp_path: Path) -> None:
    touch(tmp_path, "a/cat/1.jpg", "b/2.jpg", "c/3.jpg", "train/ignored.jpg")
    ss = discover(tmp_path, splits={"holdout": "c", "validation": "b", "train": "a"})
    assert ss.layout == "explicit"
    assert ss.splits == ["train", "val", "holdout"]
    assert [(s.split, s.path, s.label) for s in ss.samples] == [
        ("train", "a/cat/1.jpg", "cat"),
        ("val", "b/2.jpg", None),
        ("holdout", "c/3.jpg", None),
    ]
    assert ss.root == tmp_path.absolute()


def test_explicit_splits_relative_to_cwd_common_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path, "d/x/tr/1.jpg", "d/y/te/2.jpg")
    monkeypatch.chdir(tmp_path / "d")
    ss = discover(splits={"testing": "y/te", "training": Path("x/tr")})
    assert ss.splits == ["train", "test"]
    assert ss.root == (tmp_path / "d").absolute()
    assert paths(ss) == ["x/tr/1.jpg", "y/te/2.jpg"]
    assert ss.samples[0].abspath == (tmp_path / "d" / "x" / "tr" / "1.jpg").absolute()


def test_explicit_siblings_root_is_parent(tmp_path: Path) -> None:
    touch(tmp_path, "tr/1.jpg", "va/2.jpg")
    ss = discover(splits={"train": tmp_path / "tr", "val": str(tmp_path / "va")})
    assert ss.root == tmp_path.absolute()
    assert paths(ss) == ["tr/1.jpg", "va/2.jpg"]


def test_explicit_other_names_keep_given_order(tmp_path: Path) -> None:
    touch(tmp_path, "p/1.jpg", "q/2.jpg", "r/3.jpg")
    ss = discover(tmp_path, splits={"zeta": "p", "alpha": "q", "test": "r"})
    assert ss.splits == ["test", "zeta", "alpha"]


@pytest.mark.parametrize("bad", ["Val", "1st", "my-split", "", "a b", "_x"])
def test_explicit_bad_names(tmp_path: Path, bad: str) -> None:
    touch(tmp_path, "a/1.jpg", "b/2.jpg")
    with pytest.raises(InvalidInputError) as err:
        discover(tmp_path, splits={"train": "a", bad: "b"})
    assert str(err.value).startswith("The 'split' parameter of scan must be a snake_case")
    assert str(err.value).endswith(f"Got {bad!r} instead.")


def test_explicit_alias_twice(tmp_path: Path) -> None:
    touch(tmp_path, "a/1.jpg", "b/2.jpg")
    with pytest.raises(InvalidInputError, match="'val' and 'valid'"):
        discover(tmp_path, splits={"val": "a", "valid": "b"})


def test_explicit_missing_and_not_dir(tmp_path: Path) -> None:
    touch(tmp_path, "a/1.jpg", "f.jpg")
    with pytest.raises(InvalidInputError, match="does not exist"):
        discover(tmp_path, splits={"train": "a", "val": "nope"})
    with pytest.raises(InvalidInputError, match="not a directory"):
        discover(tmp_path, splits={"train": "a", "val": "f.jpg"})


def test_explicit_single_split(tmp_path: Path) -> None:
    touch(tmp_path, "a/1.jpg")
    with pytest.raises(InvalidInputError, match="at least two splits"):
        discover(tmp_path, splits={"train": "a"})


def test_explicit_same_folder_twice_is_noted(tmp_path: Path) -> None:
    touch(tmp_path, "a/1.jpg")
    ss = discover(tmp_path, splits={"train": "a", "test": "a"})
    assert ss.counts() == {"train": 1, "test": 1}
    assert any("same folder" in n for n in ss.notes)


def test_parse_split_arg() -> None:
    assert parse_split_arg("train=data/tr") == ("train", "data/tr")
    assert parse_split_arg("val=a=b") == ("val", "a=b")
    for bad in ("x", "=path", "train=", "train"):
        with pytest.raises(InvalidInputError) as err:
            parse_split_arg(bad)
        assert str(err.value) == (
            f"The 'split' parameter of scan must be NAME=PATH. Got {bad!r} instead."
        )


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def test_manifest_basic_with_bom_and_headers(tmp_path: Path) -> None:
    touch(tmp_path, "img/1.jpg", "img/2.jpg", "img/3.jpg", "img/4.jpg")
    m = write_csv(
        tmp_path / "m.csv",
        " Path , SPLIT ,Label,Group,extra\n"
        "img/2.jpg,Train,cat,p1,zz\n"
        "img/1.jpg,training,dog,,zz\n"
        "img/3.jpg,valid,cat,p2,\n"
        "img/4.jpg,test,,p3,\n",
        bom=True,
    )
    ss = discover(manifest=m)
    assert ss.layout == "manifest"
    assert ss.root == tmp_path.absolute()
    assert ss.splits == ["train", "val", "test"]
    assert [(s.split, s.path, s.label, s.group) for s in ss.samples] == [
        ("train", "img/1.jpg", "dog", None),
        ("train", "img/2.jpg", "cat", "p1"),
        ("val", "img/3.jpg", "cat", "p2"),
        ("test", "img/4.jpg", None, "p3"),
    ]
    assert ss.samples[0].abspath == tmp_path.absolute() / "img" / "1.jpg"


def test_manifest_csv_as_root(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "b.jpg")
    m = write_csv(tmp_path / "list.CSV", "path,split\na.jpg,train\nb.jpg,test\n")
    ss = discover(m)
    assert ss.layout == "manifest"
    assert paths(ss) == ["a.jpg", "b.jpg"]
    assert read_manifest(str(m)).samples == ss.samples


def test_manifest_paths_relative_to_manifest_dir_and_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path, "meta/imgs/a.jpg", "outside/b.jpg")
    absb = (tmp_path / "outside" / "b.jpg").absolute()
    m = write_csv(tmp_path / "meta" / "m.csv", f"path,split\nimgs/a.jpg,train\n{absb},val\n")
    monkeypatch.chdir(tmp_path)
    ss = discover(manifest="meta/m.csv")
    assert ss.root == (tmp_path / "meta").absolute()
    assert paths(ss) == ["imgs/a.jpg", absb.as_posix()]
    assert ss.samples[1].abspath == absb


def test_manifest_missing_file_and_non_image(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "b.jpg", "n.txt")
    m = write_csv(
        tmp_path / "m.csv", "path,split\na.jpg,train\ngone.jpg,train\nb.jpg,val\nn.txt,val\n"
    )
    ss = discover(manifest=m)
    assert paths(ss) == ["a.jpg", "b.jpg"]
    assert ss.skipped == [
        Skipped("train", "gone.jpg", "file not found"),
        Skipped("val", "n.txt", "not an image file (.txt)"),
    ]


def test_manifest_duplicates(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "b.jpg")
    m = write_csv(
        tmp_path / "m.csv",
        "path,split\na.jpg,train\n./a.jpg,train\na.jpg,test\nb.jpg,test\n",
    )
    ss = discover(manifest=m)
    # Same path in two splits is a leak to report: kept in both. Twice in one split: once.
    assert [(s.split, s.path) for s in ss.samples] == [
        ("train", "a.jpg"),
        ("test", "a.jpg"),
        ("test", "b.jpg"),
    ]
    assert any("twice in split 'train'" in n and "lines 2 and 3" in n for n in ss.notes)


def test_manifest_missing_column(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", "file,split\na.jpg,train\n")
    with pytest.raises(InvalidInputError) as err:
        discover(manifest=m)
    msg = str(err.value)
    assert "line 1" in msg and "missing required column 'path'" in msg and "'file'" in msg


def test_manifest_empty(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", "")
    with pytest.raises(InvalidInputError, match=r"is empty \(line 1\)"):
        discover(manifest=m)
    m2 = write_csv(tmp_path / "m2.csv", "path,split\n")
    with pytest.raises(InvalidInputError, match="no rows after the header .line 2"):
        discover(manifest=m2)


def test_manifest_empty_split_gives_line(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "b.jpg")
    m = write_csv(tmp_path / "m.csv", "path,split\na.jpg,train\n\nb.jpg,  \n")
    with pytest.raises(InvalidInputError, match="line 4: empty split"):
        discover(manifest=m)


def test_manifest_bad_split_name(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "b.jpg")
    m = write_csv(tmp_path / "m.csv", "path,split\na.jpg,train\nb.jpg,my split!\n")
    with pytest.raises(InvalidInputError, match="line 3: split 'my split!' is not a snake_case"):
        discover(manifest=m)


def test_manifest_empty_path(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", "path,split\n,train\n")
    with pytest.raises(InvalidInputError, match="line 2: empty path"):
        discover(manifest=m)


def test_manifest_single_split(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg")
    m = write_csv(tmp_path / "m.csv", "path,split\na.jpg,train\n")
    with pytest.raises(InvalidInputError, match="at least two splits"):
        discover(manifest=m)


def test_manifest_not_utf8(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_bytes(b"path,split\ncaf\xe9.jpg,train\n")
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        discover(manifest=m)


def test_manifest_semicolon_and_quoted(tmp_path: Path) -> None:
    touch(tmp_path, "a b.jpg", "c,d.jpg")
    m = write_csv(tmp_path / "m.csv", 'path;split\r\n"a b.jpg";train\r\n"c,d.jpg";val\r\n')
    ss = discover(manifest=m)
    assert paths(ss) == ["a b.jpg", "c,d.jpg"]


def test_manifest_and_root_together_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path, "train/a.jpg", "val/b.jpg")
    m = write_csv(tmp_path / "m.csv", "path,split\ntrain/a.jpg,train\nval/b.jpg,val\n")
    with pytest.raises(InvalidInputError, match="not both"):
        discover(tmp_path, manifest=m)


def test_manifest_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        discover(manifest=tmp_path / "m.csv")


def test_sample_types(tmp_path: Path) -> None:
    touch(tmp_path, "train/a.jpg", "val/b.jpg")
    ss = discover(tmp_path)
    assert all(isinstance(s, Sample) and isinstance(s.abspath, Path) for s in ss.samples)


@pytest.mark.skipif(os.sep != "/", reason="POSIX reading a Windows-written manifest")
def test_manifest_windows_separators(tmp_path: Path) -> None:
    touch(tmp_path, "img/a.jpg", "img/b.jpg")
    m = write_csv(tmp_path / "m.csv", "path,split\nimg\\a.jpg,train\nimg\\b.jpg,val\n")
    ss = discover(manifest=m)
    assert paths(ss) == ["img/a.jpg", "img/b.jpg"]
    assert ss.skipped == []
