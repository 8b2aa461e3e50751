"""Named datasets: ``load_dataset(name, data_dir=None) -> (train, test)``.

Names: ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``digits``, ``synthetic``, ``folder:PATH``.
Files are looked for in ``data_dir`` (when given) or the cache (``$VOLNET_CACHE`` or ``~/.cache/volnet``)
and, for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``).
Missing MNIST / Fashion-MNIST / CIFAR files are downloaded (checksums verified) unless ``download=False``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volnet.data.augment import default_augment
from volnet.data.dataset import Dataset
from volnet.data.download import cache_dir, download_first, extract_members
from volnet.data.readers import find_file, read_cifar_files, read_idx_pair, read_image_folder
from volnet.errors import DataError

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
SYSTEM_DIRS: dict[str, Path] = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}

IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass(frozen=True)
class Remote:
    """Where to download a dataset: mirror base URLs and ``file name -> checksum`` (``md5:``/``sha256:``)."""

    mirrors: tuple[str, ...]
    files: dict[str, str]


#: Download sources. Tests replace entries with ``file://`` mirrors; nothing else reads the network.
REMOTES: dict[str, Remote] = {
    "mnist": Remote(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        {"train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion-mnist": Remote(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310"}),
    "cifar10": Remote(("https://www.cs.toronto.edu/~kriz/",),
                      {"cifar-10-binary.tar.gz": "md5:c32a1d4ab5d03f1284b67883e8d87530"}),
    "cifar100": Remote(("https://www.cs.toronto.edu/~kriz/",),
                       {"cifar-100-binary.tar.gz": "md5:03b5dce01913d631647c71ecec9e9cb8"}),
}

# CIFAR binary layout: extracted folder, train files, test files, label bytes, name files.
_CIFAR = {
    "cifar10": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"],
                1, ["batches.meta.txt"]),
    "cifar100": ("cifar-100-binary", ["train.bin"], ["test.bin"], 2,
                 ["coarse_label_names.txt", "fine_label_names.txt"]),
}

DATASET_NAMES = ("fashion-mnist", "mnist", "cifar10", "cifar100", "digits", "synthetic", "folder:PATH")


def _check_options(name: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise DataError(f"dataset {name!r} has no option(s) {bad}; it accepts {list(allowed) or 'none'}")


def _search_dirs(key: str, data_dir: Path | None, subdir: str) -> list[Path]:
    if data_dir is not None:
        return [data_dir, data_dir / subdir]
    dirs = [cache_dir() / subdir]
    if key in SYSTEM_DIRS:
        dirs.append(SYSTEM_DIRS[key])
    return dirs


def _how_to_get(key: str, dirs: list[Path]) -> str:
    where = ", ".join(str(d) for d in dirs)
    hint = {"fashion-mnist": "install it with `apt-get install dataset-fashion-mnist`, ",
            "cifar10": "extract cifar-10-binary.tar.gz (binary version) there, ",
            "cifar100": "extract cifar-100-binary.tar.gz (binary version) there, "}.get(key, "")
    return (f"looked in {where}; {hint}pass --data-dir DIR (Python: data_dir=DIR), "
            "or allow downloading (leave out --no-download; Python: download=True)")


# ------------------------------------------------------------------------------------------ IDX sets

def _load_idx_set(key: str, classes: list[str], data_dir: Path | None,
                  download: bool) -> tuple[Dataset, Dataset]:
    dirs = _search_dirs(key, data_dir, key)
    stems = [s for pair in IDX_STEMS.values() for s in pair]
    found = next((d for d in dirs if all(find_file(d, s) for s in stems)), None)
    if found is None:
        if not download:
            raise DataError(f"{key}: the IDX files {stems[0]}[.gz] etc. were not found; "
                            + _how_to_get(key, dirs))
        found = (data_dir if data_dir is not None else cache_dir()) / key
        remote = REMOTES[key]
        for fname, checksum in remote.files.items():
            download_first([m + fname for m in remote.mirrors], found / fname, checksum)
    aug = default_augment(key)
    out = []
    for split, (img, lab) in IDX_STEMS.items():
        x, y = read_idx_pair(find_file(found, img), find_file(found, lab))  # type: ignore[arg-type]
        out.append(Dataset(x, y, classes, f"{key}/{split}", aug))
    return out[0], out[1]


# ------------------------------------------------------------------------------------------ CIFAR

def _cifar_dir_ok(d: Path, files: list[str]) -> bool:
    return all((d / f).is_file() for f in files)


def _load_cifar(key: str, data_dir: Path | None, download: bool,
                label: str = "fine") -> tuple[Dataset, Dataset]:
    folder, train_files, test_files, label_bytes, name_files = _CIFAR[key]
    dirs = _search_dirs(key, data_dir, folder)
    found = next((d for d in dirs if _cifar_dir_ok(d, train_files + test_files)), None)
    if found is None:
        if not download:
            raise DataError(f"{key}: the binary files {train_files[0]}, {test_files[0]} were not found; "
                            + _how_to_get(key, dirs))
        root = data_dir if data_dir is not None else cache_dir()
        remote = REMOTES[key]
        (archive_name, checksum), = remote.files.items()
        archive = download_first([m + archive_name for m in remote.mirrors], root / archive_name, checksum)
        members = {f"{folder}/{f}": f for f in train_files + test_files + name_files}
        optional = [f"{folder}/{f}" for f in name_files]
        found = extract_members(archive, members, root / folder, optional=optional)
        archive.unlink()
    if key == "cifar10":
        label_index = 0
        names = _read_names(found / "batches.meta.txt") or CIFAR10_CLASSES
    else:
        if label not in ("fine", "coarse"):
            raise DataError(f"cifar100: label must be 'fine' (100 classes) or 'coarse' (20), got {label!r}")
        label_index = 1 if label == "fine" else 0
        n = 100 if label == "fine" else 20
        names = _read_names(found / f"{label}_label_names.txt") or [f"class_{i}" for i in range(n)]
    aug = default_augment(key)
    x, y = read_cifar_files([found / f for f in train_files], label_bytes, label_index)
    train = Dataset(x, y, names, f"{key}/train", aug)
    x, y = read_cifar_files([found / f for f in test_files], label_bytes, label_index)
    return train, Dataset(x, y, names, f"{key}/test", aug)


def _read_names(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    names = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return names or None


# ------------------------------------------------------------------------------------------ small sets

def _load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("dataset 'digits' needs scikit-learn; install it with pip install 'volnet[digits]' "
                        "(or pip install scikit-learn)") from None
    d = load_digits()
    x = (np.asarray(d.images, dtype=np.float32) / np.float32(16.0))[:, None]
    y = np.asarray(d.target, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    aug = default_augment("digits")
    return (Dataset(x[tr], y[tr], MNIST_CLASSES, "digits/train", aug),
            Dataset(x[te], y[te], MNIST_CLASSES, "digits/test", aug))


def make_synthetic(n_train: int = 512, n_test: int = 128, num_classes: int = 4,
                   shape: tuple[int, int, int] = (1, 8, 8), noise: float = 0.1,
                   seed: int = 0) -> tuple[Dataset, Dataset]:
    """Small, seeded, linearly separable data for smoke tests.

    Each class has a random prototype image uniform in [0, 1]; samples are the prototype plus
    Gaussian noise of std ``noise``, clipped to [0, 1]. Train and test share the prototypes.
    """
    if num_classes < 2 or n_train < 1 or n_test < 0 or len(shape) != 3 or min(shape) < 1:
        raise DataError(f"synthetic: need num_classes >= 2, n_train >= 1, n_test >= 0 and shape (C, H, W); "
                        f"got num_classes={num_classes}, n_train={n_train}, n_test={n_test}, shape={shape}")
    rng = np.random.default_rng(seed)
    protos = rng.random((num_classes,) + tuple(shape))
    classes = [f"class_{k}" for k in range(num_classes)]

    def draw(n: int, split: str) -> Dataset:
        y = np.arange(n, dtype=np.int64) % num_classes
        y = y[rng.permutation(n)]
        x = np.clip(protos[y] + noise * rng.standard_normal((n,) + tuple(shape)), 0, 1).astype(np.float32)
        return Dataset(x, y, classes, f"synthetic/{split}", default_augment("synthetic"))

    return draw(n_train, "train"), draw(n_test, "test")


def _load_folder(path: str, size: int | tuple[int, int] | None = None,
                 mode: str = "RGB") -> tuple[Dataset, Dataset | None]:
    root = Path(path).expanduser()
    if (root / "train").is_dir():
        train_dir = root / "train"
        test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    else:
        train_dir, test_dir = root, None
    aug = default_augment("folder")
    x, y, classes = read_image_folder(train_dir, size, mode)
    if size is None:
        size = x.shape[2:]  # the test images must match the training size
    train = Dataset(x, y, classes, f"folder:{root}/train", aug)
    if test_dir is None:
        return train, None
    test_classes = {d.name for d in test_dir.iterdir() if d.is_dir() and not d.name.startswith(".")}
    unknown = sorted(test_classes - set(classes))
    if unknown:
        raise DataError(f"{test_dir}: class folder(s) {unknown} have no training folder in {train_dir}; "
                        "the model cannot learn them (add training images or remove them)")
    x, y, _ = read_image_folder(test_dir, size, mode, classes=classes)
    return train, Dataset(x, y, classes, f"folder:{root}/test", aug)


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool = True,
                 **options: Any) -> tuple[Dataset, Dataset | None]:
    """Load a named dataset as ``(train, test)`` Datasets (x float32 (N, C, H, W) in [0, 1], y int64).

    Args:
        name: ``"fashion-mnist"`` (1x28x28, 60000/10000), ``"mnist"`` (1x28x28), ``"cifar10"`` (3x32x32,
            50000/10000), ``"cifar100"`` (option ``label="fine"|"coarse"``), ``"digits"`` (scikit-learn's
            1x8x8, 1437/360), ``"synthetic"`` (options of ``make_synthetic``), or ``"folder:PATH"`` (image
            folder ``PATH/class/*.png``, or ``PATH/train/class/...`` plus ``PATH/test`` or ``PATH/val``;
            options ``size=(H, W)``, ``mode="RGB"|"L"``).
        data_dir: directory holding the files (or a sub-folder named after the dataset); downloads go
            here too. Default: the cache (``$VOLNET_CACHE`` or ``~/.cache/volnet``), then system folders.
        download: fetch missing MNIST / Fashion-MNIST / CIFAR files (checksums verified).

    Returns:
        ``(train, test)``; ``test`` is None only for an image folder without a train/test split.
        Each Dataset carries the dataset's default ``augment`` (see ``DEFAULT_AUGMENT``).

    Raises:
        DataError: one line saying what was expected where and how to get it.
    """
    key = name.strip().lower()
    ddir = Path(data_dir).expanduser() if data_dir is not None else None
    if key.startswith("folder:"):
        _check_options(name, options, ("size", "mode"))
        path = Path(name.strip()[len("folder:"):]).expanduser()
        return _load_folder(str(ddir / path if ddir is not None else path), **options)
    key = {"fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10",
           "cifar-100": "cifar100"}.get(key, key)
    if key == "fashion-mnist":
        _check_options(name, options, ())
        return _load_idx_set(key, FASHION_MNIST_CLASSES, ddir, download)
    if key == "mnist":
        _check_options(name, options, ())
        return _load_idx_set(key, MNIST_CLASSES, ddir, download)
    if key in ("cifar10", "cifar100"):
        _check_options(name, options, ("label",) if key == "cifar100" else ())
        return _load_cifar(key, ddir, download, **options)
    if key == "digits":
        _check_options(name, options, ("test_fraction", "seed"))
        return _load_digits(**options)
    if key == "synthetic":
        _check_options(name, options, ("n_train", "n_test", "num_classes", "shape", "noise", "seed"))
        return make_synthetic(**options)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
