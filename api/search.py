"""The CompressionSearch contract: one model, a space of candidate recipes, an objective under
an accuracy budget; and the pure decisions a search makes, shared by the operator (children
are CompressionJobs) and `kondense search` (children are local runs).

A search runs in two rounds (successive halving with one cut): every candidate is first
screened on a small evaluation subset (`screening.samples`), then only those that could still
win go on to the full evaluation. The best is the accepted fully evaluated candidate that
minimizes the objective; candidates are compared by the ratios each measured against its own
baseline on its own node, never by raw latencies from different machines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from kondense.api.spec import (
    API_GROUP,
    API_VERSION,
    DNS_SUBDOMAIN,
    CalibrationMethod,
    CompressionJobSpec,
    Data,
    DistillConfig,
    Evaluation,
    ExportConfig,
    FineTune,
    ModelFormat,
    ModelSource,
    OptimizeConfig,
    OptimizeLevel,
    Output,
    PruneConfig,
    PruneMethod,
    QuantizeConfig,
    QuantizeMode,
    Resources,
    SpecModel,
    Step,
    Storage,
    StudentSource,
    Task,
    TransformerFusion,
    check_type_meta,
)
from kondense.api.steps import DeviceClass, recipe_device, recipe_label

SEARCH_KIND = "CompressionSearch"
SEARCH_PLURAL = "compressionsearches"
SEARCH_SINGULAR = "compressionsearch"
SEARCH_SHORT_NAMES = ["kcs"]
# Labels on each child: which search made it, which candidate and which round it is.
LABEL_SEARCH = f"{API_GROUP}/search"
LABEL_CANDIDATE = f"{API_GROUP}/candidate"
LABEL_ROUND = f"{API_GROUP}/round"
# Kubernetes' limit on a label value: the search's name is one on each child.
MAX_LABEL_VALUE = 63
# A child's name is the search's, cut to this length, then -NN-screen or -NN-full: a Job name
# and its pods' names stay under Kubernetes' 63-character label limit.
NAME_PREFIX_MAX = 40


class Objective(StrEnum):
    latency = "latency"
    size = "size"


class Round(StrEnum):
    screen = "screen"
    full = "full"


# --- the spec --------------------------------------------------------------------------------


class SearchObjective(SpecModel):
    minimize: Objective = Field(
        default=Objective.latency,
        description="latency: the highest speedup over the baseline wins; size: the highest "
        "size ratio wins. Ties go to the smaller metric drop.",
    )
    max_metric_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Largest tolerated drop of the metric (absolute); candidates over it are "
        "rejected.",
    )


class QuantizeSpace(SpecModel):
    modes: list[QuantizeMode] = Field(
        default_factory=lambda: [QuantizeMode.dynamic],
        min_length=1,
        max_length=4,
        description="INT8 modes to try: dynamic, static (needs spec.data.calibration), auto. "
        "fp16 is spec.space.fp16. Reduce-range is not a dimension: the runner measures whether "
        "this CPU needs it (7-bit weights) and picks it per CPU.",
    )
    calibration_methods: list[CalibrationMethod] = Field(
        default_factory=lambda: [CalibrationMethod.minmax],
        min_length=1,
        max_length=3,
        description="Static INT8 calibration methods to try.",
    )
    per_channel: list[bool] = Field(
        default_factory=lambda: [True],
        min_length=1,
        max_length=2,
        description="Per-channel weight scales to try: [true], [false] or both.",
    )


class PruneSpace(SpecModel):
    methods: list[PruneMethod] = Field(
        default_factory=lambda: [PruneMethod.magnitude], min_length=1, max_length=2
    )
    amounts: list[float] = Field(
        default_factory=lambda: [0.3, 0.5],
        min_length=1,
        max_length=8,
        description="Fractions of weights (or channels, structured) to remove.",
    )


class DistillSpace(SpecModel):
    keep_every: list[int] = Field(
        default_factory=lambda: [2],
        min_length=1,
        max_length=6,
        description="Student depths: keep every k-th transformer layer of the teacher.",
    )


class SearchSpace(SpecModel):
    quantize: QuantizeSpace | None = Field(default=None, description="INT8 candidates.")
    fp16: bool = Field(default=False, description="Try fp16 (runs on the operator's gpu pool).")
    prune: PruneSpace | None = Field(default=None, description="Pruning candidates.")
    distill: DistillSpace | None = Field(
        default=None, description="Distillation candidates (need spec.data.training)."
    )
    combine: bool = Field(
        default=True,
        description="Also try each pruned or distilled model quantized with the first INT8 "
        "candidate.",
    )


class SearchBudget(SpecModel):
    max_candidates: int = Field(
        default=8, ge=1, le=64, description="At most this many candidates are tried."
    )
    parallelism: int = Field(
        default=2, ge=1, le=32, description="At most this many candidates run at once."
    )
    timeout_seconds: int = Field(
        default=6 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="Wall-clock limit of the whole search; each candidate gets the same limit. "
        "When it is spent no candidate starts and the best so far is kept.",
    )


class Screening(SpecModel):
    samples: int = Field(
        default=32,
        ge=0,
        le=100_000,
        description="Evaluation samples of the screening round; 0 skips screening and "
        "evaluates every candidate fully.",
    )
    keep: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Fraction of the screened candidates (best first, within twice the "
        "metric budget) that go on to the full evaluation.",
    )


class CompressionSearchSpec(SpecModel):
    """A model, a space of recipes and a budget: kondense tries them and keeps the best."""

    model: ModelSource = Field(description="The model to compress.")
    data: Data = Field(default_factory=Data, description="As a CompressionJob's spec.data.")
    evaluation: Evaluation = Field(
        default_factory=Evaluation,
        description="As a CompressionJob's spec.evaluation; maxMetricDrop comes from "
        "spec.objective.",
    )
    objective: SearchObjective = Field(
        default_factory=SearchObjective, description="What to minimize, under which budget."
    )
    space: SearchSpace | None = Field(
        default=None,
        description="The candidate recipes. When omitted kondense derives them from the "
        "model's task and format, and from the data given (static INT8 with calibration "
        "data, distillation with training data).",
    )
    budget: SearchBudget = Field(default_factory=SearchBudget, description="Limits.")
    screening: Screening = Field(
        default_factory=Screening, description="The cheap first round (successive halving)."
    )
    output: Output = Field(
        description="Where the artifacts go: each candidate writes under <uri>/<candidate>/."
    )
    resources: Resources | None = Field(default=None, description="Runner pod resources.")
    storage: Storage | None = Field(default=None, description="As a CompressionJob's.")
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="ServiceAccount of the candidates' runner pods.",
    )

    @model_validator(mode="after")
    def _candidates_are_valid(self) -> CompressionSearchSpec:
        problems = search_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        # Every candidate must be a valid CompressionJob: surface its problem at apply time.
        candidate_specs(self, devices={DeviceClass.cpu, DeviceClass.gpu})
        return self


# Worded once: the pydantic check and the CRD's CEL rules (api/search_crd.py) say these.
SPACE_STATIC_NEEDS_CALIBRATION = (
    "spec.space.quantize.modes: static INT8 needs calibration data; add "
    "spec.data.calibration.uri or remove static"
)
SPACE_DISTILL_NEEDS_TRAINING = (
    "spec.space.distill: distillation needs training data; add spec.data.training.uri or "
    "remove space.distill"
)


def search_problems(spec: CompressionSearchSpec) -> list[str]:
    """Mistakes of the space that span fields; the CRD carries the same rules as CEL."""
    problems = []
    space = spec.space
    modes = space.quantize.modes if space is not None and space.quantize is not None else []
    if QuantizeMode.static in modes and spec.data.calibration is None:
        problems.append(SPACE_STATIC_NEEDS_CALIBRATION)
    if space is not None and space.distill is not None and spec.data.training is None:
        problems.append(SPACE_DISTILL_NEEDS_TRAINING)
    return problems


class CompressionSearch(SpecModel):
    """A whole CompressionSearch manifest."""

    api_version: str = Field(description=f"{API_GROUP}/{API_VERSION}")
    kind: str = Field(description=SEARCH_KIND)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: CompressionSearchSpec

    @model_validator(mode="after")
    def _type_meta(self) -> CompressionSearch:
        check_type_meta(self.api_version, self.kind, SEARCH_KIND)
        return self

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "search"))


# --- candidates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One recipe of the space: its index (stable: the child's name), a short name, steps."""

    index: int
    name: str
    steps: tuple[Step, ...]

    @property
    def recipe(self) -> str:
        return recipe_label(self.steps)

    @property
    def device(self) -> DeviceClass:
        return recipe_device(self.steps)


