"""FP16 conversion of an ONNX file tensor by tensor, in memory that grows with its largest
tensor rather than with the model.

ONNX Runtime's float16 converter (`onnxruntime.transformers.float16`) holds the float32 model
and its float16 copy at once: 2.5x a 2.4 GB model's bytes. Its decisions, though (which ops
and nodes stay float32, the Casts at the graph's inputs, outputs and blocked nodes, which
initializers turn float16), read only the graph and each tensor's type and dims. So here it
converts the graph with the weights left out (each stands in as a placeholder reference) and
the weights follow one at a time, in chunks, straight from the source's file (or the loaded
model) to the output, through the converter's own value conversion: the result is the graph
the converter gives, with the same bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from kondense.runners.model import onnx_files

if TYPE_CHECKING:
    import onnx

    from kondense.runners.core import Progress

# Tensors of this many bytes or more are converted one at a time after the graph; smaller
# ones (shape constants, Resize scales, which shape inference reads) stay in the graph. The
# figure is the size at which kondense's saves move a tensor to external data.
STREAMED_MIN_BYTES = 1024
# Each weight is read, converted and written in pieces of this many bytes (a multiple of 4),
# so the largest tensor is never held whole in float32 with its temporaries.
CHUNK_BYTES = 16 << 20
# Placeholder locations stand for the weights while the converter works on the graph.
_PLACEHOLDER = "kondense-weight-"


@dataclass
class _Weight:
    """Where one tensor's bytes are until written: a range of a source file, or bytes."""

    data_type: int
    length: int
    file: Path | None = None
    offset: int = 0
    data: bytes = b""

    def chunks(self, files: dict[Path, BinaryIO]) -> Iterator[bytes]:
        if self.file is None:
            view = memoryview(self.data)
            for start in range(0, self.length, CHUNK_BYTES):
                yield bytes(view[start : start + CHUNK_BYTES])
            return
        if self.file not in files:
            files[self.file] = self.file.open("rb")
        handle = files[self.file]
        handle.seek(self.offset)
        for start in range(0, self.length, CHUNK_BYTES):
            chunk = handle.read(min(CHUNK_BYTES, self.length - start))
            if not chunk:
                raise ValueError(f"{self.file.name} ends before the tensor data it should hold")
            yield chunk


def convert_to_float16(
    source: Path,
    target: Path,
    *,
    keep_io_types: bool,
    op_block_list: Sequence[str],
    node_block_list: Sequence[str],
    progress: Progress,
    description: str,
) -> Path:
    """The ONNX model at `source` converted to float16 by ONNX Runtime's converter (same
    arguments, defaults otherwise) and saved at `target`; each float32 weight written is
    reported to `progress` as `description` i/total.

    The weights sit in `<target>.data` when the source keeps any in external data or when
    they are over onnx_files.EXTERNAL_DATA_THRESHOLD, inside the model otherwise.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load_model(str(source), load_external_data=False)
    from_files = any(_is_external(t) for t in onnx_files.iter_tensors(model))
    weights = _detach_weights(model, source.parent)
    with _value_info_from_dims():
        converted = convert_float_to_float16(
            model,
            keep_io_types=keep_io_types,
            op_block_list=list(op_block_list),
            node_block_list=list(node_block_list) or None,
            # The graph without its weights is small at any model size, so shape inference
            # (which the converter needs to put Casts before blocked ops) always runs.
            disable_shape_infer=False,
        )
    del model
    # keep_io_types appends the input Casts at the end of the node list; ONNX Runtime does not
    # mind, but onnx.checker (and every tool that validates) requires topological order.
    wrapped = OnnxModel(converted)
    wrapped.topological_sort()
    converted = wrapped.model
    external = from_files or _bytes_after(converted, weights) > onnx_files.EXTERNAL_DATA_THRESHOLD
    floats = sum(w.data_type == onnx.TensorProto.FLOAT for w in weights.values())
    report = _counter(progress, description, floats)
    _write_weights(converted, weights, target, external=external, report=report)
    onnx.save_model(converted, str(target))
    return target


def _is_external(tensor: onnx.TensorProto) -> bool:
    from onnx import TensorProto

    return tensor.data_location == TensorProto.EXTERNAL


def _external_info(tensor: onnx.TensorProto, folder: Path) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor; a missing length runs to the file's end."""
    entries = {e.key: e.value for e in tensor.external_data}
    file = folder / entries["location"]
    offset = int(entries.get("offset", 0))
    length = int(entries["length"]) if "length" in entries else file.stat().st_size - offset
    return file, offset, length


def _placeholder(tensor: onnx.TensorProto, index: int) -> None:
    from onnx import TensorProto

    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=f"{_PLACEHOLDER}{index}")


