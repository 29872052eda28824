"""The monitoring pipeline's config: one pydantic model, loaded from YAML (`pipeline: monitoring`).

Sections are defined beside the components (keel.components._common.config);
this model only composes them. `execution_date` is the window's end: a
recurring run (`keel schedule`) passes KFP's `[[ScheduledTime]]`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from keel.components._common.config import MonitoringSection, RegistrySection

# Pipeline parameters, in order: each is one config section passed as a dict.
MONITORING_SECTIONS = ("monitoring", "registry")


class MonitoringConfig(BaseModel):
    """A monitoring run: a window of a served model's logged traffic against its training data -> a verdict."""

    model_config = ConfigDict(extra="forbid")

    pipeline: Literal["monitoring"] = "monitoring"
    name: str = Field("keel-monitoring", description="Run label shown in logs and the run summary")
    description: str = ""
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection)
    registry: RegistrySection
    execution_date: str = Field("", description="The window's end (YYYY-MM-DD: the end of that day, or an ISO "
                                                "timestamp; empty: now)")

    @property
    def pipeline_name(self) -> str:
        return "monitoring"

    def pipeline_arguments(self) -> dict:
        arguments = {name: getattr(self, name).model_dump(mode="json", exclude_none=True) for name in MONITORING_SECTIONS}
        arguments["execution_date"] = self.execution_date
        return arguments
