"""The CompressionJob CustomResourceDefinition, generated from the spec and result models.

`kondense crd -o crds/compressionjob.yaml` writes it; a test fails when the checked-in file
drifts. The OpenAPI schema is structural (every $ref inlined, no anyOf), keeps the models'
descriptions for `kubectl explain`, and carries the cross-field rules of
`api/spec.py: cross_field_problems` as CEL so the apiserver refuses them at apply time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from kondense.api.outcome import Artifact, Results
from kondense.api.spec import (
    API_GROUP,
    API_VERSION,
    ARCHITECTURE_NEEDS_SAFETENSORS,
    BAD_PVC_CLAIM,
    DEFAULT_TIMEOUT_SECONDS,
    DOT_SEGMENT,
    DOT_SEGMENT_PATTERN,
    KIND,
    LINK_LOCAL,
    LINK_LOCAL_PATTERN,
    NEEDS_ARCHITECTURE,
    NEEDS_CALIBRATION,
    NEEDS_TRAINING_DATA,
    PVC_CLAIM_PATTERN,
    SUPPORTED_SCHEME_PATTERN,
    TRAINING_OUTLASTS_TIMEOUT,
    UNSUPPORTED_SCHEME,
    UNWRITABLE_OUTPUT,
    WRITABLE_OUTPUT_PREFIXES,
    CompressionJobSpec,
)
from kondense.api.steps import STEP_NAMES

PLURAL = "compressionjobs"
SINGULAR = "compressionjob"
# Not `cj`: that is CronJob's short name, which kubectl resolves first, warning on every use.
SHORT_NAMES = ["kcj"]
# status.phase: the one list of phases (the operator's status.py uses these names).
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
PHASES = [PENDING, RUNNING, SUCCEEDED, FAILED]

# JSON-schema keywords a CRD's structural schema does not accept, or that add only noise.
_DROPPED_KEYS = {"title", "additionalProperties", "$defs", "examples"}


def structural_schema(model_schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema as a structural OpenAPI v3 schema: $refs inlined, optional
    fields' `anyOf: [X, null]` collapsed to X, exclusive bounds in the OpenAPI 3.0 form."""
    definitions = model_schema.get("$defs", {})

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = definitions[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return convert(merged)
        if "anyOf" in node:
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {node}")
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return convert({**branches[0], **rest})
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS or (key == "default" and value is None):
                continue
            if key == "properties":
                out[key] = {name: convert(sub) for name, sub in value.items()}
            elif key == "exclusiveMinimum":
                out["minimum"], out["exclusiveMinimum"] = value, True
            elif key == "exclusiveMaximum":
                out["maximum"], out["exclusiveMaximum"] = value, True
            else:
                out[key] = convert(value)
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        return out

    result: dict[str, Any] = convert({k: v for k, v in model_schema.items() if k != "$defs"})
    return result


def rule(expression: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL validation rule, with the message the apiserver returns when it fails."""
    entry = {"rule": expression, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


_HAS_STATIC = "self.steps.exists(s, has(s.quantize) && s.quantize.mode == 'static')"
_TIMEOUT = f"(has(self.timeoutSeconds) ? self.timeoutSeconds : {DEFAULT_TIMEOUT_SECONDS})"
_NEEDS_TRAINING = "self.steps.exists(s, has(s.distill) || (has(s.prune) && has(s.prune.fineTune)))"

# The same mistakes `cross_field_problems` reports locally, in the same words.
SPEC_RULES = [
    rule(f"!{_HAS_STATIC} || (has(self.data) && has(self.data.calibration))", NEEDS_CALIBRATION),
    rule(f"!{_NEEDS_TRAINING} || (has(self.data) && has(self.data.training))", NEEDS_TRAINING_DATA),
    rule(
        "!self.steps.exists(s, (has(s.prune) && has(s.prune.fineTune) "
        "&& has(s.prune.fineTune.maxTrainSeconds) && s.prune.fineTune.maxTrainSeconds >= "
        f"{_TIMEOUT}) || (has(s.distill) && has(s.distill.training) "
        f"&& has(s.distill.training.maxTrainSeconds) && s.distill.training.maxTrainSeconds >= "
        f"{_TIMEOUT}))",
        TRAINING_OUTLASTS_TIMEOUT,
    ),
]

STEP_RULES = [
    rule(
        " + ".join(f"(has(self.{key}) ? 1 : 0)" for key in STEP_NAMES) + " == 1",
        f"spec.steps[]: each step sets exactly one of {', '.join(STEP_NAMES)}; "
        "split this step into one list item per key",
    )
]

MODEL_RULES = [
    rule(
        "!(has(self.format) && self.format == 'safetensors') || has(self.architecture)",
        NEEDS_ARCHITECTURE,
    ),
    rule(
        "!has(self.architecture) || !has(self.format) || self.format == 'safetensors'",
        ARCHITECTURE_NEEDS_SAFETENSORS,
        ".architecture",
    ),
]

OUTPUT_RULES = [
    rule(
        " || ".join(
            [
                *(f"self.uri.matches('{p}')" for p in WRITABLE_OUTPUT_PREFIXES),
                "!self.uri.contains('://')",
            ]
        ),
        UNWRITABLE_OUTPUT,
        ".uri",
    )
]


def spec_schema() -> dict[str, Any]:
    """spec's OpenAPI schema with the CEL rules attached where they apply."""
    raw = CompressionJobSpec.model_json_schema(by_alias=True, mode="validation")
    schema = structural_schema(raw)
    schema["x-kubernetes-validations"] = SPEC_RULES
    props = schema["properties"]
    props["steps"]["items"]["x-kubernetes-validations"] = STEP_RULES
    attach_location_rules(props)
    # Not on steps[].distill.student: inside the steps list the rule's estimated cost is over
    # the apiserver's budget; `kondense validate` and the operator (InvalidSpec) check it.
    return schema


def attach_location_rules(props: dict[str, Any]) -> None:
    """The rules of spec.model, spec.data.* and spec.output, onto the spec schema's properties
    (`props`): URIs with a supported scheme, no '..' segment, no link-local host, a valid claim;
    a writable output; the model's format and architecture."""
    props["output"]["x-kubernetes-validations"] = [
        *OUTPUT_RULES,
        pvc_claim_rule("output"),
        *uri_rules("output"),
    ]
    props["model"]["x-kubernetes-validations"] = [
        *MODEL_RULES,
        pvc_claim_rule("model"),
        *uri_rules("model"),
    ]
    for source in ("calibration", "evaluation", "training"):
        rules = [pvc_claim_rule(f"data.{source}"), *uri_rules(f"data.{source}")]
        props["data"]["properties"][source]["x-kubernetes-validations"] = rules


def pvc_claim_rule(where: str) -> dict[str, str]:
    """On the object at spec.`where`: a pvc:// uri names a valid claim (`cross_field_problems`
    says the same locally)."""
    return rule(
        f"!has(self.uri) || !self.uri.startsWith('pvc://') "
        f"|| self.uri.matches('{PVC_CLAIM_PATTERN}')",
        f"spec.{where}.uri: {BAD_PVC_CLAIM}",
        ".uri",
    )


def uri_rules(where: str) -> list[dict[str, str]]:
    """On the object at spec.`where`: the uri's scheme is supported, it has no '..' segment and
    names no link-local host (`uri_problems` says the same locally)."""
    return [
        rule(
            f"!self.uri.contains('://') || self.uri.matches('{SUPPORTED_SCHEME_PATTERN}')",
            f"spec.{where}.uri: {UNSUPPORTED_SCHEME}",
            ".uri",
        ),
        rule(
            f"!self.uri.matches('{DOT_SEGMENT_PATTERN}')",
            f"spec.{where}.uri: {DOT_SEGMENT}",
            ".uri",
        ),
        rule(
            f"!self.uri.matches('{LINK_LOCAL_PATTERN}')",
            f"spec.{where}.uri: {LINK_LOCAL}",
            ".uri",
        ),
    ]


def condition_schema() -> dict[str, Any]:
    """metav1.Condition, as Kubernetes' own CRDs declare it."""
    return {
        "type": "object",
        "description": "One aspect of the job's state (kstatus: Ready, Reconciling, Stalled; "
        "plus Succeeded and Failed).",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {
                "type": "string",
                "description": "Ready, Reconciling, Stalled, Succeeded or Failed.",
            },
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "description": "CamelCase reason."},
            "message": {"type": "string", "description": "Human-readable detail."},
        },
    }


