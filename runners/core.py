"""What every stage of a run shares: the model handed from step to step, the step's context,
and the progress callback. Light: no torch or onnx imports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from kondense.api.spec import CompressionJobSpec, ModelFormat


@dataclass(frozen=True)
class Model:
    """A model between steps.

    `path` is the file (model.onnx, model.pt2, model.ts) or the Hugging Face directory.
    `module` holds an in-memory torch.nn.Module when a step (prune, distill) produced one
    that has no file yet; `export` turns it into ONNX. `assets` is a directory of files a
    consumer needs beside the model (tokenizer, config), copied into the output.
    """

    path: Path
    format: ModelFormat
    module: Any = None
    assets: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> Model:
        return replace(self, **changes)


class Progress(Protocol):
    def __call__(self, description: str, completed: float, total: float | None) -> None: ...


def no_progress(description: str, completed: float, total: float | None) -> None:
    return None


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides its own config."""

    spec: CompressionJobSpec
    workdir: Path  # an empty directory of this step's own for what it writes
    progress: Progress = no_progress
    report: Callable[[str, Any], None] = lambda key, value: None  # adds a note to the report
