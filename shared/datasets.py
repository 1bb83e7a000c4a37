"""Framework-free dataset loading: digits, Fashion-MNIST and CIFAR-10 as NHWC float32 numpy arrays."""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import DatasetError, FrameworkUnavailable, RecipeError

__all__ = [
    "Dataset",
    "DatasetError",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "resize_nearest",
]

FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim
_GZIP_MAGIC = b"\x1f\x8b"

_CIFAR_SIDE = 32
_CIFAR_PIXELS = 3 * _CIFAR_SIDE * _CIFAR_SIDE  # 3072
_CIFAR_RECORD = 1 + _CIFAR_PIXELS  # label byte + CHW pixels
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"

_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SEED = 0
# 8x8 is too small for the ResNets' total stride, so upsample by default.
_DIGITS_DEFAULT_SIZE = 32


# eq=False: the generated __eq__ would compare arrays elementwise and raise on truth-testing.
@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test split with float32 NHWC images in [0, 1] and int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        """Reject malformed splits early so framework code can trust the layout."""
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4 or x.dtype != np.float32:
                raise ValueError(f"{self.name}: x_{split} must be float32 NHWC, got {x.dtype} {x.shape}")
            if y.ndim != 1 or y.dtype != np.int64:
                raise ValueError(f"{self.name}: y_{split} must be 1-D int64, got {y.dtype} {y.shape}")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: {len(x)} {split} images but {len(y)} labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train/test image shapes differ")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.x_train.shape[1:]
        return (int(h), int(w), int(c))


# --------------------------------------------------------------------------- helpers


def resize_nearest(images: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an NHWC batch to size x size."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size <= 0:
        raise RecipeError(f"size must be a positive int, got {size!r}")
    h, w = images.shape[1], images.shape[2]
    if (h, w) == (size, size):
        return images
    # floor(i * in / out) picks the source pixel; for integer upsampling it equals np.repeat.
    rows = (np.arange(size) * h) // size
    cols = (np.arange(size) * w) // size
    return images[:, rows][:, :, cols]


def _to_float(images_u8: np.ndarray, size: int | None) -> np.ndarray:
    # Resize while still uint8: 4x less memory traffic than resizing float32.
    if size is not None:
        images_u8 = resize_nearest(images_u8, size)
    return images_u8.astype(np.float32) / np.float32(255.0)


def _check_labels(labels: np.ndarray, num_classes: int, where: str, name: str) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{name}: {where} has labels outside [0, {num_classes}): "
            f"min {labels.min()}, max {labels.max()}"
        )
    return labels


# --------------------------------------------------------------------------- digits


def _load_digits(size: int | None) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # optional dependency: only this dataset needs it
        raise FrameworkUnavailable(
            "the 'digits' dataset needs scikit-learn (pip install scikit-learn); "
            "it ships the 8x8 digits inside the package, so no download is required"
        ) from exc
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)  # pixel values are 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    images = images[..., None]  # NHW -> NHWC, one channel

    # Fixed-seed permutation so every framework sees the identical split.
    order = np.random.default_rng(_DIGITS_SEED).permutation(len(images))
    n_test = int(round(len(images) * _DIGITS_TEST_FRACTION))
    train_idx, test_idx = order[:-n_test], order[-n_test:]

    target = _DIGITS_DEFAULT_SIZE if size is None else size
    x_train = np.ascontiguousarray(resize_nearest(images[train_idx], target))
    x_test = np.ascontiguousarray(resize_nearest(images[test_idx], target))
    return Dataset("digits", x_train, labels[train_idx], x_test, labels[test_idx], 10)


# --------------------------------------------------------------------------- Fashion-MNIST

_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _fashion_error(path: str, problem: str, data_dir: str) -> DatasetError:
    return DatasetError(
        f"Fashion-MNIST: {path} {problem}; download the four IDX .gz files from "
        f"{FASHION_MNIST_URL} into {data_dir}"
    )


def _read_maybe_gzip(path: str, data_dir: str) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read()
    # Sniff the magic rather than trusting the extension: browsers sometimes
    # decompress on download but keep the .gz name.
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise _fashion_error(path, f"is a truncated or corrupt gzip file ({exc})", data_dir) from exc