def status_schema() -> dict[str, Any]:
    """status: phase, conditions, runner, results and artifacts (the runner's Outcome), times."""
    results = structural_schema(Results.model_json_schema(by_alias=True, mode="serialization"))
    artifact = structural_schema(Artifact.model_json_schema(by_alias=True, mode="serialization"))
    results.pop("required", None)  # the operator copies what the runner reported
    return {
        "type": "object",
        "description": "What the operator observed. Written by the operator only.",
        # Defaulted from the create on: observedGeneration 0 < generation tells kstatus (Flux)
        # and Argo CD that the job is not reconciled yet; without any status kstatus says
        # Current, and a Kustomization that waits would count a just-applied job ready.
        "default": {"observedGeneration": 0},
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The spec generation this status describes.",
            },
            "phase": {"type": "string", "enum": PHASES, "description": "Where the job is."},
            "recipe": {"type": "string", "description": "The steps, e.g. export>optimize>int8."},
            "reason": {"type": "string", "description": "CamelCase reason of the last phase."},
            "message": {"type": "string", "description": "The runner's or operator's message."},
            "conditions": {
                "type": "array",
                "items": condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "runner": {
                "type": "object",
                "description": "Where the recipe ran.",
                "properties": {
                    "job": {"type": "string", "description": "The batch/v1 Job."},
                    "pod": {"type": "string", "description": "The runner pod."},
                    "node": {"type": "string", "description": "The node the pod ran on."},
                    "pool": {"type": "string", "description": "The node pool picked."},
                    "attempts": {"type": "integer", "description": "Runner pods started."},
                },
            },
            "results": results,
            "artifacts": {"type": "array", "items": artifact},
            "startTime": {"type": "string", "format": "date-time"},
            "completionTime": {"type": "string", "format": "date-time"},
        },
    }


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    # Like the STATUS of `kubectl get pods`: why it is in that phase (Unschedulable, BadInput).
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": ".status.reason",
        "description": "why the job is in its phase",
    },
    {"name": "Recipe", "type": "string", "jsonPath": ".status.recipe"},
    {"name": "Pool", "type": "string", "jsonPath": ".status.runner.pool"},
    {
        "name": "Size-Ratio",
        "type": "number",
        "jsonPath": ".status.results.sizeRatio",
        "description": "baseline size / compressed size",
    },
    {
        "name": "Speedup",
        "type": "number",
        "jsonPath": ".status.results.speedup",
        "description": "baseline p50 latency / compressed p50 latency",
    },
    {
        "name": "Metric-Drop",
        "type": "number",
        "jsonPath": ".status.results.metricDrop",
        "description": "baseline metric - compressed metric",
    },
    {
        "name": "Evaluated-On",
        "type": "string",
        "jsonPath": ".status.results.evaluationData",
        "description": "the inputs the metric was measured on: user, builtin-text, "
        "builtin-images or synthetic",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Message",
        "type": "string",
        "jsonPath": ".status.message",
        "priority": 1,
        "description": "the runner's or operator's message (kubectl get -o wide)",
    },
]


