"""The result schema: one shape for report.json, the pod's termination message and CR status."""

from __future__ import annotations

import json
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Kubernetes truncates termination messages at 4096 bytes.
TERMINATION_MESSAGE_LIMIT = 4096


class ReportModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Artifact(ReportModel):
    name: str = Field(description="File name inside the output location.")
    uri: str = Field(description="Where the file was stored.")
    sha256: str = Field(description="SHA-256 of the file's bytes, hex.")
    bytes: int = Field(ge=0, description="File size.")


class Figures(ReportModel):
    """What one model measured on the node that ran the job."""

    bytes: int = Field(ge=0, description="Model size on disk, external data included.")
    parameters: int | None = Field(default=None, ge=0, description="Parameter count.")
    sparsity: float | None = Field(default=None, description="Fraction of zero weights.")
    compressed_bytes: int | None = Field(
        default=None, description="Size after generic compression (shows what sparsity buys)."
    )
    latency_ms_p50: float = Field(description="Median latency per batch, milliseconds.")
    latency_ms_p95: float = Field(description="95th percentile latency per batch, milliseconds.")
    throughput: float = Field(description="Samples per second.")
    metric: float | None = Field(default=None, description="The task metric's value.")


class EvaluationData(StrEnum):
    """What the quality metric was measured on."""

    user = "user"  # spec.data.evaluation
    builtin_text = "builtin-text"  # kondense's own corpus of sentences, tokenized
    builtin_images = "builtin-images"  # kondense's own generated images
    synthetic = "synthetic"  # random inputs of the model's shapes: only gross breakage shows


class CpuInfo(ReportModel):
    """The CPU a result was measured on, as far as INT8 speed and accuracy depend on it."""

    model: str = Field(description="The CPU's model name.")
    int8_dot_product: str = Field(
        description="The fastest integer dot-product instructions it has: amx, avx512-vnni, "
        "avx-vnni, avx2, arm-dotprod or none."
    )
    flags: list[str] = Field(
        default_factory=list, description="The INT8-relevant instruction-set flags present."
    )


class Results(ReportModel):
    baseline: Figures
    compressed: Figures
    metric_name: str
    metric_drop: float = Field(description="baseline.metric - compressed.metric (absolute).")
    size_ratio: float = Field(description="baseline.bytes / compressed.bytes.")
    speedup: float = Field(description="baseline.latencyMsP50 / compressed.latencyMsP50.")
    device: str = Field(description="cpu or cuda, and the execution provider used.")
    threads: int
    batch_size: int
    sequence_length: int | None = None
    evaluation_data: EvaluationData | None = Field(
        default=None,
        description="What the metric was measured on: user (spec.data.evaluation), "
        "builtin-text, builtin-images, or synthetic inputs (which only show gross breakage).",
    )
    evaluation_samples: int | None = Field(
        default=None, ge=0, description="How many samples the metric was measured on."
    )
    cpu: str | None = Field(
        default=None,
        description="The CPU that measured both models, '<model> (<int8 dot product>)': "
        "ratios from different CPUs are not comparable one to one.",
    )
    accepted: bool = Field(default=True, description="False when a quality/speed gate failed.")
    verdict: str | None = Field(
        default=None,
        description="Why the result was rejected, or what to know about an accepted one "
        "(measured without the user's data, fp16 speed not judged on a CPU).",
    )

    def measured_on(self) -> str:
        """What the metric was measured on, in words: '300 built-in sentences'."""
        samples = f"{self.evaluation_samples} " if self.evaluation_samples else ""
        kind = self.evaluation_data or EvaluationData.user
        return (
            samples
            + {
                EvaluationData.user: "samples of spec.data.evaluation",
                EvaluationData.builtin_text: "built-in sentences",
                EvaluationData.builtin_images: "built-in generated images",
                EvaluationData.synthetic: "synthetic inputs",
            }[kind]
        )


class StepTiming(ReportModel):
    name: str
    seconds: float
    notes: dict[str, float | int | str] | None = Field(
        default=None, description="What the step reports of itself (e.g. achieved sparsity)."
    )


class Environment(ReportModel):
    """Where a report was made, to reproduce or explain its figures."""

    python: str
    packages: dict[str, str] = Field(
        default_factory=dict,
        description="Versions of kondense and the libraries whose kernels the figures depend on.",
    )
    cpu: CpuInfo | None = Field(default=None, description="The CPU the result was measured on.")


class Report(ReportModel):
    artifacts: list[Artifact] = Field(default_factory=list)
    environment: Environment | None = None
    results: Results | None = None
    steps: list[StepTiming] = Field(default_factory=list)


class Outcome(ReportModel):
    """What the runner pod leaves in its termination message and the operator copies to status."""

    succeeded: bool
    reason: str = Field(description="CamelCase reason, e.g. Succeeded, BadInput, ResultRejected.")
    message: str = Field(description="One human sentence.")
    results: Results | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    artifacts_omitted: int | None = Field(
        default=None,
        ge=1,
        description="Artifacts left out of `artifacts` to fit the 4 KiB termination message; "
        "report.json in the output lists them all.",
    )


def termination_message(outcome: Outcome) -> str:
    """Compact JSON under the kubelet's 4 KiB limit: artifacts (counted in artifactsOmitted),
    then the message, are trimmed."""
    data = outcome.to_json_dict()
    text = json.dumps(data, separators=(",", ":"))
    while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and data.get("artifacts"):
        data["artifacts"] = data["artifacts"][:-1]  # type: ignore[index]
        data["artifactsOmitted"] = len(outcome.artifacts) - len(data["artifacts"])  # type: ignore[arg-type]
        text = json.dumps(data, separators=(",", ":"))
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        data["message"] = str(data["message"])[:512]
        text = json.dumps(data, separators=(",", ":"))
    return text
