"""Compression steps, one module each: `run(model, config, ctx) -> Model`.

Steps import torch/onnx/onnxruntime inside `run`, so importing this package stays light.
What a step is (its config, the input it needs, its device class) is declared once in
`kondense.api.steps`; this mapping is the runner's side of the same registry.
"""

from __future__ import annotations

from collections.abc import Callable

from kondense.api.spec import SpecModel
from kondense.runners.core import Model, StepContext
from kondense.runners.steps import distill, export, optimize, prune, quantize

StepFunction = Callable[[Model, SpecModel, StepContext], Model]

RUNS: dict[str, StepFunction] = {
    "export": export.run,  # type: ignore[dict-item]
    "optimize": optimize.run,  # type: ignore[dict-item]
    "quantize": quantize.run,  # type: ignore[dict-item]
    "prune": prune.run,  # type: ignore[dict-item]
    "distill": distill.run,  # type: ignore[dict-item]
}


def load_step(name: str) -> StepFunction:
    """The `run` function of step `name`."""
    return RUNS[name]
