"""The vision pipeline's config and compiled IR: GPU node pools, framework images, the PyTorchJob launcher."""

from __future__ import annotations

import pytest
import yaml

from keel.components._common.errors import ConfigError
from keel.components._common.images import TENSORFLOW_IMAGE, TORCH_IMAGE
from keel.pipelines.kfp.compile import compile_config, compile_pipelines
from keel.pipelines.config import CONFIG_DIR, load_config, parse_config, with_overrides

TRAIN = "exec-train-image-model"


def compiled(tmp_path, name: str, **overrides) -> dict:
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    if overrides:
        cfg = with_overrides(cfg, overrides)
    # A pipeline with Kubernetes settings compiles to two documents: the pipeline spec, then the platform spec.
    docs = list(yaml.safe_load_all(compile_config(tmp_path, cfg)[0].read_text()))
    return {**docs[0], **(docs[1] if len(docs) > 1 else {})}


def platform(ir: dict) -> dict:
    return ir.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def pooled(ir: dict) -> list[str]:
    """The executors sent to a node pool (every one also mounts the S3 Secret, see test_compile)."""
    return sorted(name for name, spec in platform(ir).items() if "nodeSelector" in spec or "tolerations" in spec)


def test_a_gpu_config_compiles_the_accelerator_node_pool_and_resources(tmp_path):
    ir = compiled(tmp_path, "fashion-mnist-torch-gpu")
    container = ir["deploymentSpec"]["executors"][TRAIN]["container"]
    resources = container["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(resources["accelerator"]["resourceCount"]) == 1
    assert resources["cpuRequest"] == resources["cpuLimit"] == 8
    assert resources["memoryRequest"] == resources["memoryLimit"]
    assert container["image"] == TORCH_IMAGE
    k8s = platform(ir)[TRAIN]
    assert k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # Only the train step asks for the GPU pool.
    others = [name for name, ex in ir["deploymentSpec"]["executors"].items()
              if name != TRAIN and "accelerator" in ex["container"].get("resources", {})]
    assert others == [] and pooled(ir) == [TRAIN]


def test_a_cpu_config_asks_for_no_gpu_and_the_config_becomes_the_defaults(tmp_path):
    ir = compiled(tmp_path, "fashion-mnist-torch")
    assert "accelerator" not in ir["deploymentSpec"]["executors"][TRAIN]["container"].get("resources", {})
    assert pooled(ir) == []
    defaults = ir["root"]["inputDefinitions"]["parameters"]
    assert defaults["training"]["defaultValue"]["epochs"] == 3
    assert defaults["data"]["defaultValue"]["source"] == "fashion-mnist"
    assert set(defaults) == {"data", "model", "training", "evaluation", "compression", "model_card", "registry", "deploy"}


def test_tensorflow_trains_in_its_own_image(tmp_path):
    ir = compiled(tmp_path, "fashion-mnist-tensorflow")
    assert ir["deploymentSpec"]["executors"][TRAIN]["container"]["image"] == TENSORFLOW_IMAGE
    assert ir["deploymentSpec"]["executors"]["exec-ingest-images"]["container"]["image"] == TORCH_IMAGE


def test_the_pytorchjob_launcher_gives_the_gpu_pool_to_the_replicas_not_the_step(tmp_path):
    ir = compiled(tmp_path, "fashion-mnist-torch-gpu", **{"training.distributed.processes": 4,
                                                          "training.distributed.launcher": "pytorchjob"})
    assert "accelerator" not in ir["deploymentSpec"]["executors"][TRAIN]["container"].get("resources", {})
    task = ir["root"]["dag"]["tasks"]["train-image-model"]
    passed = task["inputs"]["parameters"]["resources"]["runtimeValue"]["constant"]
    assert passed["gpu"]["accelerator"] == "nvidia.com/gpu" and passed["cpu"] == "8"


def test_compiling_a_training_config_also_writes_the_vision_example(tmp_path):
    names = {p.stem for p in compile_pipelines(tmp_path)}
    assert names == {"training", "training-tuned", "vision", "backfill", "monitoring"}


@pytest.mark.parametrize("change, match", [
    ({"pipeline": "images"}, "pipeline: 'images' is not a Keel pipeline"),
    ({"training": {"device": "cuda"}}, "device cuda needs resources.gpu"),
    ({"model": {"framework": "tensorflow"}, "training": {"distributed": {"launcher": "pytorchjob"}}}, "launcher pytorchjob runs torch"),
    ({"training": {"batch_size": 100, "distributed": {"processes": 3}}}, "split evenly"),
    ({"model": {"architecture": "vgg"}}, "model.architecture"),
    ({"resources": {"gpu": {"count": 0}}}, "resources.gpu.count"),
    ({"resources": {"gpu": {"tolerations": [{"key": "x", "operator": "Sometimes"}]}}}, "resources.gpu.tolerations.0.operator"),
    ({"training": {"precision": "fp8"}}, "training.precision"),
    ({"deploy": {"enabled": True}, "compression": {"serve": "torchscript_int8"}}, "deploy.enabled: the keel-predictor image serves ONNX"),
    ({"resources": {"gpu": {"count": 2}}}, "processes is 1; each process drives one GPU"),
    ({"resources": {"gpu": {"count": 2}}, "training": {"batch_size": 256, "distributed": {"processes": 2, "launcher": "pytorchjob"}}},
     "a PyTorchJob replica runs one process on one GPU"),
    ({"training": {"epochs": 0}}, "training.epochs"),
])
def test_bad_vision_configs_name_the_field(change, match):
    raw = {"pipeline": "vision", **change}
    if "pipeline" in change:
        raw["pipeline"] = change["pipeline"]
    with pytest.raises(ConfigError, match=match):
        parse_config(raw, "vision.yaml")


def test_tabular_flags_are_refused_for_a_vision_config(tmp_path, capsys):
    from keel.pipelines.cli.main import main

    assert main(["check", str(CONFIG_DIR / "fashion-mnist-torch.yaml"), "--target", "y"]) == 2
    assert "--target: does not apply to a vision config" in capsys.readouterr().err
