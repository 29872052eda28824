"""The training pipeline's config: one pydantic model (loaded through keel.pipelines.config).

Each section is defined next to the components in
keel.components._common.config; this model only composes them, so a
component and the CLI validate the same thing with the same messages.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.components._common.config import (
    CleanSection,
    DataSection,
    DeploySection,
    EvaluationSection,
    ExplainSection,
    FairnessSection,
    FeaturesSection,
    GovernanceSection,
    ModelCardSection,
    ModelSection,
    RegistrySection,
    SplitSection,
    TuneSection,
    TargetSection,
    ValidationSection,
)

# Pipeline parameters, in order: each is one config section passed as a dict.
SECTIONS = ("data", "target", "validation", "clean", "split", "features", "model", "evaluation", "fairness", "explain",
            "model_card", "registry", "governance", "deploy")


class TrainingConfig(BaseModel):
    """A training pipeline run: every field is a section of the pipeline's parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("keel-training", description="Run label shown in logs and the run summary")
    description: str = ""
    data: DataSection
    target: TargetSection
    validation: ValidationSection = Field(default_factory=ValidationSection)
    clean: CleanSection = Field(default_factory=CleanSection)
    split: SplitSection = Field(default_factory=SplitSection)
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    model: ModelSection = Field(default_factory=ModelSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    fairness: FairnessSection = Field(default_factory=FairnessSection)
    explain: ExplainSection = Field(default_factory=ExplainSection)
    model_card: ModelCardSection = Field(default_factory=ModelCardSection)
    registry: RegistrySection = Field(default_factory=RegistrySection)
    governance: GovernanceSection = Field(default_factory=GovernanceSection)
    deploy: DeploySection = Field(default_factory=DeploySection)
    # Optional: with a `tune` section the run is the tuned training pipeline
    # (features -> tune -> train), whose extra parameter this is.
    tune: TuneSection | None = None

    @model_validator(mode="after")
    def _sensitive_columns(self):
        """Sensitive columns reach the test split for assessment (the model sees them only when asked to); PII is never a target."""
        if self.target.column in self.data.pii:
            raise ValueError(f"data.pii: lists the target column {self.target.column!r}; a model cannot learn a scrubbed target")
        sensitive = self.fairness.sensitive
        for column in sensitive:
            if column == self.target.column:
                raise ValueError(f"fairness.sensitive: {column!r} is the target column")
            if column in self.data.drop_columns or column in self.data.pii:
                where = "data.drop_columns" if column in self.data.drop_columns else "data.pii"
                raise ValueError(f"fairness.sensitive: {column!r} is removed at ingest by {where}, so it cannot be assessed")
        if sensitive and not self.fairness.use_in_training:
            missing = [c for c in sensitive if c not in self.features.exclude]
            if missing:
                self.features = self.features.model_copy(update={"exclude": [*self.features.exclude, *missing]})
        return self

    @property
    def pipeline_name(self) -> str:
        """Which compiled pipeline this config runs: `training` or `training-tuned`."""
        return "training-tuned" if self.tune is not None else "training"

    def pipeline_arguments(self) -> dict[str, dict]:
        """The pipeline's parameters: one JSON-safe dict per section."""
        # None means "use the default"; KFP rejects None inside a struct parameter.
        names = SECTIONS + (("tune",) if self.tune is not None else ())
        return {name: getattr(self, name).model_dump(mode="json", exclude_none=True) for name in names}
