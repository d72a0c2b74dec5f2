"""Model inputs for calibration, evaluation and benchmarking: files (.npz, .jsonl) or synthetic.

`iter_batches` streams a data file as batches of arrays named like the model's inputs;
`synthetic_batches` builds inputs from declared shapes for models that come without data.
Files are read from local paths; `iter_batches` fetches remote URIs through `storage` first.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kondense.api.errors import BadInput
from kondense.api.spec import DataSource

LABELS = "labels"
# Token ids drawn for synthetic text inputs stay below this when the vocabulary is unknown.
DEFAULT_VOCAB_SIZE = 1000


@dataclass
class Batch:
    """One batch: arrays keyed by model input name, and the labels when the data has them."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


@dataclass(frozen=True)
class InputSignature:
    """A model input as declared: dims are ints, or None/str for dynamic ones."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype[Any]


def iter_batches(
    source: DataSource,
    *,
    input_names: Sequence[str],
    tokenizer_dir: Path | None,
    batch_size: int,
    sequence_length: int,
) -> Iterator[Batch]:
    """Stream at most `source.samples` samples of `source` as batches of `batch_size`.

    `.npz`: one array per model input (same names), plus optional `labels`; extra arrays are
    ignored. `.jsonl`: one {"text": ..., "label": ...} object a line, tokenized with the
    tokenizer in `tokenizer_dir`, padded/truncated to `sequence_length`; only the inputs in
    `input_names` are kept. Raises BadInput naming the file when the data does not fit.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    from kondense.runners.io import storage

    if storage.is_local(source.uri):
        yield from _iter_local(
            storage.local_path(source.uri),
            source.samples,
            input_names,
            tokenizer_dir,
            batch_size,
            sequence_length,
        )
        return
    with tempfile.TemporaryDirectory(prefix="kondense-data-") as scratch:
        path = storage.fetch(source.uri, Path(scratch))
        yield from _iter_local(
            path, source.samples, input_names, tokenizer_dir, batch_size, sequence_length
        )


