"""What every stage of a run shares: the model handed from step to step, the step's context,
and the progress callback. Light: no torch or onnx imports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from kondense.api.spec import CompressionJobSpec, Data, ModelFormat, Task, TensorSpec


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

    def with_(self, **changes: Any) -> Model:
        return replace(self, **changes)


class Progress(Protocol):
    def __call__(self, description: str, completed: float, total: float | None) -> None: ...


def no_progress(description: str, completed: float, total: float | None) -> None:
    return None


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides its own config: the model's declared task and inputs, the
    job's data, the benchmark sequence length, and a work folder of its own. Not the recipe:
    choices that depend on other steps are settled in the plan (runners/plan.py)."""

    task: Task
    inputs: list[TensorSpec] | None
    data: Data
    sequence_length: int
    workdir: Path  # an empty directory of this step's own for what it writes
    progress: Progress = no_progress
    report: Callable[[str, Any], None] = lambda key, value: None  # adds a note to the report

    @classmethod
    def for_spec(
        cls,
        spec: CompressionJobSpec,
        workdir: Path,
        progress: Progress = no_progress,
        report: Callable[[str, Any], None] = lambda key, value: None,
    ) -> StepContext:
        return cls(
            task=spec.model.task,
            inputs=spec.model.inputs,
            data=spec.data,
            sequence_length=spec.evaluation.sequence_length,
            workdir=workdir,
            progress=progress,
            report=report,
        )