def _parse_idx(data: bytes, magic: int, ndim: int, path: str, data_dir: str) -> np.ndarray:
    """Parse an unsigned-byte IDX payload, insisting on exact magic, dims and length."""
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise _fashion_error(path, f"is too short for an IDX header ({len(data)} bytes)", data_dir)
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise _fashion_error(
            path, f"has wrong IDX magic number 0x{got:08x} (expected 0x{magic:08x})", data_dir
        )
    if len(data) < header:
        raise _fashion_error(path, f"is too short for an IDX header ({len(data)} bytes)", data_dir)
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise _fashion_error(
            path,
            f"has {len(data)} bytes but its IDX header dims {dims} need exactly {expected} "
            "(truncated or corrupt)",
            data_dir,
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_path(data_dir: str, base: str) -> str:
    for candidate in (base + ".gz", base):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise _fashion_error(
        os.path.join(data_dir, base + ".gz"), f"is missing (nor is the un-gzipped {base} there)", data_dir
    )


def _load_fashion_mnist(data_dir: str, size: int | None) -> Dataset:
    paths = [_fashion_path(data_dir, base) for base in _FASHION_FILES]
    arrays = []
    for path, base in zip(paths, _FASHION_FILES):
        is_images = "images" in base
        magic, ndim = (_IDX_IMAGES_MAGIC, 3) if is_images else (_IDX_LABELS_MAGIC, 1)
        arr = _parse_idx(_read_maybe_gzip(path, data_dir), magic, ndim, path, data_dir)
        if is_images and arr.shape[1:] != (28, 28):
            raise _fashion_error(path, f"holds {arr.shape[1:]} images, expected 28x28", data_dir)
        arrays.append(arr)
    x_train, y_train, x_test, y_test = arrays
    for xi, yi, xp, yp in ((x_train, y_train, paths[0], paths[1]), (x_test, y_test, paths[2], paths[3])):
        if len(xi) != len(yi):
            raise _fashion_error(yp, f"has {len(yi)} labels but {xp} has {len(xi)} images", data_dir)
    return Dataset(
        "fashion_mnist",
        _to_float(x_train[..., None], size),
        _check_labels(y_train, 10, paths[1], "Fashion-MNIST"),
        _to_float(x_test[..., None], size),
        _check_labels(y_test, 10, paths[3], "Fashion-MNIST"),
        10,
    )


# --------------------------------------------------------------------------- CIFAR-10


def _cifar_error(path: str, problem: str, data_dir: str) -> DatasetError:
    return DatasetError(
        f"CIFAR-10: {path} {problem}; download cifar-10-binary.tar.gz or cifar-10-python.tar.gz "
        f"from {CIFAR10_URL} into {data_dir}"
    )


def _chw_to_nhwc(flat: np.ndarray) -> np.ndarray:
    return flat.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)


