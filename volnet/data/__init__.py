"""volnet.data: datasets for training ConvNets, in NumPy.

- readers (``readers.py``): IDX (MNIST / Fashion-MNIST), CIFAR-10/100 binary version, image folders;
- ``Dataset`` (``dataset.py``): ``x`` float32 (N, C, H, W) in [0, 1], ``y`` int64, ``classes``, ``name``;
- named datasets and downloads (``named.py``, ``download.py``): ``load_dataset(name, data_dir=None)``;
- preprocessing (``preprocess.py``): ``Normalizer``, ``split_validation``, resumable ``batches``;
- augmentation (``augment.py``): ``Augment(pad, flip, erase)``, ``random_crop``, ``random_flip``,
  ``random_erase``.

Typical use::

    train, test = load_dataset("fashion-mnist")
    train, val = split_validation(train, 0.1, seed=0)
    norm = Normalizer().fit(train.x)
    xtr, xval = norm.transform(train.x), norm.transform(val.x)
    for xb, yb in batches(xtr, train.y, 128, seed=0, epoch=e, start=k, augment=train.augment):
        ...
"""

from volnet.data.augment import (
    DEFAULT_AUGMENT,
    Augment,
    default_augment,
    random_crop,
    random_erase,
    random_flip,
)
from volnet.data.dataset import Dataset
from volnet.data.download import cache_dir, download, file_digest, verify_checksum
from volnet.data.named import (
    CIFAR10_CLASSES,
    DATASET_NAMES,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    load_dataset,
    make_synthetic,
)
from volnet.data.preprocess import (
    Normalizer,
    batch_rng,
    batches,
    epoch_permutation,
    num_batches,
    split_validation,
)
from volnet.data.readers import (
    read_cifar_binary,
    read_cifar_files,
    read_idx,
    read_idx_pair,
    read_image,
    read_image_folder,
    write_idx,
)

__all__ = [
    "CIFAR10_CLASSES", "DATASET_NAMES", "DEFAULT_AUGMENT", "FASHION_MNIST_CLASSES", "MNIST_CLASSES",
    "Augment", "Dataset", "Normalizer", "batch_rng", "batches", "cache_dir", "default_augment", "download",
    "epoch_permutation", "file_digest", "load_dataset", "make_synthetic", "num_batches", "random_crop",
    "random_erase", "random_flip", "read_cifar_binary", "read_cifar_files", "read_idx", "read_idx_pair",
    "read_image", "read_image_folder", "split_validation", "verify_checksum", "write_idx",
]
