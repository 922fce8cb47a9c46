"""The README's Python snippets run as written, on a real (tiny) dataset and Keras model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from splitaudit.synth import photo_array

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


@pytest.mark.slow
def test_python_api_snippets_run(tmp_path, monkeypatch):
    keras = pytest.importorskip("keras")
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks("Python API")
    assert len(blocks) == 3, "the README shows three snippets: audit, callback, explain"
    keras.utils.set_random_seed(0)
    x = photo_array(160, seed=1)
    y = np.arange(160) % 2
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.5),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ns = {"x_train": x[:120], "y_train": y[:120], "x_val": x[120:], "y_val": y[120:],
          "x": x, "y": y, "model": model}
    for block in blocks:
        exec(compile(block, str(README), "exec"), ns)  # noqa: S102 - our own README
    assert ns["report"].verdict.status in ("ok", "shifted", "easier")  # distinct images: no leak
    assert not ns["report"].cross_split_duplicates or all(
        p.match == "similar" for p in ns["report"].cross_split_duplicates)
    assert ns["explanation"].top is not None
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
