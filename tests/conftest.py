"""Dataset factories shared by the tests: real image files with planted leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitaudit.synth import EXACT_FAMILIES, NEAR_FAMILIES, PlantedLeak, make_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared"
ALL_FAMILIES = EXACT_FAMILIES + NEAR_FAMILIES


@pytest.fixture(scope="session", autouse=True)
def _private_cache_home(tmp_path_factory):
    """The CLI caches fingerprints under $XDG_CACHE_HOME: keep the tests' caches out of ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(scope="session")
def leaky_dataset(tmp_path_factory) -> tuple[Path, list[PlantedLeak]]:
    """train/val/test with one planted copy in val per transform family (read-only for tests)."""
    root = tmp_path_factory.mktemp("leaky")
    planted = make_dataset(root, classes=3, train_per_class=20, val_per_class=6, test_per_class=4,
                           size=128, families=ALL_FAMILIES, seed=7)
    return root, planted


@pytest.fixture(scope="session")
def clean_dataset(tmp_path_factory) -> Path:
    """train/val/test of distinct images, same classes (a random split with no copies)."""
    root = tmp_path_factory.mktemp("clean")
    make_dataset(root, classes=4, train_per_class=40, val_per_class=12, test_per_class=8,
                 size=96, families=(), seed=11)
    return root


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """A MobileNetV2 weights file with random weights (tests never need ImageNet weights)."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False,
                                           weights=None, pooling="avg")
    path = tmp_path_factory.mktemp("weights") / "random_mobilenet_v2.weights.h5"
    model.save_weights(path)
    return path