def auto_space(spec: CompressionSearchSpec) -> SearchSpace:
    """The space kondense tries when spec.space is omitted, from the model's task and format
    and the data given."""
    calibration = spec.data.calibration is not None
    images = spec.model.task is Task.image_classification
    modes = [QuantizeMode.dynamic]
    if calibration:
        modes.append(QuantizeMode.static)
    quantize = QuantizeSpace(
        modes=modes,
        # Convolutions keep accuracy per channel; transformer MatMuls try both.
        per_channel=[True] if images else [True, False],
        calibration_methods=(
            [CalibrationMethod.minmax, CalibrationMethod.entropy, CalibrationMethod.percentile]
            if calibration
            else [CalibrationMethod.minmax]
        ),
    )
    torch_model = spec.model.format is not ModelFormat.onnx and not _is_onnx_uri(spec.model.uri)
    training = spec.data.training is not None
    transformer = spec.model.format is ModelFormat.huggingface
    return SearchSpace(
        quantize=quantize,
        prune=PruneSpace(amounts=[0.3, 0.5]) if torch_model and training else None,
        distill=DistillSpace(keep_every=[2, 3]) if transformer and training else None,
        combine=True,
    )


def _is_onnx_uri(uri: str) -> bool:
    return uri.lower().endswith(".onnx")


