"""Job configuration: YAML validated by pydantic, one section per registered stage, paths relative to the file.

    seed: 7                       # every random choice in the job derives from it
    experiment: spring-campaign   # MLflow experiment
    columns: {user_id: customer, arm: offer, reward: converted}   # your decision log's column names
    generate: {out: data/campaign, n_users: 100000}
    profile-logs: {logs: data/campaign/logs, out: out/profile.csv}

Unknown keys are rejected by name; errors become one-line `InputError`s.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from pipelines.errors import InputError


def _resolve_relative(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir") if info.context else None
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = Path(base or Path.cwd()) / path
    return path.resolve()


#: A path in a config: relative paths are resolved against the directory of the YAML file (or the cwd on the CLI).
ConfigPath = Annotated[Path, AfterValidator(_resolve_relative)]


class StageConfig(BaseModel):
    """Base of every stage's config section: unknown keys are errors, values are immutable once validated.

    `retired_keys` maps keys that an earlier vocabulary used to what replaced them; a section that still uses one is
    refused with a message naming the replacement.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    retired_keys: ClassVar[dict[str, str]] = {}

    def output_paths(self) -> list[Path]:
        """Paths this stage will write, checked for writability before the job starts."""
        return [value for name, value in self if name in ("out", "output") and isinstance(value, Path)]

    def check_ready(self) -> None:
        """Checks of what the stage needs besides its tables (e.g. a model registry's state), run with the tables'
        checks before any stage starts; one-line InputErrors."""

    def reads_earlier_runs(self) -> bool:
        """Whether the stage reads what the same job's earlier dates left (a warm start from the previous date):
        a dated run's key then includes the earlier run it reads, so redoing that date redoes this one."""
        return False

    def input_tables(self) -> dict[Path, Any]:
        """Tables this stage reads, {path: pipelines.tables.Schema}: the job checks those that no earlier stage
        writes (existence, readable parquet, columns, types, not empty) before any stage runs."""
        return {}


class JobSettings(BaseModel):
    """Top-level keys of a job config besides the stage sections."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="root seed; each stage derives its own from it")
    experiment: str = Field("campaign", min_length=1, description="MLflow experiment name")
    run_name: str | None = Field(None, description="MLflow run name (default: the config file's name)")
    date: dt.date | None = Field(None, description="the run date of a daily job (YYYY-MM-DD): fills the {date} "
                                                   "templates of the paths; a rerun of a finished date is a no-op")
    columns: dict[str, str | None] = Field(
        default_factory=dict, description="decision-log role (arm, reward, propensity, user_id, cost, day, "
                                          "randomized) -> its column in your logs (null: your logs have none); "
                                          "every stage section that takes the role and does not name it uses it")


def format_validation_error(error: pydantic.ValidationError, where: str = "config") -> str:
    """One line: the first problem with its dotted location, and how many more there are."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        section, _, key = location.rpartition(".")
        message = f"{where}: unknown key {key!r}" + (f" in section {section!r}" if section else " at top level")
    else:
        got = first.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        message = f"{where}: {location}: {first['msg']}{shown}" if location else f"{where}: {first['msg']}"
    extra = error.error_count() - 1
    return message + (f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else "")


def check_retired_keys(section: str, config_model: type[StageConfig], values: Any) -> None:
    """One-line InputError when a stage section uses a retired key, naming what replaced it."""
    if not isinstance(values, dict):
        return
    for key, replacement in config_model.retired_keys.items():
        if key in values:
            raise InputError(f"config: key {key!r} in section {section!r} is retired: {replacement}")


def validate_section(model: type[BaseModel], data: Any, *, where: str, base_dir: Path | None = None) -> BaseModel:
    """Validate one mapping against a pydantic model; `InputError` with a one-line message on failure."""
    try:
        return model.model_validate(data, context={"base_dir": base_dir or Path.cwd()})
    except pydantic.ValidationError as error:
        raise InputError(format_validation_error(error, where)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a job file into a mapping; missing, unreadable or non-mapping files are one-line errors."""
    if not path.is_file():
        raise InputError(f"config: file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as error:
        raise InputError(f"config: cannot parse {path}: {str(error).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"config: {path} must be a mapping of sections, got {type(data).__name__}")
    return data
