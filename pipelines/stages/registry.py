"""The stage registry: a package adds a stage by registering one function and its config model.

    @register_stage("select-features", SelectFeaturesConfig, order=20, demo=demo_section)
    def select_features(context: StageContext, config: SelectFeaturesConfig) -> StageResult: ...

The stage gets a `StageContext` (seed, MLflow logger, earlier stages' results) and returns a `StageResult`
(headline figures for the summary table, files written, plain data for later stages). The registry gives every
stage a YAML section, a `campaign <name>` command and a place in `campaign demo`, in `order`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pipelines.config import StageConfig
from pipelines.tracking import EarlierRuns, StageLogger

C = TypeVar("C", bound=StageConfig)


@dataclass(frozen=True)
class StageResult:
    """What a stage hands back: headline figures, files written, and plain data for later stages."""

    summary: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    """What a running stage can use: the job seed, its MLflow logger and earlier stages' results."""

    seed: int
    log: StageLogger
    results: dict[str, StageResult] = field(default_factory=dict)
    date: dt.date | None = None  # the run date of a dated job
    earlier: EarlierRuns | None = None  # the same job's earlier dates (a dated job tracked in MLflow)

    def stage_seed(self, stage: str) -> int:
        """A seed for one stage derived from the job seed, stable across runs and schedulers."""
        digest = hashlib.sha256(f"{self.seed}:{stage}".encode()).digest()
        return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class DemoInputs:
    """What `campaign demo` gives every stage to build its section: the generated campaign and an output folder."""

    campaign_dir: Path
    out_dir: Path


@dataclass(frozen=True)
class Stage(Generic[C]):
    name: str
    config_model: type[C]
    run: Callable[[StageContext, C], StageResult]
    order: int
    help: str
    demo: Callable[[DemoInputs], dict[str, Any]] | None
    cli_aliases: dict[str, str]

    @property
    def field_name(self) -> str:
        """The stage's attribute on the job model ("select-features" -> "select_features"; YAML uses the name)."""
        return self.name.replace("-", "_")


_REGISTRY: dict[str, Stage[Any]] = {}


def register_stage(name: str, config_model: type[C], *, order: int,
                   demo: Callable[[DemoInputs], dict[str, Any]] | None = None,
                   cli_aliases: dict[str, str] | None = None
                   ) -> Callable[[Callable[[StageContext, C], StageResult]], Callable[[StageContext, C], StageResult]]:
    """Register a stage function under `name` (YAML section and CLI command); `order` places it in a job.

    `demo` builds the stage's section for `campaign demo` (None: the demo skips the stage);
    `cli_aliases` maps config fields to shorter option names (e.g. {"n_users": "users"}).
    """

    def decorator(function: Callable[[StageContext, C], StageResult]) -> Callable[[StageContext, C], StageResult]:
        if name in _REGISTRY and _REGISTRY[name].run is not function:
            raise ValueError(f"stage {name!r} is already registered")
        help_text = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else name
        _REGISTRY[name] = Stage(name, config_model, function, order, help_text, demo, dict(cli_aliases or {}))
        return function

    return decorator


def registered_stages() -> list[Stage[Any]]:
    """All stages, in job order (importing the stage modules registers them)."""
    import pipelines.stages  # noqa: F401  (registers the built-in stages)

    return sorted(_REGISTRY.values(), key=lambda stage: (stage.order, stage.name))


def get_stage(name: str) -> Stage[Any]:
    stages = {stage.name: stage for stage in registered_stages()}
    return stages[name]
