"""volnet.data: readers, named datasets, downloads (file:// only), preprocessing, batches, augmentation."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from volnet.data import (
    Augment,
    Dataset,
    Normalizer,
    batches,
    download,
    epoch_permutation,
    load_dataset,
    num_batches,
    random_crop,
    random_flip,
    read_cifar_binary,
    read_idx,
    read_image_folder,
    split_validation,
    write_idx,
)
from volnet.data import named as named_mod
from volnet.data.named import FASHION_MNIST_CLASSES, REMOTES, Remote
from volnet.errors import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache; never find system datasets unless a test asks."""
    monkeypatch.setenv("VOLNET_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------ IDX

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    a = (np.random.default_rng(0).standard_normal((5, 4, 3)) * 50).astype(dtype)
    p = tmp_path / f"a.idx{suffix}"
    write_idx(p, a)
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype).newbyteorder("=") and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    if suffix:
        assert p.read_bytes()[:2] == b"\x1f\x8b"


def test_idx_header_layout(tmp_path):
    p = tmp_path / "l.idx"
    write_idx(p, np.array([3, 1, 4], dtype=np.uint8))
    assert p.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])


def test_idx_corrupt_files(tmp_path):
    good = tmp_path / "good.idx"
    write_idx(good, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    data = good.read_bytes()
    cases = {
        "truncated": (data[:-5], "truncated"),
        "trailing": (data + b"xx", "trailing"),
        "magic": (b"\x01\x02" + data[2:], "magic"),
        "type": (data[:2] + b"\x07" + data[3:], "magic"),
        "header": (data[:6], "header"),
        "tiny": (b"\x00", "not an IDX"),
    }
    for name, (content, word) in cases.items():
        p = tmp_path / f"{name}.idx"
        p.write_bytes(content)
        with pytest.raises(DataError, match=word) as e:
            read_idx(p)
        msg = str(e.value)
        assert str(p) in msg and "\n" not in msg and "download" in msg
    gz = tmp_path / "bad.idx.gz"
    gz.write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(DataError, match="gzip"):
        read_idx(gz)
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "missing.idx")


def _write_mnist_like(d: Path, n_train=20, n_test=8, suffix=".gz", seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(d / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(d / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n, dtype=np.uint8))


def test_idx_dataset_from_data_dir(tmp_path):
    _write_mnist_like(tmp_path / "m", suffix="")
    train, test = load_dataset("mnist", tmp_path / "m", download=False)
    raw = read_idx(tmp_path / "m" / "train-images-idx3-ubyte")
    assert train.x.shape == (20, 1, 28, 28) and test.x.shape == (8, 1, 28, 28)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    np.testing.assert_allclose(train.x[:, 0] * 255, raw, atol=1e-4)
    assert train.augment == Augment(pad=2, flip=False)


# ------------------------------------------------------------------------------------------ CIFAR

def _cifar_records(n, label_bytes, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, (n, label_bytes), dtype=np.uint8)
    pix = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels, pix], axis=1).tobytes(), labels, pix


def test_cifar10_binary_reader(tmp_path):
    raw, labels, pix = _cifar_records(7, 1)
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(raw)
    x, lab = read_cifar_binary(p)
    assert x.shape == (7, 3, 32, 32) and lab.shape == (7, 1)
    np.testing.assert_array_equal(lab[:, 0], labels[:, 0])
    # record layout: 1024 red, then green, then blue, each row-major 32x32
    np.testing.assert_array_equal(x[3, 1, 2, 5], pix[3, 1024 + 2 * 32 + 5])
    np.testing.assert_array_equal(x[6, 2, 31, 31], pix[6, 3071])
    p.write_bytes(raw[:-1])
    with pytest.raises(DataError, match="CIFAR records"):
        read_cifar_binary(p)


def test_cifar100_binary_reader(tmp_path):
    raw, labels, _ = _cifar_records(5, 2)
    p = tmp_path / "train.bin"
    p.write_bytes(raw)
    x, lab = read_cifar_binary(p, label_bytes=2)
    assert x.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(lab, labels)  # coarse, fine


