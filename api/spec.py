"""The CompressionJob recipe: one declaration per field, shared by the CLI, the runner and the CRD.

Every field carries its type, default, bounds and a description written for `kubectl explain`
readers. The CRD's OpenAPI schema is generated from these models, so edit them here only.
Field names in manifests are camelCase (Kubernetes convention); Python code uses snake_case.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

API_GROUP = "kondense.dev"
API_VERSION = "v1alpha1"
KIND = "CompressionJob"
DEFAULT_TIMEOUT_SECONDS = 3600
# pvc://claim/path resolves to <root>/claim/path: the operator mounts each claim there and the
# runner reads KONDENSE_PVC_ROOT, which defaults to this.
DEFAULT_PVC_ROOT = "/mnt/pvc"
# One download's cap and time limit, unless the pool or spec.storage says otherwise.
DEFAULT_MAX_DOWNLOAD_BYTES = 8 * 1024**3  # 8 GiB: ONNX protobufs stop at 2 GiB
DEFAULT_DOWNLOAD_TIMEOUT_SECONDS = 1800
# Names of Secrets and ServiceAccounts (a DNS subdomain), and of node pools (a DNS label).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A URI neither starts nor ends with whitespace (and so is never whitespace only).
URI_PATTERN = r"^\S(.*\S)?$"
# Input shapes: a dimension and a whole tensor stay allocatable (1 GiB of float32).
MAX_DIMENSION = 1 << 20
MAX_TENSOR_ELEMENTS = 1 << 28


class SpecModel(BaseModel):
    """Base for every spec object: camelCase in manifests, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        frozen=True,
    )


# --- the model -------------------------------------------------------------------------------


class ModelFormat(StrEnum):
    onnx = "onnx"
    huggingface = "huggingface"
    torchscript = "torchscript"
    exported_program = "exported-program"
    safetensors = "safetensors"


class Task(StrEnum):
    text_embedding = "text-embedding"
    text_classification = "text-classification"
    image_classification = "image-classification"
    generic = "generic"


class DType(StrEnum):
    float32 = "float32"
    float16 = "float16"
    int64 = "int64"
    int32 = "int32"
    bool = "bool"


class TensorSpec(SpecModel):
    name: str = Field(min_length=1, description="Input name as the model declares it.")
    shape: list[Annotated[int, Field(ge=1, le=MAX_DIMENSION)]] = Field(
        min_length=1,
        max_length=8,
        description=(
            "Concrete shape used for synthetic inputs and benchmarking, e.g. [1, 3, 224, 224]. "
            "The first dimension is the batch size. Each dimension is at most 1048576 and "
            "the whole tensor at most 268435456 elements."
        ),
    )
    dtype: DType = Field(default=DType.float32, description="Element type of the input.")

    @model_validator(mode="after")
    def _allocatable(self) -> TensorSpec:
        elements = 1
        for dimension in self.shape:
            elements *= dimension
        if elements > MAX_TENSOR_ELEMENTS:
            raise ValueError(
                f"shape {self.shape} of input {self.name!r} has {elements} elements, over the "
                f"{MAX_TENSOR_ELEMENTS} a runner allocates; use a smaller shape"
            )
        return self


# 'package.module:function', as entry points name a callable.
ARCHITECTURE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
# A network defined in code (models and distillation students alike): the callable's name,
# and the keyword arguments it gets (any JSON, so the CRD keeps them unpruned).
Architecture = Annotated[str, Field(max_length=256, pattern=ARCHITECTURE_PATTERN)]
ArchitectureArgs = Annotated[
    dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
]


