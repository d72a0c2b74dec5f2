"""Pruning a torch module in place: magnitude (unstructured) and channel (structured) pruning.

Magnitude pruning uses `torch.nn.utils.prune` and makes the result permanent with
`prune.remove`, so no `weight_orig`/`weight_mask` reparametrisation is left behind.

Structured pruning uses torch-pruning's dependency graph (`torch_pruning.MetaPruner`): it traces
the network once and knows which layers must shrink together (a conv's filters, the next
layer's input channels, a flattened linear's columns, norms in between), which a hand-written
pass only gets right for plain sequential chains. The result is a physically smaller dense
network.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput
from kondense.api.spec import PruneScope

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Sparsity:
    """Zero weights among the chosen layers' weights, and over all parameters."""

    zeros: int
    weights: int
    parameters: int
    zero_parameters: int

    @property
    def fraction(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


def module_classes(names: list[str], *, field: str) -> tuple[type, ...]:
    """torch.nn classes named in the spec (e.g. Linear, Conv2d); unknown names are BadInput."""
    from torch import nn

    classes = []
    for name in names:
        cls = getattr(nn, name, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise BadInput(
                f"{name!r} is not a torch.nn module type; use names such as Linear, Conv2d, Conv1d",
                field=field,
            )
        classes.append(cls)
    return tuple(classes)


def weighted_layers(module: torch.nn.Module, classes: tuple[type, ...]) -> list[Any]:
    """The layers of the chosen types that carry a `weight` tensor, in definition order."""
    import torch

    # TorchScript keeps each submodule's Python class name in `original_name`.
    names = {c.__name__ for c in classes}
    return [
        m
        for m in module.modules()
        if (isinstance(m, classes) or getattr(m, "original_name", None) in names)
        and isinstance(getattr(m, "weight", None), torch.Tensor)
    ]


def measure_sparsity(module: torch.nn.Module, classes: tuple[type, ...]) -> Sparsity:
    layers = weighted_layers(module, classes)
    return Sparsity(
        zeros=sum(int((m.weight == 0).sum()) for m in layers),
        weights=sum(m.weight.numel() for m in layers),
        parameters=sum(p.numel() for p in module.parameters()),
        zero_parameters=sum(int((p == 0).sum()) for p in module.parameters()),
    )


def prune_magnitude(
    module: torch.nn.Module, amount: float, scope: PruneScope, classes: tuple[type, ...]
) -> Sparsity:
    """Zero the `amount` smallest-|w| weights of the chosen layers (per layer or ranked
    globally), permanently. Biases are left alone: they are few and pruning them hurts."""
    import torch
    from torch.nn.utils import prune

    layers = weighted_layers(module, classes)
    if not layers:
        names = ", ".join(c.__name__ for c in classes)
        raise BadInput(
            f"the model has no layers of type {names}; list the types it has (e.g. Linear)",
            field="prune.moduleTypes",
        )
    if isinstance(module, torch.jit.ScriptModule):
        _prune_script_weights(layers, amount, scope)
    elif scope is PruneScope.global_:
        prune.global_unstructured(
            [(m, "weight") for m in layers], pruning_method=prune.L1Unstructured, amount=amount
        )
    else:
        for layer in layers:
            prune.l1_unstructured(layer, "weight", amount=amount)
    if not isinstance(module, torch.jit.ScriptModule):
        for layer in layers:
            prune.remove(layer, "weight")  # bake the mask in: plain dense tensors with zeros
    return measure_sparsity(module, classes)


def _prune_script_weights(layers: list[Any], amount: float, scope: PruneScope) -> None:
    """The same L1 criterion for TorchScript layers, which cannot take pruning hooks: the
    mask is computed by torch's own L1Unstructured and multiplied into the weights."""
    import torch
    from torch.nn.utils import prune

    method = prune.L1Unstructured(amount)
    with torch.no_grad():
        if scope is PruneScope.global_:
            flat = torch.cat([layer.weight.reshape(-1) for layer in layers])
            mask = method.compute_mask(flat, default_mask=torch.ones_like(flat))
            for layer in layers:
                count = layer.weight.numel()
                layer.weight.mul_(mask[:count].reshape(layer.weight.shape))
                mask = mask[count:]
        else:
            for layer in layers:
                weight = layer.weight
                weight.mul_(method.compute_mask(weight, default_mask=torch.ones_like(weight)))


def prune_channels(
    module: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    amount: float,
    classes: tuple[type, ...],
) -> None:
    """Remove `amount` of the output channels of every chosen layer, by the L2 norm of each
    channel's weights, and rewire the layers that consume them.

    The layer that produces the model's output keeps its channels (its outputs are the
    contract), and so does everything the dependency graph ties to it.
    """
    import torch
    import torch_pruning as tp

    from kondense.runners.nn.training import accepted_inputs

    inputs = accepted_inputs(module, example_inputs)
    module.eval()
    with torch.no_grad():
        before = _output_shape(module, inputs)
    executed = _executed_layers(module, inputs, classes)
    if not executed:
        names = ", ".join(c.__name__ for c in classes)
        raise BadInput(
            f"the model runs no layers of type {names}; list the types it has (e.g. Linear)",
            field="prune.moduleTypes",
        )
    ignored = [m for m in module.modules() if not isinstance(m, classes) and _has_weight(m)]
    pruner = tp.pruner.MetaPruner(
        module,
        example_inputs=inputs,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=amount,
        ignored_layers=[executed[-1], *ignored],
    )
    pruner.step()
    with torch.no_grad():
        after = _output_shape(module, inputs)
    if after != before:
        raise BadInput(
            f"structured pruning changed the output shape from {before} to {after}; prune "
            "fewer module types",
            field="prune.moduleTypes",
        )


def _has_weight(module: torch.nn.Module) -> bool:
    import torch

    # Norm layers follow the channels of the layer before them; they are not pruning roots
    # but must be pruned along, so only other weighted layers (embeddings...) are held fixed.
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm, torch.nn.GroupNorm)
    return (
        isinstance(getattr(module, "weight", None), torch.nn.Parameter)
        and not isinstance(module, norms)
        and not any(True for _ in module.children())
    )


def _output_shape(module: torch.nn.Module, inputs: Mapping[str, Any]) -> tuple[int, ...]:
    output = module(**inputs)
    for attribute in ("logits", "last_hidden_state"):
        if getattr(output, attribute, None) is not None:
            output = getattr(output, attribute)
    if isinstance(output, tuple | list):
        output = output[0]
    return tuple(output.shape)


def _executed_layers(
    module: torch.nn.Module, inputs: Mapping[str, Any], classes: tuple[type, ...]
) -> list[Any]:
    """Chosen layers in the order the forward pass runs them (the last one makes the output)."""
    import torch

    order: list[Any] = []
    hooks = [
        layer.register_forward_hook(lambda m, _i, _o: order.append(m))
        for layer in weighted_layers(module, classes)
    ]
    try:
        with torch.no_grad():
            module(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(order))


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def compressed_weight_bytes(module: torch.nn.Module) -> tuple[int, int]:
    """(raw, gzip-compressed) size of the module's weights serialised as safetensors: what
    zeros buy on disk and over the wire."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    raw = save(_unshared(tensors))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as archive:
        archive.write(raw)
    return len(raw), buffer.getbuffer().nbytes


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied embeddings); copies are fine here.
    seen: set[int] = set()
    result = {}
    for name, tensor in tensors.items():
        pointer = tensor.untyped_storage().data_ptr()
        result[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return result


@dataclass(frozen=True)
class TransformerPruning:
    """What structured pruning removed from a transformer, summed over its layers."""

    heads_before: int
    heads_after: int
    ffn_before: int
    ffn_after: int


def prune_transformer(module: torch.nn.Module, amount: float) -> TransformerPruning:
    """Remove `amount` of each BERT-like layer's attention heads and feed-forward channels,
    the least important first (L2 norm of a head's query/key/value rows and output columns;
    of a channel's intermediate row and output column), leaving smaller dense Linear layers.

    transformers' own `prune_heads` is gone from recent releases, so the slicing is done here;
    the attention reshapes to (-1, head_size), so fewer heads need no other change.
    """
    import torch

    from kondense.runners.nn.layers import transformer_layers

    found = transformer_layers(module)
    if found is None:
        raise BadInput(
            "structured pruning found no transformer layers (encoder.layer) in this model; "
            "use method: magnitude",
            field="prune.method",
        )
    heads_before = heads_after = ffn_before = ffn_after = 0
    with torch.no_grad():
        for layer in found[0]:
            attention, ffn_in, ffn_out = _bert_parts(layer)
            size = attention.attention_head_size
            count = attention.num_attention_heads
            head_rows = [
                torch.cat([getattr(attention, n).weight for n in ("query", "key", "value")])
                .reshape(3, count, size, -1)
                .transpose(0, 1)
                .reshape(count, -1)
            ]
            output_cols = layer.attention.output.dense.weight.T.reshape(count, -1)
            score = torch.cat([*head_rows, output_cols], dim=1).norm(dim=1)
            kept = _top(score, amount)
            rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in kept.tolist()])
            for name in ("query", "key", "value"):
                setattr(attention, name, _slice_linear(getattr(attention, name), rows=rows))
            dense = layer.attention.output.dense
            layer.attention.output.dense = _slice_linear(dense, columns=rows)
            attention.num_attention_heads = len(kept)
            attention.all_head_size = len(kept) * size
            heads_before, heads_after = heads_before + count, heads_after + len(kept)

            score = torch.cat([ffn_in.weight, ffn_out.weight.T], dim=1).norm(dim=1)
            channels = torch.sort(_top(score, amount)).values
            layer.intermediate.dense = _slice_linear(ffn_in, rows=channels)
            layer.output.dense = _slice_linear(ffn_out, columns=channels)
            ffn_before, ffn_after = ffn_before + ffn_in.out_features, ffn_after + len(channels)
    return TransformerPruning(heads_before, heads_after, ffn_before, ffn_after)


def _bert_parts(layer: Any) -> tuple[Any, Any, Any]:
    try:
        return layer.attention.self, layer.intermediate.dense, layer.output.dense
    except AttributeError as error:
        raise BadInput(
            f"structured pruning knows BERT-like layers (attention.self, intermediate, output); "
            f"this model's layers are {type(layer).__name__}. Use method: magnitude",
            field="prune.method",
        ) from error


def _top(score: torch.Tensor, amount: float) -> torch.Tensor:
    """Indices of the highest-scoring (1 - amount) entries, at least one, in original order."""
    import torch

    keep = max(1, round(len(score) * (1 - amount)))
    return torch.sort(torch.topk(score, keep).indices).values


def _slice_linear(
    layer: torch.nn.Linear,
    rows: torch.Tensor | None = None,
    columns: torch.Tensor | None = None,
) -> torch.nn.Linear:
    """A new Linear keeping the given output rows and/or input columns of `layer`."""
    import torch

    weight: torch.Tensor = layer.weight
    if rows is not None:
        weight = weight[rows]
    if columns is not None:
        weight = weight[:, columns]
    bias: torch.Tensor | None = layer.bias
    if bias is not None and rows is not None:
        bias = bias[rows]
    sliced = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    sliced.weight.copy_(weight)
    if bias is not None:
        sliced.bias.copy_(bias)
    return sliced
