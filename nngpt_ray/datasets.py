"""Datasets as uint8 arrays on disk, split three ways, ready to be loaded by sandboxed candidates.

Every dataset has the same three splits, and each number the system reports says which it is from:

- **train**: what candidates learn from (optionally cut to `max_train` images, a fixed seeded subset);
- **validation**: carved from the *training* split (seeded, stratified). Every accuracy that drives
  selection, prompts, learning and the per-cycle reports is validation accuracy;
- **test**: the official test split (for `digits`, which has none, a fixed seeded stratified 20% held out
  of the bundled set). It is scored once, for the final networks a run reports, and never used to choose.

`digits` (scikit-learn's bundled 8x8 handwritten digits) is the embedded default: no download, seconds
per epoch. MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN come through torchvision from `data_dir`,
downloaded only when the config allows it. Each dataset is converted once per source folder into
`cache_dir/<name>/<source>/val<fraction>/` as NCHW uint8 `.npy` files (`<source>`: `bundled` for digits,
else a digest of the resolved `data_dir`, so another copy of a dataset is never read from this one's cache); the validation and test labels are kept
in a separate `labels/` folder that the sandbox never hands a candidate.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nngpt_ray.failures import DatasetError

if TYPE_CHECKING:
    from nngpt_ray.config import DataConfig

DEFAULT_CACHE = Path("~/.cache/nngpt/arrays")
SPLIT_SEED = 0
_FORMAT = 2  # bump when the on-disk layout changes


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    height: int
    width: int
    classes: int
    description: str
    val_fraction: float  # default share of the training split kept for validation
    test_source: str  # where the test split comes from

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class PreparedData:
    """A dataset on disk. The validation labels travel with it for the parent to score with; the test
    labels stay on disk until the one final test evaluation asks for them."""

    info: DatasetInfo
    train_x: str
    train_y: str
    val_x: str
    val_y: np.ndarray
    test_x: str
    mean: list[float]
    std: list[float]
    train_size: int
    val_fraction: float

    @property
    def directory(self) -> str:
        return os.path.dirname(self.val_x)

    @cached_property
    def test_y(self) -> np.ndarray:
        return np.load(Path(self.directory) / "labels" / "test_y.npy")

    def splits(self) -> dict[str, object]:
        """Which images each reported number comes from (`nngpt eval --json`, the store's meta)."""
        return {"train": self.train_size, "validation": int(len(self.val_y)),
                "test": int(np.load(self.test_x, mmap_mode="r").shape[0]),
                "validation_source": f"{self.val_fraction:g} of the training split, seeded and stratified",
                "test_source": self.info.test_source, "accuracy_split": "validation"}


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, test_x, test_y


def _digits(data_dir: Path, download: bool) -> Arrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    train, test = stratified_split(bunch.target, 0.2, SPLIT_SEED)
    return images[train], bunch.target[train], images[test], bunch.target[test]


def _torchvision(cls_name: str, split_kw: Callable[[bool], dict]) -> Callable[[Path, bool], Arrays]:
    def load(data_dir: Path, download: bool) -> Arrays:
        if not download and not data_dir.is_dir():  # said at once, without importing torchvision (seconds)
            raise FileNotFoundError(data_dir)
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
_OFFICIAL = "the official test split"
REGISTRY: dict[str, tuple[DatasetInfo, Callable[[Path, bool], Arrays]]] = {
    "digits": (DatasetInfo("digits", 1, 8, 8, 10, "scikit-learn 8x8 handwritten digits (embedded)", 0.2,
                           "a fixed seeded stratified 20% of the bundled set (digits has no official split)"),
               _digits),
    "mnist": (DatasetInfo("mnist", 1, 28, 28, 10, "MNIST handwritten digits", 1 / 12, _OFFICIAL),
              _torchvision("MNIST", _TRAIN_FLAG)),
    "fashion_mnist": (DatasetInfo("fashion_mnist", 1, 28, 28, 10, "Fashion-MNIST clothing", 1 / 12, _OFFICIAL),
                      _torchvision("FashionMNIST", _TRAIN_FLAG)),
    "cifar10": (DatasetInfo("cifar10", 3, 32, 32, 10, "CIFAR-10", 0.1, _OFFICIAL), _torchvision("CIFAR10", _TRAIN_FLAG)),
    "cifar100": (DatasetInfo("cifar100", 3, 32, 32, 100, "CIFAR-100", 0.1, _OFFICIAL),
                 _torchvision("CIFAR100", _TRAIN_FLAG)),
    "svhn": (DatasetInfo("svhn", 3, 32, 32, 10, "Street View House Numbers", 0.1, _OFFICIAL),
             _torchvision("SVHN", lambda train: {"split": "train" if train else "test"})),
}


def dataset_names() -> list[str]:
    return list(REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    try:
        return REGISTRY[name][0]
    except KeyError:
        raise DatasetError(f"unknown dataset '{name}'; available: {', '.join(REGISTRY)}") from None


def from_config(data: DataConfig, dataset: str | None = None) -> PreparedData:
    """`prepare` with the settings of a config's `data` section (another dataset name if given)."""
    return prepare(dataset or data.dataset, data.data_dir, data.download, max_train=data.max_train,
                   val_fraction=data.val_fraction)


def prepare(name: str, data_dir: str | Path = "~/.cache/nngpt/data", download: bool = False,
            cache_dir: str | Path = DEFAULT_CACHE, max_train: int | None = None,
            val_fraction: float | None = None) -> PreparedData:
    """Convert `name` into cached arrays (once) and describe them. Raises DatasetError with a fix."""
    info = dataset_info(name)
    fraction = info.val_fraction if val_fraction is None else val_fraction
    data_dir = Path(data_dir).expanduser()
    target = Path(cache_dir).expanduser() / name / _source_key(info, data_dir) / f"val{round(fraction * 10000):04d}"
    meta_path = target / "meta.json"
    if not _cache_valid(meta_path):
        _write_cache(target, *_carve_validation(_load_source(info, data_dir, download), fraction))
    meta = json.loads(meta_path.read_text())
    train_x, train_y = str(target / "train_x.npy"), str(target / "train_y.npy")
    if max_train is not None and max_train < meta["train_size"]:
        train_x, train_y = _subset(target, max_train)
    return PreparedData(
        info=info, train_x=train_x, train_y=train_y, val_x=str(target / "val_x.npy"),
        val_y=np.load(target / "labels" / "val_y.npy"), test_x=str(target / "test_x.npy"), mean=meta["mean"],
        std=meta["std"], train_size=min(meta["train_size"], max_train or meta["train_size"]), val_fraction=fraction,
    )


def _source_key(info: DatasetInfo, data_dir: Path) -> str:
    if REGISTRY[info.name][1] is _digits:  # bundled with scikit-learn: data_dir plays no part
        return "bundled"
    return "dir-" + hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): `fraction` of each class held out, seeded, both sorted. Falls back to a
    plain seeded split when some class is too small to be split (tiny test sets)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    counts = np.bincount(labels) if len(labels) else np.array([])
    stratify = labels if len(counts) and counts[counts > 0].min() >= 2 else None
    try:
        kept, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:  # too few images per class for the requested share
        kept, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=None)
    return np.sort(kept), np.sort(held)


