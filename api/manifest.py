"""Reading CompressionJob manifests: YAML text to a validated `CompressionJob`, every problem
named by its camelCase field path (`spec.steps[2].quantize.mode: ...`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kondense.api.errors import BadInput
from kondense.api.spec import CompressionJob


class _Loader(yaml.SafeLoader):
    """YAML as kubectl reads it: `1e-5` is a number (YAML 1.2), where PyYAML's YAML 1.1 rules
    make it a string unless it has a dot."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def load_manifest_text(text: str, source: str) -> Any:
    """The YAML (or JSON) document in `text`; BadInput with line and column on a syntax error."""
    try:
        documents = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise BadInput(f"{source}{where}: invalid YAML: {problem}") from error
    if len(documents) != 1:
        raise BadInput(f"{source}: expected one CompressionJob document, found {len(documents)}")
    return documents[0]


def field_path(location: tuple[int | str, ...]) -> str:
    """A pydantic error location as a manifest path: spec.steps[2].quantize.mode."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def validation_problems(error: ValidationError) -> list[str]:
    """One line per problem, each starting with the camelCase field path."""
    lines: list[str] = []
    for problem in error.errors():
        where = field_path(tuple(problem["loc"]))
        message = str(problem["msg"]).removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field; check the spelling (see `kondense schema`)"
        elif problem["type"] == "missing":
            message = "required field is missing"
        if problem["type"] == "value_error" and message.startswith("spec."):
            # Cross-field rules name their own fields; several arrive in one message.
            lines.extend("spec." + part for part in message.removeprefix("spec.").split("; spec."))
            continue
        lines.append(f"{where}: {message}")
    return lines


def parse_job(document: Any, source: str) -> CompressionJob:
    """The manifest as a CompressionJob; BadInput listing every problem, one a line."""
    if not isinstance(document, dict):
        raise BadInput(
            f"{source}: expected a CompressionJob mapping, found {type(document).__name__}"
        )
    try:
        return CompressionJob.model_validate(document)
    except ValidationError as error:
        raise BadInput("\n".join(validation_problems(error))) from error


def read_job(path: Path) -> CompressionJob:
    if not path.is_file():
        raise BadInput(f"{path}: no such manifest file")
    return parse_job(load_manifest_text(path.read_text(encoding="utf-8"), str(path)), str(path))
