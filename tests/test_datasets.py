"""Datasets: the embedded digits split, torchvision sets from a folder, clear errors otherwise."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from nngpt_ray.datasets import dataset_info, prepare
from nngpt_ray.failures import DatasetError


def test_digits_split_is_fixed_and_stratified(tmp_path, digits):
    again = prepare("digits", cache_dir=tmp_path)
    assert digits.train_size == 1437 and len(digits.val_y) == 360
    assert np.array_equal(np.load(again.val_x), np.load(digits.val_x))
    assert np.array_equal(again.val_y, digits.val_y)
    counts = np.bincount(digits.val_y)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    assert np.load(digits.train_x).shape == (1437, 1, 8, 8)


def test_validation_labels_are_kept_apart(digits):
    # the sandbox is given train_x, train_y, val_x; the labels live in a folder it is not given
    assert "labels" not in digits.val_x and "labels" not in digits.train_x


def test_unknown_dataset_names_the_available_ones():
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'; available: digits, mnist"):
        dataset_info("imagenet")


def test_missing_dataset_names_dataset_and_folder(tmp_path):
    with pytest.raises(DatasetError, match=f"dataset 'cifar10' was not found in {tmp_path}"):
        prepare("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def _write_idx(path, array, magic):
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_mnist_from_a_torchvision_folder(tmp_path):
    """Real torchvision MNIST loader over real idx files (a tiny set written here; no network)."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)), 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), 2049)
    data = prepare("mnist", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", max_train=30)
    assert data.info.shape == (1, 28, 28) and data.info.classes == 10
    assert np.load(data.train_x).shape == (30, 1, 28, 28) and len(data.val_y) == 20
