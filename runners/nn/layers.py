"""Finding the parts of a network that pruning and students reshape (pure torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def transformer_layers(module: torch.nn.Module) -> tuple[Any, str] | None:
    """The stack of transformer blocks (e.g. BERT's `encoder.layer`) and its attribute path."""
    from torch import nn

    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer"):
        owner: Any = getattr(module, "base_model", module)
        for part in path.split("."):
            owner = getattr(owner, part, None)
        if isinstance(owner, nn.ModuleList) and len(owner) > 1:
            return owner, path
    return None
