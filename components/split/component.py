"""KFP component: split_data."""

from kfp.dsl import Dataset, Input, Output

from keel.components._common.component import keel_component


@keel_component
def split_data(
    data: Input[Dataset],
    target: dict,
    split: dict,
    train: Output[Dataset],
    validation: Output[Dataset],
    test: Output[Dataset],
):
    """Splits the cleaned table into train, validation and test sets, reproducibly.

    The target column is replaced by `__label__` (int class index, or float for
    regression); every input row lands in exactly one split.

    Args:
        data: the cleaned table (Parquet), e.g. clean_data's `cleaned`.
        target: the `target` config section.
        split: the `split` config section (method stratified|random|time, test_size, validation_size, time_column, seed).
        train: training rows (Parquet); metadata: rows, task, method, classes, class_counts (or label_mean).
        validation: validation rows, same columns (empty when validation_size is 0).
        test: test rows, same columns.
    """
    from keel.components._common import lineage, tables
    from keel.components._common.config import SplitSection, TargetSection
    from keel.components._common.errors import user_errors
    from keel.components.split.split import split_frame

    with user_errors("split_data"):
        target_cfg, split_cfg = TargetSection.parse(target, "target"), SplitSection.parse(split, "split")
        result = split_frame(tables.read_parquet(data.path), target_cfg, split_cfg)
        parents = [lineage.parent("data", data)]
        for name, artifact in (("train", train), ("validation", validation), ("test", test)):
            meta = tables.write_parquet(result.frames[name], artifact.path)
            artifact.metadata.update(meta)
            artifact.metadata.update(result.metadata(name))
            artifact.metadata.update(
                lineage.stamp(content_hash=meta["content_hash"], parents=parents, params={"target": target, "split": split})
            )
