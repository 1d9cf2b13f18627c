"""The run object of a stage when ``tracking.enabled`` is false."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metafgnet.tracking.models import DEFAULT_ALIAS


class NullRun:
    """Stands in for :class:`StageRun` when ``tracking.enabled`` is false: every call is a no-op."""

    enabled = False
    run_id = parent_run_id = experiment_id = tracking_uri = None

    def __init__(self, stage: str = ""):
        self.stage = stage

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, obj: Any, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def flush(self) -> None: ...

    def summarise_execution(self, metrics: Mapping[str, float], tags: Mapping[str, str],
                            stages: list[str]) -> None:
        return None

    def log_datasets(self, data) -> None: ...

    def log_model(self, model, name: str, input_example: Any,
                  metrics: Mapping[str, Any] | None = None):
        return None

    def register_model(self, model_uri: str, name: str | None = None,
                       alias: str = DEFAULT_ALIAS):
        return None