class ModelSource(SpecModel):
    uri: str = Field(
        min_length=1,
        max_length=4096,
        pattern=URI_PATTERN,
        description=(
            "Where the model is: a local path or file://, s3://, pvc:// or https:// URI. "
            "A Hugging Face model is a directory (config.json + safetensors + tokenizer); "
            "ONNX, TorchScript and torch.export (.pt2) models are single files. "
            "Pickled checkpoints (.pt/.bin state dicts) are refused: they can execute code."
        ),
    )
    format: ModelFormat | None = Field(
        default=None,
        description="onnx, huggingface, torchscript, exported-program or safetensors; detected "
        "from the file when omitted.",
    )
    architecture: Architecture | None = Field(
        default=None,
        description=(
            "safetensors models: the callable that builds the network, as "
            "'package.module:function', importable in the runner's environment. It returns "
            "the torch.nn.Module whose weights the safetensors file holds; nothing is unpickled."
        ),
    )
    architecture_args: ArchitectureArgs | None = Field(
        default=None,
        description="safetensors models: keyword arguments passed to the architecture callable.",
    )
    task: Task = Field(
        default=Task.generic,
        description=(
            "What the model does, which picks the quality metric: text-embedding (cosine to "
            "the original embeddings), text-classification and image-classification (top-1 "
            "accuracy with labels, agreement with the original without), generic (output "
            "cosine and agreement against the original)."
        ),
    )
    inputs: list[TensorSpec] | None = Field(
        default=None,
        max_length=32,
        description=(
            "Input names, shapes and types. Fixes dynamic dimensions for benchmarking and "
            "synthetic data; required for TorchScript and exported-program models without "
            "data. Each name appears once."
        ),
        # The apiserver refuses a duplicate name itself (a list map keyed by name).
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _unique_inputs(self) -> ModelSource:
        names = [tensor.name for tensor in self.inputs or []]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"spec.model.inputs: input names appear more than once: {', '.join(duplicates)}; "
                "list each input once"
            )
        return self


# --- data ------------------------------------------------------------------------------------


class DataSource(SpecModel):
    uri: str = Field(
        min_length=1,
        max_length=4096,
        pattern=URI_PATTERN,
        description=(
            "A .npz file (arrays named like the model inputs, optional 'labels') or a .jsonl "
            'file of {"text": ..., "label": ...} lines tokenized with the model\'s own '
            "tokenizer. Local path or file://, s3://, pvc://, https://."
        ),
    )
    samples: int = Field(
        default=300,
        ge=1,
        le=100_000,
        description="How many samples to read from the start of the file.",
    )


class Data(SpecModel):
    calibration: DataSource | None = Field(
        default=None,
        description="Representative inputs for static INT8 calibration (100-1000 samples).",
    )
    evaluation: DataSource | None = Field(
        default=None,
        description="Held-out inputs (and labels) for the quality metric. Synthetic inputs "
        "from spec.model.inputs are used when omitted.",
    )
    training: DataSource | None = Field(
        default=None,
        description="Training data for fine-tuning after pruning and for distillation.",
    )


# --- steps -----------------------------------------------------------------------------------


class ExportConfig(SpecModel):
    opset: int = Field(default=17, ge=17, le=23, description="ONNX opset version to export.")
    dynamic_axes: bool = Field(
        default=True,
        description="Export batch and sequence dimensions as dynamic axes.",
    )


class OptimizeLevel(StrEnum):
    basic = "basic"
    extended = "extended"
    all = "all"


class TransformerFusion(StrEnum):
    auto = "auto"
    bert = "bert"
    off = "off"


class OptimizeConfig(SpecModel):
    level: OptimizeLevel = Field(
        default=OptimizeLevel.extended,
        description=(
            "ONNX Runtime offline graph optimization level: basic (constant folding, "
            "redundant node removal), extended (plus operator fusions), all (plus layout "
            "optimizations, which tie the saved model to the machine that produced it)."
        ),
    )
    transformer: TransformerFusion = Field(
        default=TransformerFusion.auto,
        description=(
            "Transformer fusion (attention, layer norm, GELU): auto applies it to BERT-like "
            "models, with heads and hidden size read from the model's config, except before "
            "INT8 quantization (the unfused graph quantizes to a smaller, faster model); bert "
            "forces it; off skips it."
        ),
    )


class QuantizeMode(StrEnum):
    auto = "auto"
    dynamic = "dynamic"
    static = "static"
    fp16 = "fp16"


