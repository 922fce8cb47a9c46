"""splitaudit.explain (module splitaudit.diagnosis) and `splitaudit explain`: real (tiny) Keras
training runs on CPU, each planting one reason why validation beats training, and checking that
it is ranked first."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from splitaudit.errors import InvalidInputError
from splitaudit.diagnosis import explain, load_history, shift_half_epoch

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

W = np.random.default_rng(99).normal(size=20)


def tabular(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy linear two-class problem (same rule for every seed)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    y = ((x @ W + 0.5 * rng.normal(size=n)) > 0).astype("int64")
    return x, y


def images(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose class is which half (top or bottom) is brighter: learnable, and
    harder to learn through rotations and zooms."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 140, size=(n, size, size, 3)).astype(np.uint8)
    y = rng.integers(0, 2, size=n)
    half = size // 2
    for i in range(n):
        rows = slice(0, half) if y[i] == 0 else slice(half, size)
        x[i, rows] += 100
    return x, y.astype("int64")


def dense_model(kind: str):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    reg = keras.regularizers.L2(0.1) if kind == "l2" else None
    layers = [keras.Input((20,)), keras.layers.Dense(64, activation="relu", kernel_regularizer=reg)]
    if kind == "dropout":
        layers.append(keras.layers.Dropout(0.7))
    layers.append(keras.layers.Dense(64, activation="relu", kernel_regularizer=reg))
    if kind == "dropout":
        layers.append(keras.layers.Dropout(0.7))
    layers.append(keras.layers.Dense(2, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def image_model(augment: bool, size: int = 16):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    layers = [keras.Input((size, size, 3))]
    if augment:
        layers += [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.25),
                   keras.layers.RandomZoom(0.3)]
    layers += [keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(8, 3, activation="relu"),
               keras.layers.MaxPooling2D(), keras.layers.Flatten(),
               keras.layers.Dense(2, activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


# ------------------------------------------------------------------------------ pure parts


def test_shift_half_epoch_moves_the_epoch_mean_to_the_epoch_end():
    assert shift_half_epoch([4.0, 2.0, 1.0]).tolist() == [3.0, 1.5, 0.5]
    assert shift_half_epoch([0.7]).tolist() == [0.7]


def test_history_only_epoch_averaging_is_found_and_quantified():
    # A smooth curve sampled at mid epoch (training) and at epoch end (validation): the whole
    # gap is the half-epoch offset.
    t = np.arange(8, dtype=float)
    curve = lambda s: 2.0 - 0.2 * s  # noqa: E731 - linear, so the shift is exact
    hist = {"loss": curve(t + 0.5).tolist(), "val_loss": curve(t + 1.0).tolist()}
    e = explain(hist)
    assert e.val_beats_train and e.val_better_epochs == 8
    assert e.top.id == "epoch_averaging"
    assert e.top.share == pytest.approx(1.0, abs=1e-6)
    # Without a model or a report the other reasons are "not checked", never "found".
    assert {r.id: r.status for r in e.reasons}["regularization"] == "possible"
    assert {r.id: r.status for r in e.reasons}["split"] == "possible"


def test_history_only_persistent_offset_is_not_blamed_on_averaging():
    t = np.arange(8, dtype=float)
    hist = {"loss": (1.0 + 0.01 * np.cos(t)).tolist(), "val_loss": (0.6 + 0.01 * np.cos(t)).tolist()}
    e = explain(hist)
    assert e.reason("epoch_averaging").share < 0.1
    over = e.reason("over_regularization")
    assert over.status == "found"  # val stays better after the shift, loss stays high


def test_no_gap_says_nothing_to_explain():
    e = explain({"loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.6]})
    assert not e.val_beats_train
    assert "nothing to explain" in e.to_text()


def test_accuracy_only_history_is_explained_with_the_right_sign():
    e = explain({"accuracy": [0.5, 0.6, 0.7, 0.8], "val_accuracy": [0.6, 0.7, 0.8, 0.9]})
    assert e.metric == "accuracy" and e.higher_is_better and e.gap == pytest.approx(0.1)


@pytest.mark.parametrize("content, fragment", [
    ("", "empty"),
    ("{not json", "not valid JSON"),
    ("[1, 2, 3]", "JSON object"),
    ('{"loss": [1, 2], "val_loss": [1]}', "different numbers of epochs"),
    ('{"loss": [1, 2]}', "validation counterpart"),
    ('{"loss": ["a"], "val_loss": [1]}', "not numbers"),
    ("\x89PNG\r\n\x1a\n\x00\x00", "not a text file"),
    ("just some words\n", "neither JSON nor a CSVLogger CSV"),
    ("epoch,loss,val_loss\n0,0.5,oops\n", "not a number"),
])
def test_bad_history_files_raise_one_clear_error(tmp_path, content, fragment):
    path = tmp_path / "history.json"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(InvalidInputError, match=fragment):
        explain(path)


def test_missing_history_file(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot read history file"):
        load_history(tmp_path / "nope.json")


def test_parameters_are_validated():
    with pytest.raises(InvalidInputError, match="'max_samples' parameter of explain"):
        explain({"loss": [1.0], "val_loss": [0.5]}, max_samples=0)
    with pytest.raises(InvalidInputError, match="'history' parameter of explain"):
        explain(42)


def test_report_with_leaked_validation_is_the_top_reason_without_a_model():
    hist = {"loss": [1.0, 0.8, 0.7, 0.65], "val_loss": [0.7, 0.6, 0.55, 0.5]}
    report = {"split_pairs": [{"query_split": "val", "reference_split": "train", "query_samples": 100,
                               "exact": 30, "near": 10, "similar": 0, "leaked_samples": 40}],
              "checks": {}}
    e = explain(hist, report=report)
    assert e.top.id == "split" and "leak" in e.top.kinds
    clean = dict(report, split_pairs=[dict(report["split_pairs"][0], exact=0, near=0, leaked_samples=0)])
    assert explain(hist, report=clean).reason("split").status == "ruled_out"


# ------------------------------------------------------------------------------ real training


@pytest.fixture(scope="module")
def dropout_run():
    x, y = tabular(800, 0)
    xv, yv = tabular(400, 1)
    model = dense_model("dropout")
    hist = model.fit(x, y, validation_data=(xv, yv), epochs=5, batch_size=32, verbose=0)
    return model, hist, (x, y), (xv, yv)


def test_heavy_dropout_is_the_top_reason_measured(dropout_run):
    model, hist, train, val = dropout_run
    assert hist.history["val_loss"][-1] < hist.history["loss"][-1]  # the planted symptom
    e = explain(hist, model, data=train, validation_data=val)
    assert e.top.id == "regularization" and "dropout" in e.top.kinds
    assert e.top.measured and e.top.share > 0.5
    m = e.measurements
    assert m["train_mode"] > m["no_dropout"] == pytest.approx(m["inference"])
    # The model is the last epoch's: its val loss is the logged one.
    assert m["val_inference"] == pytest.approx(hist.history["val_loss"][-1], rel=1e-3)
    # Measuring leaves the model as it was.
    assert model.evaluate(*val, verbose=0)[0] == pytest.approx(hist.history["val_loss"][-1], rel=1e-4)


def test_heavy_dropout_from_the_structure_alone(dropout_run):
    model, hist, _, _ = dropout_run
    e = explain(hist.history, model)
    assert e.top.id == "regularization" and not e.top.measured
    assert any("Dropout(rate=0.7)" in line for line in e.top.evidence)


def test_l2_penalty_is_the_top_reason():
    x, y = tabular(800, 0)
    xv, yv = tabular(400, 1)
    model = dense_model("l2")
    hist = model.fit(x, y, validation_data=(xv, yv), epochs=5, batch_size=32, verbose=0)
    assert hist.history["val_loss"][-1] < hist.history["loss"][-1]
    for e in (explain(hist, model), explain(hist, model, data=(x, y), validation_data=(xv, yv))):
        assert e.top.id == "regularization" and e.top.kinds == ["L2"]
        assert e.reason("augmentation").status == "ruled_out"


def test_augmentation_layers_are_the_top_reason():
    x, y = images(600, 0)
    xv, yv = images(300, 1)
    model = image_model(augment=True)
    hist = model.fit(x, y, validation_data=(xv, yv), epochs=4, batch_size=32, verbose=0)
    e = explain(hist, model, data=(x, y), validation_data=(xv, yv))
    assert e.val_beats_train
    assert e.top.id == "augmentation" and e.top.measured
    assert {"RandomFlip", "RandomRotation", "RandomZoom"} <= set(e.top.kinds)
    assert e.measurements["train_mode"] > e.measurements["no_augmentation"]


@pytest.fixture(scope="module")
def leaked_run(tmp_path_factory):
    """A model validated on copies of its own training samples, saved with its history and a
    hash-only audit report of the same split."""
    import splitaudit
    from splitaudit.config import AuditConfig

    x, y = images(400, 2)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(x), 100, replace=False)
    xv, yv = x[pick].copy(), y[pick].copy()  # val = copies of train samples
    model = image_model(augment=False)
    keras = pytest.importorskip("keras")
    folder = tmp_path_factory.mktemp("leaked_run")
    csv_path = folder / "log.csv"
    hist = model.fit(x, y, validation_data=(xv, yv), epochs=5, batch_size=32, verbose=0,
                     callbacks=[keras.callbacks.CSVLogger(str(csv_path))])
    report = splitaudit.audit((x, y), (xv, yv), config=AuditConfig(embeddings=False))
    json_path = folder / "history.json"
    json_path.write_text(json.dumps(hist.history))
    report_path = folder / "report.json"
    report_path.write_text(json.dumps(report.to_dict()))
    model_path = folder / "model.keras"
    model.save(model_path)
    return hist, model, report, json_path, csv_path, report_path, model_path


def test_leaked_split_is_the_top_reason(leaked_run):
    hist, model, report, *_ = leaked_run
    assert report.verdict.status == "leaked"
    assert hist.history["val_loss"][-1] < hist.history["loss"][-1]
    for rep in (report, report.to_dict()):
        e = explain(hist, model, rep)
        assert e.top.id == "split" and "leak" in e.top.kinds
        assert any("100 of 100 val samples" in line for line in e.top.evidence)


def test_history_from_json_and_from_csvlogger_agree(leaked_run):
    hist, _, _, json_path, csv_path, _, _ = leaked_run
    from_json, from_csv = load_history(json_path), load_history(csv_path)
    assert set(from_csv) == set(hist.history)  # 'epoch' dropped
    for k, v in hist.history.items():
        assert from_json[k] == pytest.approx(v) and from_csv[k] == pytest.approx(v, rel=1e-5)
    a, b = explain(json_path), explain(csv_path)
    assert a.gap == pytest.approx(b.gap, rel=1e-5)
    assert [r.id for r in a.reasons] == [r.id for r in b.reasons]


def test_cli_explain_prints_a_ranked_list_and_writes_a_png(leaked_run, tmp_path, capsys):
    from PIL import Image

    from splitaudit.cli import main

    _, _, _, json_path, _, report_path, model_path = leaked_run
    png = tmp_path / "curves.png"
    code = main(["explain", str(json_path), "--model", str(model_path), "--report", str(report_path),
                 "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    first = next(line for line in lines if line.strip().startswith("1."))
    assert "Leaked, shifted or easier validation split" in first
    with Image.open(png) as im:
        im.verify()
        assert im.format == "PNG"
    with Image.open(png) as im:
        assert im.size[0] > 400 and im.size[1] > 200


def test_cli_explain_json(leaked_run, capsys):
    from splitaudit.cli import main

    _, _, _, json_path, _, _, _ = leaked_run
    assert main(["explain", str(json_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metric"] == "loss" and data["reasons"][0]["status"] == "found"


def test_cli_bad_history_is_one_line_exit_2(tmp_path, capsys):
    from splitaudit.cli import main

    bad = tmp_path / "history.json"
    bad.write_text("{broken")
    assert main(["explain", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "not valid JSON" in captured.err
    assert main(["explain", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read history file" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_with_data_directory_audits_and_measures(leaked_run, tmp_path, capsys):
    """--model with --data: the directory is audited (hash-only) and the model measured on it."""
    from PIL import Image

    from splitaudit.cli import main

    x, y = images(400, 2)
    pick = np.random.default_rng(0).choice(len(x), 100, replace=False)
    root = tmp_path / "data"
    for split, idx in (("train", range(len(x))), ("val", pick)):
        for i in idx:
            folder = root / split / f"class_{y[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(folder / f"{i:04d}.png")
    _, _, _, json_path, _, _, model_path = leaked_run
    code = main(["explain", str(json_path), "--model", str(model_path), "--data", str(root),
                 "--format", "json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reasons"][0]["id"] == "split"
    assert data["measurements"]["samples"] == 400
    # The directory holds exactly the model's validation data: same loss as logged.
    assert data["measurements"]["val_inference"] == pytest.approx(data["val"][-1], rel=1e-3)


def test_cli_bad_model_and_missing_matplotlib_are_usage_errors(tmp_path, capsys, monkeypatch):
    from splitaudit.cli import main

    hist = tmp_path / "history.json"
    hist.write_text(json.dumps({"loss": [1.0, 0.8, 0.7], "val_loss": [0.8, 0.7, 0.6]}))
    assert main(["explain", str(hist), "--model", str(tmp_path / "nope.keras")]) == 2
    assert "model file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip")
    assert main(["explain", str(hist), "--model", str(garbage)]) == 2
    assert "cannot load model" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    assert main(["explain", str(hist), "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'splitaudit[plot]'" in err and err.count("\n") == 1
    assert not (tmp_path / "p.png").exists()


def test_the_public_name_stays_the_function_after_the_module_is_imported():
    # A submodule named like the function would replace it on the package once imported.
    import splitaudit
    import splitaudit.diagnosis  # noqa: F401

    assert callable(splitaudit.explain) and splitaudit.explain.__name__ == "explain"
