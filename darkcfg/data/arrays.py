"""Array datasets, the fast path: IDX files (the MNIST family), .npz archives and
Fashion-MNIST from Debian's dataset-fashion-mnist package."""
from __future__ import annotations

import gzip
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .augment import Augment, to_channels, transform

# ---------------------------------------------------------------------------------------
# in-memory images

@dataclass
class ArrayDataset:
    """Images in memory: (N, C, H, W) uint8 (0..255) or float32 (0..1), int labels."""
    images: np.ndarray
    labels: np.ndarray
    source: str
    names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: np.ndarray, shape: tuple[int, int, int],
              augment: Augment | None, rng: np.random.Generator) -> np.ndarray:
        x = self.images[idx]
        x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else \
            x.astype(np.float32, copy=False)
        x = to_channels(x, shape[0], self.source)
        return transform(x, shape, augment, rng)

    def train_batch(self, idx: np.ndarray, shape: tuple[int, int, int],
                    augment: Augment | None, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
        """`batch` for training, with the indices used (arrays have no unreadable image)."""
        return self.batch(idx, shape, augment, rng), idx



# ---------------------------------------------------------------------------------------
# IDX and .npz

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (magic 0,0,type,ndim; ndim big-endian uint32 sizes; big-endian data),
    gzip-compressed or raw."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: no such IDX file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read (damaged gzip?): {e}") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (first bytes {raw[:4].hex(' ')}; an IDX "
                        "file starts 00 00 <type 08..0e> <ndim>)")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{path}: IDX header cut short ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims, dtype=np.int64))
    have = len(raw) - start
    if have != count * dtype.itemsize:
        raise DataError(f"{path}: IDX header says {' x '.join(map(str, dims))} "
                        f"{dtype.name} values ({count * dtype.itemsize} bytes) but the file "
                        f"holds {have} bytes after the header")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=start)
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def _as_images(x: np.ndarray, source: str) -> np.ndarray:
    """(N,H,W), (N,C,H,W) or unambiguous (N,H,W,C) -> (N,C,H,W) uint8 or float32."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise DataError(f"{source}: images must be (N, H, W) or (N, C, H, W); got shape "
                        f"{x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind != "f":
        raise DataError(f"{source}: images must be uint8 (0..255) or float (0..1), got "
                        f"{x.dtype}")
    x = x.astype(np.float32)
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise DataError(f"{source}: float images must lie in [0, 1] (found "
                        f"{np.nanmin(x):g}..{np.nanmax(x):g})")
    return np.ascontiguousarray(x)


def _as_labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{source}: labels must be N integers; got {y.dtype} {y.shape}")
    if len(y) != n:
        raise DataError(f"{source}: {n} images but {len(y)} labels")
    return y.astype(np.int64)


def load_idx(images: str | os.PathLike, labels: str | os.PathLike) -> ArrayDataset:
    images, labels = os.fspath(images), os.fspath(labels)
    x = _as_images(read_idx(images), images)
    return _nonempty(ArrayDataset(x, _as_labels(read_idx(labels), len(x),
                                                f"{images} + {labels}"), images))


def _nonempty(ds: ArrayDataset) -> ArrayDataset:
    if len(ds) == 0:
        raise DataError(f"{ds.source}: holds no images (0 in the file)")
    return ds


def load_idx_images(path: str | os.PathLike) -> np.ndarray:
    """IDX images as (N, C, H, W) float32 in [0, 1]."""
    x = _as_images(read_idx(path), os.fspath(path))
    return x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x


def load_npz(path: str | os.PathLike) -> ArrayDataset:
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such .npz file") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: not a readable .npz archive ({_npz_why(path, e)}); "
                        "write it again with numpy.savez") from None
    for xk, yk in (("x", "y"), ("images", "labels")):
        if xk in arrays and yk in arrays:
            x = _as_images(arrays[xk], path)
            return _nonempty(ArrayDataset(x, _as_labels(arrays[yk], len(x), path), path))
    raise DataError(f"{path}: expected arrays 'x' and 'y' (or 'images' and 'labels'); "
                    f"found {', '.join(sorted(arrays)) or 'none'}")


def _npz_why(path: str, e: Exception) -> str:
    """numpy's reasons, in words about the file (it says 'pickled data' for any non-zip)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = None
    if size == 0:
        return "the file is empty"
    if isinstance(e, ValueError) and "pickle" in str(e):
        return "not a zip of .npy arrays"
    if isinstance(e, (zipfile.BadZipFile, zlib.error, EOFError)):
        return f"damaged or cut short: {e}"
    return str(e)


# ---------------------------------------------------------------------------------------
# Fashion-MNIST

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "DARKCFG_FASHION_MNIST"
FASHION_MNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                       "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """folder/stem.gz or folder/stem, whichever exists."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_dir() -> Path:
    """The folder holding the four Fashion-MNIST IDX files, or a DataError saying how
    to get them."""
    stems = [s for pair in _FASHION_FILES.values() for s in pair]
    env = os.environ.get(FASHION_MNIST_ENV)
    folder = Path(env) if env else Path(FASHION_MNIST_DIR)
    missing = [s for s in stems if find_idx_file(folder, s) is None]
    if not missing:
        return folder
    if env:
        raise DataError(f"{FASHION_MNIST_ENV}={env}: that folder lacks "
                        f"{', '.join(m + '[.gz]' for m in missing)}")
    wanted = ", ".join(s + ".gz" for s in stems)
    raise DataError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}. Install it with "
                    "'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or set "
                    f"{FASHION_MNIST_ENV} to a folder holding {wanted}")


def fashion_mnist(split: str = "train") -> ArrayDataset:
    """Fashion-MNIST train (60,000) or test (10,000) as (N, 1, 28, 28) uint8 + labels."""
    folder = fashion_mnist_dir()
    images, labels = (find_idx_file(folder, s) for s in _FASHION_FILES[split])
    ds = load_idx(images, labels)  # type: ignore[arg-type]
    ds.names = list(FASHION_MNIST_NAMES)
    return ds

