"""Data formats: .npz and .jsonl streamed as batches, synthetic inputs, and mismatches refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kondense.api.errors import BadInput
from kondense.api.spec import DataSource
from kondense.runners.io.data import (
    InputSignature,
    check_batch_fits,
    iter_batches,
    onnx_input_signatures,
    synthetic_batches,
)

TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def batches(uri: Path | str, names: list[str], samples: int = 300, **kwargs: object) -> list:
    options = {"tokenizer_dir": None, "batch_size": 4, "sequence_length": 16, **kwargs}
    source = DataSource(uri=str(uri), samples=samples)
    return list(iter_batches(source, input_names=names, **options))  # type: ignore[arg-type]


def test_npz_streams_at_most_samples_in_batches_with_labels(digits_npz: Path) -> None:
    result = batches(digits_npz, ["pixel_values"], samples=10)
    assert [len(b) for b in result] == [4, 4, 2]
    assert result[0].inputs["pixel_values"].shape == (4, 1, 8, 8)
    assert result[0].labels is not None and result[0].labels.dtype == np.int64
    reference = np.load(digits_npz)
    np.testing.assert_array_equal(result[1].inputs["pixel_values"], reference["pixel_values"][4:8])


def test_npz_without_the_model_input_names_the_file_arrays_and_inputs(tmp_path: Path) -> None:
    path = tmp_path / "wrong.npz"
    np.savez(path, images=np.zeros((3, 1, 8, 8), np.float32))
    with pytest.raises(BadInput) as error:
        batches(path, ["pixel_values"])
    message = str(error.value)
    assert "wrong.npz" in message and "images" in message and "pixel_values" in message


def test_npz_arrays_of_different_lengths_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ragged.npz"
    np.savez(path, x=np.zeros((5, 16), np.float32), labels=np.zeros(4, np.int64))
    with pytest.raises(BadInput, match=r"ragged\.npz.*first \(sample\) dimension"):
        batches(path, ["x"])


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(BadInput, match=r"objects\.npz"):
        batches(path, ["x"])


def test_batch_whose_shape_differs_from_the_model_input_is_refused(tiny_onnx: Path) -> None:
    signatures = onnx_input_signatures(tiny_onnx)
    batch = next(iter(synthetic_batches(signatures, batches=1, batch_size=2, sequence_length=8)))
    check_batch_fits(batch, signatures, "ok")
    batch.inputs["x"] = np.zeros((2, 15), np.float32)
    with pytest.raises(BadInput, match=r"x has shape \[2, 15\].*\['batch', 16\]"):
        check_batch_fits(batch, signatures, "eval.npz")


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_is_tokenized_with_the_models_tokenizer_to_the_sequence_length(
    tmp_path: Path, minilm_dir: Path
) -> None:
    path = write_jsonl(
        tmp_path / "text.jsonl",
        [{"text": f"sentence number {i}", "label": i % 2} for i in range(5)],
    )
    result = batches(path, TEXT_INPUTS, tokenizer_dir=minilm_dir, samples=5, sequence_length=12)
    assert [len(b) for b in result] == [4, 1]
    first = result[0]
    assert sorted(first.inputs) == sorted(TEXT_INPUTS)
    assert first.inputs["input_ids"].shape == (4, 12)
    assert first.inputs["input_ids"][0, 0] == 101  # [CLS] of the BERT vocabulary
    assert first.labels is not None and first.labels.tolist() == [0, 1, 0, 1]


def test_jsonl_keeps_only_the_inputs_the_model_declares(tmp_path: Path, minilm_dir: Path) -> None:
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": "hello"}])
    (batch,) = batches(path, ["input_ids", "attention_mask"], tokenizer_dir=minilm_dir)
    assert sorted(batch.inputs) == ["attention_mask", "input_ids"]
    assert batch.labels is None


def test_jsonl_without_a_tokenizer_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": "hello"}])
    with pytest.raises(BadInput, match="no tokenizer"):
        batches(path, ["x"])


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path, minilm_dir: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(BadInput, match=r"bad\.jsonl line 2"):
        batches(path, TEXT_INPUTS, tokenizer_dir=minilm_dir)


def test_unknown_data_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    with pytest.raises(BadInput, match=r"data\.csv.*\.npz.*\.jsonl"):
        batches(path, ["x"])


def test_missing_data_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        batches(tmp_path / "nothing.npz", ["x"])


def test_synthetic_inputs_fix_dynamic_dims_and_keep_token_ids_in_vocab() -> None:
    signatures = [
        InputSignature("input_ids", ("batch", "sequence"), np.dtype(np.int64)),
        InputSignature("attention_mask", ("batch", "sequence"), np.dtype(np.int64)),
        InputSignature("pixel_values", (None, 3, 4, 4), np.dtype(np.float32)),
    ]
    (batch,) = synthetic_batches(signatures, batches=1, batch_size=2, sequence_length=7, vocab=50)
    ids = batch.inputs["input_ids"]
    assert ids.shape == (2, 7) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 50
    assert (batch.inputs["attention_mask"] == 1).all()
    assert batch.inputs["pixel_values"].shape == (2, 3, 4, 4)


def test_onnx_signatures_read_the_declared_inputs(tiny_onnx: Path) -> None:
    (signature,) = onnx_input_signatures(tiny_onnx)
    assert signature.name == "x" and signature.shape == ("batch", 16)
    assert signature.dtype == np.float32