def _parse_cifar_bin(data: bytes, where: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise _cifar_error(
            where,
            f"has {len(data)} bytes, not a positive multiple of the {_CIFAR_RECORD}-byte record "
            "(truncated or corrupt)",
            data_dir,
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = _check_labels(records[:, 0], 10, where, "CIFAR-10")
    return _chw_to_nhwc(records[:, 1:]), labels


# Real CIFAR pickles name numpy.core.multiarray (numpy 1.x); numpy >= 2 writes numpy._core.
# Resolve the function via ndarray.__reduce__ to avoid importing the deprecated numpy.core shim.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # protocol-2 pickles encode bytes this way
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and plain containers, and nothing else."""

    where = "<pickle>"
    data_dir = ""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        """Resolve only the globals a numpy array pickle needs; refuse everything else."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _cifar_error(
                self.where,
                f"references the global {module}.{name}, which is not allowed in a CIFAR-10 batch "
                "(refusing to unpickle arbitrary objects)",
                self.data_dir,
            ) from None

    def persistent_load(self, pid):  # noqa: ANN001, ANN201 - pickle protocol
        """Refuse persistent ids: CIFAR batches never contain them."""
        raise _cifar_error(self.where, "contains a persistent id, which is not allowed", self.data_dir)


def _dict_get(d: dict, key: str):  # noqa: ANN202
    # Python-2 pickles decoded with encoding="bytes" have bytes keys; a re-pickled batch may use str.
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _parse_cifar_pickle(data: bytes, where: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    unpickler = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes")
    unpickler.where, unpickler.data_dir = where, data_dir
    try:
        batch = unpickler.load()
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure in an untrusted pickle means a bad file
        problem = f"is not a readable CIFAR-10 pickle ({type(exc).__name__}: {exc})"
        raise _cifar_error(where, problem, data_dir) from exc
    if not isinstance(batch, dict):
        raise _cifar_error(where, f"unpickles to {type(batch).__name__}, expected a dict", data_dir)
    images, labels = _dict_get(batch, "data"), _dict_get(batch, "labels")
    is_array = isinstance(images, np.ndarray)
    if not is_array or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != _CIFAR_PIXELS:
        desc = f"{images.dtype} {images.shape}" if is_array else type(images).__name__
        raise _cifar_error(where, f"has data {desc}, expected uint8 N x {_CIFAR_PIXELS}", data_dir)
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(images):
        n = len(labels) if isinstance(labels, (list, np.ndarray)) else type(labels).__name__
        raise _cifar_error(where, f"has {n} labels for {len(images)} images", data_dir)
    try:
        label_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise _cifar_error(where, "has non-integer labels", data_dir) from exc
    return _chw_to_nhwc(images), _check_labels(label_arr, 10, where, "CIFAR-10")


def _cifar_sources(data_dir: str) -> list[tuple[str, str, str]]:
    """(kind, location, format) candidates in preference order."""
    return [
        ("dir", os.path.join(data_dir, "cifar-10-batches-bin"), "bin"),
        ("tar", os.path.join(data_dir, "cifar-10-binary.tar.gz"), "bin"),
        ("dir", os.path.join(data_dir, "cifar-10-batches-py"), "py"),
        ("tar", os.path.join(data_dir, "cifar-10-python.tar.gz"), "py"),
    ]


def _batch_names(fmt: str) -> list[str]:
    suffix = ".bin" if fmt == "bin" else ""
    return [n + suffix for n in (*_CIFAR_TRAIN, _CIFAR_TEST)]


def _read_cifar_dir(directory: str, fmt: str, data_dir: str) -> list[tuple[bytes, str]]:
    out = []
    for name in _batch_names(fmt):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise _cifar_error(path, "is missing", data_dir)
        with open(path, "rb") as fh:
            out.append((fh.read(), path))
    return out


def _read_cifar_tar(archive: str, fmt: str, data_dir: str) -> list[tuple[bytes, str]]:
    folder = "cifar-10-batches-bin" if fmt == "bin" else "cifar-10-batches-py"
    wanted = {f"{folder}/{n}": n for n in _batch_names(fmt)}
    found: dict[str, bytes] = {}
    try:
        # Stream members straight into memory: nothing is extracted, so hostile member paths are harmless.
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                key = member.name[2:] if member.name.startswith("./") else member.name
                if key in wanted and member.isfile():
                    fh = tar.extractfile(member)
                    assert fh is not None  # isfile() guarantees a file object
                    found[key] = fh.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise _cifar_error(archive, f"is a truncated or corrupt .tar.gz archive ({exc})", data_dir) from exc
    out = []
    for key in wanted:
        where = f"{archive}:{key}"
        if key not in found:
            raise _cifar_error(archive, f"has no member {key}", data_dir)
        out.append((found[key], where))
    return out


def _load_cifar10(data_dir: str, size: int | None) -> Dataset:
    sources = _cifar_sources(data_dir)
    # Also accept data_dir pointing straight at an extracted batches folder.
    if os.path.isfile(os.path.join(data_dir, "data_batch_1.bin")):
        sources.insert(0, ("dir", data_dir, "bin"))
    elif os.path.isfile(os.path.join(data_dir, "data_batch_1")):
        sources.insert(0, ("dir", data_dir, "py"))
    for kind, location, fmt in sources:
        exists = os.path.isdir(location) if kind == "dir" else os.path.isfile(location)
        if not exists:
            continue
        reader = _read_cifar_dir if kind == "dir" else _read_cifar_tar
        blobs = reader(location, fmt, data_dir)
        parse = _parse_cifar_bin if fmt == "bin" else _parse_cifar_pickle
        parsed = [parse(blob, where, data_dir) for blob, where in blobs]
        x_train = np.concatenate([p[0] for p in parsed[:-1]])
        y_train = np.concatenate([p[1] for p in parsed[:-1]])
        x_test, y_test = parsed[-1]
        return Dataset("cifar10", _to_float(x_train, size), y_train, _to_float(x_test, size), y_test, 10)
    looked = ", ".join(loc for _, loc, _ in sources)
    raise _cifar_error(data_dir, f"holds no CIFAR-10 data (looked for {looked})", data_dir)


# --------------------------------------------------------------------------- public API

_LOADERS = {"cifar10": _load_cifar10, "digits": None, "fashion_mnist": _load_fashion_mnist}


def list_datasets() -> list[str]:
    """Names accepted by load_dataset."""
    return sorted(_LOADERS)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, size: int | None = None) -> Dataset:
    """Load a dataset by name as float32 NHWC images in [0, 1] with int64 labels."""
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in _LOADERS:
        raise RecipeError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    if size is not None:
        resize_nearest(np.zeros((0, 1, 1, 1), np.uint8), size)  # validates size before any I/O
    if key == "digits":
        return _load_digits(size)  # bundled with scikit-learn, data_dir is irrelevant
    if data_dir is None:
        url = FASHION_MNIST_URL if key == "fashion_mnist" else CIFAR10_URL
        raise DatasetError(
            f"{key}: data_dir is required; download the files from {url} and pass their folder"
        )
    return _LOADERS[key](os.fspath(data_dir), size)


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int | None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (xb, yb) minibatches, shuffled reproducibly when seed is given, in order when None."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(x)
    # seed is keyword-only with no default so callers must decide on shuffling explicitly.
    order = None if seed is None else np.random.default_rng(seed).permutation(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        if order is None:
            yield x[start:end], y[start:end]
        else:
            idx = order[start:end]
            yield x[idx], y[idx]
