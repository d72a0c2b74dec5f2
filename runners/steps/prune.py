"""The prune step: magnitude (unstructured) or structured (channel) pruning of a PyTorch model,
optionally fine-tuned on spec.data.training to win back accuracy.

Input: an in-memory module (from an earlier step, or a safetensors model built by its
architecture) or a Hugging Face directory. Output: the pruned
module in memory (and, for Hugging Face models, saved as a directory); `export` turns it into
ONNX for the steps after it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput
from kondense.api.spec import FineTune, PruneConfig, PruneMethod, Task
from kondense.runners.core import Model, StepContext
from kondense.runners.model.assets import hf_assets_dir

if TYPE_CHECKING:
    import torch

    from kondense.runners.nn.training import TrainingBatch

UNSTRUCTURED_SPEED_NOTE = (
    "unstructured sparsity makes the model smaller when compressed, not faster: dense runtimes "
    "(ONNX Runtime, PyTorch) still multiply every zero. Use method: structured for speed."
)


def run(model: Model, config: PruneConfig, ctx: StepContext) -> Model:
    from kondense.runners.nn import layers, pruning, trainable

    task = ctx.task
    module = trainable.load_module(
        model, task, step="prune", torchscript=config.method is PruneMethod.magnitude
    )
    classes = pruning.module_classes(config.module_types, field="prune.moduleTypes")
    # The unpruned model is the target when an embedding model is fine-tuned without labels.
    keep_original = config.fine_tune is not None and task is Task.text_embedding
    original = copy.deepcopy(module) if keep_original else module
    notes: dict[str, Any] = {
        "method": config.method.value,
        "amount": config.amount,
        "parametersBefore": pruning.parameter_count(module),
    }
    if config.method is PruneMethod.magnitude:
        # What zeros buy is a smaller compressed file; measure it before and after.
        notes["weightsGzipBytesBefore"] = pruning.compressed_weight_bytes(module)[1]
    stream = None
    if config.fine_tune is not None:
        stream = trainable.training_stream(ctx, model, module, config.fine_tune.batch_size)

    if config.method is PruneMethod.magnitude:
        sparsity = pruning.prune_magnitude(module, config.amount, config.scope, classes)
        notes |= {
            "scope": config.scope.value,
            "sparsity": round(sparsity.fraction, 6),
            "zeroParameters": sparsity.zero_parameters,
            "speed": UNSTRUCTURED_SPEED_NOTE,
        }
    else:
        if trainable.is_torchscript(module):
            raise BadInput(
                "structured pruning resizes layers, which a TorchScript model cannot do; give "
                "the model as a Hugging Face directory or as a .safetensors file with "
                "spec.model.architecture, or use method: magnitude",
                field="prune.method",
            )
        if layers.transformer_layers(module) is not None:
            removed = pruning.prune_transformer(module, config.amount)
            notes |= {
                "attentionHeads": f"{removed.heads_before} -> {removed.heads_after}",
                "feedForwardChannels": f"{removed.ffn_before} -> {removed.ffn_after}",
            }
        else:
            example = trainable.example_inputs(ctx, stream)
            pruning.prune_channels(module, example, config.amount, classes)
    return _finish(module, original, model, config, ctx, stream, notes, classes)


def _finish(
    module: torch.nn.Module,
    original: torch.nn.Module,
    model: Model,
    config: PruneConfig,
    ctx: StepContext,
    stream: Any,
    notes: dict[str, Any],
    classes: tuple[type, ...],
) -> Model:
    """Fine-tune if asked, measure, report, and hand the pruned model on."""
    from kondense.runners.nn import pruning, trainable

    task = ctx.task

    if config.fine_tune is not None and stream is not None:
        loss = _fine_tune_loss(task, original)
        notes |= _fine_tune(module, stream, loss, config.fine_tune, ctx, config, classes)
        if config.method is PruneMethod.magnitude:
            # Fine-tuning kept the masked zeros; measure what the saved weights hold.
            sparsity = pruning.measure_sparsity(module, classes)
            notes["sparsity"] = round(sparsity.fraction, 6)
            notes["zeroParameters"] = sparsity.zero_parameters

    notes["parametersAfter"] = pruning.parameter_count(module)
    if config.method is PruneMethod.magnitude:
        notes["weightsBytes"], notes["weightsGzipBytes"] = pruning.compressed_weight_bytes(module)
    for key, value in notes.items():
        ctx.report(key, value)
    if config.method is PruneMethod.structured and trainable.is_huggingface(module):
        # Layers now differ in shape from what config.json describes, so the module travels
        # in memory (with the original tokenizer files) to export instead of as a directory.
        return model.with_(module=module, assets=hf_assets_dir(model))
    return trainable.write_back(module, model, ctx)


def _fine_tune(
    module: torch.nn.Module,
    stream: Any,
    loss: Any,
    settings: FineTune,
    ctx: StepContext,
    config: PruneConfig,
    classes: tuple[type, ...],
) -> dict[str, Any]:
    import torch

    from kondense.runners.nn import pruning
    from kondense.runners.nn.training import train

    masks = []
    if config.method is PruneMethod.magnitude:
        # Keep pruned weights at zero while training: the mask is re-applied before each step
        # and once after the last.
        masks = [(m, m.weight != 0) for m in pruning.weighted_layers(module, classes)]

    def reapply_masks() -> None:
        with torch.no_grad():
            for layer, mask in masks:
                layer.weight.mul_(mask)

    def masked_loss(m: torch.nn.Module, batch: TrainingBatch) -> torch.Tensor:
        reapply_masks()
        return loss(m, batch)

    result = train(
        module,
        stream,
        masked_loss if masks else loss,
        settings,
        seed=settings.seed,
        progress=ctx.progress,
        description="fine-tune",
    )
    reapply_masks()
    return result.notes("fineTune")


def _fine_tune_loss(task: Task, original: torch.nn.Module) -> Any:
    """Cross-entropy on the labels; embedding models without labels learn to reproduce the
    unpruned model's embeddings instead (cosine)."""
    import torch
    import torch.nn.functional as F

    from kondense.runners.nn.losses import cosine_loss
    from kondense.runners.nn.trainable import require_labels
    from kondense.runners.nn.training import forward

    original.eval()

    def loss(module: torch.nn.Module, batch: TrainingBatch) -> torch.Tensor:
        if task is Task.text_embedding and batch.labels is None:
            with torch.no_grad():
                target = forward(original, batch.inputs)
            output = forward(module, batch.inputs)
            return cosine_loss(output, target)
        labels = require_labels(batch, why="fine-tuning after pruning")
        return F.cross_entropy(forward(module, batch.inputs), torch.from_numpy(labels).long())

    return loss
