"""The training pipelines: ingest -> profile, validate -> clean -> split ->
features -> [tune ->] train -> evaluate, fairness, explain -> model card ->
(metrics and fairness gates) register -> deploy (approved versions only).

`training` is the plain pipeline; `training-tuned` adds a hyperparameter search
(a Katib Experiment) between features and train and takes the `tune` section
as one more parameter.

Every parameter is one config section (see keel.pipelines.config). The same
function runs locally under kfp.local and compiles to IR for a cluster.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Markdown, Metrics

from keel.components.clean.component import clean_data
from keel.components.deploy.component import deploy_model
from keel.components.evaluate.component import evaluate_model
from keel.components.explain.component import explain_model
from keel.components.fairness.component import assess_fairness
from keel.components.features.component import engineer_features
from keel.components.ingest.component import ingest_data
from keel.components.model_card.component import write_model_card
from keel.components.profile.component import profile_data
from keel.components.register.component import register_model
from keel.components.split.component import split_data
from keel.components.train.component import train_model
from keel.components.tune.component import tune_hyperparameters
from keel.components.validate.component import validate_data
from keel.pipelines import credentials, training_run, training_tune
from keel.pipelines.config_files import CONFIG_DIR, DEFAULT_CONFIG, read_yaml
from keel.pipelines.descriptor import PipelineDescriptor
from keel.pipelines.training_config import TrainingConfig

PIPELINE_NAME = "keel-training"
TUNED_PIPELINE_NAME = "keel-training-tuned"


class TrainingOutputs(NamedTuple):
    passed: bool
    fairness_passed: bool
    metrics: Metrics
    fairness_metrics: Metrics
    fairness_report: HTML
    explanation_report: HTML
    evaluation_report: HTML
    model_card: Markdown
    model_card_html: HTML
    profile_report: HTML
    validation_report: HTML
    validation_quarantine: Dataset
    clean_quarantine: Dataset


def build_training_pipeline(*, tune: bool = False, ingest_cache_key: str | None = None, step_env: dict[str, str] | None = None):
    """The training pipeline (with `tune`, the tuned one); the other arguments exist for local runs only.

    Args:
        tune: build `training-tuned`: a tune step between features and train,
            and a `tune` parameter.
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

    def steps(data, target, validation, clean, split, features, model, evaluation, fairness, explain, model_card, registry,
              governance, deploy, tune=None):
        ingest = ingest_data(data=data, target=target, registry=registry).set_display_name("ingest")
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
        tasks = [ingest, profile, validate, cleaned, splits, feats]
        # What the search and the final fit both train on.
        fit_inputs = {name: feats.outputs[name] for name in ("train_features", "validation_features", "transformer")}
        trained_with, search = model, None
        if tune is not None:
            tuner = tune_hyperparameters(**fit_inputs, target=target, model=model, tune=tune).set_display_name("tune")
            trained_with, search = tuner.outputs["Output"], tuner.outputs["search"]
            tasks.append(tuner)
        trained = train_model(**fit_inputs, target=target, model=trained_with).set_display_name("train")
        evaluated = evaluate_model(
            trained_model=trained.outputs["trained_model"], test=splits.outputs["test"], target=target, evaluation=evaluation
        ).set_display_name("evaluate")
        fair = assess_fairness(
            trained_model=trained.outputs["trained_model"], test=splits.outputs["test"], validation=splits.outputs["validation"],
            target=target, evaluation=evaluation, fairness=fairness,
        ).set_display_name("fairness")
        explained = explain_model(
            trained_model=trained.outputs["trained_model"], train=splits.outputs["train"], test=splits.outputs["test"],
            target=target, explain=explain,
        ).set_display_name("explain")
        searched = {"search": search} if search is not None else {}
        card = write_model_card(
            raw=raw,
            profile_summary=profile.outputs["summary"],
            trained_model=trained.outputs["trained_model"],
            metrics=evaluated.outputs["metrics"],
            target=target,
            model_card=model_card,
            registry=registry,
            fairness=fair.outputs["metrics"],
            explainer=explained.outputs["explainer"],
            **searched,
        ).set_display_name("model-card")
        # A model that misses its metric or fairness limits is evaluated and documented, never registered.
        with dsl.If(evaluated.outputs["Output"] == True, name="metrics-gate-passed"), \
                dsl.If(fair.outputs["Output"] == True, name="fairness-gate-passed"):  # noqa: E712 (KFP conditions)
            register = register_model(
                trained_model=trained.outputs["trained_model"],
                schema=validate.outputs["schema"],
                metrics=evaluated.outputs["metrics"],
                fairness_metrics=fair.outputs["metrics"],
                explainer=explained.outputs["explainer"],
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
                fairness=fairness,
                explain=explain,
                registry=registry,
                governance=governance,
                **searched,
            ).set_display_name("register").set_caching_options(enable_caching=False)  # each run publishes its own version
            # Always renders the InferenceService for the new version; applies it only when
            # deploy.enabled is true (a runtime parameter, editable in the dashboard), a
            # cluster is configured and the version is approved (else the step holds it).
            deployed = deploy_model(bundle=register.outputs["bundle"], deploy=deploy).set_display_name("deploy")
            deployed.set_caching_options(enable_caching=False)  # applying is a side effect
        for task in tasks + [trained, evaluated, fair, explained, card, register, deployed]:
            # S3 keys for every step (any may use an s3:// store); database passwords and the PII key for
            # ingest only; the bundle signing and encryption keys for register only.
            keys = credentials.PII_KEYS if task is ingest else credentials.BUNDLE_KEYS if task is register else ()
            credentials.mount(task, source=task is ingest, keys=keys)
            for name, value in (step_env or {}).items():
                task.set_env_variable(name, value)
        return TrainingOutputs(
            passed=evaluated.outputs["Output"],
            fairness_passed=fair.outputs["Output"],
            metrics=evaluated.outputs["metrics"],
            fairness_metrics=fair.outputs["metrics"],
            fairness_report=fair.outputs["report"],
            explanation_report=explained.outputs["report"],
            evaluation_report=evaluated.outputs["report"],
            model_card=card.outputs["card_md"],
            model_card_html=card.outputs["card_html"],
            profile_report=profile.outputs["report"],
            validation_report=validate.outputs["report"],
            validation_quarantine=validate.outputs["quarantine"],
            clean_quarantine=cleaned.outputs["quarantine"],
        )

    # KFP reads a pipeline's parameters from its signature, so each variant
    # spells out its own; both run the same steps.
    if tune:
        @dsl.pipeline(
            name=TUNED_PIPELINE_NAME,
            description="Keel training with a hyperparameter search: ingest, profile, validate, clean, split, features, "
            "tune (a Katib Experiment), train, evaluate, fairness, explain, model card, register, deploy.",
        )
        def training_tuned_pipeline(
            data: dict, target: dict, validation: dict, clean: dict, split: dict, features: dict, model: dict,
            evaluation: dict, fairness: dict, explain: dict, model_card: dict, registry: dict, governance: dict,
            deploy: dict, tune: dict,
        ) -> TrainingOutputs:
            return steps(data, target, validation, clean, split, features, model, evaluation, fairness, explain, model_card,
                         registry, governance, deploy, tune)

        return training_tuned_pipeline

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Keel training: ingest, profile, validate, clean, split, features, train, evaluate, fairness, explain, "
        "model card, register, deploy.",
    )
    def training_pipeline(
        data: dict, target: dict, validation: dict, clean: dict, split: dict, features: dict, model: dict,
        evaluation: dict, fairness: dict, explain: dict, model_card: dict, registry: dict, governance: dict, deploy: dict,
    ) -> TrainingOutputs:
        return steps(data, target, validation, clean, split, features, model, evaluation, fairness, explain, model_card,
                     registry, governance, deploy)

    return training_pipeline


def _build(cfg, local):
    if local is None:
        return build_training_pipeline(tune=cfg.tune is not None)
    return build_training_pipeline(tune=cfg.tune is not None, ingest_cache_key=local.ingest_cache_key, step_env=local.step_env)


def _variants(cfg) -> list[tuple[str, object]]:
    """Both training pipelines; the tuned one takes the example search when the config has none."""
    tune = cfg.tune or TrainingConfig.model_validate(read_yaml(TUNED_EXAMPLE)).tune
    return [("training", cfg.model_copy(update={"tune": None})), ("training-tuned", cfg.model_copy(update={"tune": tune}))]


# The tuned pipeline's `tune` defaults when the config has no search of its own.
TUNED_EXAMPLE = CONFIG_DIR / "loans-tuned.yaml"

PIPELINE = PipelineDescriptor(
    kind="training",
    config_model=TrainingConfig,
    build=_build,
    example=DEFAULT_CONFIG,
    check=training_run.check,
    preflight=training_run.checked_run,
    summary=training_run.outcome,
    cli_overrides=training_run.cli_overrides,
    variants=_variants,
    variant_names=("training", "training-tuned"),
    tune=training_tune.run_tune,
    warm_start=True,
)
