"""The operator's configuration: the node pools runner pods are sent to.

A YAML file (the Helm chart renders it into a ConfigMap mounted at /etc/kondense/config.yaml):

    pools:
      cpu:
        nodeSelector: {kondense.dev/pool: cpu}
        tolerations: []
        resources: {requests: {cpu: "1", memory: 2Gi}, limits: {memory: 8Gi}}
        image: ghcr.io/kondense/kondense-runner-cpu:0.1.0
      gpu:
        nodeSelector: {kondense.dev/pool: gpu}
        tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
        resources: {limits: {nvidia.com/gpu: "1"}}
        image: ghcr.io/kondense/kondense-runner-gpu:0.1.0
    backoffLimit: 2          # retries of a transient runner failure (optional)

Optional per pool, for tests, benchmarks and local clusters: `command` replaces the runner
command (`kondense run --job-env KONDENSE_JOB --termination-log /dev/termination-log`),
`env` adds variables, and `workingDir` sets the runner's working directory, which relative
URIs in a spec resolve against (a relative workingDir is relative to the config file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The manifest reaches the runner in this variable; the runner writes its outcome to this file.
JOB_ENV = "KONDENSE_JOB"
TERMINATION_LOG = "/dev/termination-log"
DEFAULT_RUNNER_COMMAND = [
    "kondense",
    "run",
    "--job-env",
    JOB_ENV,
    "--termination-log",
    TERMINATION_LOG,
]


class ConfigModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class PoolConfig(ConfigModel):
    """Where and how runner pods of one pool run."""

    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)
    image: str = Field(min_length=1)
    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = Field(default=None, alias="workingDir")

    def runner_command(self) -> list[str]:
        return list(self.command or DEFAULT_RUNNER_COMMAND)


class OperatorConfig(ConfigModel):
    pools: dict[str, PoolConfig] = Field(min_length=1)
    backoff_limit: int = Field(default=2, ge=0, le=10, alias="backoffLimit")


class ConfigError(ValueError):
    """The configuration file is unusable; the message names the key."""


def parse_config(document: Any, source: str, base_dir: Path | None = None) -> OperatorConfig:
    """The configuration in `document` (already parsed YAML); ConfigError naming the key."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping with a `pools` key")
    try:
        config = OperatorConfig.model_validate(document)
    except ValidationError as error:
        problems = [
            f"{source}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        ]
        raise ConfigError("\n".join(problems)) from error
    if base_dir is None:
        return config
    pools = {
        name: pool.model_copy(update={"working_dir": str(base_dir / pool.working_dir)})
        if pool.working_dir and not Path(pool.working_dir).is_absolute()
        else pool
        for name, pool in config.pools.items()
    }
    return config.model_copy(update={"pools": pools})


def load_config(path: Path) -> OperatorConfig:
    """Read the YAML configuration file at `path`."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the operator configuration: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    return parse_config(document, str(path), path.resolve().parent)
