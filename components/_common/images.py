"""The one place that maps components to container images.

Tags equal the package version, never `:latest`. KEEL_IMAGE_REGISTRY moves
every image to a private registry at compile time.
"""

import os
from importlib.metadata import PackageNotFoundError, version

try:
    KEEL_VERSION = version("keel-ml")
except PackageNotFoundError:  # running from a source tree that was never installed
    KEEL_VERSION = "0.0.0"

REGISTRY = os.environ.get("KEEL_IMAGE_REGISTRY", "ghcr.io/keel-ml")


def image(name: str) -> str:
    return f"{REGISTRY}/keel-{name}:{KEEL_VERSION}"


BASE_IMAGE = image("base")
SERVING_IMAGE = image("serving")

# component name -> image; tests check every component is listed.
COMPONENT_IMAGES = {
    "ingest_data": BASE_IMAGE,
    "profile_data": BASE_IMAGE,
    "validate_data": BASE_IMAGE,
    "clean_data": BASE_IMAGE,
    "split_data": BASE_IMAGE,
    "engineer_features": BASE_IMAGE,
    "train_model": BASE_IMAGE,
    "evaluate_model": BASE_IMAGE,
    "write_model_card": BASE_IMAGE,
    "register_model": BASE_IMAGE,
    # Renders with the kserve SDK's models and applies with the kubernetes client (both in the base image).
    "deploy_model": BASE_IMAGE,
    # Runs the search (Optuna locally, the Katib client on a cluster).
    "tune_hyperparameters": BASE_IMAGE,
    # The image of every Katib trial Job: Keel's trainer (`python -m keel.components.tune.trial`).
    "tune_trial": BASE_IMAGE,
}