class CalibrationMethod(StrEnum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class QuantizeConfig(SpecModel):
    mode: QuantizeMode = Field(
        default=QuantizeMode.auto,
        description=(
            "auto (the default): INT8 chosen per operator type on the CPU it runs on: dynamic "
            "for transformer MatMuls, static per-channel for convolutions when calibration "
            "data (or a built-in set) fits the inputs, float for what measures no faster in "
            "INT8 or changes the outputs (agreement under 0.99); when nothing is kept the step "
            "fails (exit 3) with the figures. "
            "dynamic: INT8 weights, activations quantized at run time (no data needed). "
            "static: INT8 weights and activations (QDQ) calibrated on spec.data.calibration. "
            "fp16: half-precision weights and compute, for GPUs."
        ),
    )
    per_channel: bool = Field(
        default=True,
        description="Quantize weights per output channel (INT8 modes); keeps accuracy.",
    )
    calibration_method: CalibrationMethod = Field(
        default=CalibrationMethod.minmax,
        description="How static INT8 picks activation ranges: minmax, entropy or percentile.",
    )
    keep_io_types: bool = Field(
        default=True,
        description="fp16: keep float32 model inputs and outputs so callers need no change.",
    )
    op_block_list: list[str] | None = Field(
        default=None,
        max_length=64,
        description="fp16: operator types kept in float32 (added to the built-in list of ops "
        "without fp16 kernels).",
    )
    exclude_nodes: list[str] | None = Field(
        default=None,
        max_length=1024,
        description="INT8: node names left in float32.",
    )
    keep_float: int = Field(
        default=3,
        ge=0,
        le=64,
        description="Dynamic INT8: at most this many weighted operators stay in float32: those "
        "whose quantization measurably costs the most accuracy on tuning data, kept only while "
        "the output cosine there is under 0.99. 0 quantizes every one and skips the measurement.",
    )


class PruneMethod(StrEnum):
    magnitude = "magnitude"
    structured = "structured"


class PruneScope(StrEnum):
    local = "local"
    global_ = "global"


class FineTune(SpecModel):
    epochs: int = Field(default=3, ge=0, le=1000, description="Passes over spec.data.training.")
    learning_rate: float = Field(default=1e-3, gt=0, le=1, description="Optimizer step size.")
    batch_size: int = Field(default=32, ge=1, le=4096, description="Training batch size.")
    max_train_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Time budget: training stops cleanly when spent and keeps the best "
        "checkpoint so far.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="Random seed for initialisation and batch order: the same seed, data and "
        "settings give the same trained model.",
    )


class PruneConfig(SpecModel):
    method: PruneMethod = Field(
        default=PruneMethod.magnitude,
        description=(
            "magnitude: zero the smallest weights (unstructured; smaller when compressed, no "
            "faster on dense runtimes). structured: remove whole channels/filters/heads, giving "
            "a physically smaller, faster dense model."
        ),
    )
    amount: float = Field(
        ge=0,
        lt=1,
        description="Fraction of weights (magnitude) or channels (structured) to remove, in "
        "[0, 1).",
    )
    scope: PruneScope = Field(
        default=PruneScope.local,
        description="magnitude: local prunes each layer by amount; global ranks all chosen "
        "layers together.",
    )
    module_types: list[str] = Field(
        default_factory=lambda: ["Linear", "Conv2d"],
        min_length=1,
        description="PyTorch module types to prune, e.g. Linear, Conv2d.",
    )
    fine_tune: FineTune | None = Field(
        default=None,
        description="Fine-tune on spec.data.training after pruning to recover accuracy.",
    )


class DistillMode(StrEnum):
    soft_targets = "soft-targets"
    task_specific = "task-specific"


class StudentSource(SpecModel):
    uri: str | None = Field(
        default=None,
        max_length=4096,
        pattern=URI_PATTERN,
        description="A student model to train: a Hugging Face directory, or a .safetensors "
        "file with student.architecture. When omitted the student is derived from the teacher.",
    )
    architecture: Architecture | None = Field(
        default=None,
        description=(
            "A student defined in code, as 'package.module:function' importable in the runner's "
            "environment. With student.uri, the network its .safetensors weights are loaded "
            "into; without, the student starts from the function's own initialisation."
        ),
    )
    architecture_args: ArchitectureArgs | None = Field(
        default=None, description="Keyword arguments passed to student.architecture."
    )
    keep_every: int = Field(
        default=2,
        ge=1,
        le=24,
        description="BERT-like teachers: keep every k-th transformer layer, initialised from "
        "the teacher.",
    )
    width: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="CNN teachers: fraction of channels the derived student keeps.",
    )
    init_from_teacher: bool = Field(
        default=True,
        description="A derived student starts from the teacher's surviving weights; false "
        "re-initialises them at random (seeded by training.seed), e.g. to measure what "
        "distillation alone adds.",
    )


class DistillConfig(SpecModel):
    mode: DistillMode = Field(
        default=DistillMode.soft_targets,
        description=(
            "soft-targets: L = alpha*CE(y, s) + (1-alpha)*T^2*KL(softmax(t/T) || softmax(s/T)) "
            "on labelled data. task-specific: the teacher's outputs on unlabelled domain data "
            "are the only targets (embeddings are matched by cosine)."
        ),
    )
    student: StudentSource = Field(default_factory=StudentSource, description="The student model.")
    temperature: float = Field(default=4.0, ge=1, le=20, description="Softening temperature T.")
    alpha: float = Field(
        default=0.3, ge=0, le=1, description="Weight of the hard-label loss; 1-alpha weights KL."
    )
    training: FineTune = Field(default_factory=FineTune, description="Training settings.")


