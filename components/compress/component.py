"""KFP component: compress_model."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def compress_model(
    trained_model: Input[Model],
    test: Input[Dataset],
    compression: dict,
    compressed_model: Output[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
):
    """Builds int8, pruned and ONNX/TFLite variants of a trained image model, measures each, and picks one to serve.

    Args:
        trained_model: a trained image model directory (model.json + files, see _common/deep_model/artifact.py).
        test: the test ImageSet (.npz) the accuracies are measured on.
        compression: the `compression` config section (variants, serve, max_accuracy_drop, threads).
        compressed_model: the input's files plus one file per variant; model.json gains the variants in
            `files`, the chosen `serving_format` and a `compression` record (the measured table).
            Metadata: framework, serving_format, variants, and lineage.
        metrics: per variant <variant>_accuracy, _accuracy_drop, _latency_p50_ms, _images_per_second,
            _size_bytes; served_accuracy_drop and served_speedup.
        report: the trade-off table in Markdown (for the model card).
    """
    from keel.components._common import lineage, storage
    from keel.components._common.errors import user_errors
    from keel.components.compress.compress import compress
    from keel.components._common.vision_config import CompressionSection

    with user_errors("compress_model"):
        cfg = CompressionSection.parse(compression, "compression")
        result = compress(trained_model.path, test.path, compressed_model.path, cfg)
        model_parents = [lineage.parent("trained_model", trained_model), lineage.parent("test", test)]
        content_hash = lineage.artifact_hash(compressed_model)  # the directory's files (metadata has no hash yet)
        compressed_model.metadata.update({"framework": result.info["framework"], "serving_format": result.served,
                                          "variants": [r["variant"] for r in result.rows]})
        compressed_model.metadata.update(lineage.stamp(content_hash=content_hash, parents=model_parents, params=cfg.model_dump()))

        served = next((r for r in result.rows if r["variant"] == result.served), None)
        metrics.log_metric("compression_enabled", float(cfg.enabled))  # never an empty Metrics (lineage hashes its values)
        for row in result.rows:
            for key in ("accuracy", "accuracy_drop", "latency_p50_ms", "images_per_second", "size_bytes"):
                metrics.log_metric(f"{row['variant']}_{key}", float(row[key]))
        if served:
            metrics.log_metric("served_accuracy_drop", float(served["accuracy_drop"]))
            metrics.log_metric("served_speedup", float(served["speedup"]))
        derived = [lineage.parent("compressed_model", compressed_model)]
        metrics.metadata.update(lineage.stamp(content_hash=lineage.artifact_hash(metrics), parents=derived, params=cfg.model_dump()))
        lineage.write_metadata_file(metrics)

        storage.write_bytes(report.path, f"# Compression: {result.served} served\n\n{result.markdown}".encode())
        report.metadata.update(lineage.stamp(content_hash=lineage.file_sha256(report.path), parents=derived, params=cfg.model_dump()))