def _weight_key(tensor: onnx.TensorProto) -> str | None:
    for entry in tensor.external_data:
        if entry.key == "location" and entry.value.startswith(_PLACEHOLDER):
            return entry.value
    return None


def _detach_weights(model: onnx.ModelProto, folder: Path) -> dict[str, _Weight]:
    """Take the data of every tensor of STREAMED_MIN_BYTES or more out of `model` (loaded
    without external data), leaving a placeholder reference; smaller external tensors are
    read in, as shape inference may need their values. Returns placeholder -> _Weight."""
    from onnx import TensorProto
    from onnx.external_data_helper import load_external_data_for_tensor

    weights: dict[str, _Weight] = {}
    for tensor in onnx_files.iter_tensors(model):
        index = len(weights)
        if _is_external(tensor):
            file, offset, length = _external_info(tensor, folder)
            if length < STREAMED_MIN_BYTES:
                load_external_data_for_tensor(tensor, str(folder))
                del tensor.external_data[:]
                tensor.data_location = TensorProto.DEFAULT
                continue
            weight = _Weight(tensor.data_type, length, file=file, offset=offset)
        elif len(tensor.raw_data) >= STREAMED_MIN_BYTES:
            weight = _Weight(tensor.data_type, len(tensor.raw_data), data=tensor.raw_data)
        else:
            continue
        _placeholder(tensor, index)
        weights[f"{_PLACEHOLDER}{index}"] = weight
    return weights


@contextlib.contextmanager
def _value_info_from_dims() -> Iterator[None]:
    """While inside, the converter types a converted initializer from its dims instead of
    reading its values (`numpy_helper.to_array(tensor).shape`, which would load a
    placeholder's data): the same shape, no data read."""
    from onnx import helper
    from onnxruntime.transformers import float16

    original = float16.make_value_info_from_tensor

    def from_dims(tensor: Any) -> Any:
        return helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))

    float16.make_value_info_from_tensor = from_dims
    try:
        yield
    finally:
        float16.make_value_info_from_tensor = original


def _converts(weight: _Weight, tensor: onnx.TensorProto) -> bool:
    """Whether the converter turned this float32 tensor into float16."""
    from onnx import TensorProto

    return weight.data_type == TensorProto.FLOAT and tensor.data_type == TensorProto.FLOAT16


def _bytes_after(model: onnx.ModelProto, weights: dict[str, _Weight]) -> int:
    """Bytes of the detached weights once converted."""
    total = 0
    for tensor in onnx_files.iter_tensors(model):
        key = _weight_key(tensor)
        if key is not None:
            weight = weights[key]
            total += weight.length // 2 if _converts(weight, tensor) else weight.length
    return total


def _to_float16(chunk: bytes) -> bytes:
    """float32 bytes as float16 bytes, by the converter's own value conversion (the same
    clamping of values beyond float16's range); element-wise, so chunk by chunk is exact."""
    import numpy as np
    from onnxruntime.transformers.float16 import convert_np_to_float16

    return bytes(convert_np_to_float16(np.frombuffer(chunk, dtype=np.float32)).tobytes())


def _counter(progress: Progress, description: str, total: int) -> Callable[[], None]:
    done = [0]
    progress(description, 0, total)

    def one() -> None:
        done[0] += 1
        progress(description, done[0], total)

    return one


def _write_weights(
    model: onnx.ModelProto,
    weights: dict[str, _Weight],
    target: Path,
    *,
    external: bool,
    report: Callable[[], None],
) -> None:
    """Each placeholder's data, converted where the converter made its tensor float16, one
    tensor at a time: appended to `<target>.data` when `external`, else put in the tensor."""
    from onnx import TensorProto

    data = target.with_name(target.name + ".data")
    data.unlink(missing_ok=True)
    files: dict[Path, BinaryIO] = {}
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(data.open("wb")) if external else None
        stack.callback(lambda: [handle.close() for handle in files.values()])
        for tensor in onnx_files.iter_tensors(model):
            key = _weight_key(tensor)
            if key is None:
                continue
            weight = weights.pop(key)
            convert = _converts(weight, tensor)
            pieces = (_to_float16(c) if convert else c for c in weight.chunks(files))
            del tensor.external_data[:]
            if out is not None:
                offset = out.tell()
                for piece in pieces:
                    out.write(piece)
                tensor.data_location = TensorProto.EXTERNAL
                for key, value in (
                    ("location", data.name),
                    ("offset", offset),
                    ("length", out.tell() - offset),
                ):
                    tensor.external_data.add(key=key, value=str(value))
            else:
                tensor.data_location = TensorProto.DEFAULT
                tensor.raw_data = b"".join(pieces)
            if weight.data_type == TensorProto.FLOAT:
                report()