class Step(SpecModel):
    """One step of the recipe: exactly one of the keys is set."""

    export: ExportConfig | None = Field(default=None, description="PyTorch model to ONNX.")
    optimize: OptimizeConfig | None = Field(
        default=None, description="ONNX Runtime graph optimization and transformer fusion."
    )
    quantize: QuantizeConfig | None = Field(
        default=None, description="INT8 (dynamic, static) or FP16 quantization."
    )
    prune: PruneConfig | None = Field(default=None, description="Magnitude or structured pruning.")
    distill: DistillConfig | None = Field(
        default=None, description="Knowledge distillation into a smaller student."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        if len(self.set_keys()) != 1:
            raise ValueError(f"each step sets exactly one of {', '.join(type(self).model_fields)}")
        return self

    def set_keys(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name) is not None]

    @property
    def name(self) -> str:
        return self.set_keys()[0]

    @property
    def config(self) -> SpecModel:
        value = getattr(self, self.name)
        assert isinstance(value, SpecModel)
        return value


# --- evaluation and output -------------------------------------------------------------------


class Metric(StrEnum):
    auto = "auto"
    cosine = "cosine"
    accuracy = "accuracy"
    agreement = "agreement"


class Evaluation(SpecModel):
    metric: Metric = Field(
        default=Metric.auto,
        description=(
            "Quality metric: auto picks cosine for text-embedding, accuracy for classifiers "
            "with labels, agreement otherwise."
        ),
    )
    max_metric_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Largest tolerated drop of the metric from baseline to result (absolute). "
        "The job fails, keeping the artifact marked rejected, when exceeded.",
    )
    require_speedup: bool = Field(
        default=True,
        description="Fail the job when the result is slower than its baseline.",
    )
    batch_size: int = Field(default=1, ge=1, le=1024, description="Benchmark batch size.")
    sequence_length: int = Field(
        default=128, ge=1, le=8192, description="Benchmark sequence length for text models."
    )
    threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Intra-op threads for benchmarking; 0 uses the CPUs available to the job.",
    )
    warmup: int = Field(default=10, ge=0, le=10_000, description="Untimed runs before timing.")
    runs: int = Field(default=100, ge=1, le=100_000, description="Timed runs.")
    samples: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Measure the metric on at most this many samples of the evaluation data "
        "(the user's or the built-in set); all of them when unset. A CompressionSearch screens "
        "its candidates on a few.",
    )


class Output(SpecModel):
    uri: str = Field(
        min_length=1,
        max_length=4096,
        pattern=URI_PATTERN,
        description="Where artifacts and report.json go: local path or file://, s3://, pvc://.",
    )


# A Kubernetes resource quantity (apimachinery's resource.Quantity), as the CRD checks it: the
# runner Job of a spec with `cpu: banana` would be refused by the apiserver and never run.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


class Resources(SpecModel):
    cpu: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        description="CPU request and limit, a Kubernetes quantity, e.g. '2' or '500m'.",
    )
    memory: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        description="Memory request and limit, a Kubernetes quantity, e.g. '4Gi'.",
    )


class SecretReference(SpecModel):
    name: str = Field(
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of a Secret in the CompressionJob's own namespace.",
    )


class Storage(SpecModel):
    secret_ref: SecretReference | None = Field(
        default=None,
        description=(
            "A Secret in the job's namespace whose keys become the runner's environment "
            "(envFrom), e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL. "
            "The operator never reads it; the kubelet injects it into the runner pod."
        ),
    )
    max_download_bytes: int | None = Field(
        default=None,
        ge=1,
        le=1 << 40,
        description="Largest download (model, data file) in bytes; the pool's "
        "maxDownloadBytes when unset. A bigger object is refused before it fills the disk.",
    )


