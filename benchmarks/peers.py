"""Peer tools for the benchmarks, each in its own virtual environment, driven out of process.

Every peer is installed from PyPI with ``python -m venv`` + ``pip install`` into
``/tmp/splitaudit-peers/<name>`` (``SPLITAUDIT_PEERS`` overrides the folder) the first time a
benchmark asks for it; nothing of theirs is committed or imported into the benchmark's own
process. A benchmark writes a small driver script (standard library + the peer) to a temporary
file and runs it with the venv's interpreter; the driver reads its arguments from a JSON file
and writes its answer to another, so the peer's imports (torch, pandas, ...) never enter ours.

When an install fails the peer is skipped with the reason (the last lines of pip's output),
recorded in the benchmark's JSON; the benchmark goes on without it.

Command line (to prepare the venvs ahead of a measured run)::

    python benchmarks/peers.py [imagededup cleanvision difpy]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RunResult, run_timed  # noqa: E402

#: Where the peers' virtual environments live (outside the repository).
PEERS_ROOT = Path(os.environ.get("SPLITAUDIT_PEERS", "/tmp/splitaudit-peers"))


@dataclass(frozen=True)
class PeerSpec:
    """How to install one peer and check that it imports."""

    name: str
    #: ``pip install`` arguments, in order (several lists = several pip calls).
    installs: tuple[tuple[str, ...], ...]
    #: Python statements that must run in the venv once installed.
    check: str
    #: Distributions whose versions are recorded next to the figures.
    versions: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


PEERS: dict[str, PeerSpec] = {
    # imagededup imports torchvision from imagededup.methods (its CNN lives there), so even its
    # PHash needs torch + torchvision. On x86_64 the only torchvision that imports here is the
    # 0.29.1 CUDA build beside torch 2.14.1, both taken from the machine's local wheel store
    # (~5.5 GB in the venv; PyPI's torchvision fails to import beside the local CPU torch 2.13).
    "imagededup": PeerSpec(
        "imagededup",
        (("torch==2.14.1", "torchvision==0.29.1"), ("imagededup",)),
        "import imagededup.methods; from imagededup.methods import PHash, CNN",
        ("imagededup", "torch", "torchvision", "Pillow", "numpy"),
        ("CNN: imagededup's default model (torchvision MobileNetV3-Small, ImageNet weights) is "
         "downloaded at run time, which is impossible offline; the speed run uses the same "
         "architecture with random weights through imagededup's CustomModel (same work per "
         "image, no meaningful duplicates), and the accuracy run leaves the CNN out.",),
    ),
    "cleanvision": PeerSpec(
        "cleanvision",
        (("cleanvision",),),
        "from cleanvision import Imagelab",
        ("cleanvision", "imagehash", "Pillow", "numpy", "pandas"),
    ),
    "difpy": PeerSpec(
        "difpy",
        (("difPy",),),
        "import difPy",
        ("difPy", "numpy", "Pillow"),
    ),
}


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or imported; the message says why."""


def venv_python(name: str) -> Path:
    return PEERS_ROOT / name / "bin" / "python"


def _ok_marker(name: str) -> Path:
    return PEERS_ROOT / name / ".splitaudit-ok.json"


def _pip(py: Path, args: tuple[str, ...], log: Path) -> None:
    cmd = [os.fspath(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *args]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-6:]
        raise PeerUnavailable(f"pip install {' '.join(args)} failed (exit {rc}): " + " | ".join(tail))


def versions(name: str) -> dict[str, str | None]:
    """Installed versions of the peer's main distributions (from its venv's marker)."""
    try:
        return json.loads(_ok_marker(name).read_text())["versions"]
    except (OSError, ValueError, KeyError):
        return {}