def candidates(spec: CompressionSearchSpec, devices: set[DeviceClass]) -> list[Candidate]:
    """Every candidate of the space in a fixed order (cheap and likely first), cut to
    budget.maxCandidates. Candidates needing a device the cluster (or machine) lacks are left
    out: fp16 without a gpu pool."""
    space = spec.space if spec.space is not None else auto_space(spec)
    base = _base_steps(spec)
    int8 = _int8_configs(space.quantize)
    recipes: list[tuple[str, list[Step]]] = []
    for name, config in int8:
        recipes.append((name, [*base, Step(quantize=config)]))
    if space.fp16:
        recipes.append(("fp16", [*base, Step(quantize=QuantizeConfig(mode=QuantizeMode.fp16))]))
    torch_steps: list[tuple[str, Step]] = []
    if space.prune is not None:
        fine_tune = FineTune() if spec.data.training is not None else None
        for method in space.prune.methods:
            for amount in space.prune.amounts:
                prune = PruneConfig(method=method, amount=amount, fine_tune=fine_tune)
                torch_steps.append(
                    (f"prune-{method.value}-{round(amount * 100)}", Step(prune=prune))
                )
    if space.distill is not None:
        for keep in space.distill.keep_every:
            distill = DistillConfig(student=StudentSource(keep_every=keep))
            torch_steps.append((f"distill-k{keep}", Step(distill=distill)))
    for name, step in torch_steps:
        recipes.append((name, [step]))
        if space.combine and int8:
            # The pruned or distilled network goes through the same export and fusion as
            # the base model before INT8.
            int8_name, int8_config = int8[0]
            combined = [step, *base, Step(quantize=int8_config)]
            recipes.append((f"{name}-{int8_name}", combined))
    usable = [(n, s) for n, s in recipes if recipe_device(s) in devices]
    return [
        Candidate(index=i, name=name, steps=tuple(steps))
        for i, (name, steps) in enumerate(usable[: spec.budget.max_candidates])
    ]


def space_size(spec: CompressionSearchSpec, devices: set[DeviceClass]) -> int:
    """How many candidates the space holds before budget.maxCandidates cuts it."""
    uncapped = spec.model_copy(
        update={"budget": spec.budget.model_copy(update={"max_candidates": 10**6})}
    )
    return len(candidates(uncapped, devices))


def _base_steps(spec: CompressionSearchSpec) -> list[Step]:
    """Steps before quantization: export and transformer fusion for Hugging Face models."""
    if spec.model.format is ModelFormat.huggingface:
        return [
            Step(export=ExportConfig()),
            Step(
                optimize=OptimizeConfig(
                    level=OptimizeLevel.extended, transformer=TransformerFusion.auto
                )
            ),
        ]
    return []


