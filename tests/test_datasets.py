"""Datasets: three honest splits, labels the sandbox never hands out, clear errors otherwise."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from nngpt_ray.config import SandboxConfig
from nngpt_ray.datasets import dataset_info, prepare, stratified_split
from nngpt_ray.failures import DatasetError
from nngpt_ray.harness import Session, evaluate
from nngpt_ray.spec import CandidateSpec, Hyperparameters


def _rows(path) -> set[bytes]:
    return {row.tobytes() for row in np.load(path).reshape(len(np.load(path)), -1)}


def test_digits_splits_are_fixed_disjoint_and_stratified(tmp_path, digits):
    from sklearn.datasets import load_digits

    again = prepare("digits", cache_dir=tmp_path)
    assert (digits.train_size, len(digits.val_y), len(digits.test_y)) == (1149, 288, 360)
    assert digits.train_size + len(digits.val_y) + len(digits.test_y) == len(load_digits().target)
    assert np.array_equal(np.load(again.val_x), np.load(digits.val_x)) and np.array_equal(again.test_y, digits.test_y)
    # disjoint: the bundled set has a few identical images, so compare through the split indices themselves
    labels = load_digits().target
    kept, test = stratified_split(labels, 0.2, 0)
    train, val = stratified_split(labels[kept], 0.2, 0)
    assert not set(kept) & set(test) and not set(train) & set(val)
    assert np.array_equal(digits.test_y, labels[test]) and np.array_equal(digits.val_y, labels[kept][val])
    for split in (digits.val_y, digits.test_y, np.load(digits.train_y)):
        share = np.bincount(split, minlength=10) / len(split)
        assert np.abs(share - np.bincount(labels) / len(labels)).max() < 0.01  # each class in proportion


def test_validation_comes_from_the_training_split_of_a_torchvision_set(tmp_path):
    data_dir = _fake_mnist(tmp_path, train=120, test=40)
    data = prepare("mnist", data_dir=data_dir, cache_dir=tmp_path / "cache")
    official_train = _rows(data_dir / "train_x.npy")
    assert _rows(data.val_x) <= official_train and _rows(data.train_x) <= official_train
    assert _rows(data.test_x) == _rows(data_dir / "test_x.npy")  # the official test split, untouched
    assert not _rows(data.val_x) & _rows(data.train_x)
    assert len(data.val_y) == 10 and data.train_size == 110  # 1/12 of the 120 training images


def test_val_fraction_is_a_setting_with_its_own_cache(tmp_path):
    a = prepare("digits", cache_dir=tmp_path)
    b = prepare("digits", cache_dir=tmp_path, val_fraction=0.5)
    assert (len(b.val_y), b.train_size) == (719, 718) and a.directory != b.directory and len(a.val_y) == 288


def test_each_data_dir_has_its_own_cache(tmp_path):
    """Two copies of a dataset (here: different images under the same name) never share converted arrays."""
    first, second = (_fake_mnist(tmp_path, train=24, test=12, seed=seed, folder=f"copy{seed}") for seed in (1, 2))
    a = prepare("mnist", data_dir=first, cache_dir=tmp_path / "cache")
    b = prepare("mnist", data_dir=second, cache_dir=tmp_path / "cache")
    assert a.directory != b.directory
    assert _rows(a.test_x) == _rows(first / "test_x.npy") and _rows(b.test_x) == _rows(second / "test_x.npy")
    assert prepare("mnist", data_dir=first, cache_dir=tmp_path / "cache").directory == a.directory  # reused


def test_a_candidate_cannot_read_the_labels(digits, tmp_path):
    """The job names no label file, and a candidate that goes looking (static check off) is refused."""
    steal = (f"labels = open({str(digits.directory + '/labels/val_y.npy')!r}, 'rb').read()\n"
             f"raise RuntimeError('read %d bytes' % len(labels))")
    code = NET.replace("        pass  # learn", "        " + steal.replace("\n", "\n        "))
    spec = CandidateSpec(code=code, hyperparameters=Hyperparameters(epochs=1))
    sandbox = SandboxConfig(static_check=False, scratch_root=tmp_path)
    session = Session(spec, digits, sandbox, server=None)  # type: ignore[arg-type]  # the job alone is inspected
    assert "labels" not in repr(session.job) and session.job["data"]["test_x"] is None
    result = evaluate(spec, digits, sandbox)
    assert result.failure is not None and "sandbox: opening" in result.error and "read " not in result.error


def test_the_test_split_is_scored_only_when_asked(digits, tmp_path):
    spec = CandidateSpec(code=NET, hyperparameters=Hyperparameters(lr=0.1, epochs=1))
    plain = evaluate(spec, digits, SandboxConfig(scratch_root=tmp_path))
    final = evaluate(spec, digits, SandboxConfig(scratch_root=tmp_path), test=True)
    assert plain.test_accuracy is None and plain.failure is None
    assert final.test_accuracy is not None and 0.5 < final.test_accuracy <= 1
    assert final.epochs[0].val_accuracy == plain.epochs[0].val_accuracy  # same seed: the same network


def test_unknown_dataset_names_the_available_ones():
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'; available: digits, mnist"):
        dataset_info("imagenet")


def test_missing_dataset_names_dataset_and_folder(tmp_path):
    with pytest.raises(DatasetError, match=f"dataset 'cifar10' was not found in {tmp_path}"):
        prepare("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_mnist_from_a_torchvision_folder(tmp_path):
    """Real torchvision MNIST loader over real idx files (a tiny set written here; no network)."""
    data_dir = _fake_mnist(tmp_path, train=60, test=20)
    data = prepare("mnist", data_dir=data_dir, cache_dir=tmp_path / "cache", max_train=30)
    assert data.info.shape == (1, 28, 28) and data.info.classes == 10
    assert np.load(data.train_x).shape == (30, 1, 28, 28) and len(data.val_y) == 5 and len(data.test_y) == 20


NET = '''
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum'}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))

    def train_setup(self, prm):
        self.criteria = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])

    def learn(self, train_data):
        pass  # learn
        for inputs, labels in train_data:
            self.optimizer.zero_grad()
            self.criteria(self(inputs), labels).backward()
            self.optimizer.step()
'''


def _write_idx(path, array, magic):
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _fake_mnist(tmp_path, train: int, test: int, seed: int = 0, folder: str = "data"):
    """A tiny MNIST in torchvision's layout, every image distinct; the arrays are kept beside it."""
    data_dir = tmp_path / folder
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for prefix, n, name in (("train", train, "train_x"), ("t10k", test, "test_x")):
        images = rng.integers(0, 255, (n, 28, 28))
        labels = np.arange(n) % 10
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        np.save(data_dir / f"{name}.npy", images.astype(np.uint8)[:, None])
    return data_dir
