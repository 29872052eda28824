"""The vision pipeline's config: one pydantic model, loaded from YAML (`pipeline: vision`).

Sections are defined beside the components (keel.components._common.vision_config
and .config); this model only composes them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.components._common.config import DeploySection, EvaluationSection, ModelCardSection, RegistrySection
from keel.components._common.vision_config import (
    CompressionSection, DeepModelSection, ImageDataSection, ResourcesSection, TrainingSection,
)

# Pipeline parameters, in order: each is one config section passed as a dict.
VISION_SECTIONS = ("data", "model", "training", "evaluation", "compression", "model_card", "registry", "deploy")
# What the keel-predictor image (keel-serving: onnxruntime, no torch or TensorFlow) can serve.
PREDICTOR_FORMATS = ("onnx", "onnx_int8", "onnx_int8_static")


class VisionConfig(BaseModel):
    """An image-model pipeline run: ingest images -> train -> compress -> evaluate -> register -> deploy."""

    model_config = ConfigDict(extra="forbid")

    pipeline: Literal["vision"] = "vision"
    name: str = Field("keel-vision", description="Run label shown in logs and the run summary")
    description: str = ""
    data: ImageDataSection = Field(default_factory=ImageDataSection)
    model: DeepModelSection = Field(default_factory=DeepModelSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    compression: CompressionSection = Field(default_factory=CompressionSection)
    model_card: ModelCardSection = Field(default_factory=ModelCardSection)
    registry: RegistrySection = Field(default_factory=lambda: RegistrySection(model_name="fashion-mnist"))
    deploy: DeploySection = Field(default_factory=DeploySection)
    # Compile-time only: the train step's requests/limits and GPU node pool in the IR.
    resources: ResourcesSection = Field(default_factory=ResourcesSection)

    @model_validator(mode="after")
    def _check(self):
        if self.training.distributed.launcher == "pytorchjob" and self.model.framework != "torch":
            raise ValueError("training.distributed.launcher pytorchjob runs torch models; tensorflow trains in the step")
        gpu, dist = self.resources.gpu, self.training.distributed
        if gpu is not None and gpu.count > 1 and dist.launcher == "pytorchjob":
            raise ValueError("resources.gpu.count: a PyTorchJob replica runs one process on one GPU; "
                             "set count 1 and raise training.distributed.processes instead")
        if gpu is not None and dist.launcher == "local" and gpu.count > dist.processes:
            raise ValueError(f"resources.gpu.count is {gpu.count} but training.distributed.processes is {dist.processes}; "
                             "each process drives one GPU, so the others would sit idle")
        if self.deploy.enabled and (not self.compression.enabled or self.compression.serve not in PREDICTOR_FORMATS):
            raise ValueError(f"deploy.enabled: the keel-predictor image serves ONNX image models; set compression.serve "
                             f"to one of {', '.join(PREDICTOR_FORMATS)} (got {self.compression.serve if self.compression.enabled else 'compression off'})")
        if self.training.device == "cuda" and self.resources.gpu is None:
            raise ValueError("training.device cuda needs resources.gpu (else the step lands on a node without one)")
        return self

    @property
    def pipeline_name(self) -> str:
        return "vision"

    def pipeline_arguments(self) -> dict[str, dict]:
        return {name: getattr(self, name).model_dump(mode="json", exclude_none=True) for name in VISION_SECTIONS}