def _int8_configs(space: QuantizeSpace | None) -> list[tuple[str, QuantizeConfig]]:
    if space is None:
        return []
    found: list[tuple[str, QuantizeConfig]] = []
    for mode in space.modes:
        if mode is QuantizeMode.fp16:
            continue  # spec.space.fp16
        methods = space.calibration_methods if mode is QuantizeMode.static else [None]
        for method in methods:
            for per_channel in space.per_channel:
                name = f"int8-{mode.value}"
                name += f"-{method.value}" if method is not None else ""
                name += "" if per_channel else "-pt"  # per-tensor
                config = QuantizeConfig(
                    mode=mode,
                    per_channel=per_channel,
                    calibration_method=method or CalibrationMethod.minmax,
                )
                found.append((name, config))
    return found


def child_name(search: str, candidate: Candidate, round_: Round) -> str:
    return f"{search[:NAME_PREFIX_MAX].rstrip('-')}-{candidate.index:02d}-{round_.value}"


def child_spec(
    spec: CompressionSearchSpec, candidate: Candidate, round_: Round
) -> CompressionJobSpec:
    """The CompressionJob spec of one candidate in one round. The screening round evaluates on
    screening.samples samples and times fewer runs; the full round as the search says."""
    evaluation = spec.evaluation.model_copy(
        update={"max_metric_drop": spec.objective.max_metric_drop}
    )
    if round_ is Round.screen:
        evaluation = evaluation.model_copy(
            update={
                "samples": spec.screening.samples,
                "runs": min(evaluation.runs, 30),
                "warmup": min(evaluation.warmup, 5),
            }
        )
    output = spec.output.uri.rstrip("/") + f"/{candidate.index:02d}-{candidate.name}/{round_.value}"
    return CompressionJobSpec(
        model=spec.model,
        data=spec.data,
        steps=list(candidate.steps),
        evaluation=evaluation,
        output=Output(uri=output),
        timeout_seconds=spec.budget.timeout_seconds,
        resources=spec.resources,
        storage=spec.storage,
        service_account_name=spec.service_account_name,
    )


def candidate_specs(
    spec: CompressionSearchSpec, devices: set[DeviceClass]
) -> list[tuple[Candidate, CompressionJobSpec]]:
    """Each candidate with its full-round spec; raises ValueError naming the candidate whose
    recipe is not a valid CompressionJob (e.g. distillation without training data)."""
    out = []
    for candidate in candidates(spec, devices):
        try:
            out.append((candidate, child_spec(spec, candidate, Round.full)))
        except ValueError as error:
            raise ValueError(f"candidate {candidate.name}: {error}") from error
    return out


# --- deciding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What one child reported: its ratios against its own baseline, on its own node."""

    candidate: int
    round: Round
    finished: bool
    succeeded: bool = False
    speedup: float | None = None
    size_ratio: float | None = None
    metric_drop: float | None = None
    accepted: bool = False
    reason: str = ""


def score(measured: Measured, objective: Objective) -> float:
    """Higher is better: speedup or size ratio."""
    value = measured.speedup if objective is Objective.latency else measured.size_ratio
    return value if value is not None else 0.0


def within(measured: Measured, max_drop: float, slack: float = 1.0) -> bool:
    return measured.metric_drop is not None and measured.metric_drop <= max_drop * slack


def promoted(screened: Sequence[Measured], objective: SearchObjective, keep: float) -> list[int]:
    """Candidates that go on to the full round: those whose screening measured a drop within
    twice the budget (a small subset is noisy), best first, the top `keep` fraction (at least
    one)."""
    alive = [m for m in screened if m.finished and m.metric_drop is not None]
    hopeful = [m for m in alive if within(m, objective.max_metric_drop, slack=2.0)]
    ranked = sorted(hopeful, key=lambda m: (-score(m, objective.minimize), m.metric_drop or 0.0))
    count = max(1, math.ceil(keep * len(alive))) if alive else 0
    return [m.candidate for m in ranked[:count]]


def best(finals: Sequence[Measured], objective: SearchObjective) -> Measured | None:
    """The accepted, fully evaluated candidate with the highest score; ties to the smaller
    drop, then the lower index."""
    return min(
        accepted(finals, objective),
        key=lambda m: (-score(m, objective.minimize), m.metric_drop or 0.0, m.candidate),
        default=None,
    )