def _carve_validation(arrays: Arrays, fraction: float) -> tuple[np.ndarray, ...]:
    tx, ty, test_x, test_y = arrays
    kept, held = stratified_split(ty, fraction, SPLIT_SEED)
    return tx[kept], ty[kept], tx[held], ty[held], test_x, test_y


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


def _write_cache(target: Path, tx, ty, vx, vy, test_x, test_y) -> None:
    (target / "labels").mkdir(parents=True, exist_ok=True)
    scaled = tx.reshape(tx.shape[0], tx.shape[1], -1).astype(np.float64) / 255.0
    mean = scaled.mean(axis=(0, 2)).tolist()
    std = [max(s, 1e-3) for s in scaled.std(axis=(0, 2)).tolist()]
    for path, array in ((target / "train_x.npy", tx), (target / "train_y.npy", ty), (target / "val_x.npy", vx),
                        (target / "test_x.npy", test_x), (target / "labels" / "val_y.npy", vy),
                        (target / "labels" / "test_y.npy", test_y)):
        _atomic_save(path, array)
    meta = {"format": _FORMAT, "train_size": int(len(tx)), "val_size": int(len(vx)), "test_size": int(len(test_x)),
            "mean": mean, "std": std}
    tmp = target / f"meta.json.{os.getpid()}"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, target / "meta.json")


def _subset(target: Path, n: int) -> tuple[str, str]:
    """A fixed, seeded subset of the training set (same images every time for the same n)."""
    x_path, y_path = target / f"train_x.{n}.npy", target / f"train_y.{n}.npy"
    if not (x_path.exists() and y_path.exists()):
        x, y = np.load(target / "train_x.npy"), np.load(target / "train_y.npy")
        idx = np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(x))[:n])
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
            (meta_path.parent / f).exists()
            for f in ("train_x.npy", "train_y.npy", "val_x.npy", "test_x.npy", "labels/val_y.npy", "labels/test_y.npy"))
    return False
