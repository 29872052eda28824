"""The training pipeline: ingest -> profile, validate -> clean -> split ->
features -> train -> evaluate -> model card -> (gate) register -> deploy.

Every parameter is one config section (see keel.pipelines.config). The same
function runs locally under kfp.local and compiles to IR for a cluster.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Markdown, Metrics

from keel.components.clean.component import clean_data
from keel.components.deploy.component import deploy_model
from keel.components.evaluate.component import evaluate_model
from keel.components.features.component import engineer_features
from keel.components.ingest.component import ingest_data
from keel.components.model_card.component import write_model_card
from keel.components.profile.component import profile_data
from keel.components.register.component import register_model
from keel.components.split.component import split_data
from keel.components.train.component import train_model
from keel.components.validate.component import validate_data

PIPELINE_NAME = "keel-training"


class TrainingOutputs(NamedTuple):
    passed: bool
    metrics: Metrics
    evaluation_report: HTML
    model_card: Markdown
    model_card_html: HTML
    profile_report: HTML
    validation_report: HTML
    validation_quarantine: Dataset
    clean_quarantine: Dataset


def build_training_pipeline(*, ingest_cache_key: str | None = None, step_env: dict[str, str] | None = None):
    """The training pipeline; the arguments exist for local runs only.

    Args:
        ingest_cache_key: KFP caches a step by its inputs, and ingest's inputs
            name the source, not its content, so by default (and in compiled
            IR) ingest is never cached. A local run that has read the data
            passes a key made of its content hash, so that an unchanged
            source lets kfp.local's cache resume a run after its last
            finished step.
        step_env: environment for every step; local runs set a hash of
            Keel's source so that a code change invalidates cached steps
            (the cache key covers a component's own body, not the logic
            modules it imports).
    """

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Keel training: ingest, profile, validate, clean, split, features, train, evaluate, model card, register, deploy.",
    )
    def training_pipeline(
        data: dict,
        target: dict,
        validation: dict,
        clean: dict,
        split: dict,
        features: dict,
        model: dict,
        evaluation: dict,
        model_card: dict,
        registry: dict,
        deploy: dict,
    ) -> TrainingOutputs:
        ingest = ingest_data(data=data, target=target).set_display_name("ingest")
        if ingest_cache_key:
            ingest.set_caching_options(enable_caching=True, cache_key=ingest_cache_key)
        else:  # a changed table at the same URI must never be served from the cache
            ingest.set_caching_options(enable_caching=False)
        raw = ingest.outputs["raw"]
        profile = profile_data(data=raw, target=target).set_display_name("profile")
        validate = validate_data(data=raw, target=target, validation=validation).set_display_name("validate")
        cleaned = clean_data(data=validate.outputs["valid"], target=target, clean=clean).set_display_name("clean")
        splits = split_data(data=cleaned.outputs["cleaned"], target=target, split=split).set_display_name("split")
        feats = engineer_features(
            train=splits.outputs["train"], validation=splits.outputs["validation"], features=features
        ).set_display_name("features")
        trained = train_model(
            train_features=feats.outputs["train_features"],
            validation_features=feats.outputs["validation_features"],
            transformer=feats.outputs["transformer"],
            target=target,
            model=model,
        ).set_display_name("train")
        evaluated = evaluate_model(
            trained_model=trained.outputs["trained_model"], test=splits.outputs["test"], target=target, evaluation=evaluation
        ).set_display_name("evaluate")
        card = write_model_card(
            raw=raw,
            profile_summary=profile.outputs["summary"],
            trained_model=trained.outputs["trained_model"],
            metrics=evaluated.outputs["metrics"],
            target=target,
            model_card=model_card,
            registry=registry,
        ).set_display_name("model-card")
        # A model that misses its thresholds is evaluated and documented, never registered.
        with dsl.If(evaluated.outputs["Output"] == True, name="metrics-gate-passed"):  # noqa: E712 (KFP condition)
            register = register_model(
                trained_model=trained.outputs["trained_model"],
                schema=validate.outputs["schema"],
                metrics=evaluated.outputs["metrics"],
                card_md=card.outputs["card_md"],
                card_html=card.outputs["card_html"],
                raw=raw,
                valid=validate.outputs["valid"],
                cleaned=cleaned.outputs["cleaned"],
                train=splits.outputs["train"],
                test=splits.outputs["test"],
                transformer=feats.outputs["transformer"],
                data=data,
                target=target,
                validation=validation,
                clean=clean,
                split=split,
                features=features,
                model=model,
                evaluation=evaluation,
                registry=registry,
            ).set_display_name("register").set_caching_options(enable_caching=False)  # each run publishes its own version
            # Always renders the InferenceService for the new version; applies it only when
            # deploy.enabled is true (a runtime parameter, editable in the dashboard) and a
            # cluster is configured.
            deployed = deploy_model(bundle=register.outputs["bundle"], deploy=deploy).set_display_name("deploy")
            deployed.set_caching_options(enable_caching=False)  # applying is a side effect
        for task in (ingest, profile, validate, cleaned, splits, feats, trained, evaluated, card, register, deployed):
            for name, value in (step_env or {}).items():
                task.set_env_variable(name, value)
        return TrainingOutputs(
            passed=evaluated.outputs["Output"],
            metrics=evaluated.outputs["metrics"],
            evaluation_report=evaluated.outputs["report"],
            model_card=card.outputs["card_md"],
            model_card_html=card.outputs["card_html"],
            profile_report=profile.outputs["report"],
            validation_report=validate.outputs["report"],
            validation_quarantine=validate.outputs["quarantine"],
            clean_quarantine=cleaned.outputs["quarantine"],
        )

    return training_pipeline


training_pipeline = build_training_pipeline()


PIPELINES = {"training": training_pipeline}
