"""The CompressionSearch CustomResourceDefinition, generated from api/search.py the way
api/crd.py generates CompressionJob's: structural schema, descriptions for `kubectl explain`,
the space's cross-field rules as CEL, printer columns that tell the search's story.

`kondense crd --kind search -o crds/compressionsearch.yaml` writes it; a test fails when the
checked-in file drifts.
"""

from __future__ import annotations

from typing import Any

import yaml

from kondense.api.crd import (
    PHASES,
    Names,
    attach_location_rules,
    condition_schema,
    crd_document,
    rule,
    structural_schema,
)
from kondense.api.search import (
    LABEL_SEARCH,
    MAX_LABEL_VALUE,
    SEARCH_KIND,
    SEARCH_PLURAL,
    SEARCH_SHORT_NAMES,
    SEARCH_SINGULAR,
    SPACE_DISTILL_NEEDS_TRAINING,
    SPACE_STATIC_NEEDS_CALIBRATION,
    CompressionSearchSpec,
)

# The same mistakes `search_problems` reports locally, in the same words.
SEARCH_RULES = [
    rule(
        "!(has(self.space) && has(self.space.quantize) && has(self.space.quantize.modes) "
        "&& self.space.quantize.modes.exists(m, m == 'static')) "
        "|| (has(self.data) && has(self.data.calibration))",
        SPACE_STATIC_NEEDS_CALIBRATION,
    ),
    rule(
        "!(has(self.space) && has(self.space.distill)) "
        "|| (has(self.data) && has(self.data.training))",
        SPACE_DISTILL_NEEDS_TRAINING,
    ),
]


# Each child carries the search's name in a label, and label values stop at 63 characters.
NAME_RULE = rule(
    f"self.metadata.name.size() <= {MAX_LABEL_VALUE}",
    f"metadata.name: a CompressionSearch's name labels its children ({LABEL_SEARCH}), and "
    f"label values stop at {MAX_LABEL_VALUE} characters; use a shorter name",
)


# Children already ran on the spec: a changed model, space or evaluation would mix two
# searches' results under one best. Only the budget may change (raise timeoutSeconds or
# parallelism mid-run, as Katib lets an Experiment's trial counts change); the operator reads
# it on every reconcile.
MUTABLE_SPEC_FIELDS = frozenset({"budget"})
FIXED_WHY = (
    "once the search is created (its candidates ran on it); only spec.budget can. Delete the "
    "search and apply it again, or apply the change under a new name"
)


def attach_fixed_spec_rules(schema: dict[str, Any]) -> None:
    """Transition rules that refuse a change of any spec field but the budget: one per field
    (the message names it), and one on spec for fields added or removed."""
    properties: dict[str, Any] = schema["properties"]
    fixed = sorted(set(properties) - MUTABLE_SPEC_FIELDS)
    for name in fixed:
        properties[name].setdefault("x-kubernetes-validations", []).append(
            rule("self == oldSelf", f"spec.{name} cannot change {FIXED_WHY}")
        )
    optional = [name for name in fixed if name not in schema.get("required", [])]
    schema["x-kubernetes-validations"].append(
        rule(
            " && ".join(f"has(self.{name}) == has(oldSelf.{name})" for name in optional),
            f"spec: fields other than budget cannot be added or removed {FIXED_WHY}",
        )
    )


def search_spec_schema() -> dict[str, Any]:
    """spec's OpenAPI schema with the CEL rules attached where they apply."""
    raw = CompressionSearchSpec.model_json_schema(by_alias=True, mode="validation")
    schema = structural_schema(raw)
    schema["x-kubernetes-validations"] = list(SEARCH_RULES)
    attach_location_rules(schema["properties"])
    attach_fixed_spec_rules(schema)
    return schema


def _number(description: str) -> dict[str, Any]:
    return {"type": "number", "description": description}


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


_RATIOS = {
    "sizeRatio": _number("baseline size / compressed size, measured by the candidate's job"),
    "speedup": _number("baseline p50 / compressed p50, both measured on the candidate's node"),
    "metricDrop": _number("baseline metric - compressed metric"),
}