def ensure(name: str, *, log=print) -> Path:
    """The venv interpreter of peer ``name``, installing it first when needed.

    Raises
    ------
    PeerUnavailable
        When the venv cannot be created, pip fails or the peer does not import.
    """
    spec = PEERS[name]
    py = venv_python(name)
    if _ok_marker(name).is_file() and py.exists():
        return py
    root = PEERS_ROOT / name
    root.parent.mkdir(parents=True, exist_ok=True)
    install_log = PEERS_ROOT / f"{name}-install.log"
    install_log.write_text("")
    t0 = time.perf_counter()
    log(f"[peers] installing {name} into {root} (log: {install_log}) ...")
    if not py.exists():
        rc = subprocess.call([sys.executable, "-m", "venv", os.fspath(root)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if rc != 0:
            raise PeerUnavailable(f"python -m venv {root} failed (exit {rc})")
    for args in spec.installs:
        _pip(py, args, install_log)
    code = (spec.check + "\nimport json, importlib.metadata as m\nout = {}\n"
            f"for d in {list(spec.versions)!r}:\n"
            "    try: out[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: out[d] = None\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([os.fspath(py), "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PeerUnavailable(f"{name} installed but does not import: "
                              + " | ".join(proc.stderr.strip().splitlines()[-3:]))
    vers = json.loads(proc.stdout.strip().splitlines()[-1])
    _ok_marker(name).write_text(json.dumps({"versions": vers}))
    log(f"[peers] {name} ready in {time.perf_counter() - t0:.0f} s: {vers}")
    return py


def available(names: list[str], *, log=print) -> tuple[dict[str, Path], dict[str, str]]:
    """Install what is missing; returns ({name: python}, {name: why it is skipped})."""
    ready, skipped = {}, {}
    for n in names:
        if n not in PEERS:
            skipped[n] = f"unknown peer (known: {', '.join(PEERS)})"
            continue
        try:
            ready[n] = ensure(n, log=log)
        except PeerUnavailable as exc:
            skipped[n] = str(exc)
            log(f"[peers] {n} skipped: {exc}")
    return ready, skipped


def write_driver(code: str, tag: str) -> Path:
    """Write a driver script to a temporary file (the caller's to delete)."""
    fd, path = tempfile.mkstemp(prefix=f"splitaudit-peer-{tag}-", suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(code)
    return Path(path)


def run_driver(name: str, code: str, args: dict, *, timed: bool = False,
               env: dict | None = None) -> tuple[dict, RunResult | None]:
    """Run driver ``code`` with peer ``name``'s interpreter; returns (its JSON answer, timing).

    The driver gets two command-line arguments: a JSON file holding ``args`` and the path where
    it must write its JSON answer. With ``timed`` the run is measured by ``_common.run_timed``
    (wall/CPU time, peak memory of its process tree, process start included).
    """
    py = ensure(name)
    script = write_driver(code, name)
    fd, arg_path = tempfile.mkstemp(prefix="splitaudit-peer-args-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(args, f)
    out_path = Path(arg_path[:-5] + "-out.json")
    cmd = [os.fspath(py), os.fspath(script), arg_path, os.fspath(out_path)]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTHONPATH", None)  # nothing of ours leaks into the peer's interpreter
    try:
        if timed:
            res = run_timed(cmd, env=full_env)
            err = res.stderr
            rc = res.returncode
        else:
            proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True)
            res, err, rc = None, proc.stderr, proc.returncode
        if rc != 0:
            raise RuntimeError(f"{name} driver failed (exit {rc}): "
                               + " | ".join(err.strip().splitlines()[-5:]))
        answer = json.loads(out_path.read_text())
    finally:
        for p in (script, Path(arg_path), out_path):
            p.unlink(missing_ok=True)
    return answer, res



# ------------------------------------------------------------------------------------------
# Drivers: run by a peer's interpreter as ``python DRIVER ARGS.json OUT.json``. ARGS holds
# ``root`` (the dataset folder) and driver options; OUT gets ``pairs`` (unordered pairs of paths
# relative to ``root``, with the peer's kind and score) unless ``count_only``, ``n_images`` and
# ``stages_s`` (seconds per stage inside the process, imports included in ``import``).
# ------------------------------------------------------------------------------------------

_PRELUDE = """
import json, os, sys, time
T0 = time.perf_counter()
ARGS = json.load(open(sys.argv[1]))
ROOT = os.path.abspath(ARGS["root"])
STAGES = {}
def stage(name, t):
    STAGES[name] = round(time.perf_counter() - t, 3)
    return time.perf_counter()
def rel(p):
    p = os.path.abspath(str(p))
    return os.path.relpath(p, ROOT)
def finish(pairs, n_images, extra=None):
    out = {"n_images": n_images, "n_pairs": len(pairs), "stages_s": STAGES}
    if not ARGS.get("count_only"):
        out["pairs"] = pairs
    out.update(extra or {})
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)
"""

#: imagededup's PHash as its README shows it: encode a folder (recursive), then
#: ``find_duplicates(max_distance_threshold=10)`` (its default) on the encodings.
IMAGEDEDUP_PHASH = _PRELUDE + """
t = time.perf_counter()
from imagededup.methods import PHash
t = stage("import", t)
ph = PHash(verbose=False)
enc = ph.encode_images(image_dir=ROOT, recursive=True)
t = stage("encode", t)
dups = ph.find_duplicates(encoding_map=enc, max_distance_threshold=int(ARGS.get("threshold", 10)),
                          scores=True)
t = stage("search", t)
pairs = {}
for a, lst in dups.items():
    for b, d in lst:
        key = (a, b) if a < b else (b, a)
        pairs[key] = ["near", int(d)]
finish([[a, b, k, d] for (a, b), (k, d) in sorted(pairs.items())], len(enc))
"""

#: imagededup's CNN path (``CNN.encode_images``) with its own architecture and transform
#: (MobileNetV3-Small cut at global average pooling, 256 -> centre 224 crop), but RANDOM
#: weights: its ImageNet weights are a download, impossible offline. Same work per image, so
#: the encoding speed is real; its duplicates would be meaningless, so only encoding is run
#: (its search is left out, which favours the peer in a speed comparison).
IMAGEDEDUP_CNN_RANDOM = _PRELUDE + """
t = time.perf_counter()
import torch, torchvision
from imagededup.methods import CNN
from imagededup.utils.models import CustomModel, MobilenetV3
t = stage("import", t)
torch.manual_seed(0)
net = torchvision.models.mobilenet_v3_small(weights=None).eval()
class Gap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.body = torch.nn.Sequential(m.features, m.avgpool)
    def forward(self, x):
        return self.body(x).squeeze(dim=3).squeeze(dim=2)
cnn = CNN(verbose=False, model_config=CustomModel(name="mobilenet_v3_small-random-weights",
                                                  model=Gap(net), transform=MobilenetV3.transform))
t = stage("model", t)
enc = cnn.encode_images(image_dir=ROOT, recursive=True)
t = stage("encode", t)
finish([], len(enc), {"threads": torch.get_num_threads()})
"""

#: cleanvision's exact (MD5 of the bytes) and near (equal 64-bit pHash) duplicate sets.
CLEANVISION = _PRELUDE + """
t = time.perf_counter()
from cleanvision import Imagelab
t = stage("import", t)
lab = Imagelab(data_path=ROOT, verbose=False)
lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}}, verbose=False)
t = stage("find_issues", t)
pairs = {}
for kind in ("near", "exact"):  # exact last: a pair in both is exact
    for group in lab.info[kind + "_duplicates"]["sets"]:
        group = sorted(rel(p) for p in group)
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                pairs[(a, b)] = [kind, None]
n = len(lab.issues)
finish([[a, b, k, d] for (a, b), (k, d) in sorted(pairs.items())], n)
"""

#: difPy's "similar" search (MSE of 50x50 thumbnails <= 5, all pairs: O(N^2) in Python).
DIFPY = _PRELUDE + """
t = time.perf_counter()
import difPy
t = stage("import", t)
dif = difPy.build(ROOT, recursive=True, show_progress=False)
t = stage("build", t)
res = difPy.search(dif, similarity="similar", show_progress=False)
t = stage("search", t)
pairs = {}
for a, lst in res.result.items():
    for b, mse in lst:
        a_, b_ = sorted((rel(a), rel(b)))
        pairs[(a_, b_)] = ["exact" if float(mse) == 0 else "near", float(mse)]
finish([[a, b, k, d] for (a, b), (k, d) in sorted(pairs.items())], len(dif._tensor_dictionary))
"""

#: (peer, method) -> (driver code, what it runs, True when it needs the peer's network weights).
DRIVERS: dict[tuple[str, str], tuple[str, str]] = {
    ("imagededup", "phash"): (IMAGEDEDUP_PHASH, "imagededup PHash, max_distance_threshold=10"),
    ("imagededup", "cnn"): (IMAGEDEDUP_CNN_RANDOM, "imagededup CNN encode_images, MobileNetV3-Small "
                            "with RANDOM weights (ImageNet weights need a download)"),
    ("cleanvision", "duplicates"): (CLEANVISION, "cleanvision exact_duplicates + near_duplicates"),
    ("difpy", "similar"): (DIFPY, "difPy search(similarity='similar')"),
}


def run_method(peer: str, method: str, root: Path, *, timed: bool = False,
               count_only: bool = False, **options) -> tuple[dict, RunResult | None]:
    """Run one peer method on the folder ``root``; see :data:`DRIVERS`."""
    code, _ = DRIVERS[(peer, method)]
    return run_driver(peer, code, {"root": os.fspath(root), "count_only": count_only, **options},
                      timed=timed)


if __name__ == "__main__":
    _, why = available(sys.argv[1:] or list(PEERS))
    for n, w in why.items():
        print(f"{n}: {w}")
    sys.exit(1 if why else 0)
