"""The backfill pipeline's config: one pydantic model, loaded from YAML (`pipeline: backfill`).

Sections are defined beside the components (keel.components._common.config);
this model only composes them. `execution_date` is the one plain-string
parameter: the run's logical date.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.components._common.config import (
    BackfillSection, CleanSection, DataSection, RegistrySection, TargetSection, ValidationSection,
)

# Pipeline parameters, in order: each is one config section passed as a dict.
BACKFILL_SECTIONS = ("data", "target", "validation", "clean", "backfill", "registry")


class BackfillConfig(BaseModel):
    """A backfill run: a date range of a Postgres source, partition by partition, into date-partitioned Parquet."""

    model_config = ConfigDict(extra="forbid")

    pipeline: Literal["backfill"] = "backfill"
    name: str = Field("keel-backfill", description="Run label shown in logs and the run summary")
    description: str = ""
    data: DataSection
    target: TargetSection
    validation: ValidationSection = Field(default_factory=lambda: ValidationSection(on_violation="quarantine"))
    clean: CleanSection = Field(default_factory=CleanSection)
    backfill: BackfillSection
    registry: RegistrySection = Field(default_factory=RegistrySection)
    execution_date: str = Field("", description="The run's logical date (YYYY-MM-DD or ISO timestamp); empty: today, UTC")

    @model_validator(mode="after")
    def _check(self):
        if not self.data.source.startswith(("postgresql://", "postgres://")):
            raise ValueError("data.source: a backfill reads a postgresql:// source (with data.table or data.query)")
        if self.data.version:
            raise ValueError("data.version: a backfill reads each partition from the source; it cannot pin one version")
        if self.data.sample_rows or self.data.drop_columns:
            raise ValueError("data.sample_rows and data.drop_columns do not apply to a backfill (it keeps every row and column)")
        return self

    @property
    def pipeline_name(self) -> str:
        return "backfill"

    def pipeline_arguments(self) -> dict:
        arguments = {name: getattr(self, name).model_dump(mode="json", exclude_none=True) for name in BACKFILL_SECTIONS}
        arguments["execution_date"] = self.execution_date
        return arguments
