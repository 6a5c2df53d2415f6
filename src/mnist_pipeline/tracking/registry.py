"""The MLflow model registry: a registered model's versions with their tags, and the alias on one of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.tracking.store import guarded


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    source: str  # the logged model it registers (models:/<model_id>)
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.number}"


def _version(mv) -> Version:
    return Version(
        name=mv.name, number=int(mv.version), source=mv.source, run_id=mv.run_id or "", tags=dict(mv.tags or {})
    )


@guarded("listing the registered model's versions")
def versions(name: str) -> list[Version]:
    """Every version of registered model `name`, oldest first ([] if it does not exist)."""
    quoted = name.replace("'", "\\'")
    found = MlflowClient().search_model_versions(f"name = '{quoted}'")
    return sorted((_version(mv) for mv in found), key=lambda v: v.number)


@guarded("reading the registry alias")
def holder(name: str, alias: str) -> Version | None:
    """The version `alias` points to, or None (no such model or alias)."""
    try:
        return _version(MlflowClient().get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@guarded("registering the model")
def register(model_uri: str, name: str, tags: Mapping[str, str]) -> Version:
    """The version of `name` registering `model_uri`: the existing one if it was registered before (a
    model is never registered twice), else a new version carrying `tags`."""
    for version in versions(name):
        if version.source == model_uri:
            return version
    created = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    return _version(MlflowClient().get_model_version(name, created.version))


@guarded("moving the registry alias")
def set_alias(name: str, alias: str, number: int) -> None:
    MlflowClient().set_registered_model_alias(name, alias, str(number))
