"""The decision log in a stage's config: the `logs:` key and the names of its columns, one vocabulary everywhere.

Every stage that reads decision logs takes them as `logs:` and names its columns with the same keys (`arm`,
`reward`, `propensity`, `user_id`, `cost`, ...); the contract of each column (type, range) is declared once in
`pipelines.tables.LOG_COLUMNS`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from pipelines.config import ConfigPath, StageConfig
from pipelines.tables import LOG_COLUMNS, Schema, log_schema


class LogSection(StageConfig):
    """A stage section that reads decision logs. `required_roles`: the columns the stage cannot do without; every
    other role the section names (a field of the same name, not None) is checked when present."""

    logs: ConfigPath = Field(description="decision log (parquet file or folder)")
    arm: str = Field("arm", description="arm column")
    reward: str = Field("reward", description="reward column")

    retired_keys: ClassVar[dict[str, str]] = {"data": "the decision log is `logs`"}
    required_roles: ClassVar[tuple[str, ...]] = ("arm", "reward")

    def log_roles(self) -> dict[str, str | None]:
        """Role -> column name for every decision-log role this section names."""
        return {role: getattr(self, role) for role in LOG_COLUMNS if role in type(self).model_fields}

    def log_schema(self) -> Schema:
        roles = self.log_roles()
        required = {role: name for role, name in roles.items() if role in self.required_roles}
        optional = {role: name for role, name in roles.items() if role not in self.required_roles}
        return log_schema(required, optional)

    def input_tables(self) -> dict[Any, Schema]:
        return {self.logs: self.log_schema()}
