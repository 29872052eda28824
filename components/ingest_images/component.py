"""KFP component: ingest_images."""

from kfp.dsl import Dataset, Output

from keel.components._common.component import keel_component


@keel_component
def ingest_images(data: dict, train: Output[Dataset], validation: Output[Dataset], test: Output[Dataset]):
    """Reads an image source and writes stratified, seeded train / validation / test image sets.

    Args:
        data: the vision `data` config section (source, sample_images, validation_size, test_size, seed).
        train: uint8 [N, H, W, C] images + labels + classes as one .npz; metadata: images, shape,
            classes, class_counts, content_hash and lineage.
        validation: the same, held out of the training images.
        test: the source's own test split when it has one, else held out of all images.
    """
    from keel.components._common import lineage
    from keel.components._common.errors import user_errors
    from keel.components._common.vision_config import ImageDataSection
    from keel.components.ingest_images.split import ingest

    with user_errors("ingest_images"):
        cfg = ImageDataSection.parse(data, "data")
        outputs = {"train": train, "validation": validation, "test": test}
        meta = ingest(cfg, {name: artifact.path for name, artifact in outputs.items()})
        for name, artifact in outputs.items():
            artifact.metadata.update(meta[name])
            artifact.metadata.update(lineage.stamp(content_hash=meta[name]["content_hash"],
                                                   parents=[{"name": "source", "uri": cfg.source}], params=data))
