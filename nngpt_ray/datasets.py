"""Datasets as uint8 arrays on disk, ready to be memory-mapped by sandboxed candidates.

`digits` (scikit-learn's bundled 8x8 handwritten digits) is the embedded default: no download, a
fixed seeded stratified split, seconds per epoch. MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN come
through torchvision from `data_dir`, downloaded only when the config allows it. Each dataset is
converted once into `cache_dir/<name>/` as NCHW uint8 `.npy` files; validation labels are kept in a
separate folder that the sandbox does not let candidates read.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nngpt_ray.failures import DatasetError

DEFAULT_CACHE = Path("~/.cache/nngpt/arrays")
_FORMAT = 1  # bump when the on-disk layout changes


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    height: int
    width: int
    classes: int
    description: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class PreparedData:
    """A dataset on disk plus what the parent keeps to itself (the validation labels)."""

    info: DatasetInfo
    train_x: str
    train_y: str
    val_x: str
    val_y: np.ndarray
    mean: list[float]
    std: list[float]
    train_size: int

    @property
    def directory(self) -> str:
        return os.path.dirname(self.train_x)


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, val_x, val_y


def _digits(data_dir: Path, download: bool) -> Arrays:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    tx, vx, ty, vy = train_test_split(images, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target)
    return tx, ty, vx, vy


def _torchvision(cls_name: str, split_kw: Callable[[bool], dict]) -> Callable[[Path, bool], Arrays]:
    def load(data_dir: Path, download: bool) -> Arrays:
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        parts = []
        for train in (True, False):
            ds = cls(str(data_dir), download=download, **split_kw(train))
            x = np.asarray(ds.data)
            if x.ndim == 3:  # N,H,W (MNIST family)
                x = x[:, None]
            elif x.shape[-1] == 3:  # N,H,W,C (CIFAR)
                x = x.transpose(0, 3, 1, 2)
            y = np.asarray(ds.targets if hasattr(ds, "targets") else ds.labels)
            parts += [np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64)]
        return parts[0], parts[1], parts[2], parts[3]

    return load


_TRAIN_FLAG = lambda train: {"train": train}  # noqa: E731
REGISTRY: dict[str, tuple[DatasetInfo, Callable[[Path, bool], Arrays]]] = {
    "digits": (DatasetInfo("digits", 1, 8, 8, 10, "scikit-learn 8x8 handwritten digits (embedded)"), _digits),
    "mnist": (DatasetInfo("mnist", 1, 28, 28, 10, "MNIST handwritten digits"), _torchvision("MNIST", _TRAIN_FLAG)),
    "fashion_mnist": (DatasetInfo("fashion_mnist", 1, 28, 28, 10, "Fashion-MNIST clothing"),
                      _torchvision("FashionMNIST", _TRAIN_FLAG)),
    "cifar10": (DatasetInfo("cifar10", 3, 32, 32, 10, "CIFAR-10"), _torchvision("CIFAR10", _TRAIN_FLAG)),
    "cifar100": (DatasetInfo("cifar100", 3, 32, 32, 100, "CIFAR-100"), _torchvision("CIFAR100", _TRAIN_FLAG)),
    "svhn": (DatasetInfo("svhn", 3, 32, 32, 10, "Street View House Numbers"),
             _torchvision("SVHN", lambda train: {"split": "train" if train else "test"})),
}


def dataset_names() -> list[str]:
    return list(REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    try:
        return REGISTRY[name][0]
    except KeyError:
        raise DatasetError(f"unknown dataset '{name}'; available: {', '.join(REGISTRY)}") from None


def prepare(name: str, data_dir: str | Path = "~/.cache/nngpt/data", download: bool = False,
            cache_dir: str | Path = DEFAULT_CACHE, max_train: int | None = None) -> PreparedData:
    """Convert `name` into cached arrays (once) and describe them. Raises DatasetError with a fix."""
    info = dataset_info(name)
    data_dir = Path(data_dir).expanduser()
    target = Path(cache_dir).expanduser() / name
    meta_path = target / "meta.json"
    if not _cache_valid(meta_path):
        arrays = _load_source(info, data_dir, download)
        _write_cache(target, arrays)
    meta = json.loads(meta_path.read_text())
    train_x, train_y = str(target / "train_x.npy"), str(target / "train_y.npy")
    if max_train is not None and max_train < meta["train_size"]:
        train_x, train_y = _subset(target, max_train)
    return PreparedData(
        info=info, train_x=train_x, train_y=train_y, val_x=str(target / "val_x.npy"),
        val_y=np.load(target / "labels" / "val_y.npy"), mean=meta["mean"], std=meta["std"],
        train_size=min(meta["train_size"], max_train or meta["train_size"]),
    )


def _load_source(info: DatasetInfo, data_dir: Path, download: bool) -> Arrays:
    loader = REGISTRY[info.name][1]
    try:
        return loader(data_dir, download)
    except (RuntimeError, OSError, ValueError) as err:
        if download:
            raise DatasetError(f"dataset '{info.name}' could not be downloaded into {data_dir}: "
                               f"{' '.join(str(err).split())}") from None
        raise DatasetError(f"dataset '{info.name}' was not found in {data_dir}; put torchvision's files for it "
                           f"there, point data.data_dir at them, or set data.download: true where the network "
                           f"allows it") from None


def _write_cache(target: Path, arrays: Arrays) -> None:
    tx, ty, vx, vy = arrays
    (target / "labels").mkdir(parents=True, exist_ok=True)
    scaled = tx.reshape(tx.shape[0], tx.shape[1], -1).astype(np.float64) / 255.0
    mean = scaled.mean(axis=(0, 2)).tolist()
    std = [max(s, 1e-3) for s in scaled.std(axis=(0, 2)).tolist()]
    for path, array in ((target / "train_x.npy", tx), (target / "train_y.npy", ty), (target / "val_x.npy", vx),
                        (target / "labels" / "val_y.npy", vy)):
        _atomic_save(path, array)
    meta = {"format": _FORMAT, "train_size": int(len(tx)), "val_size": int(len(vx)), "mean": mean, "std": std}
    tmp = target / f"meta.json.{os.getpid()}"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, target / "meta.json")


def _subset(target: Path, n: int) -> tuple[str, str]:
    """A fixed, seeded subset of the training set (same images every time for the same n)."""
    x_path, y_path = target / f"train_x.{n}.npy", target / f"train_y.{n}.npy"
    if not (x_path.exists() and y_path.exists()):
        x, y = np.load(target / "train_x.npy"), np.load(target / "train_y.npy")
        idx = np.sort(np.random.default_rng(0).permutation(len(x))[:n])
        _atomic_save(x_path, x[idx])
        _atomic_save(y_path, y[idx])
    return str(x_path), str(y_path)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _cache_valid(meta_path: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(meta_path.read_text())
        return meta.get("format") == _FORMAT and all(
            (meta_path.parent / f).exists() for f in ("train_x.npy", "train_y.npy", "val_x.npy", "labels/val_y.npy"))
    return False
