"""Students derived from a teacher: shallower transformers, narrower CNNs (pure torch, no I/O)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kondense.runners.nn.layers import transformer_layers

if TYPE_CHECKING:
    import torch

# Layers a derived CNN student shrinks; anything else (norms, embeddings) follows or stays.
STUDENT_LAYER_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d")


def kept_layer_indices(count: int, keep_every: int) -> list[int]:
    """Every k-th layer counted from the first k (k-1, 2k-1, ...), so the last layer stays
    when k divides the depth: its output space is the one the teacher's head expects."""
    kept = list(range(keep_every - 1, count, keep_every))
    return kept or [count - 1]


def shallow_student(teacher: torch.nn.Module, keep_every: int) -> tuple[torch.nn.Module, list[int]]:
    """A copy of a transformer teacher keeping every k-th block, initialised from the teacher."""
    from torch import nn

    found = transformer_layers(teacher)
    assert found is not None, "not a transformer"
    student = copy.deepcopy(teacher)
    layers, path = found
    kept = kept_layer_indices(len(layers), keep_every)
    owner: Any = getattr(student, "base_model", student)
    *parents, leaf = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    setattr(owner, leaf, nn.ModuleList([getattr(owner, leaf)[i] for i in kept]))
    config = getattr(student, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(kept)
    return student, kept


def narrow_student(
    teacher: torch.nn.Module, example_inputs: Mapping[str, torch.Tensor], width: float
) -> torch.nn.Module:
    """The teacher with each layer keeping `width` of its channels (structured pruning by
    weight norm), initialised from the teacher's surviving weights."""
    from kondense.runners.nn.pruning import module_classes, prune_channels

    student = copy.deepcopy(teacher)
    classes = module_classes(list(STUDENT_LAYER_TYPES), field="distill.student.width")
    prune_channels(student, example_inputs, 1 - width, classes)
    return student


def reinitialise(module: torch.nn.Module, seed: int) -> None:
    """Fresh random weights for every layer that can reset itself, reproducibly."""
    import torch

    torch.manual_seed(seed)
    for layer in module.modules():
        reset = getattr(layer, "reset_parameters", None)
        if callable(reset):
            reset()
