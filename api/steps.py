"""What each step is, declared once: its config model, the model it takes, the device it needs
and the label `kubectl get` shows. STEP_NAMES, the CRD's step rule, the runner's ONNX
hand-off, the recipe label, node-pool selection and the fp16 speed verdict all read this.

Adding a step: a config model and a field on `Step` (api/spec.py), a `StepInfo` here, and a
module with `run(model, config, ctx) -> Model` in runners/steps/ (registered in its RUNS).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from kondense.api.spec import (
    DistillConfig,
    ExportConfig,
    OptimizeConfig,
    PruneConfig,
    QuantizeConfig,
    QuantizeMode,
    SpecModel,
    Step,
)


class ModelInput(StrEnum):
    """The kind of model a step takes; the runner exports a torch model before an ONNX step."""

    onnx = "onnx"
    torch = "torch"
    any = "any"


class DeviceClass(StrEnum):
    """What a step needs of its node. The operator maps each class to a node pool of its own
    configuration, so no pool name is written into the contract."""

    gpu = "gpu"
    cpu = "cpu"  # no accelerator needed


@dataclass(frozen=True)
class StepInfo:
    name: str
    config: type[SpecModel]
    input: ModelInput
    # The device class a config of this step needs, and its label in the recipe summary.
    device: Callable[[SpecModel], DeviceClass]
    label: Callable[[SpecModel], str]


def _cpu(config: SpecModel) -> DeviceClass:
    return DeviceClass.cpu


def _quantize_device(config: SpecModel) -> DeviceClass:
    assert isinstance(config, QuantizeConfig)
    # fp16 pays off only with GPU kernels; INT8 kernels are the CPU's.
    return DeviceClass.gpu if config.mode is QuantizeMode.fp16 else DeviceClass.cpu


def _quantize_label(config: SpecModel) -> str:
    assert isinstance(config, QuantizeConfig)
    return "fp16" if config.mode is QuantizeMode.fp16 else f"int8-{config.mode.value}"


def _prune_label(config: SpecModel) -> str:
    assert isinstance(config, PruneConfig)
    return f"prune-{config.method.value}"


STEPS: dict[str, StepInfo] = {
    info.name: info
    for info in (
        StepInfo("export", ExportConfig, ModelInput.any, _cpu, lambda c: "export"),
        StepInfo("optimize", OptimizeConfig, ModelInput.onnx, _cpu, lambda c: "optimize"),
        StepInfo("quantize", QuantizeConfig, ModelInput.onnx, _quantize_device, _quantize_label),
        StepInfo("prune", PruneConfig, ModelInput.torch, _cpu, _prune_label),
        StepInfo("distill", DistillConfig, ModelInput.torch, _cpu, lambda c: "distill"),
    )
}

STEP_NAMES: tuple[str, ...] = tuple(STEPS)
ONNX_STEPS = frozenset(name for name, info in STEPS.items() if info.input is ModelInput.onnx)

if set(STEP_NAMES) != set(Step.model_fields):  # pragma: no cover - caught by every import
    raise RuntimeError("api/steps.py STEPS and the fields of api/spec.py Step differ")


def step_info(step: Step) -> StepInfo:
    return STEPS[step.name]


def recipe_device(steps: Sequence[Step]) -> DeviceClass:
    """gpu when any step needs one, cpu otherwise."""
    needs = {step_info(step).device(step.config) for step in steps}
    return DeviceClass.gpu if DeviceClass.gpu in needs else DeviceClass.cpu


def recipe_label(steps: Sequence[Step]) -> str:
    """The steps in one short string for `kubectl get`: export>optimize>int8-dynamic."""
    return ">".join(step_info(step).label(step.config) for step in steps)
