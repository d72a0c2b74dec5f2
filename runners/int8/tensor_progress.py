"""Tensor-by-tensor progress from inside ONNX Runtime's quantizers.

Their loops over the weights run inside one call (`quantize_dynamic`, `quantize_static`) and
report nothing; on a model of gigabytes that call is most of the step. While inside these
context managers, the per-weight methods those loops call are wrapped so that each weight done
is reported to the job's Progress (runners/progress.py decides what reaches the log). A method
a future ONNX Runtime renames is simply not wrapped: the stage is then reported at its start
and its end only. (FP16 reports its weights itself: runners/model/float16.py.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from kondense.runners.core import Progress

if TYPE_CHECKING:
    import onnx


def weights_to_quantize(
    graph: onnx.GraphProto, op_types: Collection[str], excluded: Collection[str] = ()
) -> int:
    """How many weights a quantizer of `op_types` will quantize: the float initializers of two
    dimensions or more (not biases or norm scales) feeding those ops, `excluded` nodes left out."""
    import onnx

    floats = {
        t.name
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2
    }
    return len(
        {
            name
            for node in graph.node
            if node.op_type in op_types and node.name not in excluded
            for name in node.input
            if name in floats
        }
    )


@contextlib.contextmanager
def _wrapped(owner: type, name: str, after: Callable[[Any], None]) -> Iterator[None]:
    """The method `owner.name(self, weight, ...)` calls `after(weight)` once it returns, while
    inside."""
    original = owner.__dict__.get(name)
    if original is None:
        yield
        return

    def reporting(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        after(args[1] if len(args) > 1 else next(iter(kwargs.values()), None))
        return result

    setattr(owner, name, reporting)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def _reported(
    progress: Progress, description: str, total: int, targets: list[tuple[type, str]]
) -> Iterator[Callable[[str], None]]:
    done: set[str] = set()

    def one(weight: str) -> None:
        if weight not in done:
            done.add(weight)
            progress(description, min(len(done), total), total)

    progress(description, 0, total)
    with contextlib.ExitStack() as stack:
        for owner, name in targets:
            stack.enter_context(_wrapped(owner, name, lambda w: one(getattr(w, "name", w))))
        yield one
    progress(description, total, total)


def quantizer_reports_weights(
    progress: Progress, description: str, total: int
) -> contextlib.AbstractContextManager[Callable[[str], None]]:
    """While inside, ONNX Runtime's quantizers report each weight they quantize as
    `description` i/`total` (see weights_to_quantize), and the stage as done on leaving."""
    from onnxruntime.quantization import base_quantizer, qdq_quantizer

    return _reported(
        progress,
        description,
        total,
        [
            # Dynamic INT8 (QOperator): per tensor, per channel.
            (base_quantizer.BaseQuantizer, "quantize_initializer_impl"),
            (base_quantizer.BaseQuantizer, "quantize_weight_per_channel_impl"),
            # Static INT8 (QDQ): each weight gets its Q/DQ pair here.
            (qdq_quantizer.QDQQuantizer, "_add_qdq_nodes_for_initializer"),
        ],
    )