class CompressionJobSpec(SpecModel):
    """What to compress, how, and how to judge the result."""

    model: ModelSource = Field(description="The model to compress.")
    data: Data = Field(
        default_factory=Data, description="Calibration, evaluation and training data."
    )
    steps: list[Step] = Field(
        min_length=1, max_length=16, description="Compression steps, run in order."
    )
    evaluation: Evaluation = Field(
        default_factory=Evaluation, description="How baseline and result are compared."
    )
    output: Output = Field(description="Where the artifacts go.")
    node_pool: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Node pool to run on (cluster only), by the name the operator's "
        "configuration gives it; when omitted the operator picks its pool for the device the "
        "recipe needs (a GPU for fp16, a CPU otherwise).",
    )
    timeout_seconds: int = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        ge=60,
        le=7 * 24 * 3600,
        description="Wall-clock limit for the whole recipe. The runner stops itself when it is "
        "spent, with reason DeadlineExceeded and the stage it was in; in a cluster the runner "
        "Job's activeDeadlineSeconds, 60 s later, is the backstop.",
    )
    resources: Resources | None = Field(
        default=None, description="Runner pod resources, overriding the node pool's defaults."
    )
    storage: Storage | None = Field(
        default=None,
        description="Where the runner's storage credentials come from, and download limits.",
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description=(
            "ServiceAccount of the runner pod, in the job's namespace: its cloud identity "
            "(IRSA, Workload Identity) reaches the buckets. The pool's serviceAccountName when "
            "unset."
        ),
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description=(
            "Kueue LocalQueue, in the job's namespace, that admits the runner Job (cluster "
            "only): the Job is created suspended with the label kueue.x-k8s.io/queue-name and "
            "starts when Kueue admits it. The pool's queueName when unset."
        ),
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> CompressionJobSpec:
        problems = cross_field_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def steps_named(self, name: str) -> list[SpecModel]:
        return [step.config for step in self.steps if step.name == name]

    def uris(self) -> list[tuple[str, str, bool]]:
        """Every URI in the spec as (field path, uri, written): the model, each data source,
        each distillation student, and the output (the only one written)."""
        found = [("spec.model.uri", self.model.uri, False)]
        for field in ("calibration", "evaluation", "training"):
            source = getattr(self.data, field)
            if source is not None:
                found.append((f"spec.data.{field}.uri", source.uri, False))
        for index, step in enumerate(self.steps):
            if step.distill is not None and step.distill.student.uri:
                found.append(
                    (f"spec.steps[{index}].distill.student.uri", step.distill.student.uri, False)
                )
        found.append(("spec.output.uri", self.output.uri, True))
        return found

    def with_uris(self, change: Callable[[str], str]) -> CompressionJobSpec:
        """This spec with each URI that `uris()` lists replaced by `change(uri)`."""
        document = self.model_dump(by_alias=True, exclude_unset=True, mode="json")
        for path, uri, _ in self.uris():
            *parents, leaf = re.findall(r"[^.\[\]]+", path.removeprefix("spec."))
            owner: Any = document
            for key in parents:
                owner = owner[int(key)] if key.isdigit() else owner[key]
            owner[leaf] = change(uri)
        return CompressionJobSpec.model_validate(document)


# Cross-field mistakes, worded once: `kondense validate` and the CRD's CEL rules
# (api/crd.py) both say these. Pool names are the operator's configuration, not part of this
# contract: an fp16 recipe sent to a pool without a GPU is refused by the operator
# (reason PoolLacksDevice), which knows what each of its pools provides.
NEEDS_CALIBRATION = (
    "spec.data.calibration: static INT8 quantization needs calibration data; add "
    "data.calibration.uri (100-1000 representative samples) or use mode: dynamic"
)
NEEDS_TRAINING_DATA = (
    "spec.data.training: fine-tuning and distillation need training data; add data.training.uri"
)
TRAINING_OUTLASTS_TIMEOUT = (
    "spec.steps[].maxTrainSeconds: the training budget must be shorter than "
    "spec.timeoutSeconds, or the Job is killed before training ends; lower "
    "maxTrainSeconds or raise timeoutSeconds"
)
NEEDS_ARCHITECTURE = (
    "spec.model.architecture: a safetensors model needs the callable that builds it, as "
    "'package.module:function' importable in the runner image"
)
ARCHITECTURE_NEEDS_SAFETENSORS = (
    "spec.model.architecture: only safetensors models take an architecture; remove it or set "
    "format: safetensors"
)
UNWRITABLE_OUTPUT = (
    "spec.output.uri: use s3://bucket/prefix, pvc://claim/path or a file path; other "
    "schemes cannot be written to"
)
BAD_PVC_CLAIM = (
    "pvc://CLAIM/path names a PersistentVolumeClaim: lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit, at most 253 characters"
)
# A pvc:// URI whose claim is a valid PersistentVolumeClaim name (a DNS subdomain). Plain RE2,
# so the CRD's CEL rules use it too.
PVC_CLAIM_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?(/|$)"
SUPPORTED_SCHEME_PATTERN = r"^(s3|pvc|https|http|file)://"
UNSUPPORTED_SCHEME = (
    "unsupported URI scheme; use s3://bucket/key, pvc://claim/path, https://, file:// or a path"
)
# A '..' segment after a scheme: file:///../../etc is /etc, not a folder below anything.
DOT_SEGMENT_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://(.*/)?[.][.](/|$)"
DOT_SEGMENT = "a URI may not contain '..' segments; write the path it means"
# No backslashes in these patterns: the CRD's CEL rules quote them as they are.
# Cloud metadata and other link-local hosts, as literals (the runner also checks every address
# a host name resolves to, and every redirect).
LINK_LOCAL_PATTERN = (
    r"^[A-Za-z]+://(169[.]254[.]|.?fe80:|.?fd00:ec2::254|metadata[.]google[.]internal)"
)
LINK_LOCAL = "link-local and cloud metadata addresses are never fetched"
# Output URIs artifacts can be written to: these prefixes, or a path with no scheme at all.
# Plain RE2, so the CRD's CEL rule uses them too.
WRITABLE_OUTPUT_PREFIXES = (r"^(s3|pvc)://[^/]+", r"^(file://)?/")


def writable_output(uri: str) -> bool:
    return "://" not in uri or any(re.match(p, uri) for p in WRITABLE_OUTPUT_PREFIXES)


def uri_problems(uri: str) -> list[str]:
    """What is wrong with one URI on its own (the CRD's CEL rules say the same)."""
    problems = []
    if "://" in uri and not re.match(SUPPORTED_SCHEME_PATTERN, uri):
        problems.append(UNSUPPORTED_SCHEME)
    if re.match(DOT_SEGMENT_PATTERN, uri):
        problems.append(DOT_SEGMENT)
    if re.match(LINK_LOCAL_PATTERN, uri):
        problems.append(LINK_LOCAL)
    return problems


def cross_field_problems(spec: CompressionJobSpec) -> list[str]:
    """Mistakes that span fields. The CRD carries the same rules as CEL expressions."""
    problems = []
    modes = [q.mode for q in spec.steps_named("quantize") if isinstance(q, QuantizeConfig)]
    if QuantizeMode.static in modes and spec.data.calibration is None:
        problems.append(NEEDS_CALIBRATION)
    training = [p.fine_tune for p in spec.steps_named("prune") if isinstance(p, PruneConfig)]
    training += [d.training for d in spec.steps_named("distill") if isinstance(d, DistillConfig)]
    settings = [t for t in training if t is not None]
    if settings and spec.data.training is None:
        problems.append(NEEDS_TRAINING_DATA)
    if any((t.max_train_seconds or 0) >= spec.timeout_seconds for t in settings):
        problems.append(TRAINING_OUTLASTS_TIMEOUT)
    if not writable_output(spec.output.uri):
        problems.append(UNWRITABLE_OUTPUT)
    for path, uri, _ in spec.uris():
        if uri.startswith("pvc://") and not re.match(PVC_CLAIM_PATTERN, uri):
            field = re.sub(r"\[\d+\]", "[]", path)  # the CRD's rule cannot name the index
            problems.append(f"{field}: {BAD_PVC_CLAIM}")
        problems += [f"{path}: {problem}" for problem in uri_problems(uri)]
    model = spec.model
    if model.format is ModelFormat.safetensors and model.architecture is None:
        problems.append(NEEDS_ARCHITECTURE)
    if model.architecture is not None and model.format not in (None, ModelFormat.safetensors):
        problems.append(ARCHITECTURE_NEEDS_SAFETENSORS)
    return problems


def check_type_meta(api_version: str, kind: str, expected_kind: str) -> None:
    """A manifest's apiVersion is this API's and its kind the one expected (ValueError)."""
    if api_version != f"{API_GROUP}/{API_VERSION}":
        raise ValueError(f"apiVersion must be {API_GROUP}/{API_VERSION}")
    if kind != expected_kind:
        raise ValueError(f"kind must be {expected_kind}")


class CompressionJob(SpecModel):
    """A whole manifest, as applied with kubectl or run with `kondense run`."""

    api_version: str = Field(description=f"{API_GROUP}/{API_VERSION}")
    kind: str = Field(description=KIND)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: CompressionJobSpec

    @model_validator(mode="after")
    def _type_meta(self) -> CompressionJob:
        check_type_meta(self.api_version, self.kind, KIND)
        return self

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "job"))
