"""Tests for shared.datasets: every on-disk format is synthesised in tmp_path, so no downloads."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from shared.datasets import (
    Dataset,
    DatasetError,
    iterate_batches,
    list_datasets,
    load_dataset,
    resize_nearest,
)

RNG = np.random.default_rng(1234)

# ----------------------------------------------------------------------------- Fashion-MNIST fixtures

FM_TRAIN_X = RNG.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
FM_TRAIN_Y = np.array([0, 9, 4], dtype=np.uint8)
FM_TEST_X = RNG.integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
FM_TEST_Y = np.array([7, 1], dtype=np.uint8)
FM_TRAIN_X[1, 3, 20] = 255  # a marker pixel to locate exactly
FM_TRAIN_X[1, 20, 3] = 0


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def write_fashion(directory: Path, *, gz: bool = True) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": idx_bytes(FM_TRAIN_X, 0x803),
        "train-labels-idx1-ubyte": idx_bytes(FM_TRAIN_Y, 0x801),
        "t10k-images-idx3-ubyte": idx_bytes(FM_TEST_X, 0x803),
        "t10k-labels-idx1-ubyte": idx_bytes(FM_TEST_Y, 0x801),
    }
    paths = {}
    for base, payload in files.items():
        path = directory / (base + ".gz" if gz else base)
        path.write_bytes(gzip.compress(payload) if gz else payload)
        paths[base] = path
    return paths


# ----------------------------------------------------------------------------- CIFAR fixtures

BATCH_SIZES = (2, 1, 2, 1, 2, 3)  # five train batches, then the test batch
CIFAR_IMAGES = [RNG.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8) for n in BATCH_SIZES]
CIFAR_LABELS = [RNG.integers(0, 10, size=n).tolist() for n in BATCH_SIZES]
# Marker: first train image, channel 2 (blue), row 5, column 7 in CHW order.
CIFAR_IMAGES[0][0, :, 5, 7] = (11, 22, 200)
CIFAR_LABELS[0][0] = 9
BIN_NAMES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
PY_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_bin_payload(k: int) -> bytes:
    imgs, labels = CIFAR_IMAGES[k], CIFAR_LABELS[k]
    return b"".join(bytes([lab]) + img.tobytes() for img, lab in zip(imgs, labels))


def cifar_py_payload(k: int, data=None) -> bytes:
    batch = {
        b"batch_label": b"training batch",
        b"labels": CIFAR_LABELS[k],
        b"data": CIFAR_IMAGES[k].reshape(len(CIFAR_IMAGES[k]), -1) if data is None else data,
        b"filenames": [b"x.png"] * BATCH_SIZES[k],
    }
    return pickle.dumps(batch, protocol=2)  # the real batches are protocol-2 pickles


def write_cifar_dir(root: Path, fmt: str) -> Path:
    folder = root / ("cifar-10-batches-bin" if fmt == "bin" else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    names, payload = (BIN_NAMES, cifar_bin_payload) if fmt == "bin" else (PY_NAMES, cifar_py_payload)
    for k, name in enumerate(names):
        (folder / name).write_bytes(payload(k))
    return folder


def write_cifar_tar(root: Path, fmt: str, *, skip: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    folder = "cifar-10-batches-bin" if fmt == "bin" else "cifar-10-batches-py"
    archive = root / ("cifar-10-binary.tar.gz" if fmt == "bin" else "cifar-10-python.tar.gz")
    names, payload = (BIN_NAMES, cifar_bin_payload) if fmt == "bin" else (PY_NAMES, cifar_py_payload)
    with tarfile.open(archive, "w:gz") as tar:
        for k, name in enumerate(names):
            if name == skip:
                continue
            data = payload(k)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def expected_cifar_nhwc(ks) -> np.ndarray:
    return np.concatenate([CIFAR_IMAGES[k] for k in ks]).transpose(0, 2, 3, 1).astype(np.float32) / 255


def check_cifar(ds: Dataset) -> None:
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.image_shape == (32, 32, 3)
    assert ds.x_train.shape == (sum(BATCH_SIZES[:5]), 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train, expected_cifar_nhwc(range(5)))
    np.testing.assert_array_equal(ds.x_test, expected_cifar_nhwc([5]))
    np.testing.assert_array_equal(ds.y_train, sum(CIFAR_LABELS[:5], []))
    np.testing.assert_array_equal(ds.y_test, CIFAR_LABELS[5])
    # Independent of the transpose above: the CHW marker lands at NHWC [0, 5, 7, :].
    np.testing.assert_array_equal(ds.x_train[0, 5, 7] * 255, [11, 22, 200])
    assert ds.y_train[0] == 9


# ----------------------------------------------------------------------------- Fashion-MNIST tests


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_fashion_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    write_fashion(tmp_path, gz=gz)
    ds = load_dataset("fashion_mnist", str(tmp_path))
    assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train[..., 0] * 255, FM_TRAIN_X)
    np.testing.assert_array_equal(ds.x_test[..., 0] * 255, FM_TEST_X)
    np.testing.assert_array_equal(ds.y_train, FM_TRAIN_Y)
    np.testing.assert_array_equal(ds.y_test, FM_TEST_Y)
    assert ds.x_train[1, 3, 20, 0] == 1.0 and ds.x_train[1, 20, 3, 0] == 0.0  # rows vs cols not swapped


def test_fashion_mnist_resize_to_96(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    ds = load_dataset("fashion_mnist", tmp_path, size=96)
    assert ds.x_train.shape == (3, 96, 96, 1) and ds.x_test.shape == (2, 96, 96, 1)
    # 28 -> 96 is not an integer factor; nearest neighbour maps output i to floor(i * 28 / 96).
    assert ds.x_train[1, (3 * 96 + 27) // 28, 20 * 96 // 28 + 1, 0] == 1.0
    assert set(np.unique(ds.x_train)) <= set(np.unique(FM_TRAIN_X.astype(np.float32) / 255))


def test_fashion_mnist_missing_file_names_it(tmp_path: Path) -> None:
    paths = write_fashion(tmp_path)
    paths["t10k-labels-idx1-ubyte"].unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion_mnist", str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "t10k-labels-idx1-ubyte.gz") in msg
    assert "missing" in msg and "zalandoresearch/fashion-mnist" in msg


def test_fashion_mnist_truncated_idx(tmp_path: Path) -> None:
    paths = write_fashion(tmp_path, gz=False)
    target = paths["train-images-idx3-ubyte"]
    target.write_bytes(target.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="truncated") as err:
        load_dataset("fashion_mnist", str(tmp_path))
    assert str(target) in str(err.value)


def test_fashion_mnist_trailing_bytes_rejected(tmp_path: Path) -> None:
    paths = write_fashion(tmp_path)
    target = paths["train-labels-idx1-ubyte"]
    target.write_bytes(gzip.compress(idx_bytes(FM_TRAIN_Y, 0x801) + b"\x00"))
    with pytest.raises(DatasetError, match="exactly") as err:
        load_dataset("fashion_mnist", str(tmp_path))
    assert str(target) in str(err.value)


def test_fashion_mnist_wrong_magic(tmp_path: Path) -> None:
    paths = write_fashion(tmp_path)
    target = paths["train-labels-idx1-ubyte"]
    # An images file where labels belong: the magic (0x803 vs 0x801) must catch it.
    target.write_bytes(gzip.compress(idx_bytes(FM_TRAIN_X, 0x803)))
    with pytest.raises(DatasetError, match="magic") as err:
        load_dataset("fashion_mnist", str(tmp_path))
    assert str(target) in str(err.value) and "0x00000803" in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_fashion_mnist_corrupt_gzip(tmp_path: Path, damage: str) -> None:
    paths = write_fashion(tmp_path)
    target = paths["t10k-images-idx3-ubyte"]
    good = target.read_bytes()
    bad = good[: len(good) // 2] if damage == "truncated" else good[:10] + b"\xff" * 40
    target.write_bytes(bad)
    with pytest.raises(DatasetError, match="gzip") as err:
        load_dataset("fashion_mnist", str(tmp_path))
    assert str(target) in str(err.value)


def test_fashion_mnist_label_count_mismatch(tmp_path: Path) -> None:
    paths = write_fashion(tmp_path)
    paths["t10k-labels-idx1-ubyte"].write_bytes(gzip.compress(idx_bytes(FM_TEST_Y[:1], 0x801)))
    with pytest.raises(DatasetError, match="1 labels"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_data_dir_required(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data_dir"):
        load_dataset("cifar10")


# ----------------------------------------------------------------------------- CIFAR-10 tests


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_cifar_directory_round_trip(tmp_path: Path, fmt: str) -> None:
    write_cifar_dir(tmp_path, fmt)
    check_cifar(load_dataset("cifar10", str(tmp_path)))


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_cifar_archive_round_trip_without_extracting(tmp_path: Path, fmt: str) -> None:
    write_cifar_tar(tmp_path, fmt)
    check_cifar(load_dataset("cifar10", str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == [f"cifar-10-{'binary' if fmt == 'bin' else 'python'}.tar.gz"]


def test_cifar_data_dir_may_be_the_batches_folder(tmp_path: Path) -> None:
    folder = write_cifar_dir(tmp_path, "py")
    check_cifar(load_dataset("cifar10", str(folder)))


def test_cifar_resize(tmp_path: Path) -> None:
    write_cifar_dir(tmp_path, "bin")
    ds = load_dataset("cifar10", str(tmp_path), size=64)
    assert ds.image_shape == (64, 64, 3)
    np.testing.assert_array_equal(ds.x_train[0, 10:12, 14:16].reshape(-1, 3) * 255, [[11, 22, 200]] * 4)


def test_cifar_missing_batch_names_it(tmp_path: Path) -> None:
    folder = write_cifar_dir(tmp_path, "bin")
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", str(tmp_path))
    assert str(folder / "data_batch_3.bin") in str(err.value) and "cs.toronto.edu" in str(err.value)


def test_cifar_archive_missing_member(tmp_path: Path) -> None:
    write_cifar_tar(tmp_path, "py", skip="test_batch")
    with pytest.raises(DatasetError, match="cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar_corrupt_archive(tmp_path: Path) -> None:
    archive = write_cifar_tar(tmp_path, "bin")
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", str(tmp_path))
    assert str(archive) in str(err.value)


def test_cifar_truncated_binary_batch(tmp_path: Path) -> None:
    folder = write_cifar_dir(tmp_path, "bin")
    target = folder / "test_batch.bin"
    target.write_bytes(target.read_bytes()[:-5])
    with pytest.raises(DatasetError, match="3073") as err:
        load_dataset("cifar10", str(tmp_path))
    assert str(target) in str(err.value)


def test_cifar_nothing_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cifar-10-binary.tar.gz"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((2, 100), np.uint8), "uint8 N x 3072"),
        (np.zeros((2, 3072), np.int32), "uint8 N x 3072"),
        (np.zeros((3, 3072), np.uint8), "3 images"),
    ],
    ids=["width", "dtype", "label-count"],
)
def test_cifar_pickle_shape_validation(tmp_path: Path, data: np.ndarray, match: str) -> None:
    folder = write_cifar_dir(tmp_path, "py")
    (folder / "data_batch_1").write_bytes(cifar_py_payload(0, data=data))
    with pytest.raises(DatasetError, match=match):
        load_dataset("cifar10", str(tmp_path))


class _OpenPayload:
    """Unpickling this with a plain pickle.load creates a file (a harmless stand-in for an exploit)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class _SystemPayload:
    """Unpickling this with a plain pickle.load runs a shell command that creates a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


class _NumpyCallPayload:
    """Even a harmless numpy function is outside the allowlist."""

    def __reduce__(self):
        return (np.ones, (3072,))


@pytest.mark.parametrize("payload_cls", [_OpenPayload, _SystemPayload, _NumpyCallPayload])
def test_cifar_malicious_pickle_refused(tmp_path: Path, payload_cls) -> None:
    folder = write_cifar_dir(tmp_path / "data", "py")
    marker = tmp_path / "pwned"
    payload = payload_cls() if payload_cls is _NumpyCallPayload else payload_cls(str(marker))
    evil = pickle.dumps({b"data": payload, b"labels": CIFAR_LABELS[1]}, protocol=2)
    (folder / "data_batch_2").write_bytes(evil)
    with pytest.raises(DatasetError, match="not allowed") as err:
        load_dataset("cifar10", str(tmp_path / "data"))
    assert str(folder / "data_batch_2") in str(err.value)
    assert not marker.exists()


def test_malicious_payload_is_real(tmp_path: Path) -> None:
    # Guards the test above: with an unrestricted unpickler the payload does create the file.
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps({b"data": _OpenPayload(str(marker))}, protocol=2))[b"data"].close()
    assert marker.exists()


def test_cifar_malicious_pickle_in_archive_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    archive = tmp_path / "cifar-10-python.tar.gz"
    evil = pickle.dumps({b"data": _OpenPayload(str(marker)), b"labels": [0]}, protocol=2)
    with tarfile.open(archive, "w:gz") as tar:
        for k, name in enumerate(PY_NAMES):
            data = evil if k == 0 else cifar_py_payload(k)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetError, match="not allowed"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


# ----------------------------------------------------------------------------- digits, names, resize


def test_digits_shape_range_and_determinism() -> None:
    pytest.importorskip("sklearn")
    a = load_dataset("digits", "/nonexistent/ignored")
    b = load_dataset("digits")
    assert a.image_shape == (32, 32, 1) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_test) == 1797 and len(a.x_test) == 359
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert a.x_train.min() == 0.0 and a.x_train.max() == 1.0
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert set(np.unique(a.y_train)) == set(range(10))
    # The 32x32 upsample is exactly a 4x np.repeat of the native 8x8 images.
    native = load_dataset("digits", size=8)
    np.testing.assert_array_equal(a.x_test, native.x_test.repeat(4, axis=1).repeat(4, axis=2))
    np.testing.assert_array_equal(native.y_test, a.y_test)
    assert native.x_train.max() == 1.0 and np.all(native.x_train * 16 == np.round(native.x_train * 16))


def test_unknown_dataset_lists_known_names() -> None:
    assert list_datasets() == ["cifar10", "digits", "fashion_mnist"]
    with pytest.raises(ValueError, match="cifar10, digits, fashion_mnist") as err:
        load_dataset("imagenet")
    assert not isinstance(err.value, DatasetError)


def test_resize_nearest_index_arithmetic() -> None:
    x = np.arange(2 * 3 * 4 * 1).reshape(2, 3, 4, 1)
    up = resize_nearest(x, 6)
    assert up.shape == (2, 6, 6, 1)
    np.testing.assert_array_equal(up[:, :, :, 0][0, :, 0], [0, 0, 4, 4, 8, 8])  # rows 3 -> 6
    np.testing.assert_array_equal(up[0, 0, :, 0], [0, 0, 1, 2, 2, 3])  # cols 4 -> 6: floor(i*4/6)
    down = resize_nearest(np.arange(16).reshape(1, 4, 4, 1), 2)
    np.testing.assert_array_equal(down[0, :, :, 0], [[0, 2], [8, 10]])
    with pytest.raises(ValueError):
        resize_nearest(x, 0)


# ----------------------------------------------------------------------------- iterate_batches


def test_iterate_batches_in_order_and_coverage() -> None:
    x = np.arange(10).reshape(10, 1, 1, 1).astype(np.float32)
    y = np.arange(10, dtype=np.int64)
    batches = list(iterate_batches(x, y, 4, seed=None))
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in batches]), y)
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0, 0, 0], yb)  # x and y stay paired
    assert [len(yb) for _, yb in iterate_batches(x, y, 4, seed=None, drop_last=True)] == [4, 4]
    assert [len(yb) for _, yb in iterate_batches(x, y, 5, seed=3, drop_last=True)] == [5, 5]


def test_iterate_batches_seeded_reproducible_permutation() -> None:
    x = np.arange(50, dtype=np.float32)[:, None] * 2
    y = np.arange(50, dtype=np.int64)
    run = lambda seed: np.concatenate([yb for _, yb in iterate_batches(x, y, 8, seed=seed)])  # noqa: E731
    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, y) and not np.array_equal(a, c)
    np.testing.assert_array_equal(np.sort(a), y)  # every sample exactly once
    np.testing.assert_array_equal(a, np.random.default_rng(7).permutation(50))
    for xb, yb in iterate_batches(x, y, 8, seed=7):
        np.testing.assert_array_equal(xb[:, 0], yb * 2)
    with pytest.raises(ValueError):
        list(iterate_batches(x, y[:-1], 8, seed=None))