def _iter_local(
    path: Path,
    samples: int,
    input_names: Sequence[str],
    tokenizer_dir: Path | None,
    batch_size: int,
    sequence_length: int,
) -> Iterator[Batch]:
    if not path.is_file():
        raise BadInput(f"data file {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        yield from _iter_npz(path, samples, input_names, batch_size)
    elif suffix == ".jsonl":
        yield from _iter_jsonl(
            path, samples, input_names, tokenizer_dir, batch_size, sequence_length
        )
    else:
        raise BadInput(
            f"data file {path.name}: unsupported format {suffix or '(no extension)'}; "
            "use .npz (arrays named like the model inputs) or .jsonl (text lines)"
        )


def _iter_npz(
    path: Path, samples: int, input_names: Sequence[str], batch_size: int
) -> Iterator[Batch]:
    from kondense.runners.io import storage
    from kondense.runners.io.archives import check_zip_members

    if zipfile.is_zipfile(path):
        check_zip_members(path, storage.fetch_policy().max_bytes, None)
    try:
        # allow_pickle=False: an object array in a data file must not run code either.
        archive = np.load(path, allow_pickle=False)
    except Exception as error:
        raise BadInput(f"data file {path.name} is not a readable .npz archive: {error}") from error
    with archive:
        found = sorted(archive.files)
        missing = [name for name in input_names if name not in archive.files]
        if missing:
            raise BadInput(
                f"data file {path.name} has arrays {found} but the model expects inputs "
                f"{list(input_names)} (missing {missing}); name the arrays like the model inputs"
            )
        try:
            arrays = {name: archive[name] for name in input_names}
            labels = archive[LABELS] if LABELS in archive.files else None
        except ValueError as error:  # object arrays need pickle, which stays off
            raise BadInput(f"data file {path.name}: {error}") from error
    lengths = {name: (len(a) if a.ndim else 0) for name, a in arrays.items()}
    if labels is not None:
        lengths[LABELS] = len(labels) if labels.ndim else 0
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise BadInput(
            f"data file {path.name}: arrays must share their first (sample) dimension, found "
            + ", ".join(f"{name} {tuple(archive_shape(a))}" for name, a in _shapes(arrays, labels))
        )
    count = min(samples, next(iter(lengths.values())))
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        yield Batch(
            inputs={name: np.ascontiguousarray(a[start:stop]) for name, a in arrays.items()},
            labels=None if labels is None else np.asarray(labels[start:stop]),
        )


def _shapes(
    arrays: dict[str, np.ndarray], labels: np.ndarray | None
) -> list[tuple[str, np.ndarray]]:
    items = list(arrays.items())
    if labels is not None:
        items.append((LABELS, labels))
    return items


def archive_shape(array: np.ndarray) -> tuple[int, ...]:
    return tuple(int(d) for d in array.shape)


def _iter_jsonl(
    path: Path,
    samples: int,
    input_names: Sequence[str],
    tokenizer_dir: Path | None,
    batch_size: int,
    sequence_length: int,
) -> Iterator[Batch]:
    if tokenizer_dir is None:
        raise BadInput(
            f"data file {path.name} is text (.jsonl) but the model has no tokenizer; give a "
            "Hugging Face model with its tokenizer files, or .npz data with the model inputs"
        )
    tokenizer = load_tokenizer(tokenizer_dir)
    label_ids = _label_ids(tokenizer_dir)
    texts: list[str] = []
    labels: list[int] = []
    taken = 0
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if taken >= samples:
                break
            if not line.strip():
                continue
            text, label = _parse_line(path, number, line, label_ids)
            texts.append(text)
            if label is not None:
                labels.append(label)
            if labels and len(labels) != len(texts):
                raise BadInput(
                    f"data file {path.name} line {number}: some lines have a label and some "
                    "do not; label every line or none"
                )
            taken += 1
            if len(texts) == batch_size:
                yield tokenize_texts(
                    tokenizer, texts, labels, input_names, sequence_length, path.name
                )
                texts, labels = [], []
    if texts:
        yield tokenize_texts(tokenizer, texts, labels, input_names, sequence_length, path.name)
    if taken == 0:
        raise BadInput(f"data file {path.name} has no text lines")


def _parse_line(
    path: Path, number: int, line: str, label_ids: dict[str, int]
) -> tuple[str, int | None]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadInput(f"data file {path.name} line {number} is not JSON: {error.msg}") from error
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise BadInput(
            f'data file {path.name} line {number}: expected {{"text": "...", "label": ...}}'
        )
    label = record.get("label")
    if label is None:
        return record["text"], None
    if isinstance(label, bool) or not isinstance(label, int | str):
        raise BadInput(f"data file {path.name} line {number}: label must be an integer or a name")
    if isinstance(label, str):
        if label not in label_ids:
            raise BadInput(
                f"data file {path.name} line {number}: label {label!r} is not one of the "
                f"model's labels {sorted(label_ids)}; use the class index or a name from "
                "config.json label2id"
            )
        label = label_ids[label]
    return record["text"], label


def tokenize_texts(
    tokenizer: Any,
    texts: list[str],
    labels: list[int],
    input_names: Sequence[str],
    sequence_length: int,
    source: str,
) -> Batch:
    """One batch of `texts`, padded or truncated to `sequence_length`; `source` names the data
    in errors."""
    encoded = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=sequence_length,
        return_tensors="np",
    )
    missing = [name for name in input_names if name not in encoded]
    if missing:
        raise BadInput(
            f"data {source}: the tokenizer produces {sorted(encoded.keys())} but the model "
            f"expects inputs {list(input_names)}; use .npz data with those arrays"
        )
    return Batch(
        inputs={name: np.asarray(encoded[name], dtype=np.int64) for name in input_names},
        labels=np.asarray(labels, dtype=np.int64) if labels else None,
    )