def test_cifar10_named_from_dir(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    for i in range(1, 6):
        (d / f"data_batch_{i}.bin").write_bytes(_cifar_records(3, 1, seed=i)[0])
    (d / "test_batch.bin").write_bytes(_cifar_records(4, 1, seed=9)[0])
    train, test = load_dataset("cifar10", tmp_path, download=False)
    assert train.x.shape == (15, 3, 32, 32) and test.x.shape == (4, 3, 32, 32)
    assert train.classes[0] == "airplane" and train.augment == Augment(pad=4, flip=True)
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0


def test_cifar10_download_from_tar(tmp_path, monkeypatch):
    """The cifar10 download path: file:// archive, md5 check, safe member extraction, archive removed."""
    src = tmp_path / "mirror"
    src.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        files = {f"data_batch_{i}.bin": _cifar_records(2, 1, seed=i)[0] for i in range(1, 6)}
        files["test_batch.bin"] = _cifar_records(3, 1, seed=7)[0]
        files["batches.meta.txt"] = b"a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"
        for name, content in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    (src / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    md5 = hashlib.md5(buf.getvalue()).hexdigest()
    remote = Remote((src.as_uri() + "/",), {"cifar-10-binary.tar.gz": f"md5:{md5}"})
    monkeypatch.setitem(REMOTES, "cifar10", remote)
    train, test = load_dataset("cifar10")
    assert len(train) == 10 and len(test) == 3 and train.classes == list("abcdefghij")
    cache = tmp_path / "cache"
    assert (cache / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    assert not (cache / "cifar-10-binary.tar.gz").exists()


# ------------------------------------------------------------------------------------------ image folder

def _write_pngs(root: Path, classes=("cat", "dog"), n=3, size=(10, 12), seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    arrays = {}
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, size + (3,), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.png")
            arrays[(c, i)] = a
    return arrays


def test_image_folder(tmp_path):
    pytest.importorskip("PIL")
    arrays = _write_pngs(tmp_path / "imgs")
    x, y, classes = read_image_folder(tmp_path / "imgs")
    assert classes == ["cat", "dog"] and x.shape == (6, 3, 10, 12) and x.dtype == np.float32
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(x[4] * 255, arrays[("dog", 1)].transpose(2, 0, 1), atol=1e-3)
    xg, _, _ = read_image_folder(tmp_path / "imgs", size=(8, 8), mode="L")
    assert xg.shape == (6, 1, 8, 8)
    train, test = load_dataset(f"folder:{tmp_path / 'imgs'}", size=6)
    assert train.x.shape == (6, 3, 6, 6) and test is None and train.augment.flip


def test_image_folder_train_test_and_errors(tmp_path):
    pytest.importorskip("PIL")
    _write_pngs(tmp_path / "set" / "train")
    _write_pngs(tmp_path / "set" / "val", n=1, seed=1)
    train, test = load_dataset(f"folder:{tmp_path / 'set'}")
    assert len(train) == 6 and len(test) == 2 and test.classes == train.classes
    from PIL import Image
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "set" / "train" / "cat" / "odd.png")
    with pytest.raises(DataError, match="size"):
        read_image_folder(tmp_path / "set" / "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        read_image_folder(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ named sets

@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_real():
    t0 = time.perf_counter()
    train, test = load_dataset("fashion-mnist")
    elapsed = time.perf_counter() - t0
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert train.y.min() == 0 and train.y.max() == 9 and np.bincount(train.y).tolist() == [6000] * 10
    assert 0.0 == train.x.min() and train.x.max() == 1.0
    assert train.classes == FASHION_MNIST_CLASSES and train.augment == Augment(pad=2, flip=True)
    assert elapsed < 4.0, f"loading Fashion-MNIST took {elapsed:.2f} s"


def test_digits():
    pytest.importorskip("sklearn")
    train, test = load_dataset("digits")
    assert train.shape == (1, 8, 8) and len(train) + len(test) == 1797
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0 and train.num_classes == 10
    assert train.augment.flip is False


def test_synthetic_seeded_and_separable():
    a, at = load_dataset("synthetic", seed=3, n_train=200, num_classes=3, shape=(2, 6, 6))
    b, _ = load_dataset("synthetic", seed=3, n_train=200, num_classes=3, shape=(2, 6, 6))
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.shape == (200, 2, 6, 6) and a.x.dtype == np.float32
    # nearest class mean classifies the test set perfectly
    means = np.stack([a.x[a.y == k].mean(0) for k in range(3)])
    d = ((at.x[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    assert (d.argmin(1) == at.y).all()


def test_missing_dataset_message(tmp_path, monkeypatch):
    monkeypatch.setitem(named_mod.SYSTEM_DIRS, "fashion-mnist", tmp_path / "nowhere")
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", download=False)
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert str(tmp_path / "nowhere") in msg
    with pytest.raises(DataError, match="cifar10.*--data-dir"):
        load_dataset("cifar10", tmp_path / "none", download=False)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="no option"):
        load_dataset("synthetic", colour=True)


# ------------------------------------------------------------------------------------------ downloads

def test_download_file_url_checksum_ok(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"volnet" * 1000)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "f.bin"
    assert download(src.as_uri(), dest, f"sha256:{sha}") == dest
    assert dest.read_bytes() == src.read_bytes()
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    src.unlink()  # a verified existing file is kept without any transfer
    assert download(src.as_uri(), dest, md5) == dest
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]  # no temp files left


def test_download_checksum_mismatch(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    dest = tmp_path / "dl" / "f.bin"
    with pytest.raises(DataError, match="checksum mismatch") as e:
        download(src.as_uri(), dest, "sha256:" + "0" * 64)
    assert src.as_uri() in str(e.value) and "\n" not in str(e.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # atomic: nothing half-written
    with pytest.raises(DataError, match="cannot download"):
        download((tmp_path / "absent").as_uri(), dest, "md5:" + "0" * 32)
    with pytest.raises(DataError, match="bad checksum"):
        download(src.as_uri(), dest, "crc:1234")


def test_mnist_download_via_file_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    _write_mnist_like(mirror, n_train=12, n_test=4)
    files = {p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in mirror.iterdir()}
    monkeypatch.setitem(REMOTES, "mnist", Remote(((tmp_path / "bad").as_uri() + "/", mirror.as_uri() + "/"),
                                                 files))
    train, test = load_dataset("mnist")
    assert len(train) == 12 and len(test) == 4
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(files)
    # a corrupted mirror is rejected
    corrupt = dict(files, **{"t10k-labels-idx1-ubyte.gz": "sha256:" + "1" * 64})
    monkeypatch.setitem(REMOTES, "mnist", Remote((mirror.as_uri() + "/",), corrupt))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("mnist", tmp_path / "other")


# ------------------------------------------------------------------------------------------ preprocessing

def test_normalizer_stats_and_json():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 3, 4, 5)) * [[[[2.0]], [[0.5]], [[1.0]]]] + [[[[1.0]], [[-2.0]], [[0.0]]]])
    x = x.astype(np.float32)
    norm = Normalizer().fit(x, chunk=7)
    np.testing.assert_allclose(norm.mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(norm.std, x.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-10)
    z = norm.transform(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-5)
    norm2 = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(norm2.transform(x), z)
    np.testing.assert_allclose(norm.inverse_transform(z), x, atol=1e-5)
    with pytest.raises(DataError, match="not fitted"):
        Normalizer().transform(x)
    with pytest.raises(DataError, match="channel"):
        norm.transform(x[:, :1])


def _toy(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(rng.random((n, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, n), ["a", "b", "c"], "toy")


def test_split_validation():
    ds = _toy()
    ds.x[:, 0, 0, 0] = np.arange(100)  # tag each sample
    tr, val = split_validation(ds, 0.2, seed=1)
    assert len(tr) == 80 and len(val) == 20 and val.name == "toy-val"
    ids_tr, ids_val = tr.x[:, 0, 0, 0].astype(int), val.x[:, 0, 0, 0].astype(int)
    assert not set(ids_tr) & set(ids_val) and sorted(set(ids_tr) | set(ids_val)) == list(range(100))
    np.testing.assert_array_equal(tr.y, ds.y[ids_tr])
    tr2, val2 = split_validation(ds, 0.2, seed=1)
    np.testing.assert_array_equal(val.x, val2.x)
    _, val3 = split_validation(ds, 0.2, seed=2)
    assert not np.array_equal(val.x, val3.x)
    assert len(split_validation(ds, 7)[1]) == 7
    with pytest.raises(DataError):
        split_validation(ds, 1.5)
    with pytest.raises(DataError):
        split_validation(ds, 100)


def test_batches_cover_epoch_and_resume():
    ds = _toy(103)
    all_b = list(batches(ds.x, ds.y, 10, seed=4, epoch=2))
    assert len(all_b) == num_batches(103, 10) == 11 and len(all_b[-1][0]) == 3
    order = epoch_permutation(103, 4, 2)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in all_b]), ds.y[order])
    assert sorted(order.tolist()) == list(range(103))
    resumed = list(batches(ds.x, ds.y, 10, seed=4, epoch=2, start=6))
    assert len(resumed) == 5
    for (xa, ya), (xb, yb) in zip(all_b[6:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other = list(batches(ds.x, ds.y, 10, seed=4, epoch=3))
    assert not np.array_equal(other[0][1], all_b[0][1])
    plain = list(batches(ds.x, ds.y, 10, shuffle=False, drop_last=True))
    assert len(plain) == 10
    np.testing.assert_array_equal(plain[1][0], ds.x[10:20])
    with pytest.raises(DataError):
        list(batches(ds.x, ds.y, 10, start=12))


def test_batches_resume_with_augmentation_bit_identical():
    ds = _toy(64)
    aug = Augment(pad=1, flip=True)
    full = list(batches(ds.x, ds.y, 16, seed=7, epoch=1, augment=aug))
    tail = list(batches(ds.x, ds.y, 16, seed=7, epoch=1, augment=aug, start=2))
    for (xa, _), (xb, _) in zip(full[2:], tail):
        np.testing.assert_array_equal(xa, xb)
    order = epoch_permutation(64, 7, 1)
    assert not np.array_equal(full[0][0], ds.x[order[:16]])  # augmentation did something


# ------------------------------------------------------------------------------------------ augmentation

def test_random_flip_exact():
    x = np.random.default_rng(0).random((40, 2, 5, 6), dtype=np.float32)
    out = random_flip(x, np.random.default_rng(11))
    mask = np.random.default_rng(11).random(40) < 0.5
    assert 0 < mask.sum() < 40 and out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_array_equal(out[mask], x[mask][..., ::-1])
    np.testing.assert_array_equal(out[~mask], x[~mask])


def test_random_crop_exact():
    x = np.random.default_rng(1).random((30, 3, 7, 9), dtype=np.float32) + 1  # no zeros inside
    pad = 2
    out = random_crop(x, pad, np.random.default_rng(5))
    off = np.random.default_rng(5).integers(0, 2 * pad + 1, size=(2, 30))
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    for i in range(30):
        oy, ox = off[:, i]
        np.testing.assert_array_equal(out[i], xp[i, :, oy:oy + 7, ox:ox + 9])
    # shifted images carry zero borders; unshifted ones are untouched
    shifted = (off != pad).any(axis=0)
    assert shifted.any()
    assert all((out[i] == 0).any() for i in np.flatnonzero(shifted))
    np.testing.assert_array_equal(out[~shifted], x[~shifted])


def test_augment_reproducible_and_shapes():
    x = np.random.default_rng(2).random((16, 1, 28, 28), dtype=np.float32)
    aug = Augment(pad=2, flip=True)
    a = aug(x, np.random.default_rng(3))
    b = aug(x, np.random.default_rng(3))
    c = aug(x, np.random.default_rng(4))
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert Augment()(x, np.random.default_rng(0)) is x
    assert Augment(**aug.config()) == aug and dataclasses.replace(aug, flip=False).flip is False
    with pytest.raises(DataError):
        Augment(pad=-1)


def test_dataset_validation():
    with pytest.raises(DataError, match="N, C, H, W"):
        Dataset(np.zeros((3, 4, 4), np.float32), np.zeros(3), ["a"])
    with pytest.raises(DataError, match="labels"):
        Dataset(np.zeros((3, 1, 4, 4), np.float32), np.array([0, 1, 5]), ["a", "b"])
    ds = _toy(10)
    assert len(ds.subset(np.arange(4))) == 4 and "toy" in repr(ds)
