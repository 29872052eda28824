"""KFP component: register_model."""

from typing import Optional

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def register_model(
    trained_model: Input[Model],
    schema: Input[Artifact],
    metrics: Input[Metrics],
    fairness_metrics: Input[Metrics],
    explainer: Input[Artifact],
    card_md: Input[Markdown],
    card_html: Input[HTML],
    raw: Input[Dataset],
    valid: Input[Dataset],
    cleaned: Input[Dataset],
    train: Input[Dataset],
    test: Input[Dataset],
    transformer: Input[Model],
    data: dict,
    target: dict,
    validation: dict,
    clean: dict,
    split: dict,
    features: dict,
    model: dict,
    evaluation: dict,
    fairness: dict,
    explain: dict,
    registry: dict,
    governance: dict,
    bundle: Output[Model],
    search: Optional[Input[Dataset]] = None,
) -> str:
    """Publishes the model, schema, metrics, model card and lineage as a new registry version.

    The version lives at `{registry.store}/registry/{registry.model_name}/v{N}/`, is never
    overwritten, and is read back and verified against its MANIFEST.json before this
    step succeeds.

    Args:
        trained_model: the fitted pipeline (model.joblib in the bundle).
        schema: the validate stage's schema JSON (the serving input contract).
        metrics: the evaluation metrics (its gate is the metrics gate).
        fairness_metrics: assess_fairness's group metrics (its gate is the fairness gate).
        explainer: explain_model's explainer spec (explainer.json in the bundle, served by :explain).
        card_md: the model card, Markdown.
        card_html: the model card, HTML.
        raw: the ingested data (recorded in lineage).
        valid: the validated data (recorded in lineage).
        cleaned: the cleaned data (recorded in lineage).
        train: the training split (recorded in lineage).
        test: the test split (recorded in lineage).
        transformer: the fitted feature transformer (recorded in lineage).
        data: the `data` config section; this and the sections below are recorded in lineage.json.
        target: the `target` config section.
        validation: the `validation` config section.
        clean: the `clean` config section.
        split: the `split` config section.
        features: the `features` config section.
        model: the `model` config section.
        evaluation: the `evaluation` config section.
        fairness: the `fairness` config section.
        explain: the `explain` config section.
        registry: the `registry` config section (store, model_name).
        governance: the `governance` config section: the version starts as a candidate, or is approved by the
            automatic gates (metrics, fairness, clean validation) under `approval: auto`.
        bundle: a verified copy of the registered version's files, MANIFEST.json included.
        search: the tune step's trials (tuned pipeline): every trial's parameters and value go into lineage.json.

    Returns:
        The registered version, e.g. "v3"; its stage is in the bundle's metadata.
    """
    from keel.components._common import lineage
    from keel.components._common.config import (
        CleanSection, DataSection, EvaluationSection, ExplainSection, FairnessSection, FeaturesSection, GovernanceSection,
        ModelSection, RegistrySection, SplitSection, TargetSection, ValidationSection,
    )
    from keel.components._common.errors import user_errors
    from keel.components.register.register import INPUT_ARTIFACTS, register, write_local_copy

    with user_errors("register_model"):
        target_cfg = TargetSection.parse(target, "target")
        registry_cfg = RegistrySection.parse(registry, "registry")
        config = {
            "data": DataSection.parse(data, "data"),
            "target": target_cfg,
            "validation": ValidationSection.parse(validation, "validation"),
            "clean": CleanSection.parse(clean, "clean"),
            "split": SplitSection.parse(split, "split"),
            "features": FeaturesSection.parse(features, "features"),
            "model": ModelSection.parse(model, "model"),
            "evaluation": EvaluationSection.parse(evaluation, "evaluation"),
            "fairness": FairnessSection.parse(fairness, "fairness"),
            "explain": ExplainSection.parse(explain, "explain"),
            "registry": registry_cfg,
            "governance": GovernanceSection.parse(governance, "governance"),
        }
        inputs = {
            "trained_model": trained_model, "schema": schema, "metrics": metrics, "fairness_metrics": fairness_metrics,
            "explainer": explainer, "card_md": card_md,
            "card_html": card_html, "raw": raw, "valid": valid, "cleaned": cleaned, "train": train,
            "test": test, "transformer": transformer,
        }
        searched = dict(search.metadata or {}) if search is not None else None
        registered = register(inputs, config, registry_cfg, target_task=target_cfg.task, search=searched,
                              governance=config["governance"])
        write_local_copy(registered, bundle.path)
        bundle.metadata.update({
            "model_name": registered.model_name,
            "version": registered.label,
            "registry_uri": registered.uri,
            "bundle_hash": registered.manifest["bundle_hash"],
            "stage": registered.stage,
            "gates": registered.gates,
        })
        bundle.metadata.update(lineage.stamp(
            content_hash=registered.manifest["bundle_hash"],
            parents=[lineage.parent(name, inputs[name]) for name in INPUT_ARTIFACTS],
            params=config["registry"].model_dump(mode="json"),
        ))
        print(f"registered {registered.model_name} {registered.label} at {registered.uri} ({registered.stage})", flush=True)
        return registered.label
