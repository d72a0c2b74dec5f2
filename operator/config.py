"""The operator's configuration: the node pools runner pods are sent to, the device each
provides, and which pool runs a recipe that needs a given device class.

A YAML file (the Helm chart renders it into a ConfigMap mounted at /etc/kondense/config.yaml):

    pools:
      cpu:
        nodeSelector: {kondense.dev/pool: cpu}
        tolerations: []
        resources: {requests: {cpu: "1", memory: 2Gi}, limits: {memory: 8Gi}}
        image: ghcr.io/kondense/kondense-runner-cpu:0.1.0
      gpu:
        device: gpu            # what the pool's nodes provide: gpu or cpu (the default)
        nodeSelector: {kondense.dev/pool: gpu}
        tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
        resources: {limits: {nvidia.com/gpu: "1"}}
        image: ghcr.io/kondense/kondense-runner-gpu:0.1.0
    devicePools: {gpu: gpu, cpu: cpu}   # device class -> pool (optional; this is the default)
    backoffLimit: 2          # retries of a transient runner failure (optional)

Each pool named in devicePools must exist and provide that device class. Without devicePools,
a device class goes to the pool named like it when there is one. A device class with no pool
(a CPU-only cluster) has no default; recipes that need it must name a pool in spec.nodePool
that provides it.

Optional per pool, for tests, benchmarks and local clusters: `command` replaces the runner
command (`kondense run --job-env KONDENSE_JOB --termination-log /dev/termination-log`),
`env` adds variables, and `workingDir` sets the runner's working directory, which relative
URIs in a spec resolve against (a relative workingDir is relative to the config file).
Only a pool with `workingDir` runs jobs with file:// or relative URIs: elsewhere the runner pod
has no such files, so the operator refuses them when it reconciles the job.

Optional per pool, for production platforms: `serviceAccountName` (the runner pods' identity,
e.g. for IRSA or Workload Identity, unless a job names its own), `imagePullSecrets` (names),
`envFrom` (ConfigMaps or Secrets of the job's namespace, as Kubernetes EnvFromSource objects;
a job's spec.storage.secretRef comes after them, so its keys win),
`jobLabels` and `jobAnnotations` (on runner Jobs and their pods), `podSecurityContext` and
`containerSecurityContext` (merged over the restricted defaults: a platform that assigns UIDs
sets `runAsUser: null`), and `tmpSizeLimit`/`workSizeLimit` (the emptyDirs' sizeLimit).

Queueing with Kueue, per pool: `queueName` names the LocalQueue (in each job's namespace) that
admits the pool's runner Jobs, unless a job names its own in spec.queueName; a
`kueue.x-k8s.io/queue-name` in `jobLabels` does the same. Such a Job is created suspended, with
that label, and Kueue starts it when its ClusterQueue has quota (operator/queueing.py).

Fetching, per pool: `allowHttp` (plain http:// downloads), `allowPrivateNetworks` (downloads
from private, loopback and unique-local addresses; link-local and cloud metadata addresses are
always refused), `maxDownloadBytes` (the default cap of one download; spec.storage overrides)
and `downloadTimeoutSeconds`. They reach the runner as KONDENSE_* variables (runners/io/fetch.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kondense.api.spec import (
    DEFAULT_DOWNLOAD_TIMEOUT_SECONDS,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    QUANTITY_PATTERN,
)
from kondense.api.steps import DeviceClass

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

    device: DeviceClass = Field(
        default=DeviceClass.cpu, description="What the pool's nodes provide: gpu or cpu."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)
    image: str = Field(min_length=1)
    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = Field(default=None, alias="workingDir")
    service_account_name: str | None = Field(
        default=None, alias="serviceAccountName", pattern=DNS_SUBDOMAIN
    )
    image_pull_secrets: list[str] = Field(default_factory=list, alias="imagePullSecrets")
    env_from: list[dict[str, Any]] = Field(default_factory=list, alias="envFrom")
    job_labels: dict[str, str] = Field(default_factory=dict, alias="jobLabels")
    job_annotations: dict[str, str] = Field(default_factory=dict, alias="jobAnnotations")
    queue_name: str | None = Field(
        default=None, alias="queueName", max_length=63, pattern=DNS_LABEL
    )
    pod_security_context: dict[str, Any] = Field(default_factory=dict, alias="podSecurityContext")
    container_security_context: dict[str, Any] = Field(
        default_factory=dict, alias="containerSecurityContext"
    )
    tmp_size_limit: str = Field(default="16Gi", alias="tmpSizeLimit", pattern=QUANTITY_PATTERN)
    work_size_limit: str = Field(default="64Gi", alias="workSizeLimit", pattern=QUANTITY_PATTERN)
    allow_http: bool = Field(default=False, alias="allowHttp")
    allow_private_networks: bool = Field(default=False, alias="allowPrivateNetworks")
    max_download_bytes: int = Field(
        default=DEFAULT_MAX_DOWNLOAD_BYTES, ge=1, alias="maxDownloadBytes"
    )
    download_timeout_seconds: int = Field(
        default=DEFAULT_DOWNLOAD_TIMEOUT_SECONDS, ge=1, le=86400, alias="downloadTimeoutSeconds"
    )

    def runner_command(self) -> list[str]:
        return list(self.command or DEFAULT_RUNNER_COMMAND)


class OperatorConfig(ConfigModel):
    pools: dict[str, PoolConfig] = Field(min_length=1)
    # None: each device class goes to the pool named like it (gpu, cpu), where there is one.
    device_pools: dict[DeviceClass, str] | None = Field(default=None, alias="devicePools")
    backoff_limit: int = Field(default=2, ge=0, le=10, alias="backoffLimit")

    @model_validator(mode="after")
    def _device_pools_exist(self) -> OperatorConfig:
        for device, name in self.device_map().items():
            pool = self.pools.get(name)
            if pool is None:
                known = ", ".join(sorted(self.pools))
                raise ValueError(
                    f"devicePools.{device.value}: no pool {name!r} is configured; "
                    f"use one of {known}"
                )
            if pool.device is not device:
                raise ValueError(
                    f"devicePools.{device.value}: pool {name!r} provides {pool.device.value}, "
                    f"not {device.value}; set pools.{name}.device: {device.value} or map "
                    "another pool"
                )
        return self

    def pool_for(self, device: DeviceClass) -> str | None:
        """The pool a recipe needing `device` runs on when spec.nodePool is not set (None: this
        cluster has none, e.g. a CPU-only cluster that leaves gpu out of devicePools)."""
        return self.device_map().get(device)

    def device_map(self) -> dict[DeviceClass, str]:
        if self.device_pools is not None:
            return self.device_pools
        return {device: device.value for device in DeviceClass if device.value in self.pools}


# Storage credentials the runner's S3 client (s3fs, botocore) reads from its environment.
CREDENTIAL_ENV_PREFIX = "AWS_"


def credential_env_warnings(config: OperatorConfig) -> list[str]:
    """What to tell the admin about pools whose plain `env` sets storage credentials: Kubernetes
    puts a container's env above its envFrom, so those keys override the same keys of every
    job's spec.storage.secretRef, silently. Legitimate for a single-tenant or local cluster, so
    a warning, not an error."""
    warnings = []
    for name, pool in sorted(config.pools.items()):
        keys = sorted(key for key in pool.env if key.startswith(CREDENTIAL_ENV_PREFIX))
        if keys:
            warnings.append(
                f"pools.{name}.env sets {', '.join(keys)}: Kubernetes puts env above envFrom, so"
                f" these override the same keys in every job's spec.storage.secretRef on pool"
                f" {name}; to let jobs bring their own credentials, move them to a Secret named in"
                f" pools.{name}.envFrom"
            )
    return warnings


class ConfigError(ValueError):
    """The configuration file is unusable; the message names the key."""


def parse_config(document: Any, source: str, base_dir: Path | None = None) -> OperatorConfig:
    """The configuration in `document` (already parsed YAML); ConfigError naming the key."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping with a `pools` key")
    try:
        config = OperatorConfig.model_validate(document)
    except ValidationError as error:
        problems = [_problem(source, e) for e in error.errors()]
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


def _problem(source: str, error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


def load_config(path: Path) -> OperatorConfig:
    """Read the YAML configuration file at `path`."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the operator configuration: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    return parse_config(document, str(path), path.resolve().parent)