def search_status_schema() -> dict[str, Any]:
    """status: phase, conditions, every candidate's figures, the Pareto front and the best."""
    candidate = {
        "type": "object",
        "description": "One candidate in one round, as its CompressionJob reported it.",
        "properties": {
            "index": {"type": "integer", "description": "The candidate's place in the space."},
            "name": _string("The candidate, e.g. int8-static-entropy."),
            "recipe": _string("Its steps, e.g. export>optimize>int8-dynamic."),
            "round": {
                "type": "string",
                "enum": ["screen", "full"],
                "description": "screen: a small evaluation subset; full: the whole evaluation.",
            },
            "job": _string("The child CompressionJob."),
            "phase": {"type": "string", "enum": PHASES},
            "reason": _string("The child's CamelCase reason."),
            "pool": _string("The node pool it ran on."),
            "node": _string("The node it ran on."),
            "cpu": _string("The CPU that measured it, and its INT8 dot-product kind."),
            **_RATIOS,
            "accepted": {"type": "boolean", "description": "Within the metric budget."},
            "artifact": _string("The compressed model's URI."),
        },
    }
    best = {
        "type": "object",
        "description": "The winner: the accepted, fully evaluated candidate that minimizes "
        "the objective.",
        "properties": {
            "name": _string("The candidate."),
            "recipe": _string("Its steps."),
            "job": _string("Its CompressionJob (full round)."),
            "artifact": _string("The compressed model's URI."),
            **_RATIOS,
            "why": _string("Why it won, in one sentence."),
        },
    }
    return {
        "type": "object",
        "description": "What the operator observed. Written by the operator only.",
        "default": {"observedGeneration": 0},
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "phase": {"type": "string", "enum": PHASES, "description": "Where the search is."},
            "reason": _string("CamelCase reason of the last phase."),
            "message": _string("What the search is doing, or how it ended."),
            "conditions": {
                "type": "array",
                "items": condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "spaceSize": {"type": "integer", "description": "Candidates in the space."},
            "candidatesTotal": {
                "type": "integer",
                "description": "Candidates tried: the space cut to budget.maxCandidates.",
            },
            "candidatesDone": {
                "type": "integer",
                "description": "Candidates whose last round has finished.",
            },
            "candidates": {"type": "array", "items": candidate},
            "paretoFront": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Fully evaluated candidates no other beats on speedup, size "
                "ratio and metric drop at once.",
            },
            "best": best,
            "startTime": {"type": "string", "format": "date-time"},
            "completionTime": {"type": "string", "format": "date-time"},
        },
    }


SEARCH_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Best", "type": "string", "jsonPath": ".status.best.name"},
    {
        "name": "Speedup",
        "type": "number",
        "jsonPath": ".status.best.speedup",
        "description": "the best candidate's baseline p50 / compressed p50",
    },
    {
        "name": "Size-Ratio",
        "type": "number",
        "jsonPath": ".status.best.sizeRatio",
        "description": "the best candidate's baseline size / compressed size",
    },
    {
        "name": "Metric-Drop",
        "type": "number",
        "jsonPath": ".status.best.metricDrop",
        "description": "the best candidate's metric drop",
    },
    {"name": "Done", "type": "integer", "jsonPath": ".status.candidatesDone"},
    {"name": "Candidates", "type": "integer", "jsonPath": ".status.candidatesTotal"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Message",
        "type": "string",
        "jsonPath": ".status.message",
        "priority": 1,
        "description": "what the search is doing, or how it ended (kubectl get -o wide)",
    },
]


def build_search_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return crd_document(
        Names(SEARCH_KIND, SEARCH_PLURAL, SEARCH_SINGULAR, SEARCH_SHORT_NAMES),
        "A search over compression recipes: the kondense operator runs one CompressionJob per "
        "candidate, at most budget.parallelism at once, and keeps the best that meets the "
        "accuracy budget.",
        SEARCH_PRINTER_COLUMNS,
        search_spec_schema(),
        search_status_schema(),
        rules=[NAME_RULE],
    )


SEARCH_HEADER = (
    "# Generated by `kondense crd --kind search -o crds/compressionsearch.yaml` from\n"
    "# api/search.py. Do not edit: change the models and regenerate.\n"
)


def render_search_crd() -> str:
    """The CRD as the YAML text checked in at crds/compressionsearch.yaml."""
    return SEARCH_HEADER + yaml.safe_dump(build_search_crd(), sort_keys=False, width=100)
