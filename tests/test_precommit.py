"""End to end with the real pre-commit tool: a git repository holding a dataset, the hook of
this project's .pre-commit-hooks.yaml, and commits that leak, pass, and are accepted.

The hook runs as a ``repo: local`` entry with ``language: system`` (same entry, ``files`` and
``pass_filenames`` as the published hook, read from .pre-commit-hooks.yaml): ``pre-commit
try-repo`` would pip-install this project and its dependencies (TensorFlow among them) into a
fresh virtualenv, which needs network access and minutes, so it is not exercised here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from splitaudit.synth import make_dataset

ROOT = Path(__file__).resolve().parents[1]
pre_commit = pytest.importorskip("pre_commit", reason="pre-commit is not installed (pip install pre-commit)")
if shutil.which("git") is None:  # pragma: no cover
    pytest.skip("git is not installed", allow_module_level=True)

pytestmark = pytest.mark.slow


def manifest_hook(hook_id: str) -> dict:
    from pre_commit.clientlib import load_manifest

    return next(h for h in load_manifest(str(ROOT / ".pre-commit-hooks.yaml")) if h["id"] == hook_id)


def test_manifest_follows_pre_commit_conventions():
    hooks = {h["id"]: h for h in __import__("pre_commit.clientlib").clientlib.load_manifest(
        str(ROOT / ".pre-commit-hooks.yaml"))}
    assert set(hooks) == {"splitaudit", "splitaudit-full"}
    fast = hooks["splitaudit"]
    assert fast["entry"] == "splitaudit check" and fast["language"] == "python"
    assert fast["pass_filenames"] is False and fast["minimum_pre_commit_version"] == "3.0.0"
    import re

    files = re.compile(fast["files"])
    for name in ("data/val/cat/x.jpg", "data/train/a.JPEG", "b.png", "pyproject.toml",
                 "sub/splitaudit-baseline.json", "m.csv", "c.webp"):
        assert files.search(name), name
    for name in ("README.md", "src/model.py", "notes.txt"):
        assert not files.search(name), name
    assert "--embeddings" in hooks["splitaudit-full"]["entry"]


class Repo:
    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path, self.env = path, env

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), cwd=self.path, env=self.env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def commit(self, message: str) -> subprocess.CompletedProcess:
        self.run("git", "add", "-A")
        return self.run("git", "commit", "-m", message, check=False)

    def commits(self) -> int:
        proc = self.run("git", "rev-list", "--count", "HEAD", check=False)
        return int(proc.stdout.strip()) if proc.returncode == 0 else 0


def _entry(entry: str, env: dict[str, str]) -> str:
    """The manifest's entry, with ``splitaudit`` replaced by this interpreter's module when the
    console script is not on PATH (e.g. a test run from a virtualenv that is not activated)."""
    if shutil.which("splitaudit", path=env["PATH"]):
        return entry
    return entry.replace("splitaudit", f"{shlex.quote(sys.executable)} -m splitaudit.cli", 1)


@pytest.fixture()
def repo(tmp_path) -> Repo:
    path = tmp_path / "repo"
    path.mkdir()
    env = dict(os.environ)
    env.update({
        "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),
        "PRE_COMMIT_COLOR": "never", "TERM": "dumb",
    })
    env.pop("GIT_DIR", None)
    env.pop("GIT_INDEX_FILE", None)
    (tmp_path / "home").mkdir()
    r = Repo(path, env)
    r.run("git", "init", "-q", "-b", "main")
    r.run("git", "config", "user.name", "Test")
    r.run("git", "config", "user.email", "test@example.com")
    r.run("git", "config", "commit.gpgsign", "false")
    return r


def _config(repo: Repo, args: list[str] | None) -> None:
    hook = manifest_hook("splitaudit")
    lines = [
        "repos:",
        "  - repo: local",
        "    hooks:",
        f"      - id: {hook['id']}",
        f"        name: {hook['name']}",
        f"        entry: {_entry(hook['entry'], repo.env)}",
        "        language: system",
        f"        pass_filenames: {str(hook['pass_filenames']).lower()}",
        f"        require_serial: {str(hook['require_serial']).lower()}",
        f"        files: '{hook['files']}'",
    ]
    if args is not None:
        lines.append(f"        args: [{', '.join(args)}]")
    (repo.path / ".pre-commit-config.yaml").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("how", ["args", "pyproject"])
def test_commit_of_a_leaking_val_image_is_refused_until_accepted(repo, how):
    data = repo.path / "data"
    make_dataset(data, classes=2, train_per_class=8, val_per_class=3, size=64, seed=3)
    if how == "args":
        _config(repo, ["data"])
        baseline = data / "splitaudit-baseline.json"
    else:
        _config(repo, None)
        (repo.path / "pyproject.toml").write_text('[tool.splitaudit]\ndataset = "data"\nfail_on = "near"\n')
        baseline = repo.path / "splitaudit-baseline.json"
    repo.run(sys.executable, "-m", "pre_commit", "install")

    clean = repo.commit("clean dataset")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "Passed" in clean.stdout + clean.stderr
    assert repo.commits() == 1

    source = sorted((data / "train" / "class_1").glob("*.jpg"))[2]
    shutil.copyfile(source, data / "val" / "class_1" / "copied.jpg")
    leak = repo.commit("add a val image")
    out = leak.stdout + leak.stderr
    assert leak.returncode != 0, out
    assert "Failed" in out
    assert "data/val/class_1/copied.jpg" in out
    assert f"data/train/class_1/{source.name}" in out
    assert repo.commits() == 1  # the commit was refused

    accept = repo.run(*shlex.split(_entry("splitaudit", repo.env)), "baseline",
                      *(["data"] if how == "args" else []))
    assert baseline.exists(), accept.stdout + accept.stderr
    accepted = repo.commit("add a val image (duplicate accepted in the baseline)")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert repo.commits() == 2

    # A commit touching no image (nor the configuration) does not run the hook at all.
    (repo.path / "README.md").write_text("dataset\n")
    docs = repo.commit("docs")
    assert docs.returncode == 0 and "Skipped" in docs.stdout + docs.stderr

    # A second, different leak fails again: the baseline accepts only what it lists.
    other = sorted((data / "train" / "class_0").glob("*.jpg"))[1]
    shutil.copyfile(other, data / "val" / "class_0" / "another.jpg")
    again = repo.commit("another leak")
    out = again.stdout + again.stderr
    assert again.returncode != 0
    assert "data/val/class_0/another.jpg" in out and "copied.jpg" not in out