@dataclass(frozen=True)
class Names:
    """How kubectl names a kind of this API group."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]


def crd_document(
    names: Names,
    description: str,
    columns: list[dict[str, Any]],
    spec: dict[str, Any],
    status: dict[str, Any],
    rules: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A namespaced CustomResourceDefinition of this API group: one served version, the status
    subresource, printer columns, and the spec and status schemas."""
    root: dict[str, Any] = {"type": "object", "description": description}
    if rules:
        root["x-kubernetes-validations"] = rules
    root["required"] = ["spec"]
    root["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec,
        "status": status,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names.plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": names.kind,
                "listKind": f"{names.kind}List",
                "plural": names.plural,
                "singular": names.singular,
                "shortNames": names.short_names,
                "categories": ["kondense"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return crd_document(
        Names(KIND, PLURAL, SINGULAR, SHORT_NAMES),
        "A model compression recipe run by the kondense operator in a runner pod, with the "
        "measured trade-off in status.",
        PRINTER_COLUMNS,
        spec_schema(),
        status_schema(),
    )


HEADER = (
    "# Generated by `kondense crd -o crds/compressionjob.yaml` from api/spec.py and\n"
    "# api/outcome.py. Do not edit: change the models and regenerate.\n"
)


def render_crd() -> str:
    """The CRD as the YAML text checked in at crds/compressionjob.yaml."""
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