def accepted(finals: Sequence[Measured], objective: SearchObjective) -> list[Measured]:
    """The fully evaluated candidates that succeeded within the metric budget."""
    return [
        m
        for m in finals
        if m.round is Round.full and m.succeeded and within(m, objective.max_metric_drop)
    ]


def why_best(
    winner: Measured,
    finals: Sequence[Measured],
    objective: SearchObjective,
    names: Mapping[int, str],
) -> str:
    """One line: why `winner`, the best of `finals`, won: its figure and metric drop against the
    budget, how many accepted fully evaluated candidates it beat, and the runner-up (`names`:
    candidate index -> name). The operator's status and `kondense search` both say this."""
    latency = objective.minimize is Objective.latency
    budget = objective.max_metric_drop
    passed = accepted(finals, objective)
    line = (
        f"{'fastest' if latency else 'smallest'} accepted: "
        f"{score(winner, objective.minimize):.2f}x {'speedup' if latency else 'size ratio'}, "
        f"drop {winner.metric_drop or 0:.4g} ≤ {budget:g}"
    )
    runner_up = best([m for m in passed if m.candidate != winner.candidate], objective)
    if runner_up is not None:
        line += (
            f" (of {len(passed)} accepted; next: {names[runner_up.candidate]} at "
            f"{score(runner_up, objective.minimize):.2f}x)"
        )
    return line


def pareto(finals: Sequence[Measured]) -> list[int]:
    """Fully evaluated candidates no other beats on speedup, size ratio and drop at once."""
    done = [
        m
        for m in finals
        if m.round is Round.full
        and m.speedup is not None
        and m.size_ratio is not None
        and m.metric_drop is not None
    ]

    def dominates(a: Measured, b: Measured) -> bool:
        assert a.speedup and a.size_ratio is not None and a.metric_drop is not None
        assert b.speedup and b.size_ratio is not None and b.metric_drop is not None
        no_worse = (
            a.speedup >= b.speedup
            and a.size_ratio >= b.size_ratio
            and a.metric_drop <= b.metric_drop
        )
        better = (
            a.speedup > b.speedup or a.size_ratio > b.size_ratio or a.metric_drop < b.metric_drop
        )
        return no_worse and better

    return sorted(m.candidate for m in done if not any(dominates(o, m) for o in done if o is not m))


@dataclass(frozen=True)
class Plan:
    """What a search should do next, from what its children have reported so far."""

    start: list[tuple[int, Round]]  # children to create now (within parallelism)
    done: bool  # every round finished: pick the best and stop


def screens(spec: CompressionSearchSpec, count: int) -> bool:
    """Whether a search of `count` candidates screens them first."""
    return spec.screening.samples > 0 and count > 1


def promotion(
    spec: CompressionSearchSpec, count: int, measured: Sequence[Measured]
) -> list[int] | None:
    """The candidates promoted to the full round, once every one of the `count` screenings has
    finished; None before that, or when the search does not screen."""
    screened = [m for m in measured if m.round is Round.screen]
    if not screens(spec, count) or len(screened) < count:
        return None
    if not all(m.finished for m in screened):
        return None
    return promoted(screened, spec.objective, spec.screening.keep)


def next_children(
    spec: CompressionSearchSpec,
    count: int,
    measured: Sequence[Measured],
    *,
    timed_out: bool = False,
) -> Plan:
    """The children to start now, given `count` candidates and what each child reported.

    Idempotent: from the same reports it returns the same plan, so an operator restarted
    mid-search starts nothing twice (children are named by candidate and round)."""
    existing = {(m.candidate, m.round) for m in measured}
    running = sum(1 for m in measured if not m.finished)
    free = max(0, spec.budget.parallelism - running)
    wanted: list[tuple[int, Round]]
    if screens(spec, count):
        wanted = [(i, Round.screen) for i in range(count)]
        wanted += [(i, Round.full) for i in promotion(spec, count, measured) or []]
    else:
        wanted = [(i, Round.full) for i in range(count)]
    missing = [w for w in wanted if w not in existing]
    if timed_out:
        # Nothing new starts; the caller stops the children still running.
        return Plan(start=[], done=True)
    return Plan(start=missing[:free], done=not missing and running == 0)
