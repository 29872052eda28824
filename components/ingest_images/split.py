"""Image ingest logic: read a source, sample and split it (stratified, seeded), write three image sets.

A source with an official test split (Fashion-MNIST) keeps it: the test set
is the one every published figure is measured on. Validation always comes
out of the training images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keel.components._common import image_data
from keel.components._common.errors import DataError
from keel.components._common.lineage import file_sha256
from keel.components._common.vision_config import ImageDataSection

SPLITS = ("train", "validation", "test")


def _stratified(labels: np.ndarray, size: float | int, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        return train_test_split(index, test_size=size, random_state=seed, stratify=labels)
    except ValueError as err:
        raise DataError(f"{where}: cannot split {len(labels)} images by class ({err}); use more images or a smaller share") from None


def ingest(data: ImageDataSection, out: dict[str, str | Path]) -> dict[str, dict]:
    """Writes train/validation/test .npz files to the paths in `out` and returns each one's metadata."""
    sets = image_data.load_source(data.source)
    if "test" in sets:
        pool, test = sets["train"], sets["test"]
    else:
        keep, held = _stratified(sets["all"].labels, data.test_size, data.seed, "data.test_size")
        pool, test = sets["all"].take(np.sort(keep)), sets["all"].take(np.sort(held))
    if data.sample_images is not None and data.sample_images < len(pool):
        _, chosen = _stratified(pool.labels, data.sample_images, data.seed, "data.sample_images")
        pool = pool.take(np.sort(chosen))
    keep, held = _stratified(pool.labels, data.validation_size, data.seed + 1, "data.validation_size")
    parts = {"train": pool.take(np.sort(keep)), "validation": pool.take(np.sort(held)), "test": test}
    meta = {}
    for name in SPLITS:
        image_data.write_npz(out[name], parts[name])
        counts = np.bincount(parts[name].labels, minlength=len(parts[name].classes))
        meta[name] = {
            "images": len(parts[name]), "shape": list(parts[name].shape), "classes": parts[name].classes,
            "class_counts": counts.tolist(), "content_hash": file_sha256(out[name]), "source": data.source,
        }
    return meta
