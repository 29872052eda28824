"""The vision pipeline: ingest images -> train (torch or TensorFlow, GPU when asked) -> compress ->
evaluate -> (gate) register -> deploy.

The served model is evaluated, not the fp32 one: the compress step picks the
variant the bundle serves (ONNX by default), and the gate and the registered
metrics are that variant's. The train step's resources (requests = limits,
and a GPU node pool: accelerator type and limit, node selector,
tolerations) come from the config's `resources` section at compile time,
because KFP fixes them in the IR.
"""


from typing import NamedTuple, Optional

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Markdown, Metrics

from keel.components._common.images import TENSORFLOW_IMAGE
from keel.components._common.vision_config import ResourcesSection
from keel.components.compress.component import compress_model
from keel.components.deploy.component import deploy_model
from keel.components.evaluate_images.component import evaluate_image_model
from keel.components.ingest_images.component import ingest_images
from keel.components.register.image_component import register_image_model
from keel.components.train_deep.component import train_image_model
from keel.pipelines import credentials, vision_run
from keel.pipelines.config_files import CONFIG_DIR
from keel.pipelines.descriptor import PipelineDescriptor
from keel.pipelines.vision_config import VisionConfig

VISION_PIPELINE_NAME = "keel-vision"


class VisionOutputs(NamedTuple):
    passed: bool
    metrics: Metrics
    training_metrics: Metrics
    evaluation_report: HTML
    compression_report: Markdown


def apply_resources(task, resources: Optional[ResourcesSection]):
    """Requests = limits (so the pod is Guaranteed and never throttled mid-epoch) and the GPU node pool."""
    if resources is None:
        return task
    task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory)
    if resources.gpu is not None:
        task.set_accelerator_type(resources.gpu.accelerator).set_accelerator_limit(resources.gpu.count)
        for key, value in sorted(resources.gpu.node_selector.items()):
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for toleration in resources.gpu.tolerations:
            kubernetes.add_toleration(task, key=toleration.key, operator=toleration.operator,
                                      value=toleration.value, effect=toleration.effect)
    return task


def build_vision_pipeline(resources: Optional[ResourcesSection] = None, framework: str = "torch",
                          step_env: Optional[dict] = None, launcher: str = "local", ingest_cache_key: Optional[str] = None):
    """The vision pipeline, with the train step's `resources` and `framework`'s image compiled in.

    Args:
        resources: requests/limits and GPU pool of the train step (None: the cluster's defaults).
        framework: "tensorflow" runs the train step in keel-tensorflow instead of keel-torch.
        step_env: environment for every step (local runs: the source hash that keys the cache).
        launcher: "pytorchjob": the train step only submits a PyTorchJob and waits, so the
            resources (and the GPU pool) go to the job's replicas, not to the step's pod.
        ingest_cache_key: as in the training pipeline: ingest names its source, not its
            content, so it is never cached, unless a local run that hashed the source's
            files passes a key; then an unchanged rerun resumes after the last finished step.
    """

    @dsl.pipeline(name=VISION_PIPELINE_NAME,
                  description="Keel vision: ingest images, train (PyTorch or TensorFlow, GPU node pool when asked), "
                              "compress (int8, pruning, ONNX), evaluate, register, deploy.")
    def vision_pipeline(data: dict, model: dict, training: dict, evaluation: dict, compression: dict,
                        model_card: dict, registry: dict, deploy: dict) -> VisionOutputs:
        ingest = ingest_images(data=data).set_display_name("ingest-images")
        if ingest_cache_key:
            ingest.set_caching_options(enable_caching=True, cache_key=ingest_cache_key)
        else:  # new images at the same path must never be served from the cache
            ingest.set_caching_options(enable_caching=False)
        if launcher == "pytorchjob":
            trained = train_image_model(train=ingest.outputs["train"], validation=ingest.outputs["validation"],
                                        model=model, training=training, registry=registry,
                                        resources=resources.model_dump(mode="json", exclude_none=True) if resources else {}
                                        ).set_display_name("train")
        else:
            trained = train_image_model(train=ingest.outputs["train"], validation=ingest.outputs["validation"],
                                        model=model, training=training, registry=registry).set_display_name("train")
            apply_resources(trained, resources)
        compressed = compress_model(trained_model=trained.outputs["trained_model"], test=ingest.outputs["test"],
                                    compression=compression).set_display_name("compress")
        evaluated = evaluate_image_model(trained_model=compressed.outputs["compressed_model"], test=ingest.outputs["test"],
                                         evaluation=evaluation).set_display_name("evaluate")
        if framework == "tensorflow":
            # A Keras model trains, converts (TFLite) and scores (SavedModel/TFLite) with TensorFlow,
            # which keel-torch does not carry.
            for task in (trained, compressed, evaluated):
                task.set_container_image(TENSORFLOW_IMAGE)
        tasks = [ingest, trained, compressed, evaluated]
        with dsl.If(evaluated.outputs["Output"] == True, name="metrics-gate-passed"):  # noqa: E712 (KFP condition)
            registered = register_image_model(
                model=compressed.outputs["compressed_model"], trained_model=trained.outputs["trained_model"],
                metrics=evaluated.outputs["metrics"], train=ingest.outputs["train"],
                validation=ingest.outputs["validation"], test=ingest.outputs["test"], data=data, model_config=model,
                training=training, evaluation=evaluation, compression=compression, model_card=model_card,
                registry=registry,
            ).set_display_name("register").set_caching_options(enable_caching=False)
            # The same step as the training pipeline's: renders the InferenceService for the new
            # version (the keel-predictor runtime serves ONNX image bundles), applies it when
            # deploy.enabled and a cluster is configured.
            deployed = deploy_model(bundle=registered.outputs["bundle"], deploy=deploy).set_display_name("deploy")
            deployed.set_caching_options(enable_caching=False)
            tasks += [registered, deployed]
        for task in tasks:
            # Any step may read or write an s3:// store; register also signs and encrypts the bundle.
            credentials.mount(task, keys=credentials.BUNDLE_KEYS if task is registered else ())
            for name, value in (step_env or {}).items():
                task.set_env_variable(name, value)
        return VisionOutputs(passed=evaluated.outputs["Output"], metrics=evaluated.outputs["metrics"],
                             training_metrics=trained.outputs["metrics"], evaluation_report=evaluated.outputs["report"],
                             compression_report=compressed.outputs["report"])

    return vision_pipeline


def _build(cfg, local):
    if local is None:  # a cluster: the train step's resources and GPU pool, and the launcher
        return build_vision_pipeline(cfg.resources, cfg.model.framework, launcher=cfg.training.distributed.launcher)
    # Resources and node pools are a cluster's business; locally the step uses what this machine has.
    return build_vision_pipeline(None, cfg.model.framework, step_env=local.step_env, ingest_cache_key=local.ingest_cache_key)


PIPELINE = PipelineDescriptor(
    kind="vision",
    config_model=VisionConfig,
    build=_build,
    example=CONFIG_DIR / "fashion-mnist-torch.yaml",
    check=vision_run.check,
    preflight=vision_run.checked_run,
    summary=vision_run.outcome,
    cli_overrides=vision_run.cli_overrides,
    runners=("local",),
    runner_note="its steps need keel-torch, which `make images` builds but the docker runner does not stage yet",
)
