"""What the training steps (prune, distill) share: a trainable torch module from a `Model`,
its training data as a stream, example inputs, and writing a changed module back out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kondense.api.errors import BadInput
from kondense.api.spec import DataSource, ModelFormat, Task
from kondense.runners.core import Model, StepContext
from kondense.runners.model.assets import copy_assets, hf_assets_dir, tokenizer_dir
from kondense.runners.model.torch_modules import is_huggingface, load_huggingface
from kondense.runners.nn.training import BatchStream, TrainingBatch

if TYPE_CHECKING:
    import torch

    from kondense.runners.io.data import Batch


def load_module(
    model: Model, task: Task, *, step: str, torchscript: bool = False
) -> torch.nn.Module:
    """The model as a torch module with real layers to prune or train.

    In-memory modules (from an earlier step, or a safetensors model built by its architecture
    when it was loaded) and Hugging Face directories qualify; TorchScript
    too when `torchscript` (its weights can change in place, its layers cannot be resized).
    torch.export programs and ONNX are graphs without editable layers and are refused.
    """
    if model.module is not None:
        return model.module
    if torchscript and model.format is ModelFormat.torchscript:
        from kondense.runners.model.torch_modules import load_torchscript

        return load_torchscript(model.path)
    if model.format is not ModelFormat.huggingface:
        kinds = "a Hugging Face directory, a .safetensors file with spec.model.architecture" + (
            " or TorchScript" if torchscript else ""
        )
        raise BadInput(
            f"the {step} step needs a PyTorch model with layers ({kinds}); "
            f"{model.format.value} models are compiled graphs whose layers cannot be changed. "
            f"Give the Hugging Face directory, or put {step} before export",
            field="spec.model.uri",
        )
    return load_huggingface(model.path, task)


def is_torchscript(module: Any) -> bool:
    import torch

    return isinstance(module, torch.jit.ScriptModule)


def input_names(module: torch.nn.Module, tokenizer: Path | None) -> list[str]:
    """The names a batch must carry: the tokenizer's model inputs for text models, the
    forward signature's named arguments otherwise."""
    if tokenizer is not None:
        from kondense.runners.io.data import load_tokenizer

        names = load_tokenizer(tokenizer).model_input_names
        return [n for n in names if n in _forward_parameters(module)] or list(names)
    return _forward_parameters(module)


def _forward_parameters(module: torch.nn.Module) -> list[str]:
    from kondense.runners.model.torch_modules import module_signature

    return module_signature(module, None)


def training_stream(
    ctx: StepContext, model: Model, module: torch.nn.Module, batch_size: int
) -> BatchStream:
    """spec.data.training as a re-startable stream of batches (one pass per call)."""
    source = ctx.data.training
    if source is None:
        raise BadInput(
            "this step trains and needs training data; add data.training.uri (.npz or .jsonl)",
            field="spec.data.training",
        )
    return data_stream(source, model, module, batch_size, ctx.sequence_length)


def data_stream(
    source: DataSource, model: Model, module: torch.nn.Module, batch_size: int, seq_len: int
) -> BatchStream:
    from kondense.runners.io.data import iter_batches

    tokenizer = tokenizer_dir(hf_assets_dir(model))
    names = input_names(module, tokenizer)

    def stream() -> Iterator[TrainingBatch]:
        batches = iter_batches(
            source,
            input_names=names,
            tokenizer_dir=tokenizer,
            batch_size=batch_size,
            sequence_length=seq_len,
        )
        return (trim_padding(batch) for batch in batches)

    return stream


def trim_padding(batch: Batch) -> Batch:
    """Drop the padding columns no sample in the batch uses: text is padded to the full
    sequence length, and attention masks them anyway, so training on them only costs time."""
    from kondense.runners.io.data import Batch

    mask = batch.inputs.get("attention_mask")
    if mask is None or mask.ndim != 2:
        return batch
    columns = np.flatnonzero(np.any(mask, axis=0))
    used = int(columns[-1]) + 1 if columns.size else 1
    inputs = {
        name: array[:, :used] if array.ndim == 2 and array.shape == mask.shape else array
        for name, array in batch.inputs.items()
    }
    return Batch(inputs=inputs, labels=batch.labels)


def require_labels(batch: TrainingBatch, *, why: str) -> np.ndarray:
    if batch.labels is None:
        raise BadInput(
            f"{why} needs labels, and the training data has none; add a 'labels' array to "
            'the .npz or a "label" to each .jsonl line',
            field="spec.data.training.uri",
        )
    return batch.labels


def example_inputs(ctx: StepContext, stream: BatchStream | None) -> dict[str, torch.Tensor]:
    """A small batch to trace the network with: spec.model.inputs, else the first training
    batch, else the first evaluation batch."""
    import torch

    from kondense.runners.nn.training import to_tensors

    declared = ctx.inputs
    if declared:
        return {t.name: torch.ones(t.shape, dtype=getattr(torch, t.dtype.value)) for t in declared}
    if stream is not None:
        for batch in stream():
            return {k: v[:2] for k, v in to_tensors(batch.inputs).items()}
    raise BadInput(
        "structured pruning traces the network and needs example inputs; declare "
        "spec.model.inputs or add spec.data.training",
        field="spec.model.inputs",
    )


def write_back(module: torch.nn.Module, model: Model, ctx: StepContext) -> Model:
    """The changed module as the step's output: Hugging Face models are also saved as a
    directory (config with the new sizes, safetensors, tokenizer) so they load anywhere."""
    if is_torchscript(module):
        import torch

        # A file, not an in-memory module: TorchScript saves and exports as it loaded.
        target = ctx.workdir / "model.ts"
        torch.jit.save(module, str(target))
        return model.with_(path=target, format=ModelFormat.torchscript, module=None)
    if not is_huggingface(module):
        return model.with_(module=module)
    target = ctx.workdir / "model"
    # The original's assets first: save_pretrained then writes config.json with the new sizes.
    copy_assets(target, model)
    module.save_pretrained(str(target), safe_serialization=True)  # type: ignore[operator]
    return model.with_(path=target, format=ModelFormat.huggingface, module=module, assets=target)