def load_tokenizer(tokenizer_dir: Path) -> Any:
    """The model's own tokenizer, offline (no hub lookups)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except Exception as error:
        raise BadInput(
            f"no usable tokenizer in {tokenizer_dir}: {error}; keep tokenizer.json or vocab "
            "files beside the model"
        ) from error


def _label_ids(tokenizer_dir: Path) -> dict[str, int]:
    config = tokenizer_dir / "config.json"
    if not config.is_file():
        return {}
    try:
        label2id = json.loads(config.read_text()).get("label2id") or {}
        return {str(name): int(index) for name, index in label2id.items()}
    except (ValueError, AttributeError):
        return {}


def vocab_size(tokenizer_dir: Path | None) -> int:
    """The model's vocabulary size from config.json, or a small safe default."""
    if tokenizer_dir is not None and (tokenizer_dir / "config.json").is_file():
        try:
            size = json.loads((tokenizer_dir / "config.json").read_text()).get("vocab_size")
            if isinstance(size, int) and size > 0:
                return size
        except ValueError:
            pass
    return DEFAULT_VOCAB_SIZE


# --- synthetic inputs ------------------------------------------------------------------------


def onnx_input_signatures(model_path: Path) -> list[InputSignature]:
    """The graph inputs an ONNX model declares (initializers excluded), with their dims."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    signatures = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims: list[int | str | None] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        signatures.append(InputSignature(value.name, tuple(dims), dtype))
    return signatures


def concrete_shape(
    signature: InputSignature, batch_size: int, sequence_length: int
) -> tuple[int, ...]:
    """Fix dynamic dims: the first is the batch, later ones the sequence length."""
    shape = []
    for index, dim in enumerate(signature.shape):
        if isinstance(dim, int):
            shape.append(dim)
        else:
            shape.append(batch_size if index == 0 else sequence_length)
    return tuple(shape)


def synthetic_batches(
    signatures: Sequence[InputSignature],
    *,
    batches: int,
    batch_size: int,
    sequence_length: int,
    vocab: int = DEFAULT_VOCAB_SIZE,
    seed: int = 0,
) -> Iterator[Batch]:
    """Deterministic random inputs of the declared shapes (no labels).

    Token ids stay inside the vocabulary, attention masks are all ones and token type ids
    zeros, floats are uniform in [0, 1) — values a real model accepts.
    """
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        inputs = {}
        for signature in signatures:
            shape = concrete_shape(signature, batch_size, sequence_length)
            inputs[signature.name] = _synthetic_array(signature, shape, rng, vocab)
        yield Batch(inputs=inputs, labels=None)


def _synthetic_array(
    signature: InputSignature, shape: tuple[int, ...], rng: np.random.Generator, vocab: int
) -> np.ndarray:
    name = signature.name.lower()
    dtype = signature.dtype
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if dtype.kind == "b":
        return np.ones(shape, dtype=dtype)
    if "mask" in name:
        return np.ones(shape, dtype=dtype)
    if "type" in name or "position" in name:
        return np.zeros(shape, dtype=dtype)
    if "ids" in name or "token" in name:
        # Keep clear of the special tokens at the start of BERT-like vocabularies.
        low = min(1000, max(vocab - 1, 0))
        return rng.integers(low, vocab, size=shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)


def check_batch_fits(batch: Batch, signatures: Sequence[InputSignature], source: str) -> None:
    """BadInput naming `source` when an array's rank or fixed dims differ from the model's."""
    for signature in signatures:
        array = batch.inputs.get(signature.name)
        if array is None:
            continue
        expected = signature.shape
        ok = array.ndim == len(expected) and all(
            not isinstance(dim, int) or dim == actual
            for dim, actual in zip(expected, array.shape, strict=False)
        )
        if not ok:
            shown = [d if isinstance(d, int) else (d or "?") for d in expected]
            raise BadInput(
                f"data {source}: array {signature.name} has shape {list(array.shape)} but the "
                f"model expects {shown}; reshape the data to the model's input"
            )
